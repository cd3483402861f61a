// The client protocol: reply frames are authenticated end to end, a client trusts only f+1
// matching replies, retransmits through lost messages and a crashed primary, and replicas
// answer duplicates of committed transactions from their store.
#include <popchain/net/sim_cluster.hpp>
#include <popchain/pbft/client.hpp>

#include <doctest/doctest.h>

#include <map>
#include <optional>
#include <vector>

using namespace popchain;
using namespace popchain::net;
using namespace popchain::pbft;

namespace {

SimClusterOptions client_options(std::uint64_t seed) {
    SimClusterOptions o;
    o.seed = seed;
    o.faults.min_delay = 1;
    o.faults.max_delay = 10;
    o.config.max_block_txs = 16;
    o.config.checkpoint_interval = 4;
    o.config.watermark_window = 8;
    return o;
}

struct Outcomes {
    std::map<Hash256, Result<Committed>> by_txid;
    Client::DoneFn record(const Hash256& txid) {
        return [this, txid](Result<Committed> r) {
            CHECK(by_txid.count(txid) == 0); // done is called once
            by_txid.insert_or_assign(txid, std::move(r));
        };
    }
};

Reply sample_reply() {
    Reply r;
    r.replica = 2;
    r.view = 5;
    r.txid = sha256("tx");
    r.status = ReplyStatus::committed;
    r.height = 17;
    r.block_hash = sha256("block");
    return r;
}

} // namespace

TEST_CASE("client frames: reply MAC keys agree, replies verify, tampering and garbage fail") {
    SigningKey replica = SigningKey::generate();
    SigningKey client = SigningKey::generate();
    auto at_replica = reply_key(replica, client.public_key(), 2);
    auto at_client = reply_key(client, replica.public_key(), 2);
    REQUIRE(at_replica.ok());
    REQUIRE(at_client.ok());
    CHECK(*at_replica == *at_client);
    // The replica id is bound in: the same key pair gives another key for another id.
    CHECK(*reply_key(client, replica.public_key(), 3) != *at_client);

    const Reply r = sample_reply();
    const Bytes frame = encode_reply(r, *at_replica);
    auto key_of = [&](ReplicaId id) -> std::optional<Hash256> {
        if (id == 2) return *at_client;
        return std::nullopt;
    };
    auto opened = open_reply(frame, key_of);
    REQUIRE(opened.ok());
    CHECK(*opened == r);

    for (std::size_t i = 0; i < frame.size(); ++i) {
        Bytes bad = frame;
        bad[i] ^= 0x01;
        CAPTURE(i);
        CHECK_FALSE(open_reply(bad, key_of).ok());
    }
    CHECK(open_reply(encode_reply(r, sha256("other key")), key_of).code() == Errc::bad_mac);
    Reply stranger = r;
    stranger.replica = 9;
    CHECK(open_reply(encode_reply(stranger, *at_replica), key_of).code() == Errc::unknown_peer);
    CHECK_FALSE(open_reply(Bytes(frame.begin(), frame.end() - 1), key_of).ok());
    CHECK_FALSE(open_reply(Bytes{}, key_of).ok());

    // Many replies in one frame under one MAC: the order and every field come back, and
    // every reply carries the frame's replica and view.
    std::vector<Reply> many;
    for (int i = 0; i < 5; ++i) {
        Reply m = r;
        m.txid = sha256("tx " + std::to_string(i));
        m.status = i == 3 ? ReplyStatus::rejected : ReplyStatus::committed;
        m.code = i == 3 ? static_cast<std::uint16_t>(Errc::nonce_gap) : 0;
        m.result = Bytes(static_cast<std::size_t>(i), 0x33);
        many.push_back(m);
    }
    const Bytes batch = encode_replies(many, *at_replica);
    auto batch_opened = open_replies(batch, key_of);
    REQUIRE(batch_opened.ok());
    CHECK(*batch_opened == many);
    CHECK(open_reply(batch, key_of).code() == Errc::malformed); // not exactly one
    for (std::size_t i = 0; i < batch.size(); ++i) {
        Bytes bad = batch;
        bad[i] ^= 0x80;
        CAPTURE(i);
        CHECK_FALSE(open_replies(bad, key_of).ok());
    }
    // An empty frame, and one claiming more replies than a frame may hold, are refused.
    Bytes empty = encode_reply(r, *at_replica);
    CHECK(open_replies(encode_replies({}, *at_replica), key_of).code() == Errc::malformed);
    const std::size_t count_at = 2 + 4 + 8;
    for (std::size_t k = 0; k < 4; ++k)
        empty[count_at + k] = static_cast<std::uint8_t>((max_replies_per_frame + 1) >> (8 * k));
    CHECK(open_replies(empty, key_of).code() == Errc::malformed);

    // Submit frames: round trip, and refusals of garbage and of a key not on the curve.
    SimCluster cluster(client_options(1));
    const Tx tx = cluster.transfer(0, 1, 5);
    const Bytes submit = encode_client_submit(ClientSubmit{client.public_key(), tx});
    auto decoded = decode_client_submit(submit);
    REQUIRE(decoded.ok());
    CHECK(decoded->tx == tx);
    CHECK(decoded->client_key == client.public_key());
    CHECK(client_frame_type(submit).value() == ClientMsgType::submit);
    CHECK(client_frame_type(frame).value() == ClientMsgType::reply);
    CHECK_FALSE(decode_client_submit(frame).ok());
    CHECK_FALSE(decode_client_submit(Bytes(submit.begin(), submit.end() - 3)).ok());
    Bytes bad_key = submit;
    bad_key[2] = 0x07; // a compressed point starts with 02 or 03
    CHECK_FALSE(decode_client_submit(bad_key).ok());
    Bytes bad_version = submit;
    bad_version[0] = 9;
    CHECK_FALSE(client_frame_type(bad_version).ok());
}

