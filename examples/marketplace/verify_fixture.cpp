// Writes, as JSON on stdout, a certified transaction exactly as popmarket's answers carry it,
// for the test of the web page's own check (tests/marketplace/verify): a small chain built
// with the library's ledger, a stable checkpoint certificate signed by a quorum of the
// replicas, the transaction answer (check_json), the block answer and the trust root.
//
//   {"trust_root": ..., "check": ..., "block_answer": ..., "outsider": {checkpoint by a key
//    outside the set}, "cpp": {what libpopchain's verify_block says}}
#include "verifier.hpp"

#include <popchain/api/json.hpp>
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/wallet.hpp>

#include <cstdio>
#include <string_view>

using namespace popchain;
using namespace popmarket;

namespace {

SigningKey key_from(std::uint8_t seed) {
    Bytes secret(32, 0);
    secret[0] = 0x11;
    secret[31] = seed;
    return SigningKey::from_secret(secret).value();
}

int fail(const std::string& what) {
    std::fprintf(stderr, "verify_fixture: %s\n", what.c_str());
    return 1;
}

} // namespace

int main() {
    const std::string chain = "fixture-chain";
    std::vector<SigningKey> replica_keys;
    std::vector<ReplicaInfo> replicas;
    for (std::uint8_t i = 0; i < 4; ++i) {
        replica_keys.push_back(key_from(static_cast<std::uint8_t>(0x40 + i)));
        replicas.push_back(
            {i, replica_keys.back().public_key(), "127.0.0.1:" + std::to_string(7000 + i)});
    }
    const SigningKey outsider = key_from(0x50);
    Wallet authority("authority", key_from(0x60));
    Wallet alice("alice", key_from(0x61));
    Wallet bob("bob", key_from(0x62));

    Genesis g;
    g.params = {chain, authority.public_key(), {}};
    g.replicas = replicas;
    g.timestamp_ms = 1'700'000'000'000;
    auto built = g.build();
    if (!built) return fail(built.error().message());
    auto ledger_made = g.ledger();
    if (!ledger_made) return fail(ledger_made.error().message());
    Ledger ledger = std::move(ledger_made).value();
    std::vector<Block> blocks{built->block};

    auto add_block = [&](const std::vector<Tx>& txs) -> bool {
        BuiltBlock b = ledger.build_block(txs, 0, static_cast<std::uint32_t>(blocks.size() % 4),
                                          1'700'000'000'000 + 1000 * blocks.size());
        if (!b.rejected.empty() || !ledger.apply(b.block)) return false;
        blocks.push_back(b.block);
        return true;
    };
    // Block 1 funds alice; block 2 holds five transactions, the third of them the one proven
    // (an escrow with a memo, so every field of a transaction is in play); blocks 3 and 4
    // follow; the checkpoint certificate is for block 4.
    if (!add_block({authority.mint(chain, 0, alice.address(), 1000)})) return fail("block 1");
    const std::string memo = "popmarket-trade:fixture";
    Hash256 trade_id = sha256(std::string_view("fixture trade"));
    if (!add_block({alice.transfer(chain, 0, bob.address(), 5),
                    authority.mint(chain, 1, bob.address(), 7),
                    alice.escrow_open(chain, 1, bob.address(), 120, trade_id, 90, as_bytes(memo)),
                    alice.transfer(chain, 2, bob.address(), 1),
                    authority.mint(chain, 2, alice.address(), 3)}))
        return fail("block 2");
    if (!add_block({bob.transfer(chain, 0, alice.address(), 2)})) return fail("block 3");
    if (!add_block({authority.mint(chain, 3, bob.address(), 9)})) return fail("block 4");

    const std::uint64_t proven = 2, checkpoint = 4;
    const std::uint32_t index = 2;
    pbft::CommitProof proof;
    for (std::uint64_t h = proven + 1; h <= checkpoint; ++h)
        proof.headers.push_back(blocks[h].header);
    // A quorum (3 of 4) signs, not in id order.
    for (std::uint32_t r : {3u, 0u, 1u})
        proof.certificate.checkpoints.push_back(pbft::sign_checkpoint(
            {r, checkpoint, blocks[checkpoint].hash(), blocks[checkpoint].header.state_root, {}},
            replica_keys[r]));
    const pbft::Checkpoint by_outsider = pbft::sign_checkpoint(
        {2, checkpoint, blocks[checkpoint].hash(), blocks[checkpoint].header.state_root, {}},
        outsider);

    const Block& block = blocks[proven];
    TxCheck check;
    check.found = check.verified = true;
    check.tx = block.txs[index];
    check.height = proven;
    check.index = index;
    check.block_hash = to_hex(block.hash());
    check.proof = block.prove_tx(index);
    check.tx_root = block.header.tx_root;
    check.header = block.header;
    check.commit_proof = proof;

    const auto verdict = pbft::verify_block(block, proof, replicas);
    if (!verdict) return fail("the library refuses its own fixture: " + verdict.error().message());
    json out{{"trust_root", trust_root_json(replicas, chain)},
             {"check", check_json(check)},
             {"block_answer",
              {{"block", api::to_json(block)},
               {"verified", true},
               {"reason", ""},
               {"commit_proof", api::to_json(proof)},
               {"replica_set", "genesis"}}},
             {"outsider",
              {{"public_key", to_hex(outsider.public_key())},
               {"checkpoint", api::to_json(by_outsider)}}},
             {"cpp",
              {{"verify_block", "ok"},
               {"quorum", pbft::quorum(static_cast<std::uint32_t>(replicas.size()))},
               {"signed_digests", json::array()}}}};
    for (const auto& cp : proof.certificate.checkpoints)
        out["cpp"]["signed_digests"].push_back(to_hex(cp.signed_digest()));
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
}
