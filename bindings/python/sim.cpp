// The deterministic pBFT simulator: SimCluster and the random fault scenarios.
#include "common.hpp"

#include <popchain/hex.hpp>
#include <popchain/net/sim_cluster.hpp>
#include <popchain/net/sim_scenario.hpp>

#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace popchain::python {

namespace {

using net::Millis;
using net::SimCluster;
using pbft::ReplicaId;

// Asked after every simulated event by the run loops below: every 4,096 events it lets Python
// handle pending signals, so a long run (run_for(2**62)) stops at Ctrl-C, or at any signal
// handler that raises, instead of holding the interpreter until it ends. Calling it with the
// GIL held is what the run loops do anyway: the simulator has no Python callbacks.
class SignalCheck {
public:
    bool operator()() {
        if (++events_ % 4096 != 0) return false;
        interrupted_ = PyErr_CheckSignals() != 0;
        return interrupted_;
    }
    // Raises the handler's exception (KeyboardInterrupt for Ctrl-C) if the run was stopped.
    void raise_if_interrupted() const {
        if (interrupted_) throw py::error_already_set();
    }

private:
    std::uint64_t events_ = 0;
    bool interrupted_ = false;
};

// run_until(t) that Python signals can interrupt (the clock then stays where it stopped).
void run_interruptibly(net::SimNetwork& network, Millis until) {
    SignalCheck check;
    network.run_until([&] { return check(); }, until);
    check.raise_if_interrupted();
}

// Owns the SimCluster and counts each replica's incarnations. SimCluster destroys a Replica
// when it crashes, so a Python handle to it must notice; comparing pointers is not enough (a
// restarted replica may be allocated at the address of the old one), hence the counter.
// Every crash and restart goes through this class, so the counters are exact.
class Cluster {
public:
    explicit Cluster(net::SimClusterOptions o)
        : c_(std::make_unique<SimCluster>(std::move(o))), generation_(c_->size(), 0) {}

    SimCluster& get() { return *c_; }
    const SimCluster& get() const { return *c_; }

    void check_id(ReplicaId id) const {
        if (id >= c_->size())
            throw std::out_of_range("no replica " + std::to_string(id) + " (there are " +
                                    std::to_string(c_->size()) + ")");
    }
    void check_wallet(std::size_t w) const {
        if (w >= c_->options().wallets)
            throw std::out_of_range("no wallet " + std::to_string(w) + " (there are " +
                                    std::to_string(c_->options().wallets) + ")");
    }
    std::uint64_t generation(ReplicaId id) const { return generation_[id]; }

    void crash(ReplicaId id) {
        check_id(id);
        c_->crash(id);
        ++generation_[id];
    }
    void restart(ReplicaId id) {
        check_id(id);
        c_->restart(id);
        ++generation_[id];
    }

private:
    std::unique_ptr<SimCluster> c_;
    std::vector<std::uint64_t> generation_;
};

// A replica as Python sees it: looked up again on every access and refused once the
// incarnation it was taken from has crashed, so no Python object ever points at a
// destroyed Replica. The Python object keeps its Cluster alive (keep_alive in replica()).
struct ReplicaHandle {
    Cluster* owner;
    ReplicaId id;
    std::uint64_t generation;

