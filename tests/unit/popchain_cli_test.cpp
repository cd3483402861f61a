// The popchain tool as a user runs it: a 4-node testnet started as background processes,
// transfers through the pBFT client, a backup killed with SIGKILL and restarted, and the
// command line's exit codes. Every node process is stopped at the end, even on failure.
#ifdef POPCHAIN_CLI_BINARY

#include "test_support.hpp"

#include <popchain/application.hpp>
#include <popchain/genesis.hpp>
#include <popchain/keystore.hpp>
#include <popchain/node.hpp>

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netinet/in.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using popchain::test::TempDir;

struct Run {
    int code = -1;
    std::string output; // stdout and stderr
};

// Runs `popchain <args>` through the shell, capturing its output in a file of `tmp`.
Run popchain_cmd(const fs::path& tmp, const std::string& args) {
    const fs::path out = tmp / "cmd.out";
    const std::string cmd =
        std::string(POPCHAIN_CLI_BINARY) + " " + args + " >" + out.string() + " 2>&1";
    const int status = std::system(cmd.c_str());
    Run r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream in(out);
    std::ostringstream text;
    text << in.rdbuf();
    r.output = text.str();
    return r;
}

bool port_free(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

// A base port with base..base+3 free, away from the ephemeral range.
int free_base_port() {
    for (int base = 21000 + (::getpid() % 200) * 40; base < 60000; base += 40) {
        bool ok = true;
        for (int i = 0; i < 4 && ok; ++i)
            ok = port_free(base + i);
        if (ok) return base;
    }
    return 0;
}

int pid_of(const fs::path& dir, int node) {
    std::ifstream in(dir / ("node" + std::to_string(node)) / "node.pid");
    int pid = 0;
    in >> pid;
    return pid;
}

// Stops whatever is left of the testnet when the test ends, however it ends.
struct TestnetGuard {
    fs::path tmp, dir;
    ~TestnetGuard() {
        (void)popchain_cmd(tmp, "testnet down --timeout 5 --dir " + dir.string());
        for (int i = 0; i < 4; ++i)
            if (const int pid = pid_of(dir, i); pid > 0) ::kill(pid, SIGKILL);
    }
};

} // namespace

TEST_CASE("popchain: command line errors and help") {
    TempDir tmp;
    CHECK(popchain_cmd(tmp.path(), "").code == 2);
    CHECK(popchain_cmd(tmp.path(), "frobnicate").code == 2);
    CHECK(popchain_cmd(tmp.path(), "testnet").code == 2);
    CHECK(popchain_cmd(tmp.path(), "testnet explode --dir x").code == 2);
    CHECK(popchain_cmd(tmp.path(), "testnet init --dir x").code == 2); // --nodes missing
    CHECK(popchain_cmd(tmp.path(), "testnet init --nodes 4 --dir x --colour red").code == 2);
    CHECK(popchain_cmd(tmp.path(), "testnet init --nodes many --dir x").code == 2);
    CHECK(popchain_cmd(tmp.path(), "node").code == 2);
    for (const char* cmd : {"--help", "node --help", "testnet init --help", "testnet up --help",
                            "testnet down --help", "testnet status --help", "tx transfer --help",
                            "tx send --help", "tx get --help", "block get --help",
                            "wallet new --help", "wallet list --help", "wallet balance --help"}) {
        const Run r = popchain_cmd(tmp.path(), cmd);
        CHECK_MESSAGE(r.code == 0, cmd);
        CHECK_MESSAGE(r.output.find("usage: popchain") != std::string::npos, cmd);
    }
    const Run missing = popchain_cmd(tmp.path(), "node --config /nonexistent/config.json");
    CHECK(missing.code == 1);
    CHECK(missing.output.find("not found") != std::string::npos);
    CHECK(popchain_cmd(tmp.path(), "testnet status --dir " + tmp.path().string()).code == 1);
}

