// The TCP transport on loopback: delivery and ordering, the handshake refusing impostors,
// strangers and other networks, garbage and oversized frames, a peer that is down, client
// connections, timers, and a 4-replica pBFT cluster over real sockets. Every test runs one
// io_context on the test thread, in short slices until a condition holds or a deadline
// passes; every port is ephemeral.
#include <popchain/genesis.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/net/asio_transport.hpp>
#include <popchain/pbft/replica.hpp>
#include <popchain/transaction.hpp>

#include "test_support.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace popchain;
using namespace popchain::net;
using popchain::test::key_from_byte;
using namespace std::chrono_literals;

namespace {

const Hash256 test_network = sha256("popchain/test/asio-network");

// Runs the io_context in short slices until `done` or the deadline; returns done().
bool run_until(asio::io_context& io, const std::function<bool()>& done,
               std::chrono::milliseconds limit = 20000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        io.restart();
        io.run_for(2ms);
    }
    return true;
}

// Runs the io_context for the whole of `d` (to show that something does NOT happen).
void run_for(asio::io_context& io, std::chrono::milliseconds d) {
    (void)run_until(
        io, [] { return false; }, d);
}

struct Inbox : Receiver {
    std::vector<std::pair<NodeId, Bytes>> got;
    std::function<void(NodeId, ByteView)> also; // e.g. to answer
    void on_message(NodeId from, ByteView message) override {
        got.emplace_back(from, Bytes(message.begin(), message.end()));
        if (also) also(from, message);
    }
    std::vector<std::string> texts_from(NodeId from) const {
        std::vector<std::string> out;
        for (const auto& [who, bytes] : got)
            if (who == from) out.emplace_back(bytes.begin(), bytes.end());
        return out;
    }
};

AsioOptions options_for(NodeId id, const SigningKey& key) {
    AsioOptions o;
    o.self = id;
    o.key = &key;
    o.network_id = test_network;
    return o;
}

PeerAddress address_of(const AsioTransport& t, const SigningKey& key) {
    return PeerAddress{"127.0.0.1", t.local_port(), key.public_key()};
}

std::unique_ptr<AsioTransport> make_transport(asio::io_context& io, AsioOptions o) {
    auto made = AsioTransport::create(io, std::move(o));
    REQUIRE_MESSAGE(made.ok(), (made.ok() ? "" : made.error().message()));
    return std::move(made).value();
}

// n nodes with ids 0..n-1 that all know each other.
struct Mesh {
    asio::io_context& io;
    std::deque<SigningKey> keys;
    std::deque<Inbox> inboxes;
    std::vector<std::unique_ptr<AsioTransport>> nodes;

    Mesh(asio::io_context& context, std::uint32_t n) : io(context) {
        for (std::uint32_t i = 0; i < n; ++i) {
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x20 + i)));
            inboxes.emplace_back();
            nodes.push_back(make_transport(io, options_for(i, keys[i])));
            nodes[i]->set_receiver(&inboxes[i]);
        }
        for (std::uint32_t i = 0; i < n; ++i)
            for (std::uint32_t j = 0; j < n; ++j)
                REQUIRE(nodes[i]->set_peer(j, address_of(*nodes[j], keys[j])).ok());
    }
    std::map<NodeId, PeerAddress> directory() const {
        std::map<NodeId, PeerAddress> out;
        for (std::uint32_t j = 0; j < nodes.size(); ++j)
            out[j] = address_of(*nodes[j], keys[j]);
        return out;
    }
};

Bytes text(const std::string& s) {
    return to_bytes(s);
}

} // namespace

