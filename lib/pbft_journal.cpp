// The protocol journal: the merge rules and buffering shared by every implementation, then
// MemoryJournal and SqliteJournal. Both implementations write the same thing at sync(): for
// every key a buffered write touched, the buffered entry if it still exists, or its removal.
#include <popchain/pbft/journal.hpp>

#include <popchain/sqlite_store.hpp>

#include "sqlite_support.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popchain::pbft {

// ---------------------------------------------------------------------------------------------
// Buffering and merge rules

namespace {

// Keys of each list, in the order JournalState keeps it.
using PrePrepareKey = std::pair<std::uint64_t, std::uint64_t>; // (seq, view)
using PreparedKey = std::uint64_t;                             // seq
using PrePreparedKey = std::pair<std::uint64_t, Hash256>;      // (seq, digest)
using VoteKey = std::pair<std::uint64_t, MsgType>;             // (seq, type)
using CheckpointKey = std::uint64_t;                           // seq
using OwnVote = std::pair<MsgType, Vote>;

PrePrepareKey key_of(const PrePrepare& p) {
    return {p.seq, p.view};
}
struct PreparedKeyFn {
    PreparedKey operator()(const LogEntry& e) const { return e.seq; }
};
struct PrePreparedKeyFn {
    PrePreparedKey operator()(const LogEntry& e) const { return {e.seq, e.digest}; }
};
VoteKey key_of(const OwnVote& v) {
    return {v.second.seq, v.first};
}
CheckpointKey key_of(const Checkpoint& c) {
    return c.seq;
}
struct DefaultKeyFn {
    template <class T>
    auto operator()(const T& v) const {
        return key_of(v);
    }
};

template <class T, class KeyFn, class Key>
auto slot(std::vector<T>& v, KeyFn key, const Key& k) {
    return std::lower_bound(v.begin(), v.end(), k,
                            [&](const T& x, const Key& want) { return key(x) < want; });
}

template <class T, class KeyFn, class Key>
const T* find_entry(const std::vector<T>& v, KeyFn key, const Key& k) {
    auto it = std::lower_bound(v.begin(), v.end(), k,
                               [&](const T& x, const Key& want) { return key(x) < want; });
    return it != v.end() && key(*it) == k ? &*it : nullptr;
}

template <class T, class KeyFn>
void upsert(std::vector<T>& v, KeyFn key, const T& value) {
    auto it = slot(v, key, key(value));
    if (it != v.end() && key(*it) == key(value)) {
        *it = value;
    } else {
        v.insert(it, value);
    }
}

template <class T, class KeyFn, class Key>
void erase_key(std::vector<T>& v, KeyFn key, const Key& k) {
    auto it = slot(v, key, k);
    if (it != v.end() && key(*it) == k) v.erase(it);
}

std::uint64_t seq_of(const PrePrepare& p) {
    return p.seq;
}
std::uint64_t seq_of(const LogEntry& e) {
    return e.seq;
}
std::uint64_t seq_of(const OwnVote& v) {
    return v.second.seq;
}
std::uint64_t seq_of(const Checkpoint& c) {
    return c.seq;
}

// Removes the entries whose seq is at most `seq` (a prefix: every list is sorted by seq
// first), noting their keys in `changed`.
template <class T, class KeyFn, class KeySet>
void discard_through(std::vector<T>& v, KeyFn key, std::uint64_t seq, KeySet& changed) {
    auto end = v.begin();
    while (end != v.end() && seq_of(*end) <= seq) {
        changed.insert(key(*end));
        ++end;
    }
    v.erase(v.begin(), end);
}

} // namespace

namespace {
// The keys a batch changed: appended as they change, sorted and made unique once before the
// batch is written. A tree of them cost a node allocation per vote.
template <class Key>
class ChangedKeys {
public:
    void insert(const Key& key) { keys_.push_back(key); }
    bool empty() const { return keys_.empty(); }
    void clear() { keys_.clear(); } // keeps the capacity for the next batch
    void normalize() {
        std::sort(keys_.begin(), keys_.end());
        keys_.erase(std::unique(keys_.begin(), keys_.end()), keys_.end());
    }
    typename std::vector<Key>::const_iterator begin() const { return keys_.begin(); }
    typename std::vector<Key>::const_iterator end() const { return keys_.end(); }

private:
    std::vector<Key> keys_;
};
} // namespace

struct Journal::Batch {
    JournalState state; // the buffered state
    // What changed since the last successful sync. A key listed here is written at sync: the
    // entry state holds for it, or its removal when state holds none.
    bool header_changed = false; // view, in_view_change, stable_seq
    bool certificate_changed = false;
    ChangedKeys<PrePrepareKey> pre_prepares;
    ChangedKeys<PreparedKey> prepared;
    ChangedKeys<PrePreparedKey> pre_prepared;
    ChangedKeys<VoteKey> votes;
    ChangedKeys<CheckpointKey> checkpoints;

