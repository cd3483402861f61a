#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/pbft/view_change.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>

namespace popchain::pbft {

namespace {

const ReplicaInfo* find_member(const std::vector<ReplicaInfo>& replicas, ReplicaId id) {
    for (const auto& r : replicas)
        if (r.id == id) return &r;
    return nullptr;
}

const LogEntry* prepared_at(const ViewChange& vc, std::uint64_t seq) {
    for (const auto& e : vc.prepared)
        if (e.seq == seq) return &e;
    return nullptr;
}

} // namespace

Result<void> check_view_change(const ViewChange& vc, const std::vector<ReplicaInfo>& replicas,
                               const CertificateSigners& signers) {
    const ReplicaInfo* m = find_member(replicas, vc.replica);
    if (!m)
        return make_error(Errc::unknown_peer,
                          "view change from non-member " + std::to_string(vc.replica));
    if (!verify(m->key, vc.signed_digest(), vc.signature))
        return make_error(Errc::bad_signature,
                          "view change signature of replica " + std::to_string(vc.replica));
    if (vc.stable_seq > 0) {
        const auto& cert_set = signers ? signers(vc.stable_seq) : replicas;
        if (auto ok = verify_checkpoint_certificate(vc.stable_certificate, cert_set); !ok)
            return make_error(ok.code(), "view change stable certificate: " + ok.error().detail);
        if (vc.stable_certificate.checkpoints.front().seq != vc.stable_seq)
            return make_error(Errc::invalid_argument,
                              "view change certificate is not for its stable seq");
    } else if (!vc.stable_certificate.checkpoints.empty()) {
        return make_error(Errc::invalid_argument, "view change certificate without stable seq");
    }
    std::set<std::uint64_t> p_seqs;
    for (const auto& e : vc.prepared) {
        if (e.seq <= vc.stable_seq || e.view >= vc.new_view)
            return make_error(Errc::invalid_argument, "view change P entry out of range");
        if (!p_seqs.insert(e.seq).second)
            return make_error(Errc::invalid_argument, "view change with two P entries for a seq");
    }
    for (const auto& e : vc.pre_prepared)
        if (e.seq <= vc.stable_seq || e.view >= vc.new_view)
            return make_error(Errc::invalid_argument, "view change Q entry out of range");
    return {};
}

std::optional<ViewDecision> decide_view(const std::vector<ViewChange>& set, std::uint32_t n,
                                        const Hash256& genesis_hash) {
    const std::uint32_t q = quorum(n);
    const std::uint32_t f = max_faulty(n);
    if (set.size() < q) return std::nullopt;

    ViewDecision out;
    std::uint64_t max_seq = 0;
    for (const auto& vc : set) {
        if (vc.stable_seq > out.checkpoint_seq) {
            out.checkpoint_seq = vc.stable_seq;
            out.checkpoint = vc.stable_certificate;
        }
        for (const auto& e : vc.prepared)
            max_seq = std::max(max_seq, e.seq);
    }
    Hash256 parent =
        out.checkpoint_seq == 0 ? genesis_hash : out.checkpoint.checkpoints.front().block_hash;

    for (std::uint64_t seq = out.checkpoint_seq + 1; seq <= max_seq; ++seq) {
        // Candidates: distinct (view, digest) prepared at seq, highest view first.
        std::set<std::pair<std::uint64_t, Hash256>, std::greater<>> candidates;
        std::uint32_t without_p = 0;
        for (const auto& vc : set) {
            if (const LogEntry* e = prepared_at(vc, seq))
                candidates.insert({e->view, e->digest});
            else
                ++without_p;
        }
        std::optional<LogEntry> chosen;
        for (const auto& [view, digest] : candidates) {
            std::uint32_t a1 = 0;
            for (const auto& vc : set) {
                const LogEntry* e = prepared_at(vc, seq);
                if (!e || e->view < view || (e->view == view && e->digest == digest)) ++a1;
            }
            if (a1 < q) continue;
            std::map<Hash256, std::uint32_t> vouched; // parent -> messages listing d in Q
            for (const auto& vc : set) {
                std::set<Hash256> parents; // one vote per message and parent
                for (const auto& e : vc.pre_prepared)
                    if (e.seq == seq && e.digest == digest && e.view >= view)
                        parents.insert(e.parent);
                for (const auto& p : parents)
                    ++vouched[p];
            }
            for (const auto& [p, count] : vouched)
                if (count >= f + 1) {
                    chosen = LogEntry{seq, digest, view, p};
                    break;
                }
            if (chosen) break;
        }
        if (!chosen) {
            if (without_p >= q) break; // nothing can have committed here: the list ends
            return std::nullopt;       // wait for more view changes
        }
        if (chosen->parent != parent) break;
        parent = chosen->digest;
        out.blocks.push_back(*chosen);
    }
    return out;
}

Result<ViewDecision> check_new_view(const NewView& nv, ReplicaId from, ReplicaId primary,
                                    const std::vector<ReplicaInfo>& replicas,
                                    const Hash256& genesis_hash,
                                    const CertificateSigners& signers) {
    if (nv.replica != from || from != primary)
        return make_error(Errc::forged_sender, "new view not from the view's primary");
    const ReplicaInfo* m = find_member(replicas, nv.replica);
    if (!m || !verify(m->key, nv.signed_digest(), nv.signature))
        return make_error(Errc::bad_signature, "new view signature");
    std::set<ReplicaId> senders;
    for (const auto& vc : nv.proofs) {
        if (vc.new_view != nv.view)
            return make_error(Errc::invalid_argument, "new view proof for another view");
        if (!senders.insert(vc.replica).second)
            return make_error(Errc::invalid_argument, "new view proofs repeat a replica");
        if (auto ok = check_view_change(vc, replicas, signers); !ok) return ok.error();
    }
    auto decision =
        decide_view(nv.proofs, static_cast<std::uint32_t>(replicas.size()), genesis_hash);
    if (!decision)
        return make_error(Errc::invalid_argument, "new view proofs do not decide the view");
    if (decision->blocks != nv.decisions)
        return make_error(Errc::invalid_argument, "new view decisions differ from its proofs");
    return std::move(decision).value();
}

} // namespace popchain::pbft
