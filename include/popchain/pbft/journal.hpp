// The replica's durable protocol journal: what a pBFT replica has promised, kept so that a
// replica that crashes and restarts cannot vote twice differently for the same slot
// (docs/consensus.md, "Persistence before votes").
//
// What it keeps (JournalState): the view and whether a view change is under way; the stable
// checkpoint (its seq and certificate); and, for sequence numbers above the stable checkpoint
// only, the pre-prepares the replica accepted or sent, its P and Q log entries, the prepares
// and commits it sent, and the checkpoints it signed.
//
// BUFFERED WRITES AND SYNC (group commit). The set_* and put_* calls are buffered: they
// change only the journal's in-memory *buffered state* (the durable state with every write
// made since the last successful sync() applied, in call order), never touch the disk,
// cannot fail, and are not visible through load(). sync() makes the whole buffered state
// durable in one atomic step and returns success only once it is on stable storage. So:
//   - load() returns exactly the state as of the last successful sync();
//   - after a crash (SIGKILL, power loss) at any instant, the reopened journal holds the
//     state of the last sync() that returned success or, if the crash hit a later sync()
//     before it returned, possibly that sync's whole state. Never part of a batch: a sync
//     is all or nothing, and writes not yet synced are simply gone.
// The replica's rule: handle a batch of events issuing writes, call sync() if dirty(), and
// only after it succeeded send the messages those writes promise. Accepting a pre-prepare
// (or sending one) is put_pre_prepare() plus put_pre_prepared() for its digest.
//
// MERGE RULES (the same for every implementation; the journal does not check protocol
// validity, it keeps what it is told under these rules):
//   - set_view: the view and the flag are replaced (last write wins).
//   - put_pre_prepare: one per (seq, view); a second put for the same (seq, view) replaces it.
//   - put_prepared (P): one entry per seq; replaces that seq's entry unless its view is older.
//   - put_pre_prepared (Q): one entry per (seq, digest): the one with the highest view.
//   - put_vote: one prepare and one commit per seq; replaced unless the view is older.
//   - put_checkpoint: one per seq; a second put replaces it.
//   - set_stable(seq, certificate): the stable checkpoint only moves up: a seq below the
//     current one is ignored, an equal one replaces the certificate. Every entry at or below
//     seq is discarded, and any later write of an entry at or below the stable seq is
//     ignored: the journal only ever holds entries above the stable checkpoint.
//
// FAILURE. A failed sync() leaves the buffered writes unwritten, but the journal can no
// longer tell what its file holds (a failed COMMIT may or may not have reached the disk),
// so it is unusable from then on: writes are ignored, dirty() is true, and sync() and load()
// return the failure. The replica must stop sending and restart from a reopened journal.
// A write the journal cannot keep (a vote whose type is not prepare or commit; a log growing
// past max_log_entries, which a view change could not carry) is a bug in the caller: it is
// not applied, and the journal fails at once, as after a failed sync (nothing buffered since
// the last sync is written).
//
// Not thread-safe: one owner (the replica) calls it from one thread.
#pragma once

#include <popchain/pbft/messages.hpp>
#include <popchain/store.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace popchain {
class SqliteStore;
}

namespace popchain::pbft {

struct JournalState {
    std::uint64_t view = 0;
    bool in_view_change = false;
    std::uint64_t stable_seq = 0;
    CheckpointCertificate stable_certificate; // empty while stable_seq is 0 (genesis)
    // Everything below is above stable_seq.
    std::vector<PrePrepare> pre_prepares;    // accepted or sent; sorted by (seq, view)
    std::vector<LogEntry> prepared;          // P: one per seq, sorted by seq
    std::vector<LogEntry> pre_prepared;      // Q: one per (seq, digest), sorted by (seq, digest)
    std::vector<Checkpoint> own_checkpoints; // one per seq, sorted by seq
    // Prepares and commits sent: one per (seq, type), sorted by (seq, type).
    std::vector<std::pair<MsgType, Vote>> own_votes;
    friend bool operator==(const JournalState&, const JournalState&) = default;
};

// The merge rules, buffering and failure handling live here, once; an implementation only
// stores and reads the durable state. Implementations: MemoryJournal, SqliteJournal.
class Journal {
public:
    virtual ~Journal();
    Journal(const Journal&) = delete;
    Journal& operator=(const Journal&) = delete;

    // ---- buffered writes (see the merge rules above) ----
    void set_view(std::uint64_t view, bool in_view_change);
    void put_pre_prepare(const PrePrepare& pre_prepare);
    void put_prepared(const LogEntry& entry);
    void put_pre_prepared(const LogEntry& entry);
    void put_vote(MsgType type, const Vote& vote); // type: prepare or commit
    void put_checkpoint(const Checkpoint& checkpoint);
    void set_stable(std::uint64_t seq, const CheckpointCertificate& certificate);

