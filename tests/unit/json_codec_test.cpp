// The JSON forms of txs, blocks and proofs: lossless round trips on real signed values, and
// refusal (with the bad field named) of everything that is not exactly the documented shape.
#include <popchain/api/json.hpp>
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/wallet.hpp>

#include <nlohmann/json.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace popchain;
using namespace popchain::api;
using namespace popchain::test;

namespace {

const char* const chain = "json-test";

struct Fixture {
    Wallet authority{"authority", key_from_byte(0x31)};
    Wallet alice{"alice", key_from_byte(0x32)};
    Wallet bob{"bob", key_from_byte(0x33)};
    std::vector<SigningKey> replica_keys;
    std::vector<ReplicaInfo> replicas;
    std::vector<Block> blocks;

    Fixture() {
        for (std::uint8_t i = 0; i < 4; ++i) {
            replica_keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x40 + i)));
            replicas.push_back(
                {i, replica_keys.back().public_key(), "127.0.0.1:700" + std::to_string(i)});
        }
        Genesis g;
        g.params = {chain, authority.public_key(), {}};
        g.replicas = replicas;
        auto built = g.build();
        REQUIRE(built.ok());
        blocks.push_back(built->block);
        Ledger ledger = g.ledger().value();
        Hash256 trade = sha256(std::string_view("trade-1"));
        std::vector<std::vector<Tx>> batches = {
            {authority.mint(chain, 0, alice.address(), 1000, to_bytes("top-up"))},
            {alice.transfer(chain, 0, bob.address(), 25),
             alice.escrow_open(chain, 1, bob.address(), 100, trade, 50, to_bytes("order 7"))},
            {alice.escrow_release(chain, 2, trade)},
        };
        for (const auto& batch : batches) {
            BuiltBlock b = ledger.build_block(batch, 0, 1, 1'700'000'000'000);
            REQUIRE(b.rejected.empty());
            // A commit certificate, so the round trip covers it too.
            b.block.certificate.view = 0;
            for (std::uint32_t r : {0u, 2u, 3u})
                b.block.certificate.signatures.push_back({r, replica_keys[r].sign(b.block.hash())});
            REQUIRE(ledger.apply(b.block).ok());
            blocks.push_back(b.block);
        }
    }

    // One signed tx of every kind.
    std::vector<Tx> every_kind() const {
        Hash256 trade = sha256(std::string_view("trade-2"));
        ConfigChange change{ConfigChange::Action::add_replica,
                            {9, key_from_byte(0x49).public_key(), "10.0.0.9:7000"}};
        return {alice.transfer(chain, 3, bob.address(), 1, to_bytes("memo \x01\xff")),
                authority.mint(chain, 1, bob.address(), 18'446'744'073'709'551'615ull),
                alice.escrow_open(chain, 4, bob.address(), 7, trade, 99),
                alice.escrow_release(chain, 5, trade),
                bob.escrow_refund(chain, 0, trade),
                authority.config(chain, 2, change)};
    }
};

std::string message_of(const Error& e) {
    return e.message();
}

// Parses `text` as a tx and returns the error message ("ok" when it parsed).
std::string tx_error(const json& j) {
    auto r = tx_from_json(j);
    return r.ok() ? "ok" : message_of(r.error());
}

} // namespace

TEST_CASE("json: every kind of signed tx round-trips and still verifies") {
    Fixture f;
    for (const Tx& tx : f.every_kind()) {
        CAPTURE(tx_kind_name(tx.kind));
        json j = to_json(tx);
        CHECK(j["id"] == to_hex(tx.id()));
        CHECK(j["kind"] == tx_kind_name(tx.kind));
        CHECK(j["from"] == tx.from.to_string());
        // Through text, as it travels over HTTP.
        auto reparsed = parse_json(j.dump());
        REQUIRE(reparsed.ok());
        auto back = tx_from_json(*reparsed);
        REQUIRE_MESSAGE(back.ok(), back.error().message());
        CHECK(*back == tx);
        CHECK(back->id() == tx.id());
        CHECK(code_of(check_tx_stateless(*back, chain)) == "ok");
    }
}