TEST_CASE("popchain: testnet init --app noop writes a consensus-only testnet") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    CHECK(popchain_cmd(tmp.path(), "testnet init --nodes 4 --dir " + dir.string() + " --app kv")
              .code == 2);
    const Run made =
        popchain_cmd(tmp.path(), "testnet init --nodes 4 --dir " + dir.string() + " --app noop");
    REQUIRE_MESSAGE(made.code == 0, made.output);
    auto genesis = popchain::Genesis::load(dir / "genesis.json");
    REQUIRE(genesis.ok());
    CHECK(genesis->params.commands == popchain::noop_command_rules());
    for (int i = 0; i < 4; ++i) {
        auto config =
            popchain::NodeConfig::load(dir / ("node" + std::to_string(i)) / "config.json");
        REQUIRE(config.ok());
        CHECK(config->application == "noop");
        CHECK(config->fsync);
    }
}

TEST_CASE("popchain: testnet init gives nodes that crowd the cores a longer request timeout") {
    TempDir tmp;
    auto timeouts = [&](int nodes) {
        const fs::path dir = tmp.path() / ("net" + std::to_string(nodes));
        const Run made = popchain_cmd(tmp.path(), "testnet init --nodes " + std::to_string(nodes) +
                                                      " --wallets 1 --dir " + dir.string());
        REQUIRE_MESSAGE(made.code == 0, made.output);
        std::set<std::uint32_t> seen;
        for (int i = 0; i < nodes; ++i) {
            auto config =
                popchain::NodeConfig::load(dir / ("node" + std::to_string(i)) / "config.json");
            REQUIRE(config.ok());
            seen.insert(config->replica.request_timeout_ms);
        }
        return seen;
    };
    CHECK(timeouts(4) == std::set<std::uint32_t>{2000});
    // Eight nodes per core or more: at least twice as long, the same on every node.
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    if (8 * cores <= 64) {
        const auto crowded = timeouts(static_cast<int>(8 * cores));
        REQUIRE(crowded.size() == 1);
        CHECK(*crowded.begin() >= 4000);
    }
}