TEST_CASE("asio: three transports exchange messages both ways, in order, with the right sender") {
    asio::io_context io;
    Mesh mesh(io, 3);
    constexpr int per_link = 200;
    for (int k = 0; k < per_link; ++k)
        for (NodeId from = 0; from < 3; ++from)
            for (NodeId to = 0; to < 3; ++to)
                if (from != to)
                    mesh.nodes[from]->send(to, text(std::to_string(from) + ">" +
                                                    std::to_string(to) + "#" + std::to_string(k)));
    mesh.nodes[1]->send(1, text("to myself"));

    const std::size_t expected = 2 * per_link;
    // The send counters move when a write completes, which the io_context may run after the
    // peer has already read the bytes: wait for both.
    REQUIRE(run_until(io, [&] {
        bool written = true;
        for (NodeId i = 0; i < 3; ++i)
            written = written && mesh.nodes[i]->stats().frames_sent >= 2 * per_link;
        return written && mesh.inboxes[0].got.size() == expected &&
               mesh.inboxes[1].got.size() == expected + 1 && mesh.inboxes[2].got.size() == expected;
    }));
    for (NodeId to = 0; to < 3; ++to) {
        for (NodeId from = 0; from < 3; ++from) {
            if (from == to) continue;
            const auto texts = mesh.inboxes[to].texts_from(from);
            REQUIRE(texts.size() == per_link);
            for (int k = 0; k < per_link; ++k)
                CHECK(texts[k] ==
                      std::to_string(from) + ">" + std::to_string(to) + "#" + std::to_string(k));
        }
    }
    CHECK(mesh.inboxes[1].texts_from(1) == std::vector<std::string>{"to myself"});
    for (NodeId i = 0; i < 3; ++i) {
        const auto& s = mesh.nodes[i]->stats();
        CHECK(s.frames_sent == 2 * per_link);
        CHECK(s.handshakes_completed == 4); // two dialled, two accepted
        CHECK(s.handshake_bad_signature + s.handshake_malformed + s.handshake_unknown_peer == 0);
        for (NodeId j = 0; j < 3; ++j)
            if (j != i) CHECK(mesh.nodes[i]->connected(j));
    }
    // Every payload is counted once on each side (self-deliveries only on the receiving one).
    std::uint64_t sent = 0, received = 0, delivered = 0;
    for (NodeId i = 0; i < 3; ++i) {
        sent += mesh.nodes[i]->stats().bytes_sent;
        received += mesh.nodes[i]->stats().bytes_received;
        for (const auto& [from, bytes] : mesh.inboxes[i].got)
            delivered += bytes.size();
    }
    CHECK(received == delivered);
    CHECK(sent == delivered - std::string("to myself").size());
}

TEST_CASE("asio: small and large frames queued together arrive whole and in order") {
    asio::io_context io;
    Mesh mesh(io, 2);
    // Sizes around the point where a write stops packing frames into one buffer (8 KiB),
    // empty ones, and frames far larger; sent in one go, so they share writes.
    const std::vector<std::size_t> sizes = {0,     1,  100,     8191, 8192, 8193, 3,     9000, 0,
                                            65536, 17, 200'000, 8192, 1,    4096, 12000, 5};
    std::vector<Bytes> sent;
    for (std::size_t round = 0; round < 20; ++round)
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            Bytes frame(sizes[i]);
            for (std::size_t b = 0; b < frame.size(); ++b)
                frame[b] = static_cast<std::uint8_t>(b * 31 + i * 7 + round);
            sent.push_back(frame);
            mesh.nodes[0]->send(1, std::move(frame));
        }
    REQUIRE(run_until(io, [&] { return mesh.inboxes[1].got.size() == sent.size(); }));
    for (std::size_t k = 0; k < sent.size(); ++k) {
        CAPTURE(k);
        CHECK(mesh.inboxes[1].got[k].first == 0);
        CHECK(mesh.inboxes[1].got[k].second == sent[k]);
    }
}

