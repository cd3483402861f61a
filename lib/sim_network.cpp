// The deterministic network simulator (see net/sim_network.hpp for the model).
#include <popchain/hex.hpp>
#include <popchain/net/sim_network.hpp>

#include <algorithm>
#include <charconv>
#include <limits>
#include <stdexcept>

namespace popchain::net {

// ---- SimRng ----

namespace {
std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}
} // namespace

SimRng::SimRng(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& s : s_)
        s = splitmix64(x);
}

std::uint64_t SimRng::next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

std::uint64_t SimRng::uniform(std::uint64_t lo, std::uint64_t hi) {
    if (lo > hi) throw std::logic_error("SimRng::uniform: lo > hi");
    const std::uint64_t span = hi - lo + 1; // 0 means the whole 64-bit range
    if (span == 0) return next();
    // Accept only draws from the top multiple-of-span part of the range: no modulo bias.
    const std::uint64_t threshold = (0 - span) % span;
    for (;;) {
        const std::uint64_t x = next();
        if (x >= threshold) return lo + x % span;
    }
}

bool SimRng::chance(double p) {
    const double u = static_cast<double>(next() >> 11) * 0x1.0p-53; // [0, 1)
    return u < p;
}

// ---- endpoints ----

class SimNetwork::Endpoint final : public Transport {
public:
    Endpoint(SimNetwork& net, NodeId id) : net_(net), id_(id) {}

    NodeId self() const override { return id_; }
    void send(NodeId to, Bytes message) override { net_.send_from(*this, to, std::move(message)); }
    TimerId set_timer(Millis delay, std::function<void()> fire) override {
        return net_.set_timer_for(*this, delay, std::move(fire));
    }
    void cancel_timer(TimerId id) override { net_.cancel_timer_for(*this, id); }
    Millis now() const override { return net_.now_; }

    bool alive = true;

private:
    SimNetwork& net_;
    NodeId id_;
};

// ---- setup ----

namespace {
std::string link_name(NodeId from, NodeId to) {
    return std::to_string(from) + "->" + std::to_string(to);
}
std::string number(double v) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v); // shortest round-trip form: exact
    return std::string(buf, r.ptr);
}
std::string faults_text(const LinkFaults& f) {
    return "drop=" + number(f.drop) + " dup=" + number(f.duplicate) +
           " delay=" + std::to_string(f.min_delay) + ".." + std::to_string(f.max_delay);
}
} // namespace

SimNetwork::SimNetwork(std::uint64_t seed, LinkFaults defaults) : rng_(seed), defaults_(defaults) {
    check_faults(defaults_);
}

SimNetwork::~SimNetwork() = default;

void SimNetwork::check_faults(const LinkFaults& f) {
    auto prob_ok = [](double p) { return p >= 0.0 && p <= 1.0; }; // false for NaN
    if (!prob_ok(f.drop) || !prob_ok(f.duplicate))
        throw std::logic_error("LinkFaults: probability outside [0, 1]");
    if (f.min_delay > f.max_delay) throw std::logic_error("LinkFaults: min_delay > max_delay");
}

Transport& SimNetwork::attach(NodeId id, Receiver& r) {
    if (nodes_.count(id) != 0)
        throw std::logic_error("SimNetwork::attach: node " + std::to_string(id) +
                               " attached twice");
    record("attach " + std::to_string(id));
    return add_incarnation(id, r);
}

Transport& SimNetwork::add_incarnation(NodeId id, Receiver& r) {
    endpoints_.push_back(std::make_unique<Endpoint>(*this, id));
    Node& n = nodes_[id];
    n.receiver = &r;
    n.endpoint = endpoints_.back().get();
    n.up = true;
    return *n.endpoint;
}

void SimNetwork::set_default_faults(LinkFaults f) {
    check_faults(f);
    defaults_ = f;
    record("faults default " + faults_text(f));
}

void SimNetwork::set_link_faults(NodeId from, NodeId to, LinkFaults f) {
    check_faults(f);
    link_faults_[{from, to}] = f;
    record("faults " + link_name(from, to) + " " + faults_text(f));
}

void SimNetwork::clear_link_faults(NodeId from, NodeId to) {
    link_faults_.erase({from, to});
    record("faults " + link_name(from, to) + " default");
}

