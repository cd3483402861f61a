// The Byzantine transport decorator: every lie it tells, checked by the receivers' own
// LinkAuthenticators, with real keys and a genesis ledger for the equivocated blocks.
#include <popchain/genesis.hpp>
#include <popchain/pbft/byzantine.hpp>

#include "test_support.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <utility>
#include <vector>

using namespace popchain;
using namespace popchain::pbft;
using popchain::test::code_name;
using popchain::test::code_of;
using popchain::test::key_from_byte;

namespace {

constexpr std::uint32_t replica_count = 4;

struct Sent {
    net::NodeId to = 0;
    Bytes bytes;
    friend bool operator==(const Sent&, const Sent&) = default;
};

// The inner transport: records every send, and runs timers when the test moves its clock.
struct Recorder : net::Transport {
    explicit Recorder(net::NodeId id) : id(id) {}

    net::NodeId self() const override { return id; }
    void send(net::NodeId to, Bytes message) override { sent.push_back({to, std::move(message)}); }
    net::TimerId set_timer(net::Millis delay, std::function<void()> fire) override {
        const net::TimerId t = next_timer++;
        timers[t] = {clock + delay, std::move(fire)};
        return t;
    }
    void cancel_timer(net::TimerId t) override { timers.erase(t); }
    net::Millis now() const override { return clock; }

    void advance(net::Millis d) {
        clock += d;
        for (;;) {
            auto due = timers.end();
            for (auto it = timers.begin(); it != timers.end(); ++it)
                if (it->second.first <= clock &&
                    (due == timers.end() || it->second.first < due->second.first))
                    due = it;
            if (due == timers.end()) return;
            auto fire = std::move(due->second.second);
            timers.erase(due);
            fire();
        }
    }

    net::NodeId id;
    std::vector<Sent> sent;
    net::Millis clock = 0;
    net::TimerId next_timer = 1;
    std::map<net::TimerId, std::pair<net::Millis, std::function<void()>>> timers;
};

// Four replicas with real keys, funded wallets and a genesis, as a cluster would have.
struct World {
    std::vector<SigningKey> keys;
    std::vector<ReplicaInfo> members;
    std::vector<SigningKey> wallets;
    std::vector<LinkAuthenticator> links; // each replica's own, to seal honestly and to open
    Genesis genesis;

    World() {
        genesis.params.chain_id = "byzantine-test";
        genesis.params.authority = key_from_byte(0xa0).public_key();
        genesis.timestamp_ms = 1'700'000'000'000ull;
        for (std::uint32_t i = 0; i < replica_count; ++i) {
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x10 + i)));
            members.push_back({i, keys[i].public_key(), ""});
        }
        genesis.replicas = members;
        for (std::uint8_t i = 0; i < 3; ++i) {
            wallets.push_back(key_from_byte(static_cast<std::uint8_t>(0xc0 + i)));
            genesis.balances.push_back({wallets[i].address(), 1'000'000});
        }
        for (std::uint32_t i = 0; i < replica_count; ++i) {
            auto l = LinkAuthenticator::create(i, keys[i], members);
            REQUIRE(l.ok());
            links.push_back(std::move(l).value());
        }
    }

    Ledger ledger() const {
        auto l = genesis.ledger();
        REQUIRE(l.ok());
        return std::move(l).value();
    }

    Tx transfer(std::size_t from, std::uint64_t nonce, std::uint64_t amount) const {
        Tx tx;
        tx.kind = TxKind::transfer;
        tx.chain_id = genesis.params.chain_id;
        tx.nonce = nonce;
        tx.to = wallets[(from + 1) % wallets.size()].address();
        tx.amount = amount;
        return sign_tx(tx, wallets[from]);
    }

    // What replica `from` puts on the wire for `to`, honestly.
    Bytes seal(ReplicaId from, ReplicaId to, MsgType type, const Message& m) const {
        return links[from].seal(to, type, encode_body(m));
    }

    // As Replica::broadcast: one envelope per other member, through `t`.
    void broadcast(net::Transport& t, ReplicaId from, MsgType type, const Message& m) const {
        for (const auto& r : members)
            if (r.id != from) t.send(r.id, seal(from, r.id, type, m));
    }

    // Opens at the addressee, delivered on the link from the true sender.
    Result<Envelope> open(const Sent& s, ReplicaId link_from) const {
        return links[s.to].open(link_from, s.bytes);
    }

    template <class T>
    T open_as(const Sent& s, ReplicaId link_from) const {
        auto env = open(s, link_from);
        REQUIRE_MESSAGE(env.ok(), env.error().message());
        auto m = decode_body(env->type, env->body);
        REQUIRE(m.ok());
        REQUIRE(std::holds_alternative<T>(*m));
        return std::get<T>(*m);
    }
};

