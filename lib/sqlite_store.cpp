#include <popchain/hex.hpp>
#include <popchain/sqlite_store.hpp>

#include "sqlite_support.hpp"

#include <sqlite3.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace popchain {

namespace {

// Schema version 2. Integers that are u64 in C++ (heights, amounts, nonces) are stored as
// the int64 with the same bits: SQLite integers are signed, and a bit-cast round-trips every
// value exactly. Hashes, addresses and keys are fixed-size BLOBs; their lengths are checked
// by constraints on write and again when read back.
//
// A transaction is stored once, in its block's blob; the index tables say only where it is
// (height, idx). Format 1 also kept a copy of every transaction in a row keyed by its whole
// id and the id again in every address row: two random-key B-tree inserts of 240 and 80
// bytes per transaction, the biggest part of the store's cost per block (docs/benchmarks.md, "store
// format 2").
constexpr const char* schema_sql = R"sql(
CREATE TABLE popchain_meta (
    key   TEXT PRIMARY KEY,
    value NOT NULL
) WITHOUT ROWID;

CREATE TABLE blocks (
    height INTEGER PRIMARY KEY CHECK (height >= 0),
    hash   BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    data   BLOB NOT NULL  -- Block::encode(): header, transactions and commit certificate
);

CREATE TABLE accounts (
    address BLOB PRIMARY KEY CHECK (length(address) = 20),
    balance INTEGER NOT NULL,
    nonce   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE escrows (
    trade_id  BLOB PRIMARY KEY CHECK (length(trade_id) = 32),
    buyer     BLOB NOT NULL CHECK (length(buyer) = 20),
    seller    BLOB NOT NULL CHECK (length(seller) = 20),
    amount    INTEGER NOT NULL,
    deadline  INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    status    INTEGER NOT NULL CHECK (status IN (1, 2, 3))
) WITHOUT ROWID;

CREATE TABLE replicas (
    id         INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    public_key BLOB NOT NULL CHECK (length(public_key) = 33),
    endpoint   TEXT NOT NULL
);

-- The chain summary: one row once genesis is stored, none before.
CREATE TABLE chain (
    id           INTEGER PRIMARY KEY CHECK (id = 0),
    height       INTEGER NOT NULL REFERENCES blocks (height),
    tip_hash     BLOB NOT NULL CHECK (length(tip_hash) = 32),
    state_root   BLOB NOT NULL CHECK (length(state_root) = 32),
    total_minted INTEGER NOT NULL
);

CREATE TABLE user_meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
)sql";

// The transaction indexes of format 2, apart because the upgrade from format 1 creates them.
constexpr const char* tx_index_sql = R"sql(
-- Where each transaction is, by tx_key(): the first 8 bytes of its id as the rowid, so a
-- row is three integers in one B-tree. Two transactions may share a key; the first stored
-- keeps the row and the others go to tx_collisions. A reader compares the whole id of the
-- transaction it reads from the block.
CREATE TABLE txs (
    key    INTEGER PRIMARY KEY,
    height INTEGER NOT NULL REFERENCES blocks (height),
    idx    INTEGER NOT NULL CHECK (idx >= 0)
);

-- Transactions whose key a transaction in txs holds already (about one in 2^64 / n of n).
CREATE TABLE tx_collisions (
    txid   BLOB PRIMARY KEY CHECK (length(txid) = 32),
    height INTEGER NOT NULL REFERENCES blocks (height),
    idx    INTEGER NOT NULL CHECK (idx >= 0)
) WITHOUT ROWID;

-- One row per (party, transaction); the primary key is the index txs_of_address pages on.
CREATE TABLE address_txs (
    address BLOB NOT NULL CHECK (length(address) = 20),
    height  INTEGER NOT NULL REFERENCES blocks (height),
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    PRIMARY KEY (address, height, idx)
) WITHOUT ROWID;
)sql";

// Format 3: the consensus layer's certificates, one per certified height (opaque here; the
// replica keeps every stable checkpoint's, so old blocks stay provable).
constexpr const char* certificate_sql = R"sql(
CREATE TABLE certificates (
    height INTEGER PRIMARY KEY REFERENCES blocks (height),
    data   BLOB NOT NULL
);
)sql";

// Format 4: the newest blocks whose accounts, escrows and index rows are not written yet
// (SqliteStore::WriteBatching), each with its state change as StateDelta::encode_changes()
// gives it: the bytes its state root chains, so open() can check them against the block.
// Always the blocks right below and at the tip, or none.
constexpr const char* pending_sql = R"sql(
CREATE TABLE pending_changes (
    height  INTEGER PRIMARY KEY REFERENCES blocks (height),
    changes BLOB NOT NULL
);
)sql";

constexpr std::string_view format_name = "popchain-store";

using detail::corrupt;
using detail::exec;
using detail::pragma_expect;
using detail::prepare;
using detail::Query;
using detail::Stmt;
using detail::Transaction;

struct ChainRow {
    std::uint64_t height = 0;
    Hash256 tip_hash;
    Hash256 state_root;
    std::uint64_t total_minted = 0;
};

// A transaction's place: its block's height and its index in the block.
struct TxPos {
    std::uint64_t height = 0;
    std::uint32_t idx = 0;
    bool operator==(const TxPos&) const = default;
};

// A block's encoding, kept while several transactions are read out of it.
struct BlockBlob {
    std::uint64_t height = 0;
    Bytes data;
};

constexpr std::uint64_t all_key_bits = ~std::uint64_t{0};

// How far a writing batch's rows are written: a count of rows per table, in key order.
struct RowCursor {
    std::size_t txs = 0, parties = 0, accounts = 0, escrows = 0;
};

struct WritingBatch;

// A block's rows for the two transaction indexes, and what write_block did with the
// tables, for note_written to apply to the store's memory once that is committed.
struct BlockRows {
    std::uint64_t height = 0;
    std::vector<std::pair<Hash256, TxPos>> txs;     // (id, place)
    std::vector<std::pair<Address, TxPos>> parties; // (party, place), one per tx_parties entry
    bool written = false;                           // every row up to this block's written at once
    std::optional<RowCursor> writing_to;            // the writing batch written this far
    std::unique_ptr<WritingBatch> started;          // this block completed `pending`: now writing
};

// What the tables do not hold yet: the rows of the blocks in `pending_changes`, with the
// newest value of each account and escrow they changed.
struct PendingRows {
    std::size_t blocks = 0;
    std::uint64_t first = 0; // the oldest block's height, when blocks > 0
    std::unordered_map<Hash256, TxPos, FixedBytesHash> tx_pos;
    std::unordered_map<Address, std::vector<TxPos>, FixedBytesHash> by_address;
    std::map<Address, Account> accounts;
    std::map<Hash256, Escrow> escrows;

    void add(const BlockRows& rows, const StateDelta& delta) {
        if (blocks++ == 0) first = rows.height;
        for (const auto& [id, pos] : rows.txs)
            tx_pos.emplace(id, pos);
        for (const auto& [party, pos] : rows.parties)
            by_address[party].push_back(pos);
        for (const auto& [address, account] : delta.accounts)
            accounts.insert_or_assign(address, account);
        for (const auto& [trade_id, escrow] : delta.escrows)
            escrows.insert_or_assign(trade_id, escrow);
    }
};

// A transaction index row: the key `txs` files it under, its place and its id.
struct TxRow {
    std::int64_t key;
    TxPos pos;
    Hash256 id;
};

// Pending blocks whose rows are being written, a slice of each table's key order per
// append (write_block). Until the last slice is written, readers take these blocks' rows
// from here (by binary search: the sorted rows are all the batch keeps) and the tables'
// rows below `first` only: a slice written before a crash is written again after it, as
// open() finds every such block pending again.
struct WritingBatch {
    std::uint64_t first = 0; // the oldest block's height
    std::uint64_t top = 0;   // the newest block's height
    // Each table's rows in key order (the accounts' and escrows' newest values).
    std::vector<TxRow> txs;
    std::vector<std::pair<Address, TxPos>> parties;
    std::vector<std::pair<Address, Account>> accounts;
    std::vector<std::pair<Hash256, Escrow>> escrows;
    RowCursor written;

    const TxPos* place(std::int64_t key, const Hash256& id) const {
        auto it = std::lower_bound(txs.begin(), txs.end(), key,
                                   [](const TxRow& row, std::int64_t k) { return row.key < k; });
        for (; it != txs.end() && it->key == key; ++it)
            if (it->id == id) return &it->pos;
        return nullptr;
    }
    // The batch's rows of `address`, oldest first.
    std::vector<TxPos> places_of(const Address& address) const {
        auto it = std::lower_bound(
            parties.begin(), parties.end(), address,
            [](const std::pair<Address, TxPos>& row, const Address& a) { return row.first < a; });
        std::vector<TxPos> out;
        for (; it != parties.end() && it->first == address; ++it)
            out.push_back(it->second);
        return out;
    }
    template <class Key, class Value>
    static const Value* find(const std::vector<std::pair<Key, Value>>& rows, const Key& key) {
        auto it = std::lower_bound(
            rows.begin(), rows.end(), key,
            [](const std::pair<Key, Value>& row, const Key& k) { return row.first < k; });
        return it != rows.end() && it->first == key ? &it->second : nullptr;
    }

