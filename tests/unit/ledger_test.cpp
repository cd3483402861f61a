// The ledger state machine and genesis.
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

using namespace popchain;
using namespace popchain::test;

namespace {

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();

Hash256 trade(const char* name) {
    return sha256(std::string_view(name));
}

// A chain with an authority, four replicas and three funded wallets (carol starts empty).
struct Fixture {
    SigningKey authority = key_from_byte(0xa0);
    std::vector<SigningKey> replica_keys;
    SigningKey alice = key_from_byte(0xc1);
    SigningKey bob = key_from_byte(0xc2);
    SigningKey carol = key_from_byte(0xc3);
    SigningKey mallory = key_from_byte(0xc4);
    SigningKey spare_replica = key_from_byte(0xb9);
    Genesis genesis;

    Fixture() {
        for (std::uint8_t i = 0; i < 4; ++i)
            replica_keys.push_back(key_from_byte(static_cast<std::uint8_t>(0xb0 + i)));
        genesis.params.chain_id = "ledger-test";
        genesis.params.authority = authority.public_key();
        genesis.timestamp_ms = 1'700'000'000'000ull;
        for (std::uint32_t i = 0; i < 4; ++i)
            genesis.replicas.push_back(
                {i, replica_keys[i].public_key(), "127.0.0.1:" + std::to_string(7000 + i)});
        genesis.balances = {{alice.address(), 1000}, {bob.address(), 500}, {mallory.address(), 50}};
    }

    Ledger ledger() const {
        auto l = genesis.ledger();
        REQUIRE(l.ok());
        return std::move(l).value();
    }

    Tx base(TxKind kind, std::uint64_t nonce) const {
        Tx tx;
        tx.kind = kind;
        tx.chain_id = genesis.params.chain_id;
        tx.nonce = nonce;
        return tx;
    }
    Tx transfer(const SigningKey& from, std::uint64_t nonce, const Address& to,
                std::uint64_t amount) const {
        Tx tx = base(TxKind::transfer, nonce);
        tx.to = to;
        tx.amount = amount;
        return sign_tx(tx, from);
    }
    Tx mint(const SigningKey& from, std::uint64_t nonce, const Address& to,
            std::uint64_t amount) const {
        Tx tx = base(TxKind::mint, nonce);
        tx.to = to;
        tx.amount = amount;
        return sign_tx(tx, from);
    }
    Tx open(const SigningKey& buyer, std::uint64_t nonce, const Address& seller,
            std::uint64_t amount, const Hash256& id, std::uint64_t deadline) const {
        Tx tx = base(TxKind::escrow_open, nonce);
        tx.to = seller;
        tx.amount = amount;
        tx.trade_id = id;
        tx.deadline = deadline;
        return sign_tx(tx, buyer);
    }
    Tx release(const SigningKey& from, std::uint64_t nonce, const Hash256& id) const {
        Tx tx = base(TxKind::escrow_release, nonce);
        tx.trade_id = id;
        return sign_tx(tx, from);
    }
    Tx refund(const SigningKey& from, std::uint64_t nonce, const Hash256& id) const {
        Tx tx = base(TxKind::escrow_refund, nonce);
        tx.trade_id = id;
        return sign_tx(tx, from);
    }
    Tx config(const SigningKey& from, std::uint64_t nonce, const ConfigChange& change) const {
        Tx tx = base(TxKind::config, nonce);
        tx.payload = change.encode();
        return sign_tx(tx, from);
    }
    ConfigChange add(std::uint32_t id, const SigningKey& key) const {
        ConfigChange c;
        c.action = ConfigChange::Action::add_replica;
        c.replica = {id, key.public_key(), "10.0.0.1:" + std::to_string(8000 + id)};
        return c;
    }
    ConfigChange remove(std::uint32_t id) const {
        ConfigChange c;
        c.action = ConfigChange::Action::remove_replica;
        c.replica.id = id;
        return c;
    }
};

// A block over `txs` at the ledger's next height. The state root is whatever the caller says
// (blocks that must fail on a transaction never get as far as checking it).
Block craft(const Ledger& l, std::vector<Tx> txs, const Hash256& state_root = Hash256{}) {
    Block b;
    b.header.height = l.height() + 1;
    b.header.prev_hash = l.state().tip_hash;
    b.header.tx_root = compute_tx_root(txs);
    b.header.state_root = state_root;
    b.header.view = 1;
    b.header.proposer = 2;
    b.header.timestamp_ms = 3;
    b.txs = std::move(txs);
    return b;
}

std::string reasons(const BuiltBlock& built) {
    std::string out;
    for (const auto& r : built.rejected)
        out += r.error.message() + "; ";
    return out;
}

// Builds a block from `txs`, insists they were all accepted, applies it. Returns the block.
Block apply_ok(Ledger& l, const std::vector<Tx>& txs) {
    const std::uint64_t h = l.height();
    BuiltBlock built = l.build_block(txs, 1, 0, 1000 + h);
    INFO("build_block rejected: " << reasons(built));
    REQUIRE(built.rejected.empty());
    REQUIRE(built.block.txs.size() == txs.size());
    auto res = l.apply(built.block);
    INFO("apply: " << (res ? std::string("ok") : res.error().message()));
    REQUIRE(res.ok());
    CHECK(l.height() == h + 1);
    CHECK(l.state().tip_hash == built.block.hash());
    CHECK(l.state().state_root == built.block.header.state_root);
    CHECK(code_of(l.check_invariants()) == "ok");
    return built.block;
}

// A block that must be refused, with `code`, leaving the ledger exactly as it was.
void expect_block_rejected(Ledger& l, const Block& b, Errc code) {
    const State before = l.state();
    const Hash256 digest = l.state_digest();
    auto res = l.apply(b);
    INFO("apply: " << (res ? std::string("ok") : res.error().message()));
    CHECK(code_of(res) == code_name(code));
    CHECK(l.state_digest() == digest);
    CHECK(l.state() == before);
    CHECK(code_of(l.check_invariants()) == "ok");
}

// A transaction that must be refused with `code`, by check_tx, by build_block, and inside a
// block handed straight to apply(); none of it may change the ledger.
void expect_tx_rejected(Ledger& l, const Tx& tx, Errc code) {
    const Hash256 digest = l.state_digest();
    CHECK(code_of(l.check_tx(tx)) == code_name(code));
    BuiltBlock built = l.build_block({tx}, 0, 0, 0);
    CHECK(built.block.txs.empty());
    REQUIRE(built.rejected.size() == 1);
    CHECK(built.rejected[0].txid == tx.id());
    CHECK(code_name(built.rejected[0].error.code) == code_name(code));
    CHECK(l.state_digest() == digest);
    expect_block_rejected(l, craft(l, {tx}), code);
}

} // namespace