ReplicaId claimed_sender(const Bytes& envelope) {
    REQUIRE(envelope.size() >= 6);
    Reader r(ByteView(envelope).subspan(2, 4));
    return r.u32();
}

// Whether two envelopes differ at most in their `from` field (bytes 2..5).
bool same_but_sender(const Bytes& a, const Bytes& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if ((i < 2 || i >= 6) && a[i] != b[i]) return false;
    return true;
}

const Sent& to_peer(const std::vector<Sent>& sent, net::NodeId to) {
    for (const auto& s : sent)
        if (s.to == to) return s;
    FAIL("nothing sent to " << to);
    throw std::logic_error("unreachable");
}

// A different vote per i, so every honest envelope is distinct.
Vote distinct_vote(std::uint64_t i) {
    Writer w;
    w.u64(i);
    return Vote{0, i + 1, Sha256().update("byzantine-test/vote").update(w.data()).finish()};
}

} // namespace

TEST_CASE("byzantine: the block timestamp is in the block hash but not in the state root") {
    // The premise of equivocation: a second block for the same slot that an honest backup
    // would still accept, so the lie is caught by votes, not by validation.
    World w;
    Ledger ledger = w.ledger();
    BuiltBlock built = ledger.build_block({w.transfer(0, 0, 10), w.transfer(1, 0, 20)}, 0, 0,
                                          1'700'000'000'500ull);
    REQUIRE(built.block.txs.size() == 2);
    Block other = built.block;
    other.header.timestamp_ms += 1;
    CHECK(other.hash() != built.block.hash());
    CHECK(other.header.state_root == built.block.header.state_root);
    CHECK(other.header.tx_root == built.block.header.tx_root);
    auto a = ledger.execute(built.block);
    auto b = ledger.execute(other);
    REQUIRE_MESSAGE(a.ok(), a.error().message());
    REQUIRE_MESSAGE(b.ok(), b.error().message());
    CHECK(a->state_root == b->state_root);
    CHECK(a->block_hash != b->block_hash);
    // Whereas a change the state root does cover is refused.
    Block bad = built.block;
    bad.txs.pop_back();
    bad.header.tx_root = compute_tx_root(bad.txs);
    CHECK(code_of(ledger.execute(bad)) == code_name(Errc::bad_state_root));
}

