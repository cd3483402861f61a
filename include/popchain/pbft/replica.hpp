// The pBFT replica (see docs/consensus.md for the protocol and why it is shaped this way).
//
// A Replica is a deterministic state machine driven by calls on one thread: client requests
// (submit), messages (on_message) and timers (through its Transport). It owns the committed
// Ledger, a speculative Ledger at the tip of the blocks it has accepted but not yet executed,
// the Mempool and the LinkAuthenticator; the BlockStore and the Transport are borrowed.
//
// Normal case, view v:
//   - The primary of view v is replicas[v mod n], by position in the replica set sorted by
//     id. It closes a block when max_block_txs transactions are ready, or max_batch_delay_ms
//     after the first one became ready, or as soon as its last block in flight executes
//     (then waiting longer would only leave every replica idle), and only for sequence
//     numbers in (low watermark, low watermark + watermark_window]. The low watermark is
//     the last stable checkpoint.
//   - Pipelining: the primary proposes seq h+1 before h commits. Every accepted
//     (pre-prepared) block is executed at once on the speculative ledger, which is the
//     committed ledger with the deltas of all accepted, not yet executed blocks applied, in
//     order; the next block is built (primary) or validated (backup) on top of it.
//   - Backups accept at most one pre-prepare per (view, seq), from the primary only, and
//     only once its block executes on the speculative state of seq-1. A block that fails
//     execution is dropped (bad_block) and never prepared. Messages a little ahead of the
//     window (up to one more window) are kept but not acted on until the watermark moves.
//   - prepared(s)  = accepted pre-prepare + quorum(n)-1 matching prepares from distinct
//                    replicas other than the primary (own prepare included);
//     committed(s) = prepared(s) + quorum(n) matching commits (own included).
//     Blocks execute strictly in sequence order: committed to the Ledger, appended to the
//     BlockStore with their delta, removed from the mempool.
//   - Checkpoints: after executing a block whose height is a multiple of checkpoint_interval,
//     and at its tip when it has been idle for retransmit_ms (so the last blocks of a quiet
//     chain get certified too), a replica signs and broadcasts a Checkpoint. quorum(n)
//     matching checkpoints for a height it executed make it stable: the low watermark moves
//     there, the log at or below it is discarded, the certificate is kept.
//
// Lost messages. A replica that made no progress for retransmit_ms re-sends, for each
// unexecuted slot, its pre-prepare (primary; only to peers that have not prepared it),
// prepare and commit to the peers whose commit it lacks, and repeats that with backoff (after
// 1, 2, 4 and 8 idle ticks, then every 8); after a quarter of the request timeout without
// progress it re-forwards its ready requests to the primary; asks a peer for a block body that
// f+1 replicas voted for but it never received (or received in another version from an
// equivocating primary); and re-broadcasts its view change. A replica that receives a
// repeated vote for a slot it has executed answers with its commit, and one that receives
// messages below its low watermark answers with its stable checkpoint certificate.
//
// View change. A replica that has work (an accepted unexecuted block or a ready request) and
// sees no block execute for the view-change timeout suspects the primary and sends a signed
// ViewChange for view+1 (stable checkpoint with certificate, P and Q logs); it stops taking
// part in the old view. It joins a higher view when f+1 replicas ask for views above its
// own. The new primary decides with decide_view() (view_change.hpp) once it holds enough view
// changes and the bodies of the decided blocks, and sends a signed NewView carrying the
// view changes; every backup re-checks the decision (check_new_view()). The decided blocks
// are re-proposed unchanged in the new view (their headers keep their original view and
// proposer) and agreed again; blocks above them are proposed afresh. The timeout doubles
// with every view change that does not lead to an executed block, up to
// max_view_change_timeout_ms, and a replica only moves beyond view v+1 when a quorum asked
// for v+1 and its primary failed to start it.
//
// State transfer. A replica that learns of a certified checkpoint above its executed height
// (from quorum(n) checkpoint messages, a new view, or a peer's announcement) and either
// cannot reach it through its window or makes no progress fetches the missing blocks from
// the certificate's signers, newest chunk first, so each chunk is checked by hash against
// the certified block (or the chunk above) and each body against its header's tx root;
// then it executes them (every transaction and state root is re-checked) and adopts the
// checkpoint as its low watermark. Blocks no certificate covers (too few replicas executed
// them to sign one) come from executed reports instead: a stuck replica asks a peer every
// fifth tick for the blocks above its height, each answer says which of them the sender
// executed, and a block f+1 members report executed is committed, so it is executed.
//
// Clients. Messages from node ids at or above net::first_client_id are client frames
// (client.hpp), not envelopes. A submit for a transaction in the store is answered from it
// (committed, with height and block hash); otherwise the transaction is admitted to the
// mempool without being passed on (the client sent it to every replica) and the client is
// answered when the block holding it executes, or at once if the mempool refuses it.
//
// Self-delivery: a replica never sends to itself. Its own prepares, commits and checkpoints
// are recorded directly when it sends them to the others.
//
// Drops. Every message that is not acted on is counted by reason in stats(); nothing about
// a dropped message changes the replica's state.
//
// Persistence. With a Journal, every promise (view, accepted pre-prepares, P and Q entries,
// prepares and commits, checkpoints, the stable certificate) is written to it as it is made,
// and outgoing messages are queued until the journal's sync() for the input being handled
// has succeeded; if a sync fails the replica halts and sends nothing more. A restarted
// replica reloads its promises, so it cannot vote twice differently for one slot.
//
// Membership change. A config transaction changes the ledger's replica set at once; the
// replicas switch to it after executing the next block whose height is a multiple of
// checkpoint_interval (the boundary), and nothing above the boundary is proposed or accepted
// before that. The old set certifies the boundary block's checkpoint; the new set agrees
// everything above. A replica created with an id outside the set is a learner: it answers
// and uses only state transfer until its ledger lists it, then votes. A removed replica
// stops voting at the boundary. Fetch replies carry the certificate of the first boundary
// at or above the asker's height, so a replica far behind crosses every change with a
// certificate from a set it already knows.
#pragma once

