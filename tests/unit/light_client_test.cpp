// verify_block: a block is proven committed by the headers up to a checkpoint and that
// checkpoint's certificate, checked with nothing but the replica set.
#include <popchain/genesis.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/wallet.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace popchain;
using namespace popchain::pbft;
using namespace popchain::test;

namespace {

struct Chain {
    std::vector<SigningKey> replica_keys;
    std::vector<ReplicaInfo> replicas;
    std::vector<Block> blocks; // index = height, 0 is genesis

    Chain() {
        for (std::uint8_t i = 0; i < 4; ++i) {
            replica_keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x60 + i)));
            replicas.push_back({i, replica_keys.back().public_key(), ""});
        }
        Wallet authority("authority", key_from_byte(0x70));
        Wallet alice("alice", key_from_byte(0x71));
        Genesis g;
        g.params = {"light", authority.public_key()};
        g.replicas = replicas;
        auto built = g.build();
        REQUIRE(built.ok());
        blocks.push_back(built->block);
        Ledger ledger = g.ledger().value();
        for (std::uint64_t i = 0; i < 5; ++i) {
            BuiltBlock b =
                ledger.build_block({authority.mint("light", i, alice.address(), 10 + i)}, 0, 0, 0);
            REQUIRE(b.rejected.empty());
            REQUIRE(ledger.apply(b.block).ok());
            blocks.push_back(b.block);
        }
    }

    // A certificate for the block at `height`, signed by the replicas `signers`.
    CheckpointCertificate certify(std::uint64_t height, std::vector<ReplicaId> signers) const {
        CheckpointCertificate cert;
        for (ReplicaId r : signers)
            cert.checkpoints.push_back(sign_checkpoint(
                {r, height, blocks[height].hash(), blocks[height].header.state_root, {}},
                replica_keys[r]));
        return cert;
    }
    CommitProof proof(std::uint64_t from, std::uint64_t checkpoint) const {
        CommitProof p;
        for (std::uint64_t h = from + 1; h <= checkpoint; ++h)
            p.headers.push_back(blocks[h].header);
        p.certificate = certify(checkpoint, {0, 2, 3});
        return p;
    }
};

} // namespace

TEST_CASE("light client: every block below a certified checkpoint verifies") {
    Chain c;
    for (std::uint64_t h = 1; h <= 5; ++h) {
        CAPTURE(h);
        CHECK(code_of(verify_block(c.blocks[h], c.proof(h, 5), c.replicas)) == "ok");
    }
}

TEST_CASE("light client: any break in the proof is refused") {
    Chain c;
    const Block& block = c.blocks[2];
    SUBCASE("a transaction changed after the fact") {
        Block edited = block;
        edited.txs[0].amount += 1;
        CHECK(code_of(verify_block(edited, c.proof(2, 5), c.replicas)) ==
              code_name(Errc::bad_tx_root));
    }
    SUBCASE("a header missing or out of order") {
        CommitProof p = c.proof(2, 5);
        p.headers.erase(p.headers.begin() + 1);
        CHECK(code_of(verify_block(block, p, c.replicas)) == code_name(Errc::wrong_height));
        p = c.proof(2, 5);
        std::swap(p.headers[0], p.headers[1]);
        CHECK_FALSE(verify_block(block, p, c.replicas).ok());
    }
    SUBCASE("a header that does not chain") {
        CommitProof p = c.proof(2, 5);
        p.headers[1].prev_hash.bytes[0] ^= 1;
        CHECK(code_of(verify_block(block, p, c.replicas)) == code_name(Errc::wrong_prev_hash));
    }
    SUBCASE("a certificate for another height or block") {
        CommitProof p = c.proof(2, 5);
        p.certificate = c.certify(4, {0, 1, 2});
        CHECK_FALSE(verify_block(block, p, c.replicas).ok());
        CHECK_FALSE(verify_block(c.blocks[1], c.proof(2, 5), c.replicas).ok()); // not the parent
    }
    SUBCASE("too few signers, a repeated signer, a stranger, a forged signature") {
        CommitProof p = c.proof(2, 5);
        p.certificate = c.certify(5, {0, 1});
        CHECK_FALSE(verify_block(block, p, c.replicas).ok());
        p.certificate = c.certify(5, {0, 1, 1});
        CHECK_FALSE(verify_block(block, p, c.replicas).ok());
        std::vector<ReplicaInfo> three(c.replicas.begin(), c.replicas.begin() + 3);
        CHECK(code_of(verify_block(block, c.proof(2, 5), three)) == code_name(Errc::unknown_peer));
        p = c.proof(2, 5);
        p.certificate.checkpoints[1].signature.bytes[5] ^= 1;
        CHECK(code_of(verify_block(block, p, c.replicas)) == code_name(Errc::bad_signature));
    }
}