TEST_CASE("byzantine: silent sends nothing, silent_to withholds only from those peers") {
    World w;
    PrePrepare pp{0, 1, w.ledger().build_block({w.transfer(0, 0, 5)}, 0, 0, 7).block};

    SUBCASE("silent") {
        Recorder rec(0);
        ByzantineBehavior b;
        b.silent = true;
        ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 1);
        w.broadcast(bt, 0, MsgType::pre_prepare, pp);
        bt.send(net::first_client_id + 3, Bytes{1, 2, 3}); // a client reply, too
        CHECK(rec.sent.empty());
        CHECK(bt.stats().withheld == 4);
        CHECK(bt.stats().sent == 0);
        // Still a working transport for the replica's own timers.
        bool fired = false;
        bt.set_timer(5, [&] { fired = true; });
        rec.advance(5);
        CHECK(fired);
    }
    SUBCASE("silent_to") {
        Recorder rec(0);
        ByzantineBehavior b;
        b.silent_to = {2};
        ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 1);
        w.broadcast(bt, 0, MsgType::pre_prepare, pp);
        REQUIRE(rec.sent.size() == 2);
        CHECK(rec.sent[0] == Sent{1, w.seal(0, 1, MsgType::pre_prepare, pp)});
        CHECK(rec.sent[1] == Sent{3, w.seal(0, 3, MsgType::pre_prepare, pp)});
        CHECK(bt.stats().withheld == 1);
        CHECK(bt.stats().sent == 2);
    }
}

TEST_CASE("byzantine: equivocation sends two valid blocks for one slot, both executable") {
    World w;
    Recorder rec(0);
    ByzantineBehavior b;
    b.equivocate = true; // default victims: every second peer, here replica 2
    ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 1);

    Ledger honest = w.ledger();
    BuiltBlock first = honest.build_block({w.transfer(0, 0, 10), w.transfer(1, 0, 20)}, 0, 0,
                                          1'700'000'000'100ull);
    PrePrepare pp1{0, 1, first.block};
    w.broadcast(bt, 0, MsgType::pre_prepare, pp1);
    REQUIRE(rec.sent.size() == 3);
    CHECK(bt.stats().equivocated == 1);

    // Every envelope is MAC-valid at its addressee and comes from replica 0.
    auto at1 = w.open_as<PrePrepare>(to_peer(rec.sent, 1), 0);
    auto at2 = w.open_as<PrePrepare>(to_peer(rec.sent, 2), 0);
    auto at3 = w.open_as<PrePrepare>(to_peer(rec.sent, 3), 0);
    CHECK(at1 == pp1);
    CHECK(at3 == pp1);
    CHECK(at2.view == pp1.view);
    CHECK(at2.seq == pp1.seq);
    CHECK(at2.block.txs == pp1.block.txs);
    CHECK(at2.block.hash() != pp1.block.hash());

    // Both blocks execute on the same state, to the same state root.
    Ledger fork = w.ledger();
    auto d_honest = honest.execute(at1.block);
    auto d_fork = fork.execute(at2.block);
    REQUIRE_MESSAGE(d_honest.ok(), d_honest.error().message());
    REQUIRE_MESSAGE(d_fork.ok(), d_fork.error().message());
    CHECK(d_honest->state_root == d_fork->state_root);
    honest.commit(*d_honest);
    fork.commit(*d_fork);

    // The next block is built on the honest one; the victim gets a child of its own fork,
    // so it can go on accepting instead of stalling at a wrong prev_hash.
    rec.sent.clear();
    BuiltBlock second = honest.build_block({w.transfer(2, 0, 30)}, 0, 0, 1'700'000'000'200ull);
    PrePrepare pp2{0, 2, second.block};
    w.broadcast(bt, 0, MsgType::pre_prepare, pp2);
    REQUIRE(rec.sent.size() == 3);
    auto next1 = w.open_as<PrePrepare>(to_peer(rec.sent, 1), 0);
    auto next2 = w.open_as<PrePrepare>(to_peer(rec.sent, 2), 0);
    CHECK(next1 == pp2);
    CHECK(next2.block.header.prev_hash == at2.block.hash());
    CHECK(next2.block.hash() != pp2.block.hash());
    REQUIRE(honest.apply(next1.block).ok());
    auto applied = fork.apply(next2.block);
    REQUIRE_MESSAGE(applied.ok(), applied.error().message());
    CHECK(honest.state().state_root == fork.state().state_root);
    CHECK(honest.state().accounts == fork.state().accounts);
    CHECK(honest.state().tip_hash != fork.state().tip_hash);
    CHECK(bt.stats().equivocated == 2);

    SUBCASE("explicit victims all get the same alternative block") {
        Recorder rec2(0);
        ByzantineBehavior b2;
        b2.equivocate = true;
        b2.equivocate_to = {1, 3};
        ByzantineTransport bt2(0, w.keys[0], w.members, rec2, b2, 1);
        w.broadcast(bt2, 0, MsgType::pre_prepare, pp1);
        auto v1 = w.open_as<PrePrepare>(to_peer(rec2.sent, 1), 0);
        auto v2 = w.open_as<PrePrepare>(to_peer(rec2.sent, 2), 0);
        auto v3 = w.open_as<PrePrepare>(to_peer(rec2.sent, 3), 0);
        CHECK(v2 == pp1);
        CHECK(v1 == v3);
        CHECK(v1.block.hash() == at2.block.hash()); // deterministic: same fork as before
        CHECK(bt2.stats().equivocated == 2);
    }
}

