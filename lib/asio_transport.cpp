// The TCP transport (see net/asio_transport.hpp for the contract and docs/transport.md for
// the wire format).
//
// Lifetime. The io_context may run handlers after the transport is gone (a cancelled read
// completes with operation_aborted later). So every handler holds a weak_ptr to Impl and
// a shared_ptr to the Connection whose socket and buffers it uses; it locks Impl for its
// whole run (a callback may destroy the AsioTransport) and returns at once when Impl is
// gone, closed, or the connection was closed meanwhile.
#include <popchain/net/asio_transport.hpp>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <random>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

namespace popchain::net {

namespace {

using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::array<std::uint8_t, 4> hello_magic = {'P', 'O', 'P', 'C'};
constexpr std::uint16_t protocol_version = 1;
constexpr std::string_view handshake_domain = "popchain/handshake/v1";
// magic, version, network_id, node id, nonce, public key
constexpr std::size_t hello_size = 4 + 2 + 32 + 4 + 32 + 33;
// A stranger must not make us allocate max_frame_bytes: handshake frames are small.
constexpr std::size_t handshake_frame_limit = 256;
constexpr std::size_t read_chunk = 64 * 1024;
constexpr std::size_t min_read_room = 4 * 1024;
// One gather write carries at most this much, so one busy peer cannot hold a huge batch.
constexpr std::size_t max_batch_frames = 1024;
constexpr std::size_t max_batch_bytes = 4u << 20;
// Frames up to this size are copied with their headers into one buffer per write; larger
// ones (blocks) are written from where they are. A write of separate buffers goes out in
// sendmsg calls of at most 64 buffers, two per frame: 400 replies of a block took 13
// system calls instead of one.
constexpr std::size_t max_packed_frame = 8 * 1024;
constexpr Millis accept_retry_ms = 100;

void put_u32le(std::uint8_t* out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        out[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get_u32le(const std::uint8_t* in) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
        v |= static_cast<std::uint32_t>(in[i]) << (8 * i);
    return v;
}

struct Hello {
    Hash256 network_id;
    NodeId id = 0;
    Hash256 nonce; // 32 random bytes (a Hash256 only for its size)
    PublicKey key;
};

Bytes encode_hello(const Hello& h) {
    Bytes out(hello_size);
    std::uint8_t* p = out.data();
    std::memcpy(p, hello_magic.data(), 4);
    p += 4;
    p[0] = static_cast<std::uint8_t>(protocol_version);
    p[1] = static_cast<std::uint8_t>(protocol_version >> 8);
    p += 2;
    std::memcpy(p, h.network_id.data(), 32);
    p += 32;
    put_u32le(p, h.id);
    p += 4;
    std::memcpy(p, h.nonce.data(), 32);
    p += 32;
    std::memcpy(p, h.key.data(), 33);
    return out;
}

// nullopt for a wrong size, magic or version.
std::optional<Hello> decode_hello(ByteView in) {
    if (in.size() != hello_size) return std::nullopt;
    if (std::memcmp(in.data(), hello_magic.data(), 4) != 0) return std::nullopt;
    const std::uint16_t version = static_cast<std::uint16_t>(in[4] | (in[5] << 8));
    if (version != protocol_version) return std::nullopt;
    Hello h;
    h.network_id = Hash256::from(in.subspan(6, 32));
    h.id = get_u32le(in.data() + 38);
    h.nonce = Hash256::from(in.subspan(42, 32));
    h.key = PublicKey::from(in.subspan(74, 33));
    return h;
}

// What each side signs: both hellos (dialler's first) under a domain label, and the
// signer's role, so a signature is worth nothing on another connection or in the other
// direction of this one.
Hash256 transcript(char role, ByteView dialer_hello, ByteView acceptor_hello) {
    const std::uint8_t role_byte = static_cast<std::uint8_t>(role);
    return Sha256()
        .update(handshake_domain)
        .update(ByteView(&role_byte, 1))
        .update(dialer_hello)
        .update(acceptor_hello)
        .finish();
}

enum class Failure {
    io,       // connect, read or write error, end of stream
    shutdown, // our own close(), set_peer() or remove_peer(), or a replacement
    unknown_peer,
    bad_signature,
    wrong_network,
    timeout,
    malformed,
    oversize,
    busy, // max_clients reached
};

struct Outbox {
    std::deque<Bytes> frames;
    std::size_t bytes = 0;
};

struct Connection {
    enum class Role { dialer, acceptor };
    enum class Phase { connecting, await_hello, await_signature, established, closed };

    Connection(asio::io_context& io, Role r) : role(r), socket(io), deadline(io) {}
    Connection(tcp::socket s, Role r)
        : role(r), socket(std::move(s)), deadline(socket.get_executor()) {}

    Role role;
    Phase phase = Phase::connecting;
    tcp::socket socket;
    asio::steady_timer deadline; // connect + handshake
    std::unique_ptr<tcp::resolver> resolver;

    // Dialler: the id dialled and its directory key. Acceptor: set from the hello, proven
    // once the signature verifies.
    NodeId peer = 0;
    PublicKey peer_key;
    std::uint64_t peer_serial = 0; // dialler: which directory entry dialled it
    Bytes own_hello, peer_hello;
    std::optional<Clock::time_point> established_at;
    bool is_client = false;

    std::shared_ptr<Outbox> outbox; // dialler: the peer's; acceptor: its own
    std::deque<Bytes> control;      // handshake frames, written before any payload

    bool writing = false;
    bool writing_control = false;
    bool pump_posted = false; // a pump() is queued behind the running handler
    std::vector<Bytes> in_flight;
    std::vector<std::array<std::uint8_t, 4>> headers;
    Bytes packed; // small frames with their headers, back to back
    std::vector<asio::const_buffer> buffers;

    Bytes in = Bytes(read_chunk);
    std::size_t in_begin = 0, in_end = 0;
};

using ConnectionPtr = std::shared_ptr<Connection>;

Result<void> check_peer(NodeId id, const PeerAddress& a) {
    const std::string who = "peer " + std::to_string(id) + ": ";
    if (a.host.empty()) return make_error(Errc::invalid_argument, who + "empty host");
    if (a.port == 0) return make_error(Errc::invalid_argument, who + "port is 0");
    if (!parse_public_key(a.key.view()))
        return make_error(Errc::invalid_argument, who + "public key is not a P-256 point");
    return {};
}

Result<void> check_options(const AsioOptions& o) {
    auto bad = [](const std::string& what) {
        return make_error(Errc::invalid_argument, "AsioOptions." + what);
    };
    if (!o.key) return bad("key: missing (the node's identity key is required)");
    if (o.network_id.is_zero()) return bad("network_id: all zeros (use e.g. the genesis hash)");
    if (o.max_frame_bytes < 1024 || o.max_frame_bytes > 0xffffffffu)
        return bad("max_frame_bytes: " + std::to_string(o.max_frame_bytes) +
                   " is outside 1 KiB .. 4 GiB - 1");
    if (o.max_queue_bytes < o.max_frame_bytes)
        return bad("max_queue_bytes: " + std::to_string(o.max_queue_bytes) +
                   " is below max_frame_bytes (" + std::to_string(o.max_frame_bytes) + ")");
    if (o.reconnect_min_ms == 0) return bad("reconnect_min_ms: must be at least 1");
    if (o.reconnect_max_ms < o.reconnect_min_ms)
        return bad("reconnect_max_ms: below reconnect_min_ms");
    if (o.handshake_timeout_ms == 0) return bad("handshake_timeout_ms: must be at least 1");
    if (o.max_handshaking_connections == 0)
        return bad("max_handshaking_connections: must be at least 1");
    if (o.accept_clients && o.max_clients == 0)
        return bad("max_clients: must be at least 1 when accept_clients is set");
    if (o.listen) {
        asio::error_code ec;
        (void)asio::ip::make_address(o.listen_host, ec);
        if (ec) return bad("listen_host: '" + o.listen_host + "' is not a numeric IP address");
    }
    for (const auto& [id, address] : o.peers)
        if (auto ok = check_peer(id, address); !ok) return bad("peers: " + ok.error().detail);
    return {};
}

} // namespace

struct AsioTransport::Impl : std::enable_shared_from_this<Impl> {
    struct Peer {
        PeerAddress address;
        std::uint64_t serial = 0; // tells a re-added peer from the one a handler knew
        std::shared_ptr<Outbox> outbox = std::make_shared<Outbox>();
        ConnectionPtr conn; // connecting, handshaking or established
        std::unique_ptr<asio::steady_timer> redial;
        bool redial_pending = false;
        bool dialled_before = false;
        unsigned failures = 0; // since the last completed handshake
        Clock::time_point next_dial{};
    };
    struct Timer {
        std::unique_ptr<asio::steady_timer> timer;
        std::function<void()> fire;
    };