// ---- genesis ----

TEST_CASE("genesis: ledger() is positioned after the genesis block") {
    Fixture f;
    auto built = f.genesis.build();
    REQUIRE(built.ok());
    const Block& g = built->block;
    CHECK(g.header.height == 0);
    CHECK(g.txs.empty());
    CHECK(g.header.tx_root.is_zero());
    CHECK(g.header.timestamp_ms == f.genesis.timestamp_ms);
    CHECK(g.header.state_root == built->delta.state_root);
    CHECK(built->delta.block_hash == g.hash());

    Ledger l = f.ledger();
    CHECK(l.height() == 0);
    CHECK(l.params() == f.genesis.params);
    CHECK(l.state().tip_hash == g.hash());
    CHECK(l.state().state_root == g.header.state_root);
    CHECK(l.account(f.alice.address()).balance == 1000);
    CHECK(l.account(f.bob.address()).balance == 500);
    CHECK(l.account(f.mallory.address()).balance == 50);
    CHECK(l.account(f.carol.address()) == Account{});
    CHECK(l.account(f.alice.address()).nonce == 0);
    CHECK(l.state().total_minted == 1550);
    REQUIRE(l.state().replicas.size() == 4);
    for (std::uint32_t i = 0; i < 4; ++i)
        CHECK(l.state().replicas[i] == f.genesis.replicas[i]);
    CHECK(code_of(l.check_invariants()) == "ok");
    // Two ledgers from the same genesis agree.
    CHECK(f.ledger().state_digest() == l.state_digest());
}

TEST_CASE(
    "genesis: the genesis hash commits to chain id, authority, timestamp, balances, replicas") {
    Fixture f;
    const Hash256 h = f.genesis.build()->block.hash();
    Genesis g = f.genesis;
    g.params.chain_id = "ledger-test2";
    CHECK(g.build()->block.hash() != h);
    g = f.genesis;
    g.params.authority = f.alice.public_key();
    CHECK(g.build()->block.hash() != h);
    g = f.genesis;
    g.timestamp_ms += 1;
    CHECK(g.build()->block.hash() != h);
    g = f.genesis;
    g.balances[0].second += 1;
    CHECK(g.build()->block.hash() != h);
    g = f.genesis;
    g.replicas.pop_back();
    CHECK(g.build()->block.hash() != h);
}

TEST_CASE("genesis: JSON round trip") {
    Fixture f;
    const std::string text = f.genesis.to_json();
    auto back = Genesis::from_json(text);
    INFO(text);
    REQUIRE(back.ok());
    CHECK(*back == f.genesis);
    CHECK(back->to_json() == text);
    auto l = back->ledger();
    REQUIRE(l.ok());
    CHECK(l->state_digest() == f.ledger().state_digest());

    // Fields as documented: addresses in text form, keys in hex.
    auto doc = nlohmann::json::parse(text);
    CHECK(doc["chain_id"] == "ledger-test");
    CHECK(doc["authority"] == to_hex(f.authority.public_key()));
    CHECK(doc["balances"][0]["address"] == f.alice.address().to_string());
    CHECK(doc["balances"][0]["amount"] == 1000);
    CHECK(doc["replicas"][2]["id"] == 2);
    CHECK(doc["replicas"][2]["public_key"] == to_hex(f.replica_keys[2].public_key()));
    CHECK(doc["replicas"][2]["endpoint"] == "127.0.0.1:7002");
}

TEST_CASE("genesis: optional fields and replica order") {
    Fixture f;
    auto doc = nlohmann::json::parse(f.genesis.to_json());
    doc.erase("timestamp_ms");
    doc.erase("balances");
    doc["replicas"][0].erase("endpoint");
    std::swap(doc["replicas"][0], doc["replicas"][3]); // listed out of order
    auto g = Genesis::from_json(doc.dump());
    INFO((g ? std::string("ok") : g.error().message()));
    REQUIRE(g.ok());
    CHECK(g->timestamp_ms == 0);
    CHECK(g->balances.empty());
    REQUIRE(g->replicas.size() == 4);
    for (std::uint32_t i = 0; i < 4; ++i)
        CHECK(g->replicas[i].id == i); // sorted by id
    CHECK(g->replicas[0].endpoint.empty());
}

TEST_CASE("genesis: JSON load from a file") {
    Fixture f;
    const auto path = std::filesystem::temp_directory_path() /
                      ("popchain-ledger-test-genesis-" + std::to_string(::getpid()) + ".json");
    {
        std::ofstream out(path, std::ios::binary);
        out << f.genesis.to_json();
    }
    auto g = Genesis::load(path);
    std::filesystem::remove(path);
    REQUIRE(g.ok());
    CHECK(*g == f.genesis);
    CHECK(code_of(Genesis::load(path)) == code_name(Errc::io_error));
}

