// The pBFT replica, normal case: agreement, pipelining, checkpoints and garbage collection,
// drops of unauthenticated messages, configuration errors and determinism, in the simulator.
#include <popchain/genesis.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/net/sim_network.hpp>
#include <popchain/pbft/byzantine.hpp>
#include <popchain/pbft/replica.hpp>

#include "test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::pbft;
using popchain::test::key_from_byte;
using popchain::test::Shim;

namespace {

constexpr std::size_t wallet_count = 5;

struct Cluster {
    std::uint32_t n;
    net::SimNetwork net;
    std::deque<SigningKey> keys; // replicas keep references: never reallocated
    std::vector<SigningKey> wallets;
    Genesis genesis;
    std::vector<std::unique_ptr<MemoryStore>> stores;
    std::vector<std::unique_ptr<MemoryJournal>> journals;
    std::vector<std::unique_ptr<Shim>> shims;
    std::vector<net::Transport*> transports;
    std::vector<std::unique_ptr<Replica>> replicas;
    std::vector<std::uint64_t> nonces;
    ReplicaConfig config;

    // Replicas in `byzantine` send through a ByzantineTransport with that behaviour.
    std::map<ReplicaId, ByzantineBehavior> byzantine;
    std::vector<std::unique_ptr<net::Transport>> liars;

    Cluster(std::uint32_t count, std::uint64_t seed, net::LinkFaults faults, ReplicaConfig cfg,
            std::map<ReplicaId, ByzantineBehavior> faulty = {})
        : n(count), net(seed, faults), config(cfg), byzantine(std::move(faulty)) {
        test::TestChain chain = test::make_test_chain("replica-test", n, wallet_count);
        keys = std::move(chain.replica_keys);
        wallets = std::move(chain.wallets);
        genesis = std::move(chain.genesis);
        nonces.assign(wallet_count, 0);
        for (std::uint32_t i = 0; i < n; ++i) {
            stores.push_back(std::make_unique<MemoryStore>());
            journals.push_back(std::make_unique<MemoryJournal>());
            shims.push_back(std::make_unique<Shim>());
            transports.push_back(&net.attach(i, *shims[i]));
            replicas.emplace_back();
            liars.emplace_back();
            start(i, journals[i].get());
        }
    }

    ~Cluster() { replicas.clear(); } // before the transports they cancel timers on

    void start(std::uint32_t i, Journal* journal) {
        net::Transport* transport = transports[i];
        if (auto b = byzantine.find(i); b != byzantine.end()) {
            liars[i] = std::make_unique<ByzantineTransport>(i, keys[i], genesis.replicas,
                                                            *transports[i], b->second, 1000 + i);
            transport = liars[i].get();
        }
        auto r = Replica::create(i, keys[i], genesis, config, *transport, *stores[i], journal);
        REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
        replicas[i] = std::move(r).value();
        shims[i]->target = replicas[i].get();
    }

    // The replica stops; its store and journal (the disk) survive, minus unsynced writes.
    void crash(std::uint32_t i) {
        net.crash(i);
        replicas[i].reset();
        journals[i]->drop_unsynced();
    }
    // The replica comes back from its store and, unless `keep_journal` is false (a replica
    // that lost its promises), its journal.
    void restart(std::uint32_t i, bool keep_journal = true) {
        transports[i] = &net.restart(i, *shims[i]);
        start(i, keep_journal ? journals[i].get() : nullptr);
    }
    // A new process with a fresh store and key (id = current size), not in the genesis set:
    // it starts as a learner.
    std::uint32_t add_process() {
        const std::uint32_t i = n++;
        keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x10 + i)));
        stores.push_back(std::make_unique<MemoryStore>());
        journals.push_back(std::make_unique<MemoryJournal>());
        shims.push_back(std::make_unique<Shim>());
        transports.push_back(&net.attach(i, *shims[i]));
        replicas.emplace_back();
        liars.emplace_back();
        start(i, journals[i].get());
        return i;
    }

    // A membership change signed by the chain authority.
    Tx config_tx(ConfigChange::Action action, std::uint32_t id) {
        ConfigChange change;
        change.action = action;
        change.replica.id = id;
        if (action == ConfigChange::Action::add_replica) change.replica.key = keys[id].public_key();
        Tx tx;
        tx.kind = TxKind::config;
        tx.chain_id = genesis.params.chain_id;
        tx.nonce = authority_nonce++;
        tx.payload = change.encode();
        return sign_tx(tx, authority);
    }
    SigningKey authority = key_from_byte(0xa0);
    std::uint64_t authority_nonce = 0;

    // Running honest replicas: the ones whose agreement the protocol promises.
    std::vector<std::uint32_t> up() const {
        std::vector<std::uint32_t> out;
        for (std::uint32_t i = 0; i < n; ++i)
            if (replicas[i] && !byzantine.count(i)) out.push_back(i);
        return out;
    }

    // A transfer from wallet w (next nonce) to the following wallet.
    Tx next_transfer(std::size_t w, std::uint64_t amount) {
        Tx tx;
        tx.kind = TxKind::transfer;
        tx.chain_id = genesis.params.chain_id;
        tx.nonce = nonces[w]++;
        tx.to = wallets[(w + 1) % wallet_count].address();
        tx.amount = amount;
        return sign_tx(tx, wallets[w]);
    }

    // Running honest members: the replicas that take client requests.
    std::vector<std::uint32_t> voters() const {
        std::vector<std::uint32_t> out;
        for (std::uint32_t i : up())
            if (replicas[i]->voting()) out.push_back(i);
        return out;
    }

    // Submits `count` transfers round-robin over wallets, each to the next running member,
    // running the network for `gap` ms between submissions.
    void submit_transfers(std::size_t count, net::Millis gap) {
        for (std::size_t i = 0; i < count; ++i) {
            const auto live = voters(); // a config block may change them on the way
            Tx tx = next_transfer(i % wallet_count, 1 + i);
            auto ok = replicas[live[i % live.size()]]->submit(tx);
            REQUIRE_MESSAGE(ok.ok(), (ok.ok() ? "" : ok.error().message()));
            if (gap) net.run_for(gap);
        }
    }

    std::uint64_t total_txs(std::size_t r) const {
        std::uint64_t total = 0;
        for (std::uint64_t h = 1; h <= replicas[r]->height(); ++h)
            total += stores[r]->block_at(h)->txs.size();
        return total;
    }

    // Every running replica's chain holds at least `txs` transfers (each used one nonce).
    bool all_executed(std::uint64_t txs) const {
        for (std::uint32_t i : up()) {
            std::uint64_t used = 0;
            for (const auto& w : wallets)
                used += replicas[i]->ledger().account(w.address()).nonce;
            if (used < txs) return false;
        }
        return true;
    }

    // Every running replica: same height, same block at every height, same state,
    // invariants hold.
    void check_agreement() const {
        const auto live = up();
        const std::uint32_t first = live.front();
        const std::uint64_t h = replicas[first]->height();
        const Hash256 digest = replicas[first]->ledger().state_digest();
        for (std::uint32_t i : live) {
            CAPTURE(i);
            CHECK(replicas[i]->height() == h);
            CHECK(stores[i]->tip_height() == h);
            CHECK(replicas[i]->ledger().state_digest() == digest);
            CHECK(replicas[i]->ledger().check_invariants().ok());
            CHECK(replicas[i]->pending() == 0);
        }
        for (std::uint64_t height = 0; height <= h; ++height) {
            const Hash256 expected = stores[first]->block_at(height)->hash();
            for (std::uint32_t i : live)
                CHECK(stores[i]->block_at(height)->hash() == expected);
        }
    }

    // One line per replica, for failure messages.
    std::string describe() const {
        std::string out;
        for (const auto& r : replicas) {
            if (!r) {
                out += "(down)\n";
                continue;
            }
            const auto& s = r->stats();
            out += "r" + std::to_string(r->id()) + " h=" + std::to_string(r->height()) +
                   " spec=" + std::to_string(r->speculative_ledger().height()) +
                   " low=" + std::to_string(r->stable_seq()) +
                   " log=" + std::to_string(r->log_size()) +
                   " pending=" + std::to_string(r->pending()) +
                   " view=" + std::to_string(r->view()) + (r->view_active() ? "" : "(changing)") +
                   " outside=" + std::to_string(s.outside_watermarks) +
                   " transferred=" + std::to_string(s.transferred_blocks) +
                   " bad_block=" + std::to_string(s.bad_block) + "\n";
        }
        return out;
    }

    std::vector<Hash256> chain(std::size_t r) const {
        std::vector<Hash256> out;
        for (std::uint64_t h = 0; h <= replicas[r]->height(); ++h)
            out.push_back(stores[r]->block_at(h)->hash());
        return out;
    }
};

