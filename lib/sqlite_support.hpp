// SQLite glue shared by SqliteStore (sqlite_store.cpp) and SqliteJournal (pbft_journal.cpp):
// error mapping, statement ownership, one-shot queries and transactions. Private to lib/; not
// installed, and no public header includes it (SQLite stays a private dependency).
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/result.hpp>

#include <sqlite3.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace popchain::detail {

// Integers that are u64 in C++ are stored as the int64 with the same bits: SQLite integers are
// signed, and a bit-cast round-trips every value exactly.
inline std::int64_t to_sql(std::uint64_t v) {
    return static_cast<std::int64_t>(v);
}
inline std::uint64_t from_sql(std::int64_t v) {
    return static_cast<std::uint64_t>(v);
}

inline Error corrupt(std::string detail) {
    return make_error(Errc::storage_corrupt, std::move(detail));
}

// SQLite's own verdict that the file is damaged is storage_corrupt; every other failure
// (I/O, locking, full disk, out of memory) is io_error.
inline Error sql_error(int rc, const char* message, std::string_view context) {
    const int primary = rc & 0xff;
    const Errc code = primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB ? Errc::storage_corrupt
                                                                            : Errc::io_error;
    return make_error(code, std::string(context) + ": " + (message ? message : sqlite3_errstr(rc)));
}

inline Error sql_error(sqlite3* db, int rc, std::string_view context) {
    return sql_error(rc, db ? sqlite3_errmsg(db) : nullptr, context);
}

// Owns a prepared statement.
class Stmt {
public:
    Stmt() = default;
    explicit Stmt(sqlite3_stmt* s) : s_(s) {}
    Stmt(Stmt&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Stmt& operator=(Stmt&& o) noexcept {
        if (this != &o) {
            sqlite3_finalize(s_);
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    ~Stmt() { sqlite3_finalize(s_); }
    sqlite3_stmt* get() const { return s_; }

private:
    sqlite3_stmt* s_ = nullptr;
};

// One use of a cached statement: binds, steps, reads columns, and resets the statement on
// scope exit so it never stays active (an active statement would pin a read snapshot).
// The first bind failure is kept and reported by the next step().
class Query {
public:
    Query(sqlite3* db, const Stmt& stmt, std::string_view context)
        : db_(db), s_(stmt.get()), context_(context) {}
    ~Query() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    Query(const Query&) = delete;
    Query& operator=(const Query&) = delete;

    Query& i64(int col, std::int64_t v) { return check(sqlite3_bind_int64(s_, col, v)); }
    Query& u64(int col, std::uint64_t v) { return i64(col, to_sql(v)); }
    Query& blob(int col, ByteView v) { return bind_blob(col, v, SQLITE_TRANSIENT); }
    // Binds without a copy, for large values (a block is hundreds of kilobytes, and SQLite's
    // own copy of it was a fresh allocation and page faults on every append): `v` must stay
    // valid until this Query is destroyed, so declare what it views before the Query.
    Query& blob_borrowed(int col, ByteView v) { return bind_blob(col, v, SQLITE_STATIC); }
    template <std::size_t N, class Tag>
    Query& blob(int col, const FixedBytes<N, Tag>& v) {
        return blob(col, v.view());
    }
    Query& text(int col, std::string_view v) {
        return check(sqlite3_bind_text64(s_, col, v.empty() ? "" : v.data(), v.size(),
                                         SQLITE_TRANSIENT, SQLITE_UTF8));
    }

    // true: a row is ready; false: done.
    Result<bool> step() {
        if (bind_rc_ != SQLITE_OK) return sql_error(db_, bind_rc_, context_);
        const int rc = sqlite3_step(s_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        return sql_error(db_, rc, context_);
    }
    // For statements that return no rows.
    Result<void> run() {
        auto r = step();
        if (!r) return r.error();
        return {};
    }
    // The extended code of the last failure, to tell one constraint from another.
    int last_rc() const { return sqlite3_extended_errcode(db_); }

    bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

    Result<std::int64_t> col_i64(int col, std::string_view what) const {
        if (sqlite3_column_type(s_, col) != SQLITE_INTEGER)
            return corrupt(std::string(what) + " is not an integer");
        return sqlite3_column_int64(s_, col);
    }
    Result<std::uint64_t> col_u64(int col, std::string_view what) const {
        auto v = col_i64(col, what);
        if (!v) return v.error();
        return from_sql(*v);
    }
    Result<Bytes> col_blob(int col, std::string_view what) const {
        if (sqlite3_column_type(s_, col) != SQLITE_BLOB)
            return corrupt(std::string(what) + " is not a blob");
        // Pointer first, then size: that order keeps the size valid (sqlite3.h).
        const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(s_, col));
        const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
        if (n == 0) return Bytes{};
        if (!p) return make_error(Errc::io_error, std::string(what) + ": out of memory");
        return Bytes(p, p + n);
    }
    template <class Fixed>
    Result<Fixed> col_fixed(int col, std::string_view what) const {
        auto b = col_blob(col, what);
        if (!b) return b.error();
        if (b->size() != Fixed::size())
            return corrupt(std::string(what) + " has " + std::to_string(b->size()) +
                           " bytes, expected " + std::to_string(Fixed::size()));
        // Not Fixed::from(): for Address that returns the FixedBytes base, not an Address.
        Fixed out;
        std::memcpy(out.data(), b->data(), Fixed::size());
        return out;
    }
    Result<std::string> col_text(int col, std::string_view what) const {
        if (sqlite3_column_type(s_, col) != SQLITE_TEXT)
            return corrupt(std::string(what) + " is not text");
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
        const auto n = static_cast<std::size_t>(sqlite3_column_bytes(s_, col));
        if (n == 0) return std::string{};
        if (!p) return make_error(Errc::io_error, std::string(what) + ": out of memory");
        return std::string(p, n);
    }

private:
    Query& check(int rc) {
        if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
        return *this;
    }
    Query& bind_blob(int col, ByteView v, sqlite3_destructor_type lifetime) {
        // A null pointer would bind SQL NULL, not an empty blob.
        if (v.empty()) return check(sqlite3_bind_zeroblob(s_, col, 0));
        return check(sqlite3_bind_blob64(s_, col, v.data(), v.size(), lifetime));
    }

    sqlite3* db_;
    sqlite3_stmt* s_;
    std::string_view context_;
    int bind_rc_ = SQLITE_OK;
};

inline Result<void> exec(sqlite3* db, const char* sql, std::string_view context) {
    char* msg = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &msg);
    if (rc == SQLITE_OK) return {};
    Error e = sql_error(rc, msg, context);
    sqlite3_free(msg);
    return e;
}

inline Result<Stmt> prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* s = nullptr;
    const int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(s);
        return sql_error(db, rc, std::string("preparing \"") + sql + "\"");
    }
    return Stmt(s);
}