    Impl(asio::io_context& context, AsioOptions o)
        : io(context), options(std::move(o)), key(*options.key), epoch(Clock::now()),
          acceptor(context), accept_retry(context) {
        const Bytes seed = random_bytes(8);
        std::uint64_t s = 0;
        std::memcpy(&s, seed.data(), sizeof s);
        jitter.seed(s);
    }

    asio::io_context& io;
    AsioOptions options;
    const SigningKey& key;
    Clock::time_point epoch;
    Stats stats;
    Receiver* receiver = nullptr;
    bool closed = false;

    tcp::acceptor acceptor;
    asio::steady_timer accept_retry;
    std::uint16_t port = 0;

    std::map<NodeId, Peer> peers;
    std::uint64_t next_serial = 1;
    std::map<NodeId, ConnectionPtr> inbound; // authenticated, by proven id
    std::set<ConnectionPtr> handshaking;     // inbound, not authenticated yet
    std::map<TimerId, Timer> timers;
    TimerId next_timer = 1;
    std::mt19937_64 jitter;

    // ---- setup ----

    Result<void> start_listening() {
        asio::error_code ec;
        const tcp::endpoint at(asio::ip::make_address(options.listen_host, ec),
                               options.listen_port);
        const std::string where = options.listen_host + ":" + std::to_string(options.listen_port);
        auto failed = [&](const char* step) {
            return make_error(Errc::io_error, std::string("cannot listen on ") + where + ": " +
                                                  step + ": " + ec.message());
        };
        if (acceptor.open(at.protocol(), ec); ec) return failed("open");
        if (acceptor.set_option(tcp::acceptor::reuse_address(true), ec); ec)
            return failed("SO_REUSEADDR");
        if (acceptor.bind(at, ec); ec) return failed("bind");
        if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec)
            return failed("listen");
        port = acceptor.local_endpoint(ec).port();
        if (ec) return failed("local_endpoint");
        start_accept();
        return {};
    }

