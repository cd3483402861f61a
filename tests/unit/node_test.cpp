// The node (node.hpp): its config file, the errors Node::open reports, and four Nodes on
// loopback committing client transfers over TCP, one of them stopped and restarted from its
// data_dir to catch up. Each node runs its own io_context on its own thread, as a process
// would; the test's pbft::Client runs on the test thread.
#include <popchain/api/http_client.hpp>
#include <popchain/api/json.hpp>
#include <popchain/application.hpp>
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/net/asio_transport.hpp>
#include <popchain/node.hpp>
#include <popchain/pbft/client.hpp>
#include <popchain/pbft/journal.hpp>
#include <popchain/pbft/replica.hpp>
#include <popchain/sqlite_store.hpp>
#include <popchain/wallet.hpp>

#include "test_support.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace popchain;
using popchain::test::code_name;
using popchain::test::key_from_byte;
using popchain::test::TempDir;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const std::string passphrase = "node-test-passphrase";

void write(const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream out(file, std::ios::binary);
    out << text;
    REQUIRE(out.good());
}

// A port nobody listens on right now (the kernel's pick for a socket closed at once).
std::uint16_t free_port() {
    asio::io_context io;
    asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    return a.local_endpoint().port();
}

// A chain of n replicas on loopback and a funded wallet per replica, written to `dir`:
// genesis.json, passphrase, node<i>/replica.key and node<i>/config.json.
struct TestChain {
    fs::path dir;
    std::vector<SigningKey> keys;
    std::vector<Wallet> wallets;
    Genesis genesis;

    std::vector<ReplicaInfo> learners; // have a key and a config, not in genesis

    TestChain(const fs::path& d, std::uint32_t n, std::uint32_t extra = 0,
              CommandRules commands = {})
        : dir(d) {
        genesis.params.chain_id = "node-test";
        genesis.params.commands = commands;
        genesis.params.authority = key_from_byte(0xa0).public_key();
        genesis.timestamp_ms = 1'700'000'000'000ull;
        for (std::uint32_t i = 0; i < n + extra; ++i) {
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x10 + i)));
            const Endpoint ep{"127.0.0.1", free_port()};
            (i < n ? genesis.replicas : learners)
                .push_back({i, keys[i].public_key(), ep.to_string()});
            wallets.emplace_back("w" + std::to_string(i),
                                 key_from_byte(static_cast<std::uint8_t>(0xc0 + i)));
            genesis.balances.push_back({wallets[i].address(), 1'000'000});
            auto pem = keys[i].encrypted_pem(passphrase, 1);
            REQUIRE(pem.ok());
            write(dir / node(i) / "replica.key", *pem);
            write(dir / node(i) / "config.json", config_json(i, ep));
        }
        write(dir / "genesis.json", genesis.to_json());
        write(dir / "passphrase", passphrase + "\n");
    }
    static std::string node(std::uint32_t i) { return "node" + std::to_string(i); }
    fs::path config_file(std::uint32_t i) const { return dir / node(i) / "config.json"; }
    static std::string config_json(std::uint32_t i, const Endpoint& ep) {
        // Small checkpoint interval: a restarted node catches up by state transfer from the
        // certified checkpoints, which a short test then produces.
        return R"({"id": )" + std::to_string(i) + R"(, "data_dir": "data",
            "genesis": "../genesis.json", "key_file": "replica.key",
            "passphrase_file": "../passphrase", "listen": ")" +
               ep.to_string() + R"(", "status_interval_ms": 0,
            "replica": {"checkpoint_interval": 4, "watermark_window": 16,
                        "request_timeout_ms": 5000}})";
    }
    NodeConfig config(std::uint32_t i) const {
        auto c = NodeConfig::load(config_file(i));
        REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message()));
        return *c;
    }
};