    RowCursor end() const { return {txs.size(), parties.size(), accounts.size(), escrows.size()}; }
    bool done(const RowCursor& c) const {
        return c.txs == txs.size() && c.parties == parties.size() &&
               c.accounts == accounts.size() && c.escrows == escrows.size();
    }
    // `written` moved on by `share` of every table's rows (at least one, while any remain).
    RowCursor advanced(double share) const {
        auto step = [share](std::size_t at, std::size_t total) {
            const auto n = static_cast<std::size_t>(std::ceil(share * static_cast<double>(total)));
            return std::min(total, at + std::max<std::size_t>(n, 1));
        };
        return {step(written.txs, txs.size()), step(written.parties, parties.size()),
                step(written.accounts, accounts.size()), step(written.escrows, escrows.size())};
    }
};

} // namespace

struct SqliteStore::Impl {
    sqlite3* db = nullptr;
    std::string path; // for messages
    mutable std::mutex mutex;
    // The chain's height as of the last COMMIT this connection saw (open() or append()), so
    // tip_height() never touches the file. Guarded by `mutex`.
    std::optional<std::uint64_t> tip;
    // Group commit (Durability::at_sync): whether a write transaction is open, and the tip
    // as of the last COMMIT, to fall back to when the group is lost.
    Durability durability = Durability::each_append;
    // Durability::at_flush: the WAL file, opened once more for flush_to_disk(), which runs
    // on another thread without the connection (an fsync on any descriptor of a file makes
    // everything written to that file before it durable).
    int wal_fd = -1;
    // The bits of a txid's first 8 bytes that make its key in `txs`: all of them, except in
    // tests that make keys collide on purpose (SqliteStoreAccess::open_with_tx_key_mask).
    std::uint64_t tx_key_mask = all_key_bits;
    bool group_open = false;
    std::optional<std::uint64_t> durable_tip;
    WriteBatching batching;
    // Guarded by `mutex`. Set when the pending rows could not be rebuilt after a lost group:
    // every later call fails with it, as the owner must stop then anyway.
    PendingRows pending;
    // Guarded by `mutex`: the batch being written, older than every block in `pending`.
    std::unique_ptr<WritingBatch> writing;
    std::optional<Error> pending_lost;

    // Cached statements, prepared once at open.
    Stmt begin_read, begin_write, commit, rollback;
    Stmt savepoint, release, rollback_to;
    Stmt get_chain, put_chain;
    Stmt get_block_at, get_block_by_hash, put_block;
    Stmt get_tx, put_tx, get_tx_collision, put_tx_collision, get_address_txs, put_address_tx;
    Stmt get_escrow_parties;
    Stmt all_accounts, put_account, all_escrows, put_escrow;
    Stmt all_replicas, clear_replicas, put_replica;
    Stmt get_user_meta, put_user_meta;
    Stmt put_certificate, get_certificate_from;
    Stmt all_pending, put_pending, clear_pending, count_address_txs, get_block_hash;

    ~Impl() {
        // Statements must be finalized before the connection closes.
        if (wal_fd >= 0) ::close(wal_fd);
        for (Stmt* s : {&begin_read,
                        &begin_write,
                        &commit,
                        &rollback,
                        &savepoint,
                        &release,
                        &rollback_to,
                        &get_chain,
                        &put_chain,
                        &get_block_at,
                        &get_block_by_hash,
                        &put_block,
                        &get_tx,
                        &put_tx,
                        &get_tx_collision,
                        &put_tx_collision,
                        &get_address_txs,
                        &put_address_tx,
                        &get_escrow_parties,
                        &all_accounts,
                        &put_account,
                        &all_escrows,
                        &put_escrow,
                        &all_replicas,
                        &clear_replicas,
                        &put_replica,
                        &get_user_meta,
                        &put_user_meta,
                        &put_certificate,
                        &get_certificate_from,
                        &all_pending,
                        &put_pending,
                        &clear_pending,
                        &count_address_txs,
                        &get_block_hash})
            *s = Stmt();
        sqlite3_close_v2(db);
    }

    Result<void> prepare_all();
    Result<std::optional<ChainRow>> read_chain() const;
    Result<std::optional<std::uint64_t>> check_chain_consistent() const;
    Result<Block> decode_block_row(std::uint64_t height, const Hash256& hash,
                                   const Bytes& data) const;
    std::int64_t tx_key(const Hash256& txid) const;
    Result<Tx> tx_at(const TxPos& pos, std::optional<BlockBlob>& blob) const;
    // The transaction with this id, from the pending blocks or the tables.
    Result<std::optional<TxRecord>> find_tx(const Hash256& txid) const;
    // The same from the tables alone.
    Result<std::optional<TxRecord>> find_indexed_tx(const Hash256& txid) const;
    Result<void> check_new(const BlockRows& rows) const;
    Result<void> index_rows(const Block& block, const StateDelta& delta,
                            const std::vector<Hash256>& txids, BlockRows& rows) const;
    Result<Block> read_block(std::uint64_t height) const;
    Result<void> check_indexed_at(const Hash256& txid, const TxPos& pos) const;
    Result<void> index_tx(const Hash256& txid, const TxPos& pos);
    Result<void> index_stored_blocks();
    Result<void> upgrade(int from_version);
    // `txids`: the block's transaction ids, as check_appendable() returned them.
    Result<void> append_locked(const Block& block, const Hash256& hash, const StateDelta& delta,
                               const std::vector<Hash256>& txids);
    // Runs `write` in the open group (opened if needed), in a savepoint of its own: a failed
    // write undoes only itself, unless SQLite lost the whole transaction.
    Result<void> write_in_group(const std::function<Result<void>()>& write);
    Result<void> append_to_group(const Block& block, const Hash256& hash, const StateDelta& delta,
                                 const std::vector<Hash256>& txids);
    // Fills `rows` with the block's index rows; writes them (with every pending block's)
    // when the block completes a batch, else keeps its state change in pending_changes.
    Result<void> write_block(const Block& block, const Hash256& hash, const StateDelta& delta,
                             const std::vector<Hash256>& txids, BlockRows& rows);
    // The pending blocks' rows and this block's as a batch, each table sorted by key.
    std::unique_ptr<WritingBatch> batch_of(const BlockRows& rows, const StateDelta& delta) const;
    // Writes `batch`'s rows from its `written` cursor up to `to`; once all are written,
    // drops its blocks' rows from pending_changes.
    Result<void> write_slice(const WritingBatch& batch, const RowCursor& to);
    // After write_block's transaction committed (or its savepoint was released).
    void note_written(BlockRows& rows, const StateDelta& delta) {
        if (rows.written) {
            pending = PendingRows{};
            writing.reset();
            return;
        }
        if (writing && rows.writing_to) {
            writing->written = *rows.writing_to;
            if (writing->done(writing->written)) writing.reset();
        }
        if (!rows.started) {
            pending.add(rows, delta);
            return;
        }
        writing = std::move(rows.started);
        pending = PendingRows{};
        if (writing->done(writing->written)) writing.reset();
    }
    // Where the newest blocks keep a transaction's place in memory, or null.
    const TxPos* kept_place(const Hash256& txid) const {
        if (auto it = pending.tx_pos.find(txid); it != pending.tx_pos.end()) return &it->second;
        return writing ? writing->place(tx_key(txid), txid) : nullptr;
    }
    // The lowest height whose rows readers take from memory; above every block when none.
    std::uint64_t kept_from() const {
        if (writing) return writing->first;
        if (pending.blocks > 0) return pending.first;
        return static_cast<std::uint64_t>(INT64_MAX);
    }
    // Rebuilds `pending` from pending_changes and the blocks (open(), and a lost group).
    Result<void> load_pending();
    void lose_group() {
        tip = durable_tip;
        if (auto r = load_pending(); !r) pending_lost = r.error();
    }
    // The escrow `trade_id` as of the newest block: `delta`'s (the block being appended),
    // then the pending blocks', then the table's.
    Result<std::optional<Escrow>> escrow_parties(const Hash256& trade_id,
                                                 const StateDelta& delta) const;
    Result<void> sync_locked();
    Result<void> run(const Stmt& stmt, const char* context) {
        Query q(db, stmt, context);
        return q.run();
    }
    Result<State> load_state_locked() const;
    Result<std::vector<TxRecord>>
    txs_of_address_locked(const Address& address, std::uint64_t offset, std::uint32_t limit) const;
};

