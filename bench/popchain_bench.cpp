// popchain_bench: throughput of the operations a replica's block pipeline is made of.
//
// Prints exactly one JSON object on stdout (progress goes to stderr), so CI and scripts can
// keep it and compare runs. Every figure is a wall-clock rate taken over repeated
// iterations; each measurement is split into several runs and reports the median with the
// min and max beside it, because on a small shared machine single runs are noisy.
//
//   popchain_bench [--quick] [--seconds N]
//
// docs/benchmarks.md explains each figure and holds reference numbers.
#include <popchain/application.hpp>
#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/ledger.hpp>
#include <popchain/merkle.hpp>
#include <popchain/net/sim_cluster.hpp>
#include <popchain/sqlite_store.hpp>
#include <popchain/transaction.hpp>

#include "crypto_backends.hpp"
#include "machine.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifndef POPCHAIN_BENCH_BUILD_TYPE
#define POPCHAIN_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef POPCHAIN_BENCH_BOTAN_VERSION
#define POPCHAIN_BENCH_BOTAN_VERSION "unknown"
#endif
#ifndef POPCHAIN_BENCH_SQLITE_VERSION
#define POPCHAIN_BENCH_SQLITE_VERSION "unknown"
#endif

namespace {

using namespace popchain;
using namespace popchain::bench;
using Json = nlohmann::ordered_json; // keeps keys in the order written, for readable reports
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- options ----

struct Options {
    bool quick = false;
    double seconds = 2.0; // wall-clock budget of one measurement, shared by its runs
    int runs = 3;         // the median of an odd number of runs is a real sample
    // Workload sizes; --quick shrinks them so the whole harness finishes in a few seconds.
    std::size_t block_txs = 1000;   // transactions per "big" block
    std::size_t big_blocks = 8;     // length of the pre-built chain of big blocks
    std::size_t small_blocks = 500; // length of the pre-built chain of 1-tx blocks
    std::size_t accounts = 1000;    // funded senders
    // --store-growth N: measure only the store as N commands grow its tables, once per
    // entry of store_batches (empty: the library's default WriteBatching).
    std::size_t store_growth = 0;
    std::vector<SqliteStore::WriteBatching> store_batches;
};

[[noreturn]] void usage(int code) {
    std::fprintf(
        code == 0 ? stdout : stderr,
        "usage: popchain_bench [--quick] [--seconds N]\n"
        "       popchain_bench --store-growth N [--store-batches T/B,...]\n"
        "  --quick      small workloads (250-tx blocks) and short measurements, < 10 s\n"
        "  --seconds N  wall-clock seconds per measurement (default 2, quick 0.15)\n"
        "  --store-growth N   only the SQLite store's rate as N consensus-only commands\n"
        "                     (blocks of 400 from 2,800 clients) grow its tables\n"
        "  --store-batches L  WriteBatching settings to run it with, one after the other:\n"
        "                     max_pending_txs/max_pending_blocks pairs, comma-separated\n"
        "                     (default: the library's defaults)\n"
        "Prints one JSON object on stdout; progress on stderr.\n");
    std::exit(code);
}

// "8192/128,65536/256" -> WriteBatching settings; a bad list ends the program.
std::vector<SqliteStore::WriteBatching> parse_store_batches(const std::string& list) {
    std::vector<SqliteStore::WriteBatching> out;
    std::size_t at = 0;
    while (at <= list.size()) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        const std::string item = list.substr(at, comma - at);
        unsigned long txs = 0, blocks = 0;
        char tail = 0;
        if (std::sscanf(item.c_str(), "%lu/%lu%c", &txs, &blocks, &tail) != 2 || txs > 1u << 24 ||
            blocks > 1u << 24) {
            std::fprintf(stderr,
                         "popchain_bench: --store-batches wants TXS/BLOCKS[,...], not "
                         "\"%s\"\n",
                         item.c_str());
            usage(2);
        }
        out.push_back({static_cast<std::uint32_t>(txs), static_cast<std::uint32_t>(blocks)});
        at = comma + 1;
    }
    return out;
}

Options parse_options(int argc, char** argv) {
    Options o;
    std::optional<double> seconds;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--quick") {
            o.quick = true;
        } else if (arg == "--seconds" && i + 1 < argc) {
            char* end = nullptr;
            double v = std::strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(v > 0) || v > 3600) {
                std::fprintf(stderr, "popchain_bench: --seconds needs a number in (0, 3600]\n");
                usage(2);
            }
            seconds = v;
        } else if (arg == "--store-growth" && i + 1 < argc) {
            char* end = nullptr;
            const unsigned long long v = std::strtoull(argv[++i], &end, 10);
            if (end == argv[i] || *end != '\0' || v < 4000 || v > 1'000'000'000) {
                std::fprintf(stderr,
                             "popchain_bench: --store-growth needs a count in [4000, 1e9]\n");
                usage(2);
            }
            o.store_growth = static_cast<std::size_t>(v);
        } else if (arg == "--store-batches" && i + 1 < argc) {
            o.store_batches = parse_store_batches(argv[++i]);
        } else if (arg == "--help" || arg == "-h") {
            usage(0);
        } else {
            std::fprintf(stderr, "popchain_bench: unknown argument \"%s\"\n", arg.c_str());
            usage(2);
        }
    }
    if (o.quick) {
        // Smaller blocks too: a run applies at least one whole block with every signature
        // verified, and at 1000 txs that alone would take seconds. Quick figures only show
        // that everything runs; they are not comparable with full ones.
        o.seconds = 0.15;
        o.block_txs = 250;
        o.accounts = 250;
        o.big_blocks = 1;
        o.small_blocks = 40;
    }
    if (seconds) o.seconds = *seconds;
    return o;
}