ReplicaConfig small_blocks() {
    ReplicaConfig c;
    c.max_block_txs = 8;
    c.max_batch_delay_ms = 3;
    c.checkpoint_interval = 4;
    c.watermark_window = 8;
    return c;
}

// For tests whose network filter drops messages by type: every message in an envelope of
// its own, so that a filter dropping commits drops nothing else.
ReplicaConfig unbundled(ReplicaConfig c) {
    c.bundle_messages = false;
    return c;
}

} // namespace

TEST_CASE("replica: 4 replicas commit 200 transfers submitted to various replicas") {
    net::LinkFaults faults;
    faults.min_delay = 1;
    faults.max_delay = 5;
    faults.duplicate = 0.05;
    Cluster c(4, 11, faults, small_blocks());
    std::vector<CommittedBlock> commits_seen;
    c.replicas[2]->on_commit([&](const CommittedBlock& b) { commits_seen.push_back(b); });
    CHECK(c.replicas[0]->is_primary());
    CHECK_FALSE(c.replicas[1]->is_primary());

    c.submit_transfers(200, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(200); }, 60'000), c.describe());
    c.net.run_for(100); // let the last checkpoints settle

    c.check_agreement();
    CHECK(c.total_txs(0) == 200);
    CHECK(c.replicas[0]->height() > 200 / 8);
    // Every executed block reported once, in height order, as the store holds it.
    REQUIRE(commits_seen.size() == c.replicas[2]->height());
    for (std::size_t i = 0; i < commits_seen.size(); ++i) {
        const auto stored = c.stores[2]->block_at(i + 1);
        REQUIRE(stored);
        CHECK(commits_seen[i].height == i + 1);
        CHECK(commits_seen[i].hash == stored->hash());
        CHECK(commits_seen[i].txids == stored->txids());
    }
    CHECK(c.replicas[0]->stats().proposed == c.replicas[0]->height());
    CHECK(c.replicas[1]->stats().requests_forwarded > 0);
    std::uint64_t duplicates = 0;
    for (const auto& r : c.replicas) {
        CHECK(r->stats().bad_block == 0);
        CHECK(r->stats().conflicting == 0);
        CHECK(r->stats().bad_mac == 0);
        duplicates += r->stats().duplicate;
    }
    CHECK(duplicates > 0); // the simulator duplicated some messages; they were ignored
    // Every wallet sent 40 transfers.
    for (std::size_t w = 0; w < wallet_count; ++w)
        CHECK(c.replicas[3]->ledger().account(c.wallets[w].address()).nonce == 40);

    // A replica built over a store that has blocks starts from the stored state.
    net::SimNetwork other(1);
    Shim shim;
    auto again = Replica::create(1, c.keys[1], c.genesis, small_blocks(), other.attach(1, shim),
                                 *c.stores[1]);
    REQUIRE(again.ok());
    CHECK(again.value()->height() == c.replicas[1]->height());
    // Without its journal it has no certificate for what it executed: its low watermark is
    // genesis until its peers certify a checkpoint again.
    CHECK(again.value()->stable_seq() == 0);
    CHECK(again.value()->ledger().state_digest() == c.replicas[1]->ledger().state_digest());
    // With its journal it resumes at its certified checkpoint.
    net::SimNetwork third(2);
    Shim shim3;
    auto resumed = Replica::create(1, c.keys[1], c.genesis, small_blocks(), third.attach(1, shim3),
                                   *c.stores[1], c.journals[1].get());
    REQUIRE(resumed.ok());
    CHECK(resumed.value()->stable_seq() == c.replicas[1]->stable_seq());
    CHECK(resumed.value()->stable_seq() > 0);
}

TEST_CASE("replica: a partial batch waits for the delay, unless the pipeline just drained") {
    ReplicaConfig config = small_blocks(); // blocks of up to 8
    config.max_batch_delay_ms = 1000;
    config.request_timeout_ms = 5000; // above the delay: a waiting primary is not suspected
    net::LinkFaults faults;
    faults.min_delay = 1;
    faults.max_delay = 2;
    Cluster c(4, 5, faults, config);
    auto submit_to_primary = [&](std::size_t count) {
        for (std::size_t i = 0; i < count; ++i) {
            auto ok = c.replicas[0]->submit(c.next_transfer(i % wallet_count, 1));
            REQUIRE_MESSAGE(ok.ok(), (ok.ok() ? "" : ok.error().message()));
        }
    };

    // Three transfers and nothing in flight: the primary waits for more, up to the delay.
    submit_to_primary(3);
    c.net.run_for(500);
    CHECK(c.replicas[0]->height() == 0);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(3); }, c.net.now() + 1'000),
                    c.describe());
    CHECK(c.replicas[0]->height() == 1);

    // Twelve: a full block goes at once, and the four left over go as soon as it executed,
    // not a second later.
    const net::Millis start = c.net.now();
    submit_to_primary(12);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(15); }, start + 200), c.describe());
    CHECK(c.net.now() - start < 100);
    REQUIRE(c.replicas[0]->height() == 3);
    CHECK(c.stores[0]->block_at(2)->txs.size() == 8);
    CHECK(c.stores[0]->block_at(3)->txs.size() == 4);
    c.check_agreement();
}

TEST_CASE("replica: 7 replicas with reordering pipeline blocks and agree") {
    net::LinkFaults faults;
    faults.drop = 0.0;
    faults.min_delay = 1;
    faults.max_delay = 40;
    Cluster c(7, 2024, faults, small_blocks());
    c.submit_transfers(200, 0); // all at once: the primary fills its window
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(200); }, 120'000), c.describe());
    c.net.run_for(200);

    c.check_agreement();
    CHECK(c.total_txs(0) == 200);
    const auto& ps = c.replicas[0]->stats();
    CHECK(ps.proposed_ahead > 0); // proposed seq h+1 before h committed
    CHECK(ps.proposed == c.replicas[0]->height());
    for (const auto& r : c.replicas) {
        CHECK(r->stats().bad_block == 0);
        CHECK(r->stats().conflicting == 0);
    }
}

TEST_CASE("replica: checkpoints become stable and the log is garbage-collected") {
    Cluster c(4, 7, net::LinkFaults{}, small_blocks());
    c.submit_transfers(200, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(200); }, 60'000), c.describe());
    c.net.run_for(100);
    c.check_agreement();

    const std::uint64_t h = c.replicas[0]->height();
    const std::uint64_t last_checkpoint = h - h % 4;
    REQUIRE(last_checkpoint >= 8);
    for (const auto& r : c.replicas) {
        CHECK(r->stable_seq() == last_checkpoint);
        CHECK(r->stats().checkpoints_stable >= 2);
        CHECK(r->log_size() <= h - last_checkpoint);
        CHECK(r->checkpoint_log_size() == 0);
        CHECK(r->stats().checkpoint_mismatch == 0);
    }

    const auto& replicas = c.genesis.replicas;
    CheckpointCertificate cert = c.replicas[1]->last_stable_certificate();
    REQUIRE(cert.checkpoints.size() >= quorum(4));
    CHECK(cert.checkpoints[0].seq == last_checkpoint);
    CHECK(cert.checkpoints[0].block_hash == c.stores[1]->block_at(last_checkpoint)->hash());
    CHECK(verify_checkpoint_certificate(cert, replicas).ok());

    auto tampered = [&](auto change) {
        CheckpointCertificate copy = cert;
        change(copy);
        return verify_checkpoint_certificate(copy, replicas).code();
    };
    // A changed state root (in all of them, so they still match) breaks the signatures.
    CHECK(tampered([](CheckpointCertificate& t) {
              for (auto& cp : t.checkpoints)
                  cp.state_root.bytes[0] ^= 1;
          }) == Errc::bad_signature);
    CHECK(tampered([](CheckpointCertificate& t) { t.checkpoints[1].seq += 1; }) ==
          Errc::invalid_argument);
    CHECK(tampered([](CheckpointCertificate& t) { t.checkpoints.resize(quorum(4) - 1); }) ==
          Errc::invalid_argument);
    CHECK(tampered([](CheckpointCertificate& t) {
              t.checkpoints.resize(quorum(4) - 1);
              t.checkpoints.push_back(t.checkpoints[0]);
          }) == Errc::invalid_argument);
    CHECK(tampered([](CheckpointCertificate& t) {
              t.checkpoints[0].signature = t.checkpoints[1].signature;
          }) == Errc::bad_signature);
    CHECK(tampered([](CheckpointCertificate& t) { t.checkpoints.clear(); }) ==
          Errc::invalid_argument);
    std::vector<ReplicaInfo> fewer = replicas;
    fewer.erase(fewer.begin() + cert.checkpoints[0].replica);
    CHECK(verify_checkpoint_certificate(cert, fewer).code() == Errc::unknown_peer);
}