    const pbft::Replica& get() const {
        const pbft::Replica* r = owner->get().replica(id);
        if (!r || owner->generation(id) != generation)
            throw std::runtime_error("replica " + std::to_string(id) +
                                     " crashed after this handle was taken; call "
                                     "cluster.replica(" +
                                     std::to_string(id) + ") again");
        return *r;
    }
};

net::LinkFaults faults_of(double drop, double duplicate, std::pair<Millis, Millis> delay) {
    net::LinkFaults f;
    f.drop = drop;
    f.duplicate = duplicate;
    f.min_delay = delay.first;
    f.max_delay = delay.second;
    return f;
}

py::dict replica_stats(const pbft::ReplicaStats& s) {
    py::dict d;
#define POPCHAIN_STAT(name) d[#name] = s.name
    POPCHAIN_STAT(unknown_peer);
    POPCHAIN_STAT(forged_sender);
    POPCHAIN_STAT(bad_mac);
    POPCHAIN_STAT(wrong_destination);
    POPCHAIN_STAT(malformed);
    POPCHAIN_STAT(wrong_view);
    POPCHAIN_STAT(wrong_role);
    POPCHAIN_STAT(outside_watermarks);
    POPCHAIN_STAT(bad_block);
    POPCHAIN_STAT(duplicate);
    POPCHAIN_STAT(conflicting);
    POPCHAIN_STAT(bad_signature);
    POPCHAIN_STAT(checkpoint_mismatch);
    POPCHAIN_STAT(bad_view_change);
    POPCHAIN_STAT(bad_blocks_reply);
    POPCHAIN_STAT(rejected_requests);
    POPCHAIN_STAT(proposed);
    POPCHAIN_STAT(proposed_ahead);
    POPCHAIN_STAT(accepted);
    POPCHAIN_STAT(held_early);
    POPCHAIN_STAT(executed_blocks);
    POPCHAIN_STAT(executed_txs);
    POPCHAIN_STAT(requests_forwarded);
    POPCHAIN_STAT(checkpoints_stable);
    POPCHAIN_STAT(store_errors);
    POPCHAIN_STAT(journal_errors);
    POPCHAIN_STAT(journal_syncs);
    POPCHAIN_STAT(membership_changes);
    POPCHAIN_STAT(view_changes);
    POPCHAIN_STAT(new_views);
    POPCHAIN_STAT(retransmissions);
    POPCHAIN_STAT(bodies_fetched);
    POPCHAIN_STAT(state_transfers);
    POPCHAIN_STAT(transferred_blocks);
    POPCHAIN_STAT(transferred_certs);
    POPCHAIN_STAT(reported_blocks);
    POPCHAIN_STAT(client_requests);
    POPCHAIN_STAT(bad_client_frames);
    POPCHAIN_STAT(replies_sent);
    POPCHAIN_STAT(replies_from_store);
    POPCHAIN_STAT(refused_unexecutable);
    POPCHAIN_STAT(refused_submits);
    POPCHAIN_STAT(bundles_sent);
    POPCHAIN_STAT(bundled_messages);
#undef POPCHAIN_STAT
    return d;
}

py::dict network_stats(const net::SimStats& s) {
    py::dict d;
    d["sent"] = s.sent;
    d["delivered"] = s.delivered;
    d["dropped_by_fault"] = s.dropped_by_fault;
    d["dropped_by_partition"] = s.dropped_by_partition;
    d["dropped_down"] = s.dropped_down;
    d["duplicated"] = s.duplicated;
    d["filtered"] = s.filtered;
    d["timers_fired"] = s.timers_fired;
    return d;
}

net::ScenarioProfile profile_of(std::string_view name) {
    auto p = net::profile_named(name);
    if (!p)
        throw std::invalid_argument("unknown scenario profile '" + std::string(name) +
                                    "' (\"all\" or \"today\", then +kind or -kind)");
    return *p;
}

} // namespace