Result<void> SqliteStore::Impl::prepare_all() {
    struct Entry {
        Stmt* stmt;
        const char* sql;
    };
    const Entry entries[] = {
        {&begin_read, "BEGIN DEFERRED"},
        {&begin_write, "BEGIN IMMEDIATE"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
        {&savepoint, "SAVEPOINT block"},
        {&release, "RELEASE block"},
        {&rollback_to, "ROLLBACK TO block"},
        {&get_chain, "SELECT height, tip_hash, state_root, total_minted FROM chain WHERE id = 0"},
        {&put_chain, "INSERT INTO chain (id, height, tip_hash, state_root, total_minted) "
                     "VALUES (0, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET "
                     "height = excluded.height, tip_hash = excluded.tip_hash, "
                     "state_root = excluded.state_root, total_minted = excluded.total_minted"},
        {&get_block_at, "SELECT hash, data FROM blocks WHERE height = ?1"},
        {&get_block_by_hash, "SELECT height, data FROM blocks WHERE hash = ?1"},
        {&put_block, "INSERT INTO blocks (height, hash, data) VALUES (?1, ?2, ?3)"},
        {&get_tx, "SELECT height, idx FROM txs WHERE key = ?1"},
        {&put_tx, "INSERT INTO txs (key, height, idx) VALUES (?1, ?2, ?3)"},
        {&get_tx_collision, "SELECT height, idx FROM tx_collisions WHERE txid = ?1"},
        {&put_tx_collision, "INSERT INTO tx_collisions (txid, height, idx) VALUES (?1, ?2, ?3)"},
        {&get_address_txs, "SELECT height, idx FROM address_txs WHERE address = ?1 AND "
                           "height < ?4 ORDER BY height, idx LIMIT ?2 OFFSET ?3"},
        // OR IGNORE: a slice written again after a restart finds its rows there.
        {&put_address_tx,
         "INSERT OR IGNORE INTO address_txs (address, height, idx) VALUES (?1, ?2, ?3)"},
        {&get_escrow_parties, "SELECT buyer, seller FROM escrows WHERE trade_id = ?1"},
        {&all_accounts, "SELECT address, balance, nonce FROM accounts"},
        {&put_account, "INSERT INTO accounts (address, balance, nonce) VALUES (?1, ?2, ?3) "
                       "ON CONFLICT (address) DO UPDATE SET "
                       "balance = excluded.balance, nonce = excluded.nonce"},
        {&all_escrows,
         "SELECT trade_id, buyer, seller, amount, deadline, opened_at, status FROM escrows"},
        {&put_escrow,
         "INSERT INTO escrows (trade_id, buyer, seller, amount, deadline, opened_at, status) "
         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (trade_id) DO UPDATE SET "
         "buyer = excluded.buyer, seller = excluded.seller, amount = excluded.amount, "
         "deadline = excluded.deadline, opened_at = excluded.opened_at, "
         "status = excluded.status"},
        {&all_replicas, "SELECT id, public_key, endpoint FROM replicas ORDER BY id"},
        {&clear_replicas, "DELETE FROM replicas"},
        {&put_replica, "INSERT INTO replicas (id, public_key, endpoint) VALUES (?1, ?2, ?3)"},
        {&get_user_meta, "SELECT value FROM user_meta WHERE key = ?1"},
        {&put_user_meta, "INSERT INTO user_meta (key, value) VALUES (?1, ?2) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
        {&put_certificate, "INSERT INTO certificates (height, data) VALUES (?1, ?2) "
                           "ON CONFLICT (height) DO UPDATE SET data = excluded.data"},
        {&get_certificate_from, "SELECT height, data FROM certificates WHERE height >= ?1 "
                                "ORDER BY height LIMIT 1"},
        {&all_pending, "SELECT height, changes FROM pending_changes ORDER BY height"},
        {&put_pending, "INSERT INTO pending_changes (height, changes) VALUES (?1, ?2)"},
        {&clear_pending, "DELETE FROM pending_changes WHERE height <= ?1"},
        {&count_address_txs, "SELECT count(*) FROM address_txs WHERE address = ?1 AND height < ?2"},
        {&get_block_hash, "SELECT hash FROM blocks WHERE height = ?1"},
    };
    for (const auto& e : entries) {
        auto s = prepare(db, e.sql);
        if (!s) return s.error();
        *e.stmt = std::move(*s);
    }
    return {};
}

Result<std::optional<ChainRow>> SqliteStore::Impl::read_chain() const {
    Query q(db, get_chain, "reading the chain summary");
    auto row = q.step();
    if (!row) return row.error();
    if (!*row) return std::optional<ChainRow>{};
    ChainRow c;
    auto height = q.col_u64(0, "chain height");
    auto tip = q.col_fixed<Hash256>(1, "chain tip hash");
    auto root = q.col_fixed<Hash256>(2, "chain state root");
    auto minted = q.col_u64(3, "chain total minted");
    if (!height) return height.error();
    if (!tip) return tip.error();
    if (!root) return root.error();
    if (!minted) return minted.error();
    return std::optional<ChainRow>(ChainRow{*height, *tip, *root, *minted});
}

// The chain summary and the blocks are written in the same transaction, so they agree in any
// store SQLite opens; a disagreement means the file was altered behind our back. Gives the
// tip height (nullopt for an empty store). The caller holds a read transaction, so that a
// writer in another process cannot make a sound store look torn.
Result<std::optional<std::uint64_t>> SqliteStore::Impl::check_chain_consistent() const {
    // max() rather than count(): O(log n) on the primary key, so opening a long chain stays
    // fast. append() keeps heights contiguous, so the highest block is the whole story.
    Stmt max_height;
    {
        auto s = prepare(db, "SELECT max(height) FROM blocks");
        if (!s) return s.error();
        max_height = std::move(*s);
    }
    Query q(db, max_height, "checking the chain summary");
    if (auto row = q.step(); !row) return row.error();
    auto chain = read_chain();
    if (!chain) return chain.error();
    if (!*chain) {
        if (!q.is_null(0)) return corrupt("blocks are stored but the chain summary is missing");
        return std::optional<std::uint64_t>{};
    }
    auto max = q.col_u64(0, "highest block");
    if (!max) return max.error();
    if (*max != (*chain)->height)
        return corrupt("chain summary says height " + std::to_string((*chain)->height) +
                       ", highest stored block is " + std::to_string(*max));
    Query tip(db, get_block_at, "checking the chain summary");
    auto tip_row = tip.u64(1, *max).step();
    if (!tip_row) return tip_row.error();
    if (!*tip_row) return corrupt("tip block vanished");
    auto tip_hash = tip.col_fixed<Hash256>(0, "tip block hash");
    if (!tip_hash) return tip_hash.error();
    if (*tip_hash != (*chain)->tip_hash) return corrupt("chain summary names another tip block");
    return std::optional<std::uint64_t>(*max);
}

Result<Block> SqliteStore::Impl::decode_block_row(std::uint64_t height, const Hash256& hash,
                                                  const Bytes& data) const {
    auto block = decode_block(data);
    const std::string where = "block at height " + std::to_string(height);
    if (!block) return corrupt(where + ": " + block.error().message());
    if (block->header.height != height)
        return corrupt(where + " decodes to height " + std::to_string(block->header.height));
    if (block->hash() != hash) return corrupt(where + " does not match its stored hash");
    return block;
}

namespace {

// Reads a (height, idx) pair from columns 0 and 1.
Result<TxPos> read_pos(const Query& q) {
    auto height = q.col_u64(0, "transaction height");
    auto idx = q.col_i64(1, "transaction index");
    if (!height) return height.error();
    if (!idx) return idx.error();
    if (*idx < 0 || *idx > std::int64_t{UINT32_MAX})
        return corrupt("transaction index " + std::to_string(*idx));
    return TxPos{*height, static_cast<std::uint32_t>(*idx)};
}

std::string where(const TxPos& pos) {
    return "transaction " + std::to_string(pos.idx) + " of block " + std::to_string(pos.height);
}

} // namespace

std::int64_t SqliteStore::Impl::tx_key(const Hash256& txid) const {
    std::uint64_t key = 0;
    for (std::size_t i = 0; i < 8; ++i)
        key = key << 8 | txid.bytes[i];
    return detail::to_sql(key & tx_key_mask);
}

// `blob` keeps the last block read, so a list of transactions from one block reads it once.
Result<Tx> SqliteStore::Impl::tx_at(const TxPos& pos, std::optional<BlockBlob>& blob) const {
    if (!blob || blob->height != pos.height) {
        blob.reset();
        Query q(db, get_block_at, "reading a transaction's block");
        auto row = q.u64(1, pos.height).step();
        if (!row) return row.error();
        if (!*row) return corrupt(where(pos) + ": the block is missing");
        auto hash = q.col_fixed<Hash256>(0, "block hash");
        if (!hash) return hash.error();
        auto data = q.col_blob(1, "block data");
        if (!data) return data.error();
        // The header only: what block_at checks short of decoding every transaction.
        Reader r(*data);
        const BlockHeader header = decode_header(r);
        if (!r.ok() || header.height != pos.height || header.hash() != *hash)
            return corrupt("block at height " + std::to_string(pos.height) +
                           " does not match its stored height and hash");
        blob = BlockBlob{pos.height, std::move(*data)};
    }
    auto tx = decode_block_tx(blob->data, pos.idx);
    if (!tx) return corrupt(where(pos) + ": " + tx.error().message());
    return tx;
}

// The transaction with this id, from its block; nullopt when none is stored.
Result<std::optional<TxRecord>> SqliteStore::Impl::find_tx(const Hash256& txid) const {
    if (pending_lost) return *pending_lost;
    const TxPos* kept = kept_place(txid);
    if (!kept) return find_indexed_tx(txid);
    const TxPos pos = *kept;
    std::optional<BlockBlob> blob;
    auto tx = tx_at(pos, blob);
    if (!tx) return tx.error();
    if (tx->id() != txid) return corrupt(where(pos) + " is not the transaction kept for it");
    return std::optional<TxRecord>(TxRecord{std::move(*tx), pos.height, pos.idx});
}

Result<std::optional<TxRecord>> SqliteStore::Impl::find_indexed_tx(const Hash256& txid) const {
    std::optional<TxPos> pos;
    {
        Query q(db, get_tx, "reading transaction");
        auto row = q.i64(1, tx_key(txid)).step();
        if (!row) return row.error();
        if (!*row) return std::optional<TxRecord>{};
        auto p = read_pos(q);
        if (!p) return p.error();
        pos = *p;
    }
    std::optional<BlockBlob> blob;
    auto tx = tx_at(*pos, blob);
    if (!tx) return tx.error();
    if (const Hash256 id = tx->id(); id != txid) {
        // The row holder must share the key; anything else means the block changed after
        // the row was written.
        if (tx_key(id) != tx_key(txid))
            return corrupt(where(*pos) + " does not match its index row");
        Query q(db, get_tx_collision, "reading transaction");
        auto row = q.blob(1, txid).step();
        if (!row) return row.error();
        if (!*row) return std::optional<TxRecord>{};
        auto p = read_pos(q);
        if (!p) return p.error();
        pos = *p;
        tx = tx_at(*pos, blob);
        if (!tx) return tx.error();
        if (tx->id() != txid) return corrupt(where(*pos) + " does not match its index row");
    }
    return std::optional<TxRecord>(TxRecord{std::move(*tx), pos->height, pos->idx});
}

// Address rows carry no id, so a transaction read through one is checked against the id
// index instead: a block altered behind the store's back yields a transaction the index
// does not place there.
Result<void> SqliteStore::Impl::check_indexed_at(const Hash256& txid, const TxPos& pos) const {
    {
        Query q(db, get_tx, "checking a transaction's index row");
        auto row = q.i64(1, tx_key(txid)).step();
        if (!row) return row.error();
        if (!*row) return corrupt(where(pos) + " has no index row");
        auto p = read_pos(q);
        if (!p) return p.error();
        if (*p == pos) return {};
    }
    Query q(db, get_tx_collision, "checking a transaction's index row");
    auto row = q.blob(1, txid).step();
    if (!row) return row.error();
    if (!*row) return corrupt(where(pos) + " has no index row");
    auto p = read_pos(q);
    if (!p) return p.error();
    if (*p != pos) return corrupt(where(pos) + " is indexed elsewhere");
    return {};
}

// Errc::duplicate_tx when a transaction with this id is stored already, this block's
// earlier ones included. The common case is one insert; only a taken key costs a read.
Result<void> SqliteStore::Impl::index_tx(const Hash256& txid, const TxPos& pos) {
    {
        Query q(db, put_tx, "storing transaction");
        auto r = q.i64(1, tx_key(txid)).u64(2, pos.height).i64(3, pos.idx).run();
        if (r) return {};
        if (q.last_rc() != SQLITE_CONSTRAINT_PRIMARYKEY) return r;
    }
    auto stored = find_indexed_tx(txid);
    if (!stored) return stored.error();
    // At the same place: a slice written before a restart, written again.
    if (*stored && (*stored)->height == pos.height && (*stored)->index == pos.idx) return {};
    if (*stored) return make_error(Errc::duplicate_tx, "stored already");
    Query q(db, put_tx_collision, "storing transaction");
    auto r = q.blob(1, txid).u64(2, pos.height).i64(3, pos.idx).run();
    if (!r && q.last_rc() == SQLITE_CONSTRAINT_PRIMARYKEY)
        return make_error(Errc::duplicate_tx, "stored already");
    return r;
}

Result<void> SqliteStore::Impl::append_locked(const Block& block, const Hash256& hash,
                                              const StateDelta& delta,
                                              const std::vector<Hash256>& txids) {
    if (pending_lost) return *pending_lost;
    if (durability != Durability::each_append) return append_to_group(block, hash, delta, txids);
    Transaction txn(db, commit, rollback);
    // IMMEDIATE takes the write lock now, so the tip read in write_block cannot go stale
    // before the writes that depend on it.
    if (auto r = txn.begin(begin_write); !r) return r;
    BlockRows rows;
    if (auto r = write_block(block, hash, delta, txids, rows); !r) return r;
    if (auto r = txn.commit(); !r) return r;
    // Only now: a failed COMMIT leaves the stored tip, and so this copy, where it was.
    tip = durable_tip = block.header.height;
    note_written(rows, delta);
    return {};
}

Result<void> SqliteStore::Impl::write_in_group(const std::function<Result<void>()>& write) {
    if (!group_open) {
        if (auto r = run(begin_write, "opening a group of blocks"); !r) return r;
        group_open = true;
    }
    if (auto r = run(savepoint, "opening a savepoint"); !r) return r;
    auto written = write();
    if (written) written = run(release, "closing a savepoint");
    if (!written) {
        if (sqlite3_get_autocommit(db)) {
            // SQLite rolled the whole transaction back itself (e.g. a full disk): the
            // group's earlier blocks are gone too.
            group_open = false;
            lose_group();
        } else {
            (void)run(rollback_to, "undoing a write");
            (void)run(release, "closing a savepoint");
        }
        return written;
    }
    return {};
}

Result<void> SqliteStore::Impl::append_to_group(const Block& block, const Hash256& hash,
                                                const StateDelta& delta,
                                                const std::vector<Hash256>& txids) {
    BlockRows rows;
    auto written = write_in_group([&] { return write_block(block, hash, delta, txids, rows); });
    if (written) {
        tip = block.header.height;
        note_written(rows, delta);
    }
    return written;
}

Result<void> SqliteStore::Impl::sync_locked() {
    if (!group_open) return {};
    group_open = false;
    if (auto r = run(commit, "committing a group of blocks"); !r) {
        // A COMMIT that failed (SQLITE_BUSY, I/O) may leave the transaction open.
        if (!sqlite3_get_autocommit(db)) (void)run(rollback, "rolling back a group of blocks");
        lose_group();
        return r;
    }
    durable_tip = tip;
    return {};
}

Result<void> SqliteStore::Impl::write_block(const Block& block, const Hash256& hash,
                                            const StateDelta& delta,
                                            const std::vector<Hash256>& txids, BlockRows& rows) {
    const std::uint64_t height = block.header.height;
    auto chain = read_chain();
    if (!chain) return chain.error();
    const std::uint64_t expected = *chain ? (*chain)->height + 1 : 0;
    if (height != expected)
        return make_error(Errc::wrong_height, "expected height " + std::to_string(expected) +
                                                  ", got " + std::to_string(height));
    // Genesis has no parent to check (its prev_hash commits to the chain parameters).
    if (*chain && block.header.prev_hash != (*chain)->tip_hash)
        return make_error(Errc::wrong_prev_hash, "block does not extend the tip");
    // A block's kept state change is checked against its state root when the store is
    // opened again; one that does not chain from the tip's root is refused now instead.
    Bytes changes;
    if (*chain) {
        changes = delta.encode_changes();
        if (next_state_root((*chain)->state_root, changes) != delta.state_root)
            return make_error(
                Errc::invalid_argument,
                "the delta's changes do not lead from the tip's state root to its own");
    }

    {
        const Bytes encoded = block.encode();
        Query q(db, put_block, "storing block");
        auto r = q.u64(1, height).blob(2, hash).blob_borrowed(3, encoded).run();
        if (!r) {
            if (q.last_rc() == SQLITE_CONSTRAINT_UNIQUE)
                return make_error(Errc::invalid_argument, "a block with this hash is stored");
            return r;
        }
    }

    if (auto r = index_rows(block, delta, txids, rows); !r) return r;
    if (auto r = check_new(rows); !r) return r;
    // Genesis (often most of the accounts there will be) is written at once, and so is every
    // block when batches are of one. Neither ever has a batch being written before it.
    if (height == 0 || batching.max_pending_txs <= 1 || batching.max_pending_blocks <= 1) {
        auto batch = batch_of(rows, delta);
        if (auto r = write_slice(*batch, batch->end()); !r) return r;
        rows.written = true;
    } else {
        // The block stays pending until its batch's last slice is written, whenever that is.
        {
            Query q(db, put_pending, "keeping a block's state change");
            if (auto r = q.u64(1, height).blob(2, changes).run(); !r) return r;
        }
        // A batch is written over the appends that follow it, a slice of every table per
        // append, sized to finish by the time the next batch is half full: no append writes a
        // whole batch (docs/benchmarks.md, "The store as it grows"). Slices are key ranges,
        // so together they touch each page about once, as one write of the batch would.
        const bool full = pending.blocks + 1 >= batching.max_pending_blocks ||
                          pending.tx_pos.size() + block.txs.size() >= batching.max_pending_txs;
        const double share =
            2.0 * std::max(static_cast<double>(block.txs.size()) / batching.max_pending_txs,
                           1.0 / batching.max_pending_blocks);
        if (writing) {
            // Finished at once if the next batch is full first (appends of very uneven size).
            const RowCursor to = full ? writing->end() : writing->advanced(share);
            if (auto r = write_slice(*writing, to); !r) return r;
            rows.writing_to = to;
        }
        if (full) {
            rows.started = batch_of(rows, delta);
            const RowCursor to = rows.started->advanced(share);
            if (auto r = write_slice(*rows.started, to); !r) return r;
            rows.started->written = to;
        }
    }

    if (delta.replicas) {
        {
            Query q(db, clear_replicas, "replacing replicas");
            if (auto r = q.run(); !r) return r;
        }
        for (const auto& rep : *delta.replicas) {
            Query q(db, put_replica, "storing replica");
            auto r = q.i64(1, rep.id).blob(2, rep.key).text(3, rep.endpoint).run();
            if (!r) return r;
        }
    }
    {
        Query q(db, put_chain, "storing the chain summary");
        auto r = q.u64(1, height)
                     .blob(2, hash)
                     .blob(3, delta.state_root)
                     .u64(4, delta.total_minted)
                     .run();
        if (!r) return r;
    }
    return {};
}

Result<std::optional<Escrow>> SqliteStore::Impl::escrow_parties(const Hash256& trade_id,
                                                                const StateDelta& delta) const {
    if (auto it = delta.escrows.find(trade_id); it != delta.escrows.end())
        return std::optional<Escrow>(it->second);
    if (auto it = pending.escrows.find(trade_id); it != pending.escrows.end())
        return std::optional<Escrow>(it->second);
    if (writing)
        if (const Escrow* e = WritingBatch::find(writing->escrows, trade_id))
            return std::optional<Escrow>(*e);
    Query q(db, get_escrow_parties, "looking up escrow parties");
    auto row = q.blob(1, trade_id).step();
    if (!row) return row.error();
    if (!*row) return std::optional<Escrow>{};
    auto buyer = q.col_fixed<Address>(0, "escrow buyer");
    auto seller = q.col_fixed<Address>(1, "escrow seller");
    if (!buyer) return buyer.error();
    if (!seller) return seller.error();
    Escrow e;
    e.buyer = *buyer;
    e.seller = *seller;
    return std::optional<Escrow>(e);
}

Result<void> SqliteStore::Impl::index_rows(const Block& block, const StateDelta& delta,
                                           const std::vector<Hash256>& txids,
                                           BlockRows& rows) const {
    const std::uint64_t height = block.header.height;
    // A release or refund names only the trade; its parties come from the escrow, which
    // this block may have opened (then only the delta knows it) or an earlier one did.
    std::optional<Escrow> looked_up;
    std::optional<Error> lookup_error;
    auto find_escrow = [&](const Hash256& trade_id) -> const Escrow* {
        auto e = escrow_parties(trade_id, delta);
        if (!e) {
            lookup_error = e.error();
            return nullptr;
        }
        looked_up = std::move(*e);
        return looked_up ? &*looked_up : nullptr;
    };
    rows.height = height;
    rows.txs.reserve(block.txs.size());
    rows.parties.reserve(2 * block.txs.size());
    for (std::size_t i = 0; i < block.txs.size(); ++i) {
        const TxPos pos{height, static_cast<std::uint32_t>(i)};
        rows.txs.emplace_back(txids[i], pos);
        auto parties = tx_parties(block.txs[i], find_escrow);
        if (lookup_error) return *lookup_error;
        for (const Address& party : parties)
            rows.parties.emplace_back(party, pos);
    }
    return {};
}

// Errc::duplicate_tx when one of the block's transactions is stored already, this block's
// earlier ones included.
Result<void> SqliteStore::Impl::check_new(const BlockRows& rows) const {
    auto duplicate = [](const TxPos& pos) {
        return make_error(Errc::duplicate_tx,
                          "transaction " + std::to_string(pos.idx) + " is stored already");
    };
    // In key order: the table's lookups then walk its B-tree from left to right.
    std::vector<std::pair<std::int64_t, std::size_t>> order;
    order.reserve(rows.txs.size());
    for (std::size_t i = 0; i < rows.txs.size(); ++i)
        order.emplace_back(tx_key(rows.txs[i].first), i);
    std::sort(order.begin(), order.end());
    for (std::size_t k = 0; k < order.size(); ++k) {
        const auto& [id, pos] = rows.txs[order[k].second];
        // The same id twice in the block: same key, so within the run of equal keys.
        for (std::size_t j = k; j-- > 0 && order[j].first == order[k].first;)
            if (rows.txs[order[j].second].first == id)
                return duplicate(pos.idx > rows.txs[order[j].second].second.idx
                                     ? pos
                                     : rows.txs[order[j].second].second);
        if (kept_place(id)) return duplicate(pos);
        auto stored = find_indexed_tx(id);
        if (!stored) return stored.error();
        if (*stored) return duplicate(pos);
    }
    return {};
}

// The rows of every pending block and of this one, each table's in key order: rows that
// share a leaf page are then written together, and the page goes to the log once.
std::unique_ptr<WritingBatch> SqliteStore::Impl::batch_of(const BlockRows& rows,
                                                          const StateDelta& delta) const {
    auto batch = std::make_unique<WritingBatch>();
    batch->first = pending.blocks > 0 ? pending.first : rows.height;
    batch->top = rows.height;
    auto& txs = batch->txs;
    txs.reserve(pending.tx_pos.size() + rows.txs.size());
    for (const auto& [id, pos] : pending.tx_pos)
        txs.push_back({tx_key(id), pos, id});
    for (const auto& [id, pos] : rows.txs)
        txs.push_back({tx_key(id), pos, id});
    // Among ids that share a key the oldest keeps the row, as if written block by block.
    std::sort(txs.begin(), txs.end(), [](const TxRow& a, const TxRow& b) {
        return std::tie(a.key, a.pos.height, a.pos.idx) < std::tie(b.key, b.pos.height, b.pos.idx);
    });

    auto& parties = batch->parties;
    parties.reserve(rows.parties.size() + 2 * pending.tx_pos.size());
    for (const auto& [party, places] : pending.by_address)
        for (const TxPos& pos : places)
            parties.emplace_back(party, pos);
    parties.insert(parties.end(), rows.parties.begin(), rows.parties.end());
    std::sort(parties.begin(), parties.end(), [](const auto& a, const auto& b) {
        return std::tie(a.first, a.second.height, a.second.idx) <
               std::tie(b.first, b.second.height, b.second.idx);
    });

    // The newest value of each account and escrow: this block's over the pending blocks'.
    std::map<Address, Account> accounts = pending.accounts;
    for (const auto& [address, account] : delta.accounts)
        accounts.insert_or_assign(address, account);
    batch->accounts.assign(accounts.begin(), accounts.end());
    std::map<Hash256, Escrow> escrows = pending.escrows;
    for (const auto& [trade_id, e] : delta.escrows)
        escrows.insert_or_assign(trade_id, e);
    batch->escrows.assign(escrows.begin(), escrows.end());
    return batch;
}

Result<void> SqliteStore::Impl::write_slice(const WritingBatch& batch, const RowCursor& to) {
    for (std::size_t i = batch.written.txs; i < to.txs; ++i) {
        const TxRow& row = batch.txs[i];
        if (auto r = index_tx(row.id, row.pos); !r) {
            if (r.code() == Errc::duplicate_tx)
                return make_error(Errc::duplicate_tx, where(row.pos) + " is stored already");
            return r;
        }
    }
    for (std::size_t i = batch.written.parties; i < to.parties; ++i) {
        const auto& [party, pos] = batch.parties[i];
        Query q(db, put_address_tx, "indexing transaction");
        auto r = q.blob(1, party).u64(2, pos.height).i64(3, pos.idx).run();
        if (!r) return r;
    }
    for (std::size_t i = batch.written.accounts; i < to.accounts; ++i) {
        const auto& [address, account] = batch.accounts[i];
        Query q(db, put_account, "storing account");
        auto r = q.blob(1, address).u64(2, account.balance).u64(3, account.nonce).run();
        if (!r) return r;
    }
    for (std::size_t i = batch.written.escrows; i < to.escrows; ++i) {
        const auto& [trade_id, e] = batch.escrows[i];
        Query q(db, put_escrow, "storing escrow");
        auto r = q.blob(1, trade_id)
                     .blob(2, e.buyer)
                     .blob(3, e.seller)
                     .u64(4, e.amount)
                     .u64(5, e.deadline)
                     .u64(6, e.opened_at)
                     .i64(7, static_cast<std::int64_t>(e.status))
                     .run();
        if (!r) return r;
    }
    if (!batch.done(to)) return {};
    Query q(db, clear_pending, "writing pending rows");
    return q.u64(1, batch.top).run();
}

Result<void> SqliteStore::Impl::load_pending() {
    pending = PendingRows{};
    writing.reset();
    std::vector<std::pair<std::uint64_t, Bytes>> kept;
    {
        Query q(db, all_pending, "reading pending state changes");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto height = q.col_u64(0, "pending height");
            if (!height) return height.error();
            auto changes = q.col_blob(1, "pending state change");
            if (!changes) return changes.error();
            kept.emplace_back(*height, std::move(*changes));
        }
    }
    if (kept.empty()) return {};
    auto failed = [&](const std::string& what) {
        pending = PendingRows{};
        return corrupt(what);
    };
    if (!tip || kept.front().first == 0 || kept.back().first != *tip ||
        kept.back().first - kept.front().first + 1 != kept.size())
        return failed("pending state changes are not those of the blocks right below the tip");
    auto parent = read_block(kept.front().first - 1);
    if (!parent) return failed(parent.error().detail);
    Hash256 root = parent->header.state_root;
    for (auto& [height, changes] : kept) {
        auto block = read_block(height);
        if (!block) return failed(block.error().detail);
        auto delta = decode_changes(changes);
        const std::string at = "pending state change of block " + std::to_string(height);
        if (!delta) return failed(at + ": " + delta.error().message());
        if (delta->height != height) return failed(at + " is for another height");
        const Hash256 next = next_state_root(root, changes);
        if (next != block->header.state_root) return failed(at + " does not match its state root");
        root = next;
        const std::vector<Hash256> txids = block->txids();
        if (merkle_root(txids) != block->header.tx_root)
            return failed("block " + std::to_string(height) +
                          ": its transactions are not the ones its header commits to");
        BlockRows rows;
        if (auto r = index_rows(*block, *delta, txids, rows); !r) {
            pending = PendingRows{};
            return r.error();
        }
        pending.add(rows, *delta);
    }
    return {};
}

Result<Block> SqliteStore::Impl::read_block(std::uint64_t height) const {
    Query q(db, get_block_at, "reading block");
    auto row = q.u64(1, height).step();
    if (!row) return row.error();
    if (!*row) return make_error(Errc::not_found, "no block at height " + std::to_string(height));
    auto hash = q.col_fixed<Hash256>(0, "block hash");
    if (!hash) return hash.error();
    auto data = q.col_blob(1, "block data");
    if (!data) return data.error();
    return decode_block_row(height, *hash, *data);
}

Result<State> SqliteStore::Impl::load_state_locked() const {
    if (pending_lost) return *pending_lost;
    // One read transaction: a consistent snapshot even if another process appends. An
    // open group is one already (and BEGIN inside it would fail).
    Transaction txn(db, commit, rollback);
    if (!group_open)
        if (auto r = txn.begin(begin_read); !r) return r.error();
    State state;
    auto chain = read_chain();
    if (!chain) return chain.error();
    if (!*chain) return state;
    state.height = (*chain)->height;
    state.tip_hash = (*chain)->tip_hash;
    state.state_root = (*chain)->state_root;
    state.total_minted = (*chain)->total_minted;

    {
        Query q(db, all_accounts, "loading accounts");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto address = q.col_fixed<Address>(0, "account address");
            auto balance = q.col_u64(1, "account balance");
            auto nonce = q.col_u64(2, "account nonce");
            if (!address) return address.error();
            if (!balance) return balance.error();
            if (!nonce) return nonce.error();
            state.accounts.emplace(*address, Account{*balance, *nonce});
        }
    }
    {
        Query q(db, all_escrows, "loading escrows");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto trade_id = q.col_fixed<Hash256>(0, "escrow trade id");
            auto buyer = q.col_fixed<Address>(1, "escrow buyer");
            auto seller = q.col_fixed<Address>(2, "escrow seller");
            auto amount = q.col_u64(3, "escrow amount");
            auto deadline = q.col_u64(4, "escrow deadline");
            auto opened_at = q.col_u64(5, "escrow opened_at");
            auto status = q.col_i64(6, "escrow status");
            if (!trade_id) return trade_id.error();
            if (!buyer) return buyer.error();
            if (!seller) return seller.error();
            if (!amount) return amount.error();
            if (!deadline) return deadline.error();
            if (!opened_at) return opened_at.error();
            if (!status) return status.error();
            if (*status < static_cast<int>(EscrowStatus::open) ||
                *status > static_cast<int>(EscrowStatus::refunded))
                return corrupt("escrow status " + std::to_string(*status));
            state.escrows.emplace(*trade_id, Escrow{*buyer, *seller, *amount, *deadline, *opened_at,
                                                    static_cast<EscrowStatus>(*status)});
        }
    }
    {
        Query q(db, all_replicas, "loading replicas");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto id = q.col_i64(0, "replica id");
            auto key = q.col_fixed<PublicKey>(1, "replica key");
            auto endpoint = q.col_text(2, "replica endpoint");
            if (!id) return id.error();
            if (!key) return key.error();
            if (!endpoint) return endpoint.error();
            if (*id < 0 || *id > std::int64_t{UINT32_MAX})
                return corrupt("replica id " + std::to_string(*id));
            state.replicas.push_back(
                ReplicaInfo{static_cast<std::uint32_t>(*id), *key, std::move(*endpoint)});
        }
    }
    if (auto r = txn.commit(); !r) return r.error();
    // The writing batch's values, then the newer pending blocks'.
    if (writing) {
        for (const auto& [address, account] : writing->accounts)
            state.accounts.insert_or_assign(address, account);
        for (const auto& [trade_id, escrow] : writing->escrows)
            state.escrows.insert_or_assign(trade_id, escrow);
    }
    for (const auto& [address, account] : pending.accounts)
        state.accounts.insert_or_assign(address, account);
    for (const auto& [trade_id, escrow] : pending.escrows)
        state.escrows.insert_or_assign(trade_id, escrow);
    return state;
}

