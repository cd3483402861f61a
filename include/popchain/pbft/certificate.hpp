// Checking that a block is committed, offline, with nothing but the replica set.
//
// A block is certified by the first stable checkpoint at or above its height: quorum(n)
// replica signatures over (seq, block hash, state root) of the checkpoint block, plus the
// headers from the block up to that checkpoint block, each naming its parent's hash. The
// hash chain carries the checkpoint's signatures down to every block below it, so replicas
// sign once per checkpoint rather than once per block (docs/consensus.md).
#pragma once

#include <popchain/block.hpp>
#include <popchain/pbft/messages.hpp>

#include <cstdint>
#include <map>
#include <vector>

namespace popchain::pbft {

// At least quorum(n) checkpoints for the same (seq, block_hash, state_root), from distinct
// members of `replicas`, each validly signed by the replica it names.
Result<void> verify_checkpoint_certificate(const CheckpointCertificate& certificate,
                                           const std::vector<ReplicaInfo>& replicas);

struct CommitProof {
    // Headers of the blocks after the proven one, up to and including the checkpoint block;
    // empty when the proven block is the checkpoint block itself.
    std::vector<BlockHeader> headers;
    CheckpointCertificate certificate;
};

// The light-client check: `block`'s transactions match its tx root, the headers chain from
// it to the checkpoint block by prev_hash with consecutive heights, and the certificate
// certifies that checkpoint block (its height and hash) under `replicas`.
Result<void> verify_block(const Block& block, const CommitProof& proof,
                          const std::vector<ReplicaInfo>& replicas);

// The replica sets of a chain over time, as a light client learns them: it starts from the
// genesis set and replays the `config` transactions of blocks it has verified. A change
// made in block c takes effect above the boundary B, the first multiple of
// checkpoint_interval at or above c (the replicas' rule, docs/consensus.md): checkpoints up
// to B are certified by the old set, later ones by the new.
//
// A config block must be proven with a certificate at or below its boundary (the old set's;
// replicas keep every boundary certificate), since the new set is not known yet.
//
// Missing a config block cannot make the client accept a false block: it then checks later
// certificates against an older set, and a quorum of that set's signatures, with at most f
// of them faulty, still includes an honest replica that signed the real checkpoint. It can
// only make true blocks fail to verify until the client learns the change.
class ReplicaSetHistory {
public:
    // Fails for an empty set or checkpoint_interval 0.
    static Result<ReplicaSetHistory> create(std::vector<ReplicaInfo> genesis_set,
                                            std::uint32_t checkpoint_interval);

    // The set whose signatures certify a checkpoint at height `seq` (valid until learn()).
    const std::vector<ReplicaInfo>& set_for(std::uint64_t seq) const;

    // Verifies `block` with `proof` (under the set for the certificate's height) and applies
    // its config transactions. Blocks come in increasing height; those without config
    // transactions may be skipped. A block that fails changes nothing.
    Result<void> learn(const Block& block, const CommitProof& proof);

    // Height of the last block learnt (0 before any).
    std::uint64_t learnt_height() const { return learnt_height_; }
    std::uint32_t checkpoint_interval() const { return interval_; }

private:
    ReplicaSetHistory() = default;
    std::uint32_t interval_ = 1;
    std::map<std::uint64_t, std::vector<ReplicaInfo>> epochs_; // first certified seq -> set
    std::uint64_t learnt_height_ = 0;
};

// verify_block with the set that certified the proof's checkpoint.
Result<void> verify_block(const Block& block, const CommitProof& proof,
                          const ReplicaSetHistory& history);

} // namespace popchain::pbft
