// A durable BlockStore in one SQLite database file.
//
// Format (schema version 4, lib/sqlite_store.cpp): a block is stored once, encoded; a
// transaction is read out of its block's encoding through an index of where it is (by the
// first 8 bytes of its id, the rare ids that share them beside) and an index of the
// addresses it involves; certificates (put_certificate) have a table keyed by height; the
// state changes of blocks whose rows are not written yet have one (see "Batched table
// writes" below). Version 1 kept a second copy of every transaction, version 2 had no
// certificate table and version 3 wrote every block's rows at once; open() upgrades such a
// store in place.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so when append() or
// put_meta() returns success the change is on stable storage; a crash (kill -9, power loss)
// at any instant leaves the chain at a block boundary, with blocks, transaction indexes and
// state from the same block. Every append is a single SQL transaction.
//
// Group commit (Durability::at_sync): append() writes inside one SQL transaction that stays
// open until sync() commits it, each block in its own savepoint (a failed append undoes only
// itself). One fsync then covers every block appended since the last sync; the replica syncs
// before any reply or vote about those blocks leaves (Replica::flush), so nothing a client
// or peer was told is lost. Readers of this store see the appended blocks at once, before
// they are durable; a crash loses at most the blocks since the last sync, which the
// replica then fetches again from its peers. A failed sync() rolls the group back (tip
// included): the store's owner must stop, as after a failed append. Closing the store with
// a group open discards it, as a crash would. put_meta() syncs an open group first.
//
// Errors: SQLite failures come back as Errc::io_error carrying SQLite's message (a database
// SQLite itself finds damaged as Errc::storage_corrupt); a stored row that does not decode,
// or decodes to something other than what its keys say, is Errc::storage_corrupt.
//
// Deferred fsync (Durability::at_flush): as at_sync, except that sync() commits without
// waiting for the disk and flush_to_disk() (callable from another thread) waits for it; the
// node uses it to hold a batch's messages until the disk has its commit while it handles the
// next batch (docs/node.md).
//
// Batched table writes (WriteBatching): the accounts, escrows and both transaction indexes
// are keyed at random (addresses, hashes), so a block of a thousand transfers from distinct
// wallets dirties most of their leaf pages, and the log takes every dirty page whole. So
// these rows are written for many blocks at once, sorted by key, once the blocks not yet
// written reach max_pending_txs transactions or max_pending_blocks blocks; until then each
// block's state change is kept beside it (in the encoding its state root commits to, one
// row per block in `pending_changes`) and the store answers from memory for those blocks.
// A full batch is written a slice of each table's key order per append, starting with the
// block that completes it and sized to end by the time the next batch is half full, so no
// append writes a whole batch; its blocks keep their changes until the last slice. Each
// slice is in the SQL transaction of its append, so a crash at any instant leaves the
// changes of every block whose rows are not all written; open() rebuilds those blocks' rows
// from the blocks and their changes, checking each against the block's state root, and
// writes them again (a row already there is left as it is). Nothing a reader sees depends
// on where a batch or a slice boundary fell.
//
// Thread-safe, as BlockStore requires: calls are serialised on one connection. Several
// processes may open the same file (SQLite's locking keeps them consistent), but one writer
// per chain is the intended use; tip_height() does not see another process's appends.
#pragma once

#include <popchain/store.hpp>

#include <filesystem>
#include <memory>

namespace popchain {

namespace detail {
struct SqliteStoreAccess; // lets pbft::SqliteJournal keep its tables in the store's file
}

class SqliteStore final : public BlockStore {
public:
    // The schema version this build writes and the newest it can read. Version 2 keeps each
    // transaction only in its block's encoding; the indexes say where it is. Version 3 adds
    // the certificate table.
    static constexpr int schema_version = 4;

    // When the rows of the newest blocks are written (see "Batched table writes" above):
    // once the blocks not yet written hold `max_pending_txs` transactions or number
    // `max_pending_blocks`, whichever comes first. Either at 0 or 1 writes every block's
    // rows with the block. Larger batches write fewer pages per transaction, and keep more
    // in memory (two batches at most: one being written, one filling) and more to re-read at
    // open(). The defaults: in `popchain_bench --store-growth 3000000`, a store holding 3
    // million commands took them 2.7 times as fast as with 8,192 / 128 written whole, its
    // slowest append 0.16 s against 0.6 s (docs/benchmarks.md, "The store as it grows").
    struct WriteBatching {
        std::uint32_t max_pending_txs = 65536;
        std::uint32_t max_pending_blocks = 256;
    };