// Rolls back on scope exit unless committed, so every early return and every exception
// inside a transaction leaves the database as it was.
class Transaction {
public:
    Transaction(sqlite3* db, const Stmt& commit, const Stmt& rollback)
        : db_(db), commit_(commit), rollback_(rollback) {}
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
        // SQLite rolls some failures back by itself; ROLLBACK then would be an error.
        if (open_ && !sqlite3_get_autocommit(db_)) {
            Query q(db_, rollback_, "rollback");
            (void)q.run();
        }
    }
    Result<void> begin(const Stmt& stmt) {
        Query q(db_, stmt, "begin transaction");
        if (auto r = q.run(); !r) return r;
        open_ = true;
        return {};
    }
    // Nothing to do when begin() was skipped (a caller already inside a transaction).
    Result<void> commit() {
        if (!open_) return {};
        Query q(db_, commit_, "commit");
        if (auto r = q.run(); !r) return r;
        open_ = false;
        return {};
    }

private:
    sqlite3* db_;
    const Stmt& commit_;
    const Stmt& rollback_;
    bool open_ = false;
};

// Runs a one-row PRAGMA query and checks its value, as text.
inline Result<void> pragma_expect(sqlite3* db, const char* sql, std::string_view expected) {
    auto stmt = prepare(db, sql);
    if (!stmt) return stmt.error();
    Query q(db, *stmt, sql);
    auto row = q.step();
    if (!row) return row.error();
    std::string got;
    if (*row) {
        const auto* t = sqlite3_column_text(stmt->get(), 0);
        if (t) got = reinterpret_cast<const char*>(t);
    }
    if (got != expected)
        return make_error(Errc::io_error, std::string(sql) + " gave \"" + got + "\", expected \"" +
                                              std::string(expected) + "\"");
    return {};
}

// Opens `path` read-write, creating it if missing, with extended result codes, the given busy
// timeout, and the hardening a hostile or damaged file calls for (no writes to sqlite_master,
// untrusted schema). NOMUTEX: the caller serialises every use of the connection. On failure
// `db` may still be set, and the caller closes it.
inline Result<void> open_connection(const std::string& path, sqlite3*& db, int busy_timeout_ms) {
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr); rc != SQLITE_OK) {
        Error e = sql_error(db, rc, "opening " + path);
        e.code = Errc::io_error;
        return e;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, busy_timeout_ms);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
    return {};
}

} // namespace popchain::detail

namespace popchain {
class SqliteStore;
}

namespace popchain::detail {

// Another component's tables in a SqliteStore's database file, on the store's connection and
// under its lock: how pbft::SqliteJournal shares the store's commits. Both calls serialise
// with every other use of the store.
struct SqliteStoreAccess {
    // Commits the store's open group of blocks, if any, then runs `use` (opening tables,
    // preparing statements, reading).
    static Result<void> with_connection(SqliteStore& store,
                                        const std::function<Result<void>(sqlite3*)>& use);
    // Runs `write` inside the store's group transaction (opened when none is), in a savepoint
    // of its own, then commits the group: the blocks appended since the last sync and what
    // `write` wrote become durable together, in one commit (and, unless the store flushes
    // later, Durability::at_flush, one fsync). A failed `write`
    // is undone and leaves the group's blocks pending; a failed commit loses the group, as a
    // failed sync() does.
    static Result<void> commit_with(SqliteStore& store,
                                    const std::function<Result<void>(sqlite3*)>& write);
    // For tests: opens a store (Durability::each_append) that keys transactions by only the
    // `mask` bits of their ids' first 8 bytes, so that a few transactions share keys and the
    // store's handling of shared keys can be seen. Such a file must always be opened with
    // the same mask.
    static Result<std::unique_ptr<SqliteStore>>
    open_with_tx_key_mask(const std::filesystem::path& file, std::uint64_t mask,
                          SqliteStore::WriteBatching batching = {});
};

} // namespace popchain::detail