TEST_CASE("popchain: a 4-node testnet survives kill -9 of a backup, which catches up") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --dir " + dir.string();
    const int base = free_base_port();
    REQUIRE(base > 0);

    Run r = popchain_cmd(tmp.path(), "testnet init --nodes 4 --wallets 2 --base-port " +
                                         std::to_string(base) + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    for (const char* f : {"genesis.json", "passphrase", "authority.key", "wallets/w0.key",
                          "wallets/w1.key", "node0/config.json", "node3/replica.key"})
        CHECK_MESSAGE(fs::exists(dir / f), f);
    CHECK((fs::status(dir / "passphrase").permissions() & fs::perms::group_read) ==
          fs::perms::none);
    r = popchain_cmd(tmp.path(), "testnet init --nodes 4" + d);
    CHECK(r.code == 1); // refuses to overwrite
    CHECK(r.output.find("--force") != std::string::npos);

    TestnetGuard guard{tmp.path(), dir};
    r = popchain_cmd(tmp.path(), "testnet up" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    CHECK(popchain_cmd(tmp.path(), "testnet up" + d).code == 1); // already running

    auto transfer = [&](int count) {
        for (int k = 0; k < count; ++k) {
            const Run t = popchain_cmd(tmp.path(), "tx transfer --from w0 --to w1 --amount 5 "
                                                   "--wait --timeout 20" +
                                                       d);
            REQUIRE_MESSAGE(t.code == 0, t.output);
            CHECK(t.output.find("committed txid=") != std::string::npos);
        }
    };
    transfer(3);

    // kill -9 a backup (the primary of view 0 is node 0); the other three go on.
    const int victim = pid_of(dir, 3);
    REQUIRE(victim > 0);
    REQUIRE(::kill(victim, SIGKILL) == 0);
    std::this_thread::sleep_for(200ms);
    r = popchain_cmd(tmp.path(), "testnet status" + d);
    CHECK(r.output.find("node3  stopped") != std::string::npos);
    transfer(3);

    // `up` restarts only the dead node, which catches up from its data_dir and its peers.
    r = popchain_cmd(tmp.path(), "testnet up" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    CHECK(r.output.find("node 3 started") != std::string::npos);
    transfer(2);
    bool equal = false;
    std::string last;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!equal && std::chrono::steady_clock::now() < deadline) {
        r = popchain_cmd(tmp.path(), "testnet status --json" + d);
        REQUIRE(r.code == 0);
        last = r.output;
        std::set<std::uint64_t> heights;
        int running = 0;
        std::istringstream lines(r.output);
        for (std::string line; std::getline(lines, line);) {
            const auto j = nlohmann::json::parse(line, nullptr, false);
            REQUIRE(!j.is_discarded());
            running += j["running"].get<bool>() ? 1 : 0;
            if (j["height"].is_number()) heights.insert(j["height"].get<std::uint64_t>());
        }
        equal = running == 4 && heights.size() == 1 && *heights.begin() >= 8;
        if (!equal) std::this_thread::sleep_for(200ms);
    }
    CHECK_MESSAGE(equal, last);

    // The HTTP API commands against node 2: a new wallet, paid through the API, its balance,
    // the block and the transaction read back; a bad id is a failure (exit 1).
    const std::string at2 = d + " --node 2";
    r = popchain_cmd(tmp.path(), "wallet new --alias dave" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    const std::string dave = r.output.substr(r.output.find("pop"), 51);
    r = popchain_cmd(tmp.path(), "tx send --from w1 --to " + dave + " --amount 7 --wait" + at2);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    const auto sent = nlohmann::json::parse(r.output.substr(r.output.find('{')), nullptr, false);
    REQUIRE_FALSE(sent.is_discarded());
    CHECK(sent["status"] == "committed");
    r = popchain_cmd(tmp.path(), "wallet balance --address " + dave + at2);
    CHECK(r.code == 0);
    CHECK(r.output.find("\"balance\": 7") != std::string::npos);
    r = popchain_cmd(tmp.path(), "tx get --id " + sent["id"].get<std::string>() + at2);
    CHECK(r.code == 0);
    CHECK(r.output.find("merkle_proof") != std::string::npos);
    r = popchain_cmd(tmp.path(),
                     "block get --height " + std::to_string(sent["height"].get<int>()) + at2);
    CHECK(r.code == 0);
    CHECK(r.output.find(sent["block_hash"].get<std::string>()) != std::string::npos);
    CHECK(popchain_cmd(tmp.path(), "tx get --id 1234" + at2).code == 2); // not a tx id
    r = popchain_cmd(tmp.path(), "tx get --id " + std::string(64, 'a') + at2);
    CHECK(r.code == 1); // a well-formed id the node does not know: the node's 404
    CHECK(r.output.find("404") != std::string::npos);
    r = popchain_cmd(tmp.path(), "wallet list" + d);
    CHECK(r.output.find("dave " + dave) != std::string::npos);

    r = popchain_cmd(tmp.path(), "testnet down" + d);
    CHECK_MESSAGE(r.code == 0, r.output);
    r = popchain_cmd(tmp.path(), "testnet status" + d);
    CHECK(r.output.find("running") == std::string::npos);
    std::ifstream log(dir / "node1" / "node.log");
    std::ostringstream text;
    text << log.rdbuf();
    CHECK(text.str().find("stopping (SIGTERM)") != std::string::npos);
}

TEST_CASE("popchain: an empty or unusable --dir is a usage error, not an abort") {
    TempDir tmp;
    for (const char* cmd :
         {"testnet init --nodes 4 --dir ''", "testnet up --dir ''", "testnet down --dir ''",
          "testnet status --dir ''", "tx transfer --dir '' --from w0 --to w1 --amount 1",
          "tx send --dir '' --from w0 --to w1 --amount 1", "wallet new --dir '' --alias x",
          "wallet list --dir ''", "wallet balance --dir '' --address x",
          "block get --dir '' --height 1", "tx get --dir '' --id 00"}) {
        const Run r = popchain_cmd(tmp.path(), cmd);
        CHECK_MESSAGE(r.code == 2, cmd, "\n", r.output);
        CHECK_MESSAGE(r.output.find("--dir must not be empty") != std::string::npos, cmd);
        CHECK_MESSAGE(r.output.find("terminate") == std::string::npos, cmd);
    }
    // A relative --dir when the working directory is gone: fs::absolute fails.
    const fs::path gone = tmp.path() / "gone";
    fs::create_directories(gone);
    const fs::path out = tmp.path() / "gone.out";
    const std::string cmd = "cd " + gone.string() + " && rmdir " + gone.string() + " && " +
                            POPCHAIN_CLI_BINARY + " testnet status --dir x >" + out.string() +
                            " 2>&1";
    const int status = std::system(cmd.c_str());
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 2);
    std::ifstream in(out);
    std::ostringstream text;
    text << in.rdbuf();
    CHECK_MESSAGE(text.str().find("cannot make an absolute path") != std::string::npos, text.str());
}

TEST_CASE("popchain: testnet init checks every option before it writes anything") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --wallets 1 --dir " + dir.string();
    for (const std::string& bad : std::vector<std::string>{
             "--chain-id ''", "--chain-id " + std::string(65, 'c'), "--host localhost",
             "--host 'bad host'", "--host 999.1.1.1", "--host '[::1]'", "--host ''"}) {
        const Run r = popchain_cmd(tmp.path(), "testnet init --nodes 2 " + bad + d);
        CHECK_MESSAGE(r.code == 2, bad, "\n", r.output);
        CHECK_MESSAGE(!fs::exists(dir), bad); // nothing written, not even the directory
    }
    CHECK(popchain_cmd(tmp.path(), "testnet init --nodes 2 --host '[::1]'" + d)
              .output.find("without brackets") != std::string::npos);
    // Exactly what the node takes: a numeric IPv6 address, written in brackets in endpoints.
    const Run made = popchain_cmd(tmp.path(), "testnet init --nodes 2 --host ::1 --base-port "
                                              "7000 --chain-id " +
                                                  std::string(64, 'c') + d);
    REQUIRE_MESSAGE(made.code == 0, made.output);
    auto config = popchain::NodeConfig::load(dir / "node1" / "config.json");
    REQUIRE(config.ok());
    CHECK(config->listen.host == "::1");
    CHECK(config->listen.to_string() == "[::1]:7001");
    REQUIRE(config->api.has_value());
    CHECK(config->api->to_string() == "[::1]:7101");
    auto genesis = popchain::Genesis::load(dir / "genesis.json");
    REQUIRE(genesis.ok());
    CHECK(genesis->replicas.at(0).endpoint == "[::1]:7000");
    CHECK(genesis->params.chain_id == std::string(64, 'c'));
    const Run v4 = popchain_cmd(tmp.path(), "testnet init --nodes 1 --host 10.1.2.3 --wallets 0 "
                                            "--dir " +
                                                (tmp.path() / "v4").string());
    CHECK_MESSAGE(v4.code == 0, v4.output);
}

