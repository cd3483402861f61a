// An in-memory BlockStore for tests and simulations: the same contract as SqliteStore
// (validation, error codes, all-or-nothing append), nothing survives the process.
#pragma once

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>
#include <popchain/store.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace popchain {

// Thread-safe, as BlockStore requires: every member takes one lock.
class MemoryStore final : public BlockStore {
public:
    MemoryStore() = default;

    std::optional<std::uint64_t> tip_height() const override {
        std::lock_guard lock(mutex_);
        if (blocks_.empty()) return std::nullopt;
        return blocks_.size() - 1;
    }

    Result<void> append(const Block& block, const StateDelta& delta) override {
        const Hash256 hash = block.hash();
        const std::uint64_t height = block.header.height;
        if (delta.height != height)
            return make_error(Errc::invalid_argument, "delta is for height " +
                                                          std::to_string(delta.height) +
                                                          ", block is " + std::to_string(height));
        if (delta.block_hash != hash)
            return make_error(Errc::invalid_argument, "delta is for a different block");
        if (delta.state_root != block.header.state_root)
            return make_error(Errc::invalid_argument, "delta state root differs from the header's");

        std::lock_guard lock(mutex_);
        if (height != blocks_.size())
            return make_error(Errc::wrong_height, "expected height " +
                                                      std::to_string(blocks_.size()) + ", got " +
                                                      std::to_string(height));
        // Genesis has no parent to check (its prev_hash commits to the chain parameters).
        if (!blocks_.empty() && block.header.prev_hash != blocks_.back().hash())
            return make_error(Errc::wrong_prev_hash, "block does not extend the tip");
        if (by_hash_.contains(hash))
            return make_error(Errc::invalid_argument, "a block with this hash is stored");

        // Everything that can fail is checked before the first change, so a rejected block
        // leaves the store as it was.
        std::vector<Hash256> txids;
        txids.reserve(block.txs.size());
        std::unordered_set<Hash256, FixedBytesHash> fresh;
        for (const auto& tx : block.txs) {
            Hash256 id = tx.id();
            if (txs_.contains(id) || !fresh.insert(id).second)
                return make_error(Errc::duplicate_tx, "transaction is stored already");
            txids.push_back(id);
        }

        auto find_escrow = [&](const Hash256& trade_id) -> const Escrow* {
            if (auto it = delta.escrows.find(trade_id); it != delta.escrows.end())
                return &it->second;
            if (auto it = state_.escrows.find(trade_id); it != state_.escrows.end())
                return &it->second;
            return nullptr;
        };
        for (std::size_t i = 0; i < block.txs.size(); ++i) {
            const Loc loc{height, static_cast<std::uint32_t>(i)};
            txs_.emplace(txids[i], loc);
            for (const auto& party : tx_parties(block.txs[i], find_escrow))
                by_address_[party].push_back(loc);
        }
        blocks_.push_back(block);
        by_hash_.emplace(hash, height);
        apply_delta(state_, delta);
        return {};
    }

    Result<Block> block_at(std::uint64_t height) const override {
        std::lock_guard lock(mutex_);
        if (height >= blocks_.size())
            return make_error(Errc::not_found, "no block at height " + std::to_string(height));
        return blocks_[height];
    }

    Result<Block> block_by_hash(const Hash256& hash) const override {
        std::lock_guard lock(mutex_);
        auto it = by_hash_.find(hash);
        if (it == by_hash_.end()) return make_error(Errc::not_found, "no block with this hash");
        return blocks_[it->second];
    }

    Result<TxRecord> tx_by_id(const Hash256& txid) const override {
        std::lock_guard lock(mutex_);
        auto it = txs_.find(txid);
        if (it == txs_.end()) return make_error(Errc::not_found, "no transaction with this id");
        return record(it->second);
    }

    Result<std::vector<TxRecord>> txs_of_address(const Address& address, std::uint64_t offset,
                                                 std::uint32_t limit) const override {
        std::lock_guard lock(mutex_);
        std::vector<TxRecord> out;
        auto it = by_address_.find(address);
        if (it == by_address_.end() || offset >= it->second.size()) return out;
        const auto& locs = it->second;
        const std::size_t end = offset + std::min<std::uint64_t>(limit, locs.size() - offset);
        out.reserve(end - offset);
        for (std::size_t i = offset; i < end; ++i)
            out.push_back(record(locs[i]));
        return out;
    }

    Result<State> load_state() const override {
        std::lock_guard lock(mutex_);
        return state_;
    }

    Result<void> put_meta(const std::string& key, ByteView value) override {
        std::lock_guard lock(mutex_);
        meta_[key] = Bytes(value.begin(), value.end());
        return {};
    }

    Result<std::optional<Bytes>> get_meta(const std::string& key) const override {
        std::lock_guard lock(mutex_);
        auto it = meta_.find(key);
        if (it == meta_.end()) return std::optional<Bytes>{};
        return std::optional<Bytes>(it->second);
    }

private:
    // Where a transaction sits; the blocks own the transactions themselves.
    struct Loc {
        std::uint64_t height;
        std::uint32_t index;
    };

    TxRecord record(const Loc& loc) const {
        return TxRecord{blocks_[loc.height].txs[loc.index], loc.height, loc.index};
    }

    mutable std::mutex mutex_;
    std::vector<Block> blocks_; // blocks_[h] is the block at height h
    std::unordered_map<Hash256, std::uint64_t, FixedBytesHash> by_hash_;
    std::unordered_map<Hash256, Loc, FixedBytesHash> txs_;
    std::unordered_map<Address, std::vector<Loc>> by_address_; // oldest first
    State state_;
    std::map<std::string, Bytes, std::less<>> meta_;
};

} // namespace popchain