Result<std::vector<TxRecord>> SqliteStore::Impl::txs_of_address_locked(const Address& address,
                                                                       std::uint64_t offset,
                                                                       std::uint32_t limit) const {
    if (pending_lost) return *pending_lost;
    std::vector<TxRecord> out;
    // SQLite's OFFSET is signed; no store holds 2^63 transactions for one address.
    if (limit == 0 || offset > static_cast<std::uint64_t>(INT64_MAX)) return out;
    std::optional<BlockBlob> blob;
    {
        Query q(db, get_address_txs, "listing transactions of an address");
        q.blob(1, address).i64(2, limit).u64(3, offset).u64(4, kept_from());
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto pos = read_pos(q);
            if (!pos) return pos.error();
            auto tx = tx_at(*pos, blob);
            if (!tx) return tx.error();
            if (auto r = check_indexed_at(tx->id(), *pos); !r) return r.error();
            out.push_back(TxRecord{std::move(*tx), pos->height, pos->idx});
        }
    }
    // The blocks kept in memory are newer than every row read above: the list goes on with
    // the writing batch's, then the pending blocks'.
    std::vector<TxPos> writing_places;
    if (writing) writing_places = writing->places_of(address);
    std::vector<const std::vector<TxPos>*> kept;
    if (!writing_places.empty()) kept.push_back(&writing_places);
    if (auto it = pending.by_address.find(address); it != pending.by_address.end())
        kept.push_back(&it->second);
    if (out.size() == limit || kept.empty()) return out;
    std::uint64_t skip = 0; // of the kept rows
    if (out.empty() && offset > 0) {
        Query q(db, count_address_txs, "counting transactions of an address");
        auto row = q.blob(1, address).u64(2, kept_from()).step();
        if (!row) return row.error();
        auto written = q.col_u64(0, "transaction count");
        if (!written) return written.error();
        skip = offset - std::min(offset, *written);
    }
    for (const std::vector<TxPos>* places : kept) {
        for (const TxPos& pos : *places) {
            if (out.size() == limit) return out;
            if (skip > 0) {
                --skip;
                continue;
            }
            auto tx = tx_at(pos, blob);
            if (!tx) return tx.error();
            const TxPos* at = kept_place(tx->id());
            if (!at || !(*at == pos))
                return corrupt(where(pos) + " is not the transaction kept for it");
            out.push_back(TxRecord{std::move(*tx), pos.height, pos.idx});
        }
    }
    return out;
}

