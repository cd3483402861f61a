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

} // namespace popchain::pbft