    Peer& add_peer(NodeId id, PeerAddress address) {
        Peer& p = peers[id];
        p.address = std::move(address);
        p.serial = next_serial++;
        p.redial = std::make_unique<asio::steady_timer>(io);
        return p;
    }

    // ---- accepting ----

    void start_accept() {
        acceptor.async_accept([weak = weak_from_this()](asio::error_code ec, tcp::socket s) {
            auto self = weak.lock();
            if (!self || self->closed) return;
            self->on_accept(ec, std::move(s));
        });
    }

    void on_accept(asio::error_code ec, tcp::socket s) {
        if (ec) {
            // Out of descriptors and the like: try again a little later, never give up.
            accept_retry.expires_after(std::chrono::milliseconds(accept_retry_ms));
            accept_retry.async_wait([weak = weak_from_this()](asio::error_code wait_ec) {
                auto self = weak.lock();
                if (wait_ec || !self || self->closed) return;
                self->start_accept();
            });
            return;
        }
        ++stats.connections_accepted;
        if (handshaking.size() >= options.max_handshaking_connections) {
            ++stats.refused_busy;
            asio::error_code ignored;
            s.close(ignored);
        } else {
            auto c = std::make_shared<Connection>(std::move(s), Connection::Role::acceptor);
            c->outbox = std::make_shared<Outbox>();
            handshaking.insert(c);
            arm_deadline(c);
            begin_handshake(c);
        }
        start_accept();
    }

    // ---- dialling ----

    Clock::duration backoff(unsigned failures) {
        const unsigned doublings = std::min(failures == 0 ? 0u : failures - 1, 30u);
        const Millis cap = options.reconnect_max_ms;
        Millis d = options.reconnect_min_ms;
        for (unsigned i = 0; i < doublings && d < cap; ++i)
            d *= 2;
        d = std::min(d, cap);
        const Millis low = std::max<Millis>(1, d / 2);
        std::uniform_int_distribution<Millis> pick(low, std::max(low, d));
        return std::chrono::milliseconds(pick(jitter));
    }