TEST_CASE("genesis: JSON rejections") {
    Fixture f;
    const auto good = nlohmann::json::parse(f.genesis.to_json());
    REQUIRE(Genesis::from_json(good.dump()).ok());
    auto rejected = [](const std::string& text) { return code_of(Genesis::from_json(text)); };
    auto with = [&](auto mutate) {
        nlohmann::json d = good;
        mutate(d);
        return d.dump();
    };
    const std::string malformed = code_name(Errc::malformed);

    SUBCASE("not an object") {
        for (const char* text :
             {"", "[]", "42", "\"genesis\"", "null", "true", "{", "not json", "{\"chain_id\": }"}) {
            CAPTURE(text);
            CHECK(rejected(text) == malformed);
        }
    }
    SUBCASE("unknown fields, at every level") {
        CHECK(rejected(with([](auto& d) { d["chain-id"] = "x"; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["extra"] = 1; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][1]["weight"] = 1; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0]["memo"] = "hi"; })) == malformed);
    }
    SUBCASE("bad address checksum") {
        std::string addr = good["balances"][0]["address"];
        // Change one hex digit of the address part (keeping it hex).
        addr[10] = addr[10] == '0' ? '1' : '0';
        CHECK(rejected(with([&](auto& d) { d["balances"][0]["address"] = addr; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0]["address"] = "pop1234"; })) ==
              malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0].erase("address"); })) == malformed);
    }
    SUBCASE("duplicate replica ids or keys") {
        CHECK(rejected(with([](auto& d) { d["replicas"][3]["id"] = 1; })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  d["replicas"][3]["public_key"] = d["replicas"][0]["public_key"];
              })) == malformed);
    }
    SUBCASE("missing or bad authority") {
        CHECK(rejected(with([](auto& d) { d.erase("authority"); })) == malformed);
        CHECK(rejected(with([](auto& d) { d["authority"] = 7; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["authority"] = "zz"; })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  std::string k = d["authority"];
                  d["authority"] = k.substr(0, 64); // 32 bytes
              })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  std::string k = d["authority"];
                  d["authority"] = "04" + k.substr(2); // not a compressed prefix
              })) == malformed);
    }
    SUBCASE("chain id") {
        CHECK(rejected(with([](auto& d) { d.erase("chain_id"); })) == malformed);
        CHECK(rejected(with([](auto& d) { d["chain_id"] = ""; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["chain_id"] = 5; })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  d["chain_id"] = std::string(max_chain_id_bytes + 1, 'c');
              })) == malformed);
        CHECK(rejected(with(
                  [](auto& d) { d["chain_id"] = std::string(max_chain_id_bytes, 'c'); })) == "ok");
    }
    SUBCASE("replicas") {
        CHECK(rejected(with([](auto& d) { d.erase("replicas"); })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"] = nlohmann::json::array(); })) ==
              malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"] = nlohmann::json::object(); })) ==
              malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0] = 5; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0].erase("id"); })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0]["id"] = -1; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0]["id"] = 1.5; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0]["id"] = 4294967296ull; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0]["id"] = "0"; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0].erase("public_key"); })) == malformed);
        CHECK(rejected(with([](auto& d) { d["replicas"][0]["endpoint"] = 80; })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  d["replicas"][0]["endpoint"] = std::string(max_endpoint_bytes + 1, 'e');
              })) == malformed);
    }
    SUBCASE("balances") {
        CHECK(rejected(with([](auto& d) { d["balances"] = 5; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0] = "pop"; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0]["amount"] = -5; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0]["amount"] = "5"; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0]["amount"] = 2.5; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["balances"][0].erase("amount"); })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  d["balances"][1]["address"] = d["balances"][0]["address"];
              })) == malformed);
        // The initial supply must fit in 64 bits.
        CHECK(rejected(with([](auto& d) {
                  d["balances"][0]["amount"] = u64_max;
                  d["balances"][1]["amount"] = 1;
              })) == malformed);
        CHECK(rejected(with([](auto& d) {
                  d["balances"][0]["amount"] = u64_max - 550;
                  d["balances"][1]["amount"] = 500;
              })) == "ok");
    }
    SUBCASE("timestamp") {
        CHECK(rejected(with([](auto& d) { d["timestamp_ms"] = -1; })) == malformed);
        CHECK(rejected(with([](auto& d) { d["timestamp_ms"] = "now"; })) == malformed);
    }
}

// Genesis::from_json validates (replica ids unique, replica set non-empty, chain id
// non-empty, ...) but build()/ledger() do not, so a Genesis constructed in code (simulations,
// tests, tools) yields a ledger that breaks its own invariants.
TEST_CASE("genesis: build() refuses what from_json refuses") {
    Fixture f;
    SUBCASE("duplicate replica ids") {
        Genesis g = f.genesis;
        g.replicas[3].id = g.replicas[0].id;
        auto l = g.ledger();
        if (l.ok()) {
            INFO("ledger() accepted it; check_invariants says: " << code_of(l->check_invariants()));
            CHECK(code_of(l->check_invariants()) == "ok");
        }
        CHECK_FALSE(g.build().ok());
        CHECK_FALSE(Genesis::from_json(g.to_json()).ok());
    }
    SUBCASE("duplicate replica keys") {
        Genesis g = f.genesis;
        g.replicas[3].key = g.replicas[0].key;
        CHECK_FALSE(g.build().ok());
        CHECK_FALSE(Genesis::from_json(g.to_json()).ok());
    }
    SUBCASE("no replicas") {
        Genesis g = f.genesis;
        g.replicas.clear();
        CHECK_FALSE(g.build().ok());
        CHECK_FALSE(Genesis::from_json(g.to_json()).ok());
    }
    SUBCASE("empty chain id") {
        Genesis g = f.genesis;
        g.params.chain_id.clear();
        CHECK_FALSE(g.build().ok());
        CHECK_FALSE(Genesis::from_json(g.to_json()).ok());
    }
}

// ---- happy paths ----

