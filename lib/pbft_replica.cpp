#include <popchain/pbft/replica.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <utility>

namespace popchain::pbft {

// ---- checkpoint certificates ----

// ---- construction ----

Result<std::unique_ptr<Replica>> Replica::create(ReplicaId id, const SigningKey& key,
                                                 const Genesis& genesis, ReplicaConfig config,
                                                 net::Transport& transport, BlockStore& store) {
    const auto n = static_cast<std::uint32_t>(genesis.replicas.size());
    if (auto ok = config.validate(n); !ok)
        return make_error(ok.error().code, "replica config: " + ok.error().detail);
    if (transport.self() != id)
        return make_error(Errc::invalid_argument, "transport is for node " +
                                                      std::to_string(transport.self()) +
                                                      ", replica is " + std::to_string(id));
    auto built = genesis.build();
    if (!built) return make_error(built.code(), "genesis: " + built.error().detail);

    State state;
    if (!store.tip_height()) {
        if (auto ok = store.append(built->block, built->delta); !ok)
            return make_error(ok.code(), "storing genesis: " + ok.error().detail);
        apply_delta(state, built->delta);
    } else {
        auto first = store.block_at(0);
        if (!first) return make_error(first.code(), "reading genesis: " + first.error().detail);
        if (first->hash() != built->block.hash())
            return make_error(Errc::invalid_argument, "the store holds another chain");
        auto loaded = store.load_state();
        if (!loaded) return make_error(loaded.code(), "loading state: " + loaded.error().detail);
        state = std::move(loaded).value();
    }

    auto link = LinkAuthenticator::create(id, key, state.replicas);
    if (!link) return make_error(link.code(), "replica set: " + link.error().detail);
    return std::unique_ptr<Replica>(new Replica(id, key, genesis.params, std::move(state), config,
                                                transport, store, std::move(link).value()));
}

Replica::Replica(ReplicaId id, const SigningKey& key, ChainParams params, State state,
                 ReplicaConfig config, net::Transport& transport, BlockStore& store,
                 LinkAuthenticator link)
    : id_(id), key_(key), params_(std::move(params)), config_(config), transport_(transport),
      store_(store), link_(std::move(link)), cache_(std::make_unique<SignatureCache>()),
      ledger_(params_, std::move(state), cache_.get()), spec_(ledger_),
      mempool_(params_.chain_id, cache_.get()), replicas_(ledger_.state().replicas) {
    low_ = ledger_.height();
    spec_height_ = ledger_.height();
}

Replica::~Replica() {
    if (batch_timer_ != 0) transport_.cancel_timer(batch_timer_);
}

ReplicaId Replica::primary() const {
    return replicas_[view_ % replicas_.size()].id;
}

const ReplicaInfo* Replica::member(ReplicaId id) const {
    for (const auto& r : replicas_)
        if (r.id == id) return &r;
    return nullptr;
}

void Replica::rebuild_speculative() {
    spec_ = ledger_;
    spec_height_ = ledger_.height();
    for (auto it = log_.find(spec_height_ + 1); it != log_.end() && it->first == spec_height_ + 1;
         ++it) {
        if (!it->second.accepted || !it->second.delta) break;
        spec_.commit(*it->second.delta);
        spec_height_ = it->first;
    }
}

// ---- sending ----

void Replica::send_to(ReplicaId to, MsgType type, const Message& m) {
    transport_.send(to, link_.seal(to, type, encode_body(m)));
}

void Replica::broadcast(MsgType type, const Message& m) {
    const Bytes body = encode_body(m);
    for (const auto& r : replicas_)
        if (r.id != id_) transport_.send(r.id, link_.seal(r.id, type, body));
}

// ---- inputs ----

Result<void> Replica::submit(const Tx& tx) {
    if (auto ok = mempool_.add(tx, ledger_.account(tx.from).nonce); !ok) return ok;
    if (!is_primary()) {
        send_to(primary(), MsgType::request, Request{tx});
        ++stats_.requests_forwarded;
    } else {
        maybe_propose();
    }
    return {};
}

void Replica::on_message(net::NodeId from, ByteView message) {
    auto env = link_.open(from, message);
    if (!env) {
        switch (env.code()) {
        case Errc::unknown_peer: ++stats_.unknown_peer; break;
        case Errc::forged_sender: ++stats_.forged_sender; break;
        case Errc::bad_mac: ++stats_.bad_mac; break;
        case Errc::invalid_argument: ++stats_.wrong_destination; break;
        default: ++stats_.malformed; break;
        }
        return;
    }
    auto msg = decode_body(env->type, env->body);
    if (!msg || !type_matches(env->type, *msg)) {
        ++stats_.malformed;
        return;
    }
    const ReplicaId sender = env->from;
    switch (env->type) {
    case MsgType::request: on_request(sender, std::get<Request>(std::move(*msg))); break;
    case MsgType::pre_prepare: on_pre_prepare(sender, std::get<PrePrepare>(std::move(*msg))); break;
    case MsgType::prepare:
    case MsgType::commit: on_vote(sender, env->type, std::get<Vote>(*msg)); break;
    case MsgType::checkpoint: on_checkpoint(sender, std::get<Checkpoint>(std::move(*msg))); break;
    default: ++stats_.unsupported; break;
    }
}

void Replica::on_request(ReplicaId, Request&& r) {
    if (auto ok = mempool_.add(r.tx, ledger_.account(r.tx.from).nonce); !ok) {
        if (ok.code() == Errc::already_known)
            ++stats_.duplicate;
        else
            ++stats_.rejected_requests;
        return;
    }
    maybe_propose();
}

void Replica::on_pre_prepare(ReplicaId from, PrePrepare&& pp) {
    if (pp.view != view_) {
        ++stats_.wrong_view;
        return;
    }
    if (from != primary()) {
        ++stats_.wrong_role;
        return;
    }
    const std::uint64_t seq = pp.seq;
    const BlockHeader& h = pp.block.header;
    if (h.height != seq || h.view != pp.view || h.proposer != from ||
        pp.block.txs.size() > config_.max_block_txs) {
        ++stats_.bad_block;
        return;
    }
    if (seq <= low_ || seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        return;
    }
    auto it = log_.find(seq);
    if (it == log_.end() && seq <= ledger_.height()) { // executed; its entry is gone
        ++stats_.duplicate;
        return;
    }
    Slot& slot = log_[seq];
    if (slot.pre_prepare || slot.rejected) {
        if (slot.pre_prepare && slot.digest == pp.block.hash())
            ++stats_.duplicate;
        else
            ++stats_.conflicting;
        return;
    }
    slot.digest = pp.block.hash();
    slot.pre_prepare = std::move(pp);
    if (seq > high()) ++stats_.held_early;
    accept_ready();
}

void Replica::on_vote(ReplicaId from, MsgType type, const Vote& v) {
    if (v.view != view_) {
        ++stats_.wrong_view;
        return;
    }
    if (type == MsgType::prepare && from == primary()) {
        ++stats_.wrong_role;
        return;
    }
    if (v.seq <= low_ || v.seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        return;
    }
    if (!log_.count(v.seq) && v.seq <= ledger_.height()) {
        ++stats_.duplicate;
        return;
    }
    Slot& slot = log_[v.seq];
    auto& votes = type == MsgType::prepare ? slot.prepares : slot.commits;
    auto [at, inserted] = votes.emplace(from, v.digest);
    if (!inserted) {
        if (at->second == v.digest)
            ++stats_.duplicate;
        else
            ++stats_.conflicting;
        return;
    }
    check_progress(v.seq);
}

void Replica::on_checkpoint(ReplicaId from, Checkpoint&& c) {
    if (c.replica != from) {
        ++stats_.forged_sender;
        return;
    }
    if (c.seq <= low_ || c.seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        return;
    }
    const ReplicaInfo* m = member(from);
    if (!m || !verify(m->key, c.signed_digest(), c.signature)) {
        ++stats_.bad_signature;
        return;
    }
    auto& at = checkpoints_[c.seq];
    if (auto it = at.find(from); it != at.end()) {
        if (it->second == c)
            ++stats_.duplicate;
        else
            ++stats_.conflicting;
        return;
    }
    const std::uint64_t seq = c.seq;
    at.emplace(from, std::move(c));
    check_stable(seq);
}

// ---- the primary ----

void Replica::maybe_propose() {
    if (!is_primary() || halted_) return;
    auto next_nonce = [this](const Address& a) { return spec_.account(a).nonce; };
    while (spec_height_ + 1 <= high()) {
        // Transactions of in-flight blocks stay in the mempool until they execute; a cheap
        // bound on how many others there are decides whether a full block may be ready.
        std::size_t in_flight = 0;
        for (auto it = log_.upper_bound(ledger_.height()); it != log_.end(); ++it)
            if (it->second.accepted) in_flight += it->second.pre_prepare->block.txs.size();
        const std::size_t others = mempool_.size() > in_flight ? mempool_.size() - in_flight : 0;
        if (others == 0) return;
        std::vector<Tx> txs;
        if (others >= config_.max_block_txs || batch_due_)
            txs = mempool_.take_ready(config_.max_block_txs, next_nonce);
        if (txs.empty() && batch_due_) { // nothing ready (nonce gaps): wait for more
            batch_due_ = false;
            return;
        }
        if (txs.size() < config_.max_block_txs && !batch_due_) {
            if (batch_timer_ == 0)
                batch_timer_ = transport_.set_timer(config_.max_batch_delay_ms, [this] {
                    batch_timer_ = 0;
                    batch_due_ = true;
                    maybe_propose();
                });
            return;
        }
        batch_due_ = false;
        propose(std::move(txs));
    }
}

void Replica::propose(std::vector<Tx> txs) {
    BuiltBlock built = spec_.build_block(txs, view_, id_, transport_.now());
    for (const auto& r : built.rejected)
        mempool_.remove(r.txid);
    if (built.block.txs.empty()) return;
    const std::uint64_t seq = built.block.header.height;
    Slot& slot = log_[seq];
    slot.digest = built.block.hash();
    slot.pre_prepare = PrePrepare{view_, seq, std::move(built.block)};
    slot.accepted = true;
    spec_.commit(built.delta);
    slot.delta = std::move(built.delta);
    spec_height_ = seq;
    ++stats_.proposed;
    if (seq > ledger_.height() + 1) ++stats_.proposed_ahead;
    broadcast(MsgType::pre_prepare, *slot.pre_prepare);
    check_progress(seq);
}

// ---- agreement ----

void Replica::accept_ready() {
    while (!halted_ && spec_height_ + 1 <= high()) {
        const std::uint64_t seq = spec_height_ + 1;
        auto it = log_.find(seq);
        if (it == log_.end() || !it->second.pre_prepare || it->second.accepted) return;
        Slot& slot = it->second;
        auto delta = spec_.execute(slot.pre_prepare->block);
        if (!delta) {
            ++stats_.bad_block;
            slot.pre_prepare.reset();
            slot.digest = Hash256{};
            slot.rejected = true;
            return;
        }
        spec_.commit(*delta);
        slot.delta = std::move(delta).value();
        slot.accepted = true;
        spec_height_ = seq;
        ++stats_.accepted;
        if (!is_primary()) {
            slot.prepares[id_] = slot.digest;
            broadcast(MsgType::prepare, Vote{view_, seq, slot.digest});
        }
        check_progress(seq);
    }
}

void Replica::check_progress(std::uint64_t seq) {
    auto it = log_.find(seq);
    if (it == log_.end() || !it->second.accepted) return;
    Slot& slot = it->second;
    const ReplicaId p = primary();
    if (!slot.prepared) {
        std::uint32_t matching = 0;
        for (const auto& [r, d] : slot.prepares)
            if (r != p && d == slot.digest) ++matching;
        if (matching + 1 < quorum(n())) return;
        slot.prepared = true;
        slot.commits[id_] = slot.digest;
        broadcast(MsgType::commit, Vote{view_, seq, slot.digest});
    }
    if (!slot.committed) {
        std::uint32_t matching = 0;
        for (const auto& [r, d] : slot.commits)
            if (d == slot.digest) ++matching;
        if (matching < quorum(n())) return;
        slot.committed = true;
        execute_ready();
    }
}

// ---- execution ----

void Replica::execute_ready() {
    bool executed = false;
    while (!halted_) {
        auto it = log_.find(ledger_.height() + 1);
        if (it == log_.end() || !it->second.committed) break;
        const Block& block = it->second.pre_prepare->block;
        const StateDelta& delta = *it->second.delta;
        if (auto ok = store_.append(block, delta); !ok) {
            ++stats_.store_errors;
            halted_ = true;
            break;
        }
        ledger_.commit(delta);
        mempool_.remove_committed(block);
        ++stats_.executed_blocks;
        stats_.executed_txs += block.txs.size();
        executed = true;
        // The callback and the checkpoint may touch the log: copy what they need first.
        const Block copy = block;
        if (on_commit_) on_commit_(copy);
        if (copy.header.height % config_.checkpoint_interval == 0) take_checkpoint(copy);
    }
    if (executed) maybe_propose();
}

// ---- checkpoints ----

void Replica::take_checkpoint(const Block& block) {
    Checkpoint c;
    c.replica = id_;
    c.seq = block.header.height;
    c.block_hash = block.hash();
    c.state_root = block.header.state_root;
    c = sign_checkpoint(std::move(c), key_);
    own_checkpoints_[c.seq] = c;
    checkpoints_[c.seq][id_] = c;
    broadcast(MsgType::checkpoint, c);
    check_stable(c.seq);
}

void Replica::check_stable(std::uint64_t seq) {
    if (seq <= low_) return;
    auto own = own_checkpoints_.find(seq);
    if (own == own_checkpoints_.end()) return; // not executed here yet
    auto at = checkpoints_.find(seq);
    if (at == checkpoints_.end()) return;
    CheckpointCertificate cert;
    std::map<std::pair<Hash256, Hash256>, std::uint32_t> tally;
    for (const auto& [r, c] : at->second) {
        ++tally[{c.block_hash, c.state_root}];
        if (c.block_hash == own->second.block_hash && c.state_root == own->second.state_root)
            cert.checkpoints.push_back(c);
    }
    if (cert.checkpoints.size() < quorum(n())) {
        for (const auto& [k, count] : tally)
            if (count >= quorum(n()) &&
                k != std::make_pair(own->second.block_hash, own->second.state_root)) {
                ++stats_.checkpoint_mismatch;
                break;
            }
        return;
    }
    low_ = seq;
    stable_cert_ = std::move(cert);
    ++stats_.checkpoints_stable;
    collect_garbage();
    accept_ready();
    maybe_propose();
}

void Replica::collect_garbage() {
    log_.erase(log_.begin(), log_.upper_bound(low_));
    checkpoints_.erase(checkpoints_.begin(), checkpoints_.upper_bound(low_));
    own_checkpoints_.erase(own_checkpoints_.begin(), own_checkpoints_.upper_bound(low_));
}

} // namespace popchain::pbft