// A node running on its own thread until stopped.
struct Running {
    std::unique_ptr<Node> node;
    std::thread thread;
    explicit Running(NodeConfig config) {
        auto opened = Node::open(std::move(config));
        REQUIRE_MESSAGE(opened.ok(), (opened.ok() ? "" : opened.error().message()));
        node = std::move(opened).value();
        thread = std::thread([n = node.get()] { CHECK(n->run(false).ok()); });
    }
    ~Running() { stop(); }
    void stop() {
        if (!thread.joinable()) return;
        node->stop();
        thread.join();
        node.reset();
    }
    std::optional<std::uint64_t> tip() const { return node->store().tip_height(); }
};

// A pBFT client on this thread, with a client connection to every genesis replica's port.
struct TcpClient {
    asio::io_context io;
    SigningKey session;
    std::unique_ptr<net::AsioTransport> transport;
    std::unique_ptr<pbft::Client> client; // declared after the transport: destroyed first

    TcpClient(const TestChain& chain, net::NodeId self, std::uint8_t key_byte)
        : session(key_from_byte(key_byte)) {
        auto built = chain.genesis.build();
        REQUIRE(built.ok());
        net::AsioOptions o;
        o.self = self;
        o.key = &session;
        o.network_id = built->block.hash();
        o.listen = false;
        for (const auto& r : chain.genesis.replicas) {
            auto ep = Endpoint::parse(r.endpoint);
            REQUIRE(ep.ok());
            o.peers[r.id] = net::PeerAddress{ep->host, ep->port, r.key};
        }
        auto made = net::AsioTransport::create(io, o);
        REQUIRE(made.ok());
        transport = std::move(made).value();
        auto c = pbft::Client::create(*transport, chain.genesis.replicas);
        REQUIRE(c.ok());
        client = std::move(c).value();
        transport->set_receiver(client.get());
    }
};

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

} // namespace

TEST_CASE("node: endpoints") {
    CHECK(Endpoint::parse("127.0.0.1:7000").value() == Endpoint{"127.0.0.1", 7000});
    CHECK(Endpoint::parse("[::1]:80").value() == Endpoint{"::1", 80});
    CHECK(Endpoint::parse("[::1]:80")->to_string() == "[::1]:80");
    CHECK(Endpoint::parse("node.example:65535").ok());
    for (const char* bad :
         {"", "7000", "host:", ":7000", "host:0", "host:65536", "host:7x", "::1:7000"})
        CHECK_MESSAGE(!Endpoint::parse(bad).ok(), bad);
}