TEST_CASE("ledger: transfers, built by one ledger and applied by a backup") {
    Fixture f;
    Ledger primary = f.ledger();
    Ledger backup = f.ledger();
    const Hash256 before = primary.state_digest();

    BuiltBlock built = primary.build_block({f.transfer(f.alice, 0, f.bob.address(), 100),
                                            f.transfer(f.alice, 1, f.carol.address(), 50),
                                            f.transfer(f.bob, 0, f.carol.address(), 600)},
                                           9, 2, 12345);
    INFO(reasons(built));
    REQUIRE(built.rejected.empty());
    CHECK(primary.state_digest() == before); // building does not change the ledger
    CHECK(built.block.header.height == 1);
    CHECK(built.block.header.prev_hash == primary.state().tip_hash);
    CHECK(built.block.header.tx_root == compute_tx_root(built.block.txs));
    CHECK(built.block.header.view == 9);
    CHECK(built.block.header.proposer == 2);
    CHECK(built.block.header.timestamp_ms == 12345);
    CHECK(built.delta.state_root == built.block.header.state_root);
    CHECK(built.delta.block_hash == built.block.hash());

    // The backup executes the block and gets the same delta.
    auto executed = backup.execute(built.block);
    REQUIRE(executed.ok());
    CHECK(executed->state_root == built.delta.state_root);
    CHECK(executed->encode_changes() == built.delta.encode_changes());
    CHECK(backup.state_digest() == before); // execute() alone changes nothing
    backup.commit(*executed);
    REQUIRE(primary.apply(built.block).ok());
    CHECK(primary.state_digest() == backup.state_digest());
    CHECK(primary.state() == backup.state());

    for (const Ledger* l : {&primary, &backup}) {
        CHECK(l->height() == 1);
        CHECK(l->account(f.alice.address()) == Account{850, 2});
        CHECK(l->account(f.bob.address()) == Account{0, 1});
        CHECK(l->account(f.carol.address()) == Account{650, 0});
        CHECK(l->state().total_minted == 1550);
        CHECK(code_of(l->check_invariants()) == "ok");
    }

    // An empty block is a valid block too.
    Block empty = apply_ok(primary, {});
    REQUIRE(backup.apply(empty).ok());
    CHECK(primary.state_digest() == backup.state_digest());
    CHECK(primary.height() == 2);
}

TEST_CASE("ledger: transfer to self only advances the nonce") {
    Fixture f;
    Ledger l = f.ledger();
    apply_ok(l, {f.transfer(f.alice, 0, f.alice.address(), 1000)});
    CHECK(l.account(f.alice.address()) == Account{1000, 1});
    expect_tx_rejected(l, f.transfer(f.alice, 1, f.alice.address(), 1001),
                       Errc::insufficient_funds);
}

TEST_CASE("ledger: mint by the authority, to others and to itself") {
    Fixture f;
    Ledger l = f.ledger();
    apply_ok(l, {f.mint(f.authority, 0, f.carol.address(), 70),
                 f.mint(f.authority, 1, f.authority.address(), 5)});
    CHECK(l.account(f.carol.address()).balance == 70);
    CHECK(l.account(f.authority.address()) == Account{5, 2});
    CHECK(l.state().total_minted == 1550 + 75);
}

TEST_CASE("ledger: escrow open then release pays the seller") {
    Fixture f;
    Ledger l = f.ledger();
    const Hash256 t = trade("release");
    apply_ok(l, {f.open(f.alice, 0, f.bob.address(), 300, t, 10)});
    CHECK(l.account(f.alice.address()) == Account{700, 1});
    auto e = l.escrow(t);
    REQUIRE(e.has_value());
    CHECK(e->buyer == f.alice.address());
    CHECK(e->seller == f.bob.address());
    CHECK(e->amount == 300);
    CHECK(e->deadline == 10);
    CHECK(e->opened_at == 1);
    CHECK(e->status == EscrowStatus::open);
    CHECK(l.state().total_minted == 1550); // locked funds still count

    apply_ok(l, {f.release(f.alice, 1, t)});
    CHECK(l.escrow(t)->status == EscrowStatus::released);
    CHECK(l.account(f.alice.address()) == Account{700, 2});
    CHECK(l.account(f.bob.address()) == Account{800, 0});
    CHECK_FALSE(l.escrow(trade("never opened")).has_value());
}

TEST_CASE("ledger: escrow refunded by the seller at any time") {
    Fixture f;
    Ledger l = f.ledger();
    const Hash256 t = trade("seller refund");
    apply_ok(l, {f.open(f.alice, 0, f.bob.address(), 300, t, 100)});
    apply_ok(l, {f.refund(f.bob, 0, t)});
    CHECK(l.escrow(t)->status == EscrowStatus::refunded);
    CHECK(l.account(f.alice.address()) == Account{1000, 1});
    CHECK(l.account(f.bob.address()) == Account{500, 1});
}

TEST_CASE("ledger: the buyer may reclaim only after the deadline") {
    Fixture f;
    Ledger l = f.ledger();
    const Hash256 t = trade("buyer reclaim");
    apply_ok(l, {f.open(f.alice, 0, f.bob.address(), 300, t, 2)}); // height 1, deadline 2
    // At height 2 (== deadline) it is too early.
    expect_tx_rejected(l, f.refund(f.alice, 1, t), Errc::refund_before_deadline);
    apply_ok(l, {});
    REQUIRE(l.height() == 2);
    // At height 3 (> deadline) it is allowed; the buyer is also the payee.
    apply_ok(l, {f.refund(f.alice, 1, t)});
    CHECK(l.escrow(t)->status == EscrowStatus::refunded);
    CHECK(l.account(f.alice.address()) == Account{1000, 2});
}

TEST_CASE("ledger: escrow deadline equal to the opening height is allowed") {
    Fixture f;
    Ledger l = f.ledger();
    apply_ok(l, {f.open(f.alice, 0, f.bob.address(), 1, trade("d=h"), 1)});
    apply_ok(l, {f.refund(f.alice, 1, trade("d=h"))}); // height 2 > 1
}

TEST_CASE("ledger: transactions in one block see each other's effects") {
    Fixture f;
    Ledger l = f.ledger();
    // Carol starts empty: receives, spends, and opens an escrow in the same block.
    apply_ok(l, {f.transfer(f.alice, 0, f.carol.address(), 100),
                 f.transfer(f.carol, 0, f.bob.address(), 60),
                 f.open(f.carol, 1, f.bob.address(), 40, trade("same block"), 5),
                 f.release(f.carol, 2, trade("same block"))});
    CHECK(l.account(f.carol.address()) == Account{0, 3});
    CHECK(l.account(f.bob.address()).balance == 600);
}