void progress(const std::string& what) {
    std::cerr << "[bench] " << what << std::endl;
}

// ---- measurement ----

// Rounds to 4 significant digits: the noise between runs is far larger than that, and
// shorter numbers make reports easier to read and diff.
double round4(double v) {
    if (v == 0 || !std::isfinite(v)) return v;
    double scale = std::pow(10.0, 3 - static_cast<int>(std::floor(std::log10(std::fabs(v)))));
    return std::round(v * scale) / scale;
}

double ratio(double a, double b) {
    return b > 0 ? round4(a / b) : 0;
}

// The rates of the runs of one measurement.
struct Rates {
    std::vector<double> runs;

    double median() const {
        std::vector<double> v = runs;
        std::sort(v.begin(), v.end());
        std::size_t n = v.size();
        if (n == 0) return 0;
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    }
    Json json() const {
        return Json{{"median", round4(median())},
                    {"min", round4(*std::min_element(runs.begin(), runs.end()))},
                    {"max", round4(*std::max_element(runs.begin(), runs.end()))},
                    {"runs", runs.size()}};
    }
    Rates scaled(double factor) const {
        Rates out = *this;
        for (double& r : out.runs)
            r *= factor;
        return out;
    }
};

// What one step of a measurement did: `units` of work in `seconds` of timed wall clock.
// Steps time themselves so that untimed preparation (opening a fresh database, resetting a
// ledger) can sit between timed parts.
struct Sample {
    double units = 0;
    double seconds = 0;
};

// Runs `step` until each run has accumulated its share of the budget in timed seconds, and
// returns the rate (units per second) of every run. A run always takes at least one step.
Rates measure(const Options& opt, const std::function<Sample()>& step) {
    Rates rates;
    const double per_run = opt.seconds / opt.runs;
    for (int run = 0; run < opt.runs; ++run) {
        Sample total;
        do {
            Sample s = step();
            total.units += s.units;
            total.seconds += s.seconds;
        } while (total.seconds < per_run);
        rates.runs.push_back(total.units / total.seconds);
    }
    return rates;
}

// measure() for a cheap operation: times batches sized so that the clock's own cost and
// granularity do not show (about 5 ms per batch).
Rates measure_op(const Options& opt, const std::function<void()>& op) {
    auto start = Clock::now();
    op(); // also warms caches and lazily built state
    double once = std::max(seconds_since(start), 1e-9);
    const auto batch = static_cast<std::size_t>(std::clamp(0.005 / once, 1.0, 1e6));
    return measure(opt, [&] {
        auto t0 = Clock::now();
        for (std::size_t i = 0; i < batch; ++i)
            op();
        return Sample{static_cast<double>(batch), seconds_since(t0)};
    });
}

// Keeps the optimiser from discarding a computed value.
template <class T>
void keep(const T& value) {
    asm volatile("" : : "g"(&value) : "memory");
}

// ---- workload: keys, a genesis and pre-built chains ----

template <class T>
T must(Result<T> r, const char* what) {
    if (!r) throw std::runtime_error(std::string(what) + ": " + r.error().message());
    return std::move(r).value();
}

// Deterministic keys, so two runs of the harness execute the same transactions.
SigningKey bench_key(const std::string& label) {
    auto secret = sha256("popchain-bench/key/" + label);
    auto key = SigningKey::from_secret(secret.view());
    return key ? std::move(key).value() : SigningKey::generate(); // ~2^-32 chance
}

// A pre-built chain: genesis plus blocks built by one ledger, ready to be applied by another
// or appended to a store.
struct Chain {
    BuiltBlock genesis;
    std::vector<BuiltBlock> blocks;
    std::size_t tx_count() const {
        std::size_t n = 0;
        for (const auto& b : blocks)
            n += b.block.txs.size();
        return n;
    }
};

