#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/config.hpp>

#include <algorithm>
#include <set>

namespace popchain::pbft {

Result<void> verify_checkpoint_certificate(const CheckpointCertificate& certificate,
                                           const std::vector<ReplicaInfo>& replicas) {
    const auto n = static_cast<std::uint32_t>(replicas.size());
    const auto& cps = certificate.checkpoints;
    if (cps.empty()) return make_error(Errc::invalid_argument, "empty checkpoint certificate");
    const Checkpoint& first = cps.front();
    std::set<ReplicaId> seen;
    for (const auto& c : cps) {
        if (c.seq != first.seq || c.block_hash != first.block_hash ||
            c.state_root != first.state_root)
            return make_error(Errc::invalid_argument, "checkpoint of replica " +
                                                          std::to_string(c.replica) +
                                                          " does not match the others");
        if (!seen.insert(c.replica).second)
            return make_error(Errc::invalid_argument,
                              "replica " + std::to_string(c.replica) + " appears twice");
        auto it = std::find_if(replicas.begin(), replicas.end(),
                               [&](const ReplicaInfo& r) { return r.id == c.replica; });
        if (it == replicas.end())
            return make_error(Errc::unknown_peer,
                              "replica " + std::to_string(c.replica) + " is not a member");
        if (!verify(it->key, c.signed_digest(), c.signature))
            return make_error(Errc::bad_signature,
                              "checkpoint signature of replica " + std::to_string(c.replica));
    }
    if (cps.size() < quorum(n))
        return make_error(Errc::invalid_argument,
                          std::to_string(cps.size()) + " checkpoints, a quorum of " +
                              std::to_string(n) + " is " + std::to_string(quorum(n)));
    return {};
}

Result<void> verify_block(const Block& block, const CommitProof& proof,
                          const std::vector<ReplicaInfo>& replicas) {
    if (compute_tx_root(block.txs) != block.header.tx_root)
        return make_error(Errc::bad_tx_root, "the block's transactions do not match its header");
    Hash256 parent = block.hash();
    std::uint64_t height = block.header.height;
    for (const BlockHeader& h : proof.headers) {
        if (h.height != height + 1)
            return make_error(Errc::wrong_height, "proof header at height " +
                                                      std::to_string(h.height) + " follows " +
                                                      std::to_string(height));
        if (h.prev_hash != parent)
            return make_error(Errc::wrong_prev_hash,
                              "proof header " + std::to_string(h.height) + " does not chain");
        parent = h.hash();
        height = h.height;
    }
    if (auto ok = verify_checkpoint_certificate(proof.certificate, replicas); !ok) return ok;
    const Checkpoint& cp = proof.certificate.checkpoints.front();
    if (cp.seq != height || cp.block_hash != parent)
        return make_error(Errc::invalid_argument,
                          "the certificate is for height " + std::to_string(cp.seq) +
                              ", the headers end at " + std::to_string(height));
    return {};
}

Result<ReplicaSetHistory> ReplicaSetHistory::create(std::vector<ReplicaInfo> genesis_set,
                                                    std::uint32_t checkpoint_interval) {
    if (genesis_set.empty()) return make_error(Errc::invalid_argument, "empty replica set");
    if (checkpoint_interval == 0)
        return make_error(Errc::invalid_argument, "checkpoint_interval must be at least 1");
    ReplicaSetHistory h;
    h.interval_ = checkpoint_interval;
    h.epochs_.emplace(0, std::move(genesis_set));
    return h;
}

const std::vector<ReplicaInfo>& ReplicaSetHistory::set_for(std::uint64_t seq) const {
    return std::prev(epochs_.upper_bound(seq))->second;
}

Result<void> ReplicaSetHistory::learn(const Block& block, const CommitProof& proof) {
    const std::uint64_t height = block.header.height;
    if (height <= learnt_height_)
        return make_error(Errc::wrong_height, "block " + std::to_string(height) +
                                                  " is not above the last block learnt (" +
                                                  std::to_string(learnt_height_) + ")");
    if (proof.certificate.checkpoints.empty())
        return make_error(Errc::invalid_argument, "empty checkpoint certificate");
    const std::uint64_t certified = proof.certificate.checkpoints.front().seq;
    if (auto ok = verify_block(block, proof, set_for(certified)); !ok) return ok;

    const std::uint64_t boundary = (height + interval_ - 1) / interval_ * interval_;
    auto epochs = epochs_; // applied only if every change applies
    for (const Tx& tx : block.txs) {
        if (tx.kind != TxKind::config) continue;
        if (certified > boundary)
            return make_error(Errc::invalid_argument,
                              "a config block must be proven by a certificate at or below its "
                              "boundary " +
                                  std::to_string(boundary));
        auto change = decode_config_change(tx.payload);
        if (!change) return change.error();
        // Changes before the same boundary accumulate into one new set.
        auto base = std::prev(epochs.upper_bound(boundary + 1))->second;
        auto next = apply_config_change(std::move(base), *change);
        if (!next) return next.error();
        epochs[boundary + 1] = std::move(next).value();
    }
    epochs_ = std::move(epochs);
    learnt_height_ = height;
    return {};
}

Result<void> verify_block(const Block& block, const CommitProof& proof,
                          const ReplicaSetHistory& history) {
    if (proof.certificate.checkpoints.empty())
        return make_error(Errc::invalid_argument, "empty checkpoint certificate");
    return verify_block(block, proof, history.set_for(proof.certificate.checkpoints.front().seq));
}

} // namespace popchain::pbft
