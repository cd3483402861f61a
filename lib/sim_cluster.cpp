// The simulated cluster (see net/sim_cluster.hpp for the contract).
#include <popchain/hex.hpp>
#include <popchain/net/sim_cluster.hpp>

#include <algorithm>
#include <optional>
#include <set>
#include <stdexcept>
#include <utility>

namespace popchain::net {

struct SimCluster::Shim : Receiver {
    Receiver* target = nullptr;
    void on_message(NodeId from, ByteView message) override {
        if (target) target->on_message(from, message);
    }
    void on_burst_begin() override {
        if (target) target->on_burst_begin();
    }
    void on_burst_end() override {
        if (target) target->on_burst_end();
    }
};

// Replies reach the network client once it exists (submit_with_retry gets none: it talks
// to replicas by direct calls).
struct SimCluster::ClientReceiver : Receiver {
    pbft::Client* target = nullptr;
    void on_message(NodeId from, ByteView message) override {
        if (target) target->on_message(from, message);
    }
};

namespace {

// Fixed identities: a hash of a label is a valid P-256 secret with overwhelming probability,
// and a constant label can be checked once and for all.
SigningKey fixed_key(const std::string& label) {
    const Hash256 secret = sha256("popchain/sim/" + label);
    auto key = SigningKey::from_secret(secret.view());
    if (!key) throw std::runtime_error("sim key " + label + ": " + key.error().message());
    return std::move(key).value();
}

std::string short_hash(const Hash256& h) {
    return to_hex(h).substr(0, 16);
}

} // namespace

SimCluster::SimCluster(SimClusterOptions options)
    : options_(std::move(options)), net_(options_.seed, options_.faults) {
    if (options_.replicas == 0) throw std::logic_error("SimCluster: no replicas");
    if (options_.client_retry_ms == 0) throw std::logic_error("SimCluster: client_retry_ms is 0");
    net_.enable_trace(options_.trace);
    const std::uint32_t n = options_.replicas;

    genesis_.params.chain_id = "popchain-sim";
    genesis_.params.authority = fixed_key("authority").public_key();
    genesis_.timestamp_ms = 1'700'000'000'000ull;
    if (options_.noop_application) genesis_.params.commands = noop_command_rules();
    for (std::uint32_t i = 0; i < n; ++i) {
        keys_.push_back(fixed_key("replica/" + std::to_string(i)));
        genesis_.replicas.push_back({i, keys_[i].public_key(), ""});
    }
    for (std::size_t w = 0; w < options_.wallets; ++w) {
        wallets_.push_back(fixed_key("wallet/" + std::to_string(w)));
        genesis_.balances.push_back({wallets_[w].address(), options_.balance});
    }
    nonces_.assign(options_.wallets, 0);
    byzantine_.assign(n, false);
    chains_.resize(n);

    for (std::uint32_t i = 0; i < n; ++i) {
        stores_.push_back(std::make_unique<MemoryStore>());
        journals_.push_back(std::make_unique<pbft::MemoryJournal>());
        shims_.push_back(std::make_unique<Shim>());
    }
    replicas_.resize(n);
    apps_.resize(n);
    for (std::uint32_t i = 0; i < n; ++i)
        build_replica(i, net_.attach(i, *shims_[i]));
    client_receiver_ = std::make_unique<ClientReceiver>();
    client_ = &net_.attach(client_node, *client_receiver_);
}

SimCluster::~SimCluster() = default;

pbft::Client& SimCluster::network_client(pbft::ClientConfig config) {
    if (!network_client_) {
        auto made = pbft::Client::create(*client_, genesis_.replicas, config);
        if (!made) throw std::runtime_error("SimCluster client: " + made.error().message());
        network_client_ = std::move(made).value();
        client_receiver_->target = network_client_.get();
    }
    return *network_client_;
}

void SimCluster::check_id(pbft::ReplicaId id) const {
    if (id >= size())
        throw std::logic_error("SimCluster: no replica " + std::to_string(id) + " (there are " +
                               std::to_string(size()) + ")");
}

void SimCluster::build_replica(pbft::ReplicaId id, Transport& inner) {
    Transport* transport = &inner;
    if (options_.wrap) {
        auto wrapped = options_.wrap(id, keys_[id], genesis_.replicas, inner);
        if (!wrapped)
            throw std::logic_error("SimCluster: wrap returned no transport for replica " +
                                   std::to_string(id));
        wrappers_.push_back(std::move(wrapped));
        transport = wrappers_.back().get();
    }
    auto made = pbft::Replica::create(id, keys_[id], genesis_, options_.config, *transport,
                                      *stores_[id], journals_[id].get());
    if (!made)
        throw std::runtime_error("replica " + std::to_string(id) + ": " + made.error().message());
    if (options_.noop_application) {
        apps_[id] = std::make_unique<NoopApplication>();
        if (auto ok = (*made)->set_application(apps_[id].get()); !ok)
            throw std::runtime_error("replica " + std::to_string(id) + ": " + ok.error().message());
    }
    replicas_[id] = std::move(made).value();
    shims_[id]->target = replicas_[id].get();
}

const NoopApplication* SimCluster::application(pbft::ReplicaId id) const {
    check_id(id);
    return replicas_[id] ? apps_[id].get() : nullptr;
}

Tx SimCluster::command(std::uint64_t client, std::uint64_t value) {
    if (!options_.noop_application)
        throw std::logic_error("SimCluster::command needs noop_application");
    Writer payload;
    payload.u64(value);
    return make_command(genesis_.params.chain_id, command_client(client), command_nonces_[client]++,
                        payload.take());
}

pbft::Replica* SimCluster::replica(pbft::ReplicaId id) {
    check_id(id);
    return replicas_[id].get();
}
const pbft::Replica* SimCluster::replica(pbft::ReplicaId id) const {
    check_id(id);
    return replicas_[id].get();
}
MemoryStore& SimCluster::store(pbft::ReplicaId id) {
    check_id(id);
    return *stores_[id];
}
const MemoryStore& SimCluster::store(pbft::ReplicaId id) const {
    check_id(id);
    return *stores_[id];
}
const SigningKey& SimCluster::key(pbft::ReplicaId id) const {
    check_id(id);
    return keys_[id];
}
const SigningKey& SimCluster::wallet(std::size_t w) const {
    if (w >= wallets_.size()) throw std::logic_error("SimCluster: no wallet " + std::to_string(w));
    return wallets_[w];
}
bool SimCluster::is_up(pbft::ReplicaId id) const {
    check_id(id);
    return replicas_[id] != nullptr;
}

void SimCluster::crash(pbft::ReplicaId id) {
    if (!is_up(id))
        throw std::logic_error("SimCluster: replica " + std::to_string(id) + " is down already");
    net_.crash(id);
    shims_[id]->target = nullptr;
    replicas_[id].reset();
    apps_[id].reset();              // it kept its state in memory only
    journals_[id]->drop_unsynced(); // what the crash took before it reached the disk
}

void SimCluster::restart(pbft::ReplicaId id) {
    if (is_up(id)) throw std::logic_error("SimCluster: replica " + std::to_string(id) + " is up");
    build_replica(id, net_.restart(id, *shims_[id]));
}

void SimCluster::mark_byzantine(pbft::ReplicaId id) {
    check_id(id);
    byzantine_[id] = true;
}
bool SimCluster::is_byzantine(pbft::ReplicaId id) const {
    check_id(id);
    return byzantine_[id];
}

// ---- the client ----

Tx SimCluster::transfer(std::size_t from_wallet, std::size_t to_wallet, std::uint64_t amount) {
    const SigningKey& from = wallet(from_wallet);
    Tx tx;
    tx.kind = TxKind::transfer;
    tx.chain_id = genesis_.params.chain_id;
    tx.nonce = nonces_[from_wallet]++;
    tx.to = wallet(to_wallet).address();
    tx.amount = amount;
    return sign_tx(std::move(tx), from);
}

Result<void> SimCluster::submit(const Tx& tx, pbft::ReplicaId via) {
    if (!is_up(via))
        return make_error(Errc::invalid_argument, "replica " + std::to_string(via) + " is down");
    return replicas_[via]->submit(tx);
}

pbft::ReplicaId SimCluster::next_up(pbft::ReplicaId from) const {
    for (std::uint32_t k = 0; k < size(); ++k) {
        const pbft::ReplicaId id = (from + k) % size();
        if (replicas_[id] && replicas_[id]->voting()) return id; // only members take requests
    }
    return size();
}

void SimCluster::submit_with_retry(const Tx& tx, pbft::ReplicaId via) {
    check_id(via);
    Pending p{tx, tx.id(), via};
    const pbft::ReplicaId to = next_up(via);
    if (to < size()) {
        (void)replicas_[to]->submit(tx); // a refusal is retried like a loss
        p.next_via = (to + 1) % size();
    }
    pending_.push_back(std::move(p));
    arm_retry();
}

bool SimCluster::committed_somewhere(const Hash256& txid) const {
    for (std::uint32_t i = 0; i < size(); ++i)
        if (!byzantine_[i] && stores_[i]->tx_by_id(txid).ok()) return true;
    return false;
}

void SimCluster::arm_retry() {
    if (retry_timer_ != 0 || pending_.empty()) return;
    retry_timer_ = client_->set_timer(options_.client_retry_ms, [this] {
        retry_timer_ = 0;
        retry();
    });
}

void SimCluster::retry() {
    std::vector<Pending> still;
    for (auto& p : pending_) {
        if (committed_somewhere(p.txid)) continue;
        const pbft::ReplicaId to = next_up(p.next_via);
        if (to < size()) {
            (void)replicas_[to]->submit(p.tx); // already_known and nonce_reused are expected
            p.next_via = (to + 1) % size();
        }
        still.push_back(std::move(p));
    }
    pending_ = std::move(still);
    arm_retry();
}

std::size_t SimCluster::missing(const std::vector<Hash256>& txids, pbft::ReplicaId id) const {
    check_id(id);
    std::size_t count = 0;
    for (const auto& txid : txids)
        if (!stores_[id]->tx_by_id(txid).ok()) ++count;
    return count;
}

bool SimCluster::run_until_committed(const std::vector<Hash256>& txids, Millis deadline,
                                     const std::function<bool()>& stop) {
    // Checked after every event, so only stores whose tip moved are looked at again, and
    // only for the transactions they still lack.
    const std::uint32_t n = size();
    std::vector<std::set<std::size_t>> lacking(n);
    for (auto& l : lacking)
        for (std::size_t k = 0; k < txids.size(); ++k)
            l.insert(k);
    std::vector<std::optional<std::uint64_t>> seen(n);
    std::vector<bool> looked(n, false);
    auto done = [&] {
        for (std::uint32_t i = 0; i < n; ++i) {
            if (!replicas_[i] || byzantine_[i]) continue;
            const auto tip = stores_[i]->tip_height();
            if (!looked[i] || tip != seen[i]) {
                looked[i] = true;
                seen[i] = tip;
                for (auto it = lacking[i].begin(); it != lacking[i].end();)
                    it = stores_[i]->tx_by_id(txids[*it]).ok() ? lacking[i].erase(it) : ++it;
            }
            if (!lacking[i].empty()) return false;
        }
        return true;
    };
    if (!stop) return net_.run_until(done, deadline);
    bool stopped = false;
    const bool all = net_.run_until([&] { return done() || (stopped = stop()); }, deadline);
    return all && !stopped; // stopped: done() was false at that event
}

// ---- checks ----

Result<void> SimCluster::check_safety() const {
    const std::uint32_t n = size();
    std::uint64_t top = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        if (byzantine_[i]) continue;
        auto& chain = chains_[i];
        const auto tip = stores_[i]->tip_height();
        const std::uint64_t count = tip ? *tip + 1 : 0;
        while (chain.size() < count) {
            auto block = stores_[i]->block_at(chain.size());
            if (!block)
                return make_error(Errc::storage_corrupt, "safety: replica " + std::to_string(i) +
                                                             " cannot read height " +
                                                             std::to_string(chain.size()) + ": " +
                                                             block.error().message());
            chain.push_back(block->hash());
        }
        top = std::max<std::uint64_t>(top, chain.size());
    }
    // Comparing each replica with the first honest one holding a height finds any pair
    // that differs: if two differ, at least one of them differs from that reference.
    for (std::uint64_t h = 0; h < top; ++h) {
        std::uint32_t ref = n;
        for (std::uint32_t i = 0; i < n; ++i) {
            if (byzantine_[i] || chains_[i].size() <= h) continue;
            if (ref == n) {
                ref = i;
            } else if (chains_[i][h] != chains_[ref][h]) {
                return make_error(Errc::invalid_argument,
                                  "safety: replicas " + std::to_string(ref) + " and " +
                                      std::to_string(i) + " hold different blocks at height " +
                                      std::to_string(h) + " (" + short_hash(chains_[ref][h]) +
                                      " vs " + short_hash(chains_[i][h]) + ")");
            }
        }
    }
    return {};
}