TEST_CASE("json: the id is optional in input but must match when given") {
    Fixture f;
    Tx tx = f.every_kind()[0];
    json j = to_json(tx);
    j.erase("id");
    CHECK(tx_error(j) == "ok");
    j["id"] = to_hex(sha256(std::string_view("something else")));
    CHECK(tx_error(j).find("tx.id: does not match") != std::string::npos);
}

TEST_CASE("json: real blocks round-trip, certificate included") {
    Fixture f;
    for (const Block& b : f.blocks) {
        CAPTURE(b.header.height);
        json j = to_json(b);
        CHECK(j["hash"] == to_hex(b.hash()));
        CHECK(j["header"]["height"] == b.header.height);
        auto back = block_from_json(*parse_json(j.dump()));
        REQUIRE_MESSAGE(back.ok(), back.error().message());
        CHECK(*back == b);
        CHECK(back->hash() == b.hash());
        for (const Tx& tx : back->txs)
            CHECK(code_of(check_tx_stateless(tx, chain)) == "ok");
    }
    // A block whose content no longer matches the hash it claims is refused.
    json j = to_json(f.blocks[2]);
    j["header"].erase("hash");
    j["header"]["timestamp_ms"] = 1;
    auto r = block_from_json(j);
    REQUIRE(!r.ok());
    CHECK(r.error().detail.find("block.hash: does not match") != std::string::npos);
}

TEST_CASE("json: tx records, Merkle proofs, accounts, escrows and replicas round-trip") {
    Fixture f;
    const Block& b = f.blocks[2];
    TxRecord rec{b.txs[1], b.header.height, 1};
    auto rec_back = tx_record_from_json(to_json(rec));
    REQUIRE(rec_back.ok());
    CHECK(*rec_back == rec);

    MerkleProof proof = b.prove_tx(1);
    auto proof_back = merkle_proof_from_json(*parse_json(to_json(proof).dump()));
    REQUIRE(proof_back.ok());
    CHECK(*proof_back == proof);
    CHECK(merkle_verify(b.header.tx_root, b.txs[1].id(), *proof_back));

    Account acct{975, 3};
    auto acct_back = account_from_json(to_json(f.alice.address(), acct));
    REQUIRE(acct_back.ok());
    CHECK(acct_back->first == f.alice.address());
    CHECK(acct_back->second == acct);

    Escrow e{f.alice.address(), f.bob.address(), 100, 50, 2, EscrowStatus::released};
    Hash256 trade = sha256(std::string_view("trade-1"));
    json ej = to_json(trade, e);
    CHECK(ej["status"] == "released");
    auto e_back = escrow_from_json(ej);
    REQUIRE(e_back.ok());
    CHECK(e_back->first == trade);
    CHECK(e_back->second == e);
    ej["status"] = "lost";
    CHECK(escrow_from_json(ej).error().detail == "escrow.status: unknown escrow status \"lost\"");

    auto r_back = replica_from_json(to_json(f.replicas[2]));
    REQUIRE(r_back.ok());
    CHECK(*r_back == f.replicas[2]);
}

TEST_CASE("json: a commit proof round-trips and the light-client check passes on the copy") {
    Fixture f;
    // Certify the last block; prove block 1 through the headers above it.
    std::uint64_t top = f.blocks.size() - 1;
    pbft::CommitProof proof;
    for (std::uint64_t h = 2; h <= top; ++h)
        proof.headers.push_back(f.blocks[h].header);
    for (std::uint32_t r : {0u, 1u, 3u})
        proof.certificate.checkpoints.push_back(pbft::sign_checkpoint(
            {r, top, f.blocks[top].hash(), f.blocks[top].header.state_root, {}},
            f.replica_keys[r]));
    REQUIRE(code_of(pbft::verify_block(f.blocks[1], proof, f.replicas)) == "ok");

    auto back = commit_proof_from_json(*parse_json(to_json(proof).dump()));
    REQUIRE_MESSAGE(back.ok(), back.error().message());
    CHECK(back->headers == proof.headers);
    CHECK(back->certificate == proof.certificate);
    auto block = block_from_json(to_json(f.blocks[1]));
    REQUIRE(block.ok());
    CHECK(code_of(pbft::verify_block(*block, *back, f.replicas)) == "ok");

    auto cp = checkpoint_from_json(to_json(proof.certificate.checkpoints[0]));
    REQUIRE(cp.ok());
    CHECK(*cp == proof.certificate.checkpoints[0]);
}