TEST_CASE("replica: unauthenticated and misdirected messages are dropped and counted") {
    Cluster c(4, 5, net::LinkFaults{}, small_blocks());
    c.submit_transfers(20, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(20); }, 60'000), c.describe());
    c.net.run_for(50);

    Replica& target = *c.replicas[2];
    const std::uint64_t height = target.height();
    const Hash256 digest = target.ledger().state_digest();
    const std::size_t log = target.log_size();
    const ReplicaStats before = target.stats();

    // Envelopes made with real link keys of replicas 0 (the primary) and 1.
    auto link0 = LinkAuthenticator::create(0, c.keys[0], c.genesis.replicas);
    auto link1 = LinkAuthenticator::create(1, c.keys[1], c.genesis.replicas);
    REQUIRE(link0.ok());
    REQUIRE(link1.ok());
    Vote vote{0, height + 1, Hash256{}};
    const Bytes prepare_from_1 = link1->seal(2, MsgType::prepare, encode_body(vote));

    // Forged sender: replica 1's envelope arriving on the link from replica 3.
    target.on_message(3, prepare_from_1);
    CHECK(target.stats().forged_sender == before.forged_sender + 1);

    // Non-member: the sender field patched to 9 (bytes 2..5, little-endian).
    Bytes stranger = prepare_from_1;
    stranger[2] = 9;
    target.on_message(9, stranger);
    CHECK(target.stats().unknown_peer == before.unknown_peer + 1);

    // Bad MAC: one bit of the tag flipped.
    Bytes tampered = prepare_from_1;
    tampered.back() ^= 1;
    target.on_message(1, tampered);
    CHECK(target.stats().bad_mac == before.bad_mac + 1);

    // Addressed to another replica.
    target.on_message(1, link1->seal(3, MsgType::prepare, encode_body(vote)));
    CHECK(target.stats().wrong_destination == before.wrong_destination + 1);

    // Garbage.
    target.on_message(1, Bytes{1, 2, 3});
    CHECK(target.stats().malformed == before.malformed + 1);

    // Authentic, but a pre-prepare from a backup.
    PrePrepare pp{0, height + 1, c.stores[0]->block_at(height).value()};
    target.on_message(1, link1->seal(2, MsgType::pre_prepare, encode_body(pp)));
    CHECK(target.stats().wrong_role == before.wrong_role + 1);

    // Authentic, from the primary, but a block that does not execute (wrong height).
    target.on_message(0, link0->seal(2, MsgType::pre_prepare, encode_body(pp)));
    CHECK(target.stats().bad_block == before.bad_block + 1);

    // Authentic, from the primary, executes nowhere: a tampered state root.
    Block bad = c.stores[0]->block_at(height).value();
    bad.header.height = height + 1;
    bad.header.prev_hash = c.stores[0]->block_at(height)->hash();
    bad.header.state_root.bytes[0] ^= 1;
    PrePrepare bad_pp{0, height + 1, bad};
    target.on_message(0, link0->seal(2, MsgType::pre_prepare, encode_body(bad_pp)));
    CHECK(target.stats().bad_block == before.bad_block + 2);

    // A vote for another view.
    Vote other_view{5, height + 1, Hash256{}};
    target.on_message(1, link1->seal(2, MsgType::commit, encode_body(other_view)));
    CHECK(target.stats().wrong_view == before.wrong_view + 1);

    // None of it changed anything, and no vote went out for the bad block.
    const auto sent = c.net.stats().sent;
    c.net.run_for(50);
    CHECK(c.net.stats().sent == sent);
    CHECK(target.height() == height);
    CHECK(target.ledger().state_digest() == digest);
    CHECK(target.stats().accepted == before.accepted);
    CHECK(target.log_size() == log + 1); // the rejected slot is remembered (one per seq)
}

TEST_CASE("replica: a bad configuration is refused with a clear message") {
    Genesis genesis;
    genesis.params.chain_id = "replica-test";
    genesis.params.authority = key_from_byte(0xa0).public_key();
    std::deque<SigningKey> keys; // replicas keep references: never reallocated
    for (std::uint32_t i = 0; i < 4; ++i) {
        keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x10 + i)));
        genesis.replicas.push_back({i, keys[i].public_key(), ""});
    }
    net::SimNetwork net(1);
    Shim shim;
    net::Transport& t0 = net.attach(0, shim);
    net::Transport& t9 = net.attach(9, shim);
    MemoryStore store;

    ReplicaConfig bad;
    bad.checkpoint_interval = 100;
    bad.watermark_window = 150;
    auto r = Replica::create(0, keys[0], genesis, bad, t0, store);
    REQUIRE_FALSE(r.ok());
    CHECK(r.code() == Errc::invalid_argument);
    CHECK(r.error().message().find("watermark_window") != std::string::npos);

    auto wrong_key = Replica::create(0, keys[1], genesis, ReplicaConfig{}, t0, store);
    REQUIRE_FALSE(wrong_key.ok());
    CHECK(wrong_key.error().message().find("key") != std::string::npos);

    // An id outside the set is a learner (a replica a config transaction will add).
    auto stranger = key_from_byte(0x77);
    MemoryStore learner_store;
    auto learner = Replica::create(9, stranger, genesis, ReplicaConfig{}, t9, learner_store);
    REQUIRE(learner.ok());
    CHECK_FALSE(learner.value()->voting());

    auto wrong_transport = Replica::create(1, keys[1], genesis, ReplicaConfig{}, t0, store);
    REQUIRE_FALSE(wrong_transport.ok());
    CHECK(wrong_transport.error().message().find("transport") != std::string::npos);

    // A store of another chain.
    auto ok = Replica::create(0, keys[0], genesis, ReplicaConfig{}, t0, store);
    REQUIRE(ok.ok());
    CHECK(store.tip_height() == 0);
    Genesis other = genesis;
    other.params.chain_id = "other-chain";
    auto other_chain = Replica::create(0, keys[0], other, ReplicaConfig{}, t0, store);
    REQUIRE_FALSE(other_chain.ok());
    CHECK(other_chain.error().message().find("another chain") != std::string::npos);
}

TEST_CASE("replica: the same seed gives the same run and the same chain") {
    net::LinkFaults faults;
    faults.min_delay = 1;
    faults.max_delay = 20;
    faults.duplicate = 0.05;
    auto run = [&](std::uint64_t seed) {
        Cluster c(4, seed, faults, small_blocks());
        c.submit_transfers(60, 2);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(60); }, 60'000), c.describe());
        c.net.run_for(100);
        c.check_agreement();
        return std::make_pair(c.net.trace_digest(), c.chain(0));
    };
    const auto a = run(99);
    const auto b = run(99);
    CHECK(a.first == b.first);
    CHECK(a.second == b.second);
    const auto other = run(100);
    CHECK(other.first != a.first);
}

TEST_CASE("replica: a slow replica keeps up; messages just above its window are kept") {
    // Everything to replica 3 is slow, so its checkpoints become stable after the others'.
    // (A replica more than two windows behind cannot catch up before state transfer.)
    // Unbundled: each message's own random delay spreads them across the window edge.
    ReplicaConfig config = unbundled(small_blocks());
    config.watermark_window = 16;
    Cluster c(4, 31, net::LinkFaults{}, config);
    for (std::uint32_t from = 0; from < 3; ++from)
        c.net.set_link_faults(from, 3, net::LinkFaults{0, 0, 8, 20});
    c.submit_transfers(200, 0);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(200); }, 120'000), c.describe());
    c.net.run_for(300);
    c.check_agreement();
    CHECK(c.replicas[3]->stats().held_early > 0);
    CHECK(c.replicas[3]->stats().bad_block == 0);
}

// ---- faults: view change, retransmission, state transfer ----