    bool changed() const {
        return header_changed || certificate_changed || !pre_prepares.empty() ||
               !prepared.empty() || !pre_prepared.empty() || !votes.empty() || !checkpoints.empty();
    }
    // Each changed key once, in key order, as the writers expect.
    void normalize() {
        pre_prepares.normalize();
        prepared.normalize();
        pre_prepared.normalize();
        votes.normalize();
        checkpoints.normalize();
    }
    void forget_changes() {
        header_changed = certificate_changed = false;
        pre_prepares.clear();
        prepared.clear();
        pre_prepared.clear();
        votes.clear();
        checkpoints.clear();
    }
};

namespace {

enum class PutResult { unchanged, changed, full };

// Puts `value` in its slot unless `existing_wins(old)`; a new slot only while the list has
// fewer than max_log_entries entries.
template <class T, class KeyFn, class ExistingWins>
PutResult put_entry(std::vector<T>& v, KeyFn key, const T& value, ExistingWins existing_wins) {
    auto it = slot(v, key, key(value));
    if (it != v.end() && key(*it) == key(value)) {
        if (*it == value || existing_wins(*it)) return PutResult::unchanged;
        *it = value;
        return PutResult::changed;
    }
    if (v.size() >= max_log_entries) return PutResult::full;
    v.insert(it, value);
    return PutResult::changed;
}

const auto never = [](const auto&) { return false; };

} // namespace

Journal::Journal(JournalState durable) : batch_(std::make_unique<Batch>()) {
    batch_->state = std::move(durable);
}

Journal::~Journal() = default;

bool Journal::commits_with(const BlockStore&) const {
    return false;
}

void write_state(const JournalState& state, Journal& journal) {
    journal.set_stable(state.stable_seq, state.stable_certificate);
    journal.set_view(state.view, state.in_view_change);
    for (const PrePrepare& p : state.pre_prepares)
        journal.put_pre_prepare(p);
    for (const LogEntry& e : state.prepared)
        journal.put_prepared(e);
    for (const LogEntry& e : state.pre_prepared)
        journal.put_pre_prepared(e);
    for (const auto& [type, vote] : state.own_votes)
        journal.put_vote(type, vote);
    for (const Checkpoint& c : state.own_checkpoints)
        journal.put_checkpoint(c);
}

void Journal::reset(JournalState durable) {
    batch_ = std::make_unique<Batch>();
    batch_->state = std::move(durable);
    failed_.reset();
}

namespace {

// The failure a write the journal cannot keep leaves it in.
Error rejected(Errc code, const std::string& why) {
    return make_error(code, "journal unusable: a write was rejected: " + why);
}

// Records the outcome of a put: the key when it changed the state; the failure when the list
// is full.
template <class KeySet, class Key>
std::optional<Error> note(PutResult r, KeySet& changed, const Key& key, std::string_view list) {
    if (r == PutResult::changed) changed.insert(key);
    if (r == PutResult::full)
        return rejected(Errc::too_large, std::string(list) + " would exceed " +
                                             std::to_string(max_log_entries) + " entries");
    return std::nullopt;
}

} // namespace

void Journal::set_view(std::uint64_t view, bool in_view_change) {
    if (failed_) return;
    JournalState& s = batch_->state;
    if (s.view == view && s.in_view_change == in_view_change) return;
    s.view = view;
    s.in_view_change = in_view_change;
    batch_->header_changed = true;
}

void Journal::put_pre_prepare(const PrePrepare& pre_prepare) {
    if (failed_ || pre_prepare.seq <= batch_->state.stable_seq) return;
    auto r = put_entry(batch_->state.pre_prepares, DefaultKeyFn{}, pre_prepare, never);
    if (auto e = note(r, batch_->pre_prepares, key_of(pre_prepare), "the pre-prepare log"))
        failed_ = std::move(e);
}

void Journal::put_prepared(const LogEntry& entry) {
    if (failed_ || entry.seq <= batch_->state.stable_seq) return;
    auto r = put_entry(batch_->state.prepared, PreparedKeyFn{}, entry,
                       [&](const LogEntry& old) { return old.view > entry.view; });
    if (auto e = note(r, batch_->prepared, entry.seq, "P")) failed_ = std::move(e);
}

void Journal::put_pre_prepared(const LogEntry& entry) {
    if (failed_ || entry.seq <= batch_->state.stable_seq) return;
    auto r = put_entry(batch_->state.pre_prepared, PrePreparedKeyFn{}, entry,
                       [&](const LogEntry& old) { return old.view >= entry.view; });
    if (auto e = note(r, batch_->pre_prepared, PrePreparedKeyFn{}(entry), "Q"))
        failed_ = std::move(e);
}

void Journal::put_vote(MsgType type, const Vote& vote) {
    if (failed_) return;
    if (type != MsgType::prepare && type != MsgType::commit) {
        failed_ = rejected(Errc::invalid_argument, std::string("vote type ") + msg_type_name(type) +
                                                       " is not prepare or commit");
        return;
    }
    if (vote.seq <= batch_->state.stable_seq) return;
    const OwnVote value{type, vote};
    auto r = put_entry(batch_->state.own_votes, DefaultKeyFn{}, value,
                       [&](const OwnVote& old) { return old.second.view > vote.view; });
    if (auto e = note(r, batch_->votes, key_of(value), "the vote log")) failed_ = std::move(e);
}

