// The node's HTTP API over a simulated cluster: replica 0's routes served by a real
// HttpServer on loopback, requests made by HttpClient from another thread while this thread
// runs both the server's io_context and the simulated network (the replica is only ever
// touched on this thread, as in a node).
#include <popchain/api/http_client.hpp>
#include <popchain/api/http_server.hpp>
#include <popchain/api/json.hpp>
#include <popchain/api/node_api.hpp>
#include <popchain/hex.hpp>
#include <popchain/net/sim_cluster.hpp>
#include <popchain/pbft/certificate.hpp>

#include <asio/io_context.hpp>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <future>

using namespace popchain;
using namespace popchain::api;
using namespace popchain::net;

namespace {

struct Ignore : Receiver {
    void on_message(NodeId, ByteView) override {}
};

struct ApiFixture {
    SimCluster cluster;
    asio::io_context io;
    Ignore ignore;
    Transport& timers;
    HttpServer server;
    std::unique_ptr<NodeApi> api;
    std::uint16_t port = 0;

    explicit ApiFixture(NodeApiOptions options = {})
        : cluster(cluster_options()), timers(cluster.network().attach(first_client_id + 9, ignore)),
          server(io, {}) {
        auto attached = NodeApi::attach(server, *cluster.replica(0), cluster.store(0), timers,
                                        std::move(options));
        REQUIRE(attached.ok());
        api = std::move(attached).value();
        cluster.replica(0)->on_commit([this](const pbft::CommittedBlock& b) {
            api->block_committed(b.height, b.hash, b.txids);
        });
        REQUIRE(server.start().ok());
        port = server.local_port();
    }
    ~ApiFixture() { server.close(); }

    static SimClusterOptions cluster_options() {
        SimClusterOptions o;
        o.seed = 21;
        o.faults.min_delay = 1;
        o.faults.max_delay = 5;
        o.config.checkpoint_interval = 4;
        o.config.watermark_window = 8;
        return o;
    }