TEST_CASE("ledger: config adds and removes replicas (kept sorted)") {
    Fixture f;
    Ledger l = f.ledger();
    apply_ok(l, {f.config(f.authority, 0, f.add(9, f.spare_replica))});
    REQUIRE(l.state().replicas.size() == 5);
    CHECK(l.state().replicas.back().id == 9);
    CHECK(l.state().replicas.back().key == f.spare_replica.public_key());
    apply_ok(l, {f.config(f.authority, 1, f.remove(0))});
    REQUIRE(l.state().replicas.size() == 4);
    CHECK(l.state().replicas.front().id == 1);
    // Add an id that sorts into the middle.
    SigningKey k = key_from_byte(0xba);
    apply_ok(l, {f.config(f.authority, 2, f.add(5, k))});
    std::vector<std::uint32_t> ids;
    for (const auto& r : l.state().replicas)
        ids.push_back(r.id);
    CHECK(ids == std::vector<std::uint32_t>{1, 2, 3, 5, 9});
    CHECK(l.account(f.authority.address()).nonce == 3);
}

// ---- transaction rejection rules ----

TEST_CASE("ledger: signature, chain id and sender are checked") {
    Fixture f;
    Ledger l = f.ledger();
    Tx bad_sig = f.transfer(f.alice, 0, f.bob.address(), 10);
    bad_sig.signature.bytes[40] ^= 0x04;
    expect_tx_rejected(l, bad_sig, Errc::bad_signature);

    Tx forged = f.transfer(f.alice, 0, f.bob.address(), 10);
    forged.signature = f.mallory.sign(forged.id()); // mallory signs for alice's key
    expect_tx_rejected(l, forged, Errc::bad_signature);

    Tx other_chain = f.base(TxKind::transfer, 0);
    other_chain.chain_id = "some-other-chain";
    other_chain.to = f.bob.address();
    other_chain.amount = 10;
    expect_tx_rejected(l, sign_tx(other_chain, f.alice), Errc::wrong_chain_id);

    Tx mismatch = f.base(TxKind::transfer, 0);
    mismatch.to = f.mallory.address();
    mismatch.amount = 10;
    mismatch.public_key = f.mallory.public_key();
    mismatch.from = f.alice.address(); // mallory tries to spend alice's funds
    mismatch.signature = f.mallory.sign(mismatch.id());
    expect_tx_rejected(l, mismatch, Errc::sender_mismatch);
}

TEST_CASE("ledger: nonces must be used in order, exactly once") {
    Fixture f;
    Ledger l = f.ledger();
    expect_tx_rejected(l, f.transfer(f.alice, 1, f.bob.address(), 10), Errc::nonce_gap);
    expect_tx_rejected(l, f.transfer(f.alice, u64_max, f.bob.address(), 10), Errc::nonce_gap);
    apply_ok(l, {f.transfer(f.alice, 0, f.bob.address(), 10)});
    // A different transaction with the used nonce, and the very same one again.
    expect_tx_rejected(l, f.transfer(f.alice, 0, f.bob.address(), 11), Errc::nonce_reused);
    expect_tx_rejected(l, f.transfer(f.alice, 0, f.bob.address(), 10), Errc::nonce_reused);
    expect_tx_rejected(l, f.transfer(f.alice, 2, f.bob.address(), 10), Errc::nonce_gap);
    // Within a block: out of order.
    expect_block_rejected(l,
                          craft(l, {f.transfer(f.alice, 2, f.bob.address(), 1),
                                    f.transfer(f.alice, 1, f.bob.address(), 1)}),
                          Errc::nonce_gap);
    // Nonces are per sender: bob's first is still 0.
    apply_ok(l, {f.transfer(f.bob, 0, f.alice.address(), 1),
                 f.transfer(f.alice, 1, f.bob.address(), 1)});
}

TEST_CASE("ledger: overdraft and zero amount") {
    Fixture f;
    Ledger l = f.ledger();
    expect_tx_rejected(l, f.transfer(f.alice, 0, f.bob.address(), 1001), Errc::insufficient_funds);
    expect_tx_rejected(l, f.transfer(f.carol, 0, f.bob.address(), 1), Errc::insufficient_funds);
    expect_tx_rejected(l, f.transfer(f.alice, 0, f.bob.address(), u64_max),
                       Errc::insufficient_funds);
    expect_tx_rejected(l, f.open(f.alice, 0, f.bob.address(), 1001, trade("big"), 5),
                       Errc::insufficient_funds);
    expect_tx_rejected(l, f.transfer(f.alice, 0, f.bob.address(), 0), Errc::zero_amount);
    expect_tx_rejected(l, f.mint(f.authority, 0, f.bob.address(), 0), Errc::zero_amount);
    expect_tx_rejected(l, f.open(f.alice, 0, f.bob.address(), 0, trade("zero"), 5),
                       Errc::zero_amount);
    // Spending the whole balance is fine; one more unit is not.
    apply_ok(l, {f.transfer(f.alice, 0, f.bob.address(), 1000)});
    expect_tx_rejected(l, f.transfer(f.alice, 1, f.bob.address(), 1), Errc::insufficient_funds);
}

TEST_CASE("ledger: mint cannot overflow the 64-bit supply") {
    Fixture f;
    Ledger l = f.ledger();
    const std::uint64_t room = u64_max - l.state().total_minted;
    expect_tx_rejected(l, f.mint(f.authority, 0, f.carol.address(), room + 1),
                       Errc::amount_overflow);
    expect_tx_rejected(l, f.mint(f.authority, 0, f.carol.address(), u64_max),
                       Errc::amount_overflow);
    apply_ok(l, {f.mint(f.authority, 0, f.carol.address(), room)});
    CHECK(l.state().total_minted == u64_max);
    CHECK(l.account(f.carol.address()).balance == room);
    expect_tx_rejected(l, f.mint(f.authority, 1, f.carol.address(), 1), Errc::amount_overflow);
    expect_tx_rejected(l, f.mint(f.authority, 1, f.alice.address(), 1), Errc::amount_overflow);
    // The whole supply can still move around without overflowing anything.
    apply_ok(l, {f.transfer(f.carol, 0, f.alice.address(), room),
                 f.transfer(f.bob, 0, f.alice.address(), 500),
                 f.transfer(f.mallory, 0, f.alice.address(), 50)});
    CHECK(l.account(f.alice.address()).balance == u64_max);
}