void Journal::put_checkpoint(const Checkpoint& checkpoint) {
    if (failed_ || checkpoint.seq <= batch_->state.stable_seq) return;
    auto r = put_entry(batch_->state.own_checkpoints, DefaultKeyFn{}, checkpoint, never);
    if (auto e = note(r, batch_->checkpoints, checkpoint.seq, "the checkpoint log"))
        failed_ = std::move(e);
}

void Journal::set_stable(std::uint64_t seq, const CheckpointCertificate& certificate) {
    if (failed_) return;
    JournalState& s = batch_->state;
    if (seq < s.stable_seq) return;
    if (certificate != s.stable_certificate) {
        s.stable_certificate = certificate;
        batch_->certificate_changed = true;
    }
    if (seq == s.stable_seq) return;
    s.stable_seq = seq;
    batch_->header_changed = true;
    discard_through(s.pre_prepares, DefaultKeyFn{}, seq, batch_->pre_prepares);
    discard_through(s.prepared, PreparedKeyFn{}, seq, batch_->prepared);
    discard_through(s.pre_prepared, PrePreparedKeyFn{}, seq, batch_->pre_prepared);
    discard_through(s.own_votes, DefaultKeyFn{}, seq, batch_->votes);
    discard_through(s.own_checkpoints, DefaultKeyFn{}, seq, batch_->checkpoints);
}

Result<void> Journal::sync() {
    if (failed_) return *failed_;
    if (!batch_->changed()) return {};
    batch_->normalize();
    auto r = commit(*batch_);
    if (!r) {
        failed_ = make_error(r.code(), "journal unusable after a failed sync: " + r.error().detail);
        return r;
    }
    batch_->forget_changes();
    return {};
}

bool Journal::dirty() const {
    return failed_.has_value() || batch_->changed();
}

Result<JournalState> Journal::load() const {
    if (failed_) return *failed_;
    return read_durable();
}

// ---------------------------------------------------------------------------------------------
// MemoryJournal

MemoryJournal::MemoryJournal() : Journal(JournalState{}) {}
MemoryJournal::~MemoryJournal() = default;

void MemoryJournal::drop_unsynced() {
    reset(durable_);
}

void MemoryJournal::fail_next_sync(Error error) {
    fail_next_ = std::move(error);
}

namespace {

// Copies the entry for `key` from `from` to `to`, or removes it from `to` when `from` has none.
template <class T, class KeyFn, class Key>
void copy_slot(std::vector<T>& to, const std::vector<T>& from, KeyFn key, const Key& k) {
    if (const T* e = find_entry(from, key, k)) {
        upsert(to, key, *e);
    } else {
        erase_key(to, key, k);
    }
}

} // namespace

Result<void> MemoryJournal::commit(const Batch& batch) {
    if (fail_next_) {
        Error e = std::move(*fail_next_);
        fail_next_.reset();
        return e;
    }
    // Only the touched keys: copying the whole state would copy every block in the window
    // at every sync.
    const JournalState& from = batch.state;
    if (batch.header_changed) {
        durable_.view = from.view;
        durable_.in_view_change = from.in_view_change;
        durable_.stable_seq = from.stable_seq;
    }
    if (batch.certificate_changed) durable_.stable_certificate = from.stable_certificate;
    for (const auto& k : batch.pre_prepares)
        copy_slot(durable_.pre_prepares, from.pre_prepares, DefaultKeyFn{}, k);
    for (const auto& k : batch.prepared)
        copy_slot(durable_.prepared, from.prepared, PreparedKeyFn{}, k);
    for (const auto& k : batch.pre_prepared)
        copy_slot(durable_.pre_prepared, from.pre_prepared, PrePreparedKeyFn{}, k);
    for (const auto& k : batch.votes)
        copy_slot(durable_.own_votes, from.own_votes, DefaultKeyFn{}, k);
    for (const auto& k : batch.checkpoints)
        copy_slot(durable_.own_checkpoints, from.own_checkpoints, DefaultKeyFn{}, k);
    return {};
}

Result<JournalState> MemoryJournal::read_durable() const {
    return durable_;
}

// ---------------------------------------------------------------------------------------------
// SqliteJournal