    // One durable commit of everything buffered since the last sync; success without touching
    // the disk when nothing is. After a failure, every call fails (see FAILURE above).
    Result<void> sync();
    // Whether sync() has something to do: a write since the last sync changed the buffered
    // state (writes the rules ignore do not count), or the journal has failed.
    bool dirty() const;
    // The durable state: as of the last successful sync (for SqliteJournal, read from the
    // file). Its entries are all above stable_seq.
    Result<JournalState> load() const;
    // Whether sync() also makes `store`'s pending blocks durable, in the same commit (a
    // SqliteJournal opened in that store). The replica then syncs the journal first and the
    // two together cost one fsync; otherwise it syncs the store first (docs/consensus.md).
    virtual bool commits_with(const BlockStore& store) const;

protected:
    // The buffered state and which of its parts changed since the last successful sync.
    // Defined in lib/pbft_journal.cpp, with the implementations.
    struct Batch;

    explicit Journal(JournalState durable);
    // Makes the batch's changes durable, all or nothing. Called only with changes to write,
    // and never again once a call failed (until reset()).
    virtual Result<void> commit(const Batch& batch) = 0;
    virtual Result<JournalState> read_durable() const = 0;
    // Forgets the buffered writes and any failure: the buffered state becomes `durable`.
    void reset(JournalState durable);

private:
    std::unique_ptr<Batch> batch_;
    std::optional<Error> failed_;
};

// Buffers writes that make `journal`'s state `state` (to be synced by the caller), when
// `journal` is empty: how a journal moves to another implementation or file.
void write_state(const JournalState& state, Journal& journal);

// A journal in memory, for the simulator: its durable copy changes only at sync(), so a
// simulated crash that keeps the object but calls drop_unsynced() loses exactly what a crash
// loses on disk.
class MemoryJournal final : public Journal {
public:
    MemoryJournal();
    ~MemoryJournal() override;

    // What a crash and restart leave of this journal: the writes since the last successful
    // sync are gone (load() is unchanged), and a failed journal works again, as a reopened
    // SqliteJournal would. The restarted replica then starts from load().
    void drop_unsynced();
    // Fault injection: the next sync() that has something to write fails with `error`,
    // writing nothing (the journal is then failed, as after any failed sync).
    void fail_next_sync(Error error);

protected:
    Result<void> commit(const Batch& batch) override;
    Result<JournalState> read_durable() const override;

private:
    JournalState durable_;
    std::optional<Error> fail_next_;
};

// A journal in its own SQLite database file, in WAL mode with synchronous=FULL: sync() is one
// SQL transaction and returns once its commit is fsynced. Pre-prepares (with their blocks),
// votes and checkpoints are stored in their message body encodings (encode_body), P and Q
// entries, which have none, as columns. The file holds rows only for entries above the
// stable checkpoint, so its size is bounded by the window.
// It also keeps its state in memory, to apply the merge rules without reading the file;
// load() reads the file.
//
// One owner: the file is opened in SQLite's exclusive locking mode and locked for writing at
// open(), so a second journal on the same file, in this process or another, fails to open
// rather than interleave two replicas' promises. The lock goes with the connection (or the
// process, when it dies).
//
// Errors: SQLite failures are Errc::io_error with SQLite's message (a file SQLite finds
// damaged is Errc::storage_corrupt); a row that does not decode or disagrees with its keys,
// or an entry at or below the stable seq, is Errc::storage_corrupt.
class SqliteJournal final : public Journal {
public:
    // The schema version this build writes and the newest it can read (PRAGMA user_version;
    // the file is marked as a journal by PRAGMA application_id = application_id).
    static constexpr int schema_version = 1;
    static constexpr std::int32_t application_id = 0x706f704a; // "popJ"

    // Opens `file`, creating a new empty journal when it does not exist or is empty, and
    // loads its state. Never resets or rewrites a file it does not recognise: fails with
    // Errc::invalid_argument for an SQLite database that is not a journal or has a newer
    // schema version, Errc::storage_corrupt for a file that is not an SQLite database or a
    // journal whose contents are damaged, and Errc::io_error when the file cannot be opened
    // or another journal has it open.
    static Result<std::unique_ptr<SqliteJournal>> open(const std::filesystem::path& file);

    // The journal kept in `store`'s own database file, in tables of its own next to the
    // chain's (created on first use, with their own schema version), on the store's
    // connection. Each sync() is one commit of the journal's changes together with the
    // blocks appended to the store since its last sync, so a replica pays one fsync per
    // batch of events instead of two. The store must outlive the journal. Unlike open(), it
    // cannot lock the file against a second owner (other processes may read the store while
    // a node writes it): whoever opens it must ensure one owner (the Node holds a lock file).
    // Errors as open()'s; a journal in a store also fails when the store's commit does.
    static Result<std::unique_ptr<SqliteJournal>> open_in(SqliteStore& store);

    ~SqliteJournal() override;
    bool commits_with(const BlockStore& store) const override;

protected:
    Result<void> commit(const Batch& batch) override;
    Result<JournalState> read_durable() const override;

private:
    struct Impl;
    SqliteJournal(std::unique_ptr<Impl> impl, JournalState durable);
    std::unique_ptr<Impl> impl_;
};

} // namespace popchain::pbft
