#include <popchain/mempool.hpp>

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

using namespace popchain;

namespace {

const std::string chain = "mempool-test-chain";

Tx transfer(const SigningKey& key, std::uint64_t nonce, std::uint64_t amount = 1,
            const std::string& chain_id = chain, std::size_t memo_bytes = 0) {
    Tx tx;
    tx.kind = TxKind::transfer;
    tx.chain_id = chain_id;
    tx.to.bytes.fill(0x42);
    tx.amount = amount;
    tx.nonce = nonce;
    tx.payload.assign(memo_bytes, 'm');
    return sign_tx(tx, key);
}

// Next nonces as a ledger would report them; senders not listed are at 0.
struct Nonces {
    std::map<Address, std::uint64_t> next;
    Mempool::NextNonceFn fn() const {
        return [this](const Address& a) {
            auto it = next.find(a);
            return it == next.end() ? std::uint64_t{0} : it->second;
        };
    }
};

std::vector<Hash256> ids(const std::vector<Tx>& txs) {
    std::vector<Hash256> out;
    for (const auto& tx : txs)
        out.push_back(tx.id());
    return out;
}

// An add that must fail with `code` and leave the pool exactly as it was.
void check_rejected(Mempool& pool, const Tx& tx, std::uint64_t next_nonce, Errc code,
                    const std::string& message_part = {}) {
    std::size_t size = pool.size();
    std::size_t bytes = pool.bytes();
    bool was_there = pool.contains(tx.id());
    auto added = pool.add(tx, next_nonce);
    CHECK(added.code() == code);
    if (!added.ok() && !message_part.empty())
        CHECK(added.error().message().find(message_part) != std::string::npos);
    CHECK(pool.size() == size);
    CHECK(pool.bytes() == bytes);
    CHECK(pool.contains(tx.id()) == was_there);
}

} // namespace

