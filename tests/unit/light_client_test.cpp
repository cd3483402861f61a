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
        g.params = {"light", authority.public_key(), {}};
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

namespace {

// A chain whose block 2 adds replica 4 and removes replica 0: with checkpoint_interval 4,
// checkpoints up to 4 are signed by {0,1,2,3} and later ones by {1,2,3,4}.
struct ConfigChain {
    static constexpr std::uint32_t interval = 4;
    std::vector<SigningKey> keys; // replica r's key is keys[r], members or not
    std::vector<ReplicaInfo> genesis_set;
    std::vector<Block> blocks;

    ConfigChain() {
        for (std::uint8_t i = 0; i < 5; ++i)
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x60 + i)));
        for (std::uint32_t i = 0; i < 4; ++i)
            genesis_set.push_back({i, keys[i].public_key(), ""});
        Wallet authority("authority", key_from_byte(0x70));
        Wallet alice("alice", key_from_byte(0x71));
        Genesis g;
        g.params = {"light", authority.public_key(), {}};
        g.replicas = genesis_set;
        auto built = g.build();
        REQUIRE(built.ok());
        blocks.push_back(built->block);
        Ledger ledger = g.ledger().value();
        std::uint64_t nonce = 0;
        for (std::uint64_t h = 1; h <= 10; ++h) {
            std::vector<Tx> txs{authority.mint("light", nonce++, alice.address(), h)};
            if (h == 2) {
                ConfigChange add{ConfigChange::Action::add_replica, {4, keys[4].public_key(), ""}};
                ConfigChange remove{ConfigChange::Action::remove_replica, {0, {}, ""}};
                txs.push_back(authority.config("light", nonce++, add));
                txs.push_back(authority.config("light", nonce++, remove));
            }
            BuiltBlock b = ledger.build_block(txs, 0, 0, 0);
            REQUIRE(b.rejected.empty());
            REQUIRE(ledger.apply(b.block).ok());
            blocks.push_back(b.block);
        }
    }

    CommitProof proof(std::uint64_t from, std::uint64_t checkpoint,
                      std::vector<ReplicaId> signers) const {
        CommitProof p;
        for (std::uint64_t h = from + 1; h <= checkpoint; ++h)
            p.headers.push_back(blocks[h].header);
        for (ReplicaId r : signers)
            p.certificate.checkpoints.push_back(
                sign_checkpoint({r,
                                 checkpoint,
                                 blocks[checkpoint].hash(),
                                 blocks[checkpoint].header.state_root,
                                 {}},
                                keys[r]));
        return p;
    }
};

} // namespace

TEST_CASE("light client across a membership change: the history learnt from config blocks "
          "picks the set for each certificate") {
    ConfigChain c;
    auto made = ReplicaSetHistory::create(c.genesis_set, ConfigChain::interval);
    REQUIRE(made.ok());
    ReplicaSetHistory history = std::move(made).value();

    // Before the change is learnt, a certificate of the new set does not verify (replica 4
    // is a stranger), while the old set's certificates do.
    const CommitProof new_set_proof = c.proof(6, 8, {2, 3, 4});
    CHECK(code_of(verify_block(c.blocks[6], new_set_proof, history)) ==
          code_name(Errc::unknown_peer));
    CHECK(code_of(verify_block(c.blocks[3], c.proof(3, 4, {0, 1, 2}), history)) == "ok");

    // A config block proven above its boundary (by the set it introduces) cannot be learnt,
    // and a failed attempt changes nothing.
    CHECK_FALSE(history.learn(c.blocks[2], c.proof(2, 8, {0, 1, 2})).ok());
    CHECK(history.learnt_height() == 0);
    CHECK(history.set_for(5) == c.genesis_set);
    // Nor can a config block with a forged certificate.
    CommitProof forged = c.proof(2, 4, {0, 1, 2});
    forged.certificate.checkpoints[0].signature.bytes[3] ^= 1;
    CHECK_FALSE(history.learn(c.blocks[2], forged).ok());
    CHECK(history.set_for(5) == c.genesis_set);

    // Learnt with the boundary certificate of the old set: the new set from height 5 on.
    REQUIRE(code_of(history.learn(c.blocks[2], c.proof(2, 4, {0, 1, 2}))) == "ok");
    CHECK(history.learnt_height() == 2);
    CHECK(history.set_for(4) == c.genesis_set);
    const std::vector<ReplicaInfo> next = history.set_for(5);
    REQUIRE(next.size() == 4);
    CHECK(next.front().id == 1);
    CHECK(next.back().id == 4);
    CHECK(history.set_for(1000) == next);

    CHECK(code_of(verify_block(c.blocks[6], new_set_proof, history)) == "ok");
    CHECK(code_of(verify_block(c.blocks[9], c.proof(9, 10, {1, 3, 4}), history)) == "ok");
    // Blocks below the boundary still verify under the old set ...
    CHECK(code_of(verify_block(c.blocks[1], c.proof(1, 4, {0, 2, 3}), history)) == "ok");
    // ... and the removed replica 0 no longer counts above it: with replicas 0, 1, 2 only two
    // of the needed three are members.
    CHECK_FALSE(verify_block(c.blocks[6], c.proof(6, 8, {0, 1, 2}), history).ok());

    // Blocks are learnt in increasing height only.
    CHECK(code_of(history.learn(c.blocks[2], c.proof(2, 4, {0, 1, 2}))) ==
          code_name(Errc::wrong_height));
    CHECK(code_of(history.learn(c.blocks[7], c.proof(7, 8, {1, 2, 4}))) == "ok");
    CHECK(history.learnt_height() == 7);
    CHECK(history.set_for(9) == next); // a block without config changes nothing

    CHECK_FALSE(ReplicaSetHistory::create({}, 4).ok());
    CHECK_FALSE(ReplicaSetHistory::create(c.genesis_set, 0).ok());
}