#include <popchain/application.hpp>
#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/ledger.hpp>
#include <popchain/mempool.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/client.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/pbft/journal.hpp>
#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>
#include <popchain/pbft/view_change.hpp>
#include <popchain/store.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace popchain::pbft {

struct ReplicaStats {
    // ---- drops, by reason ----
    std::uint64_t unknown_peer = 0;        // envelope sender is not a member
    std::uint64_t forged_sender = 0;       // claimed sender differs from the link (or the
                                           // checkpoint's replica field from the sender)
    std::uint64_t bad_mac = 0;             // envelope MAC does not verify
    std::uint64_t wrong_destination = 0;   // envelope addressed to another replica
    std::uint64_t malformed = 0;           // undecodable envelope or body, type mismatch
    std::uint64_t wrong_view = 0;          // message for a view other than the current one
    std::uint64_t wrong_role = 0;          // pre-prepare from a backup, prepare from the primary
    std::uint64_t outside_watermarks = 0;  // seq below or too far above the window
    std::uint64_t bad_block = 0;           // pre-prepared block fails validation/execution
    std::uint64_t duplicate = 0;           // already have this message (same content)
    std::uint64_t conflicting = 0;         // a different message for a slot already filled
    std::uint64_t bad_signature = 0;       // checkpoint signature does not verify
    std::uint64_t checkpoint_mismatch = 0; // a quorum certified a state other than ours
    std::uint64_t bad_view_change = 0;     // view change or new view that fails its checks
    std::uint64_t bad_blocks_reply = 0;    // fetched blocks that do not chain to what we asked
    std::uint64_t rejected_requests = 0;   // forwarded client transactions the mempool refused