TEST_CASE("popchain: testnet init --force keeps the wallets made with wallet new") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --dir " + dir.string();
    auto slurp = [](const fs::path& f) {
        std::ifstream in(f);
        std::ostringstream text;
        text << in.rdbuf();
        return text.str();
    };
    REQUIRE(popchain_cmd(tmp.path(), "testnet init --nodes 4 --wallets 2" + d).code == 0);
    Run r = popchain_cmd(tmp.path(), "wallet new --alias dave" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    const std::string dave_key = slurp(dir / "wallets" / "dave.key");
    const std::string w0_key = slurp(dir / "wallets" / "w0.key");
    std::ofstream(dir / "notes.txt") << "mine\n";
    fs::create_directories(dir / "node1" / "data");
    std::ofstream(dir / "node1" / "data" / "chain.db") << "old chain\n";
    std::ofstream(dir / "node1" / "node.log") << "old log\n";

    r = popchain_cmd(tmp.path(), "testnet init --nodes 2 --wallets 2 --force" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    CHECK(slurp(dir / "wallets" / "dave.key") == dave_key); // the user's wallet stays
    CHECK(slurp(dir / "wallets" / "w0.key") != w0_key);     // init's own is made anew
    CHECK(fs::exists(dir / "notes.txt"));
    CHECK_FALSE(fs::exists(dir / "node1" / "data"));     // the old chain is gone
    CHECK_FALSE(fs::exists(dir / "node1" / "node.log")); // and its log
    CHECK_FALSE(fs::exists(dir / "node2"));              // nodes beyond --nodes 2 too
    CHECK(fs::exists(dir / "node1" / "config.json"));
    // The passphrase stays, so dave still opens.
    std::string passphrase;
    std::ifstream passphrase_file(dir / "passphrase");
    std::getline(passphrase_file, passphrase);
    popchain::Keystore keystore(dir / "wallets");
    CHECK(keystore.load("dave", passphrase).ok());
    CHECK(keystore.load("w1", passphrase).ok());
    r = popchain_cmd(tmp.path(), "wallet list" + d);
    CHECK(r.output.find("dave pop") != std::string::npos);

    // A user's wallet named like one init would write is not overwritten: refused first.
    REQUIRE(popchain_cmd(tmp.path(), "wallet new --alias w2" + d).code == 0);
    const std::string genesis = slurp(dir / "genesis.json");
    r = popchain_cmd(tmp.path(), "testnet init --nodes 2 --wallets 3 --force" + d);
    CHECK(r.code == 1);
    CHECK(r.output.find("w2.key exists") != std::string::npos);
    CHECK(slurp(dir / "genesis.json") == genesis);
    CHECK(fs::exists(dir / "wallets" / "w2.key"));
}

TEST_CASE("popchain: usage errors exit 2 and the help says which options are required") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --dir " + dir.string();
    const std::string addr = "pop" + std::string(48, '0');
    REQUIRE(popchain_cmd(tmp.path(), "testnet init --nodes 1 --wallets 1" + d).code == 0);
    for (const std::string& cmd : std::vector<std::string>{
             std::string("wallet list"), std::string("wallet new --alias x"),
             "tx send --api 127.0.0.1:1 --from w0 --to " + addr + " --amount 1",
             std::string("tx get --id 00"), "block get" + d, "block get --height 1 --hash 00" + d,
             "tx get --api 127.0.0.1:1 --node 1 --id " + std::string(64, 'a'),
             "tx send --from w0 --to nobody --amount 1" + d}) {
        const Run r = popchain_cmd(tmp.path(), cmd);
        CHECK_MESSAGE(r.code == 2, cmd, "\n", r.output);
    }
    for (const char* alias : {".", "..", ".hidden", "a/b"}) {
        const Run r =
            popchain_cmd(tmp.path(), "wallet new --alias '" + std::string(alias) + "'" + d);
        CHECK_MESSAGE(r.code == 2, alias, "\n", r.output);
    }
    CHECK_FALSE(fs::exists(dir / "wallets" / "..key"));
    CHECK_FALSE(fs::exists(dir / "wallets" / "...key"));
    for (const char* cmd : {"wallet list --help", "wallet new --help", "tx send --help"}) {
        const Run r = popchain_cmd(tmp.path(), cmd);
        CHECK_MESSAGE(r.output.find("[--dir DIR]") == std::string::npos, cmd);
        CHECK_MESSAGE(r.output.find(" --dir DIR ") != std::string::npos, cmd);
    }
    CHECK(popchain_cmd(tmp.path(), "tx get --help")
              .output.find("(--api HOST:PORT | --dir DIR [--node I]) --id TXID") !=
          std::string::npos);
    CHECK(popchain_cmd(tmp.path(), "block get --help")
              .output.find("(--height H|latest | --hash HASH)") != std::string::npos);
}