TEST_CASE("ledger: mint and config are for the authority only") {
    Fixture f;
    Ledger l = f.ledger();
    expect_tx_rejected(l, f.mint(f.alice, 0, f.alice.address(), 1), Errc::not_authority);
    expect_tx_rejected(l, f.config(f.alice, 0, f.add(9, f.spare_replica)), Errc::not_authority);
    expect_tx_rejected(l, f.config(f.replica_keys[0], 0, f.remove(1)), Errc::not_authority);
}

TEST_CASE("ledger: config rules") {
    Fixture f;
    Ledger l = f.ledger();
    expect_tx_rejected(l, f.config(f.authority, 0, f.add(2, f.spare_replica)),
                       Errc::bad_config); // dup id
    expect_tx_rejected(l, f.config(f.authority, 0, f.add(9, f.replica_keys[1])),
                       Errc::bad_config);                                           // dup key
    expect_tx_rejected(l, f.config(f.authority, 0, f.remove(7)), Errc::bad_config); // unknown id
    // Remove down to one replica; the last cannot go.
    apply_ok(l, {f.config(f.authority, 0, f.remove(0)), f.config(f.authority, 1, f.remove(1)),
                 f.config(f.authority, 2, f.remove(2))});
    REQUIRE(l.state().replicas.size() == 1);
    expect_tx_rejected(l, f.config(f.authority, 3, f.remove(3)), Errc::bad_config);
    // Removed ids can be re-added.
    apply_ok(l, {f.config(f.authority, 3, f.add(0, f.replica_keys[0]))});
    CHECK(l.state().replicas.size() == 2);
}

TEST_CASE("ledger: escrow rejection rules") {
    Fixture f;
    Ledger l = f.ledger();
    const Hash256 t = trade("rules");
    expect_tx_rejected(l, f.release(f.alice, 0, t), Errc::unknown_escrow);
    expect_tx_rejected(l, f.refund(f.bob, 0, t), Errc::unknown_escrow);
    expect_tx_rejected(l, f.open(f.alice, 0, f.alice.address(), 10, t, 5), Errc::not_escrow_party);
    expect_tx_rejected(l, f.open(f.alice, 0, f.bob.address(), 10, t, 0), Errc::deadline_passed);

    apply_ok(l, {f.open(f.alice, 0, f.bob.address(), 100, t, 50)});
    expect_tx_rejected(l, f.open(f.bob, 0, f.carol.address(), 10, t, 50), Errc::escrow_exists);
    expect_tx_rejected(l, f.release(f.bob, 0, t), Errc::not_escrow_party);     // seller
    expect_tx_rejected(l, f.release(f.mallory, 0, t), Errc::not_escrow_party); // stranger
    expect_tx_rejected(l, f.refund(f.mallory, 0, t), Errc::not_escrow_party);  // stranger
    expect_tx_rejected(l, f.refund(f.alice, 1, t), Errc::refund_before_deadline);

    apply_ok(l, {f.release(f.alice, 1, t)});
    expect_tx_rejected(l, f.release(f.alice, 2, t), Errc::escrow_closed); // double release
    expect_tx_rejected(l, f.refund(f.bob, 0, t), Errc::escrow_closed);    // refund after release
    // A closed trade id can never be reused.
    expect_tx_rejected(l, f.open(f.alice, 2, f.bob.address(), 10, t, 50), Errc::escrow_exists);

    const Hash256 u = trade("refunded");
    apply_ok(l, {f.open(f.alice, 2, f.bob.address(), 100, u, 50), f.refund(f.bob, 0, u)});
    expect_tx_rejected(l, f.release(f.alice, 3, u), Errc::escrow_closed); // release after refund
    expect_tx_rejected(l, f.refund(f.bob, 1, u), Errc::escrow_closed);    // double refund
}

// ---- block rules ----

TEST_CASE("ledger: block height, parent and roots are checked") {
    Fixture f;
    Ledger l = f.ledger();
    Ledger twin = f.ledger();
    const std::vector<Tx> txs = {f.transfer(f.alice, 0, f.bob.address(), 5)};
    BuiltBlock built = l.build_block(txs, 0, 0, 0);
    REQUIRE(built.rejected.empty());
    const Block good = built.block;

    SUBCASE("wrong height") {
        for (std::uint64_t h : {std::uint64_t{0}, std::uint64_t{2}, std::uint64_t{100}, u64_max}) {
            Block b = good;
            b.header.height = h;
            expect_block_rejected(l, b, Errc::wrong_height);
        }
    }
    SUBCASE("same block applied twice") {
        REQUIRE(l.apply(good).ok());
        expect_block_rejected(l, good, Errc::wrong_height);
    }
    SUBCASE("wrong prev hash") {
        Block b = good;
        b.header.prev_hash.bytes[3] ^= 1;
        expect_block_rejected(l, b, Errc::wrong_prev_hash);
        b.header.prev_hash = Hash256{};
        expect_block_rejected(l, b, Errc::wrong_prev_hash);
    }
    SUBCASE("tampered tx root") {
        Block b = good;
        b.header.tx_root.bytes[0] ^= 1;
        expect_block_rejected(l, b, Errc::bad_tx_root);
        // Or the transactions changed under an unchanged root.
        Block c = good;
        c.txs.push_back(f.transfer(f.alice, 1, f.bob.address(), 5));
        expect_block_rejected(l, c, Errc::bad_tx_root);
        Block d = good;
        d.txs.clear();
        expect_block_rejected(l, d, Errc::bad_tx_root);
    }
    SUBCASE("tampered state root") {
        Block b = good;
        b.header.state_root.bytes[31] ^= 1;
        expect_block_rejected(l, b, Errc::bad_state_root);
        // The state root of an empty block at this height is not the root of this block.
        Block e = good;
        e.header.state_root = l.build_block({}, 0, 0, 0).block.header.state_root;
        expect_block_rejected(l, e, Errc::bad_state_root);
    }
    SUBCASE("duplicate transaction within a block") {
        const Tx tx = txs[0];
        expect_block_rejected(l, craft(l, {tx, tx}), Errc::duplicate_tx);
        // Even when the copy carries a different (but equally valid) signature encoding.
        Tx copy = tx;
        copy.signature.bytes[0] ^= 1;
        REQUIRE(copy.id() == tx.id());
        expect_block_rejected(l, craft(l, {tx, copy}), Errc::duplicate_tx);
    }
    SUBCASE("too many transactions") {
        std::vector<Tx> many(max_block_txs + 1);
        Block b = craft(l, {});
        b.txs = std::move(many);
        expect_block_rejected(l, b, Errc::too_many_txs);
    }
    SUBCASE("the informative header fields and the certificate are not validated") {
        Block b = good;
        b.header.view = 1234;
        b.header.proposer = 99;
        b.header.timestamp_ms = 1;
        b.certificate.view = 5;
        b.certificate.signatures.push_back({0, Signature{}});
        REQUIRE(l.apply(b).ok());
        CHECK(l.state().tip_hash == b.hash());
        CHECK(l.state().tip_hash != good.hash());
    }
    // The pristine block still applies on an untouched ledger.
    REQUIRE(twin.apply(good).ok());
    CHECK(twin.height() == 1);
}