    // ---- activity ----
    std::uint64_t proposed = 0;             // blocks proposed as primary
    std::uint64_t proposed_ahead = 0;       // ... while the previous one was uncommitted
    std::uint64_t accepted = 0;             // pre-prepares accepted as backup
    std::uint64_t held_early = 0;           // pre-prepares kept above the window
    std::uint64_t executed_blocks = 0;      // blocks committed and stored
    std::uint64_t executed_txs = 0;         // transactions in them
    std::uint64_t requests_forwarded = 0;   // submits forwarded to the primary
    std::uint64_t checkpoints_stable = 0;   // stable checkpoints reached
    std::uint64_t store_errors = 0;         // store append/certificate failures (halts)
    std::uint64_t journal_errors = 0;       // Journal::sync failures (replica halts)
    std::uint64_t journal_syncs = 0;        // durable commits of the journal
    std::uint64_t membership_changes = 0;   // replica-set switches at checkpoint boundaries
    std::uint64_t view_changes = 0;         // view changes started
    std::uint64_t new_views = 0;            // views installed after a view change
    std::uint64_t retransmissions = 0;      // messages re-sent after a period without progress
    std::uint64_t bodies_resent = 0;        // ... of them pre-prepares, each with its block
    std::uint64_t blocks_served = 0;        // blocks sent in answer to peers' fetches
    std::uint64_t bodies_fetched = 0;       // block bodies obtained from peers for a slot
    std::uint64_t state_transfers = 0;      // certified checkpoints reached by fetching blocks
    std::uint64_t transferred_blocks = 0;   // blocks executed from state transfer
    std::uint64_t transferred_certs = 0;    // chunk certificates kept after a transfer
    std::uint64_t reported_blocks = 0;      // blocks executed on f+1 peers' executed reports
    std::uint64_t client_requests = 0;      // submits received from clients
    std::uint64_t bad_client_frames = 0;    // undecodable client frames, bad client keys
    std::uint64_t replies_sent = 0;         // replies to clients (committed or rejected)
    std::uint64_t replies_from_store = 0;   // ... answered from the store (duplicates)
    std::uint64_t refused_unexecutable = 0; // mempool txs a backup found no block could hold
    std::uint64_t refused_submits = 0;      // not the sender's next, or not a member here
    std::uint64_t bundles_sent = 0;         // envelopes carrying several messages for one peer
    std::uint64_t bundled_messages = 0;     // ... the messages in them
};

// What on_commit reports about an executed block: enough to tell waiting clients where their
// transactions went, without a copy of the block (the store has it: BlockStore::block_at).
struct CommittedBlock {
    std::uint64_t height = 0;
    Hash256 hash;
    std::vector<Hash256> txids; // the block's transaction ids, in block order
};

class Replica : public net::Receiver {
public:
    using CommitFn = std::function<void(const CommittedBlock&)>;

    // Builds a replica. `key` is kept BY REFERENCE (SigningKey is move-only and its owner,
    // the node, keeps the identity key): it must outlive the replica. `transport` and
    // `store` are borrowed too. Fails with invalid_argument when the configuration is out of
    // bounds (the message names the field), when `id` is in the replica set with another key,
    // when the transport's self() is not `id`, or when the store holds another chain.
    // An empty store gets the genesis block and the replica set is the genesis one;
    // otherwise the ledger (and the replica set) is the store's state, and the low watermark
    // starts at the stored height.
    //
    // `journal` (borrowed, may be null) is where the replica keeps its promises: with one,
    // every message leaves only after what it promises is durable there (see "Persistence"
    // below), and a restarted replica resumes from it: its view, the pre-prepares it
    // accepted, its votes, P and Q logs, checkpoints and stable certificate. Without one, a
    // restarted replica starts in view 0 with an empty log; it rejoins through view changes
    // and state transfer, but may vote again, differently, on a slot it voted on before.
    static Result<std::unique_ptr<Replica>> create(ReplicaId id, const SigningKey& key,
                                                   const Genesis& genesis, ReplicaConfig config,
                                                   net::Transport& transport, BlockStore& store,
                                                   Journal* journal = nullptr);
    ~Replica() override;
    Replica(const Replica&) = delete;
    Replica& operator=(const Replica&) = delete;

    // Group commit. Messages produced while handling one input (a message, a timer, a
    // submit) are held until the journal has made their promises durable (one sync per
    // input). A node that drains many inputs at once can widen the group: between
    // begin_batch() and end_batch() (nestable) messages wait for one sync at the end.
    void begin_batch() { ++batch_depth_; }
    void end_batch();

    // A client request: admits `tx` to the mempool (checked against the committed ledger's
    // next nonce for its sender) and, on a backup, forwards it to the primary. A transaction
    // that is its sender's next one is also executed on the speculative state first, so an
    // overdraft or a bad escrow step is refused now (insufficient_funds, ...) instead of
    // waiting in the mempool for a block that never takes it. Client frames get the same.
    // A replica that is not a member (a learner, a removed replica) refuses with not_member:
    // the members would not take the request from it.
    Result<void> submit(const Tx& tx);