TEST_CASE("popchain: path arguments of the API commands are checked before any request") {
    TempDir tmp;
    // Port 1 has no API: a command that got as far as a request would fail (exit 1).
    const std::string api = " --api 127.0.0.1:1";
    for (const std::string& cmd : std::vector<std::string>{
             std::string("tx get --id ../../v1/status"), std::string("tx get --id ''"),
             "tx get --id " + std::string(63, 'a'), std::string("block get --height ''"),
             std::string("block get --height -1"), std::string("block get --height 1/../2"),
             std::string("block get --hash ../status"), std::string("wallet balance --address ''"),
             std::string("wallet balance --address ../../v1/status")}) {
        const Run r = popchain_cmd(tmp.path(), cmd + api);
        CHECK_MESSAGE(r.code == 2, cmd, "\n", r.output);
    }
    CHECK(popchain_cmd(tmp.path(), "tx get --id ../../v1/status" + api)
              .output.find("64 hex digits") != std::string::npos);
    // Well-formed arguments do reach the (absent) node.
    for (const std::string& cmd : std::vector<std::string>{
             "tx get --id " + std::string(64, 'A'), std::string("block get --height latest"),
             std::string("block get --height 7"), "block get --hash " + std::string(64, '0')}) {
        const Run r = popchain_cmd(tmp.path(), cmd + api);
        CHECK_MESSAGE(r.code == 1, cmd, "\n", r.output);
        CHECK_MESSAGE(r.output.find("127.0.0.1:1") != std::string::npos, cmd);
    }
}