TEST_CASE("byzantine: conflicting votes are MAC-valid and carry another digest") {
    World w;
    const Vote v = distinct_vote(0);

    SUBCASE("a backup's prepares and commits") {
        Recorder rec(1);
        ByzantineBehavior b;
        b.conflicting_votes = true; // others sorted {0, 2, 3}: the victim is 2
        ByzantineTransport bt(1, w.keys[1], w.members, rec, b, 1);
        for (MsgType type : {MsgType::prepare, MsgType::commit}) {
            rec.sent.clear();
            w.broadcast(bt, 1, type, v);
            REQUIRE(rec.sent.size() == 3);
            for (const auto& s : rec.sent) {
                CAPTURE(s.to);
                auto env = w.open(s, 1);
                REQUIRE(env.ok());
                CHECK(env->type == type);
                Vote got = w.open_as<Vote>(s, 1);
                CHECK(got.view == v.view);
                CHECK(got.seq == v.seq);
                if (s.to == 2)
                    CHECK(got.digest != v.digest);
                else
                    CHECK(got.digest == v.digest);
            }
        }
        CHECK(bt.stats().conflicting == 2);
    }
    SUBCASE("an equivocating primary votes for the block each side was sent") {
        Recorder rec(0);
        ByzantineBehavior b;
        b.equivocate = true;
        b.conflicting_votes = true;
        ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 1);
        Ledger ledger = w.ledger();
        PrePrepare pp{0, 1,
                      ledger.build_block({w.transfer(0, 0, 1)}, 0, 0, 1'700'000'000'000ull).block};
        w.broadcast(bt, 0, MsgType::pre_prepare, pp);
        const Hash256 alt = w.open_as<PrePrepare>(to_peer(rec.sent, 2), 0).block.hash();
        rec.sent.clear();
        w.broadcast(bt, 0, MsgType::commit, Vote{0, 1, pp.block.hash()});
        CHECK(w.open_as<Vote>(to_peer(rec.sent, 1), 0).digest == pp.block.hash());
        CHECK(w.open_as<Vote>(to_peer(rec.sent, 2), 0).digest == alt);
        CHECK(w.open_as<Vote>(to_peer(rec.sent, 3), 0).digest == pp.block.hash());
        CHECK(bt.stats().conflicting == 1);
    }
}