TEST_CASE("replica: the primary crashes; a view change replaces it and nothing is lost") {
    for (std::uint32_t n : {4u, 7u}) {
        CAPTURE(n);
        Cluster c(n, 40 + n, net::LinkFaults{0, 0, 1, 4}, small_blocks());
        c.submit_transfers(60, 1);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(60); }, 10'000), c.describe());
        const auto before = c.chain(1);
        c.crash(0); // the primary of view 0
        c.submit_transfers(60, 1);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(120); }, 60'000), c.describe());
        c.net.run_for(500);
        c.check_agreement();
        for (std::uint32_t i : c.up()) {
            CHECK(c.replicas[i]->view() >= 1);
            CHECK(c.replicas[i]->view_active());
            CHECK(c.replicas[i]->stats().new_views >= 1);
        }
        const auto after = c.chain(1);
        REQUIRE(after.size() >= before.size());
        CHECK(std::equal(before.begin(), before.end(), after.begin())); // nothing rewritten
    }
}

TEST_CASE("replica: a primary that dies just after a block executed is suspected one timeout "
          "after that block") {
    // A transfer every 50 ms keeps the view-change timer armed and re-armed; the primary dies
    // at different moments of its period. The backups must start the view change one
    // request timeout after the last executed block (a re-check that found progress must
    // not grant a whole new timeout), so the new view is in place within that, plus the
    // exchange of view-change messages.
    for (std::size_t before : {10u, 13u, 16u, 19u, 22u, 25u}) {
        CAPTURE(before);
        Cluster c(4, 90 + before, net::LinkFaults{0, 0, 1, 2}, small_blocks());
        c.submit_transfers(before, 50);
        c.crash(0);
        const net::Millis crashed_at = c.net.now();
        c.submit_transfers(10, 50);
        REQUIRE_MESSAGE(c.net.run_until(
                            [&] {
                                for (std::uint32_t i : c.up())
                                    if (c.replicas[i]->view() < 1 || !c.replicas[i]->view_active())
                                        return false;
                                return true;
                            },
                            crashed_at + 10'000),
                        c.describe());
        CHECK(c.net.now() - crashed_at <= c.config.request_timeout_ms + 200);
        REQUIRE_MESSAGE(
            c.net.run_until([&] { return c.all_executed(before + 10); }, c.net.now() + 10'000),
            c.describe());
        c.check_agreement();
    }
}

TEST_CASE("replica: the primaries of two views in a row crash; the timeout backs off") {
    Cluster c(7, 77, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.submit_transfers(20, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(20); }, 10'000));
    c.crash(0);
    c.crash(1); // primary of view 1
    c.submit_transfers(40, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(60); }, 60'000), c.describe());
    c.net.run_for(500);
    c.check_agreement();
    for (std::uint32_t i : c.up())
        CHECK(c.replicas[i]->view() >= 2);
}

TEST_CASE("replica: lost, duplicated and reordered messages are retransmitted, not fatal") {
    for (std::uint64_t seed : {3u, 4u, 5u}) {
        CAPTURE(seed);
        Cluster c(4, seed, net::LinkFaults{0.1, 0.05, 1, 15}, small_blocks());
        c.submit_transfers(150, 2);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(150); }, 120'000),
                        c.describe());
        c.net.run_for(1'000);
        c.check_agreement();
        std::uint64_t resent = 0;
        for (std::uint32_t i = 0; i < c.n; ++i)
            resent += c.replicas[i]->stats().retransmissions;
        CHECK(resent > 0);
    }
}

TEST_CASE("replica: a block slower to arrive than a tick is not sent again; a lost one is") {
    SUBCASE("slow links, nothing lost: each backup gets each block once") {
        // Every message takes 1.5 ticks, so a block commits about 4.5 ticks after it is
        // proposed and the primary spends ticks without executing anything while the
        // backups have the block on its way or in hand.
        Cluster c(4, 71, net::LinkFaults{0, 0, 150, 150}, small_blocks());
        c.submit_transfers(40, 20);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(40); }, 60'000), c.describe());
        c.net.run_for(1'000);
        c.check_agreement();
        const auto& primary = c.replicas[0]->stats();
        MESSAGE("proposed " << primary.proposed << ", bodies re-sent " << primary.bodies_resent);
        CHECK(primary.proposed >= 5);
        CHECK(primary.retransmissions > 0); // votes were repeated
        CHECK(primary.bodies_resent == 0);
    }
    SUBCASE("the only pre-prepare a quorum needs is lost: the primary sends it again") {
        // Replica 2 is down, so the block needs replica 3, whose copy of the pre-prepare is
        // lost; with one prepare in hand it cannot fetch the block from anyone else.
        Cluster c(4, 72, net::LinkFaults{0, 0, 1, 2}, unbundled(small_blocks()));
        bool lost = false;
        c.net.set_filter([&](net::NodeId, net::NodeId to, ByteView m) {
            if (lost || to != 3 || m.size() < 2 ||
                m[1] != static_cast<std::uint8_t>(MsgType::pre_prepare))
                return true;
            lost = true;
            return false;
        });
        c.crash(2);
        c.submit_transfers(1, 0);
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(1); }, 5'000), c.describe());
        CHECK(lost);
        CHECK(c.replicas[0]->stats().bodies_resent >= 1);
        c.net.run_for(500);
        c.check_agreement();
    }
}

TEST_CASE("replica: a replica restarted far behind catches up by state transfer") {
    Cluster c(4, 21, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.submit_transfers(16, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(16); }, 10'000));
    c.crash(3);
    c.submit_transfers(300, 1); // dozens of blocks, many windows ahead of replica 3
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(316); }, 60'000), c.describe());
    c.restart(3);
    CHECK(c.replicas[3]->height() < c.replicas[0]->height() - 2 * small_blocks().watermark_window);
    REQUIRE_MESSAGE(
        c.net.run_until([&] { return c.replicas[3]->height() == c.replicas[0]->height(); },
                        c.net.now() + 10'000),
        c.describe());
    CHECK(c.replicas[3]->stats().state_transfers >= 1);
    CHECK(c.replicas[3]->stats().transferred_blocks > 0);
    // And it takes part again: with another replica down, progress needs it.
    c.crash(2);
    c.submit_transfers(20, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(336); }, c.net.now() + 30'000),
                    c.describe());
    c.net.run_for(500);
    c.check_agreement();
}

TEST_CASE("replica: a partition that heals; the cut-off replica catches up") {
    Cluster c(4, 23, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.net.isolate(3);
    c.submit_transfers(100, 1); // replica 3 forwards its share into the void
    c.net.run_for(3'000);
    c.net.heal();
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(100); }, c.net.now() + 30'000),
                    c.describe());
    c.net.run_for(500);
    c.check_agreement();
}

TEST_CASE("replica: a restarted replica keeps the promises in its journal") {
    for (bool keep_journal : {true, false}) {
        CAPTURE(keep_journal);
        Cluster c(4, 61, net::LinkFaults{0, 0, 1, 2}, unbundled(small_blocks()));
        // Commits are lost, so block 1 gets pre-prepared and prepared everywhere but stays
        // uncommitted.
        c.net.set_filter([](net::NodeId, net::NodeId, ByteView m) {
            return m.size() < 2 || m[1] != static_cast<std::uint8_t>(MsgType::commit);
        });
        REQUIRE(c.replicas[1]->submit(c.next_transfer(0, 5)).ok());
        c.net.run_for(50);
        REQUIRE(c.replicas[1]->stats().accepted == 1);
        REQUIRE(c.replicas[1]->height() == 0);

        c.crash(1);
        c.restart(1, keep_journal);
        // The primary equivocates: another block for (view 0, seq 1).
        Ledger ledger(c.genesis.params, [&] {
            State st;
            apply_delta(st, c.genesis.build()->delta);
            return st;
        }());
        Tx other = c.next_transfer(2, 7);
        BuiltBlock rival = ledger.build_block({other}, 0, 0, 123);
        REQUIRE(rival.block.txs.size() == 1);
        auto primary_link = LinkAuthenticator::create(0, c.keys[0], c.genesis.replicas);
        REQUIRE(primary_link.ok());
        const Bytes envelope =
            primary_link->seal(1, MsgType::pre_prepare, encode_body(PrePrepare{0, 1, rival.block}));
        const auto before = c.replicas[1]->stats();
        c.replicas[1]->on_message(0, envelope);
        const auto& after = c.replicas[1]->stats();
        if (keep_journal) {
            // It remembers accepting the first block: the rival is refused.
            CHECK(after.conflicting == before.conflicting + 1);
            CHECK(after.accepted == before.accepted);
        } else {
            // Control: without its journal the same replica would accept (and prepare) it.
            CHECK(after.accepted == before.accepted + 1);
        }
    }
}

TEST_CASE("replica: prepares lost on the way to one replica; a quorum of commits still lets it "
          "execute") {
    Cluster c(4, 63, net::LinkFaults{0, 0, 1, 2}, unbundled(small_blocks()));
    // Replica 1 never hears a prepare and replica 0 never hears a commit: only 2 and 3
    // execute, too few to certify the block by checkpoint for the other two. Replica 1 holds
    // the commits of 0, 2 and 3 but no prepared certificate of its own.
    auto type_of = [](ByteView m) { return m.size() >= 2 ? m[1] : std::uint8_t{0}; };
    c.net.set_filter([&](net::NodeId, net::NodeId to, ByteView m) {
        if (to == 1 && type_of(m) == static_cast<std::uint8_t>(MsgType::prepare)) return false;
        if (to == 0 && type_of(m) == static_cast<std::uint8_t>(MsgType::commit)) return false;
        return true;
    });
    c.submit_transfers(1, 1);
    // The commit quorum decides the slot at replica 1 without a view change; replica 0 then
    // catches up from the checkpoint that 1, 2 and 3 sign.
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(1); }, 20'000), c.describe());
    c.net.run_for(500);
    c.check_agreement();
    CHECK(c.replicas[1]->stats().view_changes == 0);
    CHECK(c.replicas[2]->stats().view_changes == 0);
    CHECK(c.replicas[2]->view() == 0);
}