Result<void> SimCluster::check_converged() const {
    const pbft::Replica* ref = nullptr;
    for (std::uint32_t i = 0; i < size(); ++i) {
        const pbft::Replica* r = replicas_[i].get();
        if (!r || byzantine_[i]) continue;
        const std::string who = "replica " + std::to_string(i);
        if (auto ok = r->ledger().check_invariants(); !ok)
            return make_error(ok.code(), "converged: " + who + " at height " +
                                             std::to_string(r->height()) +
                                             " breaks an invariant: " + ok.error().message());
        const auto tip = stores_[i]->tip_height();
        if (!tip || *tip != r->height())
            return make_error(Errc::invalid_argument,
                              "converged: " + who + " has ledger height " +
                                  std::to_string(r->height()) + " but store height " +
                                  (tip ? std::to_string(*tip) : std::string("none")));
        auto stored = stores_[i]->load_state();
        if (!stored)
            return make_error(stored.code(), "converged: " + who + " cannot load its state: " +
                                                 stored.error().message());
        if (state_digest(*stored) != r->ledger().state_digest())
            return make_error(Errc::invalid_argument, "converged: " + who + " at height " +
                                                          std::to_string(r->height()) +
                                                          ": stored state differs from its ledger");
        if (options_.noop_application && apps_[i]->height() != r->height())
            return make_error(Errc::invalid_argument,
                              "converged: " + who + "'s application is at height " +
                                  std::to_string(apps_[i]->height()) + ", its ledger at " +
                                  std::to_string(r->height()));
        if (!ref) {
            ref = r;
            continue;
        }
        const std::string pair = "replica " + std::to_string(ref->id()) + " and " + who;
        if (r->height() != ref->height())
            return make_error(Errc::invalid_argument, "converged: " + pair + " are at heights " +
                                                          std::to_string(ref->height()) + " and " +
                                                          std::to_string(r->height()));
        if (r->ledger().state_digest() != ref->ledger().state_digest())
            return make_error(Errc::invalid_argument, "converged: " + pair +
                                                          " hold different states at height " +
                                                          std::to_string(r->height()));
        if (options_.noop_application &&
            apps_[i]->state_digest() != apps_[ref->id()]->state_digest())
            return make_error(Errc::invalid_argument,
                              "converged: " + pair + " hold different application states");
    }
    if (!ref) return make_error(Errc::invalid_argument, "converged: no honest replica is up");
    return {};
}

