// The transport contract between a replica and the world.
//
// A replica never opens a socket, reads a clock or starts a thread: it is handed a Transport
// and receives its inputs as calls (a message arrived, a timer fired). The same replica code
// then runs in the deterministic simulator (net/sim_network.hpp), in one process, or over TCP.
//
// Delivery is best effort: a message may be lost, delayed, duplicated or reordered, and the
// protocol above must cope. What the transport does promise: the `from` it reports for a
// delivered message is the peer the bytes came from *on this link* (the simulator's link, or
// a TCP connection whose peer proved its identity in a handshake). Replicas still
// authenticate every message themselves (pBFT MACs), so a lying transport or a forged
// `from` cannot make an honest replica act.
#pragma once

#include <popchain/bytes.hpp>

#include <cstdint>
#include <functional>

namespace popchain::net {

using NodeId = std::uint32_t;  // replicas use their replica id; clients ids from 1 << 31
using TimerId = std::uint64_t; // never 0
using Millis = std::uint64_t;  // milliseconds on the transport's clock

inline constexpr NodeId first_client_id = 1u << 31;

// What a node gives its transport: the calls through which inputs arrive. All calls come
// on the node's own thread (or the simulator's single thread), never concurrently.
class Receiver {
public:
    virtual ~Receiver() = default;
    virtual void on_message(NodeId from, ByteView message) = 0;
    // A transport that hands over several messages together (the simulator: all that reach
    // a node at one instant) may bracket their on_message calls with these, always as a
    // pair, never nested. A receiver may then hold what it sends in answer until the burst
    // ends, so that one journal sync covers them all and they leave together.
    virtual void on_burst_begin() {}
    virtual void on_burst_end() {}
};

class Transport {
public:
    virtual ~Transport() = default;

    // This node's id on the network.
    virtual NodeId self() const = 0;
    // Queues `message` for `to`; returns at once. Sending to an unknown or unreachable node
    // drops the message silently (the protocol retransmits what matters).
    virtual void send(NodeId to, Bytes message) = 0;
    // Calls `fire` once, `delay` milliseconds from now, on the node's thread, unless cancelled.
    virtual TimerId set_timer(Millis delay, std::function<void()> fire) = 0;
    // Cancelling a timer that fired or was cancelled already is a no-op.
    virtual void cancel_timer(TimerId id) = 0;
    // Milliseconds since an arbitrary epoch; never goes backwards.
    virtual Millis now() const = 0;
};

} // namespace popchain::net