const LinkFaults& SimNetwork::link_faults(NodeId from, NodeId to) const {
    auto it = link_faults_.find({from, to});
    return it == link_faults_.end() ? defaults_ : it->second;
}

void SimNetwork::partition(std::vector<std::vector<NodeId>> groups) {
    std::map<NodeId, std::size_t> group_of;
    std::string text = "partition";
    for (std::size_t g = 0; g < groups.size(); ++g) {
        text += " {";
        for (std::size_t i = 0; i < groups[g].size(); ++i) {
            NodeId id = groups[g][i];
            if (!group_of.emplace(id, g).second)
                throw std::logic_error("SimNetwork::partition: node " + std::to_string(id) +
                                       " listed twice");
            if (i != 0) text += ",";
            text += std::to_string(id);
        }
        text += "}";
    }
    group_of_ = std::move(group_of);
    partitioned_ = true;
    record(text);
}

void SimNetwork::isolate(NodeId node) {
    isolated_.insert(node);
    record("isolate " + std::to_string(node));
}

void SimNetwork::heal() {
    partitioned_ = false;
    group_of_.clear();
    isolated_.clear();
    record("heal");
}

bool SimNetwork::connected(NodeId from, NodeId to) const {
    if (from == to) return true;
    if (isolated_.count(from) != 0 || isolated_.count(to) != 0) return false;
    if (!partitioned_) return true;
    auto a = group_of_.find(from);
    auto b = group_of_.find(to);
    return a != group_of_.end() && b != group_of_.end() && a->second == b->second;
}

void SimNetwork::crash(NodeId node) {
    auto it = nodes_.find(node);
    if (it == nodes_.end())
        throw std::logic_error("SimNetwork::crash: unknown node " + std::to_string(node));
    Node& n = it->second;
    if (!n.up) return;
    std::size_t timers = 0, messages = 0;
    for (auto e = events_.begin(); e != events_.end();) {
        const Event& ev = e->second;
        if (ev.kind == Event::Kind::timer && ev.owner == n.endpoint) {
            timers_.erase(ev.timer);
            ++timers;
            e = events_.erase(e);
        } else if (ev.kind == Event::Kind::deliver && ev.to == node) {
            ++messages;
            forget_delivery(node, e->first);
            e = events_.erase(e);
        } else {
            ++e;
        }
    }
    stats_.dropped_down += messages;
    n.endpoint->alive = false;
    n.receiver = nullptr;
    n.up = false;
    record("crash " + std::to_string(node) + " timers=" + std::to_string(timers) +
           " msgs=" + std::to_string(messages));
}

Transport& SimNetwork::restart(NodeId node, Receiver& r) {
    auto it = nodes_.find(node);
    if (it == nodes_.end())
        throw std::logic_error("SimNetwork::restart: unknown node " + std::to_string(node));
    if (it->second.up)
        throw std::logic_error("SimNetwork::restart: node " + std::to_string(node) +
                               " is up; crash it first");
    record("restart " + std::to_string(node));
    return add_incarnation(node, r);
}

bool SimNetwork::is_up(NodeId node) const {
    auto it = nodes_.find(node);
    return it != nodes_.end() && it->second.up;
}

void SimNetwork::set_filter(Filter f) {
    filter_ = std::move(f);
    record(filter_ ? "filter on" : "filter off");
}

// ---- messages and timers ----