TEST_CASE("client: f+1 matching replies over a lossy network, duplicates answered from the "
          "store") {
    SimClusterOptions o = client_options(7);
    o.faults.drop = 0.1;
    o.faults.duplicate = 0.05;
    SimCluster cluster(o);
    Client& client = cluster.network_client({.retry_ms = 200});
    Outcomes outcomes;
    std::vector<Tx> txs;
    for (std::size_t i = 0; i < 60; ++i) {
        txs.push_back(cluster.transfer(i % 8, (i + 3) % 8, 1 + i));
        client.submit(txs.back(), outcomes.record(txs.back().id()));
        cluster.network().run_for(2);
    }
    REQUIRE(cluster.network().run_until([&] { return client.outstanding() == 0; }, 60'000));
    REQUIRE(outcomes.by_txid.size() == txs.size());
    // f+1 replies may come before replica 0 (whose store is read below) executed them all.
    std::vector<Hash256> ids;
    for (const auto& tx : txs)
        ids.push_back(tx.id());
    REQUIRE(cluster.run_until_committed(ids, cluster.network().now() + 60'000));
    for (const auto& tx : txs) {
        const auto& r = outcomes.by_txid.at(tx.id());
        REQUIRE_MESSAGE(r.ok(), r.error().message());
        // What f+1 replicas vouched for is what the stores hold.
        auto record = cluster.store(0).tx_by_id(tx.id());
        REQUIRE(record.ok());
        CHECK(r->height == record->height);
        CHECK(r->block_hash == cluster.store(0).block_at(record->height)->hash());
    }
    CHECK(client.stats().committed == txs.size());
    CHECK(client.stats().bad_replies == 0);
    CHECK(client.stats().retransmissions > 0); // 10% drops: some requests or replies were lost
    CHECK(cluster.check_safety().ok());

    // The same transaction again, long after it committed: answered from the store, with
    // the same outcome, and nothing new is proposed.
    cluster.network().run_for(1000);
    const std::uint64_t height = cluster.replica(0)->height();
    std::uint64_t from_store = 0;
    for (ReplicaId id = 0; id < cluster.size(); ++id)
        from_store += cluster.replica(id)->stats().replies_from_store;
    std::optional<Result<Committed>> again;
    client.submit(txs.front(), [&](Result<Committed> r) { again = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return again.has_value(); }, 120'000));
    REQUIRE(again->ok());
    CHECK(**again == *outcomes.by_txid.at(txs.front().id()));
    std::uint64_t from_store_after = 0;
    for (ReplicaId id = 0; id < cluster.size(); ++id)
        from_store_after += cluster.replica(id)->stats().replies_from_store;
    CHECK(from_store_after > from_store);
    cluster.network().run_for(1000);
    CHECK(cluster.replica(0)->height() == height);
}

TEST_CASE("client: the primary is down; retransmission to all replicas gets the request "
          "through the view change") {
    SimCluster cluster(client_options(11));
    cluster.crash(0); // the primary of view 0, where the client sends first
    Client& client = cluster.network_client({.retry_ms = 100});
    Outcomes outcomes;
    const Tx tx = cluster.transfer(1, 2, 10);
    client.submit(tx, outcomes.record(tx.id()));
    REQUIRE(cluster.network().run_until([&] { return client.outstanding() == 0; }, 120'000));
    const auto& r = outcomes.by_txid.at(tx.id());
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(cluster.replica(1)->view() > 0);
    CHECK(client.stats().retransmissions > 0);

    // Once the view has changed, a request is committed by its first transmission: every
    // replica heard it from the client and answers.
    const auto retransmissions = client.stats().retransmissions;
    const Tx next = cluster.transfer(3, 4, 10);
    client.submit(next, outcomes.record(next.id()));
    REQUIRE(cluster.network().run_until([&] { return client.outstanding() == 0; }, 240'000));
    REQUIRE(outcomes.by_txid.at(next.id()).ok());
    CHECK(client.stats().retransmissions == retransmissions);
}

TEST_CASE("client: an invalid transaction is refused by f+1 replicas; a lone lying reply "
          "decides nothing") {
    SimCluster cluster(client_options(3));
    Client& client = cluster.network_client({.retry_ms = 100});

    // A transfer signed for another chain: every replica refuses it the same way.
    Tx foreign = cluster.transfer(0, 1, 1);
    foreign.chain_id = "another-chain";
    std::optional<Result<Committed>> refused;
    client.submit(foreign, [&](Result<Committed> r) { refused = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return refused.has_value(); }, 10'000));
    REQUIRE_FALSE(refused->ok());
    CHECK(refused->code() == Errc::wrong_chain_id);
    CHECK(client.stats().rejected == 1);

    // Replica 3 lies: before the honest replies arrive it claims the transfer committed at
    // another height. Its reply is authentic (it holds its key) but alone it is only one of
    // the f+1 = 2 the client needs.
    Tx tx = cluster.transfer(2, 3, 7);
    std::optional<Result<Committed>> outcome;
    client.submit(tx, [&](Result<Committed> r) { outcome = std::move(r); });
    Reply lie;
    lie.replica = 3;
    lie.txid = tx.id();
    lie.status = ReplyStatus::committed;
    lie.height = 999;
    lie.block_hash = sha256("forged block");
    const Hash256 key = reply_key(cluster.key(3), client.session_key(), 3).value();
    client.on_message(3, encode_reply(lie, key));
    CHECK_FALSE(outcome.has_value());
    // Sent over a link that is not replica 3's: refused as forged, whatever its MAC.
    client.on_message(2, encode_reply(lie, key));
    CHECK(client.stats().bad_replies == 1);
    REQUIRE(cluster.network().run_until([&] { return outcome.has_value(); }, 60'000));
    REQUIRE(outcome->ok());
    CHECK((*outcome)->height != 999);
    CHECK((*outcome)->height == cluster.store(0).tx_by_id(tx.id())->height);
}

TEST_CASE("client: gives up after give_up_ms when no replica can be reached") {
    SimCluster cluster(client_options(5));
    Client& client =
        cluster.network_client({.retry_ms = 50, .max_retry_ms = 200, .give_up_ms = 1000});
    cluster.network().isolate(SimCluster::client_node);
    std::optional<Result<Committed>> outcome;
    const Tx tx = cluster.transfer(0, 1, 1);
    client.submit(tx, [&](Result<Committed> r) { outcome = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return outcome.has_value(); }, 10'000));
    CHECK(outcome->code() == Errc::timeout);
    CHECK(cluster.network().now() >= 1000);
    CHECK(client.stats().timed_out == 1);
    CHECK(client.outstanding() == 0);
}

TEST_CASE("client: a bad configuration or replica set is refused") {
    struct Ignore : Receiver {
        void on_message(NodeId, ByteView) override {}
    } ignore;
    SimCluster cluster(client_options(1));
    Transport& t = cluster.network().attach(first_client_id + 5, ignore);
    const auto replicas = cluster.genesis().replicas;
    CHECK(Client::create(t, replicas, {.retry_ms = 0}).code() == Errc::invalid_argument);
    CHECK(Client::create(t, replicas, {.retry_ms = 500, .max_retry_ms = 100}).code() ==
          Errc::invalid_argument);
    CHECK(Client::create(t, {}, {}).code() == Errc::invalid_argument);
    auto twice = replicas;
    twice.push_back(replicas.front());
    CHECK(Client::create(t, twice, {}).code() == Errc::invalid_argument);
    auto bad_key = replicas;
    bad_key[1].key = PublicKey{}; // all zeros: not a point
    CHECK_FALSE(Client::create(t, bad_key, {}).ok());
    CHECK(Client::create(t, replicas, {}).ok());
}

TEST_CASE("client: an overdraft that is its sender's next transaction is refused at once by "
          "every replica") {
    SimCluster cluster(client_options(12));
    Client& client = cluster.network_client({.retry_ms = 200});
    const Tx overdraft = cluster.transfer(1, 2, 5'000'000); // balance 1,000,000
    std::optional<Result<Committed>> refused;
    client.submit(overdraft, [&](Result<Committed> r) { refused = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return refused.has_value(); }, 30'000));
    REQUIRE_FALSE(refused->ok());
    CHECK(refused->code() == Errc::insufficient_funds);
    cluster.network().run_for(1'000);
    for (ReplicaId id = 0; id < 4; ++id) {
        CAPTURE(id);
        CHECK(cluster.replica(id)->stats().refused_submits == 1);
        CHECK(cluster.replica(id)->pending() == 0); // never in a mempool
        CHECK(cluster.replica(id)->stats().view_changes == 0);
    }
    // The same check through SimCluster::submit (Replica::submit): refused, nothing kept.
    CHECK(cluster.submit(overdraft, 2).code() == Errc::insufficient_funds);
    CHECK(cluster.replica(2)->pending() == 0);
}

TEST_CASE("client: a transaction every mempool admits but no block can hold is refused by f+1 "
          "replicas, and costs no view change") {
    SimCluster cluster(client_options(11));
    Client& client = cluster.network_client({.retry_ms = 200});
    // Well formed, correctly signed, and not its sender's next transaction when it arrives
    // (the one before it is still pending), so every mempool takes it. Only executing it
    // after the one before shows the overdraft.
    const Tx spend = cluster.transfer(1, 3, 900'000);     // balance 1,000,000
    const Tx overdraft = cluster.transfer(1, 2, 200'000); // its nonce follows spend's
    std::optional<Result<Committed>> refused;
    client.submit(overdraft, [&](Result<Committed> r) { refused = std::move(r); });
    cluster.network().run_for(50);
    CHECK_FALSE(refused.has_value()); // waiting in every mempool behind the missing nonce
    for (ReplicaId id = 0; id < 4; ++id)
        CHECK(cluster.replica(id)->mempool().contains(overdraft.id()));
    std::optional<Result<Committed>> spent;
    client.submit(spend, [&](Result<Committed> r) { spent = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return refused.has_value(); }, 30'000));
    REQUIRE(spent.has_value());
    CHECK(spent->ok());
    REQUIRE_FALSE(refused->ok());
    CHECK(refused->code() == Errc::insufficient_funds);
    cluster.network().run_for(5'000);
    std::uint64_t refused_by_backups = 0;
    for (ReplicaId id = 1; id < 4; ++id)
        refused_by_backups += cluster.replica(id)->stats().refused_unexecutable;
    CHECK(refused_by_backups >= 2); // f+1 matching refusals came from somewhere
    for (ReplicaId id = 0; id < 4; ++id) {
        CAPTURE(id);
        CHECK(cluster.replica(id)->stats().view_changes == 0);
        CHECK(cluster.replica(id)->view() == 0);
        CHECK_FALSE(cluster.store(id).tx_by_id(overdraft.id()).ok());
    }
    // Nothing is left behind: another sender's transfer commits at once, in view 0.
    const Tx good = cluster.transfer(3, 2, 10);
    std::optional<Result<Committed>> outcome;
    client.submit(good, [&](Result<Committed> r) { outcome = std::move(r); });
    REQUIRE(cluster.network().run_until([&] { return outcome.has_value(); }, 30'000));
    REQUIRE(outcome->ok());
    CHECK(cluster.replica(0)->view() == 0);
    CHECK(cluster.check_safety().ok());
}