TEST_CASE("node: config files") {
    const fs::path base = "/etc/popchain/node0";
    const std::string good = R"({"id": 2, "data_dir": "data", "genesis": "../genesis.json",
        "key_file": "/keys/r2.key", "passphrase_file": "pass", "listen": "0.0.0.0:7002",
        "api": "127.0.0.1:8002", "accept_clients": false, "status_interval_ms": 1000,
        "application": "noop", "fsync": false, "storage": "memory",
        "replica": {"max_block_txs": 50, "checkpoint_interval": 8, "watermark_window": 32,
                    "request_timeout_ms": 3000, "max_batch_delay_ms": 5}})";

    SUBCASE("good, with relative paths against the config's directory") {
        auto c = NodeConfig::from_json(good, base);
        REQUIRE_MESSAGE(c.ok(), (c.ok() ? "" : c.error().message()));
        CHECK(c->id == 2);
        CHECK(c->data_dir == "/etc/popchain/node0/data");
        CHECK(c->genesis_file == "/etc/popchain/genesis.json");
        CHECK(c->key_file == "/keys/r2.key");
        CHECK(c->passphrase_file == fs::path("/etc/popchain/node0/pass"));
        CHECK(c->listen == Endpoint{"0.0.0.0", 7002});
        CHECK(c->api == Endpoint{"127.0.0.1", 8002});
        CHECK(!c->accept_clients);
        CHECK(c->status_interval_ms == 1000);
        CHECK(c->application == "noop");
        CHECK_FALSE(c->fsync);
        CHECK(c->storage == "memory");
        CHECK(c->replica.max_block_txs == 50);
        CHECK(c->replica.checkpoint_interval == 8);
        CHECK(c->replica.watermark_window == 32);
        CHECK(c->replica.request_timeout_ms == 3000);
        CHECK(c->replica.max_batch_delay_ms == 5);
        CHECK(c->replica.retransmit_ms == pbft::ReplicaConfig{}.retransmit_ms); // default kept
        // to_json() round-trips (its paths are absolute now).
        auto again = NodeConfig::from_json(c->to_json(), "/elsewhere");
        REQUIRE(again.ok());
        CHECK(again->to_json() == c->to_json());
    }
    SUBCASE("minimal: defaults for the optional fields") {
        auto c = NodeConfig::from_json(R"({"id": 0, "data_dir": "d", "genesis": "g",
            "key_file": "k", "listen": "127.0.0.1:7000"})",
                                       base);
        REQUIRE(c.ok());
        CHECK(c->accept_clients);
        CHECK(!c->passphrase_file);
        CHECK(!c->api);
        CHECK(c->application.empty());
        CHECK(c->fsync);
        CHECK(c->storage == "sqlite");
    }
    struct Bad {
        std::string text;
        std::string says;
    };
    const std::vector<Bad> bad = {
        {"not json", "not valid JSON"},
        {"[1]", "JSON object"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "colour": "red"})",
         "unknown field \"colour\""},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "replica": {"batch_size": 3}})",
         "unknown field \"batch_size\" in replica"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k"})",
         "missing field \"listen\""},
        {R"({"id": -1, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1"})",
         "id must be"},
        {R"({"id": 2147483648, "data_dir": "d", "genesis": "g", "key_file": "k",
             "listen": "h:1"})",
         "id must be"},
        {R"({"id": 0, "data_dir": "", "genesis": "g", "key_file": "k", "listen": "h:1"})",
         "data_dir must be"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h"})", "listen"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "accept_clients": "yes"})",
         "accept_clients"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "replica": {"checkpoint_interval": 10, "watermark_window": 10}})",
         "watermark_window"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "replica": {"max_block_txs": 0}})",
         "max_block_txs"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "application": "kv"})",
         "not built in"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "fsync": "no"})",
         "fsync must be"},
        {R"({"id": 0, "data_dir": "d", "genesis": "g", "key_file": "k", "listen": "h:1",
             "storage": "tape"})",
         "storage must be"},
    };
    for (const auto& b : bad) {
        auto c = NodeConfig::from_json(b.text, base);
        REQUIRE_MESSAGE(!c.ok(), b.text);
        CHECK(c.code() == Errc::invalid_argument);
        const std::string why = c.error().detail + " should mention " + b.says;
        CHECK_MESSAGE(c.error().detail.find(b.says) != std::string::npos, why);
    }
    auto missing = NodeConfig::load("/nonexistent/config.json");
    CHECK(missing.code() == Errc::not_found);
}