TEST_CASE("json: unknown fields are refused, at any depth, naming the field") {
    Fixture f;
    json tx = to_json(f.every_kind()[0]);
    tx["amout"] = 5;
    CHECK(tx_error(tx) == "malformed: tx: unknown field \"amout\"");

    json block = to_json(f.blocks[2]);
    block["txs"][1]["extra"] = true;
    auto r = block_from_json(block);
    REQUIRE(!r.ok());
    CHECK(r.error().detail == "block.txs[1]: unknown field \"extra\"");

    json proof = to_json(f.blocks[2].prove_tx(0));
    proof["root"] = "00";
    CHECK(!merkle_proof_from_json(proof).ok());
}

TEST_CASE("json: bad hex, wrong types, missing fields and out-of-range values are refused") {
    Fixture f;
    const json good = to_json(f.every_kind()[0]);
    auto with = [&](const char* field, json value) {
        json j = good;
        j.erase("id"); // so the id check does not mask the error under test
        j[field] = std::move(value);
        return tx_error(j);
    };
    // bad hex
    CHECK(with("signature", std::string(128, 'g')) == "malformed: tx.signature: not a hex digit");
    CHECK(with("signature", "abc") == "malformed: tx.signature: hex text has odd length");
    CHECK(with("trade_id", "00") == "malformed: tx.trade_id: expected 32 bytes of hex, got 1");
    CHECK(with("payload", "0x00").find("tx.payload") != std::string::npos);
    CHECK(with("from", "pop1234").find("tx.from") != std::string::npos);
    // wrong types
    CHECK(with("amount", "5") == "malformed: tx.amount: must be an integer from 0 to "
                                 "18446744073709551615");
    CHECK(with("amount", 1.5).find("tx.amount") != std::string::npos);
    CHECK(with("payload", 7) == "malformed: tx.payload: must be a hex string");
    CHECK(with("chain_id", json::array()) == "malformed: tx.chain_id: must be a string");
    CHECK(tx_error(json::array()) == "malformed: tx: must be an object");
    // out of range
    CHECK(with("nonce", -1).find("tx.nonce: must be an integer from 0") != std::string::npos);
    {
        json j = good;
        j.erase("id");
        std::string text = j.dump();
        auto pos = text.find("\"amount\":1");
        REQUIRE(pos != std::string::npos);
        text.replace(pos, 10, "\"amount\":18446744073709551616"); // 2^64: parsed as a float
        CHECK(tx_error(*parse_json(text)).find("tx.amount: must be an integer") !=
              std::string::npos);
    }
    CHECK(with("kind", "steal") == "malformed: tx.kind: unknown transaction kind \"steal\"");
    CHECK(with("payload", std::string(2 * (max_payload_bytes + 1), 'a'))
              .find("longer than 4096 bytes") != std::string::npos);
    CHECK(with("chain_id", std::string(max_chain_id_bytes + 1, 'c')).find("tx.chain_id") !=
          std::string::npos);
    json header = to_json(f.blocks[1].header);
    header.erase("hash");
    header["proposer"] = 4294967296ull;
    CHECK(header_from_json(header).error().detail ==
          "header.proposer: must be an integer from 0 to 4294967295");
    json proof = to_json(f.blocks[2].prove_tx(0));
    proof["index"] = 5; // beyond leaf_count
    CHECK(merkle_proof_from_json(proof).error().detail == "proof.index: must be below leaf_count");
    // missing
    for (const char* field : {"kind", "chain_id", "from", "to", "amount", "nonce", "trade_id",
                              "deadline", "payload", "public_key", "signature"}) {
        CAPTURE(field);
        json j = good;
        j.erase(field);
        CHECK(tx_error(j) == std::string("malformed: tx.") + field + ": missing");
    }
    json block = to_json(f.blocks[1]);
    block.erase("certificate");
    CHECK(block_from_json(block).error().detail == "block.certificate: missing");
    // not JSON at all
    CHECK(!parse_json("{\"a\":").ok());
    CHECK(!parse_json("").ok());
}
