// The pBFT replica: the normal case (see docs/consensus.md).
//
// A Replica is a deterministic state machine driven by calls on one thread: client requests
// (submit), messages (on_message) and timers (through its Transport). It owns the committed
// Ledger, a speculative Ledger at the tip of the blocks it has accepted but not yet executed,
// the Mempool and the LinkAuthenticator; the BlockStore and the Transport are borrowed.
//
// Normal case, view v (in this version v stays 0; view change, state transfer,
// persistence-before-vote and membership change come later):
//   - The primary of view v is replicas[v mod n], by position in the replica set sorted by
//     id. It closes a block when max_block_txs transactions are ready, or max_batch_delay_ms
//     after the first one became ready, and only for sequence numbers in
//     (low watermark, low watermark + watermark_window]. The low watermark is the last
//     stable checkpoint.
//   - Pipelining: the primary proposes seq h+1 before h commits. Every accepted
//     (pre-prepared) block is executed at once on the speculative ledger, which is the
//     committed ledger with the deltas of all accepted, not yet executed blocks applied, in
//     order; the next block is built (primary) or validated (backup) on top of it. A
//     transaction in an in-flight block is not proposed again: its nonce is used up in the
//     speculative state. rebuild_speculative() recomputes that ledger from the committed
//     one and the retained deltas (the hook a view change will use).
//   - Backups accept at most one pre-prepare per (view, seq), from the primary only, and
//     only once its block executes on the speculative state of seq-1 (a pre-prepare that
//     arrives before its predecessor waits for it). A block that fails execution is dropped
//     (bad_block) and never prepared. Messages a little ahead of the window (up to one more
//     window) are kept but not acted on until the watermark moves, so a replica whose
//     checkpoint became stable later than the primary's does not lose them.
//   - prepared(s)  = accepted pre-prepare + quorum(n)-1 matching prepares from distinct
//                    replicas other than the primary (own prepare included);
//     committed(s) = prepared(s) + quorum(n) matching commits (own included).
//     Blocks execute strictly in sequence order: committed to the Ledger, appended to the
//     BlockStore with their delta, removed from the mempool.
//   - After executing a block whose height is a multiple of checkpoint_interval a replica
//     signs and broadcasts a Checkpoint. quorum(n) matching, validly signed checkpoints for
//     a height the replica has executed itself (with the same block hash and state root)
//     make it stable: the low watermark moves there and the log at or below it is
//     discarded; the certificate is kept (last_stable_certificate()).
//
// Self-delivery: a replica never sends to itself. Its own prepares, commits and checkpoints
// are recorded directly when it sends them to the others.
//
// Drops. Every message that is not acted on is counted by reason in stats(); nothing about
// a dropped message changes the replica's state.
#pragma once

#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/ledger.hpp>
#include <popchain/mempool.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>
#include <popchain/store.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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
    std::uint64_t unsupported = 0;         // view change, new view, fetch, blocks (not yet)
    std::uint64_t rejected_requests = 0;   // forwarded client transactions the mempool refused

    // ---- activity ----
    std::uint64_t proposed = 0;           // blocks proposed as primary
    std::uint64_t proposed_ahead = 0;     // ... while the previous one was uncommitted
    std::uint64_t accepted = 0;           // pre-prepares accepted as backup
    std::uint64_t held_early = 0;         // pre-prepares kept above the window
    std::uint64_t executed_blocks = 0;    // blocks committed and stored
    std::uint64_t executed_txs = 0;       // transactions in them
    std::uint64_t requests_forwarded = 0; // submits forwarded to the primary
    std::uint64_t checkpoints_stable = 0; // stable checkpoints reached
    std::uint64_t store_errors = 0;       // BlockStore::append failures (replica halts)
};

class Replica : public net::Receiver {
public:
    using CommitFn = std::function<void(const Block&)>;

    // Builds a replica. `key` is kept BY REFERENCE (SigningKey is move-only and its owner,
    // the node, keeps the identity key): it must outlive the replica. `transport` and
    // `store` are borrowed too. Fails with invalid_argument when the configuration is out of
    // bounds (the message names the field), when `id` or `key` is not in the replica set,
    // when the transport's self() is not `id`, or when the store holds another chain.
    // An empty store gets the genesis block and the replica set is the genesis one;
    // otherwise the ledger (and the replica set) is the store's state, and the low watermark
    // starts at the stored height (the log of a previous run is not kept yet).
    static Result<std::unique_ptr<Replica>> create(ReplicaId id, const SigningKey& key,
                                                   const Genesis& genesis, ReplicaConfig config,
                                                   net::Transport& transport, BlockStore& store);
    ~Replica() override;
    Replica(const Replica&) = delete;
    Replica& operator=(const Replica&) = delete;