TEST_CASE("asio: the handshake refuses impostors, strangers and other networks") {
    asio::io_context io;
    Mesh mesh(io, 2);
    AsioTransport& a = *mesh.nodes[0];
    const auto directory = mesh.directory();

    SUBCASE("a node claiming id 1 without its key") {
        const SigningKey other = key_from_byte(0x77);
        AsioOptions o = options_for(1, other);
        o.peers = directory;
        auto impostor = make_transport(io, o);
        impostor->send(0, text("forged"));
        REQUIRE(run_until(io, [&] { return a.stats().handshake_bad_signature >= 1; }));
        // The impostor may have written its frame (it verified node 0, which is honest, and
        // cannot know it was refused until the connection closes), but it goes nowhere.
        CHECK(run_until(io, [&] { return !impostor->connected(0); }));
    }
    SUBCASE("an id not in the directory") {
        const SigningKey other = key_from_byte(0x78);
        AsioOptions o = options_for(7, other);
        o.peers = directory;
        auto stranger = make_transport(io, o);
        stranger->send(0, text("hello?"));
        REQUIRE(run_until(io, [&] { return a.stats().handshake_unknown_peer >= 1; }));
        CHECK_FALSE(stranger->connected(0));
    }
    SUBCASE("the right key on another network") {
        AsioOptions o = options_for(1, mesh.keys[1]);
        o.network_id = sha256("another chain");
        o.peers = directory;
        auto foreigner = make_transport(io, o);
        foreigner->send(0, text("cross-chain"));
        REQUIRE(run_until(io, [&] { return a.stats().handshake_wrong_network >= 1; }));
        CHECK(foreigner->stats().handshake_wrong_network >= 1); // refused on both ends
    }
    SUBCASE("the dialler checks that it reached the id it dialled") {
        // Node 1's directory says node 0's address belongs to id 5.
        AsioOptions o = options_for(1, mesh.keys[1]);
        o.peers[5] = PeerAddress{"127.0.0.1", a.local_port(), mesh.keys[0].public_key()};
        auto confused = make_transport(io, o);
        confused->send(5, text("are you 5?"));
        REQUIRE(run_until(io, [&] { return confused->stats().handshake_unknown_peer >= 1; }));
        CHECK_FALSE(confused->connected(5));
    }
    run_for(io, 50ms);
    CHECK(mesh.inboxes[0].got.empty());
    CHECK(a.stats().frames_received == 0);
    CHECK(a.stats().handshakes_completed == 0);

    // The real node 1 still gets through.
    mesh.nodes[1]->send(0, text("genuine"));
    REQUIRE(run_until(io, [&] { return !mesh.inboxes[0].got.empty(); }));
    CHECK(mesh.inboxes[0].texts_from(1) == std::vector<std::string>{"genuine"});
    CHECK(mesh.inboxes[0].got.size() == 1);
}

TEST_CASE("asio: a connection that never completes its handshake times out") {
    asio::io_context io;
    const SigningKey k = key_from_byte(0x29);
    AsioOptions o = options_for(0, k);
    o.handshake_timeout_ms = 50;
    auto waiting = make_transport(io, o);
    asio::ip::tcp::socket silent(io);
    silent.connect({asio::ip::make_address("127.0.0.1"), waiting->local_port()});
    REQUIRE(run_until(
        io, [&] { return waiting->stats().handshake_timeout == 1; }, 20000ms));
    CHECK(waiting->stats().frames_received == 0);
}

TEST_CASE("asio: garbage on the port is refused and the transport keeps working") {
    asio::io_context io;
    Mesh mesh(io, 2);
    AsioTransport& a = *mesh.nodes[0];
    const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), a.local_port());

    // Each stranger writes its bytes and then reads until the transport closes on it.
    auto stranger = [&](Bytes bytes) {
        asio::ip::tcp::socket raw(io);
        raw.connect(at);
        asio::write(raw, asio::buffer(bytes));
        bool closed = false;
        std::array<std::uint8_t, 512> sink{};
        std::function<void()> read_more = [&] {
            raw.async_read_some(asio::buffer(sink), [&](asio::error_code ec, std::size_t) {
                if (ec)
                    closed = true;
                else
                    read_more();
            });
        };
        read_more();
        CHECK(run_until(io, [&] { return closed; }));
    };

    stranger(text("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")); // length 0x20544547
    stranger(Bytes{0xff, 0xff, 0xff, 0xff, 1, 2, 3});            // oversized length prefix
    Bytes wrong_magic = {107, 0, 0, 0};                          // a hello-sized frame...
    wrong_magic.resize(4 + 107, 0x5a);                           // ...of nonsense
    stranger(wrong_magic);
    Bytes tiny = {3, 0, 0, 0, 'a', 'b', 'c'}; // a well-formed frame, not a hello
    stranger(tiny);

    CHECK(a.stats().handshake_malformed == 4);
    CHECK(a.stats().frames_received == 0);
    CHECK(mesh.inboxes[0].got.empty());

    mesh.nodes[1]->send(0, text("still here"));
    REQUIRE(run_until(io, [&] { return mesh.inboxes[0].got.size() == 1; }));
    CHECK(mesh.inboxes[0].texts_from(1) == std::vector<std::string>{"still here"});
}