TEST_CASE("replica: blocks executed by too few replicas to certify them reach the replicas "
          "behind") {
    ReplicaConfig config = small_blocks();
    config.checkpoint_interval = 50; // no checkpoint in this test: nothing gets certified
    config.watermark_window = 100;
    Cluster c(4, 64, net::LinkFaults{0, 0, 1, 2}, unbundled(config));
    // Replica 3 is down; replica 2 never hears a commit. Only 0 and 1 can execute (2 sends
    // them its commit), too few to sign a checkpoint, so when 3 returns there is no
    // certificate to fetch: it can only learn the blocks from f+1 = 2 replicas that executed
    // them.
    auto type_of = [](ByteView m) { return m.size() >= 2 ? m[1] : std::uint8_t{0}; };
    c.net.set_filter([&](net::NodeId, net::NodeId to, ByteView m) {
        return !(to == 2 && type_of(m) == static_cast<std::uint8_t>(MsgType::commit));
    });
    c.crash(3);
    for (std::size_t i = 0; i < 12; ++i)
        REQUIRE(c.replicas[0]->submit(c.next_transfer(i % wallet_count, 1 + i)).ok());
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            return c.replicas[0]->stats().executed_txs == 12 &&
                                   c.replicas[1]->stats().executed_txs == 12;
                        },
                        20'000),
                    c.describe());
    c.restart(3);
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            for (std::uint32_t i : {2u, 3u})
                                if (c.replicas[i]->height() != c.replicas[0]->height())
                                    return false;
                            return true;
                        },
                        c.net.now() + 20'000),
                    c.describe());
    // Replica 3 first, from 0 and 1; then 0, 1 and 3 can certify the tip for replica 2, which
    // started a view change alone long before and is still in it: nobody had to join it
    // (without the reports, 3 would have joined and moved the others to view 1 too).
    CHECK(c.replicas[3]->stats().reported_blocks > 0);
    for (std::uint32_t i : {0u, 1u, 3u})
        CHECK(c.replicas[i]->view() == 0);
    c.check_agreement();
}

TEST_CASE("replica: a journal that cannot sync halts the replica before it says anything") {
    Cluster c(4, 62, net::LinkFaults{0, 0, 1, 3}, small_blocks());
    c.submit_transfers(20, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(20); }, 10'000));
    std::uint64_t sent_by_2 = 0;
    c.net.set_filter([&](net::NodeId from, net::NodeId, ByteView) {
        if (from == 2) ++sent_by_2;
        return true;
    });
    c.journals[2]->fail_next_sync(Error{Errc::io_error, "disk full"});
    c.submit_transfers(40, 1);
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            for (std::uint32_t i : {0u, 1u, 3u})
                                if (c.replicas[i]->ledger().height() < 6) return false;
                            return c.replicas[2]->stats().journal_errors == 1;
                        },
                        c.net.now() + 20'000),
                    c.describe());
    const std::uint64_t sent_at_failure = sent_by_2;
    c.net.run_for(2'000);
    CHECK(sent_by_2 == sent_at_failure); // silent from the failed sync on
    CHECK(c.replicas[2]->stats().journal_errors == 1);
}

TEST_CASE("replica: with a durability gate nothing leaves before its release, in order") {
    Cluster c(4, 63, net::LinkFaults{0, 0, 1, 3}, small_blocks());
    // Replica 2's store and journal commit, but its disk "flush" is held back: what its
    // batches promise waits in `held` until the test lets it go.
    std::vector<Replica::ReleaseFn> held;
    bool hold = true;
    c.replicas[2]->set_durability_gate([&](Replica::ReleaseFn release) {
        if (hold)
            held.push_back(std::move(release));
        else
            release();
    });
    std::uint64_t sent_by_2 = 0;
    c.net.set_filter([&](net::NodeId from, net::NodeId, ByteView) {
        if (from == 2) ++sent_by_2;
        return true;
    });
    // Submitted to replica 0 only: a request given to replica 2 would wait in its gate too.
    for (std::size_t i = 0; i < 20; ++i) {
        REQUIRE(c.replicas[0]->submit(c.next_transfer(i % wallet_count, 1 + i)).ok());
        c.net.run_for(1);
    }
    // The other three are a quorum: they commit everything; replica 2 executes too (it
    // hears their votes) but has said nothing.
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            for (std::uint32_t i : {0u, 1u, 2u, 3u})
                                if (c.replicas[i]->stats().executed_txs < 20) return false;
                            return true;
                        },
                        c.net.now() + 20'000),
                    c.describe());
    CHECK(sent_by_2 == 0);
    REQUIRE(held.size() > 1);
    // Released in order, everything it held goes out, and it goes on as a normal replica.
    hold = false;
    for (auto& release : held)
        release();
    held.clear();
    CHECK(sent_by_2 > 0);
    c.submit_transfers(20, 2);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(40); }, c.net.now() + 20'000),
                    c.describe());
    c.check_agreement();
}

// ---- Byzantine replicas (ByzantineTransport decorators around honest code) ----

TEST_CASE("replica: an equivocating primary cannot split the honest replicas") {
    ByzantineBehavior liar;
    liar.equivocate = true; // every second backup gets another block for each slot
    liar.conflicting_votes = true;
    Cluster c(4, 71, net::LinkFaults{0, 0, 1, 4}, small_blocks(), {{0, liar}});
    c.submit_transfers(80, 2);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(80); }, 60'000), c.describe());
    c.net.run_for(500);
    c.check_agreement();
    const auto& lies = dynamic_cast<ByzantineTransport&>(*c.liars[0]).stats();
    CHECK(lies.equivocated > 0);
}

TEST_CASE("replica: a backup that forges, replays, corrupts and votes wrong changes nothing") {
    ByzantineBehavior liar;
    liar.conflicting_votes = true;
    liar.conflicting_to = {0, 1, 2};
    liar.replay_rate = 0.3;
    liar.forge_rate = 0.3;
    liar.corrupt_rate = 0.2;
    Cluster c(4, 72, net::LinkFaults{0, 0, 1, 4}, small_blocks(), {{3, liar}});
    c.submit_transfers(120, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(120); }, 60'000), c.describe());
    c.net.run_for(500);
    c.check_agreement();
    std::uint64_t refused = 0;
    for (std::uint32_t i : c.up()) {
        const auto& s = c.replicas[i]->stats();
        refused += s.forged_sender + s.bad_mac + s.malformed + s.conflicting;
    }
    CHECK(refused > 0);
}

TEST_CASE("replica: a peer that serves blocks whose bodies do not match their headers cannot "
          "stop a replica catching up") {
    ByzantineBehavior liar;
    liar.tamper_blocks = true;
    Cluster c(4, 73, net::LinkFaults{0, 0, 1, 4}, small_blocks(), {{1, liar}});
    c.submit_transfers(16, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(16); }, 10'000));
    c.crash(3);
    c.submit_transfers(300, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(316); }, 60'000), c.describe());
    c.restart(3);
    REQUIRE_MESSAGE(
        c.net.run_until([&] { return c.replicas[3]->height() == c.replicas[0]->height(); },
                        c.net.now() + 20'000),
        c.describe());
    // Replica 1 answered replica 3's fetches with altered bodies; 3 refused them and took
    // the blocks from the others.
    CHECK(dynamic_cast<ByzantineTransport&>(*c.liars[1]).stats().tampered > 0);
    CHECK(c.replicas[3]->stats().bad_blocks_reply > 0);
    c.submit_transfers(20, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(336); }, c.net.now() + 30'000),
                    c.describe());
    c.check_agreement();
}