namespace {

// Schema version 1. u64 values (seq, view) are stored as the int64 with the same bits; the
// journal only ever looks rows up by key and sorts in C++, so SQLite's signed order never
// matters. Pre-prepare rows hold whole blocks, so that table keeps its rowid (WITHOUT ROWID
// suits small rows only).
constexpr const char* schema_sql = R"sql(
CREATE TABLE replica_state (
    id             INTEGER PRIMARY KEY CHECK (id = 0),
    view           INTEGER NOT NULL,
    in_view_change INTEGER NOT NULL CHECK (in_view_change IN (0, 1)),
    stable_seq     INTEGER NOT NULL
);
INSERT INTO replica_state (id, view, in_view_change, stable_seq) VALUES (0, 0, 0, 0);

CREATE TABLE stable_certificate (
    idx  INTEGER PRIMARY KEY CHECK (idx >= 0),
    data BLOB NOT NULL  -- encode_body(Checkpoint)
);

CREATE TABLE pre_prepares (
    seq  INTEGER NOT NULL,
    view INTEGER NOT NULL,
    data BLOB NOT NULL,  -- encode_body(PrePrepare): view, seq and the block
    UNIQUE (seq, view)
);

-- P and Q: the fields of LogEntry, which has no message encoding of its own.
CREATE TABLE prepared (
    seq    INTEGER PRIMARY KEY,
    digest BLOB NOT NULL CHECK (length(digest) = 32),
    view   INTEGER NOT NULL,
    parent BLOB NOT NULL CHECK (length(parent) = 32)
);

CREATE TABLE pre_prepared (
    seq    INTEGER NOT NULL,
    digest BLOB NOT NULL CHECK (length(digest) = 32),
    view   INTEGER NOT NULL,
    parent BLOB NOT NULL CHECK (length(parent) = 32),
    PRIMARY KEY (seq, digest)
) WITHOUT ROWID;

CREATE TABLE votes (
    seq  INTEGER NOT NULL,
    type INTEGER NOT NULL CHECK (type IN (3, 4)),  -- MsgType::prepare, MsgType::commit
    data BLOB NOT NULL,  -- encode_body(Vote)
    PRIMARY KEY (seq, type)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    seq  INTEGER PRIMARY KEY,
    data BLOB NOT NULL  -- encode_body(Checkpoint)
);
)sql";

using detail::corrupt;
using detail::exec;
using detail::pragma_expect;
using detail::prepare;
using detail::Query;
using detail::Stmt;
using detail::Transaction;

// A 32-byte hash column. Not Query::col_fixed: the journal's size message has no ", expected N".
Result<Hash256> col_hash(const Query& q, int col, std::string_view what) {
    auto b = q.col_blob(col, what);
    if (!b) return b.error();
    if (b->size() != Hash256::size())
        return corrupt(std::string(what) + " has " + std::to_string(b->size()) + " bytes");
    return Hash256::from(*b);
}

// Binds a LogEntry to (?1 seq, ?2 digest, ?3 view, ?4 parent). The structured binding stops
// compiling when LogEntry gains a field, so a new field cannot be silently left unstored.
Query& bind_entry(Query& q, const LogEntry& e) {
    const auto& [seq, digest, view, parent] = e;
    return q.u64(1, seq).blob(2, digest.view()).u64(3, view).blob(4, parent.view());
}

template <class T>
Result<T> decode_row(MsgType type, const Bytes& data, std::string_view what) {
    auto m = decode_body(type, data);
    if (!m) return corrupt(std::string(what) + ": " + m.error().message());
    return std::get<T>(std::move(*m));
}

} // namespace

struct SqliteJournal::Impl {
    sqlite3* db = nullptr;
    std::string path; // for messages
    // Set when the journal lives in a store's file (open_in): the connection is the store's,
    // used under its lock, and each sync commits the store's pending blocks too.
    SqliteStore* store = nullptr;

    Stmt begin_read, begin_write, commit, rollback;
    Stmt get_state, put_state;
    Stmt all_certificate, clear_certificate, put_certificate;
    Stmt all_pre_prepares, put_pre_prepare, del_pre_prepare;
    Stmt all_prepared, put_prepared, del_prepared;
    Stmt all_pre_prepared, put_pre_prepared, del_pre_prepared;
    Stmt all_votes, put_vote, del_vote;
    Stmt all_checkpoints, put_checkpoint, del_checkpoint;

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    ~Impl() {
        // Statements must be finalized before the connection closes.
        for (Stmt* s : statements())
            *s = Stmt();
        if (!store) sqlite3_close_v2(db);
    }

    std::vector<Stmt*> statements() {
        return {&begin_read,       &begin_write,      &commit,          &rollback,
                &get_state,        &put_state,        &all_certificate, &clear_certificate,
                &put_certificate,  &all_pre_prepares, &put_pre_prepare, &del_pre_prepare,
                &all_prepared,     &put_prepared,     &del_prepared,    &all_pre_prepared,
                &put_pre_prepared, &del_pre_prepared, &all_votes,       &put_vote,
                &del_vote,         &all_checkpoints,  &put_checkpoint,  &del_checkpoint};
    }

    Result<void> prepare_all();
    Result<JournalState> read() const;
    Result<void> write(const JournalState& state, const Batch& batch);
    Result<void> write_rows(const JournalState& state, const Batch& batch);
};