TEST_CASE("byzantine: replays are byte-identical envelopes sent earlier, to the same peer") {
    World w;
    Recorder rec(0);
    ByzantineBehavior b;
    b.replay_rate = 0.3;
    b.replay_history = 5;
    ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 42);

    std::vector<Sent> originals;
    for (std::uint64_t i = 0; i < 300; ++i) {
        const ReplicaId to = 1 + static_cast<ReplicaId>(i % 3);
        originals.push_back({to, w.seal(0, to, MsgType::prepare, distinct_vote(i))});
        bt.send(to, originals.back().bytes);
    }

    // Walk the wire: each entry is the next original or a copy of one of the
    // replay_history originals sent before the one it follows.
    std::size_t next = 0, replays = 0;
    for (const auto& s : rec.sent) {
        if (next < originals.size() && s == originals[next]) {
            ++next;
            continue;
        }
        ++replays;
        bool earlier = false;
        for (std::size_t k = next >= 6 ? next - 6 : 0; k + 1 < next; ++k)
            earlier = earlier || originals[k] == s;
        CHECK(earlier);
        CHECK(w.open(s, 0).ok()); // a replay is authentic: catching it is the protocol's job
    }
    CHECK(next == originals.size());
    CHECK(replays == bt.stats().replayed);
    CHECK(replays > 50);
    CHECK(replays < 150);
}

TEST_CASE("byzantine: every forged copy is refused with forged_sender or bad_mac") {
    World w;
    Recorder rec(0);
    ByzantineBehavior b;
    b.forge_rate = 1;
    ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 7);

    std::vector<Sent> originals;
    for (std::uint64_t i = 0; i < 200; ++i) {
        const ReplicaId to = 1 + static_cast<ReplicaId>(i % 3);
        originals.push_back({to, w.seal(0, to, MsgType::commit, distinct_vote(i))});
        bt.send(to, originals.back().bytes);
    }
    REQUIRE(rec.sent.size() == 400);
    CHECK(bt.stats().forged == 200);

    std::size_t relabelled = 0, resealed = 0;
    for (std::size_t i = 0; i < 200; ++i) {
        CAPTURE(i);
        const Sent& genuine = rec.sent[2 * i];
        const Sent& forged = rec.sent[2 * i + 1];
        CHECK(genuine == originals[i]);
        CHECK(w.open(genuine, 0).ok());
        CHECK(forged.to == genuine.to);
        const ReplicaId claimed = claimed_sender(forged.bytes);
        CHECK(claimed != 0);
        CHECK(claimed != forged.to);
        CHECK(claimed < replica_count);
        // Delivered on the true link: the claimed sender is not the link's peer.
        auto on_true_link = w.open(forged, 0);
        REQUIRE_FALSE(on_true_link.ok());
        const Errc code = on_true_link.code();
        CHECK((code == Errc::forged_sender || code == Errc::bad_mac));
        // Even a transport that lies about the link cannot get it past the MAC.
        CHECK(code_of(w.open(forged, claimed)) == code_name(Errc::bad_mac));

        if (same_but_sender(forged.bytes, genuine.bytes))
            ++relabelled;
        else
            ++resealed;
    }
    CHECK(relabelled > 50);
    CHECK(resealed > 50);
}

TEST_CASE("byzantine: corrupted envelopes differ in one byte and are refused") {
    World w;
    Recorder rec(0);
    ByzantineBehavior b;
    b.corrupt_rate = 1;
    ByzantineTransport bt(0, w.keys[0], w.members, rec, b, 3);
    for (std::uint64_t i = 0; i < 200; ++i) {
        const ReplicaId to = 1 + static_cast<ReplicaId>(i % 3);
        const Bytes honest = w.seal(0, to, MsgType::prepare, distinct_vote(i));
        bt.send(to, honest);
        REQUIRE(rec.sent.size() == i + 1);
        const Sent& s = rec.sent.back();
        CAPTURE(i);
        CHECK(s.to == to);
        REQUIRE(s.bytes.size() == honest.size());
        std::size_t differing = 0;
        for (std::size_t k = 0; k < honest.size(); ++k)
            differing += s.bytes[k] != honest[k];
        CHECK(differing == 1);
        CHECK_FALSE(w.open(s, 0).ok());
    }
    CHECK(bt.stats().corrupted == 200);

    SUBCASE("only intact envelopes are replayed") {
        Recorder rec2(0);
        ByzantineBehavior b2;
        b2.corrupt_rate = 0.5;
        b2.replay_rate = 1;
        ByzantineTransport bt2(0, w.keys[0], w.members, rec2, b2, 3);
        std::uint64_t intact = 0;
        for (std::uint64_t i = 0; i < 100; ++i) {
            const std::size_t before = rec2.sent.size();
            const std::uint64_t corrupted = bt2.stats().corrupted;
            bt2.send(1, w.seal(0, 1, MsgType::prepare, distinct_vote(i)));
            if (bt2.stats().corrupted == corrupted) ++intact;
            // The first entry is this send (maybe corrupted), the second, if any, a replay.
            for (std::size_t k = before + 1; k < rec2.sent.size(); ++k)
                CHECK(w.open(rec2.sent[k], 0).ok());
        }
        CHECK(intact > 20);
        CHECK(bt2.stats().replayed > 20);
    }
}