namespace {

// Decides whether `db` is an empty database (to initialise: 0), a popchain store this build
// can read (its schema version, older ones included), or something else, before anything is
// written to it.
Result<int> identify(sqlite3* db, const std::string& path) {
    // The first read of the file: where SQLite notices it is not a database at all.
    auto count_stmt = prepare(db, "SELECT count(*) FROM sqlite_master");
    // Only SQLite's "not a database" verdict means a foreign file; "locked" does not.
    auto not_ours = [&](const Error& e) {
        if (e.code != Errc::storage_corrupt) return e;
        return make_error(e.code, path + " is not a popchain store: " + e.detail);
    };
    if (!count_stmt) return not_ours(count_stmt.error());
    Query count(db, *count_stmt, "reading the schema");
    auto row = count.step();
    if (!row) return not_ours(row.error());
    auto objects = count.col_i64(0, "schema size");
    if (!objects) return objects.error();
    if (*objects == 0) return 0;

    auto has_meta = prepare(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                                "'popchain_meta'");
    if (!has_meta) return has_meta.error();
    Query meta_table(db, *has_meta, "reading the schema");
    auto found = meta_table.step();
    if (!found) return found.error();
    if (!*found)
        return make_error(Errc::invalid_argument,
                          path + " is an SQLite database but not a popchain store");

    auto meta = prepare(db, "SELECT value FROM popchain_meta WHERE key = ?1");
    if (!meta) return meta.error();
    {
        Query q(db, *meta, "reading the store format");
        auto r = q.text(1, "format").step();
        if (!r) return r.error();
        std::optional<std::string> format;
        if (*r && sqlite3_column_type(meta->get(), 0) == SQLITE_TEXT) {
            auto t = q.col_text(0, "format");
            if (!t) return t.error();
            format = *t;
        }
        if (format != format_name)
            return make_error(Errc::invalid_argument,
                              path + " is an SQLite database but not a popchain store");
    }
    Query q(db, *meta, "reading the schema version");
    auto r = q.text(1, "schema_version").step();
    if (!r) return r.error();
    if (!*r) return corrupt(path + ": schema version missing");
    auto version = q.col_i64(0, "schema version");
    if (!version) return version.error();
    if (*version > SqliteStore::schema_version)
        return make_error(Errc::invalid_argument,
                          path + " has schema version " + std::to_string(*version) +
                              ", newer than the " + std::to_string(SqliteStore::schema_version) +
                              " this build reads; upgrade popchain");
    if (*version < 1) return corrupt(path + ": schema version " + std::to_string(*version));
    return static_cast<int>(*version);
}

Result<void> create_schema(sqlite3* db) {
    if (auto r = exec(db, "BEGIN IMMEDIATE", "creating the schema"); !r) return r;
    // Another process may have created the store since identify() looked.
    auto again = identify(db, "");
    if (again && *again > 0) return exec(db, "ROLLBACK", "creating the schema");
    const std::string sql = std::string(schema_sql) + tx_index_sql + certificate_sql + pending_sql +
                            "INSERT INTO popchain_meta (key, value) VALUES ('format', '" +
                            std::string(format_name) + "'), ('schema_version', " +
                            std::to_string(SqliteStore::schema_version) + ");";
    if (auto r = exec(db, sql.c_str(), "creating the schema"); !r) {
        (void)exec(db, "ROLLBACK", "creating the schema");
        return r;
    }
    if (auto r = exec(db, "COMMIT", "creating the schema"); !r) {
        if (!sqlite3_get_autocommit(db)) (void)exec(db, "ROLLBACK", "creating the schema");
        return r;
    }
    return {};
}

} // namespace