    // An envelope from the transport.
    void on_message(net::NodeId from, ByteView message) override;
    // A burst of envelopes is one batch (begin_batch/end_batch). An end without a begin
    // (this replica replaced another in the middle of a burst) is ignored.
    void on_burst_begin() override {
        if (!in_burst_) begin_batch();
        in_burst_ = true;
    }
    void on_burst_end() override {
        if (in_burst_) end_batch();
        in_burst_ = false;
    }

    // Called for every block executed, in height order, once it is durable in the store
    // (after BlockStore::sync, before the replies about it leave).
    void on_commit(CommitFn fn) { on_commit_ = std::move(fn); }

    // Attaches the application that executes `command` transactions (application.hpp;
    // borrowed, must outlive the replica). Without one, commands are ordered and answered
    // with an empty result. First replays to `app` the stored blocks above its height(), so
    // call it before any input. Fails, and attaches nothing, when `app` is ahead of the
    // store or a stored block cannot be read (`app` keeps the blocks replayed before that).
    Result<void> set_application(Application* app);

    // For a store and journal whose sync() only commits and whose disk flush happens
    // elsewhere (SqliteStore::Durability::at_flush): after each sync, the replica hands
    // `gate` what must wait for the disk (the on_commit callbacks, then sending the held
    // messages) instead of doing it at once; `gate` must run the releases in the order it
    // got them, each only once the commits before it are durable, on the thread that drives
    // the replica, and may drop them all if the disk fails (the owner must then stop).
    // Meanwhile the replica goes on handling input. Without a gate, releases run at once.
    using ReleaseFn = std::function<void()>;
    using DurabilityGate = std::function<void(ReleaseFn release)>;
    void set_durability_gate(DurabilityGate gate) { durability_gate_ = std::move(gate); }

    // ---- observation ----
    ReplicaId id() const { return id_; }
    std::uint64_t height() const { return ledger_.height(); }
    std::uint64_t view() const { return view_; }
    // False between sending a view change and installing the new view.
    bool view_active() const { return view_active_; }
    ReplicaId primary() const { return primary_of(view_); }
    bool is_primary() const { return primary() == id_; }
    // A member of the current replica set (a learner or a removed replica is not).
    bool voting() const { return voting_; }
    const std::vector<ReplicaInfo>& replica_set() const { return replicas_; }
    const Ledger& ledger() const { return ledger_; }
    const Ledger& speculative_ledger() const { return spec_; }
    const ReplicaStats& stats() const { return stats_; }
    const Application* application() const { return app_; } // nullptr: none attached
    std::size_t pending() const { return mempool_.size(); }
    const Mempool& mempool() const { return mempool_; }
    const ReplicaConfig& config() const { return config_; }
    // Sequence number of the last stable checkpoint (the low watermark).
    std::uint64_t stable_seq() const { return low(); }
    // Its certificate; empty until a checkpoint became stable.
    const CheckpointCertificate& last_stable_certificate() const { return stable_cert_; }
    // A light client's proof that `block` (an executed block of this replica) is committed:
    // the headers from it up to the first stable checkpoint at or above it, and that
    // checkpoint's certificate (verify_block). Every stable certificate is kept in the
    // store (BlockStore::put_certificate), so old blocks are as provable as new ones, also
    // after a restart. A block with config transactions must be proven by a certificate at
    // or below the boundary its change took effect at, signed by the set that agreed on it,
    // which a client following the chain with a ReplicaSetHistory knows before it learns
    // the change. nullopt while no kept certificate covers the block (or, for a config
    // block, none at or below its boundary: this replica passed it by state transfer),
    // when the proof would need more than `max_headers` headers, or when the store cannot
    // give a header or certificate. Reads only the store: safe beside the replica's thread.
    std::optional<CommitProof> commit_proof(const Block& block, std::size_t max_headers) const;
    // Log entries kept (sequence numbers with protocol state, all above stable_seq()).
    std::size_t log_size() const { return log_.size(); }
    // Heights with checkpoint messages kept (all above stable_seq()).
    std::size_t checkpoint_log_size() const { return checkpoints_.size(); }

    // Recomputes the speculative ledger from the committed one and the deltas of the
    // accepted, not yet executed blocks, in order.
    void rebuild_speculative();

private:
    // The prepares (or commits) of one slot: the first vote of each replica. Nearly every
    // vote of a slot names the same digest, so each distinct digest is kept once and a
    // voter is an 8-byte (replica id, digest index) entry in a flat vector sorted by id: at
    // 64 replicas a set is about 550 bytes where a 36-byte entry per vote made it 2.3 KB,
    // and a replica keeps two sets for each slot of its window (docs/benchmarks.md).
    class VoteSet {
        struct Voter {
            ReplicaId id;
            std::uint32_t digest; // index into the distinct digests: 0 is first_
        };