std::string SimNetwork::message_tag(ByteView message) {
    // Eight bytes at a time, read little-endian on any host, each mixed in by a multiply and a
    // shift; the length seeds it and a final avalanche spreads every input bit over the top
    // half, which the tag shows.
    auto load = [&](std::size_t at, std::size_t n) {
        std::uint64_t w = 0;
        for (std::size_t i = 0; i < n; ++i)
            w |= std::uint64_t{message[at + i]} << (8 * i);
        return w;
    };
    std::uint64_t h = 0x9e3779b97f4a7c15ull ^ message.size();
    std::size_t at = 0;
    for (; at < message.size(); at += 8) {
        h = (h ^ load(at, std::min<std::size_t>(8, message.size() - at))) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    const std::uint32_t top = static_cast<std::uint32_t>(h >> 32);
    const std::uint8_t bytes[4] = {
        static_cast<std::uint8_t>(top >> 24), static_cast<std::uint8_t>(top >> 16),
        static_cast<std::uint8_t>(top >> 8), static_cast<std::uint8_t>(top)};
    std::string tag = "len=";
    tag += std::to_string(message.size());
    tag += " h=";
    tag += to_hex(ByteView(bytes, 4));
    return tag;
}

void SimNetwork::send_from(Endpoint& ep, NodeId to, Bytes message) {
    ++stats_.sent;
    const NodeId from = ep.self();
    std::string tag = message_tag(message);
    auto drop = [&](std::uint64_t& counter, const char* why) {
        ++counter;
        record(std::string("drop(") + why + ") " + link_name(from, to) + " " + tag);
    };
    auto dest = nodes_.find(to);
    if (!ep.alive || dest == nodes_.end() || !dest->second.up)
        return drop(stats_.dropped_down, "down");
    if (!connected(from, to)) return drop(stats_.dropped_by_partition, "partition");
    if (filter_ && !filter_(from, to, message)) return drop(stats_.filtered, "filter");
    const LinkFaults f = link_faults(from, to); // a copy: the filter cannot invalidate it now
    if (rng_.chance(f.drop)) return drop(stats_.dropped_by_fault, "fault");
    const bool dup = rng_.chance(f.duplicate);
    Event ev;
    ev.kind = Event::Kind::deliver;
    ev.from = from;
    ev.to = to;
    ev.tag = std::move(tag);
    if (dup) {
        ++stats_.duplicated;
        record("dup " + link_name(from, to) + " " + ev.tag);
        Event copy = ev;
        copy.message = message;
        const Millis first = rng_.uniform(f.min_delay, f.max_delay);
        const Millis second = rng_.uniform(f.min_delay, f.max_delay);
        ev.message = std::move(message);
        schedule(first, std::move(ev));
        schedule(second, std::move(copy));
        return;
    }
    ev.message = std::move(message);
    schedule(rng_.uniform(f.min_delay, f.max_delay), std::move(ev));
}

TimerId SimNetwork::set_timer_for(Endpoint& ep, Millis delay, std::function<void()> fire) {
    const TimerId id = next_timer_++;
    if (!ep.alive) return id; // an inert incarnation: the id is never scheduled
    Event ev;
    ev.kind = Event::Kind::timer;
    ev.to = ep.self();
    ev.owner = &ep;
    ev.timer = id;
    ev.fire = std::move(fire);
    timers_[id] = schedule(delay, std::move(ev));
    return id;
}

void SimNetwork::cancel_timer_for(Endpoint& ep, TimerId id) {
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    auto ev = events_.find(it->second);
    if (ev == events_.end() || ev->second.owner != &ep) return; // not this incarnation's
    events_.erase(ev);
    timers_.erase(it);
}

SimNetwork::EventKey SimNetwork::schedule(Millis delay, Event ev) {
    constexpr Millis max = std::numeric_limits<Millis>::max();
    const Millis at = delay > max - now_ ? max : now_ + delay;
    const EventKey key{at, next_seq_++};
    if (ev.kind == Event::Kind::deliver) deliveries_[{at, ev.to}].push_back(key.second);
    events_.emplace(key, std::move(ev));
    return key;
}

// ---- running ----

namespace {
struct RunGuard {
    explicit RunGuard(bool& flag) : flag_(flag) {
        if (flag_) throw std::logic_error("SimNetwork: run loop called from inside a callback");
        flag_ = true;
    }
    ~RunGuard() { flag_ = false; }
    RunGuard(const RunGuard&) = delete;
    RunGuard& operator=(const RunGuard&) = delete;
    bool& flag_;
};
} // namespace

bool SimNetwork::step() {
    RunGuard guard(running_);
    if (events_.empty()) return false;
    auto it = events_.begin();
    EventKey key = it->first;
    Event ev = std::move(it->second);
    events_.erase(it);
    if (ev.kind == Event::Kind::deliver) {
        forget_delivery(ev.to, key);
        deliver_burst(key, std::move(ev));
    } else {
        run_event(key, std::move(ev));
    }
    return true;
}

void SimNetwork::forget_delivery(NodeId to, EventKey key) {
    auto slot = deliveries_.find({key.first, to});
    if (slot == deliveries_.end()) return;
    auto& seqs = slot->second;
    if (auto it = std::find(seqs.begin(), seqs.end(), key.second); it != seqs.end()) seqs.erase(it);
    if (seqs.empty()) deliveries_.erase(slot);
}

void SimNetwork::deliver_burst(EventKey key, Event first) {
    const NodeId to = first.to;
    // Taken out of the queue before any is delivered: a delivery may schedule more for this
    // instant (a zero delay), and those belong to the next burst.
    std::vector<std::pair<EventKey, Event>> rest;
    // `first` was the earliest event of all, so the others due here now come after it.
    if (auto slot = deliveries_.find({key.first, to}); slot != deliveries_.end()) {
        rest.reserve(slot->second.size());
        for (const std::uint64_t seq : slot->second) {
            const EventKey k{key.first, seq};
            auto ev = events_.find(k);
            rest.emplace_back(k, std::move(ev->second));
            events_.erase(ev);
        }
        deliveries_.erase(slot);
    }
    if (rest.empty()) {
        run_event(key, std::move(first));
        return;
    }
    // The incarnation the burst is for: if a delivery crashes the node (and perhaps restarts
    // it), the rest were in flight to the crashed one and are lost with it, and its receiver
    // may be gone.
    auto node = nodes_.find(to);
    const Endpoint* incarnation =
        node == nodes_.end() || !node->second.up ? nullptr : node->second.endpoint;
    auto same = [&] {
        return incarnation && node->second.up && node->second.endpoint == incarnation;
    };
    Receiver* receiver = same() ? node->second.receiver : nullptr;
    if (receiver) receiver->on_burst_begin();
    run_event(key, std::move(first));
    for (auto& [k, ev] : rest) {
        if (incarnation && !same()) {
            ++stats_.dropped_down;
            record("drop(down) " + link_name(ev.from, ev.to) + " " + ev.tag);
            continue;
        }
        run_event(k, std::move(ev));
    }
    if (receiver && same()) receiver->on_burst_end();
}

void SimNetwork::run_event(EventKey key, Event ev) {
    now_ = key.first;
    if (ev.kind == Event::Kind::timer) {
        timers_.erase(ev.timer);
        ++stats_.timers_fired;
        record("timer node=" + std::to_string(ev.to) + " id=" + std::to_string(ev.timer));
        ev.fire();
        return;
    }
    auto dest = nodes_.find(ev.to);
    if (dest == nodes_.end() || !dest->second.up || dest->second.receiver == nullptr) {
        // A crash removes the messages in flight to the node, so this happens only when a
        // filter crashed the destination in the middle of the send that it was judging.
        ++stats_.dropped_down;
        record("drop(down) " + link_name(ev.from, ev.to) + " " + ev.tag);
        return;
    }
    if (!connected(ev.from, ev.to)) {
        ++stats_.dropped_by_partition;
        record("drop(partition) " + link_name(ev.from, ev.to) + " " + ev.tag);
        return;
    }
    ++stats_.delivered;
    record("deliver " + link_name(ev.from, ev.to) + " " + ev.tag);
    dest->second.receiver->on_message(ev.from, ev.message);
}

void SimNetwork::run_until(Millis t) {
    if (running_) throw std::logic_error("SimNetwork: run loop called from inside a callback");
    while (!events_.empty() && events_.begin()->first.first <= t)
        step();
    if (t > now_) now_ = t;
}

void SimNetwork::run_for(Millis d) {
    constexpr Millis max = std::numeric_limits<Millis>::max();
    run_until(d > max - now_ ? max : now_ + d);
}

bool SimNetwork::run_until(const std::function<bool()>& done, Millis deadline) {
    if (running_) throw std::logic_error("SimNetwork: run loop called from inside a callback");
    if (done()) return true;
    while (!events_.empty() && events_.begin()->first.first <= deadline) {
        step();
        if (done()) return true;
    }
    if (deadline > now_) now_ = deadline;
    return done();
}

// ---- trace ----

void SimNetwork::record(const std::string& what) {
    // d' = SHA-256(d || line), hashed piece by piece: with the trace off, nothing is copied.
    const std::string time = "t=" + std::to_string(now_) + " ";
    digest_ = Sha256().update(digest_).update(time).update(what).finish();
    if (trace_on_) trace_.push_back(time + what);
}

} // namespace popchain::net