    // Dials now if the backoff allows, else makes sure a redial is scheduled.
    void ensure_dialing(NodeId id, Peer& p) {
        if (closed || p.conn || p.redial_pending || id == options.self) return;
        if (Clock::now() >= p.next_dial) {
            dial(id, p);
            return;
        }
        p.redial_pending = true;
        p.redial->expires_at(p.next_dial);
        p.redial->async_wait([weak = weak_from_this(), id, serial = p.serial](asio::error_code ec) {
            auto self = weak.lock();
            if (ec || !self || self->closed) return;
            auto it = self->peers.find(id);
            if (it == self->peers.end() || it->second.serial != serial) return;
            it->second.redial_pending = false;
            if (!it->second.outbox->frames.empty()) self->ensure_dialing(id, it->second);
        });
    }

    void dial(NodeId id, Peer& p) {
        auto c = std::make_shared<Connection>(io, Connection::Role::dialer);
        c->peer = id;
        c->peer_key = p.address.key;
        c->peer_serial = p.serial;
        c->outbox = p.outbox;
        p.conn = c;
        if (p.dialled_before) ++stats.reconnects;
        p.dialled_before = true;
        arm_deadline(c);

        auto on_connect = [weak = weak_from_this(), c](asio::error_code ec) {
            auto self = weak.lock();
            if (!self || self->closed || c->phase == Connection::Phase::closed) return;
            if (ec) {
                ++self->stats.dial_failures;
                self->fail(c, Failure::io);
                return;
            }
            ++self->stats.connections_dialled;
            self->begin_handshake(c);
        };
        asio::error_code ec;
        const auto address = asio::ip::make_address(p.address.host, ec);
        if (!ec) {
            c->socket.async_connect(tcp::endpoint(address, p.address.port), on_connect);
            return;
        }
        c->resolver = std::make_unique<tcp::resolver>(io);
        c->resolver->async_resolve(
            p.address.host, std::to_string(p.address.port),
            [weak = weak_from_this(), c, on_connect](asio::error_code resolve_ec,
                                                     tcp::resolver::results_type results) {
                auto self = weak.lock();
                if (!self || self->closed || c->phase == Connection::Phase::closed) return;
                if (resolve_ec) {
                    on_connect(resolve_ec);
                    return;
                }
                asio::async_connect(c->socket, results,
                                    [on_connect](asio::error_code connect_ec,
                                                 const tcp::endpoint&) { on_connect(connect_ec); });
            });
    }

    // ---- handshake ----

    void arm_deadline(const ConnectionPtr& c) {
        c->deadline.expires_after(std::chrono::milliseconds(options.handshake_timeout_ms));
        c->deadline.async_wait([weak = weak_from_this(), c](asio::error_code ec) {
            auto self = weak.lock();
            if (ec || !self || self->closed) return;
            switch (c->phase) {
            case Connection::Phase::established:
            case Connection::Phase::closed: return;
            case Connection::Phase::connecting:
                ++self->stats.dial_failures;
                self->fail(c, Failure::io);
                return;
            default: self->fail(c, Failure::timeout);
            }
        });
    }

    void begin_handshake(const ConnectionPtr& c) {
        asio::error_code ignored;
        c->socket.set_option(tcp::no_delay(true), ignored); // we coalesce writes ourselves
        Hello hello;
        hello.network_id = options.network_id;
        hello.id = options.self;
        hello.nonce = Hash256::from(random_bytes(32));
        hello.key = key.public_key();
        c->own_hello = encode_hello(hello);
        c->control.push_back(c->own_hello);
        c->phase = Connection::Phase::await_hello;
        pump(c);
        start_read(c);
    }