TEST_CASE("node: open reports what is wrong") {
    TempDir tmp;
    TestChain chain(tmp.path(), 4);

    SUBCASE("an application on a chain that takes no commands") {
        NodeConfig c = chain.config(0);
        c.application = "noop";
        auto n = Node::open(c);
        CHECK(n.code() == Errc::invalid_argument);
        CHECK(n.error().detail.find("takes no commands") != std::string::npos);
    }
    SUBCASE("wrong passphrase") {
        write(chain.dir / "passphrase", "not the passphrase\n");
        auto n = Node::open(chain.config(0));
        CHECK(n.code() == Errc::wrong_passphrase);
        CHECK(n.error().detail.find("replica.key") != std::string::npos);
    }
    SUBCASE("passphrase from the environment when there is no passphrase file") {
        NodeConfig c = chain.config(0);
        c.passphrase_file.reset();
        ::unsetenv("POPCHAIN_PASSPHRASE");
        CHECK(Node::open(c).code() == Errc::invalid_argument);
        ::setenv("POPCHAIN_PASSPHRASE", passphrase.c_str(), 1);
        auto n = Node::open(c);
        ::unsetenv("POPCHAIN_PASSPHRASE");
        CHECK_MESSAGE(n.ok(), (n.ok() ? "" : n.error().message()));
    }
    SUBCASE("missing genesis") {
        fs::remove(chain.dir / "genesis.json");
        auto n = Node::open(chain.config(0));
        CHECK(n.code() == Errc::not_found);
        CHECK(n.error().detail.find("genesis.json") != std::string::npos);
    }
    SUBCASE("a key that is not this replica's") {
        NodeConfig c = chain.config(0);
        c.key_file = chain.dir / "node1" / "replica.key";
        auto n = Node::open(c);
        CHECK(n.code() == Errc::invalid_argument);
        CHECK(n.error().detail.find("replica 0") != std::string::npos);
    }
    SUBCASE("port in use") {
        const NodeConfig c = chain.config(0);
        asio::io_context io;
        asio::ip::tcp::acceptor squatter(
            io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), c.listen.port));
        auto n = Node::open(c);
        CHECK(n.code() == Errc::io_error);
        CHECK(n.error().detail.find(c.listen.to_string()) != std::string::npos);
    }
    SUBCASE("a data_dir another node holds") {
        auto first = Node::open(chain.config(0));
        REQUIRE(first.ok());
        NodeConfig c = chain.config(0);
        c.listen.port = free_port();
        auto second = Node::open(c);
        CHECK(second.code() == Errc::io_error);
        CHECK(second.error().detail.find("another node is running") != std::string::npos);
    }
    SUBCASE("a journal.db from an earlier version is adopted, then removed") {
        const NodeConfig c = chain.config(0);
        const fs::path old_file = c.data_dir / "journal.db";
        fs::create_directories(c.data_dir);
        pbft::Vote vote{7, 3, sha256(std::string_view("a block"))};
        {
            auto old = pbft::SqliteJournal::open(old_file);
            REQUIRE(old.ok());
            (*old)->set_view(7, false);
            (*old)->put_vote(pbft::MsgType::prepare, vote);
            REQUIRE((*old)->sync().ok());
        }
        {
            auto n = Node::open(c);
            REQUIRE_MESSAGE(n.ok(), (n.ok() ? "" : n.error().message()));
        }
        CHECK_FALSE(fs::exists(old_file));
        auto store = SqliteStore::open(c.data_dir / "chain.db");
        REQUIRE(store.ok());
        auto journal = pbft::SqliteJournal::open_in(**store);
        REQUIRE(journal.ok());
        auto state = (*journal)->load();
        REQUIRE(state.ok());
        CHECK(state->view >= 7); // the promise survived the move: never a lower view again
        const auto& votes = state->own_votes;
        CHECK(std::find(votes.begin(), votes.end(), std::pair{pbft::MsgType::prepare, vote}) !=
              votes.end());
    }
    SUBCASE("a journal.db that disagrees with the journal in chain.db is refused") {
        const NodeConfig c = chain.config(0);
        {
            auto n = Node::open(c); // creates chain.db with its (empty) journal
            REQUIRE(n.ok());
        }
        {
            auto store = SqliteStore::open(c.data_dir / "chain.db");
            REQUIRE(store.ok());
            auto journal = pbft::SqliteJournal::open_in(**store);
            REQUIRE(journal.ok());
            (*journal)->set_view(2, false);
            REQUIRE((*journal)->sync().ok());
        }
        {
            auto old = pbft::SqliteJournal::open(c.data_dir / "journal.db");
            REQUIRE(old.ok());
            (*old)->set_view(5, false);
            REQUIRE((*old)->sync().ok());
        }
        auto n = Node::open(c);
        CHECK(n.code() == Errc::storage_corrupt);
        CHECK(n.error().detail.find("disagree") != std::string::npos);
        CHECK(fs::exists(c.data_dir / "journal.db")); // nothing removed
    }
    SUBCASE("a store of another chain") {
        {
            auto n = Node::open(chain.config(0)); // writes this chain's genesis block
            REQUIRE(n.ok());
        }
        TestChain other(tmp.path() / "other", 4);
        NodeConfig c = other.config(0);
        c.data_dir = chain.config(0).data_dir;
        auto n = Node::open(c);
        CHECK(n.code() == Errc::invalid_argument);
        CHECK(n.error().detail.find("another chain") != std::string::npos);
    }
}