Result<void> SqliteJournal::Impl::prepare_all() {
    const std::pair<Stmt*, const char*> entries[] = {
        {&begin_read, "BEGIN DEFERRED"},
        {&begin_write, "BEGIN IMMEDIATE"},
        {&commit, "COMMIT"},
        {&rollback, "ROLLBACK"},
        {&get_state, "SELECT view, in_view_change, stable_seq FROM replica_state WHERE id = 0"},
        {&put_state, "UPDATE replica_state SET view = ?1, in_view_change = ?2, stable_seq = ?3 "
                     "WHERE id = 0"},
        {&all_certificate, "SELECT idx, data FROM stable_certificate ORDER BY idx"},
        {&clear_certificate, "DELETE FROM stable_certificate"},
        {&put_certificate, "INSERT INTO stable_certificate (idx, data) VALUES (?1, ?2)"},
        {&all_pre_prepares, "SELECT seq, view, data FROM pre_prepares"},
        {&put_pre_prepare, "INSERT INTO pre_prepares (seq, view, data) VALUES (?1, ?2, ?3) "
                           "ON CONFLICT (seq, view) DO UPDATE SET data = excluded.data"},
        {&del_pre_prepare, "DELETE FROM pre_prepares WHERE seq = ?1 AND view = ?2"},
        {&all_prepared, "SELECT seq, digest, view, parent FROM prepared"},
        {&put_prepared, "INSERT INTO prepared (seq, digest, view, parent) VALUES (?1, ?2, ?3, ?4) "
                        "ON CONFLICT (seq) DO UPDATE SET digest = excluded.digest, "
                        "view = excluded.view, parent = excluded.parent"},
        {&del_prepared, "DELETE FROM prepared WHERE seq = ?1"},
        {&all_pre_prepared, "SELECT seq, digest, view, parent FROM pre_prepared"},
        {&put_pre_prepared,
         "INSERT INTO pre_prepared (seq, digest, view, parent) VALUES (?1, ?2, ?3, ?4) "
         "ON CONFLICT (seq, digest) DO UPDATE SET view = excluded.view, parent = excluded.parent"},
        {&del_pre_prepared, "DELETE FROM pre_prepared WHERE seq = ?1 AND digest = ?2"},
        {&all_votes, "SELECT seq, type, data FROM votes"},
        {&put_vote, "INSERT INTO votes (seq, type, data) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (seq, type) DO UPDATE SET data = excluded.data"},
        {&del_vote, "DELETE FROM votes WHERE seq = ?1 AND type = ?2"},
        {&all_checkpoints, "SELECT seq, data FROM checkpoints"},
        {&put_checkpoint, "INSERT INTO checkpoints (seq, data) VALUES (?1, ?2) "
                          "ON CONFLICT (seq) DO UPDATE SET data = excluded.data"},
        {&del_checkpoint, "DELETE FROM checkpoints WHERE seq = ?1"},
    };
    for (const auto& [stmt, sql] : entries) {
        auto s = prepare(db, sql);
        if (!s) return s.error();
        *stmt = std::move(*s);
    }
    return {};
}