    void on_hello(const ConnectionPtr& c, ByteView frame) {
        const auto hello = decode_hello(frame);
        if (!hello) return fail(c, Failure::malformed);
        if (hello->network_id != options.network_id) return fail(c, Failure::wrong_network);
        if (c->role == Connection::Role::dialer) {
            if (hello->id != c->peer) return fail(c, Failure::unknown_peer);
        } else {
            if (hello->id == options.self) return fail(c, Failure::unknown_peer);
            if (auto it = peers.find(hello->id); it != peers.end()) {
                c->peer_key = it->second.address.key;
            } else if (options.accept_clients && hello->id >= first_client_id) {
                // A client proves possession of the key it presents; see the header.
                if (!parse_public_key(hello->key.view())) return fail(c, Failure::malformed);
                if (!inbound.count(hello->id) && client_count() >= options.max_clients)
                    return fail(c, Failure::busy);
                c->peer_key = hello->key;
                c->is_client = true;
            } else {
                return fail(c, Failure::unknown_peer);
            }
            c->peer = hello->id;
        }
        c->peer_hello.assign(frame.begin(), frame.end());
        const bool dialer = c->role == Connection::Role::dialer;
        const Signature sig =
            key.sign(transcript(dialer ? 'D' : 'A', dialer ? c->own_hello : c->peer_hello,
                                dialer ? c->peer_hello : c->own_hello));
        c->control.emplace_back(sig.bytes.begin(), sig.bytes.end());
        c->phase = Connection::Phase::await_signature;
        pump(c);
    }

    void on_signature(const ConnectionPtr& c, ByteView frame) {
        if (frame.size() != Signature::size()) return fail(c, Failure::malformed);
        const bool dialer = c->role == Connection::Role::dialer;
        const Hash256 signed_over =
            transcript(dialer ? 'A' : 'D', dialer ? c->own_hello : c->peer_hello,
                       dialer ? c->peer_hello : c->own_hello);
        if (!verify(c->peer_key, signed_over, Signature::from(frame)))
            return fail(c, Failure::bad_signature);

        c->phase = Connection::Phase::established;
        c->established_at = Clock::now();
        c->deadline.cancel();
        ++stats.handshakes_completed;
        if (!dialer) {
            handshaking.erase(c);
            ConnectionPtr& slot = inbound[c->peer];
            ConnectionPtr older = std::exchange(slot, c);
            if (older) {
                ++stats.connections_replaced;
                fail(older, Failure::shutdown);
            }
        }
        pump(c);
    }

    // ---- reading ----

    void start_read(const ConnectionPtr& c) {
        c->socket.async_read_some(asio::buffer(c->in.data() + c->in_end, c->in.size() - c->in_end),
                                  [weak = weak_from_this(), c](asio::error_code ec, std::size_t n) {
                                      auto self = weak.lock();
                                      if (!self || self->closed ||
                                          c->phase == Connection::Phase::closed)
                                          return;
                                      self->on_read(c, ec, n);
                                  });
    }

    void on_read(const ConnectionPtr& c, asio::error_code ec, std::size_t n) {
        if (ec) return fail(c, Failure::io);
        c->in_end += n;
        std::size_t waiting_for = 0; // whole size of a frame that is not all here yet
        while (c->phase != Connection::Phase::closed) {
            const std::size_t available = c->in_end - c->in_begin;
            if (available < 4) break;
            const std::size_t length = get_u32le(c->in.data() + c->in_begin);
            const bool authenticated = c->phase == Connection::Phase::established;
            if (length > (authenticated ? options.max_frame_bytes : handshake_frame_limit))
                return fail(c, authenticated ? Failure::oversize : Failure::malformed);
            if (available < 4 + length) {
                waiting_for = 4 + length;
                break;
            }
            const ByteView frame(c->in.data() + c->in_begin + 4, length);
            c->in_begin += 4 + length;
            on_frame(c, frame);
        }
        if (c->phase == Connection::Phase::closed) return;

        // Keep the unread tail at the front, with room for the frame it starts and a read.
        const std::size_t tail = c->in_end - c->in_begin;
        if (c->in_begin > 0) {
            std::memmove(c->in.data(), c->in.data() + c->in_begin, tail);
            c->in_begin = 0;
            c->in_end = tail;
        }
        if (tail == 0 && c->in.size() > 4 * read_chunk) Bytes(read_chunk).swap(c->in);
        const std::size_t want = std::max({waiting_for, c->in_end + min_read_room, read_chunk});
        if (c->in.size() < want) c->in.resize(want);
        start_read(c);
    }