    public:
        // Keeps `digest` as `from`'s vote unless it has one; returns the vote kept and
        // whether it is this one.
        std::pair<const Hash256*, bool> insert(ReplicaId from, const Hash256& digest) {
            auto at = position(from);
            if (at != voters_.end() && at->id == from) return {&digest_at(at->digest), false};
            at = voters_.insert(at, Voter{from, index_of(digest)});
            return {&digest_at(at->digest), true};
        }
        // Sets `from`'s vote, replacing one it had (this replica's own, after a view change).
        void set(ReplicaId from, const Hash256& digest) {
            const std::uint32_t index = index_of(digest);
            auto at = position(from);
            if (at != voters_.end() && at->id == from)
                at->digest = index;
            else
                voters_.insert(at, Voter{from, index});
        }
        // Room for `count` votes: a slot's set grows to the replica count, and growing it
        // one doubling at a time cost an allocation per doubling and per slot.
        void reserve(std::size_t count) {
            if (voters_.capacity() < count) voters_.reserve(count);
        }
        bool contains(ReplicaId id) const {
            auto at = position(id);
            return at != voters_.end() && at->id == id;
        }
        std::size_t size() const { return voters_.size(); }
        // Votes for `digest`; with `except`, not counting that replica's.
        std::uint32_t count(const Hash256& digest,
                            std::optional<ReplicaId> except = std::nullopt) const {
            const std::uint32_t index = find_digest(digest);
            if (index == no_digest) return 0;
            std::uint32_t matching = 0;
            for (const Voter& v : voters_)
                matching += v.digest == index && v.id != except;
            return matching;
        }
        // Calls fn(replica, digest) for each vote, by replica id.
        template <class Fn>
        void for_each(Fn&& fn) const {
            for (const Voter& v : voters_)
                fn(v.id, digest_at(v.digest));
        }

    private:
        static constexpr std::uint32_t no_digest = ~std::uint32_t{0};
        const Hash256& digest_at(std::uint32_t index) const {
            return index == 0 ? first_ : more_[index - 1];
        }
        std::uint32_t find_digest(const Hash256& digest) const {
            if (voters_.empty()) return no_digest; // first_ is not set yet
            if (first_ == digest) return 0;
            for (std::size_t i = 0; i < more_.size(); ++i)
                if (more_[i] == digest) return static_cast<std::uint32_t>(i + 1);
            return no_digest;
        }
        // A new digest is kept even when the vote naming it is replaced later: a replica
        // can add one per vote it gets in, so the list stays within the replica count.
        std::uint32_t index_of(const Hash256& digest) {
            if (const std::uint32_t found = find_digest(digest); found != no_digest) return found;
            if (voters_.empty()) {
                first_ = digest;
                return 0;
            }
            more_.push_back(digest);
            return static_cast<std::uint32_t>(more_.size());
        }
        std::vector<Voter>::const_iterator position(ReplicaId id) const {
            return std::lower_bound(voters_.begin(), voters_.end(), id,
                                    [](const Voter& v, ReplicaId r) { return v.id < r; });
        }
        std::vector<Voter>::iterator position(ReplicaId id) {
            return std::lower_bound(voters_.begin(), voters_.end(), id,
                                    [](const Voter& v, ReplicaId r) { return v.id < r; });
        }
        std::vector<Voter> voters_;
        Hash256 first_{};
        std::vector<Hash256> more_; // further distinct digests (an equivocation, a view change)
    };

    struct Slot {
        std::optional<PrePrepare> pre_prepare; // from the primary (or a peer, see bodies)
        Hash256 digest;                        // its block hash
        bool accepted = false;                 // validated on the speculative state
        Millis accepted_at = 0;                // when (transport clock)
        bool rejected = false;                 // failed validation: no other for (view, seq)
        std::optional<StateDelta> delta;       // when accepted, unless executed before
        VoteSet prepares;
        VoteSet commits;
        bool prepared = false;
        bool committed = false;
    };