TEST_CASE("byzantine: delay_ms delivers later, through the inner transport's timers") {
    World w;
    auto rec = std::make_unique<Recorder>(0);
    ByzantineBehavior b;
    b.delay_ms = 50;
    auto bt = std::make_unique<ByzantineTransport>(0, w.keys[0], w.members, *rec, b, 1);
    const Bytes honest = w.seal(0, 2, MsgType::commit, distinct_vote(1));
    bt->send(2, honest);
    CHECK(rec->sent.empty());
    CHECK(rec->timers.size() == 1);
    // The replica's own timers are not slowed down.
    bool own_fired = false;
    bt->set_timer(10, [&] { own_fired = true; });
    rec->advance(10);
    CHECK(own_fired);
    rec->advance(39);
    CHECK(rec->sent.empty());
    rec->advance(1);
    REQUIRE(rec->sent.size() == 1);
    CHECK(rec->sent[0] == Sent{2, honest});
    CHECK(bt->stats().delayed == 1);

    // A held-back message still leaves after the decorator is gone.
    bt->send(3, w.seal(0, 3, MsgType::commit, distinct_vote(2)));
    bt.reset();
    rec->advance(50);
    CHECK(rec->sent.size() == 2);
}

TEST_CASE("byzantine: the same seed gives the same sends, another seed others") {
    World w;
    Ledger ledger = w.ledger();
    PrePrepare pp{0, 1, ledger.build_block({w.transfer(0, 0, 9)}, 0, 0, 1).block};
    ByzantineBehavior b;
    b.equivocate = true;
    b.conflicting_votes = true;
    b.replay_rate = 0.2;
    b.forge_rate = 0.2;
    b.corrupt_rate = 0.1;

    auto run = [&](std::uint64_t seed) {
        Recorder rec(0);
        ByzantineTransport bt(0, w.keys[0], w.members, rec, b, seed);
        w.broadcast(bt, 0, MsgType::pre_prepare, pp);
        for (std::uint64_t i = 0; i < 100; ++i)
            w.broadcast(bt, 0, i % 2 ? MsgType::commit : MsgType::prepare, distinct_vote(i));
        return rec.sent;
    };
    const auto a = run(5);
    CHECK(a == run(5));
    CHECK(a != run(6));
    CHECK(a.size() > 303);
}

