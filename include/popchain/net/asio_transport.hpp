// The TCP transport: the Transport contract (net/transport.hpp) over standalone Asio.
//
// Connection model. Every node dials every directory peer it sends to and accepts the
// connections others dial to it, so a pair of replicas uses two TCP connections, one per
// direction of traffic: the dialler's outbound connection is its send path to that peer, the
// acceptor reads from it. With one connection per direction nobody needs to break ties
// between simultaneous dials, and a node's reconnect logic concerns only its own sends.
// Connections are dialled lazily, on the first send to a peer, and redialled after a
// failure with exponential backoff (reconnect_min_ms doubling up to reconnect_max_ms, each
// delay drawn uniformly in [d/2, d] so restarted peers are not hit in lockstep). Dials are
// spaced by the backoff even when sends keep coming, and the backoff starts again from the
// minimum only after a connection lasted reconnect_max_ms (a peer that completes the
// handshake and then drops us is not redialled at the fastest rate forever).
//
// Handshake (docs/transport.md has the byte layout). Both sides send a hello: magic,
// version, network_id, claimed NodeId, a fresh 32-byte random nonce and a public key. Then
// each side signs SHA-256("popchain/handshake/v1" || role || dialer hello || acceptor hello)
// with its identity key, role being 'D' for the dialler and 'A' for the acceptor. The fresh
// nonces of both sides make a signature useless on any other connection, the role byte
// makes it useless in the other direction of the same one. The acceptor checks the
// dialler's signature against the directory key of the id it claims; the dialler checks
// that the acceptor is the id it dialled, with that id's directory key. A connection that
// fails any check (unknown id, other network_id, bad signature, malformed bytes, no
// handshake within handshake_timeout_ms) is closed and counted, and nothing it carried is
// delivered. Before the handshake completes a frame may be at most 256 bytes, so a stranger
// cannot make the node allocate max_frame_bytes.
//
// What is and is not protected. The handshake proves who opened the TCP connection, so the
// `from` reported with a message is the peer that proved its identity on that connection.
// It does not protect the bytes that follow: there is no encryption and no per-frame MAC,
// so an attacker on the path can read, drop or inject frames after the handshake. That is
// why replicas MAC every message themselves (docs/consensus.md): the transport only keeps
// honest deliveries honest and strangers out.
//
// Clients. With accept_clients, an inbound peer that is not in the directory may claim an id
// at or above first_client_id: it proves possession of the public key in its hello by
// signing the transcript with it, and its messages are delivered with the id it claimed.
// Nothing binds a client id to a key at this layer: anyone can claim any client id, and a
// newer connection with an id replaces the older (that is how a client reconnects), so a
// stranger can take over a client id and receive what is sent to it, or deny it service.
// Replies to clients must therefore be authenticated end to end by the protocol above
// (MACs under a key derived from the client's key). send(client_id, ...) goes back over the
// client's inbound connection; clients do not listen (listen = false). For a client the
// replica it dials is a directory peer, so the client checks the replica's identity as any
// dialler does, and receives its replies on that same (outbound) connection.
//
// Frames: a u32 little-endian payload length, then the payload. A length above
// max_frame_bytes closes the connection (counted); a send above it is dropped (counted).
//
// Bounds. Each destination has a queue of at most max_queue_bytes of payload; a send that
// would exceed it is dropped and counted, so a slow or dead peer cannot exhaust memory.
// Sends to ids neither in the directory nor connected as clients are dropped and counted.
// At most max_handshaking_connections inbound connections may be in their handshake at
// once, and at most max_clients client connections may be open; more are refused.
//
// Write coalescing: whatever is queued when a write completes leaves in one gather write
// (up to 1,024 frames or 4 MiB), because on a small machine the kernel's per-write cost
// bounds throughput more than the bytes do.
//
// Sending to oneself delivers the message through asio::post, like the simulator's self
// link (replicas do not need it; they record their own votes directly).
//
// Threads. Every callback (Receiver::on_message, timers) runs on the io_context's thread.
// The io_context must be run by exactly one thread, and every member function must be
// called on that thread (or before the io_context runs); nothing here takes a lock. The
// io_context must outlive the transport; the transport may be destroyed while the io_context
// still holds its cancelled handlers, and even from inside one of its own callbacks.
//
// Errors: create() and set_peer() return Result errors for bad options; nothing a peer
// sends can make the transport throw.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/result.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace asio {
class io_context;
}

namespace popchain::net {

// Where a directory peer listens and the key it must prove in the handshake.
struct PeerAddress {
    std::string host; // a numeric IPv4 or IPv6 address, or a name resolved at each dial
    std::uint16_t port = 0;
    PublicKey key;
};

struct AsioOptions {
    NodeId self = 0;
    // The node's identity key, borrowed: it must outlive the transport (SigningKey is
    // move-only and the node keeps it for its replica too). Required.
    const SigningKey* key = nullptr;
    // Chains the node belongs to, e.g. the genesis block hash: nodes with different ids
    // refuse each other in the handshake. Must not be all zeros.
    Hash256 network_id;