TEST_CASE("asio: an authenticated frame over max_frame_bytes closes the connection") {
    asio::io_context io;
    const SigningKey ka = key_from_byte(0x31), kb = key_from_byte(0x32);
    AsioOptions oa = options_for(0, ka);
    oa.max_frame_bytes = 64 * 1024;
    auto a = make_transport(io, oa);
    Inbox inbox;
    a->set_receiver(&inbox);
    AsioOptions ob = options_for(1, kb);
    ob.max_frame_bytes = 1 << 20;
    ob.reconnect_min_ms = 5;
    ob.peers[0] = address_of(*a, ka);
    auto b = make_transport(io, ob);
    REQUIRE(a->set_peer(1, address_of(*b, kb)).ok());

    b->send(0, text("small 1"));
    REQUIRE(run_until(io, [&] { return inbox.got.size() == 1; }));
    b->send(0, Bytes(100 * 1024, 0xab)); // fine for b, too big for a
    REQUIRE(run_until(io, [&] { return a->stats().oversize_frames == 1; }));
    REQUIRE(run_until(io, [&] { return !b->connected(0); }));
    b->send(0, text("small 2")); // redials
    REQUIRE(run_until(io, [&] { return inbox.got.size() == 2; }));
    CHECK(inbox.texts_from(1) == std::vector<std::string>{"small 1", "small 2"});
    CHECK(b->stats().reconnects >= 1);

    // Nor does a send over the sender's own bound go anywhere.
    b->send(0, Bytes((1 << 20) + 1, 0));
    CHECK(b->stats().dropped_too_large == 1);
}

TEST_CASE("asio: sends to a peer that is down are bounded, then delivered when it comes up") {
    asio::io_context io;
    const SigningKey ka = key_from_byte(0x41), kb = key_from_byte(0x42);
    std::uint16_t port = 0;
    {
        auto placeholder = make_transport(io, options_for(1, kb));
        port = placeholder->local_port(); // free again once it is closed
    }
    AsioOptions oa = options_for(0, ka);
    oa.listen = false;
    oa.max_frame_bytes = 1024;
    oa.max_queue_bytes = 4096;
    oa.reconnect_min_ms = 5;
    oa.reconnect_max_ms = 40;
    oa.peers[1] = PeerAddress{"127.0.0.1", port, kb.public_key()};
    auto a = make_transport(io, oa);
    for (int k = 0; k < 10; ++k) {
        Bytes m(1000, static_cast<std::uint8_t>(k));
        a->send(1, std::move(m));
    }
    CHECK(a->stats().dropped_queue_full == 6); // 4 x 1000 bytes fit in 4096
    a->send(77, text("nobody"));
    CHECK(a->stats().dropped_unknown_destination == 1);

    REQUIRE(run_until(io, [&] { return a->stats().dial_failures >= 3; }));
    CHECK(a->stats().reconnects >= 2);
    CHECK_FALSE(a->connected(1));

    AsioOptions ob = options_for(1, kb);
    ob.listen_port = port;
    ob.peers[0] = PeerAddress{"127.0.0.1", 1, ka.public_key()}; // a never listens; ok
    auto b = make_transport(io, ob);
    Inbox inbox;
    b->set_receiver(&inbox);
    REQUIRE(run_until(io, [&] { return inbox.got.size() == 4; }));
    for (int k = 0; k < 4; ++k) {
        CHECK(inbox.got[k].first == 0);
        CHECK(inbox.got[k].second == Bytes(1000, static_cast<std::uint8_t>(k)));
    }
    CHECK(a->connected(1));
    a->send(1, text("after"));
    REQUIRE(run_until(io, [&] { return inbox.got.size() == 5; }));
    CHECK(inbox.texts_from(0).back() == "after");
}