TEST_CASE("byzantine: pass-through forwards byte-identical") {
    World w;
    const Bytes honest = w.seal(0, 1, MsgType::prepare, distinct_vote(0));
    const Bytes from_other = w.seal(2, 1, MsgType::prepare, distinct_vote(0));
    const Bytes garbage{0xde, 0xad, 0xbe, 0xef};
    const net::NodeId client = net::first_client_id + 9;

    ByzantineBehavior everything;
    everything.equivocate = true;
    everything.conflicting_votes = true;
    everything.equivocate_to = {1, 2, 3};
    everything.replay_rate = 1;
    everything.forge_rate = 1;
    everything.corrupt_rate = 1;
    TransportWrapper wrap = byzantine_wrapper({{3, everything}}, 99);

    SUBCASE("a replica not in the set gets a plain forwarder") {
        Recorder rec(0);
        auto t = wrap(0, w.keys[0], w.members, rec);
        REQUIRE(t != nullptr);
        CHECK(dynamic_cast<ByzantineTransport*>(t.get()) == nullptr);
        CHECK(t->self() == 0);
        t->send(1, honest);
        t->send(client, garbage);
        REQUIRE(rec.sent.size() == 2);
        CHECK(rec.sent[0] == Sent{1, honest});
        CHECK(rec.sent[1] == Sent{client, garbage});
        rec.clock = 17;
        CHECK(t->now() == 17);
        bool fired = false;
        const net::TimerId id = t->set_timer(3, [&] { fired = true; });
        t->cancel_timer(id);
        rec.advance(5);
        CHECK_FALSE(fired);
    }
    SUBCASE("a replica in the set gets a ByzantineTransport with its behaviour") {
        Recorder rec(3);
        auto t = wrap(3, w.keys[3], w.members, rec);
        auto* bt = dynamic_cast<ByzantineTransport*>(t.get());
        REQUIRE(bt != nullptr);
        CHECK(bt->behavior().forge_rate == 1);
        CHECK(bt->self() == 3);
    }
    SUBCASE("a default behaviour changes nothing") {
        Recorder rec(0);
        ByzantineTransport bt(0, w.keys[0], w.members, rec, ByzantineBehavior{}, 1);
        w.broadcast(bt, 0, MsgType::commit, distinct_vote(3));
        REQUIRE(rec.sent.size() == 3);
        for (const auto& s : rec.sent)
            CHECK(s.bytes == w.seal(0, s.to, MsgType::commit, distinct_vote(3)));
    }
    SUBCASE("clients and envelopes it cannot parse pass unchanged even when it lies") {
        Recorder rec(0);
        ByzantineTransport bt(0, w.keys[0], w.members, rec, everything, 1);
        bt.send(client, honest); // not a replica
        bt.send(1, garbage);     // not an envelope
        bt.send(1, from_other);  // not sealed by this replica
        bt.send(9, honest);      // not a member
        Bytes longer = honest;   // trailing bytes: not the documented layout
        longer.push_back(0);
        bt.send(1, longer);
        REQUIRE(rec.sent.size() == 5);
        CHECK(rec.sent[0] == Sent{client, honest});
        CHECK(rec.sent[1] == Sent{1, garbage});
        CHECK(rec.sent[2] == Sent{1, from_other});
        CHECK(rec.sent[3] == Sent{9, honest});
        CHECK(rec.sent[4] == Sent{1, longer});
        CHECK(bt.stats().passed_through == 5);
        CHECK(bt.stats().forged + bt.stats().corrupted + bt.stats().replayed == 0);
    }
}

TEST_CASE("byzantine: misuse is refused at construction") {
    World w;
    Recorder rec(0);
    CHECK_THROWS_AS((ByzantineTransport(0, w.keys[1], w.members, rec, ByzantineBehavior{}, 1)),
                    std::invalid_argument); // key of another replica
    CHECK_THROWS_AS((ByzantineTransport(7, w.keys[0], w.members, rec, ByzantineBehavior{}, 1)),
                    std::invalid_argument); // not a member
    Recorder other(1);
    CHECK_THROWS_AS((ByzantineTransport(0, w.keys[0], w.members, other, ByzantineBehavior{}, 1)),
                    std::invalid_argument); // the inner transport is another node
    ByzantineBehavior b;
    b.forge_rate = 1.5;
    CHECK_THROWS_AS((ByzantineTransport(0, w.keys[0], w.members, rec, b, 1)),
                    std::invalid_argument);
    b = {};
    b.replay_history = 0;
    CHECK_THROWS_AS((ByzantineTransport(0, w.keys[0], w.members, rec, b, 1)),
                    std::invalid_argument);
}