TEST_CASE("node: four nodes commit client transfers over TCP; a restarted node catches up") {
    TempDir tmp;
    constexpr std::uint32_t n = 4;
    TestChain chain(tmp.path(), n);
    std::vector<std::unique_ptr<Running>> nodes;
    for (std::uint32_t i = 0; i < n; ++i)
        nodes.push_back(std::make_unique<Running>(chain.config(i)));

    // The client side, on this thread: a client connection to every replica's port.
    TcpClient tcp(chain, net::first_client_id + 1, 0x77);
    asio::io_context& io = tcp.io;
    auto& client = tcp.client;

    std::vector<std::uint64_t> nonces(n, 0);
    std::vector<Result<pbft::Committed>> outcomes;
    // `count` transfers, round-robin over the wallets, waited for together.
    auto transfer = [&](std::size_t count) {
        outcomes.clear();
        for (std::size_t k = 0; k < count; ++k) {
            const std::size_t w = k % n;
            const Tx tx = chain.wallets[w].transfer(chain.genesis.params.chain_id, nonces[w]++,
                                                    chain.wallets[(w + 1) % n].address(), 1 + k);
            client->submit(tx, [&](Result<pbft::Committed> r) { outcomes.push_back(r); });
        }
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (outcomes.size() < count && std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.run_for(10ms);
        }
        REQUIRE(outcomes.size() == count);
        for (const auto& r : outcomes)
            CHECK_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
    };
    auto tips_equal = [&](const std::vector<std::uint32_t>& who) {
        return wait_for(
            [&] {
                for (auto i : who)
                    if (nodes[i]->tip() != nodes[who[0]]->tip()) return false;
                return true;
            },
            20s);
    };
    auto same_blocks = [&](const std::vector<std::uint32_t>& who) {
        const auto top = nodes[who[0]]->tip();
        REQUIRE(top.has_value());
        for (std::uint64_t h = 0; h <= *top; ++h) {
            auto reference = nodes[who[0]]->node->store().block_at(h);
            REQUIRE(reference.ok());
            for (auto i : who) {
                auto b = nodes[i]->node->store().block_at(h);
                REQUIRE(b.ok());
                CHECK(b->hash() == reference->hash());
            }
        }
        return *top;
    };

    transfer(20);
    REQUIRE(tips_equal({0, 1, 2, 3}));
    const std::uint64_t first_height = same_blocks({0, 1, 2, 3});
    CHECK(first_height >= 1);

    // Stop a backup (replica 3: the primary of view 0 is replica 0); the others go on.
    nodes[3]->stop();
    transfer(20);
    REQUIRE(tips_equal({0, 1, 2}));
    const std::uint64_t second_height = same_blocks({0, 1, 2});
    CHECK(second_height > first_height);

    // Restart it from its data_dir: it reopens store and journal and catches up.
    nodes[3] = std::make_unique<Running>(chain.config(3));
    transfer(8); // more traffic, so it hears of the newer checkpoints
    REQUIRE(tips_equal({0, 1, 2, 3}));
    CHECK(same_blocks({0, 1, 2, 3}) > second_height);

    client.reset();
    for (auto& r : nodes)
        r->stop();
    // Stopped cleanly: the stores and the journals in them reopen, and the data_dir lock
    // went with the node.
    for (std::uint32_t i = 0; i < n; ++i) {
        auto store = SqliteStore::open(chain.config(i).data_dir / "chain.db");
        REQUIRE(store.ok());
        CHECK((*store)->tip_height() >= second_height);
        CHECK(pbft::SqliteJournal::open_in(**store).ok());
        CHECK_FALSE(fs::exists(chain.config(i).data_dir / "journal.db"));
    }
}

