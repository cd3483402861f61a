// Fault scenarios as data: what happens to a simulated cluster and when, drawn at random from
// a seed, run against a SimCluster and judged.
//
// A Scenario is a cluster size, base link conditions (delays, hence reordering, and
// duplicates, active for the whole run), a replica configuration, a stream of transfers
// (`txs` of them, one every `submit_spacing` ms from t=0, from wallet i mod W to the next
// wallet, entering at replica i mod n, each through SimCluster::submit_with_retry) and a
// time-ordered list of fault events. `heal_at` is the moment after which no fault is active:
// no event happens after it, every partition is healed and the link faults are back to the
// base ones by then. A crashed replica that the scenario never restarts stays down for the
// rest of the run (a permanent crash), counted against f throughout.
//
// The bound. At no instant are more than f = max_faulty(n) replicas down or cut off by a
// partition, counting both together; validate() checks it, together with well-formed events
// (ids in range, no crash of a down replica or restart of an up one, partition groups
// disjoint, times ordered and at most heal_at).
//
// Replica 0 is the primary of view 0 only: "primary crash" means crashing replica 0, which is
// the primary until a view change, and "backup" means any other replica.
//
// random_scenario(seed, profile) is a pure function of its arguments: the same seed and
// profile give the same scenario on every platform (it draws from SimRng, never from
// std::*_distribution). Fault episodes are drawn from the kinds the profile allows and
// rejected when they would break the bound, so a profile changes which faults appear, never
// the bound.
//
// run_scenario() builds a SimCluster with the scenario's seed, interleaves submissions and
// events in time order (events first at equal times) and checks safety after every event
// and every second of virtual time throughout, so a divergence is caught near when it
// happens. Then it requires liveness (every transfer in the store of every up honest replica
// by heal_at + liveness_bound), and at the end safety and convergence
// (SimCluster::check_safety, check_converged). A run whose replicas send more than
// max_messages fails as flooding. The result carries the first failure with a per-replica
// summary, the SimNetwork trace digest and, on request, the trace lines. An invalid scenario
// or an exception from the cluster is reported as a failure, not thrown.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/net/sim_network.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popchain::net {

struct ScenarioEvent {
    enum class Kind : std::uint8_t {
        crash,      // `replica` crashes (SimCluster::crash)
        restart,    // `replica` restarts from its store
        partition,  // `groups` (replica ids); the client is never cut off
        heal,       // removes the partition
        set_faults, // `faults` on `link`, or on every link (the default) when `link` is empty
    };
    Millis at = 0;
    Kind kind = Kind::crash;
    std::uint32_t replica = 0;
    std::vector<std::vector<NodeId>> groups;
    LinkFaults faults{};
    std::optional<std::pair<NodeId, NodeId>> link;
};

struct Scenario {
    std::uint64_t seed = 1; // of the SimNetwork (and so of every delay, drop, duplicate)
    std::uint32_t replicas = 4;
    LinkFaults faults{}; // base conditions
    pbft::ReplicaConfig config{};
    std::size_t txs = 20;
    Millis submit_spacing = 5;
    std::vector<ScenarioEvent> events; // ordered by `at`
    Millis heal_at = 0;
    Millis liveness_bound = 30'000; // after heal_at
    // Messages the replicas may send in the whole run; beyond it they are dropped and the run
    // fails as flooding (a message storm would otherwise exhaust memory first).
    std::uint64_t max_messages = 1'000'000;
};

// Which fault kinds random_scenario may draw. The default allows everything.
struct ScenarioProfile {
    bool delays = true;            // random delay ranges (reordering); else FIFO links
    bool duplicates = true;        // base duplicate probability
    bool drops = true;             // episodes of message loss on every link
    bool backup_crashes = true;    // crash a backup
    bool primary_crash = true;     // crash replica 0
    bool restarts = true;          // crashed replicas restart before heal_at; else they stay down
    bool partitions = true;        // cut off a minority of the backups for a while
    bool partition_primary = true; // ... which may include replica 0
    Millis max_partition_ms = 2'000;
    std::vector<std::uint32_t> sizes{4, 7, 10}; // n is drawn from these
    std::size_t min_txs = 5, max_txs = 30;
    std::size_t max_episodes = 4; // fault episodes tried per scenario
    Millis liveness_bound = 30'000;

    static ScenarioProfile all() { return {}; }
    // The kinds every seed is known to pass with the replica as it stands: delays,
    // reordering, duplicates and backups that crash for good. Widen it kind by kind (one line
    // each in today()) as the replica learns to survive more.
    static ScenarioProfile today();
};

// "all" or "today", optionally followed by +kind or -kind to allow or forbid one kind, where
// kind is a flag name above: "all-duplicates", "today+restarts+partitions". nullopt for an
// unknown base or kind.
std::optional<ScenarioProfile> profile_named(std::string_view name);

Scenario random_scenario(std::uint64_t seed, const ScenarioProfile& profile = {});
Result<void> validate(const Scenario& s);
// One line: seed, n, transfers, link conditions, configuration, events, heal_at, bound.
std::string describe(const Scenario& s);

struct ScenarioResult {
    bool ok = false;
    std::string failure;        // empty when ok; else the first failed check and a summary
    std::uint64_t height = 0;   // highest height of an honest store at the end
    Millis end_time = 0;        // virtual time at the end
    std::uint64_t messages = 0; // sent by replicas (what max_messages bounds)
    Hash256 trace_digest;
    std::vector<std::string> trace; // when asked for
};

ScenarioResult run_scenario(const Scenario& s, bool keep_trace = false);

} // namespace popchain::net