TEST_CASE("replica: f silent replicas and one slow one: the rest still commit") {
    ByzantineBehavior silent;
    silent.silent = true;
    ByzantineBehavior slow;
    slow.delay_ms = 40;
    Cluster c(7, 73, net::LinkFaults{0, 0, 1, 4}, small_blocks(),
              {{5, silent}, {6, silent}, {4, slow}});
    c.submit_transfers(60, 2);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(60); }, 60'000), c.describe());
    c.net.run_for(1'000);
    c.check_agreement();
}

TEST_CASE("replica: a silent primary is replaced by a view change") {
    ByzantineBehavior silent;
    silent.silent = true;
    Cluster c(4, 74, net::LinkFaults{0, 0, 1, 4}, small_blocks(), {{0, silent}});
    c.submit_transfers(30, 2);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(30); }, 60'000), c.describe());
    c.net.run_for(500);
    c.check_agreement();
    for (std::uint32_t i : c.up())
        CHECK(c.replicas[i]->view() >= 1);
}

TEST_CASE("replica: 64 replicas with 21 crashed, the primary among them, keep committing") {
    ReplicaConfig config; // checkpoints cost n^2 signature checks: not too often
    config.max_block_txs = 50;
    config.max_batch_delay_ms = 5;
    config.checkpoint_interval = 16;
    config.watermark_window = 64;
    Cluster c(64, 64, net::LinkFaults{0, 0, 1, 5}, config);
    c.submit_transfers(50, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(50); }, 30'000), c.describe());
    c.crash(0); // the primary
    for (std::uint32_t i = 44; i < 64; ++i)
        c.crash(i); // f = 21 down in all
    c.submit_transfers(100, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(150); }, c.net.now() + 60'000),
                    c.describe());
    c.net.run_for(500);
    c.check_agreement();
    CHECK(c.up().size() == 43);
    for (std::uint32_t i : c.up())
        CHECK(c.replicas[i]->view() == 1);
}