TEST_CASE("node: consensus-only nodes, in memory or without fsync, order commands for their "
          "no-op applications") {
    TempDir tmp;
    constexpr std::uint32_t n = 4;
    TestChain chain(tmp.path(), n, 0, noop_command_rules());
    std::vector<std::unique_ptr<Running>> nodes;
    for (std::uint32_t i = 0; i < n; ++i) {
        NodeConfig c = chain.config(i);
        c.application = "noop";
        c.fsync = false;
        if (i < 2) c.storage = "memory";
        nodes.push_back(std::make_unique<Running>(c));
    }
    TcpClient tcp(chain, net::first_client_id + 1, 0x78);
    std::vector<Result<pbft::Committed>> outcomes;
    constexpr std::size_t count = 50;
    for (std::size_t k = 0; k < count; ++k) {
        const Tx tx = make_command(chain.genesis.params.chain_id, command_client(k % 3), k / 3,
                                   Bytes(8, static_cast<std::uint8_t>(k)));
        tcp.client->submit(tx, [&](Result<pbft::Committed> r) { outcomes.push_back(r); });
    }
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (outcomes.size() < count && std::chrono::steady_clock::now() < deadline) {
        tcp.io.restart();
        tcp.io.run_for(10ms);
    }
    REQUIRE(outcomes.size() == count);
    for (const auto& r : outcomes)
        CHECK_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
    // Every application executes all of them, to the same digest. Each is read on its
    // node's thread.
    struct AppView {
        std::uint64_t height = 0, commands = 0;
        Hash256 digest;
        bool operator==(const AppView&) const = default;
    };
    auto view_of = [](Node& node) {
        std::promise<AppView> seen;
        asio::post(node.io_context(), [&] {
            const auto* app = dynamic_cast<const NoopApplication*>(node.replica().application());
            seen.set_value(
                app ? AppView{app->height(), app->executed_commands(), app->state_digest()}
                    : AppView{});
        });
        return seen.get_future().get();
    };
    CHECK(wait_for(
        [&] {
            const AppView first = view_of(*nodes[0]->node);
            if (first.commands != count) return false;
            for (auto& r : nodes)
                if (!(view_of(*r->node) == first)) return false;
            return true;
        },
        20s));
    const AppView first = view_of(*nodes[0]->node);
    CHECK(first.commands == count);
    CHECK(first.height == nodes[0]->tip());
    CHECK_FALSE(first.digest.is_zero());
}

TEST_CASE("node: a replica added by a config transaction joins: members dial it, it catches up") {
    TempDir tmp;
    constexpr std::uint32_t n = 4;
    TestChain chain(tmp.path(), n, 1); // replica 4 is not in genesis
    std::vector<std::unique_ptr<Running>> nodes;
    for (std::uint32_t i = 0; i <= n; ++i)
        nodes.push_back(std::make_unique<Running>(chain.config(i)));

    TcpClient tcp(chain, net::first_client_id + 2, 0x78);
    asio::io_context& io = tcp.io;
    auto& client = tcp.client;
    auto commit = [&](const Tx& tx) {
        std::optional<Result<pbft::Committed>> outcome;
        client->submit(tx, [&](Result<pbft::Committed> r) { outcome = r; });
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (!outcome && std::chrono::steady_clock::now() < deadline) {
            io.restart();
            io.run_for(10ms);
        }
        REQUIRE(outcome.has_value());
        REQUIRE_MESSAGE(outcome->ok(), (outcome->ok() ? "" : outcome->error().message()));
    };

    // Before the change the learner is a stranger: the members refuse its handshakes.
    commit(
        chain.wallets[0].transfer(chain.genesis.params.chain_id, 0, chain.wallets[1].address(), 1));
    CHECK(nodes[4]->tip() == std::optional<std::uint64_t>(0));

    const Wallet authority("authority", key_from_byte(0xa0));
    ConfigChange add;
    add.action = ConfigChange::Action::add_replica;
    add.replica = chain.learners.at(0);
    commit(authority.config(chain.genesis.params.chain_id, 0, add));
    // Blocks past the next checkpoint boundary (interval 4), where the set switches.
    for (std::uint64_t k = 1; k <= 6; ++k)
        commit(chain.wallets[0].transfer(chain.genesis.params.chain_id, k,
                                         chain.wallets[1].address(), 1));
    const bool caught_up = wait_for([&] { return nodes[4]->tip() == nodes[0]->tip(); }, 20s);
    CHECK_MESSAGE(caught_up, "learner at " << nodes[4]->tip().value_or(0) << ", members at "
                                           << nodes[0]->tip().value_or(0));
    auto b0 = nodes[0]->node->store().block_at(*nodes[0]->tip());
    auto b4 = nodes[4]->node->store().block_at(*nodes[0]->tip());
    REQUIRE(b0.ok());
    REQUIRE(b4.ok());
    CHECK(b0->hash() == b4->hash());

    client.reset();
    for (auto& r : nodes)
        r->stop();
}