void init_sim(py::module_& m) {
    using pbft::ReplicaConfig;
    py::class_<ReplicaConfig>(m, "ReplicaConfig",
                              "Every tunable of a pBFT replica (see pbft/config.hpp for the\n"
                              "meaning and the bounds of each).")
        .def(py::init([](std::uint32_t max_block_txs, Millis max_batch_delay_ms,
                         std::uint32_t checkpoint_interval, std::uint32_t watermark_window,
                         Millis request_timeout_ms, Millis max_view_change_timeout_ms,
                         Millis retransmit_ms, Millis fetch_timeout_ms) {
                 ReplicaConfig c;
                 c.max_block_txs = max_block_txs;
                 c.max_batch_delay_ms = max_batch_delay_ms;
                 c.checkpoint_interval = checkpoint_interval;
                 c.watermark_window = watermark_window;
                 c.request_timeout_ms = request_timeout_ms;
                 c.max_view_change_timeout_ms = max_view_change_timeout_ms;
                 c.retransmit_ms = retransmit_ms;
                 c.fetch_timeout_ms = fetch_timeout_ms;
                 return c;
             }),
             py::arg("max_block_txs") = ReplicaConfig{}.max_block_txs,
             py::arg("max_batch_delay_ms") = ReplicaConfig{}.max_batch_delay_ms,
             py::arg("checkpoint_interval") = ReplicaConfig{}.checkpoint_interval,
             py::arg("watermark_window") = ReplicaConfig{}.watermark_window,
             py::arg("request_timeout_ms") = ReplicaConfig{}.request_timeout_ms,
             py::arg("max_view_change_timeout_ms") = ReplicaConfig{}.max_view_change_timeout_ms,
             py::arg("retransmit_ms") = ReplicaConfig{}.retransmit_ms,
             py::arg("fetch_timeout_ms") = ReplicaConfig{}.fetch_timeout_ms)
        .def_readwrite("max_block_txs", &ReplicaConfig::max_block_txs)
        .def_readwrite("max_batch_delay_ms", &ReplicaConfig::max_batch_delay_ms)
        .def_readwrite("checkpoint_interval", &ReplicaConfig::checkpoint_interval)
        .def_readwrite("watermark_window", &ReplicaConfig::watermark_window)
        .def_readwrite("request_timeout_ms", &ReplicaConfig::request_timeout_ms)
        .def_readwrite("max_view_change_timeout_ms", &ReplicaConfig::max_view_change_timeout_ms)
        .def_readwrite("retransmit_ms", &ReplicaConfig::retransmit_ms)
        .def_readwrite("fetch_timeout_ms", &ReplicaConfig::fetch_timeout_ms)
        .def_readwrite("bundle_messages", &ReplicaConfig::bundle_messages)
        .def(
            "validate",
            [](const ReplicaConfig& c, std::uint32_t replicas) { unwrap(c.validate(replicas)); },
            py::arg("replicas"),
            "Raises popchain.Error naming the field when a bound is broken for a cluster of\n"
            "`replicas` members.");

    m.def("max_faulty", &pbft::max_faulty, py::arg("n"), "The largest f with n >= 3f + 1.");
    m.def("quorum", &pbft::quorum, py::arg("n"), "Matching votes that make a quorum of n.");

    py::class_<ReplicaHandle>(m, "Replica",
                              "Read access to one running replica of a SimCluster. Every\n"
                              "attribute raises RuntimeError once the replica has crashed\n"
                              "(take a new handle with cluster.replica(id) after a restart).")
        .def_readonly("id", &ReplicaHandle::id)
        .def_property_readonly(
            "alive",
            [](const ReplicaHandle& h) {
                const pbft::Replica* r = h.owner->get().replica(h.id);
                return r != nullptr && h.owner->generation(h.id) == h.generation;
            },
            "False once the incarnation this handle was taken from has crashed.")
        .def_property_readonly(
            "height", [](const ReplicaHandle& h) { return h.get().height(); },
            "Height of the last executed block.")
        .def_property_readonly(
            "view", [](const ReplicaHandle& h) { return h.get().view(); }, "Current view.")
        .def_property_readonly(
            "view_active", [](const ReplicaHandle& h) { return h.get().view_active(); },
            "False between sending a view change and installing the new view.")
        .def_property_readonly(
            "primary", [](const ReplicaHandle& h) { return h.get().primary(); },
            "Id of the primary of the current view.")
        .def_property_readonly("is_primary",
                               [](const ReplicaHandle& h) { return h.get().is_primary(); })
        .def_property_readonly(
            "voting", [](const ReplicaHandle& h) { return h.get().voting(); },
            "A member of the current replica set.")
        .def_property_readonly(
            "pending", [](const ReplicaHandle& h) { return h.get().pending(); },
            "Transactions in its mempool.")
        .def_property_readonly(
            "stable_seq", [](const ReplicaHandle& h) { return h.get().stable_seq(); },
            "Height of the last stable checkpoint (the low watermark).")
        .def_property_readonly("log_size",
                               [](const ReplicaHandle& h) { return h.get().log_size(); })
        .def_property_readonly(
            "stats", [](const ReplicaHandle& h) { return replica_stats(h.get().stats()); },
            "Counters (drops by reason, activity) as a dict.")
        .def_property_readonly("replica_set",
                               [](const ReplicaHandle& h) { return h.get().replica_set(); })
        .def_property_readonly(
            "last_stable_certificate",
            [](const ReplicaHandle& h) { return h.get().last_stable_certificate(); },
            "Certificate of the last stable checkpoint (empty until one is stable).")
        .def(
            "ledger",
            [](const ReplicaHandle& h) {
                // A snapshot built from params and state, not a copy of the replica's
                // Ledger: that one points at the replica's signature cache, which dies
                // with the replica.
                const Ledger& l = h.get().ledger();
                return Ledger(l.params(), l.state());
            },
            "A snapshot of the committed ledger (independent of the replica).")
        .def("__repr__", [](const ReplicaHandle& h) {
            const pbft::Replica* r = h.owner->get().replica(h.id);
            if (!r || h.owner->generation(h.id) != h.generation)
                return "Replica(" + std::to_string(h.id) + ", crashed)";
            return "Replica(" + std::to_string(h.id) + ", height=" + std::to_string(r->height()) +
                   ", view=" + std::to_string(r->view()) + (r->is_primary() ? ", primary)" : ")");
        });

    py::class_<Cluster>(
        m, "SimCluster",
        "A whole pBFT cluster in the deterministic network simulator: n replicas with\n"
        "in-memory stores, `wallets` funded wallets and a retrying client, all in virtual time.\n"
        "Identities are fixed (the same for every seed); `seed` drives every delay, drop and\n"
        "duplicate, so the same seed and the same calls give the same chain.\n\n"
        "Nothing happens until the network is run: run_for(ms), run_until(t) or\n"
        "run_until_committed(txids, deadline). Crash and restart only between runs.")
        .def(py::init([](std::uint32_t replicas, std::uint64_t seed, double drop, double duplicate,
                         std::pair<Millis, Millis> delay, std::optional<pbft::ReplicaConfig> config,
                         std::size_t wallets, std::uint64_t balance, Millis client_retry_ms,
                         bool trace, bool noop_application) {
                 if (replicas == 0 || replicas > max_replicas)
                     throw std::invalid_argument("SimCluster: replicas must be 1.." +
                                                 std::to_string(max_replicas) + ", not " +
                                                 std::to_string(replicas));
                 net::SimClusterOptions o;
                 o.replicas = replicas;
                 o.seed = seed;
                 o.faults = faults_of(drop, duplicate, delay);
                 if (config) o.config = *config;
                 o.wallets = wallets;
                 o.balance = balance;
                 o.client_retry_ms = client_retry_ms;
                 o.trace = trace;
                 o.noop_application = noop_application;
                 return std::make_unique<Cluster>(std::move(o));
             }),
             py::arg("replicas") = 4, py::arg("seed") = 1, py::arg("drop") = 0.0,
             py::arg("duplicate") = 0.0, py::arg("delay") = std::pair<Millis, Millis>{1, 5},
             py::arg("config") = py::none(), py::arg("wallets") = 8, py::arg("balance") = 1'000'000,
             py::arg("client_retry_ms") = 500, py::arg("trace") = false,
             py::arg("noop_application") = false,
             "drop, duplicate: probabilities per message on every link; delay: (min, max) ms,\n"
             "uniform (reordering follows when max > min); config: a ReplicaConfig; balance:\n"
             "each wallet's at genesis; client_retry_ms: resubmission period of\n"
             "submit_with_retry; trace: keep the network's text trace; noop_application:\n"
             "consensus-only mode (the chain takes unsigned 8-byte commands, every replica\n"
             "runs the no-op application; see command() and app_digest()).")
        .def_property_readonly(
            "size", [](const Cluster& c) { return c.get().size(); }, "Number of replicas.")
        .def("__len__", [](const Cluster& c) { return c.get().size(); })
        .def_property_readonly(
            "now", [](const Cluster& c) { return c.get().network().now(); }, "Virtual time, ms.")
        .def_property_readonly(
            "genesis", [](const Cluster& c) { return c.get().genesis(); },
            "The cluster's Genesis (a copy).")
        .def_property_readonly("chain_id",
                               [](const Cluster& c) { return c.get().genesis().params.chain_id; })
        .def_property_readonly(
            "wallets", [](const Cluster& c) { return c.get().options().wallets; },
            "Number of funded wallets.")
        .def(
            "wallet",
            [](const Cluster& c, std::size_t w) -> const SigningKey& {
                c.check_wallet(w);
                return c.get().wallet(w);
            },
            py::arg("index"), py::return_value_policy::reference_internal,
            "Key of funded wallet `index` (valid while the cluster lives).")
        .def(
            "key",
            [](const Cluster& c, ReplicaId id) -> const SigningKey& {
                c.check_id(id);
                return c.get().key(id);
            },
            py::arg("id"), py::return_value_policy::reference_internal,
            "Identity key of replica `id`.")
        .def(
            "transfer",
            [](Cluster& c, std::size_t from, std::size_t to, std::uint64_t amount) {
                c.check_wallet(from);
                c.check_wallet(to);
                return c.get().transfer(from, to, amount);
            },
            py::arg("from_wallet"), py::arg("to_wallet"), py::arg("amount"),
            "A transfer between two wallets, signed with the sender's next nonce (counted by\n"
            "the cluster, so create transfers in the order they should execute). Not sent.")
        .def(
            "command",
            [](Cluster& c, std::uint64_t client, std::uint64_t value) {
                if (!c.get().options().noop_application)
                    throw py::value_error("command() needs SimCluster(noop_application=True)");
                return c.get().command(client, value);
            },
            py::arg("client"), py::arg("value"),
            "An unsigned command from client id `client` (any number) with that client's\n"
            "next nonce, its payload the 8 bytes of `value`. Not sent.")
        .def(
            "app_digest",
            [](const Cluster& c, ReplicaId id) -> std::optional<std::pair<std::uint64_t, Hash256>> {
                c.check_id(id);
                const NoopApplication* app = c.get().application(id);
                if (!app) return std::nullopt;
                return std::make_pair(app->height(), app->state_digest());
            },
            py::arg("id"),
            "(height, state digest) of replica `id`'s no-op application; None without\n"
            "noop_application or while the replica is crashed.")
        .def(
            "submit",
            [](Cluster& c, const Tx& tx, ReplicaId via) {
                c.check_id(via);
                unwrap(c.get().submit(tx, via));
            },
            py::arg("tx"), py::arg("via"),
            "Hands `tx` to replica `via` once; popchain.Error if it is refused or `via` is\n"
            "down.")
        .def(
            "submit_with_retry",
            [](Cluster& c, const Tx& tx, ReplicaId via) {
                c.check_id(via);
                c.get().submit_with_retry(tx, via);
            },
            py::arg("tx"), py::arg("via") = 0,
            "Submits to `via` (or the next replica up) and resubmits round-robin every\n"
            "client_retry_ms until the transaction is in some honest replica's store.")
        .def_property_readonly(
            "retrying", [](const Cluster& c) { return c.get().retrying(); },
            "Transactions submit_with_retry is still retrying.")
        .def(
            "run_for",
            [](Cluster& c, Millis ms) {
                auto& network = c.get().network();
                constexpr Millis max = std::numeric_limits<Millis>::max();
                run_interruptibly(network, ms > max - network.now() ? max : network.now() + ms);
            },
            py::arg("ms"),
            "Runs every event in the next `ms` virtual milliseconds. Ctrl-C (or a signal\n"
            "handler that raises) stops it, with the clock where it stopped.")
        .def(
            "run_until", [](Cluster& c, Millis t) { run_interruptibly(c.get().network(), t); },
            py::arg("time"),
            "Runs every event up to absolute virtual time `time`. Ctrl-C stops it, as\n"
            "run_for.")
        .def(
            "step", [](Cluster& c) { return c.get().network().step(); },
            "Runs the earliest event; False if there was none.")
        .def(
            "run_until_committed",
            [](Cluster& c, const std::vector<Hash256>& txids, Millis deadline) {
                SignalCheck check;
                const bool all =
                    c.get().run_until_committed(txids, deadline, [&] { return check(); });
                check.raise_if_interrupted();
                return all;
            },
            py::arg("txids"), py::arg("deadline"),
            "Runs until every txid is in the store of every up honest replica, or no event\n"
            "is left before the ABSOLUTE virtual time `deadline` (use cluster.now + budget).\n"
            "Returns whether they all are.")
        .def(
            "missing",
            [](const Cluster& c, const std::vector<Hash256>& txids, ReplicaId id) {
                c.check_id(id);
                return c.get().missing(txids, id);
            },
            py::arg("txids"), py::arg("id"), "How many of `txids` replica `id`'s store lacks.")
        .def("crash", &Cluster::crash, py::arg("id"),
             "Crashes replica `id`: its Replica is destroyed, its store survives (as a disk\n"
             "would), messages in flight to it are lost. ValueError if it is down already.")
        .def("restart", &Cluster::restart, py::arg("id"),
             "Restarts a crashed replica from its store. ValueError if it is up.")
        .def(
            "is_up",
            [](const Cluster& c, ReplicaId id) {
                c.check_id(id);
                return c.get().is_up(id);
            },
            py::arg("id"))
        .def(
            "mark_byzantine",
            [](Cluster& c, ReplicaId id) {
                c.check_id(id);
                c.get().mark_byzantine(id);
            },
            py::arg("id"), "Leaves replica `id` out of the safety and convergence checks.")
        .def(
            "is_byzantine",
            [](const Cluster& c, ReplicaId id) {
                c.check_id(id);
                return c.get().is_byzantine(id);
            },
            py::arg("id"))
        .def(
            "partition",
            [](Cluster& c, std::vector<std::vector<net::NodeId>> groups) {
                // The client talks to replicas directly, not over the network, so it needs
                // no group; every replica id must still be in range.
                for (const auto& g : groups)
                    for (auto id : g)
                        c.check_id(id);
                c.get().network().partition(std::move(groups));
            },
            py::arg("groups"),
            "Replaces any partition: replicas in the same group reach each other, others do\n"
            "not; a replica in no group is cut off from everyone. Cuts messages in flight.")
        .def(
            "isolate",
            [](Cluster& c, ReplicaId id) {
                c.check_id(id);
                c.get().network().isolate(id);
            },
            py::arg("id"), "Cuts replica `id` off from everyone, on top of any partition.")
        .def(
            "heal", [](Cluster& c) { c.get().network().heal(); },
            "Removes the partition and every isolation.")
        .def(
            "connected",
            [](const Cluster& c, ReplicaId a, ReplicaId b) {
                c.check_id(a);
                c.check_id(b);
                return c.get().network().connected(a, b);
            },
            py::arg("a"), py::arg("b"), "Whether a message from a to b would pass now.")
        .def(
            "set_faults",
            [](Cluster& c, double drop, double duplicate, std::pair<Millis, Millis> delay) {
                c.get().network().set_default_faults(faults_of(drop, duplicate, delay));
            },
            py::arg("drop") = 0.0, py::arg("duplicate") = 0.0,
            py::arg("delay") = std::pair<Millis, Millis>{1, 5},
            "Sets the default faults of every link without an override.")
        .def(
            "set_link_faults",
            [](Cluster& c, ReplicaId from, ReplicaId to, double drop, double duplicate,
               std::pair<Millis, Millis> delay) {
                c.check_id(from);
                c.check_id(to);
                c.get().network().set_link_faults(from, to, faults_of(drop, duplicate, delay));
            },
            py::arg("from_"), py::arg("to"), py::arg("drop") = 0.0, py::arg("duplicate") = 0.0,
            py::arg("delay") = std::pair<Millis, Millis>{1, 5},
            "Overrides the faults of the directed link from_ -> to.")
        .def(
            "clear_link_faults",
            [](Cluster& c, ReplicaId from, ReplicaId to) {
                c.check_id(from);
                c.check_id(to);
                c.get().network().clear_link_faults(from, to);
            },
            py::arg("from_"), py::arg("to"), "Back to the default faults for that link.")
        .def(
            "network_stats",
            [](const Cluster& c) { return network_stats(c.get().network().stats()); },
            "Message counters of the simulated network, as a dict.")
        .def(
            "trace", [](const Cluster& c) { return c.get().network().trace(); },
            "The network's trace lines (only kept with trace=True).")
        .def_property_readonly(
            "trace_digest", [](const Cluster& c) { return c.get().network().trace_digest(); },
            "SHA-256 chained over every trace line: equal digests, equal runs.")
        .def(
            "replica",
            [](Cluster& c, ReplicaId id) -> std::optional<ReplicaHandle> {
                c.check_id(id);
                if (!c.get().replica(id)) return std::nullopt;
                return ReplicaHandle{&c, id, c.generation(id)};
            },
            py::arg("id"), py::keep_alive<0, 1>(),
            "Read access to replica `id`, or None while it is crashed.")
        .def(
            "store",
            [](Cluster& c, ReplicaId id) -> MemoryStore& {
                c.check_id(id);
                return c.get().store(id);
            },
            py::arg("id"), py::return_value_policy::reference_internal,
            "Replica `id`'s block store (it survives crashes; valid while the cluster lives).")
        .def(
            "check_safety", [](const Cluster& c) { unwrap(c.get().check_safety()); },
            "Raises popchain.Error unless every two honest stores hold the same block hash\n"
            "at every height both hold.")
        .def(
            "check_converged", [](const Cluster& c) { unwrap(c.get().check_converged()); },
            "Raises popchain.Error unless every up honest replica has the same height and\n"
            "state digest, passes the ledger invariants and its store matches its ledger.")
        .def(
            "max_honest_height", [](const Cluster& c) { return c.get().max_honest_height(); },
            "Highest height of any honest store.")
        .def(
            "summary", [](const Cluster& c) { return c.get().summary(); },
            "One line per replica and the client's backlog (for failure messages).");

    py::class_<net::ScenarioResult>(m, "ScenarioResult", "How a random fault scenario went.")
        .def_readonly("ok", &net::ScenarioResult::ok)
        .def_readonly("failure", &net::ScenarioResult::failure,
                      "Empty when ok; else the first failed check and a summary.")
        .def_readonly("height", &net::ScenarioResult::height)
        .def_readonly("end_time", &net::ScenarioResult::end_time, "Virtual ms at the end.")
        .def_readonly("messages", &net::ScenarioResult::messages, "Sent by replicas.")
        .def_readonly("trace_digest", &net::ScenarioResult::trace_digest)
        .def_readonly("trace", &net::ScenarioResult::trace)
        .def("__bool__", [](const net::ScenarioResult& r) { return r.ok; })
        .def("__repr__", [](const net::ScenarioResult& r) {
            return std::string("ScenarioResult(ok=") + (r.ok ? "True" : "False") +
                   ", height=" + std::to_string(r.height) +
                   ", end_time=" + std::to_string(r.end_time) + ")";
        });
    m.def(
        "describe_scenario",
        [](std::uint64_t seed, std::string_view profile) {
            return net::describe(net::random_scenario(seed, profile_of(profile)));
        },
        py::arg("seed"), py::arg("profile") = "all",
        "One line describing the random scenario of `seed` under `profile`.");
    m.def(
        "run_scenario",
        [](std::uint64_t seed, std::string_view profile, bool keep_trace) {
            return net::run_scenario(net::random_scenario(seed, profile_of(profile)), keep_trace);
        },
        py::arg("seed"), py::arg("profile") = "all", py::arg("keep_trace") = false,
        "Draws the random fault scenario of `seed` (profile: 'all' or 'today', then +kind or\n"
        "-kind, e.g. 'all-partitions') and runs it: safety throughout, liveness after the\n"
        "faults heal, convergence at the end. Failures are reported in the result, not\n"
        "raised (the same as build/tests/sim_replay --seed S --profile P).");
}

} // namespace popchain::python