// The id index rows of every stored block, each block decoded and checked on the way.
Result<void> SqliteStore::Impl::index_stored_blocks() {
    auto blocks = prepare(db, "SELECT height, hash, data FROM blocks ORDER BY height");
    if (!blocks) return blocks.error();
    Query q(db, *blocks, "indexing the stored blocks");
    for (;;) {
        auto row = q.step();
        if (!row) return row.error();
        if (!*row) return {};
        auto height = q.col_u64(0, "block height");
        if (!height) return height.error();
        auto hash = q.col_fixed<Hash256>(1, "block hash");
        if (!hash) return hash.error();
        auto data = q.col_blob(2, "block data");
        if (!data) return data.error();
        auto block = decode_block_row(*height, *hash, *data);
        if (!block) return block.error();
        for (std::size_t i = 0; i < block->txs.size(); ++i) {
            const TxPos pos{*height, static_cast<std::uint32_t>(i)};
            if (auto r = index_tx(block->txs[i].id(), pos); !r)
                return make_error(r.code(), where(pos) + ": " + r.error().detail);
        }
    }
}

// An older format to the current one, in one transaction: a crash or a failure anywhere
// leaves the store in its old format as it was.
//
// 1 to 2: the id index is rebuilt from the blocks, the source of truth it points into; the
// address rows are format 1's without their txid, since the parties a release or refund is
// listed under depend on escrows as of its block, which only those rows still say directly.
// The old tables' pages go to SQLite's free list for later blocks to reuse; the file does not
// shrink.
// 2 to 3: an empty certificate table (blocks stored before it stay provable by the
// certificates kept from then on, or by the latest one).
// 3 to 4: an empty pending_changes table (every stored block's rows are written).
Result<void> SqliteStore::Impl::upgrade(int from_version) {
    static_assert(SqliteStore::schema_version == 4,
                  "an upgrade to each newer version belongs here");
    const std::string context =
        "upgrading the store from schema version " + std::to_string(from_version);
    if (auto r = exec(db, "BEGIN IMMEDIATE", context.c_str()); !r) return r;
    auto upgraded = [&]() -> Result<void> {
        // Another process may have upgraded it since identify() looked.
        auto version = identify(db, path);
        if (!version) return version.error();
        if (*version == SqliteStore::schema_version) return {};
        if (*version == 1) {
            if (auto r = exec(db,
                              "ALTER TABLE address_txs RENAME TO address_txs_v1;"
                              "ALTER TABLE txs RENAME TO txs_v1;",
                              context.c_str());
                !r)
                return r;
            if (auto r = exec(db, tx_index_sql, context.c_str()); !r) return r;
            if (auto r = exec(db, certificate_sql, context.c_str()); !r) return r;
            if (auto r = exec(db, pending_sql, context.c_str()); !r) return r;
            if (auto r = prepare_all(); !r) return r;
            if (auto r = index_stored_blocks(); !r) return r;
            if (auto r = exec(db,
                              "INSERT INTO address_txs (address, height, idx) "
                              "SELECT address, height, idx FROM address_txs_v1;"
                              "DROP TABLE address_txs_v1;"
                              "DROP TABLE txs_v1;",
                              context.c_str());
                !r)
                return r;
        } else if (*version == 2 || *version == 3) {
            if (*version == 2)
                if (auto r = exec(db, certificate_sql, context.c_str()); !r) return r;
            if (auto r = exec(db, pending_sql, context.c_str()); !r) return r;
        } else {
            return make_error(Errc::invalid_argument,
                              "no upgrade from schema version " + std::to_string(*version));
        }
        return exec(db,
                    ("UPDATE popchain_meta SET value = " +
                     std::to_string(SqliteStore::schema_version) + " WHERE key = 'schema_version';")
                        .c_str(),
                    context.c_str());
    }();
    if (upgraded) upgraded = exec(db, "COMMIT", context.c_str());
    if (!upgraded) {
        if (!sqlite3_get_autocommit(db)) (void)exec(db, "ROLLBACK", context.c_str());
        return upgraded;
    }
    return {};
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::filesystem::path& file,
                                                       Durability durability) {
    return open_impl(file, durability, WriteBatching{}, all_key_bits);
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::filesystem::path& file,
                                                       Durability durability,
                                                       WriteBatching batching) {
    return open_impl(file, durability, batching, all_key_bits);
}

