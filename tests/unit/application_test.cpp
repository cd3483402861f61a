// Consensus-only mode: command transactions, the chain's CommandRules, the ledger's part
// (nonces only) and NoopApplication driven by real replicas in the simulator.
#include "test_support.hpp"

#include <popchain/application.hpp>
#include <popchain/codec.hpp>
#include <popchain/ledger.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/net/sim_cluster.hpp>

#include <optional>

using namespace popchain;
using namespace popchain::test;
using popchain::net::SimCluster;
using popchain::net::SimClusterOptions;
using popchain::pbft::Committed;
using popchain::pbft::ReplicaId;

namespace {

constexpr const char* chain = "popchain-app-test";

Tx command(std::uint8_t client, std::uint64_t nonce, Bytes payload = Bytes(8, 0x5a)) {
    return make_command(chain, command_client(client), nonce, std::move(payload));
}

Ledger noop_ledger(CommandRules rules = noop_command_rules()) {
    TestChain c = make_test_chain(chain, 4, 2);
    c.genesis.params.commands = rules;
    auto ledger = c.genesis.ledger();
    REQUIRE(ledger.ok());
    return std::move(ledger).value();
}

Block next_block(const Ledger& ledger, const std::vector<Tx>& txs) {
    auto built = ledger.build_block(txs, 0, 0, 1'700'000'000'001ull);
    REQUIRE(built.rejected.empty());
    return built.block;
}

} // namespace

TEST_CASE("command: an unsigned command encodes without key and signature and round-trips") {
    const Tx tx = command(7, 3);
    const Bytes bytes = tx.encode();
    // kind, chain id (u32 length + text), client id, nonce, payload (u32 length + 8), flag
    CHECK(bytes.size() == 1 + 4 + std::string(chain).size() + 20 + 8 + 4 + 8 + 1);
    auto back = decode_tx(bytes);
    REQUIRE(back.ok());
    CHECK(*back == tx);
    CHECK(back->encode() == bytes);
    CHECK(is_unsigned_command(*back));

    // Signed, it carries both and still round-trips.
    const SigningKey key = key_from_byte(0x42);
    const Tx signed_tx = sign_tx(command(0, 0), key);
    CHECK(signed_tx.from == key.address());
    auto signed_back = decode_tx(signed_tx.encode());
    REQUIRE(signed_back.ok());
    CHECK(*signed_back == signed_tx);
    CHECK_FALSE(is_unsigned_command(*signed_back));
    CHECK(signed_tx.id() != command(0, 0).id());
}

TEST_CASE("command: non-canonical encodings are refused") {
    Bytes bytes = command(7, 3).encode();
    Bytes bad_flag = bytes;
    bad_flag.back() = 2;
    CHECK(code_of(decode_tx(bad_flag)) == code_name(Errc::malformed));
    // Flag 1 with an all-zero key would decode to the unsigned command's value.
    Bytes zero_key = bytes;
    zero_key.back() = 1;
    zero_key.resize(zero_key.size() + PublicKey::size() + Signature::size(), 0);
    CHECK(code_of(decode_tx(zero_key)) == code_name(Errc::malformed));
    Bytes truncated(bytes.begin(), bytes.end() - 1);
    CHECK_FALSE(decode_tx(truncated).ok());
}

TEST_CASE("command: the chain's rules decide which commands are valid") {
    const Tx tx = command(1, 0);
    CHECK(code_of(check_tx_stateless(tx, chain)) == code_name(Errc::command_refused));
    CHECK(code_of(check_tx_stateless(tx, chain, nullptr, noop_command_rules())) == "ok");
    CHECK(code_of(check_tx_stateless(tx, "other-chain", nullptr, noop_command_rules())) ==
          code_name(Errc::wrong_chain_id));
    // Too large for the rules; unsigned where only signed ones are taken.
    CHECK(code_of(check_tx_stateless(command(1, 0, Bytes(9, 1)), chain, nullptr,
                                     noop_command_rules())) == code_name(Errc::command_refused));
    const CommandRules signed_only{64, false};
    CHECK(code_of(check_tx_stateless(tx, chain, nullptr, signed_only)) ==
          code_name(Errc::command_refused));
    const SigningKey key = key_from_byte(0x42);
    Tx signed_tx = sign_tx(command(0, 0), key);
    CHECK(code_of(check_tx_stateless(signed_tx, chain, nullptr, signed_only)) == "ok");
    signed_tx.payload[0] ^= 1;
    CHECK(code_of(check_tx_stateless(signed_tx, chain, nullptr, signed_only)) ==
          code_name(Errc::bad_signature));

    // Shapes: fields commands do not use, an empty command, the zero client id, and a
    // signature without a key.
    auto refused = [](Tx t) {
        return code_of(check_tx_stateless(t, chain, nullptr, noop_command_rules()));
    };
    Tx t = tx;
    t.amount = 1;
    CHECK(refused(t) == code_name(Errc::malformed));
    t = tx;
    t.to.bytes[0] = 1;
    CHECK(refused(t) == code_name(Errc::malformed));
    t = tx;
    t.trade_id.bytes[0] = 1;
    CHECK(refused(t) == code_name(Errc::malformed));
    t = tx;
    t.deadline = 1;
    CHECK(refused(t) == code_name(Errc::malformed));
    CHECK(refused(command(1, 0, Bytes{})) == code_name(Errc::malformed));
    t = tx;
    t.from = Address{};
    CHECK(refused(t) == code_name(Errc::malformed));
    CHECK(command_client(0) != Address{}); // every client number gives a valid id
    t = tx;
    t.signature.bytes[0] = 1;
    CHECK(refused(t) == code_name(Errc::malformed));
}