    // Opens `file`, creating a new empty store when the file does not exist or is empty.
    // An older store is upgraded to version 4 in place first, in one SQL transaction: a
    // crash or failure during it leaves the old store as it was, and the upgrade's error is
    // open()'s. From version 1 the transaction index is rebuilt from the stored blocks (the
    // address index kept), which takes time in proportion to the stored transactions, once;
    // from versions 2 and 3 only empty tables are added. The rows of pending blocks are
    // then rebuilt in memory from those blocks (at most one batch of them).
    // Fails with Errc::invalid_argument for an SQLite database that is not a popchain store
    // or has a newer schema version, Errc::storage_corrupt for a file that is not an SQLite
    // database at all, a store whose chain summary disagrees with its blocks, or pending
    // state changes that are not those of the blocks below the tip (checked against their
    // state roots, and each block's transactions against its header), and Errc::io_error
    // when the file cannot be opened.
    enum class Durability {
        each_append, // append() is durable when it returns
        at_sync,     // append() is durable once a later sync() returns success
        at_flush,    // as at_sync, but sync() only commits; see flush_to_disk()
    };
    static Result<std::unique_ptr<SqliteStore>>
    open(const std::filesystem::path& file, Durability durability = Durability::each_append);
    static Result<std::unique_ptr<SqliteStore>> open(const std::filesystem::path& file,
                                                     Durability durability, WriteBatching batching);

    ~SqliteStore() override;
    SqliteStore(const SqliteStore&) = delete;
    SqliteStore& operator=(const SqliteStore&) = delete;

    // From memory, never from the file: open() loads the tip and append() updates it only
    // after its COMMIT succeeded. Blocks another process appends to the same file are not
    // seen here until the store is reopened; append() re-reads the tip inside its own
    // transaction, so such a block makes it fail with Errc::wrong_height, never fork.
    std::optional<std::uint64_t> tip_height() const override;
    Result<void> append(const Block& block, const StateDelta& delta) override;
    Result<void> sync() override;
    // Durability::at_flush: makes every commit that returned before this call durable (one
    // fdatasync of the write-ahead log). Safe to call from another thread while the store is
    // in use: it does not touch the connection, so a node can wait for the disk on a thread
    // of its own while it goes on handling messages. Until it returns success, a committed
    // block survives a crash of the process but not necessarily a power loss (SQLite's WAL
    // with synchronous=NORMAL, which stays consistent either way). A no-op for the other
    // modes, whose commits are durable when they return. Errc::io_error when the fsync fails:
    // the owner must then stop, as after a failed sync().
    Result<void> flush_to_disk();
    Result<Block> block_at(std::uint64_t height) const override;
    Result<Block> block_by_hash(const Hash256& hash) const override;
    Result<TxRecord> tx_by_id(const Hash256& txid) const override;
    // A pending block's transaction from memory; a written one is read from its block to
    // check its id (the index is keyed by part of it). The block's hash from its row.
    Result<TxPlace> tx_place(const Hash256& txid) const override;
    Result<std::vector<TxRecord>> txs_of_address(const Address& address, std::uint64_t offset,
                                                 std::uint32_t limit) const override;
    Result<State> load_state() const override;
    Result<void> put_meta(const std::string& key, ByteView value) override;
    Result<std::optional<Bytes>> get_meta(const std::string& key) const override;
    Result<void> put_certificate(std::uint64_t height, ByteView certificate) override;
    Result<std::optional<StoredCertificate>> certificate_from(std::uint64_t height) const override;

private:
    friend struct detail::SqliteStoreAccess;
    struct Impl;
    explicit SqliteStore(std::unique_ptr<Impl> impl);
    static Result<std::unique_ptr<SqliteStore>> open_impl(const std::filesystem::path& file,
                                                          Durability durability,
                                                          WriteBatching batching,
                                                          std::uint64_t tx_key_mask);
    std::unique_ptr<Impl> impl_;
};

} // namespace popchain
