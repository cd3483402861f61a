#include <popchain/pbft/replica.hpp>

#include <algorithm>
#include <bit>
#include <set>
#include <string>
#include <utility>

namespace popchain::pbft {

namespace {

// A block's hash covers its header, which names its transactions only through the tx root.
bool body_matches_header(const Block& block) {
    return compute_tx_root(block.txs) == block.header.tx_root;
}

// What the store kept at a height must be a certificate of that height.
Result<CheckpointCertificate> decode_kept_certificate(const StoredCertificate& kept) {
    auto cert = decode_checkpoint_certificate(kept.data);
    if (!cert || cert->checkpoints.empty() || cert->checkpoints.front().seq != kept.height)
        return make_error(Errc::storage_corrupt, "certificate at height " +
                                                     std::to_string(kept.height) +
                                                     " does not decode");
    return cert;
}

} // namespace

// ---- construction ----

Result<std::unique_ptr<Replica>> Replica::create(ReplicaId id, const SigningKey& key,
                                                 const Genesis& genesis, ReplicaConfig config,
                                                 net::Transport& transport, BlockStore& store,
                                                 Journal* journal) {
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
        if (auto ok = store.sync(); !ok)
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

    // A replica that is not (yet) a member, e.g. one a config transaction is adding, starts
    // as a learner: it authenticates with the members, catches up by state transfer, and
    // votes once its ledger makes it a member.
    std::vector<ReplicaInfo> link_members = state.replicas;
    const bool listed = std::any_of(link_members.begin(), link_members.end(),
                                    [&](const ReplicaInfo& r) { return r.id == id; });
    if (!listed) link_members.push_back({id, key.public_key(), ""});
    auto link = LinkAuthenticator::create(id, key, link_members);
    if (!link) return make_error(link.code(), "replica set: " + link.error().detail);
    std::optional<JournalState> saved;
    if (journal) {
        auto loaded = journal->load();
        if (!loaded) return make_error(loaded.code(), "loading journal: " + loaded.error().detail);
        saved = std::move(loaded).value();
    }
    std::unique_ptr<Replica> r(new Replica(id, key, genesis.params, std::move(state), config,
                                           transport, store, std::move(link).value(),
                                           built->block.hash(), journal));
    if (auto loaded = r->load_boundary_certificates(); !loaded)
        return make_error(loaded.code(),
                          "loading membership boundary certificates: " + loaded.error().detail);
    if (saved) {
        Scope scope(*r);
        r->restore(*saved);
    }
    return r;
}

Replica::Replica(ReplicaId id, const SigningKey& key, ChainParams params, State state,
                 ReplicaConfig config, net::Transport& transport, BlockStore& store,
                 LinkAuthenticator link, Hash256 genesis_hash, Journal* journal)
    : id_(id), key_(key), params_(std::move(params)), config_(config), transport_(transport),
      store_(store), link_(std::move(link)), genesis_hash_(genesis_hash),
      cache_(std::make_unique<SignatureCache>()), ledger_(params_, std::move(state), cache_.get()),
      spec_(ledger_), mempool_(params_.chain_id, cache_.get(), {}, params_.commands),
      replicas_(ledger_.state().replicas), journal_(journal) {
    // The low watermark is the last *certified* checkpoint (low()); a restarted replica gets
    // it back from its journal, or from its peers. Blocks between it and the stored height
    // are executed but may still need this replica's votes and view-change reports.
    spec_height_ = ledger_.height();
    tick_height_ = ledger_.height();
    epochs_[ledger_.height() + 1] = replicas_;
    voting_ = member(id_) != nullptr;
    view_timeout_ = config_.request_timeout_ms;
    tick_timer_ = set_timer(config_.retransmit_ms, [this] { on_tick(); });
}

Result<void> Replica::load_boundary_certificates() {
    auto list = store_.get_meta(boundary_meta_key);
    if (!list) return list.error();
    if (!*list) return {};
    if ((*list)->size() % 8 != 0) return make_error(Errc::storage_corrupt, "malformed list");
    Reader r(**list);
    while (r.remaining() > 0) {
        const std::uint64_t height = r.u64();
        auto kept = store_.certificate_from(height);
        if (!kept) return kept.error();
        if (!*kept || (*kept)->height != height)
            continue; // its blocks were lost with it (a crash before the store synced)
        auto cert = decode_kept_certificate(**kept);
        if (!cert) return cert.error();
        boundary_certs_[height] = std::move(cert).value();
    }
    return {};
}

// Back to the promises of a previous run (the journal's state as of its last sync).
void Replica::restore(const JournalState& saved) {
    if (saved.stable_seq > 0 && saved.stable_seq <= ledger_.height()) {
        auto stored = store_.block_at(saved.stable_seq);
        if (stored && !saved.stable_certificate.checkpoints.empty() &&
            stored->hash() == saved.stable_certificate.checkpoints.front().block_hash) {
            stable_cert_ = saved.stable_certificate;
            // make_stable() kept it in the store already, unless the store was upgraded from
            // a format without certificates since: then this keeps the latest one at least.
            if (!store_.put_certificate(saved.stable_seq,
                                        encode_checkpoint_certificate(stable_cert_))) {
                ++stats_.store_errors;
                halted_ = true;
            }
        }
    }
    view_ = saved.view;
    view_active_ = !saved.in_view_change;
    for (const auto& e : saved.prepared)
        if (e.seq > low()) prepared_log_[e.seq] = e;
    for (const auto& e : saved.pre_prepared)
        if (e.seq > low()) pre_prepared_log_[{e.seq, e.digest}] = e;
    for (const auto& pp : saved.pre_prepares) {
        if (pp.seq <= low()) continue;
        const Hash256 digest = pp.block.hash();
        bodies_.emplace(digest, pp.block);
        if (pp.view != view_) continue;
        Slot& slot = log_[pp.seq];
        slot.digest = digest;
        slot.pre_prepare = pp;
    }
    for (const auto& [type, vote] : saved.own_votes) {
        if (vote.seq <= low() || vote.view != view_) continue;
        Slot& slot = log_[vote.seq];
        if (type == MsgType::prepare) {
            slot.prepares.set(id_, vote.digest);
        } else {
            slot.commits.set(id_, vote.digest);
            slot.prepared = true; // a commit is sent only once prepared
        }
    }
    for (const auto& c : saved.own_checkpoints)
        if (c.seq > low()) {
            own_checkpoints_[c.seq] = c;
            checkpoints_[c.seq][id_] = c;
        }
    if (!view_active_) {
        view_active_ = true; // start_view_change() re-enters the view change with a fresh message
        const std::uint64_t v = view_;
        view_ = v - 1;
        start_view_change(v);
        return;
    }
    accept_ready();
}

net::TimerId Replica::set_timer(Millis delay, std::function<void()> fire) {
    return transport_.set_timer(delay, [this, fire = std::move(fire)] {
        Scope scope(*this);
        fire();
    });
}

void Replica::end_batch() {
    if (--batch_depth_ == 0) flush();
}

void Replica::flush() {
    if (halted_) {
        link_out_.clear();
        outbox_.clear();
        executed_unsynced_.clear();
        return;
    }
    // What the held messages and callbacks promise is not durable after a failed sync: they
    // never leave.
    seal_link_messages();
    auto fail = [&](std::uint64_t& errors) {
        ++errors;
        halted_ = true;
        outbox_.clear();
        executed_unsynced_.clear();
    };
    auto sync_journal = [&] {
        if (!journal_ || !journal_->dirty()) return true;
        if (auto ok = journal_->sync(); !ok) {
            fail(stats_.journal_errors);
            return false;
        }
        ++stats_.journal_syncs;
        return true;
    };
    // A journal that commits with the store makes both durable at once. Otherwise the store
    // goes first: the journal may have dropped what it kept for blocks below a new stable
    // checkpoint, which only the store then holds. Replies about executed blocks and votes
    // both wait for both.
    const bool together = journal_ && journal_->commits_with(store_);
    if (together && !sync_journal()) return;
    if (auto ok = store_.sync(); !ok) {
        fail(stats_.store_errors);
        return;
    }
    // Moved out first: a callback may call back into the replica, which flushes again.
    auto durable = std::move(executed_unsynced_);
    executed_unsynced_.clear();
    if (!together) {
        for (const CommittedBlock& block : durable)
            on_commit_(block);
        durable.clear();
        if (!sync_journal()) return;
    }
    if (!durability_gate_) {
        for (const CommittedBlock& block : durable)
            on_commit_(block);
        auto out = std::move(outbox_);
        outbox_.clear();
        for (auto& [to, bytes] : out)
            transport_.send(to, std::move(bytes));
        return;
    }
    // Committed, not yet on disk: the gate runs this once it is. Messages of later batches
    // go through the gate too, so they cannot overtake these.
    auto out = std::move(outbox_);
    outbox_.clear();
    if (out.empty() && durable.empty()) return;
    durability_gate_([this, out = std::move(out), durable = std::move(durable)]() mutable {
        for (const CommittedBlock& block : durable)
            on_commit_(block);
        for (auto& [to, bytes] : out)
            transport_.send(to, std::move(bytes));
    });
}

Replica::~Replica() {
    for (net::TimerId t : {batch_timer_, tick_timer_, watch_timer_, view_timer_, fetch_timer_})
        if (t != 0) transport_.cancel_timer(t);
}

ReplicaId Replica::primary_of(std::uint64_t view) const {
    return replicas_[view % replicas_.size()].id;
}

const ReplicaInfo* Replica::member(ReplicaId id) const {
    for (const auto& r : replicas_)
        if (r.id == id) return &r;
    return nullptr;
}

const std::vector<ReplicaInfo>& Replica::set_for(std::uint64_t seq) const {
    auto it = epochs_.upper_bound(seq);
    return it == epochs_.begin() ? it->second : std::prev(it)->second;
}

bool Replica::signs_for(std::uint64_t seq) const {
    const auto& set = set_for(seq);
    return std::any_of(set.begin(), set.end(), [&](const ReplicaInfo& r) { return r.id == id_; });
}

std::uint64_t Replica::limit() const {
    return spec_boundary_ ? std::min(high(), *spec_boundary_) : high();
}

// A block that changes the replica set (a config transaction) takes effect at the next
// multiple of checkpoint_interval: nothing above that height is proposed or accepted until
// it has executed and every replica switched to the new set.
void Replica::note_spec_membership(std::uint64_t seq) {
    if (spec_boundary_ || spec_.state().replicas == replicas_) return;
    const std::uint64_t k = config_.checkpoint_interval;
    spec_boundary_ = (seq + k - 1) / k * k;
}

// After executing the boundary block: the new set agrees everything above it. The old set
// still certifies the boundary block's checkpoint (it agreed on it), so leaving members
// stay reachable until that checkpoint is stable.
void Replica::switch_membership(std::uint64_t boundary) {
    std::vector<ReplicaInfo> next = ledger_.state().replicas;
    for (const auto& r : next)
        if (r.id != id_ && !link_.is_member(r.id)) {
            // The ledger checked the key when it executed the config transaction.
            if (auto ok = link_.add_member(key_, r); !ok) ++stats_.malformed;
        }
    for (const auto& r : replicas_)
        if (std::none_of(next.begin(), next.end(),
                         [&](const ReplicaInfo& x) { return x.id == r.id; }))
            leaving_.push_back(r);
    leaving_until_ = boundary;
    replicas_ = std::move(next);
    voting_ = member(id_) != nullptr;
    epochs_[boundary + 1] = replicas_;
    spec_boundary_.reset();
    peer_view_.clear();
    ++stats_.membership_changes;
    if (batch_timer_ != 0) {
        transport_.cancel_timer(batch_timer_);
        batch_timer_ = 0;
    }
    rebuild_speculative();
}

std::uint64_t Replica::stable_certificate_seq() const {
    return stable_cert_.checkpoints.empty() ? 0 : stable_cert_.checkpoints.front().seq;
}

void Replica::rebuild_speculative() {
    ready_grew_ = true; // other next nonces, other runs
    spec_ = ledger_;
    spec_height_ = ledger_.height();
    spec_boundary_.reset();
    note_spec_membership(spec_height_);
    for (auto it = log_.find(spec_height_ + 1); it != log_.end() && it->first == spec_height_ + 1;
         ++it) {
        if (!it->second.accepted || !it->second.delta) break;
        spec_.commit(*it->second.delta);
        spec_height_ = it->first;
        note_spec_membership(spec_height_);
    }
}

// Forgets the speculative execution of every slot from `seq` up, so those blocks are
// validated again on top of whatever ends up at seq-1.
void Replica::reset_speculation_from(std::uint64_t seq) {
    for (auto it = log_.lower_bound(std::max(seq, ledger_.height() + 1)); it != log_.end(); ++it) {
        it->second.accepted = false;
        it->second.delta.reset();
    }
    rebuild_speculative();
}

// ---- sending ----

void Replica::send_to(ReplicaId to, MsgType type, const Message& m) {
    link_out_.push_back({to, type, nullptr, encode_body(m)});
}

void Replica::broadcast(MsgType type, const Message& m) {
    // The members and the leaving members, but this replica, as of now. Checking the previous
    // broadcast's list against them costs a pass over n ids; keeping the list until
    // membership code says otherwise would send to a stale set the day one place forgot to.
    std::vector<ReplicaId>& peers = broadcast_scratch_;
    peers.clear();
    for (const auto& set : {std::cref(replicas_), std::cref(leaving_)})
        for (const auto& r : set.get())
            if (r.id != id_) peers.push_back(r.id);
    if (peers.empty()) return;
    std::sort(peers.begin(), peers.end());
    peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    if (!broadcast_targets_ || *broadcast_targets_ != peers)
        broadcast_targets_ = std::make_shared<const std::vector<ReplicaId>>(peers);
    link_out_.push_back({0, type, broadcast_targets_, encode_body(m)});
}

void Replica::seal_link_messages() {
    if (link_out_.empty()) return;
    // A bundle stays well below every transport's frame limit; a bigger message (a full
    // block) goes alone.
    constexpr std::size_t max_bundle_bytes = 1u << 20;
    // Every destination, in id order; each gets its messages in the order they were sent.
    std::vector<ReplicaId> peers;
    const std::vector<ReplicaId>* last_broadcast = nullptr;
    for (const LinkMessage& m : link_out_) {
        if (!m.broadcast) {
            peers.push_back(m.to);
        } else if (m.broadcast.get() != last_broadcast) {
            peers.insert(peers.end(), m.broadcast->begin(), m.broadcast->end());
            last_broadcast = m.broadcast.get();
        }
    }
    std::sort(peers.begin(), peers.end());
    peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
    std::vector<const LinkMessage*> mine;
    std::vector<BundledMessage> bundle;
    for (const ReplicaId to : peers) {
        mine.clear();
        // Nearly every entry shares one recipient list: look `to` up once per list.
        const std::vector<ReplicaId>* looked_up = nullptr;
        bool in_list = false;
        for (const LinkMessage& m : link_out_) {
            if (m.broadcast && m.broadcast.get() != looked_up) {
                looked_up = m.broadcast.get();
                in_list = std::binary_search(looked_up->begin(), looked_up->end(), to);
            }
            if (m.broadcast ? in_list : m.to == to) mine.push_back(&m);
        }
        for (std::size_t i = 0; i < mine.size();) {
            std::size_t end = i + 1, bytes = mine[i]->body.size();
            while (config_.bundle_messages && end < mine.size() && end - i < max_bundle_messages &&
                   bytes + mine[end]->body.size() <= max_bundle_bytes)
                bytes += mine[end++]->body.size();
            if (end - i == 1) {
                outbox_.emplace_back(to, link_.seal(to, mine[i]->type, mine[i]->body));
            } else {
                bundle.clear();
                for (std::size_t k = i; k < end; ++k)
                    bundle.push_back({mine[k]->type, mine[k]->body});
                outbox_.emplace_back(to, link_.seal_bundle(to, bundle));
                ++stats_.bundles_sent;
                stats_.bundled_messages += end - i;
            }
            i = end;
        }
    }
    link_out_.clear();
}

// ---- inputs ----

Result<void> Replica::submit(const Tx& tx) {
    Scope scope(*this);
    // Members take requests only from members and clients, so a learner or a removed
    // replica could neither forward it nor propose it: accepting it would lose it silently.
    if (!voting())
        return make_error(Errc::not_member, "replica " + std::to_string(id_) +
                                                " is not in the current replica set; submit "
                                                "to a member");
    const Hash256 txid = tx.id();
    if (auto ok = check_next(tx, txid); !ok) {
        ++stats_.refused_submits;
        return ok;
    }
    return admit(tx, txid, id_, true);
}

// Only the sender's next transaction can be judged now: later nonces depend on pending
// transactions, and the mempool takes them as they come. Its signature check lands in the
// cache the mempool shares, so admitting it afterwards does not check it again.
Result<void> Replica::check_next(const Tx& tx, const Hash256& txid) const {
    if (tx.nonce != spec_.account(tx.from).nonce || mempool_.contains(txid)) return {};
    return spec_.check_tx(tx, txid);
}

// Admits a transaction to the mempool and, if `forward`, passes it on to the primary.
// Replicas may disagree on the view for a while (one is still changing views): a
// transaction new here goes on to the primary we know, so it reaches the one that proposes.
// It is passed on only when it is new here, so this cannot loop.
Result<void> Replica::admit(const Tx& tx, const Hash256& txid, net::NodeId from, bool forward) {
    if (auto ok = mempool_.add(tx, txid, ledger_.account(tx.from).nonce); !ok) return ok;
    if (!ready_grew_ && is_primary() &&
        mempool_.in_ready_run(tx.from, tx.nonce, spec_.account(tx.from).nonce))
        ready_grew_ = true;
    if (forward && !is_primary() && from != primary()) {
        send_to(primary(), MsgType::request, Request{tx});
        ++stats_.requests_forwarded;
    }
    maybe_propose();
    arm_watchdog();
    return {};
}

void Replica::on_message(net::NodeId from, ByteView message) {
    Scope scope(*this);
    if (from >= net::first_client_id) {
        on_client_message(from, message);
        return;
    }
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
    if (env->type != MsgType::bundle) {
        dispatch(env->from, env->type, env->body);
        return;
    }
    auto bundle = decode_bundle(env->body);
    if (!bundle) {
        ++stats_.malformed;
        return;
    }
    for (const BundledMessage& m : *bundle) {
        // A message early in the bundle may have ended the sender's membership.
        if (!link_.is_member(env->from)) {
            ++stats_.unknown_peer;
            return;
        }
        dispatch(env->from, m.type, m.body);
    }
}

void Replica::dispatch(ReplicaId sender, MsgType type, ByteView body) {
    auto msg = decode_body(type, body);
    if (!msg || !type_matches(type, *msg)) {
        ++stats_.malformed;
        return;
    }
    const bool transfer_only =
        type == MsgType::checkpoint || type == MsgType::fetch || type == MsgType::blocks;
    if (!voting() && !transfer_only) {
        ++stats_.wrong_role; // not a member (yet, or any more): no say in agreement
        return;
    }
    switch (type) {
    case MsgType::request: on_request(sender, std::get<Request>(std::move(*msg))); break;
    case MsgType::pre_prepare: on_pre_prepare(sender, std::get<PrePrepare>(std::move(*msg))); break;
    case MsgType::prepare:
    case MsgType::commit: on_vote(sender, type, std::get<Vote>(*msg)); break;
    case MsgType::checkpoint: on_checkpoint(sender, std::get<Checkpoint>(std::move(*msg))); break;
    case MsgType::view_change: on_view_change(sender, std::get<ViewChange>(std::move(*msg))); break;
    case MsgType::new_view: on_new_view(sender, std::get<NewView>(std::move(*msg))); break;
    case MsgType::fetch: on_fetch(sender, std::get<Fetch>(*msg)); break;
    case MsgType::blocks: on_blocks(sender, std::get<Blocks>(std::move(*msg))); break;
    case MsgType::bundle: break; // decode_body refuses it
    }
}

void Replica::on_request(ReplicaId from, Request&& r) {
    if (auto ok = admit(r.tx, r.tx.id(), from, true); !ok) {
        if (ok.code() == Errc::already_known)
            ++stats_.duplicate;
        else
            ++stats_.rejected_requests;
    }
}

// ---- clients ----

void Replica::on_client_message(net::NodeId client, ByteView frame) {
    auto submit = decode_client_submit(frame);
    if (!submit) {
        ++stats_.bad_client_frames;
        return;
    }
    ++stats_.client_requests;
    auto known = client_keys_.find(submit->client_key);
    if (known == client_keys_.end()) {
        auto key = reply_key(key_, submit->client_key, id_);
        if (!key) {
            ++stats_.bad_client_frames;
            return;
        }
        // A ring of recent client keys: one ECDH per new client, bounded memory.
        constexpr std::size_t max_client_keys = 4096;
        if (client_key_order_.size() < max_client_keys) {
            client_key_order_.push_back(submit->client_key);
        } else {
            client_keys_.erase(client_key_order_[client_key_next_]);
            client_key_order_[client_key_next_] = submit->client_key;
            client_key_next_ = (client_key_next_ + 1) % max_client_keys;
        }
        known = client_keys_.emplace(submit->client_key, *key).first;
    }
    const Hash256 mac_key = known->second;
    const Hash256 txid = submit->tx.id();
    Reply r;
    r.txid = txid;
    // The store is the reply cache: a committed transaction is answered from it, however
    // often and however late the client asks. Execution consumes each nonce once, so only
    // a nonce below its sender's committed one can be in the store: new requests skip the
    // lookup.
    if (submit->tx.nonce < ledger_.account(submit->tx.from).nonce) {
        if (auto place = store_.tx_place(txid); place) {
            r.status = ReplyStatus::committed;
            r.height = place->height;
            r.block_hash = place->block_hash;
            ++stats_.replies_from_store;
            reply(client, mac_key, r);
            return;
        }
    }
    // Not a member: it cannot get the request proposed, and a rejection from it would be a
    // vote the client should not count. The members the client also sent to answer.
    if (!voting()) {
        ++stats_.refused_submits;
        return;
    }
    // Clients send to every replica (so that every replica knows whom to answer), so the
    // primary has it too: passing it on would only multiply the traffic. If the primary
    // does not propose it, the watchdog armed here replaces the primary.
    auto admitted = check_next(submit->tx, txid);
    if (admitted)
        admitted = admit(submit->tx, txid, client, false);
    else
        ++stats_.refused_submits;
    if (!admitted && admitted.code() != Errc::already_known) {
        // Refusals by the mempool are per replica (a full mempool, a nonce this replica has
        // not seen executed yet); the client decides only on f+1 matching ones.
        r.status = ReplyStatus::rejected;
        r.code = static_cast<std::uint16_t>(admitted.code());
        reply(client, mac_key, r);
        return;
    }
    constexpr std::size_t max_waiting = 100'000;
    auto& waiters = waiting_[txid];
    if (waiting_.size() > max_waiting) {
        waiting_.erase(txid);
        return; // the client's retry finds the transaction in the store
    }
    for (const auto& w : waiters)
        if (w.client == client && w.key == mac_key) return;
    waiters.push_back(Waiter{client, mac_key});
}

void Replica::reply(net::NodeId client, const Hash256& key, Reply r) {
    r.replica = id_;
    r.view = view_;
    outbox_.emplace_back(client, encode_reply(r, key));
    ++stats_.replies_sent;
}

void Replica::answer_waiting(const Block& block, const StateDelta& delta,
                             const std::vector<Bytes>& results) {
    if (waiting_.empty()) return;
    const std::vector<Hash256> txids = block_txids(block, delta);
    const Hash256 hash = block.hash();
    // One frame per client (per MAC key) for the whole block.
    std::map<std::pair<net::NodeId, Hash256>, std::vector<Reply>> by_client;
    std::size_t command = 0;
    for (std::size_t i = 0; i < block.txs.size(); ++i) {
        const Bytes* result = nullptr;
        if (block.txs[i].kind == TxKind::command && command < results.size())
            result = &results[command++];
        auto it = waiting_.find(txids[i]);
        if (it == waiting_.end()) continue;
        for (const auto& w : it->second) {
            Reply r;
            r.replica = id_;
            r.view = view_;
            r.txid = it->first;
            r.status = ReplyStatus::committed;
            r.height = block.header.height;
            r.block_hash = hash;
            if (result && result->size() <= max_result_bytes) r.result = *result;
            by_client[{w.client, w.key}].push_back(std::move(r));
        }
        waiting_.erase(it);
    }
    for (const auto& [to, replies] : by_client) {
        for (std::size_t at = 0; at < replies.size(); at += max_replies_per_frame) {
            const std::size_t n = std::min(max_replies_per_frame, replies.size() - at);
            outbox_.emplace_back(to.first,
                                 encode_replies(std::span(replies).subspan(at, n), to.second));
        }
        stats_.replies_sent += replies.size();
    }
}

void Replica::refuse(const RejectedTx& rejected) {
    mempool_.remove(rejected.txid);
    auto it = waiting_.find(rejected.txid);
    if (it == waiting_.end()) return;
    for (const auto& w : it->second) {
        Reply r;
        r.txid = rejected.txid;
        r.status = ReplyStatus::rejected;
        r.code = static_cast<std::uint16_t>(rejected.error.code);
        reply(w.client, w.key, r);
    }
    waiting_.erase(it);
}

void Replica::refuse_unexecutable() {
    // Only against a settled state: with blocks in flight the primary is busy with them,
    // and what fails now may be what they make valid.
    if (log_.upper_bound(ledger_.height()) != log_.end()) return;
    const auto ready = mempool_.take_ready(config_.max_block_txs, committed_nonces());
    if (ready.empty()) return;
    for (const auto& r : ledger_.build_block(ready, view_, id_, transport_.now()).rejected) {
        refuse(r);
        ++stats_.refused_unexecutable;
    }
}

void Replica::on_pre_prepare(ReplicaId from, PrePrepare&& pp) {
    note_view(from, pp.view);
    if (pp.view != view_ || !view_active_) {
        if (from != primary() || !hold_early(from, MsgType::pre_prepare, pp.view, std::move(pp)))
            ++stats_.wrong_view;
        return;
    }
    if (from != primary()) {
        ++stats_.wrong_role;
        return;
    }
    const std::uint64_t seq = pp.seq;
    const BlockHeader& h = pp.block.header;
    const Hash256 digest = pp.block.hash();
    auto decided = decided_.find(seq);
    // A block re-proposed by a new view keeps the header it was first proposed with.
    const bool header_ok = decided != decided_.end() ? decided->second == digest
                                                     : h.view == pp.view && h.proposer == from;
    if (h.height != seq || !header_ok || pp.block.txs.size() > config_.max_block_txs) {
        ++stats_.bad_block;
        return;
    }
    if (seq <= low() || seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        if (seq <= low()) announce_stable(from);
        return;
    }
    auto it = log_.find(seq);
    if (it == log_.end() && seq <= ledger_.height() && decided == decided_.end()) {
        ++stats_.duplicate; // executed in this view; its entry is complete
        return;
    }
    Slot& slot = log_[seq];
    if (slot.pre_prepare || slot.rejected) {
        if (slot.pre_prepare && slot.digest == digest) {
            ++stats_.duplicate;
            // The primary repeats a pre-prepare when it is stuck on the slot.
            if (slot.committed && seq <= ledger_.height()) answer_stuck(from, seq, slot.digest);
        } else {
            ++stats_.conflicting;
        }
        return;
    }
    slot.digest = digest;
    slot.pre_prepare = std::move(pp);
    if (seq <= ledger_.height()) {
        accept_executed(seq, slot);
        return;
    }
    if (seq > high()) ++stats_.held_early;
    accept_ready();
}

void Replica::answer_stuck(ReplicaId to, std::uint64_t seq, const Hash256& digest) {
    auto [it, fresh] = answered_.emplace(to, transport_.now());
    if (!fresh && transport_.now() < it->second + config_.retransmit_ms) return;
    it->second = transport_.now();
    send_to(to, MsgType::commit, Vote{view_, seq, digest});
    ++stats_.retransmissions;
}

void Replica::on_vote(ReplicaId from, MsgType type, const Vote& v) {
    note_view(from, v.view);
    if (v.view != view_ || !view_active_) {
        if (!hold_early(from, type, v.view, v)) ++stats_.wrong_view;
        return;
    }
    if (type == MsgType::prepare && from == primary()) {
        ++stats_.wrong_role;
        return;
    }
    if (v.seq <= low() || v.seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        if (v.seq <= low()) announce_stable(from);
        return;
    }
    auto at = log_.lower_bound(v.seq);
    const bool in_log = at != log_.end() && at->first == v.seq;
    if (!in_log && v.seq <= ledger_.height()) {
        ++stats_.duplicate;
        return;
    }
    if (!in_log) at = log_.emplace_hint(at, v.seq, Slot{});
    Slot& slot = at->second;
    auto& votes = type == MsgType::prepare ? slot.prepares : slot.commits;
    votes.reserve(n());
    auto [kept, inserted] = votes.insert(from, v.digest);
    if (!inserted) {
        if (*kept != v.digest) {
            ++stats_.conflicting;
            return;
        }
        ++stats_.duplicate;
        // A repeated prepare means its sender is stuck on this slot: if it is done here,
        // answer with our commit (and, from the primary, the pre-prepare). Only prepares are
        // answered, and answers are commits, so two replicas cannot answer each other's
        // answers forever.
        if (type == MsgType::prepare && slot.committed && slot.digest == v.digest &&
            v.seq <= ledger_.height())
            answer_stuck(from, v.seq, slot.digest);
        return;
    }
    check_progress(v.seq, slot);
}

void Replica::on_checkpoint(ReplicaId from, Checkpoint&& c) {
    if (c.replica != from) {
        ++stats_.forged_sender;
        return;
    }
    // Below the low watermark but above our certificate (a restarted replica starts at its
    // stored height without one) a checkpoint is still wanted: it can certify that height.
    const std::uint64_t certified = stable_certificate_seq();
    if (c.seq <= certified || c.seq > high() + config_.watermark_window) {
        ++stats_.outside_watermarks;
        if (c.seq <= certified) announce_stable(from);
        return;
    }
    auto& at = checkpoints_[c.seq];
    if (auto it = at.find(from); it != at.end()) { // before the costly signature check
        if (it->second == c)
            ++stats_.duplicate;
        else
            ++stats_.conflicting;
        return;
    }
    const auto& signers = set_for(c.seq);
    auto m = std::find_if(signers.begin(), signers.end(),
                          [&](const ReplicaInfo& r) { return r.id == from; });
    if (m == signers.end() || !verify(m->key, c.signed_digest(), c.signature)) {
        ++stats_.bad_signature;
        if (at.empty()) checkpoints_.erase(c.seq);
        return;
    }
    const std::uint64_t seq = c.seq;
    at.emplace(from, std::move(c));
    check_stable(seq);
}

// ---- the primary ----

void Replica::maybe_propose() {
    if (!is_primary() || !view_active_ || halted_) return;
    auto next_nonce = [this](const Address& a) { return spec_.account(a).nonce; };
    while (spec_height_ + 1 <= limit() && !log_.count(spec_height_ + 1)) {
        // Transactions of in-flight blocks stay in the mempool until they execute; a cheap
        // bound on how many others there are decides whether a full block may be ready.
        std::size_t in_flight = 0;
        for (auto it = log_.upper_bound(ledger_.height()); it != log_.end(); ++it)
            if (it->second.accepted && it->second.pre_prepare)
                in_flight += it->second.pre_prepare->block.txs.size();
        const std::size_t others = mempool_.size() > in_flight ? mempool_.size() - in_flight : 0;
        if (others == 0) return;
        std::vector<Tx> txs;
        if ((others >= config_.max_block_txs && ready_grew_) || batch_due_)
            txs = mempool_.take_ready(config_.max_block_txs, next_nonce);
        if (txs.empty() && batch_due_) { // nothing ready (nonce gaps): wait for more
            batch_due_ = false;
            return;
        }
        if (txs.size() < config_.max_block_txs && !batch_due_) {
            // Too few are ready (too few pending, or nonce gaps hold some back): look again
            // only once an arrival joins a sender's ready run, or when the batch is due.
            ready_grew_ = false;
            if (batch_timer_ == 0)
                batch_timer_ = set_timer(config_.max_batch_delay_ms, [this] {
                    batch_timer_ = 0;
                    batch_due_ = true;
                    maybe_propose();
                });
            return;
        }
        batch_due_ = false;
        ready_grew_ = true; // what the block leaves may fill the next one
        propose(std::move(txs));
    }
}

void Replica::propose(std::vector<Tx> txs) {
    BuiltBlock built = spec_.build_block(txs, view_, id_, transport_.now());
    for (const auto& r : built.rejected)
        refuse(r);
    if (built.block.txs.empty()) return;
    const std::uint64_t seq = built.block.header.height;
    Slot& slot = log_[seq];
    slot.digest = built.block.hash();
    slot.pre_prepare = PrePrepare{view_, seq, std::move(built.block)};
    slot.accepted = true;
    spec_.commit(built.delta);
    slot.delta = std::move(built.delta);
    spec_height_ = seq;
    note_spec_membership(seq);
    record_pre_prepared(seq, slot);
    ++stats_.proposed;
    if (seq > ledger_.height() + 1) ++stats_.proposed_ahead;
    broadcast(MsgType::pre_prepare, *slot.pre_prepare);
    check_progress(seq);
}

// ---- agreement ----

void Replica::record_pre_prepared(std::uint64_t seq, Slot& slot) {
    slot.accepted_at = transport_.now();
    const Block& block = slot.pre_prepare->block;
    const LogEntry entry{seq, slot.digest, view_, block.header.prev_hash};
    pre_prepared_log_[{seq, slot.digest}] = entry;
    bodies_.emplace(slot.digest, block);
    if (journal_) {
        journal_->put_pre_prepare(*slot.pre_prepare);
        journal_->put_pre_prepared(entry);
    }
}

void Replica::accept_ready() {
    while (!halted_ && view_active_ && voting() && spec_height_ + 1 <= limit()) {
        const std::uint64_t seq = spec_height_ + 1;
        auto it = log_.find(seq);
        if (it == log_.end() || !it->second.pre_prepare || it->second.accepted) break;
        Slot& slot = it->second;
        auto delta = spec_.execute(slot.pre_prepare->block);
        if (!delta) {
            ++stats_.bad_block;
            slot.pre_prepare.reset();
            slot.digest = Hash256{};
            slot.rejected = true;
            break;
        }
        spec_.commit(*delta);
        slot.delta = std::move(delta).value();
        slot.accepted = true;
        spec_height_ = seq;
        note_spec_membership(seq);
        ++stats_.accepted;
        record_pre_prepared(seq, slot);
        if (!is_primary() && !slot.prepares.contains(id_)) send_prepare(seq, slot);
        check_progress(seq);
    }
    maybe_propose();
}

// A block this replica executed before, re-proposed in a new view: it is agreed again (so
// that replicas which had not executed it can), but not executed again.
void Replica::accept_executed(std::uint64_t seq, Slot& slot) {
    auto stored = store_.block_at(seq);
    if (!stored || stored->hash() != slot.digest) {
        ++stats_.conflicting; // a view cannot re-propose another block at an executed height
        slot.pre_prepare.reset();
        slot.rejected = true;
        return;
    }
    slot.accepted = true;
    record_pre_prepared(seq, slot);
    if (!is_primary() && !slot.prepares.contains(id_)) send_prepare(seq, slot);
    check_progress(seq);
}

void Replica::send_prepare(std::uint64_t seq, Slot& slot) {
    slot.prepares.reserve(n());
    slot.prepares.set(id_, slot.digest);
    const Vote prepare{view_, seq, slot.digest};
    if (journal_) journal_->put_vote(MsgType::prepare, prepare);
    broadcast(MsgType::prepare, prepare);
}

void Replica::check_progress(std::uint64_t seq) {
    if (auto it = log_.find(seq); it != log_.end()) check_progress(seq, it->second);
}

void Replica::check_progress(std::uint64_t seq, Slot& slot) {
    if (!slot.accepted) return;
    const ReplicaId p = primary();
    const std::size_t q = quorum(n());
    if (!slot.prepared) {
        // Counting is O(n) per vote, O(n^2) per slot: skip it while no quorum is possible.
        if (slot.prepares.size() + 1 < q && slot.commits.size() < q) return;
        const std::uint32_t matching = slot.prepares.count(slot.digest, p);
        // A quorum of commits from others is a stronger proof than a quorum of prepares:
        // each honest committer prepared this digest, so it is the slot's decision. Without
        // this, a replica whose prepares were lost would wait for prepares its peers, long
        // done with the slot, never send again (its retransmissions skip replicas it holds
        // a commit from), and the slot could stay unexecuted here for good.
        const std::uint32_t committed_by_others = slot.commits.count(slot.digest, id_);
        if (matching + 1 < q && committed_by_others < q) return;
        slot.prepared = true;
        const LogEntry entry{seq, slot.digest, view_, slot.pre_prepare->block.header.prev_hash};
        prepared_log_[seq] = entry;
        slot.commits.reserve(n());
        slot.commits.set(id_, slot.digest);
        const Vote commit{view_, seq, slot.digest};
        if (journal_) {
            journal_->put_prepared(entry);
            journal_->put_vote(MsgType::commit, commit);
        }
        broadcast(MsgType::commit, commit);
    }
    if (!slot.committed) {
        if (slot.commits.size() < q) return;
        if (slot.commits.count(slot.digest) < q) return;
        slot.committed = true;
        execute_ready();
    }
}

// ---- execution ----

void Replica::execute_ready() {
    bool progressed = false;
    while (!halted_) {
        auto it = log_.find(ledger_.height() + 1);
        if (it == log_.end() || !it->second.committed || !it->second.delta) break;
        // By reference: executing a block erases log entries only through the checkpoint
        // it takes last, after its last use of the block.
        executed(it->second.pre_prepare->block, *it->second.delta);
        progressed = true;
    }
    if (!progressed) return;
    // The primary's last block in flight has executed: with nothing left in the pipeline,
    // holding the pending transactions until the batch is due only keeps every replica idle.
    // (Arrivals while blocks are in flight still wait for a full block or the delay.)
    if (is_primary() && view_active_ && spec_height_ == ledger_.height() && batch_timer_ != 0) {
        transport_.cancel_timer(batch_timer_);
        batch_timer_ = 0;
        batch_due_ = true;
    }
    maybe_propose();
}

// Stores and commits one block (agreed, or fetched and checked), then takes its checkpoint.
void Replica::executed(const Block& block, const StateDelta& delta) {
    if (auto ok = store_.append(block, delta); !ok) {
        ++stats_.store_errors;
        halted_ = true;
        return;
    }
    ledger_.commit(delta);
    if (spec_height_ < ledger_.height()) rebuild_speculative();
    mempool_.remove_committed(block);
    ++stats_.executed_blocks;
    stats_.executed_txs += block.txs.size();
    view_timeout_ = config_.request_timeout_ms; // progress: the view works
    executed_at_ = transport_.now();
    std::vector<Bytes> results;
    if (app_) results = app_->execute(block);
    answer_waiting(block, delta, results);
    if (on_commit_)
        executed_unsynced_.push_back(
            CommittedBlock{block.header.height, delta.block_hash, block_txids(block, delta)});
    const bool boundary = block.header.height % config_.checkpoint_interval == 0;
    if (boundary && ledger_.state().replicas != replicas_) switch_membership(block.header.height);
    if (boundary) take_checkpoint(block);
}

Result<void> Replica::set_application(Application* app) {
    if (!app) {
        app_ = nullptr;
        return {};
    }
    if (app->height() > ledger_.height())
        return make_error(Errc::invalid_argument,
                          "the application is at height " + std::to_string(app->height()) +
                              ", above the store's " + std::to_string(ledger_.height()));
    for (std::uint64_t h = app->height() + 1; h <= ledger_.height(); ++h) {
        auto block = store_.block_at(h);
        if (!block)
            return make_error(block.code(), "replaying block " + std::to_string(h) +
                                                " to the application: " + block.error().detail);
        app->execute(*block);
    }
    app_ = app;
    return {};
}

std::optional<CommitProof> Replica::commit_proof(const Block& block,
                                                 std::size_t max_headers) const {
    const std::uint64_t height = block.header.height;
    auto stored = store_.certificate_from(height);
    if (!stored || !*stored) return std::nullopt;
    const std::uint64_t checkpoint = (*stored)->height;
    if (checkpoint - height > max_headers) return std::nullopt;
    // A block changing the set must be proven by a certificate of the set that agreed on it:
    // one at or below the boundary where the change takes effect.
    const bool changes_set = std::any_of(block.txs.begin(), block.txs.end(),
                                         [](const Tx& tx) { return tx.kind == TxKind::config; });
    const std::uint64_t interval = config_.checkpoint_interval;
    if (changes_set && checkpoint > (height + interval - 1) / interval * interval)
        return std::nullopt;
    auto certificate = decode_kept_certificate(**stored);
    if (!certificate) return std::nullopt;
    CommitProof proof;
    proof.certificate = std::move(certificate).value();
    for (std::uint64_t h = height + 1; h <= checkpoint; ++h) {
        auto b = store_.block_at(h);
        if (!b) return std::nullopt;
        proof.headers.push_back(b->header);
    }
    return proof;
}

// ---- checkpoints ----

void Replica::take_checkpoint(const Block& block) {
    if (own_checkpoints_.count(block.header.height) ||
        block.header.height <= stable_certificate_seq() || !signs_for(block.header.height))
        return;
    Checkpoint c;
    c.replica = id_;
    c.seq = block.header.height;
    c.block_hash = block.hash();
    c.state_root = block.header.state_root;
    c = sign_checkpoint(std::move(c), key_);
    own_checkpoints_[c.seq] = c;
    checkpoints_[c.seq][id_] = c;
    if (journal_) journal_->put_checkpoint(c);
    broadcast(MsgType::checkpoint, c);
    check_stable(c.seq);
}

void Replica::check_stable(std::uint64_t seq) {
    if (seq <= stable_certificate_seq()) return;
    auto at = checkpoints_.find(seq);
    if (at == checkpoints_.end()) return;
    std::map<std::pair<Hash256, Hash256>, CheckpointCertificate> by_state;
    for (const auto& [r, c] : at->second)
        by_state[{c.block_hash, c.state_root}].checkpoints.push_back(c);
    auto own = own_checkpoints_.find(seq);
    const auto needed = quorum(static_cast<std::uint32_t>(set_for(seq).size()));
    for (auto& [state, cert] : by_state) {
        if (cert.checkpoints.size() < needed) continue;
        if (own == own_checkpoints_.end()) {
            // A quorum is past a height we have not executed: we are behind.
            consider_target(cert, false);
        } else if (state == std::make_pair(own->second.block_hash, own->second.state_root)) {
            make_stable(std::move(cert));
        } else {
            ++stats_.checkpoint_mismatch;
        }
        return;
    }
}

void Replica::make_stable(CheckpointCertificate cert) {
    const std::uint64_t seq = cert.checkpoints.front().seq;
    if (seq <= stable_certificate_seq()) return;
    const bool boundary = epochs_.count(seq + 1) && seq > 0;
    if (boundary) boundary_certs_[seq] = cert;
    stable_cert_ = std::move(cert);
    // Kept beside the blocks for good, so every block below stays provable (commit_proof).
    store_certificate(stable_cert_);
    if (boundary && !halted_) {
        // Which kept certificates are boundaries, so a restarted replica can still lead one
        // that is behind a membership change across it (on_fetch). Rare: one write per change.
        Writer w;
        for (const auto& [height, _] : boundary_certs_)
            w.u64(height);
        if (!store_.put_meta(boundary_meta_key, w.take())) {
            ++stats_.store_errors;
            halted_ = true;
        }
    }
    if (!leaving_.empty() && low() >= leaving_until_) {
        for (const auto& r : leaving_)
            if (!member(r.id)) link_.remove_member(r.id);
        leaving_.clear();
    }
    if (journal_) journal_->set_stable(seq, stable_cert_);
    ++stats_.checkpoints_stable;
    if (target_ && target_->checkpoints.front().seq <= low()) {
        target_.reset(); // reached without the transfer: drop it
        fetching_ = false;
        fetched_.clear();
        fetched_certificates_.clear();
        if (fetch_timer_ != 0) transport_.cancel_timer(fetch_timer_);
        fetch_timer_ = 0;
    }
    collect_garbage();
    accept_ready();
}

// The store cannot keep a certificate only if it fails, and then it has lost blocks too.
bool Replica::store_certificate(const CheckpointCertificate& cert) {
    if (store_.put_certificate(cert.checkpoints.front().seq, encode_checkpoint_certificate(cert)))
        return true;
    ++stats_.store_errors;
    halted_ = true;
    return false;
}

void Replica::collect_garbage() {
    log_.erase(log_.begin(), log_.upper_bound(low()));
    checkpoints_.erase(checkpoints_.begin(), checkpoints_.upper_bound(low()));
    own_checkpoints_.erase(own_checkpoints_.begin(), own_checkpoints_.upper_bound(low()));
    prepared_log_.erase(prepared_log_.begin(), prepared_log_.upper_bound(low()));
    pre_prepared_log_.erase(pre_prepared_log_.begin(),
                            pre_prepared_log_.lower_bound({low() + 1, Hash256{}}));
    for (auto it = bodies_.begin(); it != bodies_.end();)
        it = it->second.header.height <= low() ? bodies_.erase(it) : std::next(it);
    wanted_.erase(wanted_.begin(), wanted_.upper_bound(low()));
    // A transaction that left the mempool without committing here (evicted, or its nonce
    // went to another) will not be answered on commit; its client retries and is answered
    // from the store or refused.
    std::erase_if(waiting_, [this](const auto& w) { return !mempool_.contains(w.first); });
}

// ---- timers: retransmission, idle checkpoints, the view-change watchdog ----

void Replica::on_tick() {
    tick_timer_ = set_timer(config_.retransmit_ms, [this] { on_tick(); });
    if (halted_) return;
    ++ticks_;
    const bool progressed = ledger_.height() != tick_height_;
    tick_height_ = ledger_.height();
    stalled_ticks_ = progressed ? 0 : stalled_ticks_ + 1;
    if (target_ && !fetching_ && (!progressed || !view_active_)) start_fetch();
    if (!progressed && stalled_ticks_ % forward_stall_ticks() == 0) forward_pending_requests();
    // Ask a peer now and then whether we are behind: one that has a stable checkpoint above
    // our height answers with its certificate (a replica that was down or cut off has no
    // other way to learn it while the others are idle), and with the blocks above our
    // height that it executed, which f+1 such answers prove committed (the last blocks of
    // a burst may have no certificate yet, and too few replicas to make one).
    // Only after several quiet ticks: under load a replica often ends a tick without a new
    // block, and the peer's answer would carry whole blocks it is about to execute anyway.
    if (stalled_ticks_ >= 5 && stalled_ticks_ % 5 == 0 && !fetching_ && n() > 1) {
        const ReplicaId peer = replicas_[(ticks_ / 5 + id_) % n()].id;
        constexpr std::uint64_t asked_blocks = 4;
        if (peer != id_)
            send_to(peer, MsgType::fetch,
                    Fetch{ledger_.height() + 1, ledger_.height() + asked_blocks});
    }
    if (!view_active_) {
        auto own = view_changes_.find(view_);
        if (own != view_changes_.end() && own->second.count(id_)) {
            broadcast(MsgType::view_change, own->second.at(id_));
            ++stats_.retransmissions;
        }
        if (primary() == id_) try_new_view(true);
        return;
    }
    if (progressed) return;
    // A slot that waits is usually only slow (a full block still being checked, a busy
    // peer), not lost: repeat at stalled ticks 1, 2, 4, 8 and then every 8, so a slow block
    // is not re-sent several times while it commits.
    if (std::has_single_bit(stalled_ticks_) || stalled_ticks_ % 8 == 0) {
        retransmit();
        request_missing_bodies();
    }
    // Idle with blocks above the last checkpoint: certify the tip, so a quiet chain's last
    // blocks get a certificate and laggards can fetch them.
    const bool idle = log_.upper_bound(ledger_.height()) == log_.end() && !has_work();
    if (idle && ledger_.height() > stable_certificate_seq()) {
        if (auto tip = store_.block_at(ledger_.height())) take_checkpoint(*tip);
    }
    // Our newest checkpoint, to the peers whose matching message we lack.
    if (!own_checkpoints_.empty()) {
        const Checkpoint& c = own_checkpoints_.rbegin()->second;
        const auto& have = checkpoints_[c.seq];
        for (const auto& r : replicas_)
            if (r.id != id_ && !have.count(r.id)) {
                send_to(r.id, MsgType::checkpoint, c);
                ++stats_.retransmissions;
            }
    }
    arm_watchdog();
}

void Replica::retransmit() {
    // A block is re-sent to a peer only when it looks lost, not merely slow: nothing has
    // executed here for a while and the block is at least that old. A full block takes a
    // backup longer to check than a tick, and a slow link takes longer than a tick to carry
    // it, so re-sending on every quiet tick sent each block to each backup two or three
    // times more: the primary's upload, and the backups' decoding, for nothing. (A peer
    // that lacks a block the others committed fetches it from them; only a block the
    // quorum needs that peer for stalls execution here.)
    const Millis stall = static_cast<Millis>(body_stall_ticks) * config_.retransmit_ms;
    const bool long_stall = stalled_ticks_ >= body_stall_ticks;
    std::size_t bodies_sent = 0;
    for (auto it = log_.upper_bound(ledger_.height()); it != log_.end(); ++it) {
        const std::uint64_t seq = it->first;
        Slot& slot = it->second;
        if (!slot.accepted) continue;
        const bool send_body = is_primary() && bodies_sent < 4; // the lowest slots first
        if (send_body) ++bodies_sent;
        const bool old = long_stall && transport_.now() >= slot.accepted_at + stall;
        for (const auto& r : replicas_) {
            if (r.id == id_ || slot.commits.contains(r.id)) continue;
            // A peer that prepared this slot holds its block: only its votes may be missing.
            if (send_body && old && !slot.prepares.contains(r.id)) {
                send_to(r.id, MsgType::pre_prepare, *slot.pre_prepare);
                ++stats_.bodies_resent;
            }
            if (slot.prepares.contains(id_))
                send_to(r.id, MsgType::prepare, Vote{view_, seq, slot.digest});
            if (slot.prepared) send_to(r.id, MsgType::commit, Vote{view_, seq, slot.digest});
            ++stats_.retransmissions;
        }
    }
}

// The lowest unexecuted slot may lack its block, or hold another version of it (an
// equivocating primary): if f+1 replicas committed (or, lacking one, prepared) a digest,
// one of them is honest and that digest is the block to get.
void Replica::request_missing_bodies() {
    const std::uint64_t seq = ledger_.height() + 1;
    auto it = log_.find(seq);
    if (it == log_.end()) return;
    Slot& slot = it->second;
    auto tally = [](const VoteSet& votes) {
        std::map<Hash256, std::vector<ReplicaId>> by_digest;
        votes.for_each([&](ReplicaId r, const Hash256& d) { by_digest[d].push_back(r); });
        return by_digest;
    };
    auto find = [&](const std::map<Hash256, std::vector<ReplicaId>>& votes,
                    bool replace) -> std::pair<Hash256, std::vector<ReplicaId>> {
        for (const auto& [d, voters] : votes)
            if (voters.size() >= f() + 1 && (replace ? d != slot.digest : true)) return {d, voters};
        return {};
    };
    auto [digest, voters] = find(tally(slot.commits), slot.pre_prepare.has_value());
    if (voters.empty() && !slot.pre_prepare)
        std::tie(digest, voters) = find(tally(slot.prepares), false);
    if (voters.empty()) return;
    wanted_[seq] = digest;
    voters.erase(std::remove(voters.begin(), voters.end(), id_), voters.end());
    if (voters.empty()) return;
    send_to(voters[ticks_ % voters.size()], MsgType::fetch, Fetch{seq, seq});
}

bool Replica::has_work() const {
    if (log_.upper_bound(ledger_.height()) != log_.end()) return true;
    if (mempool_.size() == 0) return false;
    return !mempool_.take_ready(1, committed_nonces()).empty();
}

void Replica::arm_watchdog(net::Millis delay) {
    if (watch_timer_ != 0 || !view_active_ || halted_ || !has_work()) return;
    watch_height_ = ledger_.height();
    const std::uint64_t view = view_;
    watch_timer_ = set_timer(delay ? delay : view_timeout_, [this, view] {
        watch_timer_ = 0;
        if (!view_active_ || view_ != view) return;
        if (ledger_.height() > watch_height_) {
            // The timeout counts from the last executed block, not from this check: a
            // primary that dies just after a block executed is suspected one timeout later,
            // not up to two.
            const net::Millis since = transport_.now() - executed_at_;
            arm_watchdog(since < view_timeout_ ? view_timeout_ - since : view_timeout_);
            return;
        }
        if (!has_work()) {
            arm_watchdog();
            return;
        }
        if (target_) { // we are behind, not the primary: catch up first
            if (!fetching_) start_fetch();
            arm_watchdog();
            return;
        }
        // A transaction every mempool took (well formed, signed, the sender's next nonce)
        // can still fail when executed, an overdraft say. The primary drops it when it
        // builds; a backup that kept it must not take the primary's silence for censorship:
        // every honest backup refuses it the same way, from the same committed state.
        refuse_unexecutable();
        if (!has_work()) {
            arm_watchdog();
            return;
        }
        // This view made no progress: the next one gets longer, so a slow but honest
        // cluster (many replicas, a loaded machine) stops replacing primaries faster than
        // they can commit.
        lengthen_view_timeout();
        start_view_change(view_ + 1);
    });
}

void Replica::announce_stable(ReplicaId to) {
    if (stable_cert_.checkpoints.empty()) return;
    auto [it, fresh] = announced_.emplace(to, transport_.now());
    if (!fresh && transport_.now() < it->second + config_.retransmit_ms) return;
    it->second = transport_.now();
    Blocks announcement;
    announcement.certificate = stable_cert_;
    send_to(to, MsgType::blocks, announcement);
}

// f+1 replicas using views above ours include an honest one: the cluster moved on.
void Replica::note_view(ReplicaId from, std::uint64_t view) {
    if (view <= view_) return;
    auto& seen = peer_view_[from];
    seen = std::max(seen, view);
    std::vector<std::uint64_t> above;
    for (const auto& [r, v] : peer_view_)
        if (v > view_) above.push_back(v);
    if (above.size() < f() + 1) return;
    std::sort(above.begin(), above.end(), std::greater<>());
    start_view_change(above[f()]);
}

// ---- view change ----

// Between views: nothing of the old view's batching, watchdog or view-change timing carries
// over, and the next primary looks at its mempool afresh.
void Replica::leave_view_timers() {
    for (net::TimerId* t : {&batch_timer_, &watch_timer_, &view_timer_})
        if (*t != 0) {
            transport_.cancel_timer(*t);
            *t = 0;
        }
    batch_due_ = false;
    ready_grew_ = true;
}

// A view that ends without an executed block doubles the timeout of the next (up to the
// configured maximum); an executed block resets it (executed()).
void Replica::lengthen_view_timeout() {
    view_timeout_ = std::min(view_timeout_ * 2, config_.max_view_change_timeout_ms);
}

// Keeps a message of the view we are changing to, for install_view; false if it is of
// another view, or the hold is full. The hold is bounded like the log it will join: one
// window of pre-prepares (blocks can be large) and two votes per replica and slot.
bool Replica::hold_early(ReplicaId from, MsgType type, std::uint64_t view, Message message) {
    if (view_active_ || view != view_) return false;
    const bool block = type == MsgType::pre_prepare;
    const std::size_t window = config_.watermark_window;
    if (block ? early_pre_prepares_ >= window
              : early_.size() - early_pre_prepares_ >= window * 2 * std::size_t{n()})
        return false;
    early_.push_back(EarlyMessage{from, type, std::move(message)});
    if (block) ++early_pre_prepares_;
    return true;
}

void Replica::start_view_change(std::uint64_t view) {
    if (view < view_ || (view == view_ && view_active_)) return;
    if (view != view_) {
        ++stats_.view_changes;
        early_.clear();
        early_pre_prepares_ = 0;
    }
    view_ = view;
    view_active_ = false;
    if (journal_) journal_->set_view(view, true);
    decided_.clear();
    new_view_.reset();
    leave_view_timers();

    ViewChange vc;
    vc.replica = id_;
    vc.new_view = view;
    vc.stable_seq = stable_certificate_seq();
    vc.stable_certificate = stable_cert_;
    // An executed block committed, so it prepared: if its P entry was lost (a restart
    // without a journal), report it from the store, with the view it was proposed in. An
    // older view than the true one is safe: no other block can have prepared at that height
    // in any later view.
    auto prepared = prepared_log_;
    auto pre_prepared = pre_prepared_log_;
    for (std::uint64_t seq = vc.stable_seq + 1;
         seq <= ledger_.height() && seq <= vc.stable_seq + config_.watermark_window; ++seq) {
        if (prepared.count(seq)) continue;
        auto block = store_.block_at(seq);
        if (!block) break;
        const LogEntry e{seq, block->hash(), block->header.view, block->header.prev_hash};
        prepared[seq] = e;
        auto& q = pre_prepared[{seq, e.digest}];
        if (q.view < e.view || q.seq == 0) q = e;
    }
    for (const auto& [seq, e] : prepared)
        if (seq > vc.stable_seq) vc.prepared.push_back(e);
    for (const auto& [key, e] : pre_prepared)
        if (key.first > vc.stable_seq) vc.pre_prepared.push_back(e);
    vc = sign_view_change(std::move(vc), key_);
    view_changes_.erase(view_changes_.begin(), view_changes_.lower_bound(view));
    view_changes_[view][id_] = vc;
    broadcast(MsgType::view_change, vc);

    view_timer_ = set_timer(view_timeout_, [this, view] {
        view_timer_ = 0;
        if (view_active_ || view_ != view) return;
        // Move on only if a quorum wants this view and its primary failed to start it;
        // a replica that alone suspects the primary waits (it may just be cut off).
        if (view_changes_[view].size() >= quorum(n())) {
            lengthen_view_timeout();
            start_view_change(view + 1);
        } else {
            start_view_change(view); // re-arms the timer; the message is re-sent by ticks
        }
    });
    if (primary() == id_) try_new_view();
}

void Replica::on_view_change(ReplicaId from, ViewChange&& vc) {
    if (vc.replica != from) {
        ++stats_.forged_sender;
        return;
    }
    if (vc.new_view < view_ || (vc.new_view == view_ && view_active_)) {
        ++stats_.wrong_view;
        // A straggler still asking for a view we are in lacks its new-view message.
        if (vc.new_view == view_ && new_view_) send_to(from, MsgType::new_view, *new_view_);
        return;
    }
    if (auto ok = check_view_change(vc, replicas_, signers_of()); !ok) {
        ++stats_.bad_view_change;
        return;
    }
    auto& at = view_changes_[vc.new_view];
    if (auto it = at.find(from); it != at.end()) {
        if (it->second == vc)
            ++stats_.duplicate;
        else
            it->second = std::move(vc); // a re-sent view change carries a newer log
        if (primary() == id_ && !view_active_) try_new_view();
        return;
    }
    const std::uint64_t view = vc.new_view;
    // Keep one view change per replica (its highest view), so a faulty replica cannot fill
    // memory with view changes for many future views.
    for (auto it = view_changes_.begin(); it != view_changes_.end();) {
        if (it->first != view && it->first > view_) {
            auto mine = it->second.find(from);
            if (mine != it->second.end()) {
                if (it->first > view) {
                    ++stats_.wrong_view; // it already asked for a higher view
                    return;
                }
                it->second.erase(mine);
            }
        }
        it = it->second.empty() ? view_changes_.erase(it) : std::next(it);
    }
    auto& slot = view_changes_[view];
    slot.emplace(from, std::move(vc));
    if (view > view_) {
        std::set<ReplicaId> ahead;
        for (auto it = view_changes_.upper_bound(view_); it != view_changes_.end(); ++it)
            for (const auto& [r, m] : it->second)
                ahead.insert(r);
        if (ahead.size() >= f() + 1) start_view_change(view_changes_.upper_bound(view_)->first);
        return;
    }
    if (primary() == id_ && !view_active_) try_new_view();
}

void Replica::try_new_view(bool ask_again) {
    if (view_active_ || primary() != id_) return;
    std::vector<ViewChange> set;
    for (const auto& [r, vc] : view_changes_[view_])
        set.push_back(vc);
    auto decision = decide_view(set, n(), genesis_hash_);
    if (!decision) return;
    if (decision->checkpoint_seq > ledger_.height()) {
        consider_target(decision->checkpoint, true);
        return; // propose once caught up
    }
    bool missing = false;
    for (const auto& e : decision->blocks) {
        if (e.seq <= ledger_.height() || bodies_.count(e.digest)) continue;
        missing = true;
        const bool asked = wanted_[e.seq] == e.digest;
        if (asked && !ask_again) continue;
        wanted_[e.seq] = e.digest;
        std::vector<ReplicaId> holders; // those that pre-prepared it
        for (const auto& vc : set)
            for (const auto& q : vc.pre_prepared)
                if (q.seq == e.seq && q.digest == e.digest && vc.replica != id_)
                    holders.push_back(vc.replica);
        if (holders.empty()) continue;
        // First ask them all; then, while the view waits (a reply can be lost, or dropped
        // by a full send queue), one more of them on every tick.
        if (!asked) {
            for (ReplicaId r : holders)
                send_to(r, MsgType::fetch, Fetch{e.seq, e.seq});
        } else {
            send_to(holders[ticks_ % holders.size()], MsgType::fetch, Fetch{e.seq, e.seq});
            ++stats_.retransmissions;
        }
    }
    if (missing) return;
    NewView nv;
    nv.replica = id_;
    nv.view = view_;
    nv.proofs = std::move(set);
    nv.decisions = decision->blocks;
    nv = sign_new_view(std::move(nv), key_);
    broadcast(MsgType::new_view, nv);
    install_view(nv, *decision);
}

void Replica::on_new_view(ReplicaId from, NewView&& nv) {
    if (nv.view < view_ || (nv.view == view_ && view_active_)) {
        ++stats_.wrong_view;
        return;
    }
    auto decision =
        check_new_view(nv, from, primary_of(nv.view), replicas_, genesis_hash_, signers_of());
    if (!decision) {
        ++stats_.bad_view_change;
        return;
    }
    install_view(nv, *decision);
}

void Replica::install_view(const NewView& nv, const ViewDecision& decision) {
    leave_view_timers();
    view_ = nv.view;
    view_active_ = true;
    if (journal_) journal_->set_view(view_, false);
    new_view_ = nv;
    ++stats_.new_views;
    view_changes_.erase(view_changes_.begin(), view_changes_.upper_bound(view_));
    for (auto it = peer_view_.begin(); it != peer_view_.end();)
        it = it->second <= view_ ? peer_view_.erase(it) : std::next(it);

    const std::uint64_t h = decision.checkpoint_seq;
    if (h > low()) {
        consider_target(decision.checkpoint, true);
    }
    // The old view's slots are void; what must survive is in the decision.
    log_.erase(log_.upper_bound(low()), log_.end());
    decided_.clear();
    for (const auto& e : decision.blocks)
        if (e.seq > low()) decided_[e.seq] = e.digest;
    rebuild_speculative();

    if (is_primary()) {
        for (const auto& [seq, digest] : decided_) {
            Block body;
            if (auto b = bodies_.find(digest); b != bodies_.end()) {
                body = b->second;
            } else if (auto stored = store_.block_at(seq); stored && stored->hash() == digest) {
                body = std::move(stored).value();
            } else {
                continue; // cannot happen: try_new_view waited for every body
            }
            Slot& slot = log_[seq];
            slot.digest = digest;
            slot.pre_prepare = PrePrepare{view_, seq, std::move(body)};
            broadcast(MsgType::pre_prepare, *slot.pre_prepare);
            if (seq <= ledger_.height()) accept_executed(seq, slot);
        }
        accept_ready();
    } else {
        forward_pending_requests();
    }
    std::vector<EarlyMessage> early = std::exchange(early_, {});
    early_pre_prepares_ = 0;
    for (EarlyMessage& e : early) {
        if (e.type == MsgType::pre_prepare)
            on_pre_prepare(e.from, std::get<PrePrepare>(std::move(e.message)));
        else
            on_vote(e.from, e.type, std::get<Vote>(e.message));
    }
    arm_watchdog();
}

// Requests we hold but cannot see execute go to every replica, once each: if the primary
// is gone, a replica may hold only some of a sender's nonces and see none of them ready;
// pooled, they become ready everywhere, every replica's timer runs, and the view changes.
// Ready ones also go to the primary again, in case our first forward was lost.
void Replica::forward_pending_requests() {
    for (auto it = relayed_.begin(); it != relayed_.end();)
        it = mempool_.contains(*it) ? std::next(it) : relayed_.erase(it);
    for (Tx& tx : mempool_.oldest(config_.max_block_txs)) {
        if (!relayed_.insert(tx.id()).second) continue;
        broadcast(MsgType::request, Request{std::move(tx)});
        ++stats_.requests_forwarded;
    }
    if (is_primary()) return;
    for (Tx& tx : mempool_.take_ready(config_.max_block_txs, committed_nonces())) {
        send_to(primary(), MsgType::request, Request{std::move(tx)});
        ++stats_.requests_forwarded;
    }
}

// ---- bodies and state transfer ----

void Replica::on_fetch(ReplicaId from, const Fetch& f) {
    if (f.to_height < f.from_height || f.to_height - f.from_height >= max_fetch_blocks) {
        ++stats_.malformed;
        return;
    }
    Blocks reply;
    // A replica behind an epoch boundary must first reach it with a certificate from the set
    // it knows; the newest one may be signed by a set it has not heard of yet.
    if (auto b = boundary_certs_.lower_bound(f.from_height); b != boundary_certs_.end())
        reply.certificate = b->second;
    else if (stable_certificate_seq() >= f.from_height)
        reply.certificate = stable_cert_;
    for (std::uint64_t h = f.from_height; h <= f.to_height; ++h) {
        if (h <= ledger_.height()) {
            auto b = store_.block_at(h);
            if (!b) break;
            reply.blocks.push_back(std::move(b).value());
        } else if (auto it = log_.find(h); it != log_.end() && it->second.pre_prepare) {
            reply.blocks.push_back(it->second.pre_prepare->block);
        } else {
            break;
        }
    }
    reply.executed_height = ledger_.height();
    // A replica catching up never sees these checkpoints become stable: the lowest kept one
    // in the chunk lets it prove the chunk's blocks (within a chunk and an interval of
    // headers) once executed. One per chunk keeps its cost to one quorum of verifications.
    if (!reply.blocks.empty() && f.from_height <= ledger_.height()) {
        const std::uint64_t last = reply.blocks.back().header.height;
        auto kept = store_.certificate_from(f.from_height);
        if (kept && *kept && (*kept)->height <= last) {
            if (auto cert = decode_kept_certificate(**kept))
                reply.chunk_certificate = std::move(cert).value();
        }
    }
    if (!reply.blocks.empty() || !reply.certificate.checkpoints.empty()) {
        send_to(from, MsgType::blocks, reply);
        stats_.blocks_served += reply.blocks.size();
    }
}

void Replica::on_blocks(ReplicaId from, Blocks&& b) {
    // Late messages make peers announce checkpoints we already hold; checking one costs a
    // quorum of signature verifications, so only news is checked.
    const std::uint64_t known =
        std::max(low(), target_ ? target_->checkpoints.front().seq : std::uint64_t{0});
    if (!b.certificate.checkpoints.empty() && b.certificate.checkpoints.front().seq > known) {
        const auto& signers = set_for(b.certificate.checkpoints.front().seq);
        if (auto ok = verify_checkpoint_certificate(b.certificate, signers); !ok) {
            ++stats_.bad_signature;
            return;
        }
        consider_target(b.certificate, true);
    }
    if (b.blocks.empty()) return;
    // A state-transfer chunk: exactly the range asked for, ending at the anchored hash.
    if (fetching_ && b.blocks.front().header.height == fetch_from_ &&
        b.blocks.size() == fetch_to_ - fetch_from_ + 1) {
        // The hashes vouch for the headers only: each body must match its header's tx root,
        // or one faulty peer could make us execute a block that fails and halt.
        bool chained = b.blocks.back().hash() == fetch_anchor_;
        for (std::size_t i = 0; chained && i + 1 < b.blocks.size(); ++i)
            chained = b.blocks[i + 1].header.prev_hash == b.blocks[i].hash() &&
                      b.blocks[i + 1].header.height == b.blocks[i].header.height + 1;
        for (std::size_t i = 0; chained && i < b.blocks.size(); ++i)
            chained = body_matches_header(b.blocks[i]);
        if (!chained) {
            ++stats_.bad_blocks_reply;
            if (from == fetch_asked_) { // a faulty peer: ask the next one now
                ++fetch_peer_;
                send_fetch();
            }
            return;
        }
        fetch_anchor_ = b.blocks.front().header.prev_hash;
        keep_chunk_certificate(b);
        for (Block& block : b.blocks)
            fetched_.emplace(block.header.height, std::move(block));
        if (fetch_from_ <= ledger_.height() + 1)
            finish_transfer();
        else
            send_fetch();
        return;
    }
    // Otherwise: blocks the sender executed above our height, and bodies we asked for by
    // digest.
    const bool reported = note_executed_reports(from, b);
    bool used = reported;
    for (Block& block : b.blocks) {
        const std::uint64_t seq = block.header.height;
        auto want = wanted_.find(seq);
        if (want == wanted_.end() || want->second != block.hash() || !body_matches_header(block))
            continue;
        const Hash256 digest = want->second;
        wanted_.erase(want);
        used = true;
        ++stats_.bodies_fetched;
        bodies_.emplace(digest, block);
        auto it = log_.find(seq);
        if (view_active_ && it != log_.end() && seq == ledger_.height() + 1) {
            Slot& slot = it->second;
            if (slot.digest != digest) {
                slot.digest = digest;
                slot.rejected = false;
                slot.pre_prepare = PrePrepare{view_, seq, std::move(block)};
                reset_speculation_from(seq);
                slot.prepares.set(id_, digest); // our earlier prepare, if any, was for the other
                accept_ready();
            }
        }
    }
    if (!used && b.certificate.checkpoints.empty()) ++stats_.bad_blocks_reply;
    if (reported) execute_reported();
    if (used && !view_active_ && primary() == id_) try_new_view();
}

// The certificate a chunk came with, if it certifies one of the chunk's blocks (whose hashes
// are already anchored to the target) and its signers are the set that agreed on it. A bad
// one costs the chunk nothing: the blocks stand on the target's certificate.
void Replica::keep_chunk_certificate(const Blocks& b) {
    const CheckpointCertificate& cert = b.chunk_certificate;
    if (cert.checkpoints.empty()) return;
    const Checkpoint& cp = cert.checkpoints.front();
    const std::uint64_t first = b.blocks.front().header.height;
    if (cp.seq < first || cp.seq > b.blocks.back().header.height ||
        cp.block_hash != b.blocks[cp.seq - first].hash() ||
        (target_ && cp.seq >= target_->checkpoints.front().seq))
        return;
    if (!verify_checkpoint_certificate(cert, set_for(cp.seq))) {
        ++stats_.bad_signature;
        return;
    }
    fetched_certificates_.push_back(cert);
}

// A block f+1 members say they executed is committed: at least one of them is honest, and
// an honest replica executes only committed blocks, which are the same at every honest
// replica. Reports count against the set of members that agrees on the next height,
// which is the current one until that block executes (membership changes take effect
// only at a boundary, after the boundary block executes).
bool Replica::note_executed_reports(ReplicaId from, const Blocks& b) {
    if (fetching_ || from == id_) return false;
    bool noted = false;
    for (const Block& block : b.blocks) {
        const std::uint64_t h = block.header.height;
        if (h > b.executed_height) break;
        if (h <= ledger_.height() || h > ledger_.height() + config_.watermark_window) continue;
        if (!body_matches_header(block)) continue;
        ExecutedReports& at = executed_reports_[h];
        const Hash256 digest = block.hash();
        auto [it, fresh] = at.digests.emplace(from, digest);
        if (!fresh && it->second != digest) {
            ++stats_.conflicting; // one replica, two executed blocks at one height
            continue;
        }
        at.bodies.try_emplace(digest, block);
        noted = true;
    }
    return noted;
}

void Replica::execute_reported() {
    bool executed_any = false;
    while (!halted_ && !fetching_) {
        auto it = executed_reports_.find(ledger_.height() + 1);
        if (it == executed_reports_.end()) break;
        std::map<Hash256, std::size_t> votes;
        for (const auto& [replica, digest] : it->second.digests)
            if (member(replica)) ++votes[digest];
        auto vouched = std::find_if(votes.begin(), votes.end(),
                                    [&](const auto& v) { return v.second >= f() + 1; });
        if (vouched == votes.end()) break;
        Block block = std::move(it->second.bodies.at(vouched->first));
        executed_reports_.erase(it);
        auto delta = ledger_.execute(block);
        if (!delta) { // a committed block that does not execute: our state is not the chain's
            ++stats_.bad_blocks_reply;
            halted_ = true;
            return;
        }
        log_.erase(block.header.height);
        executed(block, *delta);
        ++stats_.reported_blocks;
        executed_any = true;
    }
    executed_reports_.erase(executed_reports_.begin(),
                            executed_reports_.upper_bound(ledger_.height()));
    if (executed_any && !halted_) after_transfer();
}

void Replica::consider_target(const CheckpointCertificate& cert, bool urgent) {
    const std::uint64_t seq = cert.checkpoints.front().seq;
    if (seq <= ledger_.height()) {
        // Already executed: the certificate can make it stable here if it is ours.
        if (seq > stable_certificate_seq()) {
            auto stored = store_.block_at(seq);
            if (stored && stored->hash() == cert.checkpoints.front().block_hash) make_stable(cert);
        }
        return;
    }
    if (!target_ || target_->checkpoints.front().seq < seq) target_ = cert;
    if (!fetching_ && (urgent || seq > high())) start_fetch();
}

void Replica::start_fetch() {
    if (!target_ || halted_) return;
    const Checkpoint& cp = target_->checkpoints.front();
    if (cp.seq <= ledger_.height()) {
        target_.reset();
        return;
    }
    fetching_ = true;
    fetched_.clear();
    fetched_certificates_.clear();
    fetch_to_ = cp.seq;
    fetch_anchor_ = cp.block_hash;
    fetch_peer_ = id_ + ticks_; // replicas behind together spread over the signers
    send_fetch();
}

void Replica::send_fetch() {
    // Agreement may have carried this replica past what the transfer still lacks while it
    // waited for an answer (the peers asked were slow, or down). Then the range left to ask
    // for is empty: asking for it would go unanswered forever, and a newer target, noted
    // meanwhile, would never be fetched.
    if (!fetched_.empty() && fetched_.begin()->first <= ledger_.height() + 1) {
        finish_transfer(); // the fetched blocks reach down to this replica's chain
        return;
    }
    if (fetched_.empty() && fetch_to_ <= ledger_.height()) {
        fetching_ = false; // reached the transfer's target without it
        fetched_certificates_.clear();
        start_fetch(); // towards the newest target, if it is still ahead
        return;
    }
    fetch_from_ = std::max(ledger_.height() + 1,
                           fetch_to_ + 1 > max_fetch_blocks ? fetch_to_ + 1 - max_fetch_blocks : 1);
    if (!fetched_.empty()) {
        fetch_to_ = fetched_.begin()->first - 1;
        fetch_from_ =
            std::max(ledger_.height() + 1,
                     fetch_to_ + 1 > max_fetch_blocks ? fetch_to_ + 1 - max_fetch_blocks : 1);
    }
    // Ask the certificate's signers (they executed the certified block): the same one while
    // it answers well, the next one after a timeout or a bad answer.
    std::vector<ReplicaId> peers;
    for (const auto& c : target_->checkpoints)
        if (c.replica != id_) peers.push_back(c.replica);
    if (peers.empty()) return;
    fetch_asked_ = peers[fetch_peer_ % peers.size()];
    send_to(fetch_asked_, MsgType::fetch, Fetch{fetch_from_, fetch_to_});
    if (fetch_timer_ != 0) transport_.cancel_timer(fetch_timer_);
    const std::uint64_t from = fetch_from_;
    fetch_timer_ = set_timer(config_.fetch_timeout_ms, [this, from] {
        fetch_timer_ = 0;
        if (fetching_ && fetch_from_ == from) {
            ++fetch_peer_;
            send_fetch();
        }
    });
}

void Replica::finish_transfer() {
    if (fetch_timer_ != 0) transport_.cancel_timer(fetch_timer_);
    fetch_timer_ = 0;
    fetching_ = false;
    std::optional<CheckpointCertificate> cert = std::move(target_);
    target_.reset();
    for (auto& [height, block] : fetched_) {
        if (height <= ledger_.height()) continue;
        auto delta = ledger_.execute(block);
        if (!delta) { // a certified chain that does not execute: our state is not the chain's
            ++stats_.bad_blocks_reply;
            halted_ = true;
            fetched_.clear();
            return;
        }
        // Slots of these heights from an earlier view are void now.
        log_.erase(height);
        executed(block, *delta);
        if (halted_) break;
        ++stats_.transferred_blocks;
    }
    fetched_.clear();
    if (halted_) return;
    for (const CheckpointCertificate& kept : std::exchange(fetched_certificates_, {})) {
        if (kept.checkpoints.front().seq > ledger_.height()) continue;
        if (!store_certificate(kept)) return;
        ++stats_.transferred_certs;
    }
    ++stats_.state_transfers;
    if (cert && cert->checkpoints.front().seq == ledger_.height()) make_stable(std::move(*cert));
    after_transfer();
}

// After blocks were executed from outside the agreement (state transfer, executed reports):
// the speculative state restarts from the new height.
void Replica::after_transfer() {
    mempool_.prune(committed_nonces());
    reset_speculation_from(ledger_.height() + 1);
    accept_ready();
    execute_ready();
}

} // namespace popchain::pbft