TEST_CASE("command: the ledger spends the client's nonce and changes nothing else") {
    Ledger ledger = noop_ledger();
    const State before = ledger.state();
    const Block block = next_block(ledger, {command(1, 0), command(2, 0), command(1, 1)});
    auto delta = ledger.apply(block);
    REQUIRE(delta.ok());
    const Address one = command_client(1);
    const Address two = command_client(2);
    CHECK(ledger.account(one) == Account{0, 2});
    CHECK(ledger.account(two) == Account{0, 1});
    CHECK(ledger.state().total_minted == before.total_minted);
    CHECK(ledger.check_invariants().ok());

    // A replayed command (its nonce is spent) and one that skips ahead are refused.
    CHECK(code_of(ledger.check_tx(command(1, 1))) == code_name(Errc::nonce_reused));
    CHECK(code_of(ledger.check_tx(command(1, 3))) == code_name(Errc::nonce_gap));
    CHECK(code_of(ledger.check_tx(command(1, 2))) == "ok");

    // A chain that takes no commands refuses them in blocks too.
    Ledger plain = noop_ledger(CommandRules{});
    auto built = plain.build_block({command(1, 0)}, 0, 0, 1);
    REQUIRE(built.rejected.size() == 1);
    CHECK(built.rejected[0].error.code == Errc::command_refused);
    Block smuggled = next_block(plain, {});
    smuggled.txs = {command(1, 0)};
    smuggled.header.tx_root = compute_tx_root(smuggled.txs);
    CHECK(code_of(plain.execute(smuggled)) == code_name(Errc::command_refused));
}

TEST_CASE("command: genesis rules are parsed, validated and bound into the genesis hash") {
    TestChain c = make_test_chain(chain, 4, 1);
    const Hash256 plain_hash = c.genesis.build()->block.hash();
    const std::string plain_json = c.genesis.to_json();
    CHECK(plain_json.find("commands") == std::string::npos); // older chains look as before

    c.genesis.params.commands = noop_command_rules();
    auto with = c.genesis.build();
    REQUIRE(with.ok());
    CHECK(with->block.hash() != plain_hash);
    auto parsed = Genesis::from_json(c.genesis.to_json());
    REQUIRE(parsed.ok());
    CHECK(parsed->params.commands == noop_command_rules());
    CHECK(parsed->build()->block.hash() == with->block.hash());

    c.genesis.params.commands.allow_unsigned = false;
    CHECK(c.genesis.build()->block.hash() != with->block.hash());

    auto with_field = [&](const std::string& field) {
        std::string text = plain_json;
        text.insert(text.find('{') + 1, "\"commands\": " + field + ",");
        return Genesis::from_json(text);
    };
    CHECK(with_field(R"({"max_bytes": 8, "unsigned": true})").ok());
    CHECK(code_of(with_field(R"({"max_bytes": 0})")) == code_name(Errc::malformed));
    CHECK(code_of(with_field(R"({"max_bytes": 5000})")) == code_name(Errc::malformed));
    CHECK(code_of(with_field(R"({"max_bytes": 8, "unsigned": 1})")) == code_name(Errc::malformed));
    CHECK(code_of(with_field(R"({"max_bytes": 8, "signed": true})")) == code_name(Errc::malformed));
    CHECK(code_of(with_field("8")) == code_name(Errc::malformed));
}

TEST_CASE("noop application: its digest chains the commands and their order") {
    Ledger ledger = noop_ledger();
    const Tx a = command(1, 0, Bytes(8, 1));
    const Tx b = command(2, 0, Bytes(8, 2));
    NoopApplication first, second;
    const Block ab = next_block(ledger, {a, b});
    const Block ba = next_block(ledger, {b, a});
    CHECK(first.execute(ab).size() == 2);
    CHECK(second.execute(ba).size() == 2);
    CHECK(first.height() == 1);
    CHECK(first.executed_commands() == 2);
    CHECK(first.state_digest() != second.state_digest());
    NoopApplication again;
    again.execute(ab);
    CHECK(again.state_digest() == first.state_digest());
}