Result<std::unique_ptr<SqliteStore>> detail::SqliteStoreAccess::open_with_tx_key_mask(
    const std::filesystem::path& file, std::uint64_t mask, SqliteStore::WriteBatching batching) {
    return SqliteStore::open_impl(file, SqliteStore::Durability::each_append, batching, mask);
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open_impl(const std::filesystem::path& file,
                                                            Durability durability,
                                                            WriteBatching batching,
                                                            std::uint64_t tx_key_mask) {
    auto impl = std::make_unique<Impl>();
    impl->durability = durability;
    impl->batching = batching;
    impl->tx_key_mask = tx_key_mask;
    impl->path = file.string();
    // The connection is opened NOMUTEX: Impl::mutex already serialises every use of it.
    // Another process holding the write lock is waited for (5 s) rather than failed on.
    if (auto r = detail::open_connection(impl->path, impl->db, 5000); !r) return r.error();

    auto identity = identify(impl->db, impl->path);
    if (!identity) return identity.error();

    // WAL: a commit is one append to the log, and readers never block the writer.
    // synchronous=FULL: the log is fsynced at every commit, so a block append() reported
    // stored survives power loss, not just a crash of this process. With at_flush the commit
    // only writes the log (NORMAL, which SQLite keeps consistent across power loss) and
    // flush_to_disk() makes it durable; that mode is set only after an upgrade, whose commit
    // is durable when open() returns whatever the mode.
    if (auto r = pragma_expect(impl->db, "PRAGMA journal_mode = WAL", "wal"); !r) return r.error();
    // The schema's REFERENCES clauses document how the tables relate; SQLite does not check
    // them (foreign_keys stays off). Every row of a block is written by write_block in one
    // savepoint, after the block row the others refer to, so they hold by construction, and
    // checking them cost a B-tree lookup per index row: 6% of the one-tx block rate over TCP.
    if (auto r = exec(impl->db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;",
                      "configuring the connection");
        !r)
        return r.error();
    // Checkpoints (copying the log into the database) every 10,000 pages, about 40 MB of
    // log, instead of SQLite's 1,000: the pages every block touches (the chain row, the
    // newest leaves, the journal's tables) are then copied once per checkpoint, not ten
    // times. 3-6% more one-tx blocks per second over TCP (docs/benchmarks.md).
    if (auto r = exec(impl->db, "PRAGMA wal_autocheckpoint = 10000", "configuring the connection");
        !r)
        return r.error();

    if (*identity == 0) {
        if (auto r = create_schema(impl->db); !r) return r.error();
        auto again = identify(impl->db, impl->path);
        if (!again) return again.error();
    } else if (*identity < SqliteStore::schema_version) {
        if (auto r = impl->upgrade(*identity); !r)
            return make_error(r.code(), impl->path + ": " + r.error().detail);
    }
    if (durability == Durability::at_flush)
        if (auto r = exec(impl->db, "PRAGMA synchronous = NORMAL", "configuring the connection");
            !r)
            return r.error();
    if (auto r = impl->prepare_all(); !r) return r.error();
    {
        // The tip and the pending blocks below it from one snapshot, should another process
        // append meanwhile (the popchain tool reads a running node's store).
        Transaction txn(impl->db, impl->commit, impl->rollback);
        if (auto r = txn.begin(impl->begin_read); !r) return r.error();
        auto tip = impl->check_chain_consistent();
        if (!tip) return make_error(tip.code(), impl->path + ": " + tip.error().detail);
        impl->tip = impl->durable_tip = *tip;
        if (auto r = impl->load_pending(); !r)
            return make_error(r.code(), impl->path + ": " + r.error().detail);
        if (auto r = txn.commit(); !r) return r.error();
    }
    if (durability == Durability::at_flush) {
        // The connection has read the database, so SQLite has created the log file.
        const std::string wal = impl->path + "-wal";
        impl->wal_fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
        if (impl->wal_fd < 0) return make_error(Errc::io_error, wal + ": " + std::strerror(errno));
        // The log's directory entry too, once: SQLite syncs it only in FULL mode.
        const std::string dir = std::filesystem::absolute(file).parent_path().string();
        const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        const bool dir_synced = dir_fd >= 0 && ::fsync(dir_fd) == 0;
        if (dir_fd >= 0) ::close(dir_fd);
        if (!dir_synced) return make_error(Errc::io_error, dir + ": " + std::strerror(errno));
    }
    return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SqliteStore::~SqliteStore() = default;

std::optional<std::uint64_t> SqliteStore::tip_height() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->tip;
}

Result<void> SqliteStore::append(const Block& block, const StateDelta& delta) {
    const Hash256 hash = block.hash();
    auto txids = check_appendable(block, hash, delta);
    if (!txids) return txids.error();
    // Heights are stored as signed integers.
    if (block.header.height > static_cast<std::uint64_t>(INT64_MAX))
        return make_error(Errc::wrong_height, "height out of range");
    std::lock_guard lock(impl_->mutex);
    return impl_->append_locked(block, hash, delta, *txids);
}

Result<Block> SqliteStore::block_at(std::uint64_t height) const {
    std::lock_guard lock(impl_->mutex);
    return impl_->read_block(height);
}

Result<Block> SqliteStore::block_by_hash(const Hash256& hash) const {
    std::lock_guard lock(impl_->mutex);
    Query q(impl_->db, impl_->get_block_by_hash, "reading block");
    auto row = q.blob(1, hash).step();
    if (!row) return row.error();
    if (!*row) return make_error(Errc::not_found, "no block with hash " + to_hex(hash));
    auto height = q.col_u64(0, "block height");
    if (!height) return height.error();
    auto data = q.col_blob(1, "block data");
    if (!data) return data.error();
    return impl_->decode_block_row(*height, hash, *data);
}

Result<TxRecord> SqliteStore::tx_by_id(const Hash256& txid) const {
    std::lock_guard lock(impl_->mutex);
    auto found = impl_->find_tx(txid);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, "no transaction with id " + to_hex(txid));
    return std::move(**found);
}