TEST_CASE("ledger: a block whose last transaction is invalid changes nothing") {
    Fixture f;
    Ledger l = f.ledger();
    const Hash256 t = trade("atomic");
    std::vector<Tx> txs = {f.transfer(f.alice, 0, f.carol.address(), 100),
                           f.mint(f.authority, 0, f.carol.address(), 7),
                           f.config(f.authority, 1, f.add(9, f.spare_replica)),
                           f.open(f.alice, 1, f.bob.address(), 10, t, 9),
                           f.transfer(f.carol, 0, f.mallory.address(), 1000)}; // overdraft
    // Whatever state root the header claims, the block is refused for its last transaction.
    const State before = l.state();
    auto res = l.apply(craft(l, txs));
    CHECK(code_of(res) == code_name(Errc::insufficient_funds));
    CHECK(res.error().detail.find("tx #4") != std::string::npos);
    CHECK(l.state() == before);
    CHECK_FALSE(l.escrow(t).has_value());
    CHECK(l.state().replicas.size() == 4);

    // With the correct root for the first four it is still refused, and still changes nothing.
    std::vector<Tx> first4(txs.begin(), txs.begin() + 4);
    BuiltBlock good = l.build_block(first4, 0, 0, 0);
    REQUIRE(good.rejected.empty());
    expect_block_rejected(l, craft(l, txs, good.block.header.state_root), Errc::insufficient_funds);
    // Without the bad one, the block applies.
    apply_ok(l, first4);
    CHECK(l.state().replicas.size() == 5);
    CHECK(l.escrow(t).has_value());
}

TEST_CASE("ledger: build_block skips invalid transactions and says why") {
    Fixture f;
    Ledger l = f.ledger();
    Tx bad_sig = f.transfer(f.bob, 0, f.carol.address(), 1);
    bad_sig.signature.bytes[33] ^= 1;
    Tx wrong_chain = f.base(TxKind::transfer, 0);
    wrong_chain.chain_id = "elsewhere";
    wrong_chain.to = f.bob.address();
    wrong_chain.amount = 1;
    wrong_chain = sign_tx(wrong_chain, f.mallory);

    const Tx a0 = f.transfer(f.alice, 0, f.carol.address(), 10);
    const Tx a1 = f.transfer(f.alice, 1, f.carol.address(), 20);
    const Tx a2 = f.transfer(f.alice, 2, f.carol.address(), 30);
    const Tx c0 = f.transfer(f.carol, 0, f.bob.address(), 25); // funded by a0 + a1 only
    const std::vector<Tx> candidates = {
        a0,
        f.transfer(f.bob, 0, f.carol.address(), 501), // overdraft
        a2,                                           // gap: a1 not yet seen
        a1,
        a0, // duplicate
        bad_sig,
        wrong_chain,
        f.mint(f.alice, 2, f.alice.address(), 1), // not the authority
        c0,
        a2, // rejected above for the gap; in order now, so accepted
        f.release(f.alice, 3, trade("none")),
    };
    const Hash256 digest = l.state_digest();
    BuiltBlock built = l.build_block(candidates, 0, 0, 0);
    CHECK(l.state_digest() == digest);

    REQUIRE(built.block.txs.size() == 4);
    CHECK(built.block.txs[0] == a0);
    CHECK(built.block.txs[1] == a1);
    CHECK(built.block.txs[2] == c0);
    CHECK(built.block.txs[3] == a2);
    // Expected reasons, in candidate order.
    const std::vector<std::pair<Hash256, Errc>> expected = {
        {candidates[1].id(), Errc::insufficient_funds},
        {a2.id(), Errc::nonce_gap},
        {a0.id(), Errc::duplicate_tx},
        {bad_sig.id(), Errc::bad_signature},
        {wrong_chain.id(), Errc::wrong_chain_id},
        {candidates[7].id(), Errc::not_authority},
        {candidates[10].id(), Errc::unknown_escrow},
    };
    REQUIRE(built.rejected.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        CAPTURE(i);
        CHECK(built.rejected[i].txid == expected[i].first);
        CHECK(code_name(built.rejected[i].error.code) == code_name(expected[i].second));
        CHECK_FALSE(built.rejected[i].error.message().empty());
    }
    // The built block applies, here and on a backup.
    Ledger backup = f.ledger();
    REQUIRE(l.apply(built.block).ok());
    REQUIRE(backup.apply(built.block).ok());
    CHECK(l.state_digest() == backup.state_digest());
    CHECK(l.account(f.carol.address()) == Account{10 + 20 + 30 - 25, 1});
    CHECK(code_of(l.check_invariants()) == "ok");
}

TEST_CASE("ledger: check_tx sees the current state") {
    Fixture f;
    Ledger l = f.ledger();
    const Tx tx = f.transfer(f.alice, 0, f.bob.address(), 5);
    CHECK(code_of(l.check_tx(tx)) == "ok");
    apply_ok(l, {tx});
    CHECK(code_of(l.check_tx(tx)) == code_name(Errc::nonce_reused));
    CHECK(code_of(l.check_tx(f.transfer(f.alice, 1, f.bob.address(), 5))) == "ok");
}

