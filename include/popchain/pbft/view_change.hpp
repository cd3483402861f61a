// The view-change decision procedure, as pure functions (see docs/consensus.md).
//
// A new primary collects signed view changes and decides, from them alone, which blocks the
// new view must re-propose. Every backup re-runs the same function on the view changes the
// new-view message carries and accepts the view only if it reaches the same decision, so a
// primary cannot invent or drop a block.
//
// For a set S of view changes for one view (distinct, valid senders), with h the highest
// stable checkpoint in S, the decision is a list of blocks for seq h+1, h+2, ... : for each
// seq, in order,
//   - a block d prepared in view v per some P entry in S is chosen when
//       (A1) quorum(n) messages in S have no P entry for seq, one from a view below v, or
//            exactly (d, v); and
//       (A2) f+1 messages in S list d in Q for seq with a view >= v, all naming the same
//            parent (blocks chain, so the parent is part of what must be vouched for, and
//            f+1 reports include an honest one);
//     among several, the one prepared in the highest view;
//   - otherwise, if quorum(n) messages have no P entry for seq, the list ends here;
//   - otherwise no decision can be made yet: more view changes are needed.
// The list also ends at the first chosen block whose parent is not the block chosen just
// below it (the checkpoint block for h+1). Such a block cannot have been executed anywhere:
// an executed block's parent was executed too, and executed blocks are always chosen.
#pragma once

#include <popchain/pbft/messages.hpp>
#include <popchain/result.hpp>

#include <functional>
#include <optional>
#include <vector>

namespace popchain::pbft {

struct ViewDecision {
    std::uint64_t checkpoint_seq = 0; // h
    CheckpointCertificate checkpoint; // its certificate (empty for genesis)
    std::vector<LogEntry> blocks;     // seq h+1, h+2, ... each extending the previous
    friend bool operator==(const ViewDecision&, const ViewDecision&) = default;
};

// The replica set whose signatures certify the checkpoint at `seq`. Membership changes take
// effect at checkpoint boundaries, so a certificate may be older than the current set.
// Empty means "the current set".
using CertificateSigners = std::function<const std::vector<ReplicaInfo>&(std::uint64_t seq)>;

// Checks one view change on its own: the sender is a member, the signature verifies, the
// stable certificate (if stable_seq > 0) certifies stable_seq under `replicas` (or
// `signers(stable_seq)`), and every P and Q entry lies above stable_seq and below the new
// view.
Result<void> check_view_change(const ViewChange& vc, const std::vector<ReplicaInfo>& replicas,
                               const CertificateSigners& signers = {});

// The decision for the view changes in `set` (already checked, distinct senders, all for the
// same view), for a cluster of `n` replicas whose genesis block hash is `genesis_hash`.
// nullopt when `set` holds fewer than quorum(n) messages or some seq cannot be decided yet.
std::optional<ViewDecision> decide_view(const std::vector<ViewChange>& set, std::uint32_t n,
                                        const Hash256& genesis_hash);

// Checks a new-view message as a backup must: sent by `from`, the primary of its view,
// validly signed, at least quorum(n) valid view changes for that view from distinct members,
// and decisions equal to what decide_view() gives on them. Returns that decision.
Result<ViewDecision> check_new_view(const NewView& nv, ReplicaId from, ReplicaId primary,
                                    const std::vector<ReplicaInfo>& replicas,
                                    const Hash256& genesis_hash,
                                    const CertificateSigners& signers = {});

} // namespace popchain::pbft
