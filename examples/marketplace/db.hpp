// A thin SQLite wrapper for POP Market's off-chain data: one connection guarded by a mutex,
// prepared statements bound by position, and a transaction guard.
//
// The service runs handlers on several worker threads; one connection behind one mutex is
// simpler than a pool and fast enough for a marketplace (every statement is a few rows).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace popmarket {

struct DbError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A bound value or a column read back. Blobs are kept as std::string of bytes.
using DbValue = std::variant<std::nullptr_t, std::int64_t, std::string>;

struct DbRow {
    std::vector<DbValue> values;
    std::int64_t integer(std::size_t i) const;
    std::string text(std::size_t i) const; // empty for NULL
    bool is_null(std::size_t i) const { return std::holds_alternative<std::nullptr_t>(values[i]); }
};

class Db {
public:
    explicit Db(const std::string& path); // throws DbError
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    // Runs one statement; returns every row it produced.
    std::vector<DbRow> query(std::string_view sql, const std::vector<DbValue>& args = {});
    std::optional<DbRow> one(std::string_view sql, const std::vector<DbValue>& args = {});
    void exec_script(const char* sql);
    std::int64_t last_insert_id();
    int changes();

    // Holds the connection for a group of statements that must be atomic.
    class Tx {
    public:
        explicit Tx(Db& db);
        ~Tx(); // rolls back unless committed
        void commit();

    private:
        Db& db_;
        std::unique_lock<std::recursive_mutex> lock_;
        bool done_ = false;
    };

    std::recursive_mutex& mutex() { return mutex_; }

private:
    sqlite3* db_ = nullptr;
    std::recursive_mutex mutex_;
};

} // namespace popmarket
