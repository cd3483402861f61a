// The simulated cluster and the random-scenario runner: a cluster commits what its client
// submits, its checks catch what they are meant to catch, crashes keep stores, runs are
// reproducible from their seed, and random scenarios stay within their fault bounds.
#include <popchain/net/sim_cluster.hpp>
#include <popchain/net/sim_scenario.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

using namespace popchain;
using namespace popchain::net;

namespace {

pbft::ReplicaConfig small_blocks() {
    pbft::ReplicaConfig c;
    c.max_block_txs = 8;
    c.max_batch_delay_ms = 3;
    c.checkpoint_interval = 4;
    c.watermark_window = 8;
    return c;
}

SimClusterOptions options(std::uint64_t seed) {
    SimClusterOptions o;
    o.seed = seed;
    o.faults.min_delay = 1;
    o.faults.max_delay = 20;
    o.faults.duplicate = 0.05;
    o.config = small_blocks();
    return o;
}

// Submits `count` transfers with retries, round-robin over wallets and entry replicas, `gap`
// ms apart; returns their ids.
std::vector<Hash256> submit_transfers(SimCluster& c, std::size_t count, Millis gap) {
    std::vector<Hash256> ids;
    const std::size_t wallets = c.options().wallets;
    for (std::size_t i = 0; i < count; ++i) {
        Tx tx = c.transfer(i % wallets, (i + 1) % wallets, 1 + i);
        ids.push_back(tx.id());
        c.submit_with_retry(tx, static_cast<pbft::ReplicaId>(i % c.size()));
        if (gap) c.network().run_for(gap);
    }
    return ids;
}

std::string message(const Result<void>& r) {
    return r.ok() ? "ok" : r.error().message();
}

std::vector<Hash256> chain(const SimCluster& c, pbft::ReplicaId id) {
    std::vector<Hash256> out;
    const auto tip = c.store(id).tip_height();
    for (std::uint64_t h = 0; tip && h <= *tip; ++h)
        out.push_back(c.store(id).block_at(h)->hash());
    return out;
}

// Passes everything through and counts what the replica sends.
struct CountingTransport final : Transport {
    CountingTransport(Transport& t, std::size_t& n) : inner(t), sends(n) {}
    NodeId self() const override { return inner.self(); }
    void send(NodeId to, Bytes m) override {
        ++sends;
        inner.send(to, std::move(m));
    }
    TimerId set_timer(Millis d, std::function<void()> f) override {
        return inner.set_timer(d, std::move(f));
    }
    void cancel_timer(TimerId id) override { inner.cancel_timer(id); }
    Millis now() const override { return inner.now(); }
    Transport& inner;
    std::size_t& sends;
};

} // namespace

