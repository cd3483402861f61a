// Random fault scenarios and their runner (see net/sim_scenario.hpp for the contract).
#include <popchain/net/sim_cluster.hpp>
#include <popchain/net/sim_scenario.hpp>

#include <algorithm>
#include <charconv>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <tuple>

namespace popchain::net {

ScenarioProfile ScenarioProfile::today() {
    ScenarioProfile p;
    p.drops = false;
    p.primary_crash = false;
    p.restarts = false;
    p.partitions = false;
    p.partition_primary = false;
    return p;
}

std::optional<ScenarioProfile> profile_named(std::string_view name) {
    const std::size_t base_end = std::min(name.find_first_of("+-"), name.size());
    const std::string_view base = name.substr(0, base_end);
    std::optional<ScenarioProfile> p;
    if (base == "all") p = ScenarioProfile::all();
    if (base == "today") p = ScenarioProfile::today();
    if (!p) return std::nullopt;
    for (std::size_t at = base_end; at < name.size();) {
        const bool on = name[at] == '+';
        const std::size_t end = std::min(name.find_first_of("+-", at + 1), name.size());
        const std::string_view kind = name.substr(at + 1, end - at - 1);
        bool* flag = kind == "delays"              ? &p->delays
                     : kind == "duplicates"        ? &p->duplicates
                     : kind == "drops"             ? &p->drops
                     : kind == "backup_crashes"    ? &p->backup_crashes
                     : kind == "primary_crash"     ? &p->primary_crash
                     : kind == "restarts"          ? &p->restarts
                     : kind == "partitions"        ? &p->partitions
                     : kind == "partition_primary" ? &p->partition_primary
                                                   : nullptr;
        if (!flag) return std::nullopt;
        *flag = on;
        at = end;
    }
    return p;
}

namespace {

constexpr Millis forever = std::numeric_limits<Millis>::max();
constexpr Millis safety_period = 1000;

std::string number(double v) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

std::string faults_text(const LinkFaults& f) {
    return "drop=" + number(f.drop) + " dup=" + number(f.duplicate) +
           " delay=" + std::to_string(f.min_delay) + ".." + std::to_string(f.max_delay);
}

bool same_faults(const LinkFaults& a, const LinkFaults& b) {
    return a.drop == b.drop && a.duplicate == b.duplicate && a.min_delay == b.min_delay &&
           a.max_delay == b.max_delay;
}

Result<void> check_faults(const LinkFaults& f, const std::string& where) {
    auto prob_ok = [](double p) { return p >= 0.0 && p <= 1.0; }; // false for NaN
    if (!prob_ok(f.drop) || !prob_ok(f.duplicate))
        return make_error(Errc::invalid_argument, where + ": probability outside [0, 1]");
    if (f.min_delay > f.max_delay)
        return make_error(Errc::invalid_argument, where + ": min_delay > max_delay");
    return {};
}

std::string group_text(const std::vector<NodeId>& g) {
    std::string out = "{";
    for (std::size_t i = 0; i < g.size(); ++i)
        out += (i ? "," : "") + std::to_string(g[i]);
    return out + "}";
}

// A fault that holds over [start, end): replicas down or cut off, or lossy links.
struct Episode {
    enum class Kind { crash, partition, drops } kind = Kind::crash;
    Millis start = 0, end = 0; // end == forever: a crash never undone
    std::vector<std::uint32_t> replicas;
    double drop = 0;
};

bool overlap(const Episode& a, const Episode& b) {
    return a.start < b.end && b.start < a.end;
}

// Whether `c` can join `taken` without two lossy-link or two partition episodes at once, a
// replica in two overlapping episodes, or more than f replicas out at any instant.
bool fits(const Episode& c, const std::vector<Episode>& taken, std::uint32_t f) {
    using K = Episode::Kind;
    if (c.kind == K::drops) {
        for (const auto& e : taken)
            if (e.kind == K::drops && overlap(c, e)) return false;
        return true;
    }
    if (c.replicas.size() > f) return false;
    std::vector<Millis> instants{c.start};
    for (const auto& e : taken) {
        if (e.kind == K::drops || !overlap(c, e)) continue;
        if (e.kind == K::partition && c.kind == K::partition) return false;
        for (auto r : e.replicas)
            if (std::find(c.replicas.begin(), c.replicas.end(), r) != c.replicas.end())
                return false;
        if (e.start > c.start) instants.push_back(e.start);
    }
    // The count only rises at a start, so the maximum over c's interval is at one of these.
    for (Millis t : instants) {
        std::size_t out = c.replicas.size();
        for (const auto& e : taken)
            if (e.kind != K::drops && e.start <= t && t < e.end) out += e.replicas.size();
        if (out > f) return false;
    }
    return true;
}

} // namespace

Scenario random_scenario(std::uint64_t seed, const ScenarioProfile& profile) {
    // A stream of its own: the SimNetwork is seeded with `seed` itself.
    SimRng rng(seed ^ 0x5ce7a210c0ffee00ull);
    auto pick = [&](std::uint64_t lo, std::uint64_t hi) { return rng.uniform(lo, hi); };

    Scenario s;
    s.seed = seed;
    s.replicas = profile.sizes.empty() ? 4 : profile.sizes[pick(0, profile.sizes.size() - 1)];
    const std::uint32_t n = s.replicas;
    const std::uint32_t f = pbft::max_faulty(n);

    if (profile.delays) {
        s.faults.min_delay = pick(1, 5);
        s.faults.max_delay = s.faults.min_delay + pick(0, 40);
    } else {
        s.faults.min_delay = s.faults.max_delay = 2;
    }
    s.faults.duplicate = profile.duplicates ? static_cast<double>(pick(1, 20)) / 100 : 0.0;

    s.config.max_block_txs = static_cast<std::uint32_t>(pick(1, 16));
    s.config.max_batch_delay_ms = pick(0, 10);
    // Every checkpoint costs n(n-1) signature checks: intervals of one block would make
    // the checkpoints, not the scenario, the bulk of a run.
    s.config.checkpoint_interval = 2u << pick(0, 3);
    s.config.watermark_window =
        s.config.checkpoint_interval * static_cast<std::uint32_t>(pick(2, 4));

    s.txs = pick(profile.min_txs, std::max(profile.min_txs, profile.max_txs));
    s.submit_spacing = pick(0, 20);
    const Millis submit_end = s.txs == 0 ? 0 : (s.txs - 1) * s.submit_spacing;
    s.heal_at = submit_end + pick(200, 2000);
    s.liveness_bound = profile.liveness_bound;

    using K = Episode::Kind;
    enum class Draw { drops, backup_crash, primary_crash, partition };
    std::vector<Draw> kinds;
    if (profile.drops) kinds.push_back(Draw::drops);
    if (profile.backup_crashes && n > 1) kinds.push_back(Draw::backup_crash);
    if (profile.primary_crash) kinds.push_back(Draw::primary_crash);
    if (profile.partitions && f > 0) kinds.push_back(Draw::partition);

    std::vector<Episode> taken;
    for (std::size_t k = 0; k < profile.max_episodes && !kinds.empty(); ++k) {
        // A drawn episode that would break the bound is redrawn a few times, then skipped.
        for (int attempt = 0; attempt < 8; ++attempt) {
            Episode e;
            e.start = pick(0, s.heal_at - 1);
            const Draw kind = kinds[pick(0, kinds.size() - 1)];
            if (kind == Draw::drops) {
                e.kind = K::drops;
                e.end = pick(e.start + 1, s.heal_at);
                e.drop = static_cast<double>(pick(1, 30)) / 100;
            } else if (kind == Draw::partition) {
                e.kind = K::partition;
                e.end = std::min(s.heal_at,
                                 e.start + pick(1, std::max<Millis>(1, profile.max_partition_ms)));
                std::vector<std::uint32_t> candidates;
                for (std::uint32_t r = profile.partition_primary ? 0 : 1; r < n; ++r)
                    candidates.push_back(r);
                const std::size_t size = std::min<std::size_t>(pick(1, f), candidates.size());
                for (std::size_t i = 0; i < size; ++i) { // partial Fisher-Yates
                    std::swap(candidates[i], candidates[pick(i, candidates.size() - 1)]);
                    e.replicas.push_back(candidates[i]);
                }
                std::sort(e.replicas.begin(), e.replicas.end());
            } else {
                e.kind = K::crash;
                e.replicas.push_back(
                    kind == Draw::primary_crash ? 0 : static_cast<std::uint32_t>(pick(1, n - 1)));
                e.end = profile.restarts ? pick(e.start + 1, s.heal_at) : forever;
            }
            if (e.replicas.empty() && e.kind != K::drops) continue;
            if (!fits(e, taken, f)) continue;
            taken.push_back(std::move(e));
            break;
        }
    }

    // Each episode becomes a starting and an ending event; at equal times endings go first,
    // so a replica restarted or a partition healed at t frees its place for one starting at t.
    std::vector<std::tuple<Millis, int, std::size_t, ScenarioEvent>> timed;
    auto add = [&](Millis at, bool ending, ScenarioEvent ev) {
        ev.at = at;
        timed.emplace_back(at, ending ? 0 : 1, timed.size(), std::move(ev));
    };
    for (const auto& e : taken) {
        ScenarioEvent begin, finish;
        switch (e.kind) {
        case K::drops:
            begin.kind = finish.kind = ScenarioEvent::Kind::set_faults;
            begin.faults = finish.faults = s.faults;
            begin.faults.drop = e.drop;
            break;
        case K::crash:
            begin.kind = ScenarioEvent::Kind::crash;
            finish.kind = ScenarioEvent::Kind::restart;
            begin.replica = finish.replica = e.replicas.front();
            break;
        case K::partition: {
            begin.kind = ScenarioEvent::Kind::partition;
            finish.kind = ScenarioEvent::Kind::heal;
            std::vector<NodeId> rest;
            for (std::uint32_t r = 0; r < n; ++r)
                if (std::find(e.replicas.begin(), e.replicas.end(), r) == e.replicas.end())
                    rest.push_back(r);
            begin.groups = {std::vector<NodeId>(e.replicas.begin(), e.replicas.end()), rest};
            break;
        }
        }
        add(e.start, false, std::move(begin));
        if (e.end != forever) add(e.end, true, std::move(finish));
    }
    std::sort(timed.begin(), timed.end(), [](const auto& a, const auto& b) {
        return std::tie(std::get<0>(a), std::get<1>(a), std::get<2>(a)) <
               std::tie(std::get<0>(b), std::get<1>(b), std::get<2>(b));
    });
    for (auto& t : timed)
        s.events.push_back(std::move(std::get<3>(t)));
    return s;
}

Result<void> validate(const Scenario& s) {
    const std::uint32_t n = s.replicas;
    if (n == 0) return make_error(Errc::invalid_argument, "scenario: no replicas");
    if (s.max_messages == 0)
        return make_error(Errc::invalid_argument, "scenario: max_messages is 0");
    if (auto ok = s.config.validate(n); !ok)
        return make_error(ok.code(), "scenario: config: " + ok.error().detail);
    if (auto ok = check_faults(s.faults, "scenario: base faults"); !ok) return ok;
    const std::uint32_t f = pbft::max_faulty(n);

    std::set<std::uint32_t> down, cut;
    LinkFaults defaults = s.faults;
    std::map<std::pair<NodeId, NodeId>, LinkFaults> links;
    bool partitioned = false;
    for (std::size_t i = 0; i < s.events.size(); ++i) {
        const ScenarioEvent& ev = s.events[i];
        const std::string where =
            "scenario: event " + std::to_string(i) + " at t=" + std::to_string(ev.at);
        if (i > 0 && ev.at < s.events[i - 1].at)
            return make_error(Errc::invalid_argument, where + " is out of time order");
        if (ev.at > s.heal_at)
            return make_error(Errc::invalid_argument, where + " is after heal_at");
        switch (ev.kind) {
        case ScenarioEvent::Kind::crash:
        case ScenarioEvent::Kind::restart: {
            if (ev.replica >= n)
                return make_error(Errc::invalid_argument,
                                  where + ": no replica " + std::to_string(ev.replica));
            const bool crash = ev.kind == ScenarioEvent::Kind::crash;
            const bool is_down = down.count(ev.replica) != 0;
            if (crash == is_down)
                return make_error(Errc::invalid_argument, where + ": replica " +
                                                              std::to_string(ev.replica) + " is " +
                                                              (is_down ? "down already" : "up"));
            if (crash)
                down.insert(ev.replica);
            else
                down.erase(ev.replica);
            break;
        }
        case ScenarioEvent::Kind::partition: {
            // Cut off: every replica outside the group with the most replicas.
            std::set<std::uint32_t> seen;
            std::size_t largest = 0;
            for (std::size_t g = 0; g < ev.groups.size(); ++g) {
                for (NodeId id : ev.groups[g]) {
                    if (id >= n)
                        return make_error(Errc::invalid_argument,
                                          where + ": no replica " + std::to_string(id));
                    if (!seen.insert(id).second)
                        return make_error(Errc::invalid_argument, where + ": replica " +
                                                                      std::to_string(id) +
                                                                      " is in two groups");
                }
                if (ev.groups[g].size() > ev.groups[largest].size()) largest = g;
            }
            cut.clear();
            for (std::uint32_t r = 0; r < n; ++r)
                if (ev.groups.empty() ||
                    std::find(ev.groups[largest].begin(), ev.groups[largest].end(), r) ==
                        ev.groups[largest].end())
                    cut.insert(r);
            partitioned = true;
            break;
        }
        case ScenarioEvent::Kind::heal:
            cut.clear();
            partitioned = false;
            break;
        case ScenarioEvent::Kind::set_faults:
            if (auto ok = check_faults(ev.faults, where); !ok) return ok;
            if (ev.link) {
                if (ev.link->first >= n || ev.link->second >= n)
                    return make_error(Errc::invalid_argument, where + ": no such link");
                links[*ev.link] = ev.faults;
            } else {
                defaults = ev.faults;
            }
            break;
        }
        // The bound holds once all the events of one instant have happened.
        if (i + 1 == s.events.size() || s.events[i + 1].at != ev.at) {
            std::set<std::uint32_t> out = down;
            out.insert(cut.begin(), cut.end());
            if (out.size() > f)
                return make_error(
                    Errc::invalid_argument,
                    "scenario: at t=" + std::to_string(ev.at) + " " + std::to_string(out.size()) +
                        " replicas are down or cut off, more than f=" + std::to_string(f));
        }
    }
    if (partitioned)
        return make_error(Errc::invalid_argument, "scenario: a partition outlasts heal_at");
    if (!same_faults(defaults, s.faults))
        return make_error(Errc::invalid_argument,
                          "scenario: link faults are not back to the base ones by heal_at");
    for (const auto& [link, faults] : links)
        if (!same_faults(faults, s.faults))
            return make_error(Errc::invalid_argument,
                              "scenario: link " + std::to_string(link.first) + "->" +
                                  std::to_string(link.second) +
                                  " is not back to the base faults by heal_at");
    return {};
}

std::string describe(const Scenario& s) {
    std::string out = "seed=" + std::to_string(s.seed) + " n=" + std::to_string(s.replicas) +
                      " txs=" + std::to_string(s.txs) + "/" + std::to_string(s.submit_spacing) +
                      "ms links[" + faults_text(s.faults) +
                      "] config[block<=" + std::to_string(s.config.max_block_txs) +
                      " batch=" + std::to_string(s.config.max_batch_delay_ms) +
                      "ms cp=" + std::to_string(s.config.checkpoint_interval) +
                      " win=" + std::to_string(s.config.watermark_window) + "] events[";
    for (std::size_t i = 0; i < s.events.size(); ++i) {
        const ScenarioEvent& ev = s.events[i];
        out += (i ? "; t=" : "t=") + std::to_string(ev.at) + " ";
        switch (ev.kind) {
        case ScenarioEvent::Kind::crash: out += "crash " + std::to_string(ev.replica); break;
        case ScenarioEvent::Kind::restart: out += "restart " + std::to_string(ev.replica); break;
        case ScenarioEvent::Kind::partition:
            out += "partition";
            for (const auto& g : ev.groups)
                out += " " + group_text(g);
            break;
        case ScenarioEvent::Kind::heal: out += "heal"; break;
        case ScenarioEvent::Kind::set_faults:
            out += "faults ";
            if (ev.link)
                out +=
                    std::to_string(ev.link->first) + "->" + std::to_string(ev.link->second) + " ";
            out += faults_text(ev.faults);
            break;
        }
    }
    out += "] heal_at=" + std::to_string(s.heal_at) + " bound=" + std::to_string(s.liveness_bound);
    return out;
}

namespace {

void apply_event(SimCluster& c, const ScenarioEvent& ev) {
    SimNetwork& net = c.network();
    switch (ev.kind) {
    case ScenarioEvent::Kind::crash: c.crash(ev.replica); break;
    case ScenarioEvent::Kind::restart: c.restart(ev.replica); break;
    case ScenarioEvent::Kind::partition: {
        // The client is not a replica and must not be isolated: it joins the largest group.
        auto groups = ev.groups;
        if (groups.empty()) groups.emplace_back();
        std::size_t largest = 0;
        for (std::size_t g = 1; g < groups.size(); ++g)
            if (groups[g].size() > groups[largest].size()) largest = g;
        groups[largest].push_back(SimCluster::client_node);
        net.partition(std::move(groups));
        break;
    }
    case ScenarioEvent::Kind::heal: net.heal(); break;
    case ScenarioEvent::Kind::set_faults:
        if (ev.link)
            net.set_link_faults(ev.link->first, ev.link->second, ev.faults);
        else
            net.set_default_faults(ev.faults);
        break;
    }
}

} // namespace

ScenarioResult run_scenario(const Scenario& s, bool keep_trace) {
    ScenarioResult out;
    if (auto ok = validate(s); !ok) {
        out.failure = "invalid scenario: " + ok.error().message();
        return out;
    }
    // Declared before the cluster: the network's filter refers to them.
    std::uint64_t messages = 0;
    bool flooded = false;
    std::unique_ptr<SimCluster> cluster;
    try {
        SimClusterOptions options;
        options.replicas = s.replicas;
        options.seed = s.seed;
        options.faults = s.faults;
        options.config = s.config;
        options.trace = keep_trace;
        cluster = std::make_unique<SimCluster>(std::move(options));
        SimCluster& c = *cluster;
        SimNetwork& net = c.network();
        const std::size_t wallets = c.options().wallets;

        auto failed = [&](const std::string& what) {
            out.failure = what + "\n" + c.summary();
            return false;
        };
        // A protocol that floods the network would otherwise exhaust memory before any
        // deadline: past the budget every message is dropped and the run fails at the next
        // check, naming the flood.
        net.set_filter([&](NodeId, NodeId, ByteView) {
            if (++messages <= s.max_messages) return true;
            flooded = true;
            return false;
        });
        auto safe = [&](const char* when) {
            if (flooded)
                return failed("flooding: more than " + std::to_string(s.max_messages) +
                              " messages sent by t=" + std::to_string(net.now()));
            auto ok = c.check_safety();
            return ok ? true
                      : failed(std::string(when) + " t=" + std::to_string(net.now()) + ": " +
                               ok.error().message());
        };

        // Runs the network to `t`, checking safety every second of virtual time on the way,
        // so a divergence is reported near when it happened.
        auto advance = [&](Millis t) {
            while (net.now() + safety_period < t) {
                net.run_for(safety_period);
                if (!safe("periodic check")) return false;
            }
            net.run_until(t);
            return true;
        };

        std::vector<Hash256> txids;
        std::size_t next_event = 0;
        bool ok = true;
        while (ok && (next_event < s.events.size() || txids.size() < s.txs)) {
            const Millis event_at =
                next_event < s.events.size() ? s.events[next_event].at : forever;
            const Millis submit_at =
                txids.size() < s.txs ? txids.size() * s.submit_spacing : forever;
            if (!advance(std::min(event_at, submit_at))) {
                ok = false;
            } else if (event_at <= submit_at) {
                apply_event(c, s.events[next_event++]);
                ok = safe("after an event");
            } else {
                const std::size_t i = txids.size();
                Tx tx = c.transfer(i % wallets, (i + 1) % wallets, 1 + i % 97);
                txids.push_back(tx.id());
                c.submit_with_retry(tx, static_cast<pbft::ReplicaId>(i % s.replicas));
            }
        }

        const Millis deadline = s.heal_at + s.liveness_bound;
        bool live = false;
        while (ok && !live) {
            live = c.run_until_committed(txids, std::min(deadline, net.now() + safety_period));
            ok = safe("while waiting");
            if (net.now() >= deadline) break;
        }
        if (ok && !live) {
            std::string lacking;
            for (std::uint32_t i = 0; i < s.replicas; ++i)
                if (c.is_up(i) && !c.is_byzantine(i))
                    if (const std::size_t m = c.missing(txids, i))
                        lacking += (lacking.empty() ? "" : ", ") + std::string("replica ") +
                                   std::to_string(i) + " lacks " + std::to_string(m);
            ok = failed("liveness: not every transfer is executed at every up honest replica "
                        "by t=" +
                        std::to_string(deadline) + " (heal_at " + std::to_string(s.heal_at) +
                        " + bound " + std::to_string(s.liveness_bound) + "): " + lacking + " of " +
                        std::to_string(txids.size()));
        }
        if (ok) ok = safe("at the end");
        if (ok) {
            if (auto conv = c.check_converged(); !conv) ok = failed(conv.error().message());
        }
        out.ok = ok;
    } catch (const std::exception& e) {
        out.ok = false;
        out.failure = std::string("exception: ") + e.what();
        if (cluster) out.failure += "\n" + cluster->summary();
    }
    out.messages = messages;
    if (cluster) {
        out.height = cluster->max_honest_height();
        out.end_time = cluster->network().now();
        out.trace_digest = cluster->network().trace_digest();
        if (keep_trace) out.trace = cluster->network().trace();
    }
    return out;
}

} // namespace popchain::net