    // Drives the server and the network until the request made on another thread returns.
    HttpResponse call(std::string method, std::string target, std::string body = {}) {
        auto reply = std::async(std::launch::async, [&] {
            return HttpClient::request(method, "127.0.0.1", port, target, body, {},
                                       std::chrono::milliseconds(20'000));
        });
        while (reply.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
            io.restart();
            io.poll();
            cluster.network().run_for(1);
        }
        auto r = reply.get();
        REQUIRE_MESSAGE(r.ok(), r.error().message());
        return std::move(r).value();
    }
    nlohmann::json call_json(std::string method, std::string target, std::string body = {},
                             int expect = 200) {
        HttpResponse r = call(std::move(method), std::move(target), std::move(body));
        CHECK_MESSAGE(r.status == expect, r.body);
        return nlohmann::json::parse(r.body);
    }
    void settle(Millis ms) {
        for (Millis t = 0; t < ms; ++t) {
            io.restart();
            io.poll();
            cluster.network().run_for(1);
        }
    }
};

std::string tx_body(const Tx& tx) {
    return to_json(tx).dump();
}

} // namespace

TEST_CASE("node API: submit with wait, read the tx, block with a commit proof, account, "
          "address history") {
    ApiFixture f;
    const Tx tx = f.cluster.transfer(0, 1, 25);
    const std::string id = to_hex(tx.id().view());

    auto done = f.call_json("POST", "/v1/txs?wait=1", tx_body(tx));
    CHECK(done["status"] == "committed");
    CHECK(done["id"] == id);
    const std::uint64_t height = done["height"];
    CHECK(height >= 1);
    // The block hash it reports is the one in replica 0's store.
    CHECK(done["block_hash"] == to_hex(f.cluster.store(0).block_at(height)->hash().view()));

    // Submitting it again is not an error and does not pay twice.
    auto again = f.call_json("POST", "/v1/txs", tx_body(tx));
    CHECK(again["status"] == "committed");
    CHECK(again["height"] == height);

    auto got = f.call_json("GET", "/v1/txs/" + id);
    CHECK(got["status"] == "committed");
    CHECK(got["height"] == height);
    auto record = tx_record_from_json(
        {{"tx", got["tx"]}, {"height", got["height"]}, {"index", got["index"]}});
    REQUIRE_MESSAGE(record.ok(), record.error().message());
    CHECK(record->tx == tx);
    auto proof = merkle_proof_from_json(got["merkle_proof"]);
    REQUIRE(proof.ok());
    CHECK(merkle_verify(f.cluster.store(0).block_at(height)->header.tx_root, tx.id(), *proof));

    // Once a checkpoint at or above the block is stable, the block comes with a proof that a
    // light client checks with the replica set alone.
    for (int i = 0; i < 5; ++i) {
        const Tx more = f.cluster.transfer(2, 3, 1);
        f.call_json("POST", "/v1/txs?wait=1", tx_body(more));
    }
    f.settle(500);
    auto block = f.call_json("GET", "/v1/blocks/" + std::to_string(height));
    REQUIRE(block["certified"] == true);
    auto parsed_block = block_from_json(block["block"]);
    auto parsed_proof = commit_proof_from_json(block["commit_proof"]);
    REQUIRE(parsed_block.ok());
    REQUIRE(parsed_proof.ok());
    CHECK(pbft::verify_block(*parsed_block, *parsed_proof, f.cluster.genesis().replicas).ok());
    auto by_hash =
        f.call_json("GET", "/v1/blocks/by-hash/" + done["block_hash"].get<std::string>());
    CHECK(by_hash["block"]["header"]["height"] == height);
    CHECK(f.call_json("GET", "/v1/blocks/latest")["block"]["header"]["height"] ==
          f.cluster.replica(0)->height());

    const Address to = f.cluster.wallet(1).address();
    auto account = f.call_json("GET", "/v1/accounts/" + to.to_string());
    CHECK(account["balance"] == f.cluster.replica(0)->ledger().account(to).balance);
    auto history = f.call_json("GET", "/v1/addresses/" + to.to_string() + "/txs?limit=10");
    REQUIRE(history["txs"].size() == 1);
    CHECK(history["txs"][0]["tx"]["id"] == id);
    auto recent = f.call_json("GET", "/getAllTx?limit=3");
    CHECK(recent["txs"].size() == 3);

    auto status = f.call_json("GET", "/v1/status");
    CHECK(status["height"] == f.cluster.replica(0)->height());
    CHECK(status["primary"] == 0);

    HttpResponse metrics = f.call("GET", "/metrics");
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("popchain_height " + std::to_string(f.cluster.replica(0)->height())) !=
          std::string::npos);
    CHECK(metrics.body.find("popchain_dropped_messages_total{reason=\"bad_mac\"} 0") !=
          std::string::npos);
    CHECK(metrics.body.find("popchain_api_submits_total 7") != std::string::npos);
    const auto& stats = f.cluster.replica(0)->stats();
    CHECK(metrics.body.find("popchain_retransmissions_total " +
                            std::to_string(stats.retransmissions)) != std::string::npos);
    CHECK(metrics.body.find("popchain_bodies_resent_total " +
                            std::to_string(stats.bodies_resent)) != std::string::npos);
    CHECK(metrics.body.find("popchain_blocks_served_total " +
                            std::to_string(stats.blocks_served)) != std::string::npos);
}

TEST_CASE("node API: bad input gets a 4xx JSON error and changes nothing") {
    ApiFixture f;
    const std::uint64_t height = f.cluster.replica(0)->height();
    const Address alice = f.cluster.wallet(0).address();
    const auto before = f.cluster.replica(0)->ledger().account(alice);

    // Every error is {"error": {"code", "message"}}; the message is the detail for people,
    // without the code repeated in front of it.
    auto code_of = [&](HttpResponse r) {
        auto j = nlohmann::json::parse(r.body, nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        const std::string code = j["error"]["code"].get<std::string>();
        const std::string message = j["error"]["message"].get<std::string>();
        CHECK_FALSE(message.empty());
        CHECK_MESSAGE(message.rfind(code + ":", 0) != 0, r.body);
        return std::make_pair(r.status, code);
    };
    CHECK(code_of(f.call("POST", "/v1/txs", "{not json")).first == 400);
    nlohmann::json tx = to_json(f.cluster.transfer(0, 1, 5));
    nlohmann::json extra = tx;
    extra["surprise"] = 1;
    CHECK(code_of(f.call("POST", "/v1/txs", extra.dump())) ==
          std::make_pair(400, std::string("malformed")));
    nlohmann::json forged = tx;
    forged["amount"] = 6; // no longer what was signed
    forged.erase("id");
    CHECK(code_of(f.call("POST", "/v1/txs", forged.dump())) ==
          std::make_pair(400, std::string("bad_signature")));
    // An overdraft is refused up front (it would never make it into a block), as is a
    // reused nonce.
    CHECK(code_of(
              f.call("POST", "/v1/txs", to_json(f.cluster.transfer(1, 2, 1'000'000'000)).dump())) ==
          std::make_pair(400, std::string("insufficient_funds")));
    Tx first = f.cluster.transfer(2, 3, 1);
    f.call_json("POST", "/v1/txs?wait=1", tx_body(first));
    Tx reuse = first;
    reuse.amount = 2;
    CHECK(f.call("POST", "/v1/txs", to_json(reuse).dump()).status == 400);

    CHECK(code_of(f.call("GET", "/v1/blocks/abc")).first == 400);
    CHECK(code_of(f.call("GET", "/v1/blocks/99999")) ==
          std::make_pair(404, std::string("not_found")));
    CHECK(code_of(f.call("GET", "/v1/txs/1234")).first == 400);
    CHECK(f.call_json("GET", "/v1/txs/1234", {}, 400) ==
          nlohmann::json{
              {"error", {{"code", "invalid_argument"}, {"message", "tx id: 64 hex digits"}}}});
    // A malformed percent-escape is 400 wherever it is in the target; a well-formed one
    // stands for its character, in the route's literal segments too.
    CHECK(code_of(f.call("GET", "/v1/status%zz")) ==
          std::make_pair(400, std::string("bad_request")));
    CHECK(code_of(f.call("GET", "/v1/accounts/%zz")) ==
          std::make_pair(400, std::string("bad_request")));
    CHECK(code_of(f.call("GET", "/v1/txs?limit=%zz")) ==
          std::make_pair(400, std::string("bad_request")));
    CHECK(f.call_json("GET", "/v1/%73tatus")["id"] == 0); // GET /v1/status
    CHECK(code_of(f.call("GET", "/v1/statu%73%73")) ==
          std::make_pair(404, std::string("not_found")));
    CHECK(code_of(f.call("GET", "/v1/txs/" + std::string(64, '0'))).first == 404);
    CHECK(code_of(f.call("GET", "/v1/accounts/pop123")).first == 400);
    CHECK(code_of(f.call("GET", "/v1/addresses/" + alice.to_string() + "/txs?limit=0")).first ==
          400);
    CHECK(
        code_of(f.call("GET", "/v1/addresses/" + alice.to_string() + "/txs?limit=100000")).first ==
        400);
    CHECK(code_of(f.call("GET", "/v1/escrows/" + std::string(64, 'a'))).first == 404);
    CHECK(code_of(f.call("GET", "/getBlockOne")).first == 400);
    CHECK(code_of(f.call("GET", "/getBlockOne?height=0&hash=" + std::string(64, 'a'))).first ==
          400); // which one? not guessed
    CHECK(code_of(f.call("POST", "/makeWallet", R"({"passphrase":"long enough"})")) ==
          std::make_pair(403, std::string("forbidden")));
    // /charge carries top-ups only.
    CHECK(code_of(f.call("POST", "/charge", tx.dump())).first == 400);

    CHECK(f.cluster.replica(0)->ledger().account(alice) == before);
    f.settle(200);
    CHECK(f.cluster.replica(0)->height() == height + 1); // only `first` committed
}

TEST_CASE("node API: the original routes as aliases; dev wallets") {
    NodeApiOptions options;
    options.dev_wallets = true;
    ApiFixture f(options);
    const Tx tx = f.cluster.transfer(4, 5, 3);
    const std::string id = to_hex(tx.id().view());
    auto sent = f.call_json("POST", "/newTx", tx_body(tx), 202);
    CHECK(sent["id"] == id);
    f.settle(300);
    auto got = f.call_json("GET", "/getTx?id=" + id);
    CHECK(got["status"] == "committed");
    const std::uint64_t height = got["height"];
    CHECK(f.call_json("GET", "/getBlockOne?height=" +
                                 std::to_string(height))["block"]["header"]["height"] == height);
    auto by_address =
        f.call_json("GET", "/getAllTx?address=" + f.cluster.wallet(5).address().to_string());
    CHECK(by_address["txs"].size() == 1);
    auto block = f.call_json("POST", "/newBlock", "", 202);
    CHECK(block["height"] == f.cluster.replica(0)->height());

    auto wallet = f.call_json("POST", "/makeWallet", R"({"passphrase":"correct horse"})");
    auto key =
        SigningKey::from_encrypted_pem(wallet["encrypted_key"].get<std::string>(), "correct horse");
    REQUIRE(key.ok());
    CHECK(wallet["address"] == key->address().to_string());
    CHECK(f.call("POST", "/makeWallet", R"({"passphrase":"short"})").status == 400);
}

TEST_CASE("node API: a waiting submit whose transaction can no longer execute is answered 409 "
          "dropped when it leaves the mempool, not pending at wait_ms") {
    ApiFixture f;
    const Tx spend = f.cluster.transfer(1, 2, 900'000); // balance 1,000,000
    const Tx after = f.cluster.transfer(1, 3, 200'000); // next nonce: overdraft after spend
    // `after` first: not its sender's next transaction yet, so the mempool takes it to wait.
    auto reply = std::async(std::launch::async, [&] {
        return HttpClient::request("POST", "127.0.0.1", f.port, "/v1/txs?wait=1", tx_body(after),
                                   {}, std::chrono::milliseconds(20'000));
    });
    auto pump = [&] {
        f.io.restart();
        f.io.poll();
    };
    while (!f.cluster.replica(0)->mempool().contains(after.id()) &&
           reply.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready)
        pump(); // virtual time stands still: nothing is proposed meanwhile
    REQUIRE(f.cluster.replica(0)->mempool().contains(after.id()));
    REQUIRE(f.cluster.submit(spend, 0).ok());
    while (reply.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
        pump();
        f.cluster.network().run_for(1);
    }
    auto r = reply.get();
    REQUIRE(r.ok());
    CHECK(r->status == 409);
    CHECK(nlohmann::json::parse(r->body)["error"]["code"] == "dropped");
    CHECK(f.cluster.network().now() < 2'000); // at the spend's commit, not after wait_ms
    CHECK(f.cluster.store(0).tx_by_id(spend.id()).ok());
    CHECK_FALSE(f.cluster.store(0).tx_by_id(after.id()).ok());
    // ?wait_ms asks for less than the node's longest wait, never more; a bad one admits
    // nothing.
    const Tx other = f.cluster.transfer(3, 2, 1);
    for (const char* bad : {"0", "x", "10001"})
        CHECK(f.call_json("POST", std::string("/v1/txs?wait=1&wait_ms=") + bad, tx_body(other),
                          400)["error"]["code"] == "invalid_argument");
    CHECK_FALSE(f.cluster.replica(0)->mempool().contains(other.id()));
    CHECK(f.call_json("POST", "/v1/txs?wait=1&wait_ms=5000", tx_body(other))["status"] ==
          "committed");
}
