// popchain: run a node, manage a local testnet, submit transactions (docs/node.md).
//
//   popchain node --config FILE
//   popchain testnet init|up|down|status ...
//   popchain tx transfer ...
//
// Exit status: 0 on success, 1 when the command failed, 2 for a wrong command line.
#include "api_commands.hpp"
#include "args.hpp"
#include "testnet.hpp"

#include <popchain/node.hpp>
#include <popchain/pbft/replica.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <string>
#include <string_view>

namespace {

using namespace popchain;
using namespace popchain::cli;

const char* const top_usage =
    "usage: popchain <command> [options]\n"
    "\n"
    "commands:\n"
    "  node --config FILE        run one node in the foreground\n"
    "  testnet init              create a local testnet directory\n"
    "  testnet up                start its nodes in the background\n"
    "  testnet down              stop them\n"
    "  testnet status            show which run, their height and view\n"
    "  tx transfer               sign and submit a transfer to every replica (pBFT client)\n"
    "  tx send                   sign and submit a transfer through a node's HTTP API\n"
    "  tx get                    show a transaction (HTTP API)\n"
    "  block get                 show a block with its commit proof (HTTP API)\n"
    "  wallet new|list           make or list the wallets of a testnet\n"
    "  wallet balance            show an account's balance and nonce (HTTP API)\n"
    "\n"
    "Every command takes --help.\n";

int usage_error(const std::string& what) {
    std::fprintf(stderr, "popchain: %s\n\n%s", what.c_str(), top_usage);
    return exit_usage;
}

// One line per event on stderr: UTC time with milliseconds, the node, the event.
void log_line(std::uint32_t id, std::string_view line) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t secs = std::chrono::system_clock::to_time_t(now);
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() %
        1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::fprintf(stderr, "%s.%03dZ node%u %.*s\n", stamp, static_cast<int>(ms), id,
                 static_cast<int>(line.size()), line.data());
}

int cmd_node(int argc, char** argv, int first) {
    const CommandSpec spec{"node",
                           "Runs one node in the foreground until SIGTERM or SIGINT; logs to "
                           "stderr.",
                           {{"config", "FILE", "the node's config file (docs/node.md)", true}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        auto config = NodeConfig::load(a.get("config"));
        if (!config) {
            std::fprintf(stderr, "popchain: %s\n", config.error().message().c_str());
            return exit_failure;
        }
        const std::uint32_t id = config->id;
        auto node = Node::open(std::move(config).value(),
                               [id](std::string_view line) { log_line(id, line); });
        if (!node) {
            log_line(id, "cannot start: " + node.error().message());
            return exit_failure;
        }
        if (auto ran = (*node)->run(); !ran) return exit_failure; // already logged
        return exit_ok;
    });
}

int run(int argc, char** argv) {
    if (argc < 2) return usage_error("no command");
    const std::string_view command = argv[1];
    if (command == "--help" || command == "-h" || command == "help") {
        std::fputs(top_usage, stdout);
        return exit_ok;
    }
    if (command == "node") return cmd_node(argc, argv, 2);
    if (command == "testnet" || command == "tx" || command == "block" || command == "wallet") {
        if (argc < 3 || std::strncmp(argv[2], "--", 2) == 0) {
            if (argc >= 3 && std::string_view(argv[2]) == "--help") {
                std::fputs(top_usage, stdout);
                return exit_ok;
            }
            return usage_error(std::string(command) + " needs a subcommand");
        }
        const std::string_view sub = argv[2];
        if (command == "testnet") {
            if (sub == "init") return cmd_testnet_init(argc, argv, 3);
            if (sub == "up") return cmd_testnet_up(argc, argv, 3);
            if (sub == "down") return cmd_testnet_down(argc, argv, 3);
            if (sub == "status") return cmd_testnet_status(argc, argv, 3);
        } else if (command == "tx") {
            if (sub == "transfer") return cmd_tx_transfer(argc, argv, 3);
            if (sub == "send") return cmd_tx_send(argc, argv, 3);
            if (sub == "get") return cmd_tx_get(argc, argv, 3);
        } else if (command == "block") {
            if (sub == "get") return cmd_block_get(argc, argv, 3);
        } else {
            if (sub == "new") return cmd_wallet_new(argc, argv, 3);
            if (sub == "list") return cmd_wallet_list(argc, argv, 3);
            if (sub == "balance") return cmd_wallet_balance(argc, argv, 3);
        }
        return usage_error("unknown command \"" + std::string(command) + " " + std::string(sub) +
                           "\"");
    }
    return usage_error("unknown command \"" + std::string(command) + "\"");
}

} // namespace

int main(int argc, char** argv) {
    // A peer that closes its socket must not kill the process; the transport sees the error.
    std::signal(SIGPIPE, SIG_IGN);
    // The last resort: the commands report their failures themselves, but an exception that
    // still escapes one is a failure with a message, not an abort with a core dump.
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "popchain: unexpected error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "popchain: unexpected error\n");
    }
    return exit_failure;
}