Result<TxPlace> SqliteStore::tx_place(const Hash256& txid) const {
    std::lock_guard lock(impl_->mutex);
    if (impl_->pending_lost) return *impl_->pending_lost;
    TxPos pos;
    if (const TxPos* kept = impl_->kept_place(txid)) {
        pos = *kept;
    } else {
        auto found = impl_->find_indexed_tx(txid);
        if (!found) return found.error();
        if (!*found) return make_error(Errc::not_found, "no transaction with id " + to_hex(txid));
        pos = TxPos{(*found)->height, (*found)->index};
    }
    Query q(impl_->db, impl_->get_block_hash, "reading a block's hash");
    auto row = q.u64(1, pos.height).step();
    if (!row) return row.error();
    if (!*row) return corrupt(where(pos) + ": the block is missing");
    auto hash = q.col_fixed<Hash256>(0, "block hash");
    if (!hash) return hash.error();
    return TxPlace{pos.height, pos.idx, *hash};
}

Result<std::vector<TxRecord>> SqliteStore::txs_of_address(const Address& address,
                                                          std::uint64_t offset,
                                                          std::uint32_t limit) const {
    std::lock_guard lock(impl_->mutex);
    return impl_->txs_of_address_locked(address, offset, limit);
}

Result<State> SqliteStore::load_state() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->load_state_locked();
}

Result<void> SqliteStore::sync() {
    std::lock_guard lock(impl_->mutex);
    return impl_->sync_locked();
}

Result<void> SqliteStore::flush_to_disk() {
    if (impl_->wal_fd < 0) return {}; // every commit was durable already
    if (::fdatasync(impl_->wal_fd) != 0)
        return make_error(Errc::io_error, impl_->path + "-wal: " + std::strerror(errno));
    return {};
}

Result<void> SqliteStore::put_meta(const std::string& key, ByteView value) {
    std::lock_guard lock(impl_->mutex);
    if (auto r = impl_->sync_locked(); !r) return r;
    // A single statement outside BEGIN is its own transaction, durable at return.
    Query q(impl_->db, impl_->put_user_meta, "storing meta value");
    return q.text(1, key).blob(2, value).run();
}

Result<void> SqliteStore::put_certificate(std::uint64_t height, ByteView certificate) {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->tip || height > *impl_->tip)
        return make_error(Errc::not_found, "no block at height " + std::to_string(height) +
                                               " to keep a certificate for");
    auto write = [&]() -> Result<void> {
        Query q(impl_->db, impl_->put_certificate, "storing a certificate");
        return q.u64(1, height).blob(2, certificate).run();
    };
    // Beside the blocks of the open group, or (each_append) its own durable statement.
    if (impl_->durability == Durability::each_append) return write();
    return impl_->write_in_group(write);
}

Result<std::optional<StoredCertificate>> SqliteStore::certificate_from(std::uint64_t height) const {
    std::lock_guard lock(impl_->mutex);
    if (height > static_cast<std::uint64_t>(INT64_MAX)) return std::optional<StoredCertificate>{};
    Query q(impl_->db, impl_->get_certificate_from, "reading a certificate");
    auto row = q.u64(1, height).step();
    if (!row) return row.error();
    if (!*row) return std::optional<StoredCertificate>{};
    auto at = q.col_u64(0, "certificate height");
    if (!at) return at.error();
    auto data = q.col_blob(1, "certificate");
    if (!data) return data.error();
    if (*at < height) return corrupt("certificate row below the height asked for");
    return std::optional<StoredCertificate>(StoredCertificate{*at, std::move(*data)});
}

Result<void>
detail::SqliteStoreAccess::with_connection(SqliteStore& store,
                                           const std::function<Result<void>(sqlite3*)>& use) {
    SqliteStore::Impl& impl = *store.impl_;
    std::lock_guard lock(impl.mutex);
    if (auto r = impl.sync_locked(); !r) return r;
    return use(impl.db);
}

Result<void>
detail::SqliteStoreAccess::commit_with(SqliteStore& store,
                                       const std::function<Result<void>(sqlite3*)>& write) {
    SqliteStore::Impl& impl = *store.impl_;
    std::lock_guard lock(impl.mutex);
    if (auto r = impl.write_in_group([&] { return write(impl.db); }); !r) return r;
    return impl.sync_locked();
}

Result<std::optional<Bytes>> SqliteStore::get_meta(const std::string& key) const {
    std::lock_guard lock(impl_->mutex);
    Query q(impl_->db, impl_->get_user_meta, "reading meta value");
    auto row = q.text(1, key).step();
    if (!row) return row.error();
    if (!*row) return std::optional<Bytes>{};
    auto value = q.col_blob(0, "meta value");
    if (!value) return value.error();
    return std::optional<Bytes>(std::move(*value));
}

} // namespace popchain
