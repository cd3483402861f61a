// The deterministic network simulator: delivery, faults, partitions, crash/restart, timers,
// the run loop and reproducibility.
#include <popchain/hex.hpp>
#include <popchain/net/sim_network.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::net;

namespace {

struct Arrival {
    Millis at;
    NodeId from;
    std::string text;
};

// Records what arrives; optionally reacts through `on`.
struct Recorder : Receiver {
    SimNetwork* net = nullptr;
    Transport* t = nullptr;
    std::vector<Arrival> got;
    std::function<void(NodeId, const std::string&)> on;
    int depth = 0;
    int max_depth = 0;
    // Bursts, as the texts delivered inside each; a message outside any burst is "!" + text.
    std::vector<std::vector<std::string>> bursts;
    bool in_burst = false;
    void on_burst_begin() override {
        REQUIRE_FALSE(in_burst);
        in_burst = true;
        bursts.emplace_back();
    }
    void on_burst_end() override {
        REQUIRE(in_burst);
        in_burst = false;
    }

    void on_message(NodeId from, ByteView message) override {
        ++depth;
        max_depth = std::max(max_depth, depth);
        std::string text(message.begin(), message.end());
        got.push_back({net->now(), from, text});
        if (in_burst)
            bursts.back().push_back(text);
        else
            bursts.push_back({"!" + text});
        if (on) on(from, text);
        --depth;
    }
    std::vector<std::string> texts() const {
        std::vector<std::string> out;
        for (const auto& a : got)
            out.push_back(a.text);
        return out;
    }
};

void attach(SimNetwork& net, NodeId id, Recorder& r) {
    r.net = &net;
    r.t = &net.attach(id, r);
}

LinkFaults fixed_delay(Millis d) {
    LinkFaults f;
    f.min_delay = d;
    f.max_delay = d;
    return f;
}

void check_accounting(const SimNetwork& net, std::uint64_t in_flight) {
    const SimStats& s = net.stats();
    CHECK(s.sent + s.duplicated == s.delivered + s.dropped_by_fault + s.dropped_by_partition +
                                       s.dropped_down + s.filtered + in_flight);
}

struct RunResult {
    Hash256 digest;
    std::vector<std::string> trace;
    SimStats stats;
};

// Five nodes gossiping over a lossy, duplicating, reordering network, with periodic timers,
// a partition, a crash and a restart: exercises every source of nondeterminism there is.
RunResult gossip_run(std::uint64_t seed, bool trace) {
    LinkFaults f;
    f.drop = 0.1;
    f.duplicate = 0.1;
    f.min_delay = 1;
    f.max_delay = 20;
    SimNetwork net(seed, f);
    net.enable_trace(trace);
    std::vector<Recorder> nodes(5);
    std::vector<Recorder> reborn(5);
    std::function<void(Transport&, int)> tick = [&](Transport& t, int n) {
        if (n == 0) return;
        for (NodeId to = 0; to < 5; ++to)
            t.send(to, to_bytes("tick " + std::to_string(t.self()) + " " + std::to_string(n)));
        t.set_timer(7 + t.self(), [&t, n, &tick] { tick(t, n - 1); });
    };
    for (NodeId i = 0; i < 5; ++i) {
        attach(net, i, nodes[i]);
        Recorder& me = nodes[i];
        me.on = [&me](NodeId from, const std::string& text) {
            if (text.rfind("tick", 0) == 0) me.t->send(from, to_bytes("ack " + text));
        };
        tick(*me.t, 10);
    }
    net.run_for(30);
    net.partition({{0, 1, 2}, {3, 4}});
    net.run_for(20);
    net.crash(4);
    net.heal();
    net.run_for(10);
    reborn[4].net = &net;
    reborn[4].t = &net.restart(4, reborn[4]);
    tick(*reborn[4].t, 3);
    net.run_until(1000);
    CHECK(net.pending_events() == 0);
    check_accounting(net, 0);
    return {net.trace_digest(), net.trace(), net.stats()};
}

} // namespace