    Replica(ReplicaId id, const SigningKey& key, ChainParams params, State state,
            ReplicaConfig config, net::Transport& transport, BlockStore& store,
            LinkAuthenticator link, Hash256 genesis_hash, Journal* journal);
    void restore(const JournalState& saved);
    // Each sender's next nonce on the committed ledger, for the mempool.
    Mempool::NextNonceFn committed_nonces() const {
        return [this](const Address& a) { return ledger_.account(a).nonce; };
    }

    // Every entry point runs inside one of these: the outermost flushes the outbox.
    struct Scope {
        Replica& r;
        explicit Scope(Replica& replica) : r(replica) { r.begin_batch(); }
        ~Scope() { r.end_batch(); }
    };
    void flush();
    // Seals the messages for replicas into outbox_: a peer's messages of one batch share a
    // bundle (one MAC, one transport message) unless config.bundle_messages is off.
    void seal_link_messages();
    // Handles one authenticated message (an envelope's, or one of a bundle's).
    void dispatch(ReplicaId sender, MsgType type, ByteView body);
    net::TimerId set_timer(Millis delay, std::function<void()> fire);

    std::uint32_t n() const { return static_cast<std::uint32_t>(replicas_.size()); }
    std::uint32_t f() const { return max_faulty(n()); }
    // The low watermark: the last stable (certified) checkpoint.
    std::uint64_t low() const { return stable_certificate_seq(); }
    std::uint64_t high() const { return low() + config_.watermark_window; }
    ReplicaId primary_of(std::uint64_t view) const;
    const ReplicaInfo* member(ReplicaId id) const;
    // The set that agreed (and certifies) block `seq`.
    const std::vector<ReplicaInfo>& set_for(std::uint64_t seq) const;
    bool signs_for(std::uint64_t seq) const;
    CertificateSigners signers_of() const {
        return
            [this](std::uint64_t seq) -> const std::vector<ReplicaInfo>& { return set_for(seq); };
    }
    std::uint64_t limit() const; // highest seq that may be proposed or accepted now
    void note_spec_membership(std::uint64_t seq);
    void switch_membership(std::uint64_t boundary);
    std::uint64_t stable_certificate_seq() const;
    void broadcast(MsgType type, const Message& m);
    void send_to(ReplicaId to, MsgType type, const Message& m);

    void on_request(ReplicaId from, Request&& r);
    void on_pre_prepare(ReplicaId from, PrePrepare&& pp);
    void on_vote(ReplicaId from, MsgType type, const Vote& v);
    void on_checkpoint(ReplicaId from, Checkpoint&& c);
    void on_view_change(ReplicaId from, ViewChange&& vc);
    void on_new_view(ReplicaId from, NewView&& nv);
    void on_fetch(ReplicaId from, const Fetch& f);
    void on_blocks(ReplicaId from, Blocks&& b);
    void on_client_message(net::NodeId client, ByteView frame);
    Result<void> admit(const Tx& tx, const Hash256& txid, net::NodeId from, bool forward);
    Result<void> check_next(const Tx& tx, const Hash256& txid) const;
    void reply(net::NodeId client, const Hash256& key, Reply r);
    // `results`: the application's, one per command of the block in order (or none).
    void answer_waiting(const Block& block, const StateDelta& delta,
                        const std::vector<Bytes>& results);
    // Drops a transaction no block can hold now (its reason from the block builder) and
    // tells the clients waiting for it.
    void refuse(const RejectedTx& rejected);
    // Ready transactions that fail against the committed state, refused (backups, before
    // they blame the primary for not proposing them).
    void refuse_unexecutable();

    // normal case
    void maybe_propose();
    void propose(std::vector<Tx> txs);
    void accept_ready();
    void accept_executed(std::uint64_t seq, Slot& slot);
    void record_pre_prepared(std::uint64_t seq, Slot& slot);
    void send_prepare(std::uint64_t seq, Slot& slot);
    void check_progress(std::uint64_t seq);
    void check_progress(std::uint64_t seq, Slot& slot); // slot: log_'s entry for seq
    void execute_ready();
    void executed(const Block& block, const StateDelta& delta);
    void reset_speculation_from(std::uint64_t seq);
    void take_checkpoint(const Block& block);
    void check_stable(std::uint64_t seq);
    void make_stable(CheckpointCertificate cert);
    // The store's meta key listing (u64 each) the heights of kept boundary certificates.
    static constexpr const char* boundary_meta_key = "pbft.boundary_certificates";
    Result<void> load_boundary_certificates();
    void collect_garbage();

