// crash_writer <db-file> <genesis-seed> [grouped]
//
// Appends valid blocks of random signed transactions to a SqliteStore until it is killed,
// printing each height once append() has returned (that is, once it is committed). With
// `grouped` the store is opened with Durability::at_sync and the writer appends one to four
// blocks per group, printing the last height once sync() has returned. The
// crash test (tests/unit/crash_test.cpp) SIGKILLs it at random instants and checks that the
// store reopens at a block boundary holding everything that was printed.
//
// Keys and genesis come from the seed (crash_chain.hpp), so the test rebuilds the same chain.
#include <popchain/genesis.hpp>
#include <popchain/ledger.hpp>
#include <popchain/sqlite_store.hpp>

#include "crash_chain.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace popchain;

using crash_chain::first_user;
using crash_chain::user_count;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "crash_writer: %s\n", what.c_str());
    std::exit(1);
}

class ChainWriter {
public:
    ChainWriter(std::vector<SigningKey> keys, Ledger ledger, std::uint64_t rng_seed)
        : keys_(std::move(keys)), ledger_(std::move(ledger)), rng_(rng_seed) {}

    // A block of a few random transactions on top of the ledger. Some may be invalid by the
    // time they execute (a spent balance, a nonce after a left-out tx); build_block leaves
    // those out, which is fine: every block it returns is valid.
    BuiltBlock next_block() {
        nonces_.clear();
        closing_.clear();
        std::vector<Tx> txs;
        const auto n = pick(1, 6);
        for (std::uint64_t i = 0; i < n; ++i)
            txs.push_back(random_tx());
        const std::uint64_t height = ledger_.height() + 1;
        const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        BuiltBlock b = ledger_.build_block(txs, height, static_cast<std::uint32_t>(height % 4),
                                           static_cast<std::uint64_t>(now));
        // Stores keep certificates without checking them, so filler stands in for the three
        // signatures: real ones would cost three ECDSA signings per block, fewer blocks per
        // run, and fewer kills landing inside an append.
        b.block.certificate.view = height;
        for (std::uint32_t r = 0; r < 3; ++r) {
            Signature filler;
            const Hash256 half =
                Sha256().update(b.block.hash()).update(to_bytes(std::to_string(r))).finish();
            std::copy(half.bytes.begin(), half.bytes.end(), filler.bytes.begin());
            std::copy(half.bytes.begin(), half.bytes.end(), filler.bytes.begin() + 32);
            b.block.certificate.signatures.push_back({r, filler});
        }
        return b;
    }

    void commit(const StateDelta& delta) { ledger_.commit(delta); }

private:
    std::uint64_t pick(std::uint64_t lo, std::uint64_t hi) {
        return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
    }
    const SigningKey& user(std::uint64_t i) { return keys_[first_user + i]; }

    Tx base(TxKind kind, const SigningKey& from) {
        Tx tx;
        tx.kind = kind;
        tx.chain_id = ledger_.params().chain_id;
        auto [it, fresh] = nonces_.try_emplace(from.address(), 0);
        if (fresh) it->second = ledger_.account(from.address()).nonce;
        tx.nonce = it->second++;
        return tx;
    }

