// A deterministic, single-threaded, discrete-event network simulator implementing the
// Transport contract for many nodes, so that the real replica code runs in one world.
//
// Time. Virtual milliseconds starting at 0. Every message delivery and every timer is an
// event in one queue ordered by (time, insertion sequence), so events at the same time run
// in the order they were scheduled, except that deliveries come in bursts: when a message
// is delivered, every other message due at that node at that instant follows it at once, in
// the order they were scheduled, bracketed by Receiver::on_burst_begin/on_burst_end (as a
// socket read hands over what arrived together). Receiver::on_message and timer callbacks
// are called only from the run loop (step / run_*), never from inside send(), set_timer()
// or the fault controls; a callback may send, set and cancel timers, crash or restart nodes
// freely.
//
// Determinism. The same seed and the same sequence of calls give the same run, byte for
// byte: the PRNG is our own (xoshiro256** seeded by splitmix64), the integer-range and
// probability helpers are our own (no std::*_distribution, whose output is
// implementation-defined), and nothing that orders events iterates a hash table.
// trace_digest() summarises a whole run: it chains SHA-256 over every trace line
// (d' = SHA-256(d || line)), whether or not the text trace is kept.
//
// The fate of a message. At send() time, in this order:
//   1. the sending endpoint belongs to a crashed incarnation, or the destination is unknown
//      or crashed                                             -> dropped_down
//   2. sender and destination are separated by a partition or an isolation
//                                                             -> dropped_by_partition
//   3. the test filter returns false                          -> filtered
//   4. the link's `drop` probability                          -> dropped_by_fault
//   5. otherwise one copy is scheduled after a delay drawn uniformly from
//      [min_delay, max_delay], and with the link's `duplicate` probability a second copy
//      with its own independent delay (at most one extra copy per send)  -> duplicated
// At delivery time a copy is dropped (dropped_by_partition) if a partition or isolation now
// separates the two nodes: a partition cuts messages in flight too, and heal() does not
// bring those back. Messages in flight to a node that crashes are discarded at the crash
// (dropped_down); messages it sent before crashing stay in flight and are delivered.
// Invariant: sent + duplicated == delivered + dropped_by_fault + dropped_by_partition
//                                 + dropped_down + filtered + (copies still in flight).
//
// Reordering is not a separate knob: it follows from the random delays. Two messages on one
// link can arrive in either order whenever max_delay > min_delay; with min_delay ==
// max_delay a link is FIFO (equal arrival times keep send order).
//
// Sending to oneself goes through the self link like any other message (link faults and
// delay apply) but is never cut by a partition or isolation.
//
// Partitions. partition(groups) replaces any previous partition: nodes in the same group
// reach each other, nodes in different groups do not, and a node listed in no group is
// isolated from everyone (so a forgotten node shows up as cut off rather than silently
// bridging groups). isolate(node) cuts one node off from everyone, on top of any partition.
// heal() removes the partition and every isolation.
//
// Crash and restart. crash(node) discards the node's pending timers and the messages in
// flight to it, detaches its Receiver (which may then be destroyed) and makes the old
// Transport inert: sends from it are dropped_down, its set_timer() returns an id that never
// fires, cancel_timer() is a no-op, now() still works. restart(node, r) attaches a new
// Receiver and returns a new Transport for the new incarnation; nothing of the old
// incarnation can reach it. Every Transport handed out stays valid (inert once its node
// crashed) for the SimNetwork's lifetime.
//
// Misuse is a logic error (std::logic_error): attaching an id twice, crashing or restarting
// an unknown node, restarting a node that is up, min_delay > max_delay, a probability outside
// [0, 1], a node in two partition groups, calling the run loop from inside a callback.
// crash() of a node that is already down is a no-op.
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/crypto.hpp>
#include <popchain/net/transport.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace popchain::net {

// A small, fast, fully specified PRNG (xoshiro256**, state seeded with splitmix64), with
// range and probability helpers whose results depend only on the seed.
class SimRng {
public:
    explicit SimRng(std::uint64_t seed);
    std::uint64_t next();
    // Uniform in [lo, hi] (inclusive), by rejection sampling, so without modulo bias.
    // lo > hi is a logic error.
    std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi);
    // True with probability p: compares a 53-bit uniform fraction in [0, 1) with p, so p <= 0
    // is never true and p >= 1 is always true. Always draws exactly one number.
    bool chance(double p);

private:
    std::uint64_t s_[4];
};

// Faults of one directed link. A message is dropped with probability `drop`; otherwise it
// is delivered after a uniform delay in [min_delay, max_delay] ms, and with probability
// `duplicate` one more copy is delivered with its own delay.
struct LinkFaults {
    double drop = 0, duplicate = 0;
    Millis min_delay = 1, max_delay = 5;
};

struct SimStats {
    std::uint64_t sent = 0;                 // send() calls, from any endpoint
    std::uint64_t delivered = 0;            // copies handed to a Receiver
    std::uint64_t dropped_by_fault = 0;     // lost to a link's drop probability
    std::uint64_t dropped_by_partition = 0; // cut by a partition or isolation (send or flight)
    std::uint64_t dropped_down = 0;         // crashed/unknown sender or destination
    std::uint64_t duplicated = 0;           // extra copies scheduled
    std::uint64_t filtered = 0;             // rejected by the test filter
    std::uint64_t timers_fired = 0;
};

class SimNetwork {
public:
    // Returns false to drop the message (counted as `filtered`).
    using Filter = std::function<bool(NodeId from, NodeId to, ByteView message)>;