    void on_frame(const ConnectionPtr& c, ByteView frame) {
        switch (c->phase) {
        case Connection::Phase::await_hello: return on_hello(c, frame);
        case Connection::Phase::await_signature: return on_signature(c, frame);
        case Connection::Phase::established: return deliver(c->peer, frame);
        default: return;
        }
    }

    void deliver(NodeId from, ByteView message) {
        ++stats.frames_received;
        stats.bytes_received += message.size();
        if (!receiver) {
            ++stats.dropped_no_receiver;
            return;
        }
        receiver->on_message(from, message);
    }

    // ---- writing ----

    bool enqueue(Outbox& box, Bytes message) {
        if (box.bytes + message.size() > options.max_queue_bytes) {
            ++stats.dropped_queue_full;
            return false;
        }
        box.bytes += message.size();
        box.frames.push_back(std::move(message));
        return true;
    }

    // Starts a write of everything that may go now, unless one is in progress.
    void pump(const ConnectionPtr& c) {
        if (c->writing || c->phase == Connection::Phase::closed ||
            c->phase == Connection::Phase::connecting)
            return;
        c->in_flight.clear();
        if (!c->control.empty()) {
            c->writing_control = true;
            for (auto& frame : c->control)
                c->in_flight.push_back(std::move(frame));
            c->control.clear();
        } else if (c->phase == Connection::Phase::established && !c->outbox->frames.empty()) {
            c->writing_control = false;
            std::size_t batch_bytes = 0;
            Outbox& box = *c->outbox;
            while (!box.frames.empty() && c->in_flight.size() < max_batch_frames &&
                   (c->in_flight.empty() ||
                    batch_bytes + box.frames.front().size() <= max_batch_bytes)) {
                batch_bytes += box.frames.front().size();
                box.bytes -= box.frames.front().size();
                c->in_flight.push_back(std::move(box.frames.front()));
                box.frames.pop_front();
            }
        } else {
            return;
        }
        c->headers.resize(c->in_flight.size());
        c->buffers.clear();
        std::size_t packed_bytes = 0;
        for (const auto& frame : c->in_flight)
            if (frame.size() <= max_packed_frame) packed_bytes += 4 + frame.size();
        c->packed.clear();
        c->packed.reserve(packed_bytes); // no reallocation below: buffers point into it
        std::size_t run_start = 0;       // where the packed frames not yet in a buffer begin
        auto close_run = [&] {
            if (c->packed.size() == run_start) return;
            c->buffers.push_back(
                asio::buffer(c->packed.data() + run_start, c->packed.size() - run_start));
            run_start = c->packed.size();
        };
        for (std::size_t i = 0; i < c->in_flight.size(); ++i) {
            const Bytes& frame = c->in_flight[i];
            put_u32le(c->headers[i].data(), static_cast<std::uint32_t>(frame.size()));
            if (frame.size() <= max_packed_frame) {
                c->packed.insert(c->packed.end(), c->headers[i].begin(), c->headers[i].end());
                c->packed.insert(c->packed.end(), frame.begin(), frame.end());
                continue;
            }
            close_run();
            c->buffers.push_back(asio::buffer(c->headers[i]));
            c->buffers.push_back(asio::buffer(frame));
        }
        close_run();
        c->writing = true;
        asio::async_write(c->socket, c->buffers,
                          [weak = weak_from_this(), c](asio::error_code ec, std::size_t) {
                              c->writing = false;
                              auto self = weak.lock();
                              if (!self || self->closed || c->phase == Connection::Phase::closed)
                                  return;
                              self->on_written(c, ec);
                          });
    }

    // Writes what send() queued once the running handler returns, not at once: everything
    // one handler sends to a peer (a replica's votes for a batch of frames, a client's next
    // requests after a batch of replies) then leaves in one write. Writing each frame
    // as it came cost a sendmsg per frame; the load client spent a third of its time there.
    void pump_soon(const ConnectionPtr& c) {
        if (c->writing || c->pump_posted) return;
        c->pump_posted = true;
        asio::post(io, [weak = weak_from_this(), c] {
            c->pump_posted = false;
            auto self = weak.lock();
            if (!self || self->closed) return;
            self->pump(c);
        });
    }

    void on_written(const ConnectionPtr& c, asio::error_code ec) {
        if (ec) return fail(c, Failure::io);
        if (!c->writing_control) {
            stats.frames_sent += c->in_flight.size();
            for (const auto& frame : c->in_flight)
                stats.bytes_sent += frame.size();
        }
        c->in_flight.clear();
        pump(c);
    }