class Workload {
public:
    explicit Workload(const Options& opt) : authority_(bench_key("authority")) {
        genesis_.params.chain_id = "popchain-bench";
        genesis_.params.authority = authority_.public_key();
        genesis_.replicas.push_back({0, bench_key("replica-0").public_key(), "127.0.0.1:7000"});
        senders_.reserve(opt.accounts);
        for (std::size_t i = 0; i < opt.accounts; ++i) {
            senders_.push_back(bench_key("sender-" + std::to_string(i)));
            genesis_.balances.emplace_back(senders_.back().address(), 1'000'000'000);
        }
        genesis_block_ = must(genesis_.build(), "genesis");
        apply_delta(genesis_state_, genesis_block_.delta);
    }

    const ChainParams& params() const { return genesis_.params; }
    const State& genesis_state() const { return genesis_state_; }

    // `blocks` blocks of `txs_per_block` transfers each, built with Ledger::build_block.
    // Each transfer moves 1 unit between funded accounts, so every account touched already
    // exists and blocks stay valid however long the chain.
    Chain build_chain(std::size_t blocks, std::size_t txs_per_block) const {
        Chain chain;
        chain.genesis = genesis_block_;
        Ledger builder(genesis_.params, genesis_state_);
        std::vector<std::uint64_t> nonces(senders_.size(), 0);
        std::size_t next_sender = 0;
        for (std::size_t b = 0; b < blocks; ++b) {
            std::vector<Tx> candidates;
            candidates.reserve(txs_per_block);
            for (std::size_t i = 0; i < txs_per_block; ++i) {
                std::size_t from = next_sender++ % senders_.size();
                std::size_t to = (from * 7 + b + 1) % senders_.size();
                if (to == from) to = (to + 1) % senders_.size();
                Tx tx;
                tx.kind = TxKind::transfer;
                tx.chain_id = genesis_.params.chain_id;
                tx.to = senders_[to].address();
                tx.amount = 1;
                tx.nonce = nonces[from]++;
                candidates.push_back(sign_tx(std::move(tx), senders_[from]));
            }
            BuiltBlock built = builder.build_block(candidates, b, 0, 1'700'000'000'000 + b);
            if (!built.rejected.empty())
                throw std::runtime_error("block builder rejected a transfer: " +
                                         built.rejected.front().error.message());
            builder.commit(built.delta);
            chain.blocks.push_back(std::move(built));
        }
        return chain;
    }

private:
    SigningKey authority_;
    Genesis genesis_;
    BuiltBlock genesis_block_;
    State genesis_state_;
    std::vector<SigningKey> senders_;
};

// ---- the measurements ----

Json bench_ecdsa(const Options& opt, double& verify_median) {
    SigningKey key = bench_key("ecdsa");
    // A few hundred distinct messages, so nothing is accidentally cached between calls.
    std::vector<Hash256> digests;
    std::vector<Signature> sigs;
    for (int i = 0; i < 256; ++i) {
        digests.push_back(sha256("message " + std::to_string(i)));
        sigs.push_back(key.sign(digests.back()));
    }
    for (std::size_t i = 0; i < digests.size(); ++i)
        if (!verify(key.public_key(), digests[i], sigs[i]))
            throw std::runtime_error("a fresh signature does not verify");

    progress("ECDSA P-256 sign");
    std::size_t n = 0;
    Rates sign = measure_op(opt, [&] { keep(key.sign(digests[n++ % digests.size()])); });

    progress("ECDSA P-256 verify, 1 thread (" + detail::verify_backend() + ")");
    Rates verify1 = measure_op(opt, [&] {
        std::size_t i = n++ % digests.size();
        if (!verify(key.public_key(), digests[i], sigs[i])) std::abort();
    });
    // The Botan verifier the library used before OpenSSL (still its fallback), right after the
    // one it uses now, so a single report carries the comparison under the same load.
    progress("ECDSA P-256 verify, 1 thread (Botan)");
    Rates verify_botan = measure_op(opt, [&] {
        std::size_t i = n++ % digests.size();
        if (!detail::verify_with_botan(key.public_key(), digests[i], sigs[i])) std::abort();
    });

    // Every hardware thread verifies its own slice of the messages; the rate is all
    // verifications over the wall-clock time from a common start until the last finishes.
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    progress("ECDSA P-256 verify, " + std::to_string(threads) + " threads");
    Rates verify_all = measure(opt, [&] {
        const double window = std::min(opt.seconds / opt.runs, 0.5);
        std::atomic<bool> go{false};
        std::atomic<std::uint64_t> done{0};
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                while (!go.load(std::memory_order_acquire))
                    std::this_thread::yield();
                auto start = Clock::now();
                std::uint64_t count = 0;
                for (std::size_t i = t; seconds_since(start) < window; ++i, ++count)
                    if (!verify(key.public_key(), digests[i % digests.size()],
                                sigs[i % digests.size()]))
                        std::abort();
                done += count;
            });
        }
        auto start = Clock::now();
        go.store(true, std::memory_order_release);
        for (auto& th : pool)
            th.join();
        return Sample{static_cast<double>(done.load()), seconds_since(start)};
    });

    // Decompressing and checking a public key (Botan), which verify() does once per key and
    // thread and then caches: what a verification of a key not seen before costs extra.
    progress("P-256 public key parse");
    Rates parse = measure_op(opt, [&] {
        if (!parse_public_key(key.public_key().view())) std::abort();
    });

    verify_median = verify1.median();
    return Json{{"sign_per_s", sign.json()},
                {"verify_backend", detail::verify_backend()},
                {"verify_per_s", verify1.json()},
                {"verify_botan_per_s", verify_botan.json()},
                {"verify_over_verify_botan", verify_botan.median() > 0
                                                 ? round4(verify1.median() / verify_botan.median())
                                                 : 0.0},
                {"verify_per_s_all_cores", verify_all.json()},
                {"threads", threads},
                {"public_key_parse_per_s", parse.json()}};
}