// Reads every row, checks each against its keys and the stable seq, and sorts as JournalState
// promises (SQLite's order of the bit-cast integers is not the u64 order).
Result<JournalState> SqliteJournal::Impl::read() const {
    Transaction txn(db, commit, rollback); // one snapshot
    if (auto r = txn.begin(begin_read); !r) return r.error();
    JournalState s;
    {
        Query q(db, get_state, "reading the replica state");
        auto row = q.step();
        if (!row) return row.error();
        if (!*row) return corrupt("the replica state row is missing");
        auto view = q.col_u64(0, "view");
        auto flag = q.col_i64(1, "in_view_change");
        auto stable = q.col_u64(2, "stable_seq");
        if (!view) return view.error();
        if (!flag) return flag.error();
        if (!stable) return stable.error();
        if (*flag != 0 && *flag != 1) return corrupt("in_view_change is " + std::to_string(*flag));
        s.view = *view;
        s.in_view_change = *flag == 1;
        s.stable_seq = *stable;
    }
    auto above_stable = [&](std::uint64_t seq, std::string_view what) -> Result<void> {
        if (seq > s.stable_seq) return {};
        return corrupt(std::string(what) + " for seq " + std::to_string(seq) +
                       " is not above the stable seq " + std::to_string(s.stable_seq));
    };
    auto bounded = [&](std::size_t n, std::string_view what) -> Result<void> {
        if (n <= max_log_entries) return {};
        return corrupt(std::string(what) + " holds more than " + std::to_string(max_log_entries) +
                       " entries");
    };
    {
        Query q(db, all_certificate, "reading the stable certificate");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto idx = q.col_i64(0, "certificate index");
            auto data = q.col_blob(1, "certificate checkpoint");
            if (!idx) return idx.error();
            if (!data) return data.error();
            if (*idx != static_cast<std::int64_t>(s.stable_certificate.checkpoints.size()))
                return corrupt("stable certificate rows are not numbered 0, 1, ...");
            auto c = decode_row<Checkpoint>(MsgType::checkpoint, *data, "certificate checkpoint");
            if (!c) return c.error();
            s.stable_certificate.checkpoints.push_back(std::move(*c));
        }
    }
    {
        Query q(db, all_pre_prepares, "reading pre-prepares");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto seq = q.col_u64(0, "pre-prepare seq");
            auto view = q.col_u64(1, "pre-prepare view");
            auto data = q.col_blob(2, "pre-prepare data");
            if (!seq) return seq.error();
            if (!view) return view.error();
            if (!data) return data.error();
            auto p = decode_row<PrePrepare>(MsgType::pre_prepare, *data, "stored pre-prepare");
            if (!p) return p.error();
            if (p->seq != *seq || p->view != *view)
                return corrupt("pre-prepare stored as (seq " + std::to_string(*seq) + ", view " +
                               std::to_string(*view) + ") decodes to (seq " +
                               std::to_string(p->seq) + ", view " + std::to_string(p->view) + ")");
            if (auto r = above_stable(*seq, "a pre-prepare"); !r) return r.error();
            s.pre_prepares.push_back(std::move(*p));
        }
    }
    auto read_entries = [&](const Stmt& stmt, std::vector<LogEntry>& out,
                            std::string_view what) -> Result<void> {
        Query q(db, stmt, "reading " + std::string(what));
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto seq = q.col_u64(0, "log entry seq");
            auto digest = col_hash(q, 1, "log entry digest");
            auto view = q.col_u64(2, "log entry view");
            auto parent = col_hash(q, 3, "log entry parent");
            if (!seq) return seq.error();
            if (!digest) return digest.error();
            if (!view) return view.error();
            if (!parent) return parent.error();
            if (auto r = above_stable(*seq, std::string("a ") + std::string(what) + " entry"); !r)
                return r;
            out.push_back(LogEntry{*seq, *digest, *view, *parent});
        }
        return {};
    };
    if (auto r = read_entries(all_prepared, s.prepared, "P"); !r) return r.error();
    if (auto r = read_entries(all_pre_prepared, s.pre_prepared, "Q"); !r) return r.error();
    {
        Query q(db, all_votes, "reading votes");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto seq = q.col_u64(0, "vote seq");
            auto type = q.col_i64(1, "vote type");
            auto data = q.col_blob(2, "vote data");
            if (!seq) return seq.error();
            if (!type) return type.error();
            if (!data) return data.error();
            if (*type != static_cast<int>(MsgType::prepare) &&
                *type != static_cast<int>(MsgType::commit))
                return corrupt("vote type " + std::to_string(*type));
            const auto t = static_cast<MsgType>(*type);
            auto v = decode_row<Vote>(t, *data, "stored vote");
            if (!v) return v.error();
            if (v->seq != *seq)
                return corrupt("vote stored for seq " + std::to_string(*seq) + " decodes to seq " +
                               std::to_string(v->seq));
            if (auto r = above_stable(*seq, "a vote"); !r) return r.error();
            s.own_votes.emplace_back(t, std::move(*v));
        }
    }
    {
        Query q(db, all_checkpoints, "reading checkpoints");
        for (;;) {
            auto row = q.step();
            if (!row) return row.error();
            if (!*row) break;
            auto seq = q.col_u64(0, "checkpoint seq");
            auto data = q.col_blob(1, "checkpoint data");
            if (!seq) return seq.error();
            if (!data) return data.error();
            auto c = decode_row<Checkpoint>(MsgType::checkpoint, *data, "stored checkpoint");
            if (!c) return c.error();
            if (c->seq != *seq)
                return corrupt("checkpoint stored for seq " + std::to_string(*seq) +
                               " decodes to seq " + std::to_string(c->seq));
            if (auto r = above_stable(*seq, "a checkpoint"); !r) return r.error();
            s.own_checkpoints.push_back(std::move(*c));
        }
    }
    if (auto r = txn.commit(); !r) return r.error();

    for (auto r :
         {bounded(s.pre_prepares.size(), "the pre-prepare log"), bounded(s.prepared.size(), "P"),
          bounded(s.pre_prepared.size(), "Q"), bounded(s.own_votes.size(), "the vote log"),
          bounded(s.own_checkpoints.size(), "the checkpoint log")})
        if (!r) return r.error();
    auto by = [](auto key) {
        return [key](const auto& a, const auto& b) { return key(a) < key(b); };
    };
    std::sort(s.pre_prepares.begin(), s.pre_prepares.end(), by(DefaultKeyFn{}));
    std::sort(s.prepared.begin(), s.prepared.end(), by(PreparedKeyFn{}));
    std::sort(s.pre_prepared.begin(), s.pre_prepared.end(), by(PrePreparedKeyFn{}));
    std::sort(s.own_votes.begin(), s.own_votes.end(), by(DefaultKeyFn{}));
    std::sort(s.own_checkpoints.begin(), s.own_checkpoints.end(), by(DefaultKeyFn{}));
    return s;
}

Result<void> SqliteJournal::Impl::write(const JournalState& s, const Batch& batch) {
    if (store)
        return detail::SqliteStoreAccess::commit_with(
            *store, [&](sqlite3*) { return write_rows(s, batch); });
    Transaction txn(db, commit, rollback);
    if (auto r = txn.begin(begin_write); !r) return r;
    if (auto r = write_rows(s, batch); !r) return r;
    return txn.commit();
}