    explicit SimNetwork(std::uint64_t seed, LinkFaults defaults = {});
    ~SimNetwork();
    SimNetwork(const SimNetwork&) = delete;
    SimNetwork& operator=(const SimNetwork&) = delete;

    // Adds a node. The returned Transport lives as long as the SimNetwork. Throws
    // std::logic_error if `id` was attached before (use restart() after a crash).
    Transport& attach(NodeId id, Receiver& r);

    // ---- faults ----
    void set_default_faults(LinkFaults f);
    const LinkFaults& default_faults() const { return defaults_; }
    // Override for the directed link from -> to (from == to is the self link).
    void set_link_faults(NodeId from, NodeId to, LinkFaults f);
    // Back to the default for that link.
    void clear_link_faults(NodeId from, NodeId to);
    const LinkFaults& link_faults(NodeId from, NodeId to) const;

    void partition(std::vector<std::vector<NodeId>> groups);
    void isolate(NodeId node);
    void heal();
    // Whether a message from `from` to `to` would pass partitions and isolations now.
    bool connected(NodeId from, NodeId to) const;

    void crash(NodeId node);
    Transport& restart(NodeId node, Receiver& r);
    // Attached and not crashed.
    bool is_up(NodeId node) const;

    // A test hook consulted for every send that passed the liveness and partition checks.
    // An empty function removes it.
    void set_filter(Filter f);

    // ---- running ----
    // Runs the earliest event; false if there was none.
    bool step();
    // Runs every event up to and including time now() + d, then sets the clock there.
    void run_for(Millis d);
    // Runs every event up to and including time t, then sets the clock to max(now(), t).
    void run_until(Millis t);
    // Runs events until done() is true (checked before the first event and after every
    // event) or no event is left at or before the absolute time `deadline`; in the latter
    // case the clock moves to max(now(), deadline). Returns done().
    bool run_until(const std::function<bool()>& done, Millis deadline);
    Millis now() const { return now_; }
    std::size_t pending_events() const { return events_.size(); }

    // ---- observation ----
    // Trace lines, "t=<now> " followed by one of (h = the first 4 bytes of SHA-256 of the
    // message, in hex):
    //   deliver F->T len=N h=xxxxxxxx      timer node=N id=I
    //   drop(down|partition|filter|fault) F->T len=N h=xxxxxxxx
    //   dup F->T len=N h=xxxxxxxx          (a second copy was scheduled)
    //   attach N   crash N timers=K msgs=M   restart N   partition {a,b} {c}   isolate N
    //   heal   faults default|F->T drop=P dup=P delay=MIN..MAX   faults F->T default
    //   filter on|off
    // Setting and cancelling timers and plain sends leave no line (their effects do).
    const SimStats& stats() const { return stats_; }
    void enable_trace(bool on) { trace_on_ = on; }
    // How a message appears in the trace: "len=N h=xxxxxxxx", the hex a 32-bit fingerprint of
    // its bytes. Tells messages apart in a trace; not a cryptographic hash (hashing every
    // message with SHA-256 cost the simulator more than its event queue).
    static std::string message_tag(ByteView message);
    const std::vector<std::string>& trace() const { return trace_; }
    Hash256 trace_digest() const { return digest_; }
    // The simulator's own PRNG, for tests and adversaries that want deterministic choices.
    // Drawing from it changes later fault decisions (still deterministically).
    SimRng& rng() { return rng_; }

private:
    class Endpoint;
    struct Node {
        Receiver* receiver = nullptr;
        Endpoint* endpoint = nullptr; // current incarnation
        bool up = false;
    };
    using EventKey = std::pair<Millis, std::uint64_t>; // (time, insertion sequence)
    struct Event {
        enum class Kind { deliver, timer } kind = Kind::deliver;
        NodeId from = 0; // deliver
        NodeId to = 0;   // deliver: destination; timer: owner
        Bytes message;
        std::string tag;           // deliver: "len=N h=xxxxxxxx"
        Endpoint* owner = nullptr; // timer: the incarnation that set it
        TimerId timer = 0;
        std::function<void()> fire;
    };

    Transport& add_incarnation(NodeId id, Receiver& r);
    void send_from(Endpoint& ep, NodeId to, Bytes message);
    TimerId set_timer_for(Endpoint& ep, Millis delay, std::function<void()> fire);
    void cancel_timer_for(Endpoint& ep, TimerId id);
    EventKey schedule(Millis delay, Event ev);
    void run_event(EventKey key, Event ev);
    void deliver_burst(EventKey key, Event first);
    void record(const std::string& what);
    static void check_faults(const LinkFaults& f);

    SimRng rng_;
    LinkFaults defaults_;
    std::map<std::pair<NodeId, NodeId>, LinkFaults> link_faults_;
    std::map<NodeId, Node> nodes_;
    std::vector<std::unique_ptr<Endpoint>> endpoints_; // every incarnation ever, kept alive
    std::map<EventKey, Event> events_;
    // The deliver events by (time, destination): their sequence numbers in the order they were
    // scheduled, so that a burst is one lookup and a message in flight costs no tree node.
    std::map<std::pair<Millis, NodeId>, std::vector<std::uint64_t>> deliveries_;
    void forget_delivery(NodeId to, EventKey key);
    std::map<TimerId, EventKey> timers_; // pending timers, for cancel
    bool partitioned_ = false;
    std::map<NodeId, std::size_t> group_of_;
    std::set<NodeId> isolated_;
    Filter filter_;
    Millis now_ = 0;
    std::uint64_t next_seq_ = 0;
    TimerId next_timer_ = 1;
    bool running_ = false;
    SimStats stats_;
    bool trace_on_ = false;
    std::vector<std::string> trace_;
    Hash256 digest_{};
};

} // namespace popchain::net