TEST_CASE("asio: clients connect with their own key and get replies on their connection") {
    asio::io_context io;
    const SigningKey server_key = key_from_byte(0x51);
    AsioOptions os = options_for(0, server_key);
    os.accept_clients = true;
    auto server = make_transport(io, os);
    Inbox server_inbox;
    server_inbox.also = [&](NodeId from, ByteView m) {
        server->send(from, text("re:" + std::string(m.begin(), m.end())));
    };
    server->set_receiver(&server_inbox);

    auto client_options = [&](NodeId id, const SigningKey& key) {
        AsioOptions o = options_for(id, key);
        o.listen = false;
        o.peers[0] = address_of(*server, server_key);
        return o;
    };
    const NodeId client_id = first_client_id + 5;
    const SigningKey client_key = key_from_byte(0x52);
    auto client = make_transport(io, client_options(client_id, client_key));
    Inbox client_inbox;
    client->set_receiver(&client_inbox);
    client->send(0, text("ping"));
    REQUIRE(run_until(io, [&] { return client_inbox.got.size() == 1; }));
    CHECK(server_inbox.got.at(0).first == client_id);
    CHECK(client_inbox.texts_from(0) == std::vector<std::string>{"re:ping"});
    CHECK(server->connected(client_id));

    SUBCASE("a newer connection with the same id replaces the older") {
        const SigningKey second_key = key_from_byte(0x53);
        auto second = make_transport(io, client_options(client_id, second_key));
        Inbox second_inbox;
        second->set_receiver(&second_inbox);
        second->send(0, text("me too"));
        REQUIRE(run_until(io, [&] { return second_inbox.got.size() == 1; }));
        CHECK(second_inbox.texts_from(0) == std::vector<std::string>{"re:me too"});
        CHECK(server->stats().connections_replaced == 1);
        CHECK(client_inbox.got.size() == 1);
    }
    SUBCASE("an id below first_client_id that is not in the directory is refused") {
        const SigningKey k = key_from_byte(0x54);
        auto pretender = make_transport(io, client_options(42, k));
        pretender->send(0, text("let me in"));
        REQUIRE(run_until(io, [&] { return server->stats().handshake_unknown_peer == 1; }));
        CHECK(server_inbox.got.size() == 1);
    }
    SUBCASE("a server without accept_clients refuses clients") {
        auto closed_server = make_transport(io, options_for(0, server_key));
        AsioOptions o = client_options(client_id, client_key);
        o.peers[0].port = closed_server->local_port();
        auto refused = make_transport(io, o);
        refused->send(0, text("anyone?"));
        REQUIRE(run_until(io, [&] { return closed_server->stats().handshake_unknown_peer == 1; }));
        CHECK(closed_server->stats().frames_received == 0);
    }
    SUBCASE("a reply to a client that left is dropped and counted") {
        client.reset();
        REQUIRE(run_until(io, [&] { return !server->connected(client_id); }));
        server->send(client_id, text("too late"));
        CHECK(server->stats().dropped_unknown_destination == 1);
    }
}

TEST_CASE("asio: timers fire in order on the io_context, cancel works, close stops all") {
    asio::io_context io;
    const SigningKey k = key_from_byte(0x61);
    auto t = make_transport(io, options_for(0, k));
    std::vector<int> fired;
    const Millis start = t->now();
    t->set_timer(30, [&] { fired.push_back(30); });
    t->set_timer(10, [&] { fired.push_back(10); });
    const TimerId cancelled = t->set_timer(15, [&] { fired.push_back(15); });
    TimerId cancelled_from_callback = 0;
    t->set_timer(20, [&] {
        fired.push_back(20);
        t->cancel_timer(cancelled_from_callback);
    });
    cancelled_from_callback = t->set_timer(25, [&] { fired.push_back(25); });
    t->cancel_timer(cancelled);
    t->cancel_timer(cancelled); // twice is a no-op
    t->cancel_timer(12345);     // unknown too
    REQUIRE(run_until(io, [&] { return fired.size() == 3; }));
    run_for(io, 20ms);
    CHECK(fired == std::vector<int>{10, 20, 30});
    CHECK(t->now() - start >= 30);

    bool late = false;
    t->set_timer(5, [&] { late = true; });
    t->close();
    t->close(); // idempotent
    t->send(0, text("after close"));
    CHECK(t->set_timer(1, [&] { late = true; }) != 0);
    run_for(io, 20ms);
    CHECK_FALSE(late);
    CHECK(t->stats().self_deliveries == 0);
}