TEST_CASE("replica: the seed's scenario: 7 replicas, 2 crash, 2 join by config, all agree") {
    Cluster c(7, 81, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.submit_transfers(40, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(40); }, 10'000));
    c.crash(5);
    c.crash(6);
    const std::uint32_t a = c.add_process(), b = c.add_process(); // learners 7 and 8
    CHECK_FALSE(c.replicas[a]->voting());
    for (Tx tx : {c.config_tx(ConfigChange::Action::remove_replica, 5),
                  c.config_tx(ConfigChange::Action::remove_replica, 6),
                  c.config_tx(ConfigChange::Action::add_replica, a),
                  c.config_tx(ConfigChange::Action::add_replica, b)})
        REQUIRE(c.replicas[0]->submit(tx).ok());
    c.submit_transfers(40, 2);
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            return c.all_executed(80) && c.replicas[a]->voting() &&
                                   c.replicas[b]->voting();
                        },
                        c.net.now() + 30'000),
                    c.describe());
    CHECK(c.replicas[0]->replica_set().size() == 7);
    CHECK(c.replicas[a]->stats().transferred_blocks > 0);
    // Two more of the original replicas go down: a quorum (5 of 7) now needs both newcomers.
    c.crash(3);
    c.crash(4);
    c.submit_transfers(40, 2);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(120); }, c.net.now() + 60'000),
                    c.describe());
    c.net.run_for(1'000);
    c.check_agreement();
    for (std::uint32_t i : c.up())
        CHECK(c.replicas[i]->stats().membership_changes == 1);

    // A light client that knows only genesis: the newest certificate is the new set's (two
    // of its five signers joined by config), so the genesis set alone refuses it; the
    // client learns the change from the config block's own proof, which the replica gives
    // under the set before the change, and then accepts it.
    const Replica& r0 = *c.replicas[0];
    auto tip = c.stores[0]->block_at(r0.stable_seq());
    REQUIRE(tip.ok());
    auto tip_proof = r0.commit_proof(*tip, 10'000);
    REQUIRE(tip_proof.has_value());
    CHECK_FALSE(verify_block(*tip, *tip_proof, c.genesis.replicas).ok());
    auto history =
        ReplicaSetHistory::create(c.genesis.replicas, small_blocks().checkpoint_interval);
    REQUIRE(history.ok());
    int learnt = 0;
    for (std::uint64_t h = 1; h <= r0.height(); ++h) {
        auto block = c.stores[0]->block_at(h);
        REQUIRE(block.ok());
        if (std::none_of(block->txs.begin(), block->txs.end(),
                         [](const Tx& tx) { return tx.kind == TxKind::config; }))
            continue;
        auto proof = r0.commit_proof(*block, 10'000);
        REQUIRE(proof.has_value());
        auto ok = history->learn(*block, *proof);
        INFO((ok ? std::string() : ok.error().message()));
        REQUIRE(ok.ok());
        ++learnt;
    }
    CHECK(learnt >= 1);
    CHECK(verify_block(*tip, *tip_proof, *history).ok());
}

// A broadcast goes to the replica set of the moment it is sent. A replica added by config
// (with nobody leaving, so no later checkpoint refreshes anything) must get the members'
// pre-prepares and votes from the boundary on: once one member is down, a quorum of the
// five needs its votes.
TEST_CASE("replica: a replica added by config gets the members' broadcasts from the boundary "
          "on") {
    Cluster c(4, 83, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.submit_transfers(16, 1);
    REQUIRE(c.net.run_until([&] { return c.all_executed(16); }, 10'000));
    const std::uint32_t a = c.add_process();
    REQUIRE(c.replicas[0]->submit(c.config_tx(ConfigChange::Action::add_replica, a)).ok());
    c.submit_transfers(16, 2);
    auto switched = [&] {
        for (std::uint32_t i : c.up())
            if (c.replicas[i]->stats().membership_changes != 1) return false;
        return c.all_executed(32) && c.replicas[a]->voting();
    };
    REQUIRE_MESSAGE(c.net.run_until(switched, c.net.now() + 30'000), c.describe());
    REQUIRE(c.replicas[0]->replica_set().size() == 5);
    const std::uint64_t accepted = c.replicas[a]->stats().accepted;
    c.crash(3); // 4 of 5 left: quorum(5) = 4, so nothing commits without the newcomer
    c.submit_transfers(16, 2);
    // With the broadcasts reaching it, the rest takes a few network delays (17 ms). Sent to
    // the old set, they reach it only through retransmissions, 100 ms a round: 1.7 s.
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(48); }, c.net.now() + 500),
                    c.describe());
    CHECK(c.replicas[a]->stats().accepted > accepted); // by agreement, not only by transfer
    c.net.run_for(1'000);
    c.check_agreement();
}

// Every block, however old, is proven by the first stable checkpoint at or above it: the
// replica keeps each stable certificate in its store, so a proof needs at most one interval
// of headers, and a restart from the store loses none of them.
TEST_CASE("replica: every executed block stays provable by its nearest checkpoint, also after "
          "a restart") {
    const ReplicaConfig config = small_blocks();
    const std::uint64_t interval = config.checkpoint_interval;
    Cluster c(4, 91, net::LinkFaults{}, config);
    c.submit_transfers(240, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(240); }, 60'000), c.describe());
    c.net.run_for(500);
    REQUIRE(c.replicas[1]->stable_seq() >= 6 * interval);

    auto expect_all_provable = [&](const Replica& r, const BlockStore& store) {
        for (std::uint64_t h = 1; h <= r.stable_seq(); ++h) {
            CAPTURE(h);
            auto block = store.block_at(h);
            REQUIRE(block.ok());
            // No more headers than the distance to the next checkpoint boundary (an idle
            // checkpoint between boundaries can be nearer).
            const std::uint64_t to_checkpoint = (h + interval - 1) / interval * interval - h;
            auto proof = r.commit_proof(*block, to_checkpoint);
            REQUIRE(proof.has_value());
            CHECK(proof->headers.size() <= to_checkpoint);
            auto ok = verify_block(*block, *proof, c.genesis.replicas);
            INFO((ok ? std::string() : ok.error().message()));
            CHECK(ok.ok());
        }
        // Above the last stable checkpoint nothing certifies a block yet.
        auto above = store.block_at(r.stable_seq() + 1);
        if (above) CHECK_FALSE(r.commit_proof(*above, 10'000).has_value());
    };
    expect_all_provable(*c.replicas[1], *c.stores[1]);

    c.crash(1);
    c.restart(1);
    expect_all_provable(*c.replicas[1], *c.stores[1]);
    // A replica that lost its journal too still has every certificate its store kept.
    c.crash(2);
    c.restart(2, false);
    REQUIRE(c.replicas[2]->height() >= 6 * interval);
    for (std::uint64_t h = 1; h <= 6 * interval; ++h) {
        auto block = c.stores[2]->block_at(h);
        REQUIRE(block.ok());
        auto proof = c.replicas[2]->commit_proof(*block, interval);
        REQUIRE(proof.has_value());
        CHECK(verify_block(*block, *proof, c.genesis.replicas).ok());
    }
}

// Replica `down` misses `transfers` transfers (one block each with max_block_txs 1), then
// restarts and runs until it has caught up with replica 0.
static void catch_up_after_missing(Cluster& c, std::uint32_t down, std::size_t transfers) {
    c.crash(down);
    for (std::size_t done = 0; done < transfers;) { // within the mempool's limit per sender
        const std::size_t batch = std::min<std::size_t>(100, transfers - done);
        c.submit_transfers(batch, 1);
        done += batch;
        REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(done); }, c.net.now() + 30'000),
                        c.describe());
    }
    c.net.run_for(500);
    c.restart(down);
    REQUIRE_MESSAGE(
        c.net.run_until([&] { return c.replicas[down]->height() == c.replicas[0]->height(); },
                        c.net.now() + 30'000),
        c.describe());
}

TEST_CASE("replica: a replica that caught up by state transfer proves every block it fetched "
          "within a chunk and an interval of headers") {
    ReplicaConfig config = small_blocks();
    config.max_block_txs = 1; // one block per transfer: several chunks behind
    const std::uint64_t interval = config.checkpoint_interval;
    Cluster c(4, 93, net::LinkFaults{}, config);
    catch_up_after_missing(c, 3, 3 * max_fetch_blocks + 40);
    const Replica& r = *c.replicas[3];
    REQUIRE(r.stats().transferred_blocks > 2 * max_fetch_blocks);
    CHECK(r.stats().transferred_certs >= 2);
    const std::size_t bound = max_fetch_blocks + interval;
    auto check_all = [&](const Replica& replica, const BlockStore& store) {
        for (std::uint64_t h = 1; h <= replica.stable_seq(); ++h) {
            CAPTURE(h);
            auto block = store.block_at(h);
            REQUIRE(block.ok());
            auto proof = replica.commit_proof(*block, bound);
            REQUIRE(proof.has_value());
            auto ok = verify_block(*block, *proof, c.genesis.replicas);
            INFO((ok ? std::string() : ok.error().message()));
            CHECK(ok.ok());
        }
    };
    check_all(r, *c.stores[3]);
    c.crash(3); // kept in the store, not only in memory
    c.restart(3);
    check_all(*c.replicas[3], *c.stores[3]);
}

TEST_CASE("replica: chunk certificates with a bad signature are refused; the blocks still "
          "serve and every proof given verifies") {
    ReplicaConfig config = small_blocks();
    config.max_block_txs = 1;
    ByzantineBehavior forger;
    forger.forge_chunk_certificates = true; // otherwise honest: consensus needs no help
    Cluster c(4, 95, net::LinkFaults{}, config, {{1, forger}, {2, forger}});
    catch_up_after_missing(c, 3, 2 * max_fetch_blocks + 40);
    const Replica& r = *c.replicas[3];
    REQUIRE(r.stats().transferred_blocks > max_fetch_blocks);
    const std::uint64_t forged =
        dynamic_cast<ByzantineTransport&>(*c.liars[1]).stats().forged_certs +
        dynamic_cast<ByzantineTransport&>(*c.liars[2]).stats().forged_certs;
    REQUIRE(forged > 0);
    CHECK(r.stats().bad_signature >= forged);
    for (std::uint64_t h = 1; h <= r.stable_seq(); ++h) {
        CAPTURE(h);
        auto block = c.stores[3]->block_at(h);
        REQUIRE(block.ok());
        auto proof = r.commit_proof(*block, 10'000);
        REQUIRE(proof.has_value());
        CHECK(verify_block(*block, *proof, c.genesis.replicas).ok());
    }
    c.check_agreement();
}

// The certificate a replica behind a membership change needs is the old set's, at the
// boundary; the members keep it across restarts (the store has every certificate, and which
// ones are boundaries), so the replica catches up even when every member has restarted since.
TEST_CASE("replica: a replica that missed a membership change catches up across it after every "
          "member restarted") {
    Cluster c(7, 83, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    c.submit_transfers(20, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(20); }, 10'000), c.describe());
    c.crash(6); // misses everything from here on
    const std::uint32_t a = c.add_process(), b = c.add_process();
    // Two of the old set leave and two join: a quorum of the new set (5 of 7, replica 6 down)
    // always includes a newcomer, so the old set alone cannot check its certificates.
    for (Tx tx : {c.config_tx(ConfigChange::Action::remove_replica, 4),
                  c.config_tx(ConfigChange::Action::remove_replica, 5),
                  c.config_tx(ConfigChange::Action::add_replica, a),
                  c.config_tx(ConfigChange::Action::add_replica, b)})
        REQUIRE(c.replicas[0]->submit(tx).ok());
    // Through replica 0 only: the leaving ones stop taking part at the switch.
    for (std::size_t i = 0; i < 40; ++i) {
        REQUIRE(c.replicas[0]->submit(c.next_transfer(i % wallet_count, 1)).ok());
        c.net.run_for(2);
    }
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            return c.replicas[0]->ledger().state().replicas.size() == 7 &&
                                   c.replicas[a]->voting() && c.replicas[b]->voting() &&
                                   c.replicas[0]->pending() == 0;
                        },
                        c.net.now() + 30'000),
                    c.describe());
    c.crash(4); // removed: no longer part of the chain
    c.crash(5);
    c.submit_transfers(20, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(80); }, c.net.now() + 30'000),
                    c.describe());
    c.net.run_for(500);
    // Every member restarts: what a replica kept only in memory is gone.
    const std::vector<std::uint32_t> members{0, 1, 2, 3, a, b};
    for (std::uint32_t i : members)
        c.crash(i);
    for (std::uint32_t i : members)
        c.restart(i);
    c.submit_transfers(10, 1);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(90); }, c.net.now() + 30'000),
                    c.describe());
    c.restart(6);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(90); }, c.net.now() + 30'000),
                    c.describe());
    c.net.run_for(1'000);
    c.check_agreement();
    CHECK(c.replicas[6]->stats().state_transfers >= 1);
}

TEST_CASE("replica: a learner and a removed replica refuse requests with not_member and keep "
          "nothing; the members take them") {
    Cluster c(4, 85, net::LinkFaults{0, 0, 1, 4}, small_blocks());
    const std::uint32_t learner = c.add_process();
    auto refused_by = [&](std::uint32_t r, const Tx& tx) {
        CAPTURE(r);
        const std::size_t pending = c.replicas[r]->pending();
        auto ok = c.replicas[r]->submit(tx);
        REQUIRE_FALSE(ok.ok());
        CHECK(ok.code() == Errc::not_member);
        CHECK(ok.error().detail.find("replica " + std::to_string(r)) != std::string::npos);
        CHECK(c.replicas[r]->pending() == pending);
    };
    const Tx early = c.next_transfer(0, 3);
    refused_by(learner, early);
    REQUIRE(c.replicas[1]->submit(early).ok()); // the same transaction, to a member
    for (Tx tx : {c.config_tx(ConfigChange::Action::add_replica, learner),
                  c.config_tx(ConfigChange::Action::remove_replica, 3)})
        REQUIRE(c.replicas[0]->submit(tx).ok());
    c.submit_transfers(30, 2); // past the boundary where the change takes effect
    REQUIRE_MESSAGE(c.net.run_until(
                        [&] {
                            return c.replicas[learner]->voting() && !c.replicas[3]->voting() &&
                                   c.replicas[0]->pending() == 0;
                        },
                        c.net.now() + 30'000),
                    c.describe());
    const Tx late = c.next_transfer(1, 4);
    refused_by(3, late);
    REQUIRE(c.replicas[learner]->submit(late).ok()); // the newcomer now takes requests
    c.crash(3);
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(32); }, c.net.now() + 30'000),
                    c.describe());
    c.net.run_for(500);
    c.check_agreement();
    for (std::uint32_t i : c.up()) {
        CHECK(c.stores[i]->tx_by_id(early.id()).ok());
        CHECK(c.stores[i]->tx_by_id(late.id()).ok());
    }
}

TEST_CASE("replica: while no view can execute, each view waits twice as long as the last") {
    ReplicaConfig config = small_blocks();
    config.request_timeout_ms = 100;
    config.max_view_change_timeout_ms = 60'000;
    Cluster c(4, 65, net::LinkFaults{0, 0, 1, 2}, unbundled(config));
    // Every commit is lost: views install (view changes and new views get through) and
    // re-propose the prepared block, but none executes it.
    auto type_of = [](ByteView m) { return m.size() >= 2 ? m[1] : std::uint8_t{0}; };
    c.net.set_filter([&](net::NodeId, net::NodeId, ByteView m) {
        return type_of(m) != static_cast<std::uint8_t>(MsgType::commit);
    });
    c.submit_transfers(1, 1);
    c.net.run_for(10'000);
    REQUIRE(c.replicas[1]->height() == 0);
    // Timeouts of 100, 200, 400, ... ms fit at most 7 views into 10 s; one view per
    // timeout would be about 100.
    for (ReplicaId r = 0; r < 4; ++r) {
        CAPTURE(r);
        CHECK(c.replicas[r]->stats().view_changes >= 3);
        CHECK(c.replicas[r]->stats().view_changes <= 8);
    }
    // Once commits get through, the view then current executes the block.
    c.net.set_filter({});
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(1); }, c.net.now() + 60'000),
                    c.describe());
    c.net.run_for(500);
    c.check_agreement();
}