// Every row the batch changed, inside a transaction the caller opened.
Result<void> SqliteJournal::Impl::write_rows(const JournalState& s, const Batch& batch) {
    if (batch.header_changed) {
        Query q(db, put_state, "storing the replica state");
        auto r = q.u64(1, s.view).i64(2, s.in_view_change ? 1 : 0).u64(3, s.stable_seq).run();
        if (!r) return r;
        if (sqlite3_changes(db) != 1) return corrupt("the replica state row is missing");
    }
    if (batch.certificate_changed) {
        {
            Query q(db, clear_certificate, "replacing the stable certificate");
            if (auto r = q.run(); !r) return r;
        }
        const auto& cps = s.stable_certificate.checkpoints;
        for (std::size_t i = 0; i < cps.size(); ++i) {
            Query q(db, put_certificate, "storing the stable certificate");
            auto r = q.i64(1, static_cast<std::int64_t>(i)).blob(2, encode_body(cps[i])).run();
            if (!r) return r;
        }
    }
    for (const auto& k : batch.pre_prepares) {
        if (const PrePrepare* p = find_entry(s.pre_prepares, DefaultKeyFn{}, k)) {
            const Bytes body = encode_body(*p);
            Query q(db, put_pre_prepare, "storing a pre-prepare");
            if (auto r = q.u64(1, k.first).u64(2, k.second).blob_borrowed(3, body).run(); !r)
                return r;
        } else {
            Query q(db, del_pre_prepare, "discarding a pre-prepare");
            if (auto r = q.u64(1, k.first).u64(2, k.second).run(); !r) return r;
        }
    }
    for (const auto& k : batch.prepared) {
        if (const LogEntry* e = find_entry(s.prepared, PreparedKeyFn{}, k)) {
            Query q(db, put_prepared, "storing a P entry");
            if (auto r = bind_entry(q, *e).run(); !r) return r;
        } else {
            Query q(db, del_prepared, "discarding a P entry");
            if (auto r = q.u64(1, k).run(); !r) return r;
        }
    }
    for (const auto& k : batch.pre_prepared) {
        if (const LogEntry* e = find_entry(s.pre_prepared, PrePreparedKeyFn{}, k)) {
            Query q(db, put_pre_prepared, "storing a Q entry");
            if (auto r = bind_entry(q, *e).run(); !r) return r;
        } else {
            Query q(db, del_pre_prepared, "discarding a Q entry");
            if (auto r = q.u64(1, k.first).blob(2, k.second.view()).run(); !r) return r;
        }
    }
    for (const auto& k : batch.votes) {
        const auto type = static_cast<std::int64_t>(k.second);
        if (const OwnVote* v = find_entry(s.own_votes, DefaultKeyFn{}, k)) {
            Query q(db, put_vote, "storing a vote");
            if (auto r = q.u64(1, k.first).i64(2, type).blob(3, encode_body(v->second)).run(); !r)
                return r;
        } else {
            Query q(db, del_vote, "discarding a vote");
            if (auto r = q.u64(1, k.first).i64(2, type).run(); !r) return r;
        }
    }
    for (const auto& k : batch.checkpoints) {
        if (const Checkpoint* c = find_entry(s.own_checkpoints, DefaultKeyFn{}, k)) {
            Query q(db, put_checkpoint, "storing a checkpoint");
            if (auto r = q.u64(1, k).blob(2, encode_body(*c)).run(); !r) return r;
        } else {
            Query q(db, del_checkpoint, "discarding a checkpoint");
            if (auto r = q.u64(1, k).run(); !r) return r;
        }
    }
    return {};
}

namespace {

enum class Identity { fresh, ours };

Result<std::int64_t> read_int(sqlite3* db, const char* sql) {
    auto stmt = prepare(db, sql);
    if (!stmt) return stmt.error();
    Query q(db, *stmt, sql);
    auto row = q.step();
    if (!row) return row.error();
    if (!*row) return make_error(Errc::io_error, std::string(sql) + " gave no row");
    return q.col_i64(0, sql);
}

// Decides, before anything is written, whether `db` is an empty database (to initialise), a
// journal this build can read, or something else.
Result<Identity> identify(sqlite3* db, const std::string& path) {
    // The first read of the file: where SQLite notices it is not a database at all.
    auto objects = read_int(db, "SELECT count(*) FROM sqlite_master");
    if (!objects) {
        const Error& e = objects.error();
        if (e.code != Errc::storage_corrupt) return e;
        return make_error(e.code, path + " is not a popchain journal: " + e.detail);
    }
    auto app = read_int(db, "PRAGMA application_id");
    if (!app) return app.error();
    if (*objects == 0 && *app == 0) return Identity::fresh;
    if (*app != SqliteJournal::application_id)
        return make_error(Errc::invalid_argument,
                          path + " is an SQLite database but not a popchain journal");
    auto version = read_int(db, "PRAGMA user_version");
    if (!version) return version.error();
    if (*version > SqliteJournal::schema_version)
        return make_error(Errc::invalid_argument,
                          path + " has journal schema version " + std::to_string(*version) +
                              ", newer than the " + std::to_string(SqliteJournal::schema_version) +
                              " this build reads; upgrade popchain");
    if (*version < 1) return corrupt(path + ": journal schema version " + std::to_string(*version));
    // Older versions would be migrated here; version 1 is the first.
    return Identity::ours;
}

// The journal's tables and `marking` (the SQL that records what the file holds and its schema
// version), in one transaction: all of them or none.
Result<void> create_schema(sqlite3* db, const std::string& marking) {
    const std::string sql = "BEGIN IMMEDIATE;" + std::string(schema_sql) + marking + "; COMMIT;";
    auto r = exec(db, sql.c_str(), "creating the journal");
    if (!r && !sqlite3_get_autocommit(db)) (void)exec(db, "ROLLBACK", "creating the journal");
    return r;
}

} // namespace