    // timers
    void on_tick();
    void retransmit();
    // Ticks without an executed block, and the age in ticks a slot must have, before the
    // primary re-sends its block to peers that have not prepared it.
    static constexpr std::uint64_t body_stall_ticks = 4;
    void request_missing_bodies();
    bool has_work() const;
    // Arms the view-change timer, if work is pending and none is armed: it fires after
    // `delay`, or the current view timeout when 0.
    void arm_watchdog(net::Millis delay = 0);
    void leave_view_timers();
    void lengthen_view_timeout();
    void announce_stable(ReplicaId to);
    void answer_stuck(ReplicaId to, std::uint64_t seq, const Hash256& digest);
    void note_view(ReplicaId from, std::uint64_t view);

    // view change
    void start_view_change(std::uint64_t view);
    // ask_again: on a tick, fetch each block body the new view still lacks once more.
    void try_new_view(bool ask_again = false);
    void install_view(const NewView& nv, const ViewDecision& decision);
    bool hold_early(ReplicaId from, MsgType type, std::uint64_t view, Message message);
    void forward_pending_requests();
    // Pending requests are forwarded again after this many ticks without an executed block
    // (a quarter of the request timeout): waiting that long is normal under load, when
    // blocks are full, and re-sending them sooner only repeats what the primary holds.
    std::uint64_t forward_stall_ticks() const {
        return std::max<std::uint64_t>(1, config_.request_timeout_ms / (4 * config_.retransmit_ms));
    }

    // state transfer
    void consider_target(const CheckpointCertificate& cert, bool urgent);
    void start_fetch();
    void send_fetch();
    void finish_transfer();
    void keep_chunk_certificate(const Blocks& b);
    // Puts `cert` in the store; on failure counts it and halts. False if it failed.
    bool store_certificate(const CheckpointCertificate& cert);
    bool note_executed_reports(ReplicaId from, const Blocks& b);
    void execute_reported();
    void after_transfer();

    ReplicaId id_;
    const SigningKey& key_;
    ChainParams params_;
    ReplicaConfig config_;
    net::Transport& transport_;
    BlockStore& store_;
    LinkAuthenticator link_;
    Hash256 genesis_hash_;
    std::unique_ptr<SignatureCache> cache_; // shared by the mempool and both ledgers
    Ledger ledger_;                         // committed
    Ledger spec_;                           // committed + accepted, unexecuted deltas
    Mempool mempool_;
    std::vector<ReplicaInfo> replicas_; // sorted by id
    bool voting_ = false; // id_ is in replicas_: asked for every message, set where it changes

    std::uint64_t view_ = 0;
    bool view_active_ = true;
    std::uint64_t spec_height_ = 0; // highest accepted seq (== spec_.height())
    std::map<std::uint64_t, Slot> log_;
    // seq -> replica -> its checkpoint message (own included)
    std::map<std::uint64_t, std::map<ReplicaId, Checkpoint>> checkpoints_;
    std::map<std::uint64_t, Checkpoint> own_checkpoints_;
    CheckpointCertificate stable_cert_;

    // View change state. P and Q outlive views; both are trimmed at the low watermark.
    std::map<std::uint64_t, LogEntry> prepared_log_;                         // P, by seq
    std::map<std::pair<std::uint64_t, Hash256>, LogEntry> pre_prepared_log_; // Q
    std::map<Hash256, Block> bodies_; // accepted blocks above the low watermark, by hash
    std::set<Hash256> relayed_;       // pending requests already sent to every replica

    // Membership. epochs_: first seq -> the replica set that agrees it from there on.
    std::map<std::uint64_t, std::vector<ReplicaInfo>> epochs_;
    std::optional<std::uint64_t> spec_boundary_; // pending switch, from the speculative state
    std::map<std::uint64_t, CheckpointCertificate> boundary_certs_; // stable, at switches
    std::vector<ReplicaInfo> leaving_; // removed, but still certifying their last checkpoint
    std::uint64_t leaving_until_ = 0;
    std::map<std::uint64_t, std::map<ReplicaId, ViewChange>> view_changes_; // by view
    std::map<std::uint64_t, Hash256> decided_;     // this view's re-proposed blocks, by seq
    std::optional<NewView> new_view_;              // the message that started this view
    std::map<ReplicaId, std::uint64_t> peer_view_; // highest view seen from each peer
    Millis view_timeout_ = 0;
    std::map<std::uint64_t, Hash256> wanted_; // bodies asked for, by height
    // The new primary's pre-prepares and its peers' votes for the view being installed that
    // arrived before its new-view message (links reorder): handled once it is installed,
    // instead of waiting for their retransmission.
    struct EarlyMessage {
        ReplicaId from = 0;
        MsgType type = MsgType::prepare;
        Message message;
    };
    std::vector<EarlyMessage> early_;
    std::size_t early_pre_prepares_ = 0; // of early_