    // ---- closing ----

    void fail(const ConnectionPtr& c, Failure why) {
        if (c->phase == Connection::Phase::closed) return;
        switch (why) {
        case Failure::unknown_peer: ++stats.handshake_unknown_peer; break;
        case Failure::bad_signature: ++stats.handshake_bad_signature; break;
        case Failure::wrong_network: ++stats.handshake_wrong_network; break;
        case Failure::timeout: ++stats.handshake_timeout; break;
        case Failure::malformed: ++stats.handshake_malformed; break;
        case Failure::oversize: ++stats.oversize_frames; break;
        case Failure::busy: ++stats.refused_busy; break;
        case Failure::io:
        case Failure::shutdown: break;
        }
        if (c->phase == Connection::Phase::established && why != Failure::shutdown)
            ++stats.connections_lost;
        if (c->writing && !c->writing_control) stats.dropped_in_flight += c->in_flight.size();
        c->phase = Connection::Phase::closed;
        asio::error_code ignored;
        c->deadline.cancel();
        if (c->resolver) c->resolver->cancel();
        c->socket.shutdown(tcp::socket::shutdown_both, ignored);
        c->socket.close(ignored);
        if (!closed) detach(c);
    }

    // Forgets a closed connection; a dialler whose peer still has messages queued redials
    // after the backoff.
    void detach(const ConnectionPtr& c) {
        if (c->role == Connection::Role::dialer) {
            auto it = peers.find(c->peer);
            if (it == peers.end() || it->second.conn != c) return;
            Peer& p = it->second;
            p.conn.reset();
            // Only a connection that lasted resets the backoff: a peer that completes the
            // handshake and then drops us at once (it does not know our key, say) must not
            // be redialled at the fastest rate forever.
            if (c->established_at && Clock::now() - *c->established_at >=
                                         std::chrono::milliseconds(options.reconnect_max_ms))
                p.failures = 0;
            ++p.failures;
            p.next_dial = Clock::now() + backoff(p.failures);
            if (!p.outbox->frames.empty()) ensure_dialing(c->peer, p);
            return;
        }
        handshaking.erase(c);
        if (auto it = inbound.find(c->peer); it != inbound.end() && it->second == c)
            inbound.erase(it);
    }

    std::size_t client_count() const {
        return static_cast<std::size_t>(
            std::count_if(inbound.begin(), inbound.end(),
                          [](const auto& entry) { return entry.second->is_client; }));
    }

    // Closes every connection to or from `id` (a directory change).
    void drop_connections_of(NodeId id) {
        std::vector<ConnectionPtr> doomed;
        if (auto it = peers.find(id); it != peers.end() && it->second.conn)
            doomed.push_back(it->second.conn);
        if (auto it = inbound.find(id); it != inbound.end()) doomed.push_back(it->second);
        for (const auto& c : handshaking)
            if (c->phase == Connection::Phase::await_signature && c->peer == id)
                doomed.push_back(c);
        for (const auto& c : doomed)
            fail(c, Failure::shutdown);
    }

    void close() {
        if (closed) return;
        closed = true;
        asio::error_code ignored;
        acceptor.close(ignored);
        accept_retry.cancel();
        std::vector<ConnectionPtr> all;
        for (auto& [id, p] : peers)
            if (p.conn) all.push_back(p.conn);
        for (auto& [id, c] : inbound)
            all.push_back(c);
        all.insert(all.end(), handshaking.begin(), handshaking.end());
        for (const auto& c : all)
            fail(c, Failure::shutdown);
        peers.clear(); // cancels the redial timers
        inbound.clear();
        handshaking.clear();
        timers.clear(); // cancels the timers
    }

    // ---- the Transport ----