Result<std::unique_ptr<SqliteJournal>> SqliteJournal::open(const std::filesystem::path& file) {
    auto impl = std::make_unique<Impl>();
    impl->path = file.string();
    const std::string& path = impl->path;
    // A journal has one owner (see the header); waiting long (here 250 ms) for a lock another
    // process holds would only delay the error.
    if (auto r = detail::open_connection(path, impl->db, 250); !r) return r.error();
    sqlite3* db = impl->db;

    auto in_use = [&](Error e) {
        if (e.code == Errc::io_error && (sqlite3_extended_errcode(db) & 0xff) == SQLITE_BUSY)
            e.detail = path + " is in use by another journal: " + e.detail;
        return e;
    };
    // Exclusive: the locks this connection takes are kept until it closes, so once it has
    // written (below) no other connection can read or write the file.
    if (auto r = pragma_expect(db, "PRAGMA locking_mode = EXCLUSIVE", "exclusive"); !r)
        return r.error();
    auto identity = identify(db, path);
    if (!identity) return in_use(identity.error());

    // WAL: a sync is one append to the log. synchronous=FULL: the log is fsynced at every
    // commit, so a sync() reported durable survives power loss, not only a crash.
    if (auto r = pragma_expect(db, "PRAGMA journal_mode = WAL", "wal"); !r)
        return in_use(r.error());
    if (auto r = exec(db, "PRAGMA synchronous = FULL", "configuring the connection"); !r)
        return r.error();
    if (auto r = pragma_expect(db, "PRAGMA synchronous", "2"); !r) return r.error();
    if (*identity == Identity::fresh) {
        const std::string marking = "PRAGMA application_id = " + std::to_string(application_id) +
                                    "; PRAGMA user_version = " + std::to_string(schema_version);
        if (auto r = create_schema(db, marking); !r) return in_use(r.error());
    } else {
        // An empty write transaction, to take the write lock now rather than at the first
        // sync: a second owner must fail at open, before it acts on what it loaded.
        if (auto r = exec(db, "BEGIN IMMEDIATE; COMMIT", "locking the journal"); !r)
            return in_use(r.error());
    }
    if (auto r = impl->prepare_all(); !r)
        return corrupt(path + ": the journal's tables are damaged: " + r.error().detail);
    auto state = impl->read();
    if (!state) return make_error(state.code(), path + ": " + state.error().detail);
    return std::unique_ptr<SqliteJournal>(new SqliteJournal(std::move(impl), std::move(*state)));
}

Result<std::unique_ptr<SqliteJournal>> SqliteJournal::open_in(SqliteStore& store) {
    auto impl = std::make_unique<Impl>();
    impl->store = &store;
    impl->path = "the journal in the store";
    std::optional<JournalState> state;
    auto opened =
        detail::SqliteStoreAccess::with_connection(store, [&](sqlite3* db) -> Result<void> {
            impl->db = db;
            auto tables = read_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                       "AND name = 'journal_meta'");
            if (!tables) return tables.error();
            if (*tables == 0) {
                // The file's PRAGMAs are the store's: the journal's version is a row.
                const std::string marking =
                    "CREATE TABLE journal_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) "
                    "WITHOUT ROWID; INSERT INTO journal_meta (key, value) VALUES "
                    "('schema_version', " +
                    std::to_string(schema_version) + ")";
                if (auto r = create_schema(db, marking); !r) return r;
            } else {
                auto version =
                    read_int(db, "SELECT value FROM journal_meta WHERE key = 'schema_version'");
                if (!version) return corrupt("the journal's version: " + version.error().detail);
                if (*version > schema_version)
                    return make_error(Errc::invalid_argument,
                                      "the store's journal has schema version " +
                                          std::to_string(*version) + ", newer than the " +
                                          std::to_string(schema_version) +
                                          " this build reads; upgrade popchain");
                if (*version < 1)
                    return corrupt("journal schema version " + std::to_string(*version));
            }
            if (auto r = impl->prepare_all(); !r)
                return corrupt("the journal's tables are damaged: " + r.error().detail);
            auto read = impl->read();
            if (!read) return read.error();
            state = std::move(*read);
            return {};
        });
    if (!opened) return opened.error();
    return std::unique_ptr<SqliteJournal>(new SqliteJournal(std::move(impl), std::move(*state)));
}

bool SqliteJournal::commits_with(const BlockStore& store) const {
    return impl_->store == &store;
}

SqliteJournal::SqliteJournal(std::unique_ptr<Impl> impl, JournalState durable)
    : Journal(std::move(durable)), impl_(std::move(impl)) {}

SqliteJournal::~SqliteJournal() = default;

Result<void> SqliteJournal::commit(const Batch& batch) {
    return impl_->write(batch.state, batch);
}

Result<JournalState> SqliteJournal::read_durable() const {
    if (!impl_->store) return impl_->read();
    std::optional<JournalState> state;
    auto r =
        detail::SqliteStoreAccess::with_connection(*impl_->store, [&](sqlite3*) -> Result<void> {
            auto read = impl_->read();
            if (!read) return read.error();
            state = std::move(*read);
            return {};
        });
    if (!r) return r.error();
    return std::move(*state);
}

} // namespace popchain::pbft