TEST_CASE("node: on_started hands the running node to an API: submit and status on its thread") {
    TempDir tmp;
    TestChain chain(tmp.path(), 1);
    auto opened = Node::open(chain.config(0));
    REQUIRE(opened.ok());
    Node& node = **opened;
    bool started = false;
    Result<void> submitted = make_error(Errc::timeout);
    NodeStatus seen;
    std::atomic<bool> done{false};
    // What an API route would do: work on the node's own io_context. Destroyed before the
    // node (declared after it).
    std::optional<asio::steady_timer> timer;
    std::function<void()> poll = [&] {
        if (node.status().height >= 1) {
            seen = node.status();
            done = true;
            node.stop();
            return;
        }
        timer->expires_after(10ms);
        timer->async_wait([&](const std::error_code& ec) {
            if (!ec) poll();
        });
    };
    node.on_started([&](Node& n) {
        started = true;
        submitted = n.submit(chain.wallets[0].transfer(chain.genesis.params.chain_id, 0,
                                                       chain.wallets[0].address(), 1));
        timer.emplace(n.io_context());
        poll();
    });
    std::thread watchdog([&] {
        // The test fails rather than hangs if the block never commits.
        for (int i = 0; i < 500 && !done; ++i)
            std::this_thread::sleep_for(20ms);
        node.stop();
    });
    CHECK(node.run(false).ok());
    watchdog.join();
    CHECK(started);
    CHECK_MESSAGE(submitted.ok(), (submitted.ok() ? "" : submitted.error().message()));
    CHECK(seen.height == 1);
    CHECK(seen.id == 0);
    CHECK(seen.primary == 0);
    CHECK(seen.peers == 0);
    CHECK(seen.mempool == 0);
}

TEST_CASE("node: the HTTP API is served on the node's io_context: submit, wait, read back") {
    TempDir tmp;
    TestChain chain(tmp.path(), 1);
    NodeConfig config = chain.config(0);
    config.api = Endpoint{"127.0.0.1", 0};
    auto opened = Node::open(config);
    REQUIRE(opened.ok());
    Node& node = **opened;
    REQUIRE(node.api_port() != 0);
    const Tx tx =
        chain.wallets[0].transfer(chain.genesis.params.chain_id, 0, chain.wallets[0].address(), 1);
    const std::string id = to_hex(tx.id().view());
    std::optional<api::HttpResponse> submitted, read_back, status, wallet;
    std::thread client([&] {
        auto call = [&](std::string_view method, std::string target, std::string body = {}) {
            auto r = api::HttpClient::request(method, "127.0.0.1", node.api_port(), target, body);
            return r ? std::optional<api::HttpResponse>(*r) : std::nullopt;
        };
        submitted = call("POST", "/v1/txs?wait=1", api::to_json(tx).dump());
        read_back = call("GET", "/v1/txs/" + id);
        status = call("GET", "/v1/status");
        wallet = call("POST", "/makeWallet", R"({"passphrase":"long enough"})");
        node.stop();
    });
    CHECK(node.run(false).ok());
    client.join();
    REQUIRE(submitted);
    CHECK_MESSAGE(submitted->status == 200, submitted->body);
    CHECK(submitted->body.find("\"committed\"") != std::string::npos);
    REQUIRE(read_back);
    CHECK(read_back->status == 200);
    CHECK(read_back->body.find(id) != std::string::npos);
    REQUIRE(status);
    CHECK(status->body.find("\"height\":1") != std::string::npos);
    REQUIRE(wallet);
    CHECK(wallet->status == 403); // dev_wallets is off unless the config says so
}
