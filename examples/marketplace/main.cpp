// popmarket: the POP Market web service (docs/marketplace.md).
//
//   popmarket --db market.db --listen 127.0.0.1:8080 --genesis DIR/genesis.json
//             --node 127.0.0.1:7500 [--node ...] --admin NAME
//             [--admin-password-file F] [--authority-key DIR/authority.key
//             --authority-passphrase-file DIR/passphrase] [--auto-approve-limit N]
//             [--escrow-blocks N] [--static DIR] [--workers N]
//             [--node-timeout-ms N] [--submit-timeout-ms N] [--settle-interval-ms N]
//             [--chain-workers N] [--chain-requests-per-member N] [--commit-wait-ms N]
//             --db, --listen, --genesis, --node and --admin are required; the numbers' ranges
//             are in docs/marketplace.md (and in the message when one is out of range)
//   popmarket --print-trust-root DIR/genesis.json
//             prints the replica set the web page checks certificates against, with its
//             fingerprint (the page shows the one it uses), and exits
#include "market.hpp"

#include <popchain/genesis.hpp>

#include <asio.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

using namespace popmarket;

namespace {

int usage(const char* message) {
    std::fprintf(stderr,
                 "popmarket: %s\n(see the comment at the top of main.cpp, or "
                 "docs/marketplace.md)\n",
                 message);
    return 2;
}

std::string first_line(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

std::optional<std::uint64_t> number(const std::string& text) {
    if (text.empty() || text.size() > 18 ||
        text.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
    return std::stoull(text);
}

} // namespace

int main(int argc, char** argv) {
    std::multimap<std::string, std::string> args;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--", 0) != 0) return usage(("bad argument " + a).c_str());
        if (i + 1 >= argc) return usage((a + " needs a value").c_str());
        args.emplace(a.substr(2), argv[++i]);
    }
    static const char* known[] = {"db",
                                  "listen",
                                  "genesis",
                                  "node",
                                  "admin",
                                  "admin-password-file",
                                  "authority-key",
                                  "authority-passphrase-file",
                                  "auto-approve-limit",
                                  "escrow-blocks",
                                  "static",
                                  "workers",
                                  "node-timeout-ms",
                                  "submit-timeout-ms",
                                  "settle-interval-ms",
                                  "chain-workers",
                                  "chain-requests-per-member",
                                  "commit-wait-ms",
                                  "print-trust-root"};
    for (const auto& [k, v] : args)
        if (std::find(std::begin(known), std::end(known), k) == std::end(known))
            return usage(("unknown option --" + k).c_str());
    auto get = [&](const char* k, std::string fallback = {}) {
        auto it = args.find(k);
        return it == args.end() ? fallback : it->second;
    };
    // A numeric option's value, its default when absent, or nothing (with the message
    // printed) when it is not a whole number in [min, max].
    auto get_number = [&](const char* k, std::uint64_t fallback, std::uint64_t min,
                          std::uint64_t max) -> std::optional<std::uint64_t> {
        if (!args.count(k)) return fallback;
        const std::string text = get(k);
        auto n = number(text);
        if (!n || *n < min || *n > max) {
            usage(("--" + std::string(k) + ": a whole number from " + std::to_string(min) + " to " +
                   std::to_string(max) + ", not \"" + text + "\"")
                      .c_str());
            return std::nullopt;
        }
        return n;
    };
    if (args.count("print-trust-root")) {
        auto genesis = popchain::Genesis::load(get("print-trust-root"));
        if (!genesis) return usage(("genesis: " + genesis.error().message()).c_str());
        std::printf("%s\n",
                    trust_root_json(genesis->replicas, genesis->params.chain_id).dump(2).c_str());
        return 0;
    }
    for (const char* required : {"db", "listen", "genesis", "node", "admin"})
        if (!args.count(required))
            return usage((std::string("--") + required + " is required").c_str());

    // The ranges are in docs/marketplace.md; a charge above max_charge is refused anyway.
    const auto auto_limit = get_number("auto-approve-limit", 0, 0, MarketOptions{}.max_charge);
    if (!auto_limit) return 2;
    const auto escrow_blocks = get_number("escrow-blocks", 1000, 1, 1'000'000'000);
    if (!escrow_blocks) return 2;
    const auto workers = get_number("workers", 4, 1, 64);
    if (!workers) return 2;
    const auto node_timeout = get_number("node-timeout-ms", 3000, 1, 3'600'000);
    if (!node_timeout) return 2;
    const auto submit_timeout = get_number("submit-timeout-ms", 12000, 1, 3'600'000);
    if (!submit_timeout) return 2;
    const auto settle_interval = get_number("settle-interval-ms", 2000, 1, 3'600'000);
    if (!settle_interval) return 2;
    const auto chain_workers = get_number("chain-workers", 4, 1, 64);
    if (!chain_workers) return 2;
    const auto per_member = get_number("chain-requests-per-member", 2, 1, 64);
    if (!per_member) return 2;
    // Under the HTTP server's 60 s limit for a deferred answer (then 504 for it), with room
    // for a lock wait and the reads before the transaction is signed.
    const auto commit_wait = get_number("commit-wait-ms", 8000, 1, 25'000);
    if (!commit_wait) return 2;

    auto genesis = popchain::Genesis::load(get("genesis"));
    if (!genesis) return usage(("genesis: " + genesis.error().message()).c_str());
    std::vector<NodeEndpoint> nodes;
    for (auto [it, end] = args.equal_range("node"); it != end; ++it) {
        auto n = NodeEndpoint::parse(it->second);
        if (!n) return usage(n.error().message().c_str());
        nodes.push_back(*n);
    }
    auto listen = NodeEndpoint::parse(get("listen"));
    if (!listen) return usage(listen.error().message().c_str());

    MarketOptions options;
    options.chain_id = genesis->params.chain_id;
    options.replicas = genesis->replicas;
    options.chain_authority = genesis->params.authority;
    options.admin_username = get("admin");
    options.static_dir = get("static", POPMARKET_STATIC_DIR);
    options.auto_approve_limit = *auto_limit;
    options.escrow_blocks = *escrow_blocks;
    options.chain_workers = *chain_workers;
    options.chain_requests_per_member = *per_member;
    options.commit_wait = std::chrono::milliseconds(*commit_wait);

    if (args.count("authority-key")) {
        std::ifstream in(get("authority-key"));
        std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::string pass;
        if (args.count("authority-passphrase-file"))
            pass = first_line(get("authority-passphrase-file"));
        else if (const char* env = std::getenv("POPMARKET_AUTHORITY_PASSPHRASE"))
            pass = env;
        auto key = popchain::SigningKey::from_encrypted_pem(pem, pass);
        if (!key) return usage(("authority key: " + key.error().message()).c_str());
        if (key->public_key() != genesis->params.authority)
            return usage("the authority key is not the one genesis names");
        options.authority = std::make_shared<const popchain::SigningKey>(std::move(*key));
    }
    std::string admin_password;
    if (args.count("admin-password-file"))
        admin_password = first_line(get("admin-password-file"));
    else if (const char* env = std::getenv("POPMARKET_ADMIN_PASSWORD"))
        admin_password = env;

    try {
        Db db(get("db"));
        ChainClient chain(nodes, std::chrono::milliseconds(*node_timeout),
                          std::chrono::milliseconds(*submit_timeout));
        Market market(db, chain, options);
        if (auto ok = market.setup(admin_password); !ok) return usage(ok.error().message().c_str());

        asio::io_context io;
        popchain::api::HttpServerOptions http;
        http.host = listen->host;
        http.port = listen->port;
        http.max_body_bytes = 1024 * 1024 + 4096; // a photo as a data: URL
        popchain::api::HttpServer server(io, http);
        // Declared first, so it outlives `pool`, whose jobs hand requests on to it.
        WorkerPool chain_pool(*chain_workers);
        WorkerPool pool(*workers);
        if (auto ok = market.add_routes(server, pool, chain_pool); !ok)
            return usage(ok.error().message().c_str());
        if (auto ok = server.start(); !ok) {
            std::fprintf(stderr, "popmarket: %s\n", ok.error().message().c_str());
            return 1;
        }
        std::fprintf(stderr,
                     "popmarket: serving http://%s:%u/ (chain %s, %zu nodes, replica set "
                     "fingerprint %s)\n",
                     listen->host.c_str(), server.local_port(), options.chain_id.c_str(),
                     nodes.size(), replica_set_fingerprint(options.replicas).c_str());

        std::atomic<bool> stopping{false};
        std::thread settler([&] {
            while (!stopping) {
                for (std::uint64_t waited = 0; waited < *settle_interval && !stopping; waited += 50)
                    std::this_thread::sleep_for(std::chrono::milliseconds(50));
                if (!stopping) market.settle_all();
            }
        });
        asio::signal_set signals(io, SIGINT, SIGTERM);
        signals.async_wait([&](const std::error_code&, int) {
            server.close();
            io.stop();
        });
        io.run();
        stopping = true;
        settler.join();
        std::fprintf(stderr, "popmarket: stopped\n");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "popmarket: %s\n", e.what());
        return 1;
    }
    return 0;
}