TEST_CASE("sim rng: pinned output, ranges and probabilities") {
    // xoshiro256** seeded with splitmix64: the reference first output for seed 0.
    SimRng zero(0);
    CHECK(zero.next() == 0x99ec5f36cb75f2b4ull);
    CHECK(zero.next() == 0xbf6e1f784956452aull);

    SimRng r(7);
    std::map<std::uint64_t, int> seen;
    for (int i = 0; i < 2000; ++i) {
        std::uint64_t v = r.uniform(3, 9);
        REQUIRE(v >= 3);
        REQUIRE(v <= 9);
        ++seen[v];
    }
    CHECK(seen.size() == 7);
    CHECK(r.uniform(5, 5) == 5);
    (void)r.uniform(0, UINT64_MAX); // the whole range must not loop or divide by zero
    CHECK_THROWS_AS(r.uniform(2, 1), std::logic_error);
    int never = 0, always = 0;
    for (int i = 0; i < 1000; ++i) {
        never += r.chance(0.0);
        always += r.chance(1.0);
    }
    CHECK(never == 0);
    CHECK(always == 1000);
}

TEST_CASE("sim ping-pong between two nodes") {
    SimNetwork net(1);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    CHECK(a.t->self() == 0);
    CHECK(b.t->self() == 1);
    b.on = [&](NodeId from, const std::string& text) {
        b.t->send(from, to_bytes("pong" + text.substr(4)));
    };
    a.on = [&](NodeId from, const std::string& text) {
        int n = std::stoi(text.substr(5));
        if (n < 10) a.t->send(from, to_bytes("ping " + std::to_string(n + 1)));
    };
    a.t->send(1, to_bytes("ping 1"));
    net.run_until(10'000);
    REQUIRE(a.got.size() == 10);
    REQUIRE(b.got.size() == 10);
    CHECK(a.got.back().text == "pong 10");
    CHECK(b.got.front().text == "ping 1");
    CHECK(b.got.front().from == 0);
    CHECK(a.got.front().from == 1);
    CHECK(net.stats().sent == 20);
    CHECK(net.stats().delivered == 20);
    CHECK(net.now() == 10'000);
    CHECK(a.t->now() == 10'000);
    // Each hop takes 1..5 ms.
    CHECK(a.got.back().at >= 20);
    CHECK(a.got.back().at <= 100);
    check_accounting(net, 0);
}

TEST_CASE("sim same seed gives the same run, a different seed a different one") {
    RunResult a = gossip_run(42, true);
    RunResult b = gossip_run(42, true);
    RunResult quiet = gossip_run(42, false);
    RunResult c = gossip_run(43, true);
    CHECK(a.digest == b.digest);
    CHECK(a.trace == b.trace);
    CHECK(a.digest == quiet.digest); // the digest does not depend on keeping the text
    CHECK(quiet.trace.empty());
    CHECK(a.digest != c.digest);
    CHECK(a.trace != c.trace);
    // The scenario really exercised the faults.
    CHECK(a.stats.dropped_by_fault > 0);
    CHECK(a.stats.duplicated > 0);
    CHECK(a.stats.dropped_by_partition > 0);
    CHECK(a.stats.dropped_down > 0);
    CHECK(a.stats.timers_fired > 0);
    CHECK(a.trace.size() > 100);

    // The digest is the documented chain over the trace lines: d' = SHA-256(d || line).
    Hash256 chained{};
    for (const std::string& line : a.trace) {
        Bytes buf(chained.bytes.begin(), chained.bytes.end());
        buf.insert(buf.end(), line.begin(), line.end());
        chained = sha256(buf);
    }
    CHECK(chained == a.digest);
}

TEST_CASE("sim trace lines") {
    SimNetwork net(5, fixed_delay(3));
    net.enable_trace(true);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    Bytes msg = to_bytes("hello");
    const std::string tag = SimNetwork::message_tag(msg);
    REQUIRE(tag.size() == 16);
    CHECK(tag.starts_with("len=5 h="));
    CHECK(tag.find_first_not_of("0123456789abcdef", 8) == std::string::npos);
    a.t->send(1, msg);
    TimerId id = b.t->set_timer(4, [] {});
    net.run_until(10);
    net.partition({{0}, {1}});
    a.t->send(1, msg);
    net.crash(1);
    const std::vector<std::string> want = {
        "t=0 attach 0",
        "t=0 attach 1",
        "t=3 deliver 0->1 " + tag,
        "t=4 timer node=1 id=" + std::to_string(id),
        "t=10 partition {0} {1}",
        "t=10 drop(partition) 0->1 " + tag,
        "t=10 crash 1 timers=0 msgs=0",
    };
    CHECK(net.trace() == want);
}

TEST_CASE("sim delays stay within [min_delay, max_delay]") {
    LinkFaults f;
    f.min_delay = 3;
    f.max_delay = 9;
    SimNetwork net(11, f);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    net.run_until(100);
    for (int i = 0; i < 1000; ++i)
        a.t->send(1, to_bytes("m"));
    net.run_until(1000);
    REQUIRE(b.got.size() == 1000);
    std::map<Millis, int> delays;
    for (const auto& arr : b.got) {
        REQUIRE(arr.at >= 103);
        REQUIRE(arr.at <= 109);
        ++delays[arr.at - 100];
    }
    CHECK(delays.size() == 7); // both ends of the range occur

    // A per-link override applies to that direction only.
    net.set_link_faults(1, 0, fixed_delay(50));
    Millis start = net.now();
    b.t->send(0, to_bytes("slow"));
    a.t->send(1, to_bytes("fast"));
    net.run_until(start + 100);
    CHECK(a.got.back().at == start + 50);
    CHECK(b.got.back().at - start >= 3);
    CHECK(b.got.back().at - start <= 9);
    net.clear_link_faults(1, 0);
    CHECK(net.link_faults(1, 0).max_delay == 9);
}

TEST_CASE("sim drop rate is near the setting") {
    LinkFaults f;
    f.drop = 0.3;
    SimNetwork net(2024, f);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    for (int i = 0; i < 10'000; ++i)
        a.t->send(1, to_bytes("x"));
    net.run_until(100);
    const SimStats& s = net.stats();
    CHECK(s.sent == 10'000);
    CHECK(s.dropped_by_fault > 2'700);
    CHECK(s.dropped_by_fault < 3'300);
    CHECK(s.delivered == 10'000 - s.dropped_by_fault);
    CHECK(b.got.size() == s.delivered);
    check_accounting(net, 0);
}

TEST_CASE("sim duplicates deliver an extra copy") {
    LinkFaults f;
    f.duplicate = 0.5;
    SimNetwork net(3, f);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    for (int i = 0; i < 2000; ++i)
        a.t->send(1, to_bytes(std::to_string(i)));
    net.run_until(100);
    const SimStats& s = net.stats();
    CHECK(s.duplicated > 850);
    CHECK(s.duplicated < 1150);
    CHECK(s.delivered == 2000 + s.duplicated);
    std::map<std::string, int> copies;
    for (const auto& arr : b.got)
        ++copies[arr.text];
    CHECK(copies.size() == 2000);
    std::uint64_t twice = 0;
    for (const auto& [text, n] : copies) {
        CHECK(n >= 1);
        CHECK(n <= 2);
        twice += n == 2;
    }
    CHECK(twice == s.duplicated);
}

TEST_CASE("sim reordering follows from random delays; a fixed delay keeps order") {
    std::vector<std::string> sent;
    for (int i = 0; i < 200; ++i)
        sent.push_back(std::to_string(i));
    {
        LinkFaults f;
        f.min_delay = 1;
        f.max_delay = 50;
        SimNetwork net(9, f);
        Recorder a, b;
        attach(net, 0, a);
        attach(net, 1, b);
        for (const auto& s : sent)
            a.t->send(1, to_bytes(s));
        net.run_until(100);
        REQUIRE(b.got.size() == 200);
        CHECK(b.texts() != sent);
        auto got = b.texts();
        std::sort(got.begin(), got.end());
        auto want = sent;
        std::sort(want.begin(), want.end());
        CHECK(got == want);
    }
    {
        SimNetwork net(9, fixed_delay(7));
        Recorder a, b;
        attach(net, 0, a);
        attach(net, 1, b);
        for (const auto& s : sent)
            a.t->send(1, to_bytes(s));
        net.run_until(100);
        CHECK(b.texts() == sent);
    }
}

TEST_CASE("sim partitions block across groups and heal restores") {
    SimNetwork net(4, fixed_delay(5));
    std::vector<Recorder> r(5);
    for (NodeId i = 0; i < 5; ++i)
        attach(net, i, r[i]);

    net.partition({{0, 1}, {2, 3}}); // 4 is listed nowhere: isolated
    CHECK(net.connected(0, 1));
    CHECK(net.connected(2, 3));
    CHECK_FALSE(net.connected(0, 2));
    CHECK_FALSE(net.connected(4, 0));
    CHECK(net.connected(4, 4));
    r[0].t->send(1, to_bytes("same group"));
    r[0].t->send(2, to_bytes("other group"));
    r[3].t->send(1, to_bytes("other group"));
    r[4].t->send(0, to_bytes("unlisted"));
    r[4].t->send(4, to_bytes("self"));
    net.run_for(10);
    CHECK(r[1].texts() == std::vector<std::string>{"same group"});
    CHECK(r[2].got.empty());
    CHECK(r[0].got.empty());
    CHECK(r[4].texts() == std::vector<std::string>{"self"});
    CHECK(net.stats().dropped_by_partition == 3);

    net.heal();
    r[0].t->send(2, to_bytes("healed"));
    r[4].t->send(0, to_bytes("healed"));
    net.run_for(10);
    CHECK(r[2].texts() == std::vector<std::string>{"healed"});
    CHECK(r[0].texts() == std::vector<std::string>{"healed"});

    // A partition cuts messages already in flight.
    r[0].t->send(3, to_bytes("in flight"));
    net.run_for(2);
    net.partition({{0, 1, 2}, {3, 4}});
    net.run_for(10);
    CHECK(r[3].got.empty());
    CHECK(net.stats().dropped_by_partition == 4);
    net.heal();

    // Isolation cuts one node off, except from itself.
    net.isolate(1);
    r[0].t->send(1, to_bytes("to isolated"));
    r[1].t->send(0, to_bytes("from isolated"));
    r[1].t->send(1, to_bytes("self"));
    r[2].t->send(0, to_bytes("unaffected"));
    net.run_for(10);
    CHECK(r[1].texts() == std::vector<std::string>{"same group", "self"});
    CHECK(r[0].texts() == std::vector<std::string>{"healed", "unaffected"});
    net.heal();
    r[0].t->send(1, to_bytes("back"));
    net.run_for(10);
    CHECK(r[1].got.back().text == "back");
    check_accounting(net, 0);
    CHECK_THROWS_AS(net.partition({{0, 1}, {1, 2}}), std::logic_error);
}

TEST_CASE("sim crash discards timers and messages; restart is a fresh incarnation") {
    SimNetwork net(8, fixed_delay(5));
    Recorder a, b, b2;
    attach(net, 0, a);
    attach(net, 1, b);
    Transport& old_t = *b.t;
    int old_fired = 0;
    TimerId old_timer = old_t.set_timer(20, [&] { ++old_fired; });
    old_t.set_timer(1, [&] { ++old_fired; });
    a.t->send(1, to_bytes("in flight to 1"));
    old_t.send(0, to_bytes("in flight from 1"));
    net.run_until(3);
    CHECK(old_fired == 1);
    CHECK(net.pending_events() == 3);

    net.crash(1);
    CHECK_FALSE(net.is_up(1));
    CHECK(net.is_up(0));
    CHECK(net.pending_events() == 1); // only the message 1 sent before it crashed
    CHECK(net.stats().dropped_down == 1);
    net.crash(1); // already down: no-op
    CHECK(net.stats().dropped_down == 1);

    // While down: sends to it and from its old transport are dropped; old timers never fire.
    a.t->send(1, to_bytes("to crashed"));
    old_t.send(0, to_bytes("from dead incarnation"));
    old_t.set_timer(1, [&] { ++old_fired; });
    net.run_until(10);
    CHECK(a.texts() == std::vector<std::string>{"in flight from 1"});
    CHECK(net.stats().dropped_down == 3);

    Transport& new_t = net.restart(1, b2);
    b2.net = &net;
    b2.t = &new_t;
    CHECK(&new_t != &old_t);
    CHECK(new_t.self() == 1);
    CHECK(net.is_up(1));
    int new_fired = 0;
    new_t.set_timer(5, [&] { ++new_fired; });
    old_t.set_timer(5, [&] { ++old_fired; });
    old_t.send(0, to_bytes("still dead"));
    new_t.cancel_timer(old_timer); // an id of the old incarnation: no-op
    a.t->send(1, to_bytes("after restart"));
    net.run_until(100);
    CHECK(old_fired == 1);
    CHECK(new_fired == 1);
    CHECK(b.texts().empty());
    CHECK(b2.texts() == std::vector<std::string>{"after restart"});
    CHECK(a.texts() == std::vector<std::string>{"in flight from 1"});
    CHECK(net.pending_events() == 0);
    check_accounting(net, 0);
}

TEST_CASE("sim delivers what reaches a node at one instant as one burst, in send order") {
    SimNetwork net(9, fixed_delay(3));
    Recorder a, b, c;
    attach(net, 0, a);
    attach(net, 1, b);
    attach(net, 2, c);
    a.t->send(1, to_bytes("a1"));
    c.t->send(2, to_bytes("c-self"));
    c.t->send(1, to_bytes("c1"));
    a.t->send(1, to_bytes("a2"));
    net.run_for(1);
    a.t->send(1, to_bytes("later")); // due at t=4, alone
    // At t=3 node 1 gets a1, c1, a2 in one burst (node 2's message in between notwithstanding);
    // a reply sent inside the burst with no delay is the next instant's business.
    b.on = [&](NodeId, const std::string& text) {
        if (text == "a2") b.t->send(1, to_bytes("echo"));
    };
    net.run_until(10);
    CHECK(b.bursts ==
          std::vector<std::vector<std::string>>{{"a1", "c1", "a2"}, {"!later"}, {"!echo"}});
    CHECK(c.bursts == std::vector<std::vector<std::string>>{{"!c-self"}});
    CHECK_FALSE(b.in_burst);
    check_accounting(net, 0);

    // A crash in the middle of a burst loses the rest, with no on_burst_end for the dead
    // incarnation, even when it is restarted at once.
    Recorder b2;
    b.on = [&](NodeId, const std::string& text) {
        if (text != "x1") return;
        net.crash(1);
        b2.net = &net;
        b2.t = &net.restart(1, b2);
    };
    for (const char* m : {"x1", "x2", "x3"})
        a.t->send(1, to_bytes(m));
    const std::uint64_t down_before = net.stats().dropped_down;
    net.run_for(10);
    CHECK(b.bursts.back() == std::vector<std::string>{"x1"});
    CHECK(b.in_burst); // its burst never ended: it crashed inside it
    CHECK(b2.got.empty());
    CHECK(net.stats().dropped_down == down_before + 2);
    check_accounting(net, 0);
}

TEST_CASE("sim timers fire in time order, equal times in set order") {
    SimNetwork net(6);
    Recorder a;
    attach(net, 0, a);
    net.run_until(10);
    std::vector<std::string> fired;
    auto mark = [&](std::string name, Millis want) {
        return [&fired, &net, name, want] {
            CHECK(net.now() == want);
            fired.push_back(name);
        };
    };
    a.t->set_timer(5, mark("a5", 15));
    a.t->set_timer(3, mark("b3", 13));
    a.t->set_timer(5, mark("c5", 15));
    a.t->set_timer(1, mark("d1", 11));
    a.t->set_timer(3, mark("e3", 13));
    a.t->set_timer(0, mark("f0", 10));
    TimerId x = a.t->set_timer(2, mark("x", 12));
    TimerId y = a.t->set_timer(2, mark("y", 12));
    CHECK(x != 0);
    CHECK(y != x);
    net.run_until(100);
    CHECK(fired == std::vector<std::string>{"f0", "d1", "x", "y", "b3", "e3", "a5", "c5"});
    CHECK(net.stats().timers_fired == 8);
}

TEST_CASE("sim cancel_timer") {
    SimNetwork net(6);
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    int fired = 0;
    TimerId t1 = a.t->set_timer(5, [&] { ++fired; });
    TimerId t2 = a.t->set_timer(5, [&] { fired += 10; });
    TimerId t3 = a.t->set_timer(1, [&] { fired += 100; });
    CHECK(net.pending_events() == 3);
    a.t->cancel_timer(t1);
    CHECK(net.pending_events() == 2);
    a.t->cancel_timer(t1);      // twice: no-op
    a.t->cancel_timer(123'456); // unknown: no-op
    b.t->cancel_timer(t2);      // another node's timer: no-op
    net.run_until(2);
    a.t->cancel_timer(t3); // already fired: no-op
    net.run_until(10);
    CHECK(fired == 110);
    CHECK(net.stats().timers_fired == 2);

    // A timer may cancel another from its callback.
    int later = 0;
    TimerId victim = a.t->set_timer(5, [&] { ++later; });
    a.t->set_timer(2, [&] { a.t->cancel_timer(victim); });
    net.run_until(100);
    CHECK(later == 0);
}

TEST_CASE("sim run_until(predicate) stops exactly when it becomes true") {
    SimNetwork net(12, fixed_delay(1));
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    for (Millis i = 1; i <= 10; ++i)
        a.t->set_timer(i * 10, [&a, i] { a.t->send(1, to_bytes(std::to_string(i))); });
    bool ok = net.run_until([&] { return b.got.size() == 5; }, 1000);
    CHECK(ok);
    CHECK(b.got.size() == 5);
    CHECK(net.now() == 51);
    CHECK(net.pending_events() == 5);

    // Already true: no event runs.
    CHECK(net.run_until([] { return true; }, 1000));
    CHECK(net.now() == 51);
    CHECK(net.pending_events() == 5);

    // Not reached by the deadline: events after it stay queued, the clock moves to it.
    ok = net.run_until([&] { return b.got.size() == 100; }, 75);
    CHECK_FALSE(ok);
    CHECK(net.now() == 75);
    CHECK(b.got.size() == 7);
    CHECK(net.pending_events() == 3); // the timers at 80, 90 and 100
}

TEST_CASE("sim sending from inside on_message and timers is queued, never re-entrant") {
    SimNetwork net(13);
    Recorder a;
    attach(net, 0, a);
    int sent_back = 0;
    a.on = [&](NodeId, const std::string& text) {
        if (text.size() < 6) {
            a.t->send(0, to_bytes(text + "+")); // to self, from inside on_message
            ++sent_back;
            CHECK(a.got.size() == static_cast<std::size_t>(sent_back)); // not delivered yet
        }
    };
    a.t->set_timer(3, [&] { a.t->send(0, to_bytes("t")); });
    net.run_until(1000);
    CHECK(a.texts() == std::vector<std::string>{"t", "t+", "t++", "t+++", "t++++", "t+++++"});
    CHECK(a.max_depth == 1);
    // Self delivery still takes the link's delay.
    for (std::size_t i = 1; i < a.got.size(); ++i) {
        CHECK(a.got[i].at > a.got[i - 1].at);
        CHECK(a.got[i].from == 0);
    }
    // Nested run loop calls from a callback are refused.
    bool threw = false;
    a.t->set_timer(1, [&] {
        try {
            net.step();
        } catch (const std::logic_error&) {
            threw = true;
        }
    });
    net.run_for(5);
    CHECK(threw);
}

TEST_CASE("sim filter drops and counts") {
    SimNetwork net(14, fixed_delay(2));
    Recorder a, b;
    attach(net, 0, a);
    attach(net, 1, b);
    std::vector<NodeId> judged;
    net.set_filter([&](NodeId from, NodeId to, ByteView msg) {
        judged.push_back(from * 10 + to);
        return msg.empty() || msg[0] != 'x';
    });
    a.t->send(1, to_bytes("x-evil"));
    a.t->send(1, to_bytes("good"));
    b.t->send(0, to_bytes("xx"));
    net.run_for(10);
    CHECK(b.texts() == std::vector<std::string>{"good"});
    CHECK(a.got.empty());
    CHECK(net.stats().filtered == 2);
    CHECK(judged == std::vector<NodeId>{1, 1, 10});
    net.set_filter({});
    a.t->send(1, to_bytes("x-now-fine"));
    net.run_for(10);
    CHECK(b.got.back().text == "x-now-fine");
    check_accounting(net, 0);
}

TEST_CASE("sim misuse and unknown destinations") {
    SimNetwork net(15);
    Recorder a, b;
    attach(net, 0, a);
    CHECK_THROWS_AS(net.attach(0, b), std::logic_error);
    CHECK_THROWS_AS(net.restart(0, b), std::logic_error); // up
    CHECK_THROWS_AS(net.restart(9, b), std::logic_error); // unknown
    CHECK_THROWS_AS(net.crash(9), std::logic_error);
    LinkFaults bad;
    bad.min_delay = 5;
    bad.max_delay = 4;
    CHECK_THROWS_AS(net.set_link_faults(0, 1, bad), std::logic_error);
    CHECK_THROWS_AS(SimNetwork(1, bad), std::logic_error);
    LinkFaults bad_p;
    bad_p.drop = 1.5;
    CHECK_THROWS_AS(net.set_default_faults(bad_p), std::logic_error);

    a.t->send(77, to_bytes("nobody"));
    CHECK(net.stats().dropped_down == 1);
    CHECK(net.pending_events() == 0);
    CHECK_FALSE(net.step());
    CHECK_FALSE(net.is_up(77));

    // A crashed node cannot be attached again, only restarted.
    net.crash(0);
    CHECK_THROWS_AS(net.attach(0, b), std::logic_error);
    Transport& t = net.restart(0, b);
    CHECK(t.self() == 0);
}

TEST_CASE("sim message tags are the same on every host and build") {
    // A trace recorded on one machine must replay line for line on another, so the tag is a
    // fixed function of the bytes: words read little-endian, whole or as a short tail.
    CHECK(SimNetwork::message_tag(to_bytes("hello")) == "len=5 h=06496d8f");
    Bytes words; // two whole words and a five-byte tail
    for (int i = 0; i < 21; ++i)
        words.push_back(static_cast<std::uint8_t>(i * 7 % 256));
    CHECK(SimNetwork::message_tag(words) == "len=21 h=eb6762db");
}

TEST_CASE("sim message tags tell messages apart") {
    // Every one-bit change of a message, at any position and length, changes its tag.
    std::set<std::string> seen;
    std::size_t variants = 0;
    for (std::size_t len : {1u, 7u, 8u, 9u, 63u, 200u}) {
        Bytes base(len);
        for (std::size_t i = 0; i < len; ++i)
            base[i] = static_cast<std::uint8_t>(i * 37 + len);
        CHECK(SimNetwork::message_tag(base) == SimNetwork::message_tag(Bytes(base)));
        seen.insert(SimNetwork::message_tag(base));
        ++variants;
        for (std::size_t bit = 0; bit < 8 * len; ++bit) {
            Bytes flipped = base;
            flipped[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
            seen.insert(SimNetwork::message_tag(flipped));
            ++variants;
        }
    }
    CHECK(seen.size() == variants);
}