TEST_CASE("asio: options are checked") {
    asio::io_context io;
    const SigningKey k = key_from_byte(0x71);
    auto code = [&](AsioOptions o) {
        auto made = AsioTransport::create(io, std::move(o));
        return made.ok() ? std::string("ok") : errc_name(made.code());
    };
    AsioOptions o = options_for(0, k);
    CHECK(code(o) == "ok");
    o.key = nullptr;
    CHECK(code(o) == "invalid_argument");
    o = options_for(0, k);
    o.network_id = Hash256{};
    CHECK(code(o) == "invalid_argument");
    o = options_for(0, k);
    o.max_queue_bytes = o.max_frame_bytes - 1;
    CHECK(code(o) == "invalid_argument");
    o = options_for(0, k);
    o.listen_host = "not an address";
    CHECK(code(o) == "invalid_argument");
    o = options_for(0, k);
    o.peers[1] = PeerAddress{"127.0.0.1", 9, PublicKey{}}; // not a curve point
    auto bad_peer = AsioTransport::create(io, o);
    REQUIRE_FALSE(bad_peer.ok());
    CHECK(bad_peer.error().message().find("peer 1") != std::string::npos);

    auto first = make_transport(io, options_for(0, k));
    o = options_for(1, k);
    o.listen_port = first->local_port(); // taken
    CHECK(code(o) == "io_error");
    CHECK(first->set_peer(3, PeerAddress{"", 1, k.public_key()}).code() == Errc::invalid_argument);
    CHECK(first->set_peer(3, PeerAddress{"h", 0, k.public_key()}).code() == Errc::invalid_argument);
}

namespace {

// Passes messages to a Replica that is created after its transport.
struct ReplicaShim : Receiver {
    Receiver* target = nullptr;
    void on_message(NodeId from, ByteView message) override {
        if (target) target->on_message(from, message);
    }
};

} // namespace

TEST_CASE("asio: a 4-replica pBFT cluster commits over TCP, and goes on without a backup") {
    asio::io_context io;
    constexpr std::uint32_t n = 4;
    constexpr std::size_t wallet_count = 4;
    test::TestChain chain = test::make_test_chain("asio-test", n, wallet_count);
    std::deque<SigningKey>& keys = chain.replica_keys; // replicas keep references
    std::vector<SigningKey>& wallets = chain.wallets;
    Genesis& genesis = chain.genesis;
    auto built = genesis.build();
    REQUIRE(built.ok());
    const Hash256 network_id = built->block.hash();

    std::vector<std::unique_ptr<AsioTransport>> transports;
    std::deque<ReplicaShim> shims;
    std::vector<std::unique_ptr<MemoryStore>> stores;
    std::vector<std::unique_ptr<pbft::Replica>> replicas;
    for (std::uint32_t i = 0; i < n; ++i) {
        AsioOptions o = options_for(i, keys[i]);
        o.network_id = network_id;
        transports.push_back(make_transport(io, o));
        shims.emplace_back();
        transports[i]->set_receiver(&shims[i]);
        stores.push_back(std::make_unique<MemoryStore>());
    }
    for (std::uint32_t i = 0; i < n; ++i)
        for (std::uint32_t j = 0; j < n; ++j)
            REQUIRE(transports[i]->set_peer(j, address_of(*transports[j], keys[j])).ok());
    // One thread runs all four replicas and checks every signature four times: on a loaded
    // 2-core box the first block can take most of a second, which must not look like a
    // faulty primary.
    pbft::ReplicaConfig config;
    config.request_timeout_ms = 5000;
    for (std::uint32_t i = 0; i < n; ++i) {
        auto r = pbft::Replica::create(i, keys[i], genesis, config, *transports[i], *stores[i]);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
        replicas.push_back(std::move(r).value());
        shims[i].target = replicas[i].get();
    }

    std::vector<std::uint64_t> nonces(wallet_count, 0);
    std::vector<Hash256> txids;
    // Each wallet submits through one replica, so its nonces reach the primary in order.
    auto submit = [&](std::size_t count, const std::vector<std::uint32_t>& via) {
        for (std::size_t k = 0; k < count; ++k) {
            const std::size_t w = k % wallet_count;
            Tx tx;
            tx.kind = TxKind::transfer;
            tx.chain_id = genesis.params.chain_id;
            tx.nonce = nonces[w]++;
            tx.to = wallets[(w + 1) % wallet_count].address();
            tx.amount = 1 + k;
            tx = sign_tx(std::move(tx), wallets[w]);
            txids.push_back(tx.id());
            auto ok = replicas[via[w % via.size()]]->submit(tx);
            REQUIRE_MESSAGE(ok.ok(), ok.error().message());
        }
    };
    auto all_committed = [&](const std::vector<std::uint32_t>& who) {
        for (auto i : who)
            for (const auto& id : txids)
                if (!stores[i]->tx_by_id(id).ok()) return false;
        return true;
    };
    auto same_chain = [&](const std::vector<std::uint32_t>& who) {
        const auto top = stores[who[0]]->tip_height();
        REQUIRE(top.has_value());
        for (auto i : who)
            REQUIRE(stores[i]->tip_height() == top);
        for (std::uint64_t h = 0; h <= *top; ++h) {
            const auto reference = stores[who[0]]->block_at(h);
            REQUIRE(reference.ok());
            for (auto i : who) {
                const auto block = stores[i]->block_at(h);
                REQUIRE(block.ok());
                CHECK(block->hash() == reference->hash());
            }
        }
        return *top;
    };

    const std::vector<std::uint32_t> everyone = {0, 1, 2, 3};
    submit(200, everyone);
    REQUIRE(run_until(
        io, [&] { return all_committed(everyone); }, 20000ms));
    // The last blocks may still be on their way to some store: wait for equal tips.
    REQUIRE(run_until(io, [&] {
        for (auto i : everyone)
            if (stores[i]->tip_height() != stores[0]->tip_height()) return false;
        return true;
    }));
    const std::uint64_t height = same_chain(everyone);
    CHECK(height >= 1);
    for (auto i : everyone) {
        CHECK(transports[i]->stats().handshake_bad_signature == 0);
        CHECK(transports[i]->stats().dropped_queue_full == 0);
    }

    // A backup goes away; the other three are a quorum.
    const std::uint32_t primary = replicas[0]->primary();
    const std::uint32_t backup = primary == 3 ? 2 : 3;
    transports[backup]->close();
    replicas[backup].reset();
    std::vector<std::uint32_t> rest;
    for (auto i : everyone)
        if (i != backup) rest.push_back(i);
    submit(40, rest);
    REQUIRE(run_until(
        io, [&] { return all_committed(rest); }, 20000ms));
    REQUIRE(run_until(io, [&] {
        return stores[1]->tip_height() == stores[0]->tip_height() &&
               stores[2]->tip_height() == stores[0]->tip_height();
    }));
    CHECK(same_chain(rest) > height);
    CHECK(transports[primary]->stats().connections_lost >= 1); // its link to the backup
    replicas.clear();                                          // before their transports
}