TEST_CASE("ledger: a signature cache is used and changes no outcome") {
    Fixture f;
    SignatureCache cache;
    auto cached = f.genesis.ledger(&cache);
    REQUIRE(cached.ok());
    Ledger plain = f.ledger();
    BuiltBlock built = cached->build_block(
        {f.transfer(f.alice, 0, f.bob.address(), 5), f.transfer(f.bob, 0, f.alice.address(), 5)}, 0,
        0, 0);
    REQUIRE(built.rejected.empty());
    const std::size_t hits = cache.hits();
    REQUIRE(cached->apply(built.block).ok());
    CHECK(cache.hits() == hits + 2); // both signatures were already checked while building
    REQUIRE(plain.apply(built.block).ok());
    CHECK(plain.state_digest() == cached->state_digest());
}

TEST_CASE("ledger: state root chains the deltas; digest reflects the whole state") {
    Fixture f;
    Ledger l = f.ledger();
    std::vector<Hash256> roots = {l.state().state_root};
    std::vector<Hash256> digests = {l.state_digest()};
    for (std::uint64_t i = 0; i < 4; ++i) {
        apply_ok(l, {f.transfer(f.alice, i, f.bob.address(), 1)});
        roots.push_back(l.state().state_root);
        digests.push_back(l.state_digest());
    }
    apply_ok(l, {}); // even an empty block moves the root and digest (height changes)
    roots.push_back(l.state().state_root);
    digests.push_back(l.state_digest());
    for (std::size_t i = 0; i < roots.size(); ++i)
        for (std::size_t j = i + 1; j < roots.size(); ++j) {
            CHECK(roots[i] != roots[j]);
            CHECK(digests[i] != digests[j]);
        }
    // next_state_root is what the header carries.
    BuiltBlock b = l.build_block({f.transfer(f.bob, 0, f.alice.address(), 1)}, 0, 0, 0);
    CHECK(next_state_root(l.state().state_root, b.delta) == b.block.header.state_root);
    // Two different histories that end in the same balances still differ in state root.
    Ledger x = f.ledger(), y = f.ledger();
    apply_ok(x, {f.transfer(f.alice, 0, f.bob.address(), 10)});
    apply_ok(y, {f.transfer(f.alice, 0, f.bob.address(), 4),
                 f.transfer(f.alice, 1, f.bob.address(), 6)});
    CHECK(x.account(f.bob.address()).balance == y.account(f.bob.address()).balance);
    CHECK(x.state().state_root != y.state().state_root);
}

TEST_CASE("ledger: check_invariants notices a broken state") {
    Fixture f;
    Ledger good = f.ledger();
    State s = good.state();
    s.accounts[f.carol.address()].balance += 1; // money from nowhere
    Ledger broken(f.genesis.params, s);
    CHECK(code_of(broken.check_invariants()) == code_name(Errc::storage_corrupt));

    State r = good.state();
    std::swap(r.replicas[0], r.replicas[1]);
    CHECK(code_of(Ledger(f.genesis.params, r).check_invariants()) ==
          code_name(Errc::storage_corrupt));
    State d = good.state();
    d.replicas[1].id = d.replicas[0].id;
    CHECK(code_of(Ledger(f.genesis.params, d).check_invariants()) ==
          code_name(Errc::storage_corrupt));
}

TEST_CASE("ledger: a delta's changes decode to what was encoded") {
    StateDelta d;
    d.height = 42;
    for (int i = 0; i < 3; ++i)
        d.accounts[Address::from(sha256("account " + std::to_string(i)).view().first(20))] =
            Account{100u + static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(i)};
    Escrow e;
    e.buyer = d.accounts.begin()->first;
    e.seller = d.accounts.rbegin()->first;
    e.amount = 7;
    e.deadline = 50;
    e.opened_at = 41;
    e.status = EscrowStatus::refunded;
    d.escrows[sha256("trade")] = e;
    d.total_minted = 12345;
    SUBCASE("without a replica change") {}
    SUBCASE("with one") {
        d.replicas =
            std::vector<ReplicaInfo>{{0, SigningKey::generate().public_key(), "127.0.0.1:7000"},
                                     {3, SigningKey::generate().public_key(), "10.0.0.3:7000"}};
    }
    const Bytes encoded = d.encode_changes();
    auto decoded = decode_changes(encoded);
    REQUIRE(decoded.ok());
    CHECK(decoded->height == d.height);
    CHECK(decoded->accounts == d.accounts);
    CHECK(decoded->escrows == d.escrows);
    CHECK(decoded->replicas == d.replicas);
    CHECK(decoded->total_minted == d.total_minted);
    CHECK(decoded->encode_changes() == encoded);
    CHECK(next_state_root(sha256("prev"), encoded) == next_state_root(sha256("prev"), d));

    // Anything else is an error, never a different delta.
    for (std::size_t cut = 0; cut < encoded.size(); ++cut)
        CHECK_FALSE(decode_changes(ByteView(encoded).first(cut)).ok());
    Bytes longer = encoded;
    longer.push_back(0);
    CHECK(decode_changes(longer).code() == Errc::trailing_bytes);
    // The escrow's status byte sits right before the replica flag (after 8 + 4 + 3 * 36 + 4
    // + 96 bytes).
    Bytes bad_status = encoded;
    bad_status[8 + 4 + 3 * 36 + 4 + 96] = 9;
    CHECK(decode_changes(bad_status).code() == Errc::malformed);
    // Two accounts swapped: the encoding lists them in key order.
    Bytes swapped = encoded;
    std::swap_ranges(swapped.begin() + 12, swapped.begin() + 48, swapped.begin() + 48);
    CHECK(decode_changes(swapped).code() == Errc::malformed);
    Bytes huge_count = encoded;
    huge_count[8 + 3] = 0x7f; // accounts count far beyond the input
    CHECK_FALSE(decode_changes(huge_count).ok());
}