TEST_CASE("consensus-only: replicas order commands from a network client and their "
          "applications agree, also after a restart") {
    SimClusterOptions o;
    o.replicas = 4;
    o.seed = 5;
    o.noop_application = true;
    o.faults.drop = 0.05;
    o.config.max_block_txs = 16;
    SimCluster cluster(o);
    auto& client = cluster.network_client({.retry_ms = 200});
    std::map<Hash256, std::optional<Result<Committed>>> outcomes;
    auto send = [&](std::uint64_t client_id, std::uint64_t value) {
        const Tx tx = cluster.command(client_id, value);
        outcomes[tx.id()];
        client.submit(
            tx, [&outcomes, id = tx.id()](Result<Committed> r) { outcomes[id] = std::move(r); });
    };
    auto all_done = [&] {
        for (const auto& [id, r] : outcomes)
            if (!r) return false;
        return true;
    };
    for (std::uint64_t i = 0; i < 120; ++i)
        send(i % 5, i);
    // A signed transfer beside them: the ledger still runs its own kinds.
    const Tx transfer = cluster.transfer(0, 1, 10);
    cluster.submit_with_retry(transfer, 1);
    REQUIRE(cluster.network().run_until(all_done, 60'000));
    for (const auto& [id, r] : outcomes) {
        REQUIRE_MESSAGE(r->ok(), r->error().message());
        CHECK((*r)->result.empty()); // the no-op application answers with nothing
    }
    REQUIRE(cluster.run_until_committed({transfer.id()}, cluster.network().now() + 30'000));
    CHECK(client.stats().committed == 120);
    for (ReplicaId id = 0; id < cluster.size(); ++id)
        CHECK(cluster.application(id)->executed_commands() == 120);
    REQUIRE(cluster.check_safety().ok());
    auto converged = cluster.check_converged();
    REQUIRE_MESSAGE(converged.ok(), converged.error().message());

    // A restarted replica's fresh application is rebuilt from the stored blocks, and keeps
    // up with the commands ordered after.
    cluster.crash(2);
    CHECK(cluster.application(2) == nullptr);
    for (std::uint64_t i = 0; i < 30; ++i)
        send(7, 1000 + i);
    REQUIRE(cluster.network().run_until(all_done, cluster.network().now() + 60'000));
    cluster.restart(2);
    CHECK(cluster.application(2)->executed_commands() > 0);
    for (std::uint64_t i = 0; i < 30; ++i)
        send(8, 2000 + i);
    REQUIRE(cluster.network().run_until(all_done, cluster.network().now() + 60'000));
    REQUIRE(cluster.network().run_until(
        [&] {
            for (ReplicaId id = 1; id < cluster.size(); ++id)
                if (cluster.replica(id)->height() != cluster.replica(0)->height()) return false;
            return true;
        },
        cluster.network().now() + 60'000));
    converged = cluster.check_converged();
    REQUIRE_MESSAGE(converged.ok(), converged.error().message());
    CHECK(cluster.application(2)->executed_commands() == 180);
    CHECK(cluster.application(2)->state_digest() == cluster.application(0)->state_digest());
}

TEST_CASE("consensus-only: an application ahead of the store is refused") {
    TestChain c = make_test_chain(chain, 4, 1);
    c.genesis.params.commands = noop_command_rules();
    net::SimNetwork net(1);
    Shim shim;
    MemoryStore store;
    auto replica =
        pbft::Replica::create(0, c.replica_keys[0], c.genesis, {}, net.attach(0, shim), store);
    REQUIRE(replica.ok());
    NoopApplication app;
    Ledger ledger = *c.genesis.ledger();
    app.execute(next_block(ledger, {command(1, 0)}));
    CHECK(code_of((*replica)->set_application(&app)) == code_name(Errc::invalid_argument));
    NoopApplication fresh;
    CHECK((*replica)->set_application(&fresh).ok());
}

TEST_CASE("command: a memory store finds each of thousands of stored commands") {
    TestChain c = make_test_chain(chain, 4, 2);
    c.genesis.params.commands = noop_command_rules();
    auto genesis = c.genesis.build();
    REQUIRE(genesis.ok());
    auto ledger = c.genesis.ledger();
    REQUIRE(ledger.ok());
    MemoryStore store;
    REQUIRE(store.append(genesis->block, genesis->delta).ok());
    std::vector<Tx> stored;
    // 3,000 ids: the store's index grows several times on the way.
    for (std::uint64_t nonce = 0; nonce < 60; ++nonce) {
        std::vector<Tx> txs;
        for (std::uint8_t client = 1; client <= 50; ++client)
            txs.push_back(command(client, nonce));
        auto built = ledger->build_block(txs, 0, 0, 1'700'000'000'001ull + nonce);
        REQUIRE(built.rejected.empty());
        REQUIRE(store.append(built.block, built.delta).ok());
        ledger->commit(built.delta);
        stored.insert(stored.end(), txs.begin(), txs.end());
    }
    for (std::size_t i = 0; i < stored.size(); ++i) {
        auto record = store.tx_by_id(stored[i].id());
        REQUIRE(record.ok());
        CHECK(record->tx == stored[i]);
        CHECK(record->height == i / 50 + 1);
        CHECK(record->index == i % 50);
    }
    CHECK(store.tx_by_id(command(51, 0).id()).code() == Errc::not_found);
}