TEST_CASE("popchain: tx send names the node it cannot reach") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const int base = free_base_port();
    REQUIRE(base > 0);
    REQUIRE(popchain_cmd(tmp.path(), "testnet init --nodes 1 --wallets 1 --base-port " +
                                         std::to_string(base) + " --dir " + dir.string())
                .code == 0);
    const Run list = popchain_cmd(tmp.path(), "wallet list --dir " + dir.string());
    REQUIRE(list.output.find("w0 pop") == 0);
    const std::string to = list.output.substr(3, 51);
    const Run r = popchain_cmd(tmp.path(), "tx send --from w0 --to " + to + " --amount 1 --dir " +
                                               dir.string());
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.output.find("cannot read the sender's account from the node at 127.0.0.1:" +
                                std::to_string(base + 100)) != std::string::npos,
                  r.output);
    if (port_free(base + 100)) CHECK(r.output.find("refused") != std::string::npos);
}

TEST_CASE("popchain: tx transfer --wait --timeout S gives up within S seconds when nothing "
          "commits; API errors show code and message") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --dir " + dir.string();
    const int base = free_base_port();
    REQUIRE(base > 0);
    REQUIRE(popchain_cmd(tmp.path(), "testnet init --nodes 4 --wallets 2 --base-port " +
                                         std::to_string(base) + d)
                .code == 0);
    TestnetGuard guard{tmp.path(), dir};
    // One node of four: it takes the request but there is no quorum to commit it.
    Run r = popchain_cmd(tmp.path(), "testnet up --node 0" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);

    // The client's retransmissions back off (0.5, 1, 2, 4 s): --timeout must not wait for
    // the next one.
    for (const int timeout : {2, 5}) {
        const auto start = std::chrono::steady_clock::now();
        r = popchain_cmd(tmp.path(), "tx transfer --from w0 --to w1 --amount 5 --wait --timeout " +
                                         std::to_string(timeout) + d);
        const auto elapsed = std::chrono::steady_clock::now() - start;
        CHECK_MESSAGE(r.code == 1, r.output);
        CHECK_MESSAGE(elapsed < std::chrono::seconds(timeout) + 1s, "--timeout ", timeout, " took ",
                      std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(),
                      " ms");
        CHECK_MESSAGE(r.output.find("timed out after " + std::to_string(timeout) + " s") !=
                          std::string::npos,
                      r.output);
        CHECK_MESSAGE(r.output.find("still pending") != std::string::npos, r.output);
    }

    // tx send --wait goes through the HTTP API: a transaction still pending when the node's
    // wait ends is a failure too (exit 1, the pending answer printed), and --timeout
    // shortens that wait.
    const Run list = popchain_cmd(tmp.path(), "wallet list" + d);
    const auto at = list.output.find("w0 pop");
    REQUIRE_MESSAGE(at != std::string::npos, list.output);
    const std::string w0 = list.output.substr(at + 3, 51);
    auto start = std::chrono::steady_clock::now();
    r = popchain_cmd(tmp.path(),
                     "tx send --from w1 --to " + w0 + " --amount 3 --wait --timeout 1" + d);
    CHECK_MESSAGE(r.code == 1, r.output);
    CHECK(std::chrono::steady_clock::now() - start < 3s);
    CHECK_MESSAGE(r.output.find("\"status\": \"pending\"") != std::string::npos, r.output);
    CHECK_MESSAGE(r.output.find("still pending") != std::string::npos, r.output);
    // Only with --wait, and within what the node allows.
    r = popchain_cmd(tmp.path(), "tx send --from w1 --to " + w0 + " --amount 3 --timeout 1" + d);
    CHECK_MESSAGE(r.code == 2, r.output);
    r = popchain_cmd(tmp.path(),
                     "tx send --from w1 --to " + w0 + " --amount 3 --wait --timeout 3600" + d);
    CHECK_MESSAGE(r.code == 1, r.output);
    CHECK_MESSAGE(r.output.find("400 invalid_argument: wait_ms") != std::string::npos, r.output);

    // An HTTP API error is printed as "<status> <code>: <message>", the code once.
    r = popchain_cmd(tmp.path(), "tx get --id " + std::string(64, 'a') + d);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.output.rfind("popchain: 404 not_found: ", 0) == 0, r.output);
    CHECK_MESSAGE(r.output.find("not_found: not_found") == std::string::npos, r.output);
    r = popchain_cmd(tmp.path(), "block get --height 99999" + d);
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.output.rfind("popchain: 404 not_found: ", 0) == 0, r.output);
    CHECK_MESSAGE(r.output.find("not_found: not_found") == std::string::npos, r.output);
}

TEST_CASE("popchain: testnet down --timeout 0 says why it killed a node") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "net";
    const std::string d = " --dir " + dir.string();
    const int base = free_base_port();
    REQUIRE(base > 0);
    REQUIRE(popchain_cmd(tmp.path(), "testnet init --nodes 1 --wallets 0 --base-port " +
                                         std::to_string(base) + d)
                .code == 0);
    TestnetGuard guard{tmp.path(), dir};
    Run r = popchain_cmd(tmp.path(), "testnet up" + d);
    REQUIRE_MESSAGE(r.code == 0, r.output);
    r = popchain_cmd(tmp.path(), "testnet down --timeout 0" + d);
    CHECK_MESSAGE(r.output.find("ignored SIGTERM") == std::string::npos, r.output);
    if (r.code == 1) CHECK_MESSAGE(r.output.find("--timeout 0") != std::string::npos, r.output);
    CHECK(popchain_cmd(tmp.path(), "testnet status" + d).output.find("running") ==
          std::string::npos);
}

#endif // POPCHAIN_CLI_BINARY