Json bench_sha256(const Options& opt) {
    progress("SHA-256 over 1 MiB buffers");
    Bytes buffer(1 << 20);
    for (std::size_t i = 0; i < buffer.size(); ++i)
        buffer[i] = static_cast<std::uint8_t>(i * 131);
    Rates per_s = measure_op(opt, [&] { keep(sha256(buffer)); });
    return Json{{"mb_per_s", per_s.scaled(buffer.size() / 1e6).json()},
                {"buffer_bytes", buffer.size()}};
}

Json bench_merkle(const Options& opt) {
    progress("Merkle root of 1000 txids");
    std::vector<Hash256> ids;
    for (int i = 0; i < 1000; ++i)
        ids.push_back(sha256("txid " + std::to_string(i)));
    Rates roots = measure_op(opt, [&] { keep(merkle_root(ids)); });
    return Json{{"roots_per_s", roots.json()}, {"leaves", ids.size()}};
}

// Applies the chain's blocks in order on a ledger that starts at genesis, timing apply()
// only; when the chain runs out a fresh ledger starts again from genesis (untimed).
Rates apply_rate(const Options& opt, const Workload& w, const Chain& chain, SignatureCache* cache) {
    std::optional<Ledger> ledger;
    std::size_t next = chain.blocks.size();
    return measure(opt, [&] {
        if (next == chain.blocks.size()) {
            ledger.emplace(w.params(), w.genesis_state(), cache);
            next = 0;
        }
        const Block& block = chain.blocks[next++].block;
        auto start = Clock::now();
        auto delta = ledger->apply(block);
        double s = seconds_since(start);
        if (!delta) throw std::runtime_error("apply failed: " + delta.error().message());
        return Sample{static_cast<double>(block.txs.size()), s};
    });
}

Json ledger_json(const Rates& tx_per_s, std::size_t block_txs) {
    return Json{{"tx_per_s", tx_per_s.json()},
                {"blocks_per_s", tx_per_s.scaled(1.0 / static_cast<double>(block_txs)).json()}};
}

Json bench_ledger(const Options& opt, const Workload& w, const Chain& chain, double& verified_tx,
                  double& cached_tx) {
    progress("ledger apply, signatures verified");
    Rates verified = apply_rate(opt, w, chain, nullptr);

    progress("ledger apply, warm signature cache");
    SignatureCache cache(chain.tx_count() + 16);
    for (const auto& b : chain.blocks)
        for (const auto& tx : b.block.txs)
            if (!cache.verify(tx.public_key, tx.id(), tx.signature))
                throw std::runtime_error("bench transaction with a bad signature");
    Rates cached = apply_rate(opt, w, chain, &cache);

    verified_tx = verified.median();
    cached_tx = cached.median();
    return Json{{"block_txs", opt.block_txs},
                {"chain_blocks", chain.blocks.size()},
                {"verified", ledger_json(verified, opt.block_txs)},
                {"cached_signatures", ledger_json(cached, opt.block_txs)}};
}

// A fresh directory for one database, removed again by the destructor.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "popchain-bench-XXXXXX");
        if (!mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temp directory");
        path_ = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// Appends the chain's blocks to fresh stores, timing append() only. Each pass opens a new
// database and stores genesis untimed, so every timed append is a real durable commit of a
// block on an otherwise small database.
Rates commit_rate(const Options& opt, const Chain& chain) {
    std::optional<TempDir> dir;
    std::unique_ptr<SqliteStore> store;
    std::size_t next = chain.blocks.size();
    return measure(opt, [&] {
        if (next == chain.blocks.size()) {
            store.reset();
            dir.emplace();
            store = must(SqliteStore::open(dir->path() / "chain.db"), "open store");
            if (auto ok = store->append(chain.genesis.block, chain.genesis.delta); !ok)
                throw std::runtime_error("append genesis: " + ok.error().message());
            next = 0;
        }
        const BuiltBlock& b = chain.blocks[next++];
        auto start = Clock::now();
        auto ok = store->append(b.block, b.delta);
        double s = seconds_since(start);
        if (!ok) throw std::runtime_error("append: " + ok.error().message());
        return Sample{1, s};
    });
}

Json sqlite_json(const Rates& blocks_per_s, std::size_t txs) {
    return Json{{"block_txs", txs},
                {"blocks_per_s", blocks_per_s.json()},
                {"tx_per_s", blocks_per_s.scaled(static_cast<double>(txs)).json()}};
}

Json bench_sqlite(const Options& opt, const Chain& small, const Chain& big, double& one_tx_blocks,
                  double& big_tx) {
    progress("SQLite commit, 1 tx per block");
    Rates one = commit_rate(opt, small);
    progress("SQLite commit, " + std::to_string(opt.block_txs) + " txs per block");
    Rates many = commit_rate(opt, big);
    one_tx_blocks = one.median();
    big_tx = many.median() * static_cast<double>(opt.block_txs);
    return Json{{"temp_dir", std::filesystem::temp_directory_path().string()},
                {"settings", "SqliteStore defaults: WAL, synchronous=FULL, one SQL transaction "
                             "per append"},
                {"one_tx_blocks", sqlite_json(one, 1)},
                {"big_blocks", sqlite_json(many, opt.block_txs)}};
}

Json bench_codec(const Options& opt, const Chain& big) {
    const Block& block = big.blocks.front().block;
    const Bytes encoded = block.encode();
    progress("encode " + std::to_string(block.txs.size()) + "-tx block");
    Rates enc = measure_op(opt, [&] { keep(block.encode()); });
    progress("decode " + std::to_string(block.txs.size()) + "-tx block");
    Rates dec = measure_op(opt, [&] {
        auto decoded = decode_block(encoded);
        if (!decoded) std::abort();
        keep(decoded);
    });
    const double mb = static_cast<double>(encoded.size()) / 1e6;
    return Json{{"block_txs", block.txs.size()},
                {"block_bytes", encoded.size()},
                {"encode_per_s", enc.json()},
                {"decode_per_s", dec.json()},
                {"encode_mb_per_s", enc.scaled(mb).json()},
                {"decode_mb_per_s", dec.scaled(mb).json()}};
}

// ---- store growth (--store-growth) ----

// Bytes this process has passed to read and write system calls (/proc/self/io's rchar and
// wchar): what SQLite asked of the kernel, page-cache hits included. Zeros where unreadable.
struct IoBytes {
    std::uint64_t read = 0;
    std::uint64_t written = 0;
};
IoBytes io_bytes() {
    IoBytes io;
    std::ifstream in("/proc/self/io");
    std::string key;
    std::uint64_t value = 0;
    while (in >> key >> value) {
        if (key == "rchar:") io.read = value;
        if (key == "wchar:") io.written = value;
    }
    return io;
}

// This process's resident memory now (/proc/self/status VmRSS), in MB; 0 where unreadable.
double resident_mb() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024;
    return 0;
}

