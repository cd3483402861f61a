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

// The addresses a transaction is listed under by BlockStore::txs_of_address, in this order
// and without duplicates: the sender; the recipient for transfer, mint and escrow_open; for
// escrow_release and escrow_refund both parties (buyer, then seller) of the escrow it closes;
// nothing more for config and command. `find_escrow(trade_id)` returns that escrow (nullptr if
// unknown, leaving only the sender). A release or refund can close an escrow opened in the same
// block, so a store appending a block looks in the block's delta before its stored state.
template <class FindEscrow>
std::vector<Address> tx_parties(const Tx& tx, FindEscrow&& find_escrow) {
    std::vector<Address> out{tx.from};
    auto add = [&out](const Address& a) {
        for (const auto& seen : out)
            if (seen == a) return;
        out.push_back(a);
    };
    switch (tx.kind) {
    case TxKind::transfer:
    case TxKind::mint:
    case TxKind::escrow_open: add(tx.to); break;
    case TxKind::escrow_release:
    case TxKind::escrow_refund:
        if (const Escrow* e = find_escrow(tx.trade_id)) {
            add(e->buyer);
            add(e->seller);
        }
        break;
    case TxKind::config:
    case TxKind::command: break;
    }
    return out;
}

// The ids of `block`'s transactions, in order: the ones execution recorded in `delta` when it
// has them for every transaction, else computed here (a store then hashes each one again).
inline std::vector<Hash256> block_txids(const Block& block, const StateDelta& delta) {
    if (delta.txids.size() == block.txs.size()) return delta.txids;
    return block.txids();
}

// What every store checks before appending, so that a block and a delta that do not belong
// together change nothing: the delta's height, block hash and state root are the block's
// (`hash` is block.hash()), and the transactions are the ones the header commits to. That is,
// their ids (the delta's when it lists them, trusted as execution computed them; hashed here
// otherwise) have the header's tx root, and a delta listing ids lists one per transaction.
// Returns those ids, for the store to index with.
inline Result<std::vector<Hash256>> check_appendable(const Block& block, const Hash256& hash,
                                                     const StateDelta& delta) {
    const std::uint64_t height = block.header.height;
    if (delta.height != height)
        return make_error(Errc::invalid_argument, "delta is for height " +
                                                      std::to_string(delta.height) + ", block is " +
                                                      std::to_string(height));
    if (delta.block_hash != hash)
        return make_error(Errc::invalid_argument, "delta is for a different block");
    if (delta.state_root != block.header.state_root)
        return make_error(Errc::invalid_argument, "delta state root differs from the header's");
    if (!delta.txids.empty() && delta.txids.size() != block.txs.size())
        return make_error(Errc::invalid_argument,
                          "delta lists " + std::to_string(delta.txids.size()) +
                              " transaction ids, the block has " +
                              std::to_string(block.txs.size()) + " transactions");
    std::vector<Hash256> txids = block_txids(block, delta);
    if (merkle_root(txids) != block.header.tx_root)
        return make_error(Errc::bad_tx_root,
                          "the block's transactions are not the ones its header commits to");
    return txids;
}

// Where a stored transaction is: its block's height and hash, and its position there.
struct TxPlace {
    std::uint64_t height = 0;
    std::uint32_t index = 0;
    Hash256 block_hash;
    friend bool operator==(const TxPlace&, const TxPlace&) = default;
};

// A certificate the consensus layer keeps beside the blocks (see BlockStore::put_certificate).
struct StoredCertificate {
    std::uint64_t height = 0; // of the block it certifies
    Bytes data;
    friend bool operator==(const StoredCertificate&, const StoredCertificate&) = default;
};

// Implementations must be thread-safe: any member may be called from several threads at
// once, readers beside a writer, and each call sees the store before or after a whole
// append(), never part of one. MemoryStore and SqliteStore both are.
class BlockStore {
public:
    virtual ~BlockStore() = default;

    // Height of the last stored block; nullopt for an empty store (no genesis yet). Cannot
    // fail: implementations answer from memory (SqliteStore keeps a copy of the tip that
    // open() loads and append() updates once its transaction has committed).
    virtual std::optional<std::uint64_t> tip_height() const = 0;

    // Stores `block` (with its certificate) and the state change it made. The block's height
    // must be tip_height() + 1 (or 0 for an empty store) and, above genesis, its prev_hash
    // must be the tip's hash; delta.height and delta.block_hash must match the block.
    virtual Result<void> append(const Block& block, const StateDelta& delta) = 0;

    // Group commit. A store may defer the durability of append() to sync(), so that blocks
    // executed together cost one write to stable storage instead of one each (SqliteStore
    // with Durability::at_sync). After sync() succeeds every block appended before it
    // survives a crash; a crash before then may lose the blocks appended since the last
    // sync (never part of one), and a failed sync() may have lost them: the caller must
    // then stop and reopen the store. Stores whose append() is durable at return (the
    // default) have nothing to do.
    virtual Result<void> sync() { return {}; }

    virtual Result<Block> block_at(std::uint64_t height) const = 0;
    virtual Result<Block> block_by_hash(const Hash256& hash) const = 0;
    virtual Result<TxRecord> tx_by_id(const Hash256& txid) const = 0;
    // Where the transaction with this id is (Errc::not_found when none is stored), for a
    // caller that needs no more (a replica answering a client about a committed request). A
    // store may answer without reading the transaction or its block; this default reads both.
    virtual Result<TxPlace> tx_place(const Hash256& txid) const {
        auto record = tx_by_id(txid);
        if (!record) return record.error();
        auto block = block_at(record->height);
        if (!block) return block.error();
        return TxPlace{record->height, record->index, block->hash()};
    }
    // Transactions that list `address` among their tx_parties(), escrow parties resolved as
    // of the block that holds the transaction; oldest first (by height, then position in the
    // block), skipping `offset` of them and returning at most `limit`. An address with no
    // transactions, or an offset past the end, gives an empty list; a store that cannot read
    // the history gives an error, never a shortened or empty list.
    virtual Result<std::vector<TxRecord>>
    txs_of_address(const Address& address, std::uint64_t offset, std::uint32_t limit) const = 0;

    // The ledger state after the tip (empty State for an empty store).
    virtual Result<State> load_state() const = 0;

    // Certificates that a stored block is committed, kept so that any block can be proven
    // later, not only those near the tip (pbft::Replica::commit_proof keeps every stable
    // checkpoint's). Opaque to the store: bytes keyed by the height of the block they
    // certify, which must be stored (Errc::not_found otherwise). A second put for a height
    // replaces the first. Written with the blocks: durable when a block appended at that
    // moment would be (for a group-committing store, at the next sync()).
    virtual Result<void> put_certificate(std::uint64_t height, ByteView certificate) = 0;
    // The certificate with the lowest height at or above `height`; nullopt when there is
    // none.
    virtual Result<std::optional<StoredCertificate>>
    certificate_from(std::uint64_t height) const = 0;

    // Small named values other layers keep beside the chain (consensus view, etc.).
    // Written in their own transaction; durable when put_meta returns. get_meta gives
    // nullopt for a key never put, and an error when the value cannot be read.
    virtual Result<void> put_meta(const std::string& key, ByteView value) = 0;
    virtual Result<std::optional<Bytes>> get_meta(const std::string& key) const = 0;
};

} // namespace popchain