    // State transfer.
    std::optional<CheckpointCertificate> target_;
    bool fetching_ = false;
    std::uint64_t fetch_from_ = 0, fetch_to_ = 0; // the chunk asked for
    Hash256 fetch_anchor_;                        // hash the chunk's last block must have
    std::map<std::uint64_t, Block> fetched_;      // verified, not yet executed
    // Certificates of checkpoints among fetched_ (Blocks::chunk_certificate), verified; kept
    // in the store once their blocks have executed.
    std::vector<CheckpointCertificate> fetched_certificates_;
    // Blocks above our height that peers said they executed (Blocks::executed_height), per
    // height: each peer's digest, and the bodies by digest. Kept within the watermark window.
    struct ExecutedReports {
        std::map<ReplicaId, Hash256> digests;
        std::map<Hash256, Block> bodies;
    };
    std::map<std::uint64_t, ExecutedReports> executed_reports_;
    std::size_t fetch_peer_ = 0;            // which of the certificate's signers to ask
    ReplicaId fetch_asked_ = 0;             // the one asked last
    std::map<ReplicaId, Millis> announced_; // last certificate announcement per peer
    std::map<ReplicaId, Millis> answered_;  // last answer to a stuck peer

    net::TimerId batch_timer_ = 0, tick_timer_ = 0, watch_timer_ = 0, view_timer_ = 0,
                 fetch_timer_ = 0;
    std::uint64_t watch_height_ = 0, tick_height_ = 0, ticks_ = 0;
    std::uint64_t stalled_ticks_ = 0; // consecutive ticks without an executed block
    net::Millis executed_at_ = 0;     // when the last block executed (transport clock)
    bool batch_due_ = false;
    // Whether the transactions a block could take may have grown since the mempool last
    // failed to fill one: walking every sender's queue again on each arriving request that
    // could not change the answer made proposing quadratic in the mempool's size.
    bool ready_grew_ = true;
    bool halted_ = false; // the store refused a block: stop executing
    ReplicaStats stats_;
    CommitFn on_commit_;
    Application* app_ = nullptr;
    DurabilityGate durability_gate_;

    Journal* journal_ = nullptr;
    std::vector<std::pair<ReplicaId, Bytes>> outbox_; // held until the journal is synced
    // A message for one replica, or for each of `broadcast`'s. A broadcast is one entry: at
    // 64 replicas a batch of prepares made 63 entries each, and sorting them by destination
    // cost more than sealing them (docs/benchmarks.md).
    struct LinkMessage {
        ReplicaId to; // when not a broadcast
        MsgType type;
        std::shared_ptr<const std::vector<ReplicaId>> broadcast; // sorted; null: to `to` only
        Bytes body;
    };
    std::vector<LinkMessage> link_out_; // messages for replicas, sealed at flush
    // The peers of the latest broadcast, shared by the entries that go to the same set.
    std::shared_ptr<const std::vector<ReplicaId>> broadcast_targets_;
    std::vector<ReplicaId> broadcast_scratch_; // broadcast()'s working list, kept for its capacity
    std::vector<CommittedBlock> executed_unsynced_; // for on_commit_, after the store syncs

    // Clients waiting for a transaction to commit, by txid: (node, reply MAC key). Bounded;
    // a client whose entry was dropped still gets its answer from the store on a retry.
    struct Waiter {
        net::NodeId client;
        Hash256 key;
    };
    std::unordered_map<Hash256, std::vector<Waiter>, FixedBytesHash> waiting_;
    std::map<PublicKey, Hash256> client_keys_; // reply MAC keys, bounded, oldest evicted
    std::vector<PublicKey> client_key_order_;
    std::size_t client_key_next_ = 0;
    int batch_depth_ = 0;
    bool in_burst_ = false;
};

} // namespace popchain::pbft
