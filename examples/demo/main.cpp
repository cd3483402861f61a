// popchain_demo: the life of a small marketplace chain, end to end on a SQLite store.
//
// Creates wallets (keys saved encrypted), mints top-ups, makes a payment, holds a purchase in
// escrow until the buyer confirms, commits every block to SQLite, then prints the chain and
// the balances, and reopens the store to show the state survived. Exits non-zero if any
// step or check fails.
//
//   popchain_demo [--dir DIR]      (default: a new temporary directory)
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/keystore.hpp>
#include <popchain/ledger.hpp>
#include <popchain/sqlite_store.hpp>
#include <popchain/wallet.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

namespace fs = std::filesystem;
using namespace popchain;

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "demo: %s\n", what.c_str());
    std::exit(1);
}

template <class T>
T must(Result<T> r, const char* step) {
    if (!r) die(std::string(step) + ": " + r.error().message());
    return std::move(r).value();
}
void must(Result<void> r, const char* step) {
    if (!r) die(std::string(step) + ": " + r.error().message());
}

std::string short_hex(const Hash256& h) {
    return to_hex(h).substr(0, 16);
}

struct Chain {
    Ledger ledger;
    BlockStore& store;
    std::map<Address, std::string> names;

    // Builds the next block from `txs`, insists every tx is accepted, and commits it.
    void commit(const std::vector<Tx>& txs, const char* what) {
        BuiltBlock built = ledger.build_block(txs, 0, 0, 0);
        for (const auto& r : built.rejected)
            die(std::string(what) + ": " + r.error.message());
        must(store.append(built.block, built.delta), "store block");
        ledger.commit(built.delta);
        std::printf("committed block %llu (%s): %s\n",
                    static_cast<unsigned long long>(built.block.header.height),
                    short_hex(built.block.hash()).c_str(), what);
    }
    std::string name(const Address& a) const {
        auto it = names.find(a);
        return it == names.end() ? a.to_string().substr(0, 12) : it->second;
    }
};

void print_chain(const Chain& chain) {
    std::printf("\nchain %s, %llu blocks after genesis\n", chain.ledger.params().chain_id.c_str(),
                static_cast<unsigned long long>(chain.ledger.height()));
    for (std::uint64_t h = 0; h <= chain.ledger.height(); ++h) {
        Block b = must(chain.store.block_at(h), "read block");
        std::printf("  #%llu %s prev %s txs %zu\n", static_cast<unsigned long long>(h),
                    short_hex(b.hash()).c_str(), short_hex(b.header.prev_hash).c_str(),
                    b.txs.size());
        for (std::size_t i = 0; i < b.txs.size(); ++i) {
            const Tx& tx = b.txs[i];
            bool proven = merkle_verify(b.header.tx_root, tx.id(), b.prove_tx(i));
            std::string what = tx.to.is_zero()
                                   ? "trade " + short_hex(tx.trade_id).substr(0, 8)
                                   : chain.name(tx.to) + " " + std::to_string(tx.amount);
            std::printf("      %-14s %-9s -> %-16s txid %s  merkle proof %s\n",
                        tx_kind_name(tx.kind), chain.name(tx.from).c_str(), what.c_str(),
                        short_hex(tx.id()).c_str(), proven ? "ok" : "FAILED");
            if (!proven) die("merkle proof failed");
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    fs::path dir;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--dir" && i + 1 < argc) {
            dir = argv[++i];
        } else if (arg == "--help" || arg == "-h") {
            std::printf("usage: popchain_demo [--dir DIR]\n");
            return 0;
        } else {
            die("unknown argument " + arg + " (try --help)");
        }
    }
    if (dir.empty()) {
        char tmpl[] = "/tmp/popchain-demo-XXXXXX";
        if (!mkdtemp(tmpl)) die("cannot create a temporary directory");
        dir = tmpl;
    }
    fs::create_directories(dir);
    if (fs::exists(dir / "chain.db")) die((dir / "chain.db").string() + " exists; use a new --dir");
    std::printf("demo directory: %s\n", dir.c_str());

    // Wallets: each key is saved encrypted under a passphrase (0600 files), then loaded back.
    Keystore keystore(dir / "keys");
    keystore.set_kdf_msec(20);
    const std::string passphrase = "demo passphrase";
    std::map<std::string, Wallet> w;
    for (const char* alias : {"authority", "alice", "bob", "carol"}) {
        must(keystore.create(alias, passphrase), "create wallet");
        w.emplace(alias, must(keystore.load(alias, passphrase), "load wallet"));
        std::printf("wallet %-9s %s\n", alias, w.at(alias).address().to_string().c_str());
    }

    Genesis genesis;
    genesis.params = {"popchain-demo", w.at("authority").public_key(), {}};
    for (std::uint32_t id = 0; id < 4; ++id)
        genesis.replicas.push_back({id, SigningKey::generate().public_key(), ""});
    BuiltBlock g = must(genesis.build(), "genesis");

    auto store = must(SqliteStore::open(dir / "chain.db"), "open store");
    must(store->append(g.block, g.delta), "store genesis");
    Chain chain{must(genesis.ledger(), "genesis ledger"), *store, {}};
    for (const auto& [alias, wallet] : w)
        chain.names[wallet.address()] = alias;

    const std::string& cid = genesis.params.chain_id;
    const Wallet& admin = w.at("authority");
    const Hash256 trade = sha256(std::string_view("trade: bob buys carol's bicycle"));
    chain.commit({admin.mint(cid, 0, w.at("alice").address(), 1000),
                  admin.mint(cid, 1, w.at("bob").address(), 500)},
                 "admin approves top-ups: alice 1000, bob 500");
    chain.commit({w.at("alice").transfer(cid, 0, w.at("carol").address(), 200)},
                 "alice pays carol 200");
    chain.commit({w.at("bob").escrow_open(cid, 0, w.at("carol").address(), 300, trade,
                                          chain.ledger.height() + 100)},
                 "bob buys carol's bicycle: 300 held in escrow");
    chain.commit({w.at("bob").escrow_release(cid, 1, trade)},
                 "bob confirms receipt: escrow released to carol");

    print_chain(chain);

    std::printf("\nbalances\n");
    std::uint64_t sum = 0;
    for (const auto& [alias, wallet] : w) {
        Account a = chain.ledger.account(wallet.address());
        sum += a.balance;
        std::printf("  %-9s %6llu  (next nonce %llu)\n", alias.c_str(),
                    static_cast<unsigned long long>(a.balance),
                    static_cast<unsigned long long>(a.nonce));
    }
    std::printf("  sum       %6llu  total minted %llu  -> %s\n",
                static_cast<unsigned long long>(sum),
                static_cast<unsigned long long>(chain.ledger.state().total_minted),
                sum == chain.ledger.state().total_minted ? "balances add up" : "MISMATCH");
    must(chain.ledger.check_invariants(), "invariants");
    if (sum != chain.ledger.state().total_minted) die("balances do not add up");

    // Reopen the store as a restarted node would, and compare with the live ledger.
    Hash256 live = chain.ledger.state_digest();
    store.reset();
    auto reopened = must(SqliteStore::open(dir / "chain.db"), "reopen store");
    Ledger restored(genesis.params, must(reopened->load_state(), "load state"));
    std::printf("reopened store: height %llu, state digest %s -> %s\n",
                static_cast<unsigned long long>(restored.height()),
                short_hex(restored.state_digest()).c_str(),
                restored.state_digest() == live ? "identical" : "DIFFERENT");
    if (restored.state_digest() != live) die("reopened state differs");
    return 0;
}