TEST_CASE("asio: directory changes take effect on the next send") {
    asio::io_context io;
    Mesh mesh(io, 2);
    AsioTransport& a = *mesh.nodes[0];
    a.send(1, text("one"));
    REQUIRE(run_until(io, [&] { return mesh.inboxes[1].got.size() == 1; }));

    a.remove_peer(1);
    CHECK_FALSE(a.connected(1));
    a.send(1, text("to nobody"));
    CHECK(a.stats().dropped_unknown_destination == 1);
    // Node 1 no longer accepts node 0 either once node 0 is out of its directory.
    mesh.nodes[1]->remove_peer(0);
    REQUIRE(run_until(io, [&] { return !mesh.nodes[1]->connected(0); }));

    // Node 1 comes back with a new key: the old directory entry would refuse it.
    const SigningKey rotated = key_from_byte(0x2f);
    AsioOptions o = options_for(1, rotated);
    o.peers = mesh.directory();
    mesh.nodes[1].reset();
    auto renewed = make_transport(io, o);
    Inbox inbox;
    renewed->set_receiver(&inbox);
    REQUIRE(a.set_peer(1, address_of(*renewed, rotated)).ok());
    a.send(1, text("two"));
    REQUIRE(run_until(io, [&] { return inbox.got.size() == 1; }));
    CHECK(inbox.texts_from(0) == std::vector<std::string>{"two"});
    CHECK(a.stats().handshake_bad_signature == 0);
}

TEST_CASE("asio: a receiver may destroy the transport from inside a callback") {
    asio::io_context io;
    Mesh mesh(io, 2);
    bool destroyed = false;
    mesh.inboxes[1].also = [&](NodeId, ByteView) {
        mesh.nodes[1].reset();
        destroyed = true;
    };
    for (int k = 0; k < 50; ++k)
        mesh.nodes[0]->send(1, text("m" + std::to_string(k)));
    REQUIRE(run_until(io, [&] { return destroyed; }));
    CHECK(mesh.inboxes[1].got.size() == 1); // nothing after the destruction
    REQUIRE(run_until(io, [&] { return !mesh.nodes[0]->connected(1); }));

    bool fired = false;
    mesh.nodes[0]->set_timer(1, [&] {
        mesh.nodes[0].reset();
        fired = true;
    });
    REQUIRE(run_until(io, [&] { return fired; }));
    run_for(io, 10ms); // the cancelled handlers drain without a transport
}
