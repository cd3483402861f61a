#include "db.hpp"

#include <sqlite3.h>

namespace popmarket {

std::int64_t DbRow::integer(std::size_t i) const {
    if (auto v = std::get_if<std::int64_t>(&values.at(i))) return *v;
    return 0;
}

std::string DbRow::text(std::size_t i) const {
    if (auto v = std::get_if<std::string>(&values.at(i))) return *v;
    if (auto v = std::get_if<std::int64_t>(&values.at(i))) return std::to_string(*v);
    return {};
}

Db::Db(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
        std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
        sqlite3_close(db_);
        throw DbError("cannot open " + path + ": " + message);
    }
    sqlite3_busy_timeout(db_, 5000);
    exec_script("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
}

Db::~Db() {
    sqlite3_close(db_);
}

void Db::exec_script(const char* sql) {
    std::lock_guard lock(mutex_);
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string message = err ? err : "unknown error";
        sqlite3_free(err);
        throw DbError(message);
    }
}

std::vector<DbRow> Db::query(std::string_view sql, const std::vector<DbValue>& args) {
    std::lock_guard lock(mutex_);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr) !=
        SQLITE_OK)
        throw DbError(std::string("prepare: ") + sqlite3_errmsg(db_));
    struct Finalize {
        sqlite3_stmt* s;
        ~Finalize() { sqlite3_finalize(s); }
    } finalize{stmt};
    for (std::size_t i = 0; i < args.size(); ++i) {
        const int at = static_cast<int>(i + 1);
        if (auto v = std::get_if<std::int64_t>(&args[i]))
            sqlite3_bind_int64(stmt, at, *v);
        else if (auto s = std::get_if<std::string>(&args[i]))
            sqlite3_bind_text(stmt, at, s->data(), static_cast<int>(s->size()), SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(stmt, at);
    }
    std::vector<DbRow> rows;
    for (;;) {
        const int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) throw DbError(std::string("step: ") + sqlite3_errmsg(db_));
        DbRow row;
        const int n = sqlite3_column_count(stmt);
        for (int c = 0; c < n; ++c) {
            switch (sqlite3_column_type(stmt, c)) {
            case SQLITE_INTEGER: row.values.emplace_back(sqlite3_column_int64(stmt, c)); break;
            case SQLITE_NULL: row.values.emplace_back(nullptr); break;
            default: {
                const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, c));
                row.values.emplace_back(std::string(p ? p : "", sqlite3_column_bytes(stmt, c)));
            }
            }
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

std::optional<DbRow> Db::one(std::string_view sql, const std::vector<DbValue>& args) {
    auto rows = query(sql, args);
    if (rows.empty()) return std::nullopt;
    return std::move(rows.front());
}

std::int64_t Db::last_insert_id() {
    return sqlite3_last_insert_rowid(db_);
}

int Db::changes() {
    return sqlite3_changes(db_);
}

Db::Tx::Tx(Db& db) : db_(db), lock_(db.mutex_) {
    db_.exec_script("BEGIN IMMEDIATE");
}

Db::Tx::~Tx() {
    if (!done_) {
        try {
            db_.exec_script("ROLLBACK");
        } catch (const DbError&) {
        }
    }
}

void Db::Tx::commit() {
    db_.exec_script("COMMIT");
    done_ = true;
}

} // namespace popmarket