    void send(NodeId to, Bytes message) {
        if (closed) return;
        if (message.size() > options.max_frame_bytes) {
            ++stats.dropped_too_large;
            return;
        }
        if (to == options.self) {
            ++stats.self_deliveries;
            asio::post(io, [weak = weak_from_this(), m = std::move(message)] {
                auto self = weak.lock();
                if (!self || self->closed) return;
                self->deliver(self->options.self, m);
            });
            return;
        }
        if (auto it = peers.find(to); it != peers.end()) {
            Peer& p = it->second;
            if (!enqueue(*p.outbox, std::move(message))) return;
            if (p.conn)
                pump_soon(p.conn);
            else
                ensure_dialing(to, p);
            return;
        }
        if (auto it = inbound.find(to); it != inbound.end()) {
            if (enqueue(*it->second->outbox, std::move(message))) pump_soon(it->second);
            return;
        }
        ++stats.dropped_unknown_destination;
    }

    TimerId set_timer(Millis delay, std::function<void()> fire) {
        const TimerId id = next_timer++;
        if (closed) return id; // never fires
        auto timer = std::make_unique<asio::steady_timer>(io);
        // A century is "never"; larger values would overflow the clock's representation.
        constexpr Millis longest = Millis{100} * 365 * 24 * 3600 * 1000;
        timer->expires_after(std::chrono::milliseconds(std::min(delay, longest)));
        timer->async_wait([weak = weak_from_this(), id](asio::error_code ec) {
            auto self = weak.lock();
            if (ec || !self || self->closed) return;
            // Absent when cancelled after it expired but before this handler ran.
            auto it = self->timers.find(id);
            if (it == self->timers.end()) return;
            auto fn = std::move(it->second.fire);
            self->timers.erase(it);
            fn();
        });
        timers.emplace(id, Timer{std::move(timer), std::move(fire)});
        return id;
    }
};

Result<std::unique_ptr<AsioTransport>> AsioTransport::create(asio::io_context& io,
                                                             AsioOptions options) {
    if (auto ok = check_options(options); !ok) return ok.error();
    auto peers = std::move(options.peers);
    auto impl = std::make_shared<Impl>(io, std::move(options));
    for (auto& [id, address] : peers)
        impl->add_peer(id, std::move(address));
    if (impl->options.listen)
        if (auto ok = impl->start_listening(); !ok) return ok.error();
    return std::unique_ptr<AsioTransport>(new AsioTransport(std::move(impl)));
}

AsioTransport::AsioTransport(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

AsioTransport::~AsioTransport() {
    close();
}

void AsioTransport::close() {
    impl_->close();
}

void AsioTransport::set_receiver(Receiver* receiver) {
    impl_->receiver = receiver;
}

Result<void> AsioTransport::set_peer(NodeId id, PeerAddress address) {
    if (auto ok = check_peer(id, address); !ok) return ok;
    if (impl_->closed) return {};
    auto it = impl_->peers.find(id);
    if (it == impl_->peers.end()) {
        impl_->add_peer(id, std::move(address));
        return {};
    }
    PeerAddress& old = it->second.address;
    if (old.host == address.host && old.port == address.port && old.key == address.key) return {};
    old = std::move(address);
    impl_->drop_connections_of(id);
    return {};
}

void AsioTransport::remove_peer(NodeId id) {
    if (impl_->closed) return;
    // Out of the directory first, so closing its connection does not schedule a redial.
    auto entry = impl_->peers.extract(id);
    impl_->drop_connections_of(id);
    if (entry && entry.mapped().conn) impl_->fail(entry.mapped().conn, Failure::shutdown);
}

std::uint16_t AsioTransport::local_port() const {
    return impl_->port;
}

bool AsioTransport::connected(NodeId id) const {
    if (auto it = impl_->peers.find(id); it != impl_->peers.end())
        return it->second.conn && it->second.conn->phase == Connection::Phase::established;
    if (auto it = impl_->inbound.find(id); it != impl_->inbound.end())
        return it->second->phase == Connection::Phase::established;
    return false;
}

const AsioTransport::Stats& AsioTransport::stats() const {
    return impl_->stats;
}

NodeId AsioTransport::self() const {
    return impl_->options.self;
}

void AsioTransport::send(NodeId to, Bytes message) {
    impl_->send(to, std::move(message));
}

TimerId AsioTransport::set_timer(Millis delay, std::function<void()> fire) {
    return impl_->set_timer(delay, std::move(fire));
}

void AsioTransport::cancel_timer(TimerId id) {
    impl_->timers.erase(id);
}

Millis AsioTransport::now() const {
    return static_cast<Millis>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - impl_->epoch).count());
}

} // namespace popchain::net