std::uint64_t directory_bytes(const std::filesystem::path& dir) {
    std::uint64_t total = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir))
        if (entry.is_regular_file()) total += entry.file_size();
    return total;
}

// One pass: a fresh store with `batching`, then blocks of 400 unsigned 8-byte commands, client
// i % 2,800 with nonce i / 2,800 (the TCP bench's consensus-only load), until `commands` are
// stored. Each block's append() and sync() are timed (building it is not), and reported per
// tenth of the commands: the store's rate as its tables grow.
Json store_growth_pass(std::size_t commands, SqliteStore::WriteBatching batching) {
    constexpr std::size_t clients = 2800, block_commands = 400, windows = 10;
    Genesis g;
    g.params.chain_id = "popchain-bench-store";
    g.params.authority = bench_key("authority").public_key();
    g.params.commands = noop_command_rules();
    g.timestamp_ms = 1'700'000'000'000ull;
    for (std::uint32_t i = 0; i < 4; ++i)
        g.replicas.push_back({i, bench_key("replica-" + std::to_string(i)).public_key(), ""});
    Ledger ledger = must(g.ledger(), "genesis ledger");
    const BuiltBlock genesis = must(g.build(), "genesis block");
    TempDir dir;
    auto store =
        must(SqliteStore::open(dir.path() / "chain.db", SqliteStore::Durability::at_sync, batching),
             "open store");
    auto check = [](Result<void> r, const char* what) {
        if (!r) throw std::runtime_error(std::string(what) + ": " + r.error().message());
    };
    check(store->append(genesis.block, genesis.delta), "append genesis");
    check(store->sync(), "sync genesis");

    Json rows = Json::array();
    const std::size_t per_window = std::max<std::size_t>(commands / windows, 1);
    std::size_t made = 0, in_window = 0;
    double timed = 0, slowest = 0;
    IoBytes io_before = io_bytes();
    while (made < commands) {
        std::vector<Tx> txs;
        const std::size_t n = std::min(block_commands, commands - made);
        for (std::size_t k = 0; k < n; ++k, ++made) {
            Bytes payload(8);
            for (std::size_t b = 0; b < 8; ++b)
                payload[b] = static_cast<std::uint8_t>(made >> (8 * b));
            txs.push_back(make_command(g.params.chain_id, command_client(made % clients),
                                       made / clients, std::move(payload)));
        }
        BuiltBlock built = ledger.build_block(txs, 0, 0, g.timestamp_ms + made);
        if (!built.rejected.empty()) throw std::runtime_error("a command was rejected");
        const auto start = Clock::now();
        check(store->append(built.block, built.delta), "append");
        check(store->sync(), "sync");
        const double s = seconds_since(start);
        ledger.commit(built.delta);
        timed += s;
        slowest = std::max(slowest, s);
        in_window += n;
        if (in_window >= per_window || made == commands) {
            const IoBytes io = io_bytes();
            const double count = static_cast<double>(in_window);
            rows.push_back(
                Json{{"commands_stored", made},
                     {"commands_per_s", round4(count / timed)},
                     {"slowest_block_ms", round4(slowest * 1e3)},
                     {"read_bytes_per_command",
                      round4(static_cast<double>(io.read - io_before.read) / count)},
                     {"write_bytes_per_command",
                      round4(static_cast<double>(io.written - io_before.written) / count)}});
            progress("  " + std::to_string(made) + " commands stored, " +
                     std::to_string(static_cast<long>(count / timed)) + " commands/s");
            io_before = io;
            in_window = 0;
            timed = slowest = 0;
        }
    }
    // With the store still open: its batches' rows kept in memory count.
    const double rss_mb = resident_mb();
    const double first = rows.front()["commands_per_s"].get<double>();
    const double last = rows.back()["commands_per_s"].get<double>();
    return Json{{"max_pending_txs", batching.max_pending_txs},
                {"max_pending_blocks", batching.max_pending_blocks},
                {"windows", std::move(rows)},
                {"first_window_per_s", first},
                {"last_window_per_s", last},
                {"last_over_first", ratio(last, first)},
                {"database_mb", round4(static_cast<double>(directory_bytes(dir.path())) / 1e6)},
                {"resident_mb_at_end", round4(rss_mb)}};
}