    Tx random_tx() {
        const auto roll = pick(0, 99);
        const auto u = pick(0, user_count - 1);
        const auto v = (u + pick(1, user_count - 1)) % user_count; // != u
        if (roll < 5) {
            Tx tx = base(TxKind::mint, keys_[0]);
            tx.to = user(u).address();
            tx.amount = pick(1, 10'000);
            return sign_tx(tx, keys_[0]);
        }
        if (roll < 20) {
            if (auto tx = close_random_escrow()) return *tx;
        }
        if (roll < 40) {
            Tx tx = base(TxKind::escrow_open, user(u));
            tx.to = user(v).address();
            tx.amount = pick(1, 5'000);
            Bytes id(32);
            for (auto& byte : id)
                byte = static_cast<std::uint8_t>(pick(0, 255));
            tx.trade_id = sha256(id);
            tx.deadline = ledger_.height() + pick(1, 5);
            return sign_tx(tx, user(u));
        }
        Tx tx = base(TxKind::transfer, user(u));
        tx.to = user(v).address();
        tx.amount = pick(1, 10'000);
        return sign_tx(tx, user(u));
    }

    // Releases (buyer) or refunds (seller, or buyer after the deadline) a random open escrow.
    std::optional<Tx> close_random_escrow() {
        std::vector<std::pair<Hash256, Escrow>> open;
        for (const auto& [id, e] : ledger_.state().escrows)
            if (e.status == EscrowStatus::open && !closing_.contains(id)) open.emplace_back(id, e);
        if (open.empty()) return std::nullopt;
        // Hash-map order differs between runs; sort so choice depends on the RNG alone.
        std::sort(open.begin(), open.end(),
                  [](const auto& x, const auto& y) { return x.first < y.first; });
        const auto& [id, e] = open[pick(0, open.size() - 1)];
        closing_.insert(id);
        const SigningKey* signer = nullptr;
        TxKind kind = TxKind::escrow_release;
        const bool expired = ledger_.height() + 1 > e.deadline;
        switch (pick(0, 2)) {
        case 0:
            kind = TxKind::escrow_refund;
            signer = find(e.seller);
            break;
        case 1:
            if (expired) {
                kind = TxKind::escrow_refund;
                signer = find(e.buyer);
                break;
            }
            [[fallthrough]];
        default: signer = find(e.buyer); break;
        }
        if (!signer) return std::nullopt;
        Tx tx = base(kind, *signer);
        tx.trade_id = id;
        return sign_tx(tx, *signer);
    }

    const SigningKey* find(const Address& a) const {
        for (const auto& k : keys_)
            if (k.address() == a) return &k;
        return nullptr;
    }

    std::vector<SigningKey> keys_;
    Ledger ledger_;
    std::mt19937_64 rng_;
    std::map<Address, std::uint64_t> nonces_; // next nonce per sender within the block
    std::set<Hash256> closing_;               // escrows this block already closes
};

} // namespace

int main(int argc, char** argv) {
    const bool grouped = argc == 4 && std::string(argv[3]) == "grouped";
    if (argc != 3 && !grouped) {
        std::fprintf(stderr, "usage: crash_writer <db-file> <genesis-seed> [grouped]\n");
        return 2;
    }
    auto seeded = crash_chain::keys(argv[2]);
    if (!seeded) die("seed gives an invalid key: " + seeded.error().message());
    std::vector<SigningKey> keys = std::move(*seeded);
    const Genesis genesis = crash_chain::genesis(keys);
    auto genesis_block = genesis.build();
    if (!genesis_block) die("genesis: " + genesis_block.error().message());

    // Small batches, so that kills land in appends that write a batch of rows as well as in
    // those that keep their block's rows pending.
    auto opened = SqliteStore::open(
        argv[1], grouped ? SqliteStore::Durability::at_sync : SqliteStore::Durability::each_append,
        SqliteStore::WriteBatching{64, 8});
    if (!opened) die(opened.error().message());
    SqliteStore& store = **opened;

    std::optional<Ledger> ledger;
    if (!store.tip_height()) {
        if (auto r = store.append(genesis_block->block, genesis_block->delta); !r)
            die("storing genesis: " + r.error().message());
        if (auto r = store.sync(); !r) die("syncing genesis: " + r.error().message());
        std::printf("0\n");
        std::fflush(stdout);
        auto l = genesis.ledger();
        if (!l) die(l.error().message());
        ledger.emplace(std::move(*l));
    } else {
        auto stored = store.block_at(0);
        if (!stored) die("reading genesis: " + stored.error().message());
        if (stored->hash() != genesis_block->block.hash())
            die("the store holds another chain (seed differs)");
        auto state = store.load_state();
        if (!state) die("loading state: " + state.error().message());
        ledger.emplace(genesis.params, std::move(*state));
    }

    std::mt19937_64 rng(std::random_device{}());
    ChainWriter writer(std::move(keys), std::move(*ledger), rng());
    for (;;) {
        const int group = grouped ? std::uniform_int_distribution<int>(1, 4)(rng) : 1;
        std::uint64_t height = 0;
        for (int i = 0; i < group; ++i) {
            BuiltBlock b = writer.next_block();
            height = b.block.header.height;
            if (auto r = store.append(b.block, b.delta); !r)
                die("append at height " + std::to_string(height) + ": " + r.error().message());
            writer.commit(b.delta);
        }
        if (auto r = store.sync(); !r)
            die("sync at height " + std::to_string(height) + ": " + r.error().message());
        // Flushed at once: the test must see every height committed before its kill.
        std::printf("%llu\n", static_cast<unsigned long long>(height));
        std::fflush(stdout);
    }
}