TEST_CASE("sim cluster: 4 replicas commit 100 transfers submitted with retries") {
    SimCluster c(options(17));
    REQUIRE(c.size() == 4);
    REQUIRE(c.genesis().replicas.size() == 4);
    const auto ids = submit_transfers(c, 100, 2);
    REQUIRE_MESSAGE(c.run_until_committed(ids, 60'000), c.summary());
    CHECK(message(c.check_safety()) == "ok");
    CHECK(message(c.check_converged()) == "ok");

    std::uint64_t txs = 0;
    for (std::uint64_t h = 1; h <= c.replica(0)->height(); ++h)
        txs += c.store(0).block_at(h)->txs.size();
    CHECK(txs == 100);
    for (std::uint32_t i = 0; i < c.size(); ++i) {
        CAPTURE(i);
        CHECK(c.missing(ids, i) == 0);
        CHECK(c.replica(i)->height() == c.replica(0)->height());
    }
    // Wallet w sent transfers i with i mod 8 == w: 13 each for w < 4, 12 for the others.
    for (std::size_t w = 0; w < c.options().wallets; ++w)
        CHECK(c.replica(3)->ledger().account(c.wallet(w).address()).nonce == (w < 4 ? 13 : 12));
    CHECK(c.replica(1)->ledger().state().total_minted == 8 * c.options().balance);

    // Once the client sees them committed, it stops retrying.
    c.network().run_for(c.options().client_retry_ms + 1);
    CHECK(c.retrying() == 0);

    // Submitting a committed transaction again is refused; one to a crashed replica too.
    Tx again = c.store(0).block_at(1)->txs.front();
    CHECK_FALSE(c.submit(again, 2).ok());
    c.crash(2);
    auto down = c.submit(c.transfer(0, 1, 5), 2);
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().message().find("replica 2 is down") != std::string::npos);
}

TEST_CASE("sim cluster: the checks catch a divergent store and a lagging replica") {
    SimCluster c(options(3));
    c.crash(3); // before anything is committed: its store holds only genesis
    const auto ids = submit_transfers(c, 12, 1);
    REQUIRE_MESSAGE(c.run_until_committed(ids, 60'000), c.summary());
    REQUIRE(c.replica(0)->height() >= 1);
    CHECK(message(c.check_safety()) == "ok");
    CHECK(message(c.check_converged()) == "ok"); // replica 3 is down: not compared

    // A block at height 1 in replica 3's store that the others never agreed on.
    auto ledger = c.genesis().ledger();
    REQUIRE(ledger.ok());
    Tx odd;
    odd.kind = TxKind::transfer;
    odd.chain_id = c.genesis().params.chain_id;
    odd.to = c.wallet(1).address();
    odd.amount = 999'999;
    const BuiltBlock forged =
        ledger->build_block({sign_tx(odd, c.wallet(7))}, 0, 0, c.genesis().timestamp_ms + 1);
    REQUIRE(forged.rejected.empty());
    REQUIRE(c.store(3).append(forged.block, forged.delta).ok());

    auto safety = c.check_safety();
    REQUIRE_FALSE(safety.ok());
    CHECK(safety.error().message().find("replicas 0 and 3") != std::string::npos);
    CHECK(safety.error().message().find("height 1") != std::string::npos);

    // Reopened from that store, replica 3 sits at height 1 while the others are further.
    c.restart(3);
    REQUIRE(c.replica(3) != nullptr);
    CHECK(c.replica(3)->height() == 1);
    auto converged = c.check_converged();
    REQUIRE_FALSE(converged.ok());
    CHECK(converged.error().message().find("replica 0 and replica 3") != std::string::npos);
    CHECK(converged.error().message().find("heights") != std::string::npos);

    // A replica marked Byzantine is left out of both checks.
    c.mark_byzantine(3);
    CHECK(c.is_byzantine(3));
    CHECK(message(c.check_safety()) == "ok");
    CHECK(message(c.check_converged()) == "ok");
}

TEST_CASE("sim cluster: a crashed backup reopens from its store at the same height") {
    SimCluster c(options(5));
    const auto ids = submit_transfers(c, 30, 2);
    REQUIRE_MESSAGE(c.run_until_committed(ids, 60'000), c.summary());
    const std::uint64_t height = c.replica(2)->height();
    const Hash256 digest = c.replica(2)->ledger().state_digest();
    REQUIRE(height > 0);

    c.crash(2);
    CHECK(c.replica(2) == nullptr);
    CHECK_FALSE(c.is_up(2));
    CHECK_FALSE(c.network().is_up(2));
    CHECK(c.store(2).tip_height() == height); // the store survives the crash
    CHECK_THROWS_AS(c.crash(2), std::logic_error);
    CHECK_THROWS_AS(c.restart(1), std::logic_error);
    CHECK_THROWS_AS(c.replica(4), std::logic_error);

    c.network().run_for(100);
    c.restart(2);
    REQUIRE(c.replica(2) != nullptr);
    CHECK(c.network().is_up(2));
    CHECK(c.replica(2)->height() == height);
    CHECK(c.replica(2)->ledger().state_digest() == digest);
    CHECK(message(c.check_safety()) == "ok");
    CHECK(message(c.check_converged()) == "ok");
}

TEST_CASE("sim cluster: wrap decorates every replica's transport, again after a restart") {
    std::map<pbft::ReplicaId, int> wrapped;
    std::size_t sends = 0;
    SimClusterOptions o = options(9);
    o.wrap = [&](pbft::ReplicaId id, const SigningKey& key, const std::vector<ReplicaInfo>& set,
                 Transport& inner) -> std::unique_ptr<Transport> {
        CHECK(inner.self() == id);
        CHECK(set.size() == 4);
        CHECK(set.at(id).key == key.public_key());
        ++wrapped[id];
        return std::make_unique<CountingTransport>(inner, sends);
    };
    SimCluster c(o);
    CHECK(wrapped == std::map<pbft::ReplicaId, int>{{0, 1}, {1, 1}, {2, 1}, {3, 1}});
    const auto ids = submit_transfers(c, 10, 1);
    REQUIRE_MESSAGE(c.run_until_committed(ids, 60'000), c.summary());
    // Every replica message went through a wrapper (the client sends none).
    CHECK(sends > 0);
    CHECK(sends == c.network().stats().sent);
    c.crash(1);
    c.restart(1);
    CHECK(wrapped[1] == 2);

    // A failing Replica::create surfaces as an exception carrying its message.
    SimClusterOptions bad = options(9);
    bad.config.watermark_window = 1;
    try {
        SimCluster broken(bad);
        FAIL("a cluster with a bad configuration was built");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find("watermark_window") != std::string::npos);
    }
}

TEST_CASE("sim cluster: the same seed gives the same run, another seed another") {
    auto run = [](std::uint64_t seed) {
        SimCluster c(options(seed));
        const auto ids = submit_transfers(c, 40, 1);
        REQUIRE_MESSAGE(c.run_until_committed(ids, 60'000), c.summary());
        c.network().run_for(1000); // the retry timer included
        CHECK(message(c.check_converged()) == "ok");
        return std::make_pair(c.network().trace_digest(), chain(c, 0));
    };
    const auto a = run(41);
    const auto b = run(41);
    const auto other = run(42);
    CHECK(a.first == b.first);
    CHECK(a.second == b.second);
    CHECK(other.first != a.first);

    // The same holds for whole scenarios, trace lines included.
    const Scenario s = random_scenario(11, ScenarioProfile::today());
    const ScenarioResult r1 = run_scenario(s, true);
    const ScenarioResult r2 = run_scenario(s, true);
    CHECK_MESSAGE(r1.ok, r1.failure);
    CHECK(r1.trace_digest == r2.trace_digest);
    CHECK(r1.trace == r2.trace);
    CHECK(r1.height == r2.height);
    CHECK(r1.end_time == r2.end_time);
    CHECK_FALSE(r1.trace.empty());
    CHECK(run_scenario(s, false).trace_digest == r1.trace_digest); // the text is optional
    CHECK(run_scenario(random_scenario(1, ScenarioProfile::today())).trace_digest !=
          r1.trace_digest);
}

TEST_CASE("sim cluster: a replica that agreement carries past its state transfer's target "
          "fetches the newer target") {
    // Found by a seed sweep: replica 3 started a transfer towards checkpoint 10, executed 10
    // and 11 by agreement while its fetches went unanswered, and then asked forever for the
    // empty range 12..10; the newer target (14) it had noted meanwhile was never fetched,
    // and the peers, past 14, no longer answered its votes. It lacked 9 of the 25 transfers.
    const Scenario s = random_scenario(80435, ScenarioProfile::all());
    REQUIRE(describe(s) ==
            "seed=80435 n=10 txs=25/12ms links[drop=0 dup=0.05 delay=5..29] config[block<=10 "
            "batch=7ms cp=2 win=8] events[t=22 faults drop=0.17 dup=0.05 delay=5..29; t=969 "
            "crash 4; t=1305 faults drop=0 dup=0.05 delay=5..29; t=1471 restart 4; t=1889 "
            "faults drop=0.01 dup=0.05 delay=5..29; t=2069 crash 0; t=2101 faults drop=0 "
            "dup=0.05 delay=5..29; t=2135 restart 0] heal_at=2135 bound=30000");
    const ScenarioResult r = run_scenario(s);
    CHECK_MESSAGE(r.ok, r.failure);
}

TEST_CASE("sim cluster: random scenarios are reproducible and stay within their bounds") {
    // An independent walk over the events: who is down or cut off at each instant.
    struct Walk {
        std::size_t max_out = 0;
        bool partitioned_after_heal = false, faults_after_heal = false;
        std::set<std::uint32_t> down_at_end;
        std::map<std::string, int> kinds;
    };
    auto walk = [](const Scenario& s) {
        Walk w;
        std::set<std::uint32_t> down, cut;
        bool partitioned = false, faulty = false;
        for (std::size_t i = 0; i < s.events.size(); ++i) {
            const ScenarioEvent& ev = s.events[i];
            CHECK(ev.at <= s.heal_at);
            if (i > 0) CHECK(s.events[i - 1].at <= ev.at);
            switch (ev.kind) {
            case ScenarioEvent::Kind::crash:
                CHECK(down.insert(ev.replica).second);
                ++w.kinds[ev.replica == 0 ? "primary crash" : "backup crash"];
                break;
            case ScenarioEvent::Kind::restart:
                CHECK(down.erase(ev.replica) == 1);
                ++w.kinds["restart"];
                break;
            case ScenarioEvent::Kind::partition:
                REQUIRE(ev.groups.size() == 2);
                cut = std::set<std::uint32_t>(ev.groups[0].begin(), ev.groups[0].end());
                CHECK(ev.groups[0].size() + ev.groups[1].size() == s.replicas);
                partitioned = true;
                ++w.kinds[cut.count(0) ? "primary partition" : "partition"];
                break;
            case ScenarioEvent::Kind::heal:
                cut.clear();
                partitioned = false;
                break;
            case ScenarioEvent::Kind::set_faults:
                faulty = ev.faults.drop != s.faults.drop;
                if (faulty) ++w.kinds["drops"];
                break;
            }
            if (i + 1 == s.events.size() || s.events[i + 1].at != ev.at) {
                std::set<std::uint32_t> out = down;
                out.insert(cut.begin(), cut.end());
                w.max_out = std::max(w.max_out, out.size());
            }
        }
        w.partitioned_after_heal = partitioned;
        w.faults_after_heal = faulty;
        w.down_at_end = down;
        return w;
    };

    const ScenarioProfile all = ScenarioProfile::all();
    const ScenarioProfile today = ScenarioProfile::today();
    std::map<std::string, int> seen_all, seen_today;
    std::set<std::uint32_t> sizes;
    for (std::uint64_t seed = 1; seed <= 500; ++seed) {
        CAPTURE(seed);
        for (const ScenarioProfile* p : {&all, &today}) {
            const Scenario s = random_scenario(seed, *p);
            REQUIRE(describe(s) == describe(random_scenario(seed, *p)));
            CHECK(message(validate(s)) == "ok");
            CHECK(s.seed == seed);
            CHECK(s.txs >= p->min_txs);
            CHECK(s.txs <= p->max_txs);
            CHECK(s.heal_at >= (s.txs - 1) * s.submit_spacing);
            sizes.insert(s.replicas);
            const Walk w = walk(s);
            CHECK(w.max_out <= pbft::max_faulty(s.replicas));
            CHECK_FALSE(w.partitioned_after_heal);
            CHECK_FALSE(w.faults_after_heal);
            if (p->restarts) CHECK(w.down_at_end.empty());
            for (const auto& [k, count] : w.kinds)
                (p == &all ? seen_all : seen_today)[k] += count;
        }
    }
    CHECK(sizes == std::set<std::uint32_t>{4, 7, 10});
    // Every kind the profile allows shows up; the ones it does not, never.
    for (const char* k :
         {"backup crash", "primary crash", "restart", "partition", "primary partition", "drops"}) {
        CAPTURE(k);
        CHECK(seen_all[k] > 0);
    }
    CHECK(seen_today["backup crash"] > 0);
    CHECK(seen_today.size() == 1);

    // Profiles by name, with kinds switched on or off.
    REQUIRE(profile_named("all"));
    CHECK(profile_named("all")->duplicates);
    auto quiet = profile_named("all-duplicates-drops");
    REQUIRE(quiet);
    CHECK_FALSE(quiet->duplicates);
    CHECK_FALSE(quiet->drops);
    CHECK(quiet->partitions);
    auto more = profile_named("today+restarts+partitions");
    REQUIRE(more);
    CHECK(more->restarts);
    CHECK(more->partitions);
    CHECK_FALSE(more->drops);
    CHECK_FALSE(profile_named("today+bogus"));
    CHECK_FALSE(profile_named("everything"));
    CHECK_FALSE(profile_named("all+"));
}

TEST_CASE("sim cluster: invalid scenarios are refused, valid ones run") {
    Scenario s;
    s.replicas = 4;
    s.config = small_blocks();
    s.txs = 6;
    s.heal_at = 500;
    ScenarioEvent crash1, crash2;
    crash1.at = 10;
    crash1.replica = 1;
    crash2.at = 20;
    crash2.replica = 2;
    s.events = {crash1, crash2};
    auto bad = validate(s);
    REQUIRE_FALSE(bad.ok());
    CHECK(bad.error().message().find("more than f=1") != std::string::npos);
    const ScenarioResult refused = run_scenario(s);
    CHECK_FALSE(refused.ok);
    CHECK(refused.failure.find("invalid scenario") == 0);

    // A partition that cuts off a second replica while one is down breaks the bound too.
    s.events.pop_back();
    ScenarioEvent partition;
    partition.at = 15;
    partition.kind = ScenarioEvent::Kind::partition;
    partition.groups = {{2}, {0, 1, 3}};
    s.events.push_back(partition);
    CHECK_FALSE(validate(s).ok());

    // Faults must be back to the base ones by heal_at, and a partition healed.
    ScenarioEvent lossy;
    lossy.at = 20;
    lossy.kind = ScenarioEvent::Kind::set_faults;
    lossy.faults = s.faults;
    lossy.faults.duplicate = 0.5;
    lossy.faults.max_delay = 10;
    s.events = {crash1, lossy};
    auto still_faulty = validate(s);
    REQUIRE_FALSE(still_faulty.ok());
    CHECK(still_faulty.error().message().find("back to the base") != std::string::npos);
    partition.at = 5;
    s.events = {partition};
    auto open = validate(s);
    REQUIRE_FALSE(open.ok());
    CHECK(open.error().message().find("outlasts heal_at") != std::string::npos);

    // A backup that crashes for good and a spell of heavy duplication: valid, and it passes.
    ScenarioEvent calm = lossy;
    calm.at = 200;
    calm.faults = s.faults;
    s.events = {crash1, lossy, calm};
    CHECK(message(validate(s)) == "ok");
    const ScenarioResult r = run_scenario(s);
    CHECK_MESSAGE(r.ok, (describe(s) + "\n" + r.failure));
    CHECK(r.height > 0);
    REQUIRE(r.messages > 20);

    // The same run under a message budget it exceeds fails as flooding.
    s.max_messages = r.messages / 2;
    const ScenarioResult flooded = run_scenario(s);
    CHECK_FALSE(flooded.ok);
    CHECK(flooded.failure.find("flooding: more than " + std::to_string(s.max_messages) +
                               " messages") == 0);
}