TEST_CASE("replica: a new primary whose fetch of a prepared block is lost asks again; its "
          "pre-prepare overtaking its new-view message is not lost either") {
    ReplicaConfig config = small_blocks();
    config.request_timeout_ms = 1000;
    Cluster c(4, 66, net::LinkFaults{0, 0, 1, 2}, unbundled(config));
    // Replica 1, the primary of view 1, never sees the block of view 0, and nothing commits:
    // the block is prepared at 0, 2 and 3 only.
    auto type_of = [](ByteView m) { return m.size() >= 2 ? m[1] : std::uint8_t{0}; };
    auto is = [&](ByteView m, MsgType t) { return type_of(m) == static_cast<std::uint8_t>(t); };
    std::optional<net::Millis> in_view_1_at;
    bool crashed = false;
    c.net.set_filter([&](net::NodeId, net::NodeId to, ByteView m) {
        if (!crashed && is(m, MsgType::commit)) return false;
        if (to != 1) return true;
        if (is(m, MsgType::pre_prepare)) return false;
        // Every answer to its fetches is lost until it has waited 100 ms in view 1.
        if (!in_view_1_at && c.replicas[1]->view() >= 1) in_view_1_at = c.net.now();
        return !is(m, MsgType::blocks) || (in_view_1_at && c.net.now() > *in_view_1_at + 100);
    });
    c.submit_transfers(1, 1);
    c.net.run_for(300);
    REQUIRE(c.replicas[2]->height() == 0);
    c.crash(0);
    crashed = true;
    // Then it must ask again: otherwise view 1 waits out its whole timeout (1 s) and
    // replica 2 leads view 2. With this seed its pre-prepare of the block reaches replica 2
    // before its new-view message: replica 2 must keep it, not wait 400 ms for the repeat.
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(1); }, c.net.now() + 10'000),
                    c.describe());
    REQUIRE(in_view_1_at);
    CHECK(c.net.now() < *in_view_1_at + 300);
    for (std::uint32_t i : c.up()) {
        CAPTURE(i);
        CHECK(c.replicas[i]->view() == 1);
    }
    c.net.run_for(500);
    c.check_agreement();
}

TEST_CASE("replica: what a replica has for one peer after a burst of inputs travels as one "
          "bundle; replicas that bundle and ones that do not agree") {
    ReplicaConfig config = small_blocks();
    config.max_block_txs = 1; // many blocks in flight, many small messages
    config.watermark_window = 64;
    config.checkpoint_interval = 8;
    const std::size_t transfers = 60;
    // The same seeded run twice: every replica bundling, and none; then a mixed cluster.
    auto run = [&](bool bundle, std::optional<ReplicaId> odd_one) {
        config.bundle_messages = bundle;
        auto c = std::make_unique<Cluster>(4, 68, net::LinkFaults{0, 0, 1, 3}, config);
        if (odd_one) {
            c->config.bundle_messages = !bundle;
            c->crash(*odd_one);
            c->restart(*odd_one);
        }
        c->submit_transfers(transfers, 0);
        REQUIRE_MESSAGE(c->net.run_until([&] { return c->all_executed(transfers); }, 20'000),
                        c->describe());
        c->net.run_for(200);
        c->check_agreement();
        return c;
    };
    auto bundled = run(true, std::nullopt);
    auto plain = run(false, std::nullopt);
    std::uint64_t bundles = 0, in_bundles = 0;
    for (ReplicaId r = 0; r < 4; ++r) {
        CAPTURE(r);
        CHECK(bundled->replicas[r]->stats().bundles_sent > 0);
        CHECK(plain->replicas[r]->stats().bundles_sent == 0);
        bundles += bundled->replicas[r]->stats().bundles_sent;
        in_bundles += bundled->replicas[r]->stats().bundled_messages;
    }
    CHECK(in_bundles >= 2 * bundles);
    // Fewer envelopes on the wire for the same blocks.
    MESSAGE("envelopes sent for " << transfers
                                  << " one-transfer blocks: " << bundled->net.stats().sent
                                  << " bundled, " << plain->net.stats().sent << " not");
    CHECK(bundled->net.stats().sent * 2 < plain->net.stats().sent);

    auto mixed = run(true, ReplicaId{2});
    CHECK(mixed->replicas[2]->stats().bundles_sent == 0);
    CHECK(mixed->replicas[0]->stats().bundles_sent > 0);
    for (ReplicaId r = 0; r < 4; ++r) {
        CAPTURE(r);
        CHECK(mixed->replicas[r]->stats().malformed == 0);
        CHECK(mixed->replicas[r]->stats().bad_mac == 0);
    }
}

TEST_CASE("replica: messages held for a view not yet installed are bounded") {
    ReplicaConfig config = small_blocks();
    config.request_timeout_ms = 200;
    Cluster c(4, 67, net::LinkFaults{0, 0, 1, 2}, unbundled(config));
    // No new-view message gets through: the backups stay in their view change.
    c.net.set_filter([](net::NodeId, net::NodeId, ByteView m) {
        return m.size() < 2 || m[1] != static_cast<std::uint8_t>(MsgType::new_view);
    });
    c.crash(0);
    c.submit_transfers(1, 1);
    REQUIRE(c.net.run_until(
        [&] { return c.replicas[2]->view() >= 1 && !c.replicas[2]->view_active(); }, 10'000));
    // A member floods replica 2 with votes for that view: it keeps 2n per slot of the
    // window, and refuses the rest as being of a view it is not in.
    auto link = LinkAuthenticator::create(3, c.keys[3], c.genesis.replicas);
    REQUIRE(link.ok());
    const std::uint64_t view = c.replicas[2]->view();
    const std::uint64_t refused_before = c.replicas[2]->stats().wrong_view;
    constexpr std::uint64_t sent = 1000;
    for (std::uint64_t i = 0; i < sent; ++i) {
        const Vote vote{view, 1 + i % 8, sha256("flood " + std::to_string(i))};
        c.replicas[2]->on_message(3, link->seal(2, MsgType::prepare, encode_body(vote)));
    }
    const std::uint64_t refused = c.replicas[2]->stats().wrong_view - refused_before;
    const std::uint64_t most_held = 2 * 4 * config.watermark_window;
    CHECK(refused >= sent - most_held);
    CHECK(refused < sent); // some were held
    // Once the new view gets through, the cluster goes on.
    c.net.set_filter({});
    REQUIRE_MESSAGE(c.net.run_until([&] { return c.all_executed(1); }, c.net.now() + 20'000),
                    c.describe());
    c.check_agreement();
}