std::uint64_t SimCluster::max_honest_height() const {
    std::uint64_t top = 0;
    for (std::uint32_t i = 0; i < size(); ++i)
        if (!byzantine_[i])
            if (auto tip = stores_[i]->tip_height()) top = std::max(top, *tip);
    return top;
}

std::string SimCluster::summary() const {
    std::string out;
    for (std::uint32_t i = 0; i < size(); ++i) {
        const auto tip = stores_[i]->tip_height();
        out += "r" + std::to_string(i) + (byzantine_[i] ? " byzantine" : "");
        const pbft::Replica* r = replicas_[i].get();
        if (!r) {
            out += " down store_h=" + (tip ? std::to_string(*tip) : std::string("none")) + "\n";
            continue;
        }
        const auto& s = r->stats();
        out += " up h=" + std::to_string(r->height()) +
               " spec=" + std::to_string(r->speculative_ledger().height()) +
               " view=" + std::to_string(r->view()) + " low=" + std::to_string(r->stable_seq()) +
               " log=" + std::to_string(r->log_size()) +
               " pending=" + std::to_string(r->pending()) +
               " outside=" + std::to_string(s.outside_watermarks) +
               " bad_block=" + std::to_string(s.bad_block) +
               " conflicting=" + std::to_string(s.conflicting) +
               " duplicate=" + std::to_string(s.duplicate) +
               " retransmitted=" + std::to_string(s.retransmissions) +
               " view_changes=" + std::to_string(s.view_changes) +
               " transfers=" + std::to_string(s.state_transfers) + "\n";
    }
    out += "client retrying=" + std::to_string(pending_.size());
    return out;
}

} // namespace popchain::net