    bool listen = true;                    // clients do not listen
    std::string listen_host = "127.0.0.1"; // numeric address to bind
    std::uint16_t listen_port = 0;         // 0: the kernel picks one, see local_port()

    std::map<NodeId, PeerAddress> peers; // the directory; may include self (never dialled)
    bool accept_clients = false;         // see "Clients" above

    std::size_t max_frame_bytes = 32u << 20;       // 1 KiB .. 4 GiB - 1
    std::size_t max_queue_bytes = 64u << 20;       // per destination, >= max_frame_bytes
    Millis reconnect_min_ms = 50;                  // >= 1
    Millis reconnect_max_ms = 2000;                // >= reconnect_min_ms
    Millis handshake_timeout_ms = 5000;            // >= 1
    std::size_t max_handshaking_connections = 256; // >= 1
    std::size_t max_clients = 1024;                // with accept_clients, >= 1
};

class AsioTransport : public Transport {
public:
    struct Stats {
        std::uint64_t frames_sent = 0, bytes_sent = 0;         // payloads written to sockets
        std::uint64_t frames_received = 0, bytes_received = 0; // payloads delivered
        std::uint64_t self_deliveries = 0;

        std::uint64_t connections_accepted = 0; // TCP accepts
        std::uint64_t connections_dialled = 0;  // TCP connects that succeeded
        std::uint64_t dial_failures = 0;        // resolve or connect errors
        std::uint64_t reconnects = 0;           // dials after a failure or a lost connection
        std::uint64_t handshakes_completed = 0; // both directions
        std::uint64_t connections_lost = 0;     // authenticated connections that closed
        std::uint64_t connections_replaced = 0; // an inbound id reconnected: older closed
        std::uint64_t refused_busy = 0;         // over max_handshaking_connections or max_clients

        // Handshake failures, by reason (the connection is closed, nothing delivered).
        std::uint64_t handshake_unknown_peer = 0;  // id not in the directory (nor a client)
        std::uint64_t handshake_bad_signature = 0; // signature does not verify
        std::uint64_t handshake_wrong_network = 0; // other network_id
        std::uint64_t handshake_timeout = 0;
        std::uint64_t handshake_malformed = 0; // wrong magic, version, size or key

        std::uint64_t oversize_frames = 0; // received length over max_frame_bytes: closed

        std::uint64_t dropped_queue_full = 0;          // destination queue at its bound
        std::uint64_t dropped_unknown_destination = 0; // not in the directory, no client
        std::uint64_t dropped_too_large = 0;           // send over max_frame_bytes
        std::uint64_t dropped_no_receiver = 0;         // arrived before set_receiver
        std::uint64_t dropped_in_flight = 0;           // written to a connection that failed
    };

    // Validates the options (the message names the field), binds the listening socket
    // (io_error if that fails) and starts accepting. Nothing runs until the io_context does.
    static Result<std::unique_ptr<AsioTransport>> create(asio::io_context& io, AsioOptions options);
    ~AsioTransport() override;
    AsioTransport(const AsioTransport&) = delete;
    AsioTransport& operator=(const AsioTransport&) = delete;

    // Where messages go. May be null (messages are then dropped and counted); may change.
    void set_receiver(Receiver* receiver);

    // Adds or updates a directory entry (membership changes). A changed address or key
    // closes the connections to and from that id, which then re-authenticate; queued
    // messages stay queued. Fails with invalid_argument for an empty host, port 0 or a key
    // that is not a curve point.
    Result<void> set_peer(NodeId id, PeerAddress address);
    // Forgets a peer: closes its connections and drops its queue.
    void remove_peer(NodeId id);

    // The bound listening port (the ephemeral one if listen_port was 0); 0 if not listening.
    std::uint16_t local_port() const;
    // Whether a message to `id` would leave now on an authenticated connection: the
    // outbound handshake with a directory peer is done, or a client with that id is
    // connected.
    bool connected(NodeId id) const;
    const Stats& stats() const;

    // Stops accepting, closes every socket, cancels every timer; later sends and timers
    // are no-ops. Idempotent; the destructor calls it.
    void close();

    // ---- Transport ----
    NodeId self() const override;
    void send(NodeId to, Bytes message) override;
    TimerId set_timer(Millis delay, std::function<void()> fire) override;
    void cancel_timer(TimerId id) override;
    // Milliseconds of std::chrono::steady_clock since the transport was created.
    Millis now() const override;

private:
    struct Impl;
    explicit AsioTransport(std::shared_ptr<Impl> impl);
    // The only owner. Handlers the io_context holds keep weak references (they may run
    // after this object is gone) and lock them only while they run.
    std::shared_ptr<Impl> impl_;
};

} // namespace popchain::net