    // A client request: admits `tx` to the mempool (checked against the committed ledger's
    // next nonce for its sender) and, on a backup, forwards it to the primary.
    Result<void> submit(const Tx& tx);

    // An envelope from the transport.
    void on_message(net::NodeId from, ByteView message) override;

    // Called for every block executed, in height order, after it is stored.
    void on_commit(CommitFn fn) { on_commit_ = std::move(fn); }

    // ---- observation ----
    ReplicaId id() const { return id_; }
    std::uint64_t height() const { return ledger_.height(); }
    std::uint64_t view() const { return view_; }
    ReplicaId primary() const;
    bool is_primary() const { return primary() == id_; }
    const Ledger& ledger() const { return ledger_; }
    const Ledger& speculative_ledger() const { return spec_; }
    const ReplicaStats& stats() const { return stats_; }
    std::size_t pending() const { return mempool_.size(); }
    const Mempool& mempool() const { return mempool_; }
    const ReplicaConfig& config() const { return config_; }
    // Sequence number of the last stable checkpoint (the low watermark).
    std::uint64_t stable_seq() const { return low_; }
    // Its certificate; empty until a checkpoint became stable.
    const CheckpointCertificate& last_stable_certificate() const { return stable_cert_; }
    // Log entries kept (sequence numbers with protocol state, all above stable_seq()).
    std::size_t log_size() const { return log_.size(); }
    // Heights with checkpoint messages kept (all above stable_seq()).
    std::size_t checkpoint_log_size() const { return checkpoints_.size(); }

    // Recomputes the speculative ledger from the committed one and the deltas of the
    // accepted, not yet executed blocks, in order.
    void rebuild_speculative();

private:
    struct Slot {
        std::optional<PrePrepare> pre_prepare; // received from the primary, maybe unvalidated
        Hash256 digest;                        // its block hash
        bool accepted = false;                 // validated on the speculative state
        bool rejected = false;                 // failed validation: no other for (view, seq)
        std::optional<StateDelta> delta;       // when accepted
        std::map<ReplicaId, Hash256> prepares; // first vote per replica
        std::map<ReplicaId, Hash256> commits;
        bool prepared = false;
        bool committed = false;
    };

    Replica(ReplicaId id, const SigningKey& key, ChainParams params, State state,
            ReplicaConfig config, net::Transport& transport, BlockStore& store,
            LinkAuthenticator link);

    std::uint32_t n() const { return static_cast<std::uint32_t>(replicas_.size()); }
    std::uint64_t high() const { return low_ + config_.watermark_window; }
    const ReplicaInfo* member(ReplicaId id) const;
    void broadcast(MsgType type, const Message& m);
    void send_to(ReplicaId to, MsgType type, const Message& m);

    void on_request(ReplicaId from, Request&& r);
    void on_pre_prepare(ReplicaId from, PrePrepare&& pp);
    void on_vote(ReplicaId from, MsgType type, const Vote& v);
    void on_checkpoint(ReplicaId from, Checkpoint&& c);

    void maybe_propose();
    void propose(std::vector<Tx> txs);
    void accept_ready();
    void check_progress(std::uint64_t seq);
    void execute_ready();
    void take_checkpoint(const Block& block);
    void check_stable(std::uint64_t seq);
    void collect_garbage();

    ReplicaId id_;
    const SigningKey& key_;
    ChainParams params_;
    ReplicaConfig config_;
    net::Transport& transport_;
    BlockStore& store_;
    LinkAuthenticator link_;
    std::unique_ptr<SignatureCache> cache_; // shared by the mempool and both ledgers
    Ledger ledger_;                         // committed
    Ledger spec_;                           // committed + accepted, unexecuted deltas
    Mempool mempool_;
    std::vector<ReplicaInfo> replicas_; // sorted by id

    std::uint64_t view_ = 0;
    std::uint64_t low_ = 0;         // last stable checkpoint
    std::uint64_t spec_height_ = 0; // highest accepted seq (== spec_.height())
    std::map<std::uint64_t, Slot> log_;
    // seq -> replica -> its checkpoint message (own included)
    std::map<std::uint64_t, std::map<ReplicaId, Checkpoint>> checkpoints_;
    std::map<std::uint64_t, Checkpoint> own_checkpoints_;
    CheckpointCertificate stable_cert_;

    net::TimerId batch_timer_ = 0;
    bool batch_due_ = false;
    bool halted_ = false; // the store refused a block: stop executing
    ReplicaStats stats_;
    CommitFn on_commit_;
};

} // namespace popchain::pbft