Json bench_store_growth(const Options& opt) {
    std::vector<SqliteStore::WriteBatching> batches = opt.store_batches;
    if (batches.empty()) batches.push_back(SqliteStore::WriteBatching{});
    Json passes = Json::array();
    for (const auto& b : batches) {
        progress("store growth, " + std::to_string(opt.store_growth) + " commands, batches of " +
                 std::to_string(b.max_pending_txs) + " txs / " +
                 std::to_string(b.max_pending_blocks) + " blocks");
        passes.push_back(store_growth_pass(opt.store_growth, b));
    }
    // Side by side: every pass's rate over the first pass's, at the start and at the end.
    Json ratios = Json::array();
    for (const auto& pass : passes)
        ratios.push_back(
            Json{{"first_window", ratio(pass["first_window_per_s"].get<double>(),
                                        passes[0]["first_window_per_s"].get<double>())},
                 {"last_window", ratio(pass["last_window_per_s"].get<double>(),
                                       passes[0]["last_window_per_s"].get<double>())}});
    return Json{{"temp_dir", std::filesystem::temp_directory_path().string()},
                {"commands", opt.store_growth},
                {"setup", "NoopApplication commands (8 bytes, unsigned), 400 per block from 2,800 "
                          "clients; Durability::at_sync with sync() after every block; the rate "
                          "counts append() + sync() only"},
                {"passes", std::move(passes)},
                {"over_first_pass", std::move(ratios)}};
}

// ---- the report ----

// A simulated cluster of n replicas proposing blocks of at most `block_txs`.
net::SimClusterOptions sim_options(std::uint32_t n, std::uint32_t block_txs) {
    net::SimClusterOptions o;
    o.replicas = n;
    o.config.max_block_txs = block_txs;
    o.config.max_batch_delay_ms = 2;
    o.config.checkpoint_interval = block_txs == 1 ? 128 : 32;
    o.config.watermark_window = 2 * o.config.checkpoint_interval;
    return o;
}

