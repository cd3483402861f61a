// Block storage. A store holds the committed chain (blocks with their certificates), an
// index of transactions, and the ledger state after the last block, and changes all of
// them together: append() either records a block and its state delta completely or not at
// all, so a crash at any instant leaves a store at a block boundary.
#pragma once

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>

#include <optional>
#include <string>
#include <vector>

namespace popchain {

struct TxRecord {
    Tx tx;
    std::uint64_t height = 0; // block that holds it
    std::uint32_t index = 0;  // position in the block
    friend bool operator==(const TxRecord&, const TxRecord&) = default;
};

class BlockStore {
public:
    virtual ~BlockStore() = default;

    // Height of the last stored block; nullopt for an empty store (no genesis yet).
    virtual std::optional<std::uint64_t> tip_height() const = 0;

    // Stores `block` (with its certificate) and the state change it made. The block's height
    // must be tip_height() + 1 (or 0 for an empty store) and, above genesis, its prev_hash
    // must be the tip's hash; delta.height and delta.block_hash must match the block.
    virtual Result<void> append(const Block& block, const StateDelta& delta) = 0;

    virtual Result<Block> block_at(std::uint64_t height) const = 0;
    virtual Result<Block> block_by_hash(const Hash256& hash) const = 0;
    virtual Result<TxRecord> tx_by_id(const Hash256& txid) const = 0;
    // Transactions sent or received by `address` (from, to, or escrow counterparty), oldest
    // first, skipping `offset` of them and returning at most `limit`.
    virtual std::vector<TxRecord> txs_of_address(const Address& address, std::uint64_t offset,
                                                 std::uint32_t limit) const = 0;

    // The ledger state after the tip (empty State for an empty store).
    virtual Result<State> load_state() const = 0;

    // Small named values other layers keep beside the chain (consensus view, etc.).
    // Written in their own transaction; durable when put_meta returns.
    virtual Result<void> put_meta(const std::string& key, ByteView value) = 0;
    virtual std::optional<Bytes> get_meta(const std::string& key) const = 0;
};

} // namespace popchain