TEST_SUITE("mempool") {
    TEST_CASE("add, contains, size and bytes; duplicates are already_known") {
        SigningKey alice = SigningKey::generate();
        Mempool pool(chain);
        Tx tx = transfer(alice, 0);
        CHECK(pool.size() == 0);
        REQUIRE(pool.add(tx, 0).ok());
        CHECK(pool.size() == 1);
        CHECK(pool.bytes() == tx.encode().size());
        CHECK(pool.contains(tx.id()));
        CHECK(pool.pending_for(alice.address()) == 1);
        check_rejected(pool, tx, 0, Errc::already_known);
    }

    TEST_CASE("signatures are verified once, through the cache") {
        SigningKey alice = SigningKey::generate();
        SignatureCache cache;
        Mempool pool(chain, &cache);
        Tx tx = transfer(alice, 0);
        REQUIRE(pool.add(tx, 0).ok());
        CHECK(cache.size() == 1);
        // The duplicate is caught before any verification.
        CHECK(pool.add(tx, 0).code() == Errc::already_known);
        CHECK(cache.hits() == 0);
        // The ledger checking the same tx later hits the cache.
        CHECK(check_tx_stateless(tx, chain, &cache).ok());
        CHECK(cache.hits() == 1);
    }

    TEST_CASE("invalid transactions are rejected and not stored") {
        SigningKey alice = SigningKey::generate();
        SignatureCache cache;
        Mempool pool(chain, &cache);
        REQUIRE(pool.add(transfer(alice, 0), 0).ok());

        Tx forged = transfer(alice, 1);
        forged.signature.bytes[10] ^= 1;
        check_rejected(pool, forged, 0, Errc::bad_signature);

        Tx altered = transfer(alice, 1, 5);
        altered.amount = 500; // signed for 5
        check_rejected(pool, altered, 0, Errc::bad_signature);

        check_rejected(pool, transfer(alice, 1, 1, "other-chain"), 0, Errc::wrong_chain_id);
        check_rejected(pool, transfer(alice, 1, 0), 0, Errc::zero_amount);

        Tx impostor = transfer(alice, 1);
        impostor.from = SigningKey::generate().address();
        check_rejected(pool, impostor, 0, Errc::sender_mismatch);

        CHECK(cache.size() == 1); // failures are not cached
        // A valid tx with the same nonce is still welcome.
        CHECK(pool.add(transfer(alice, 1), 0).ok());
    }

    TEST_CASE("nonces below the ledger's, and a second tx for a pending nonce") {
        SigningKey alice = SigningKey::generate();
        Mempool pool(chain);
        check_rejected(pool, transfer(alice, 2), 3, Errc::nonce_reused, "next nonce is 3");
        REQUIRE(pool.add(transfer(alice, 3, 10), 3).ok());
        Tx rival = transfer(alice, 3, 11); // same sender and nonce, different tx
        check_rejected(pool, rival, 3, Errc::nonce_reused, "another pending tx");
        CHECK(pool.take_ready(10, [](const Address&) { return std::uint64_t{3}; }).at(0).amount ==
              10);
    }

    TEST_CASE("a gap holds later nonces back until it is filled") {
        SigningKey alice = SigningKey::generate();
        Mempool pool(chain);
        Nonces nonces;
        std::vector<Tx> txs;
        for (std::uint64_t n = 0; n < 5; ++n)
            txs.push_back(transfer(alice, n));

        REQUIRE(pool.add(txs[0], 0).ok());
        REQUIRE(pool.add(txs[2], 0).ok());
        REQUIRE(pool.add(txs[3], 0).ok());
        CHECK(ids(pool.take_ready(10, nonces.fn())) == ids({txs[0]}));

        nonces.next[alice.address()] = 1; // tx 0 committed elsewhere; 1 still missing
        CHECK(pool.take_ready(10, nonces.fn()).empty());

        REQUIRE(pool.add(txs[1], 1).ok());
        CHECK(ids(pool.take_ready(10, nonces.fn())) == ids({txs[1], txs[2], txs[3]}));
        nonces.next[alice.address()] = 0;
        CHECK(ids(pool.take_ready(10, nonces.fn())) == ids({txs[0], txs[1], txs[2], txs[3]}));
        CHECK(pool.size() == 4); // take_ready removes nothing
    }

    TEST_CASE("in_ready_run: a nonce counts only with every nonce from the next one pending") {
        SigningKey alice = SigningKey::generate();
        SigningKey bob = SigningKey::generate();
        Mempool pool(chain);
        for (std::uint64_t n : {2, 3, 5})
            REQUIRE(pool.add(transfer(alice, n), 2).ok());
        const Address a = alice.address();
        CHECK(pool.in_ready_run(a, 2, 2));
        CHECK(pool.in_ready_run(a, 3, 2));
        CHECK_FALSE(pool.in_ready_run(a, 5, 2)); // 4 is missing
        CHECK_FALSE(pool.in_ready_run(a, 1, 2)); // below the next nonce
        CHECK_FALSE(pool.in_ready_run(a, 3, 1)); // 1 is missing
        CHECK(pool.in_ready_run(a, 5, 5));       // 2-4 executed: 5 is next
        CHECK_FALSE(pool.in_ready_run(a, 6, 5)); // not pending
        CHECK_FALSE(pool.in_ready_run(bob.address(), 0, 0));
        // Agrees with take_ready: what it hands out for alice at next nonce 2 is 2 and 3.
        Nonces nonces;
        nonces.next[a] = 2;
        for (const Tx& tx : pool.take_ready(10, nonces.fn()))
            CHECK(pool.in_ready_run(a, tx.nonce, 2));
        CHECK(pool.take_ready(10, nonces.fn()).size() == 2);
    }

    TEST_CASE("out-of-order arrival is handed out in nonce order") {
        SigningKey alice = SigningKey::generate();
        Mempool pool(chain);
        std::vector<Tx> txs;
        for (std::uint64_t n = 0; n < 4; ++n)
            txs.push_back(transfer(alice, n));
        for (int i = 3; i >= 0; --i)
            REQUIRE(pool.add(txs[static_cast<std::size_t>(i)], 0).ok());
        CHECK(ids(pool.take_ready(10, Nonces{}.fn())) == ids(txs));
    }

    TEST_CASE("senders take turns in arrival order") {
        SigningKey a = SigningKey::generate(), b = SigningKey::generate(),
                   c = SigningKey::generate();
        Mempool pool(chain);
        std::vector<Tx> at, bt, ct;
        for (std::uint64_t n = 0; n < 4; ++n)
            at.push_back(transfer(a, n));
        for (std::uint64_t n = 0; n < 3; ++n)
            bt.push_back(transfer(b, n));
        for (std::uint64_t n = 0; n < 2; ++n)
            ct.push_back(transfer(c, n));
        // b's first tx arrives first, then all of a, then the rest of b, then c.
        REQUIRE(pool.add(bt[0], 0).ok());
        for (const auto& tx : at)
            REQUIRE(pool.add(tx, 0).ok());
        REQUIRE(pool.add(bt[1], 0).ok());
        REQUIRE(pool.add(bt[2], 0).ok());
        for (const auto& tx : ct)
            REQUIRE(pool.add(tx, 0).ok());

        auto ready = pool.take_ready(100, Nonces{}.fn());
        CHECK(ids(ready) == ids({bt[0], at[0], ct[0], bt[1], at[1], ct[1], bt[2], at[2], at[3]}));
        CHECK(ids(pool.take_ready(4, Nonces{}.fn())) == ids({bt[0], at[0], ct[0], bt[1]}));
        CHECK(pool.take_ready(0, Nonces{}.fn()).empty());
        // Same pool, same answer.
        CHECK(ids(pool.take_ready(100, Nonces{}.fn())) == ids(ready));
    }

    TEST_CASE("limits: per sender and the nonce window") {
        SigningKey alice = SigningKey::generate(), bob = SigningKey::generate();
        MempoolLimits limits;
        limits.max_per_sender = 2;
        Mempool pool(chain, nullptr, limits);
        // Nonce 12 is beyond next nonce 10 + window 2.
        check_rejected(pool, transfer(alice, 12), 10, Errc::nonce_gap, "too far ahead");
        REQUIRE(pool.add(transfer(alice, 10), 10).ok());
        REQUIRE(pool.add(transfer(alice, 11), 10).ok());
        check_rejected(pool, transfer(alice, 12), 11, Errc::mempool_full, "max_per_sender");
        CHECK(pool.add(transfer(bob, 0), 0).ok());
    }

    TEST_CASE("limits: total count") {
        MempoolLimits limits;
        limits.max_txs = 3;
        Mempool pool(chain, nullptr, limits);
        for (int i = 0; i < 3; ++i)
            REQUIRE(pool.add(transfer(SigningKey::generate(), 0), 0).ok());
        check_rejected(pool, transfer(SigningKey::generate(), 0), 0, Errc::mempool_full, "max_txs");
    }

    TEST_CASE("limits: total bytes") {
        SigningKey alice = SigningKey::generate(), bob = SigningKey::generate();
        Tx small = transfer(alice, 0);
        MempoolLimits limits;
        limits.max_bytes = 2 * small.encode().size() + 10;
        Mempool pool(chain, nullptr, limits);
        REQUIRE(pool.add(small, 0).ok());
        check_rejected(pool, transfer(bob, 0, 1, chain, 200), 0, Errc::mempool_full, "max_bytes");
        REQUIRE(pool.add(transfer(bob, 0), 0).ok()); // a small one still fits
        CHECK(pool.bytes() == 2 * small.encode().size());
        check_rejected(pool, transfer(SigningKey::generate(), 0), 0, Errc::mempool_full,
                       "max_bytes");
    }

    TEST_CASE("remove_committed drops the block's txs and those it made stale") {
        SigningKey a = SigningKey::generate(), b = SigningKey::generate(),
                   c = SigningKey::generate(), d = SigningKey::generate();
        Mempool pool(chain);
        std::vector<Tx> at;
        for (std::uint64_t n = 0; n < 4; ++n) {
            at.push_back(transfer(a, n));
            REQUIRE(pool.add(at.back(), 0).ok());
        }
        Tx b0 = transfer(b, 0), c0 = transfer(c, 0), d0 = transfer(d, 0, 7);
        for (const Tx* tx : {&b0, &c0, &d0})
            REQUIRE(pool.add(*tx, 0).ok());

        Block block;
        // d's nonce 0 was committed through another replica's tx, not the one pending here.
        block.txs = {at[0], at[1], b0, transfer(d, 0, 8)};
        pool.remove_committed(block);
        CHECK(pool.size() == 3);
        CHECK(pool.bytes() == at[2].encode().size() + at[3].encode().size() + c0.encode().size());
        CHECK_FALSE(pool.contains(at[0].id()));
        CHECK_FALSE(pool.contains(b0.id()));
        CHECK_FALSE(pool.contains(d0.id()));
        CHECK(pool.pending_for(b.address()) == 0);

        Nonces nonces;
        nonces.next[a.address()] = 2;
        CHECK(ids(pool.take_ready(10, nonces.fn())) == ids({at[2], c0, at[3]}));

        // Committed again (a replay of the same block) changes nothing.
        pool.remove_committed(block);
        CHECK(pool.size() == 3);
    }

    TEST_CASE("prune drops what the ledger has moved past") {
        SigningKey a = SigningKey::generate(), b = SigningKey::generate();
        Mempool pool(chain);
        for (std::uint64_t n = 0; n < 3; ++n)
            REQUIRE(pool.add(transfer(a, n), 0).ok());
        Tx b0 = transfer(b, 0);
        REQUIRE(pool.add(b0, 0).ok());
        Nonces nonces;
        nonces.next[a.address()] = 2;
        pool.prune(nonces.fn());
        CHECK(pool.size() == 2);
        CHECK(pool.pending_for(a.address()) == 1);
        CHECK(pool.contains(b0.id()));
        nonces.next[a.address()] = 3;
        nonces.next[b.address()] = 1;
        pool.prune(nonces.fn());
        CHECK(pool.size() == 0);
        CHECK(pool.bytes() == 0);
    }

    TEST_CASE("remove drops one tx; the sender's later ones wait for a replacement") {
        SigningKey a = SigningKey::generate();
        Mempool pool(chain);
        Tx a0 = transfer(a, 0, 1000), a1 = transfer(a, 1);
        REQUIRE(pool.add(a0, 0).ok());
        REQUIRE(pool.add(a1, 0).ok());
        CHECK(pool.remove(a0.id()));
        CHECK_FALSE(pool.remove(a0.id()));
        CHECK(pool.bytes() == a1.encode().size());
        CHECK(pool.take_ready(10, Nonces{}.fn()).empty());
        Tx replacement = transfer(a, 0, 1);
        REQUIRE(pool.add(replacement, 0).ok());
        CHECK(ids(pool.take_ready(10, Nonces{}.fn())) == ids({replacement, a1}));
    }
}