// Runs `count` transactions (`make(cluster, i)`) through a fresh simulated cluster per run,
// submitted round-robin to its replicas and timed until every replica executed them all;
// `height` receives the chain's height after the last run.
Rates run_sim_load(const Options& opt, const net::SimClusterOptions& o, std::size_t count,
                   const std::function<Tx(net::SimCluster&, std::size_t)>& make,
                   const std::string& what, std::uint64_t& height,
                   const std::function<void()>& before_each_run = {},
                   const std::function<void()>& after_each_run = {}) {
    Rates rates;
    for (int run = 0; run < opt.runs; ++run) {
        if (before_each_run) before_each_run();
        progress(what + " (run " + std::to_string(run + 1) + ")");
        net::SimCluster cluster(o);
        std::vector<Tx> batch;
        std::vector<Hash256> ids;
        for (std::size_t i = 0; i < count; ++i) {
            batch.push_back(make(cluster, i));
            ids.push_back(batch.back().id());
        }
        const auto start = Clock::now();
        for (std::size_t i = 0; i < count; ++i)
            if (!cluster.submit(batch[i], static_cast<pbft::ReplicaId>(i % o.replicas)))
                throw std::runtime_error(what + ": a transaction was refused");
        if (!cluster.run_until_committed(ids, cluster.network().now() + 600'000))
            throw std::runtime_error(what + ": not everything committed");
        rates.runs.push_back(static_cast<double>(count) / seconds_since(start));
        height = cluster.replica(0)->height();
        if (after_each_run) after_each_run();
    }
    return rates;
}

// The single-thread verify rate, measured again right before and after each simulated run: this
// machine's speed drifts by more than 10% within minutes, so a bound taken once at the start
// made the fractions swing by as much (0.75 to 1.07 for the same build). The same key every
// time, as bench_ecdsa measures it: the simulated wallets are few and sign many transfers
// each, so the replicas' per-thread key cache holds them.
class VerifyProbe {
public:
    VerifyProbe() : key_(bench_key("verify-probe")) {
        for (int i = 0; i < 64; ++i) {
            digests_.push_back(sha256("probe " + std::to_string(i)));
            sigs_.push_back(key_.sign(digests_.back()));
        }
    }
    // verify/s over one measurement of `seconds` (measure_op, as bench_ecdsa times it).
    double rate(const Options& opt, double seconds) {
        Options once = opt;
        once.seconds = seconds;
        once.runs = 1;
        std::size_t n = 0;
        return measure_op(once,
                          [&] {
                              const std::size_t i = n++ % digests_.size();
                              if (!verify(key_.public_key(), digests_[i], sigs_[i])) std::abort();
                          })
            .median();
    }

private:
    SigningKey key_;
    std::vector<Hash256> digests_;
    std::vector<Signature> sigs_;
};

// The whole pBFT replica (MAC-authenticated agreement, checkpoints, ledger execution with
// every client signature checked once per replica) for n replicas in the deterministic
// simulator: one process, one thread, virtual network time. The figure is transactions
// committed at every replica per wall-clock second; the bound beside it is what the
// signature checks alone allow on one thread (verify/s divided by n, since each replica checks
// each transaction once), with verify/s the mean of rates measured right before and right
// after each run; the fraction is the median of the runs' own fractions.
// One consensus scenario: `txs` signed transfers submitted round-robin to `n` simulated
// replicas, blocks of at most `block_txs`, timed until every replica executed them all.
Json bench_consensus_shape(const Options& opt, VerifyProbe& probe, std::uint32_t n, std::size_t txs,
                           std::uint32_t block_txs) {
    net::SimClusterOptions o = sim_options(n, block_txs);
    o.wallets = txs / 50 + 1; // mempool: at most 64 pending per sender
    std::uint64_t height = 0;
    Rates verify_before, verify_after;
    auto verify_into = [&](Rates* into) {
        return
            [into, &probe, &opt] { into->runs.push_back(probe.rate(opt, opt.quick ? 0.05 : 0.3)); };
    };
    const Rates rates = run_sim_load(
        opt, o, txs,
        [&](net::SimCluster& c, std::size_t i) {
            return c.transfer(i % o.wallets, (i + 1) % o.wallets, 1);
        },
        "consensus: " + std::to_string(n) + " replicas, " + std::to_string(txs) +
            " signed transfers, blocks of <= " + std::to_string(block_txs),
        height, verify_into(&verify_before), verify_into(&verify_after));
    // The unavoidable work: every replica checks every client signature once. Each run is set
    // against the mean of the verify rates measured right before and right after it.
    Rates verify_rates;
    for (std::size_t r = 0; r < rates.runs.size(); ++r)
        verify_rates.runs.push_back((verify_before.runs[r] + verify_after.runs[r]) / 2);
    const double bound = verify_rates.median() / n;
    Rates fractions;
    for (std::size_t r = 0; r < rates.runs.size(); ++r)
        fractions.runs.push_back(rates.runs[r] / (verify_rates.runs[r] / n));
    // Beside it, the ECDSA operations per block at each replica: its client signatures, and
    // per checkpoint one signature of its own plus quorum - 1 checks of others' (later ones
    // are dropped unchecked once the certificate is complete).
    const double per_block_checks =
        static_cast<double>(txs) / static_cast<double>(std::max<std::uint64_t>(height, 1)) +
        pbft::quorum(n) / static_cast<double>(o.config.checkpoint_interval);
    const double blocks_per_tx = static_cast<double>(height) / static_cast<double>(txs);
    Json j{{"replicas", n},
           {"transfers", txs},
           {"max_block_txs", block_txs},
           {"checkpoint_interval", o.config.checkpoint_interval},
           {"blocks", height},
           {"tx_per_s", rates.json()},
           {"blocks_per_s", round4(rates.median() * blocks_per_tx)},
           {"verify_per_s_before_runs", verify_before.json()},
           {"verify_per_s_after_runs", verify_after.json()},
           {"single_thread_crypto_bound_tx_per_s", round4(bound)},
           {"fraction_of_bound", round4(fractions.median())},
           {"fraction_of_bound_runs", fractions.json()},
           {"ecdsa_ops_per_block_and_replica", round4(per_block_checks)}};
    return j;
}

// The cluster sizes of the simulator scenarios: n = 3f+1 for f = 1, 2, 5, 10 and 21.
std::vector<std::uint32_t> sim_sizes(const Options& opt) {
    return opt.quick ? std::vector<std::uint32_t>{4} : std::vector<std::uint32_t>{4, 7, 16, 31, 64};
}

Json bench_consensus(const Options& opt) {
    VerifyProbe probe;
    const std::vector<std::uint32_t> sizes = sim_sizes(opt);
    Json full = Json::object(), one = Json::object();
    for (std::uint32_t n : sizes) {
        const std::size_t txs = opt.quick ? 400 : (n <= 4 ? 4000 : n <= 16 ? 2000 : 800);
        full["n" + std::to_string(n)] = bench_consensus_shape(opt, probe, n, txs, 400);
        const std::size_t singles = opt.quick ? 100 : (n <= 4 ? 1000 : n <= 16 ? 400 : 200);
        one["n" + std::to_string(n)] = bench_consensus_shape(opt, probe, n, singles, 1);
    }
    return Json{{"full_blocks", full}, {"one_tx_blocks", one}};
}

// Consensus-only in the simulator: `count` unsigned 8-byte no-op commands (NoopApplication),
// submitted round-robin to `n` replicas, blocks of at most `block_txs`, timed until every
// replica executed them all. No signatures, so no crypto bound: the figure is what agreement,
// execution and the in-memory store cost on one thread for all n replicas together.
Json bench_consensus_only_shape(const Options& opt, std::uint32_t n, std::size_t count,
                                std::uint32_t block_txs) {
    net::SimClusterOptions o = sim_options(n, block_txs);
    o.noop_application = true;
    const std::size_t clients = count / 50 + 1; // mempool: at most 64 pending per sender
    std::uint64_t height = 0;
    const Rates rates = run_sim_load(
        opt, o, count, [&](net::SimCluster& c, std::size_t i) { return c.command(i % clients, i); },
        "consensus-only: " + std::to_string(n) + " replicas, " + std::to_string(count) +
            " no-op commands, blocks of <= " + std::to_string(block_txs),
        height);
    const double blocks_per_command = static_cast<double>(height) / static_cast<double>(count);
    return Json{{"replicas", n},
                {"commands", count},
                {"max_block_txs", block_txs},
                {"blocks", height},
                {"commands_per_s", rates.json()},
                {"blocks_per_s", round4(rates.median() * blocks_per_command)},
                {"replica_commands_per_s", round4(rates.median() * n)}};
}

Json bench_consensus_only(const Options& opt) {
    const std::vector<std::uint32_t> sizes = sim_sizes(opt);
    Json batched = Json::object(), one = Json::object();
    for (std::uint32_t n : sizes) {
        const std::size_t count = opt.quick ? 800 : (n <= 4 ? 16'000 : n <= 16 ? 8'000 : 2'000);
        batched["n" + std::to_string(n)] = bench_consensus_only_shape(opt, n, count, 400);
        const std::size_t singles = opt.quick ? 100 : (n <= 4 ? 2'000 : n <= 16 ? 500 : 200);
        one["n" + std::to_string(n)] = bench_consensus_only_shape(opt, n, singles, 1);
    }
    return Json{{"batched", batched},
                {"one_per_block", one},
                {"note", "replica_commands_per_s = commands/s x replicas: every replica orders, "
                         "executes and stores every command, all on this one thread"}};
}

int run(const Options& opt) {
    const auto started = Clock::now();
    const unsigned nproc = std::max(1u, std::thread::hardware_concurrency());
    Json report;
    report["machine"] = Json{{"nproc", nproc},
                             {"cpu", cpu_model()},
                             {"compiler", compiler()},
                             {"build_type", POPCHAIN_BENCH_BUILD_TYPE},
                             {"loadavg_1m_at_start", load_average()},
                             {"botan", POPCHAIN_BENCH_BOTAN_VERSION},
                             {"sqlite", POPCHAIN_BENCH_SQLITE_VERSION}};
    report["settings"] = Json{{"quick", opt.quick},
                              {"seconds_per_measurement", opt.seconds},
                              {"runs_per_measurement", opt.runs}};

    Json results;
    if (opt.store_growth > 0) {
        results["sqlite_growth"] = bench_store_growth(opt);
        report["results"] = std::move(results);
        report["total_seconds"] = round4(seconds_since(started));
        std::cout << report.dump(2) << std::endl;
        return 0;
    }
    double verify1 = 0, verified_tx = 0, cached_tx = 0, one_tx_blocks = 0, big_tx = 0;
    results["ecdsa_p256"] = bench_ecdsa(opt, verify1);
    results["sha256"] = bench_sha256(opt);
    results["merkle_root"] = bench_merkle(opt);

    progress("preparing " + std::to_string(opt.big_blocks) + " blocks of " +
             std::to_string(opt.block_txs) + " signed transfers and " +
             std::to_string(opt.small_blocks) + " 1-tx blocks (untimed)");
    Workload workload(opt);
    Chain big = workload.build_chain(opt.big_blocks, opt.block_txs);
    Chain small = workload.build_chain(opt.small_blocks, 1);

    results["ledger_apply"] = bench_ledger(opt, workload, big, verified_tx, cached_tx);
    results["sqlite_commit"] = bench_sqlite(opt, small, big, one_tx_blocks, big_tx);
    results["block_codec"] = bench_codec(opt, big);
    results["consensus_sim"] = bench_consensus(opt);
    results["consensus_only_sim"] = bench_consensus_only(opt);
    report["results"] = std::move(results);

    const double sign1 = report["results"]["ecdsa_p256"]["sign_per_s"]["median"].get<double>();
    report["crypto_bound"] = Json{
        {"verify_per_s_x_cores", round4(verify1 * nproc)},
        {"verify_backend", detail::verify_backend()},
        {"note", "single-thread ECDSA verify/s times hardware threads: the most transactions per "
                 "second any path that verifies every signature once can reach on this machine, "
                 "whatever else it does faster"}};
    report["ratios"] =
        Json{{"verify_over_sign", ratio(verify1, sign1)},
             {"apply_cached_over_verified", ratio(cached_tx, verified_tx)},
             {"apply_verified_tx_over_verify_per_s", ratio(verified_tx, verify1)},
             {"sqlite_1tx_blocks_over_apply_verified_tx", ratio(one_tx_blocks, verified_tx)},
             {"sqlite_big_block_tx_over_apply_verified_tx", ratio(big_tx, verified_tx)}};
    report["total_seconds"] = round4(seconds_since(started));

    std::cout << report.dump(2) << std::endl;
    progress("done in " + std::to_string(seconds_since(started)) + " s");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    Options opt = parse_options(argc, argv);
    try {
        return run(opt);
    } catch (const std::exception& e) {
        // No partial JSON on stdout: a consumer must not mistake a failed run for figures.
        std::fprintf(stderr, "popchain_bench: %s\n", e.what());
        return 1;
    }
}
