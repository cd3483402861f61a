// An in-memory BlockStore for tests and simulations: the same contract as SqliteStore
// (validation, error codes, all-or-nothing append), nothing survives the process.
#pragma once

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>
#include <popchain/store.hpp>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
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
        auto checked = check_appendable(block, hash, delta);
        if (!checked) return checked.error();
        const std::vector<Hash256>& txids = *checked;

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
        if (first_repeated_id(txids) != txids.size())
            return make_error(Errc::duplicate_tx, "transaction repeated in the block");
        for (const auto& id : txids)
            if (find_tx(id)) return make_error(Errc::duplicate_tx, "transaction is stored already");

        auto find_escrow = [&](const Hash256& trade_id) -> const Escrow* {
            if (auto it = delta.escrows.find(trade_id); it != delta.escrows.end())
                return &it->second;
            if (auto it = state_.escrows.find(trade_id); it != state_.escrows.end())
                return &it->second;
            return nullptr;
        };
        for (std::size_t i = 0; i < block.txs.size(); ++i) {
            const Loc loc{height, static_cast<std::uint32_t>(i)};
            txs_.insert(txids[i], loc);
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
        const auto loc = find_tx(txid);
        if (!loc) return make_error(Errc::not_found, "no transaction with this id");
        return record(*loc);
    }

    Result<TxPlace> tx_place(const Hash256& txid) const override {
        std::lock_guard lock(mutex_);
        const auto loc = find_tx(txid);
        if (!loc) return make_error(Errc::not_found, "no transaction with this id");
        return TxPlace{loc->height, loc->index, blocks_[loc->height].hash()};
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

    Result<void> put_certificate(std::uint64_t height, ByteView certificate) override {
        std::lock_guard lock(mutex_);
        if (height >= blocks_.size())
            return make_error(Errc::not_found, "no block at height " + std::to_string(height) +
                                                   " to keep a certificate for");
        certificates_[height] = Bytes(certificate.begin(), certificate.end());
        return {};
    }

    Result<std::optional<StoredCertificate>> certificate_from(std::uint64_t height) const override {
        std::lock_guard lock(mutex_);
        auto it = certificates_.lower_bound(height);
        if (it == certificates_.end()) return std::optional<StoredCertificate>{};
        return std::optional<StoredCertificate>(StoredCertificate{it->first, it->second});
    }

private:
    // Where a transaction sits; the blocks own the transactions themselves.
    struct Loc {
        std::uint64_t height = 0;
        std::uint32_t index = 0;
    };

    // Transaction ids to where they sit: an open-addressing table of each id's first 8
    // bytes, so that indexing a transaction costs one cache line and no allocation (a
    // node-based map of whole ids cost several cache misses per transaction, the largest
    // single cost of a replica storing in memory). Entries whose 8 bytes match are told
    // apart by the whole id of the transaction they point to, recomputed from its block.
    class TxIndex {
    public:
        // Each entry whose prefix matches, until `visit` returns true; that entry's place.
        template <class Visit>
        std::optional<Loc> find(const Hash256& id, Visit&& visit) const {
            if (slots_.empty()) return std::nullopt;
            const std::uint64_t key = key_of(id);
            for (std::size_t at = home(key);; at = (at + 1) & mask()) {
                const Slot& slot = slots_[at];
                if (!slot.used) return std::nullopt;
                const Loc loc{slot.height, slot.index};
                if (slot.key == key && visit(loc)) return loc;
            }
        }
        void insert(const Hash256& id, Loc loc) {
            // At most half full, so probes stay short and a free slot always exists.
            if (2 * (size_ + 1) > slots_.size()) grow();
            place(key_of(id), loc);
            ++size_;
        }

    private:
        struct Slot { // 24 bytes: Loc's padding would make it 32
            std::uint64_t key = 0;
            std::uint64_t height = 0;
            std::uint32_t index = 0;
            bool used = false;
        };
        static std::uint64_t key_of(const Hash256& id) {
            std::uint64_t key = 0;
            std::memcpy(&key, id.data(), sizeof key);
            return key;
        }
        std::size_t mask() const { return slots_.size() - 1; }
        std::size_t home(std::uint64_t key) const {
            return static_cast<std::size_t>(key * 0x9e3779b97f4a7c15ull) & mask();
        }
        void place(std::uint64_t key, Loc loc) {
            std::size_t at = home(key);
            while (slots_[at].used)
                at = (at + 1) & mask();
            slots_[at] = Slot{key, loc.height, loc.index, true};
        }
        void grow() {
            std::vector<Slot> old = std::exchange(
                slots_, std::vector<Slot>(std::max<std::size_t>(1024, 2 * slots_.size())));
            for (const Slot& slot : old)
                if (slot.used) place(slot.key, Loc{slot.height, slot.index});
        }

        std::vector<Slot> slots_; // a power of two in size, or empty
        std::size_t size_ = 0;
    };

    std::optional<Loc> find_tx(const Hash256& txid) const {
        return txs_.find(
            txid, [&](const Loc& loc) { return blocks_[loc.height].txs[loc.index].id() == txid; });
    }

    TxRecord record(const Loc& loc) const {
        return TxRecord{blocks_[loc.height].txs[loc.index], loc.height, loc.index};
    }

    mutable std::mutex mutex_;
    std::vector<Block> blocks_; // blocks_[h] is the block at height h
    std::unordered_map<Hash256, std::uint64_t, FixedBytesHash> by_hash_;
    TxIndex txs_;
    std::unordered_map<Address, std::vector<Loc>> by_address_; // oldest first
    State state_;
    std::map<std::string, Bytes, std::less<>> meta_;
    std::map<std::uint64_t, Bytes> certificates_; // by the height they certify
};

} // namespace popchain
