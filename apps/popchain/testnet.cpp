#include "testnet.hpp"

#include "args.hpp"

#include <popchain/application.hpp>
#include <popchain/hex.hpp>
#include <popchain/keystore.hpp>
#include <popchain/node.hpp>
#include <popchain/sqlite_store.hpp>

#include <asio/ip/address.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>

namespace popchain::cli {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// Key files of a testnet are encrypted with scrypt tuned to about this many milliseconds
// instead of Keystore::default_kdf_msec: a testnet's passphrase sits in a file next to the
// keys, so a costly KDF would protect nothing and only slow every node start and tx.
constexpr std::size_t testnet_kdf_msec = 5;

// At most this many wallets per testnet init (--wallets).
constexpr std::uint64_t max_init_wallets = 1000;

// The replicas' request timeout: 2 s, doubled and more once the nodes outnumber this
// machine's cores eight to one. Every node of a local testnet runs here, each checks every
// client signature and handles O(n) votes per block, so a block takes longer the more nodes
// share each core; a timeout below that replaces busy primaries forever (64 nodes on two
// cores: blocks took 3-7 s and nothing committed with 2 s). 64 nodes on 2 cores get 16 s.
std::uint32_t testnet_request_timeout_ms(std::uint32_t nodes) {
    const std::uint32_t cores = std::max(1u, std::thread::hardware_concurrency());
    return 2000 * std::max(1u, nodes / (4 * cores));
}

// Writes `text` to `file` with `mode`, created fresh (the mode holds from the first byte).
Result<void> write_new_file(const fs::path& file, const std::string& text, mode_t mode) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return make_error(Errc::io_error, "cannot create " + file.string());
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            ::close(fd);
            return make_error(Errc::io_error, "cannot write " + file.string());
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0)
        return make_error(Errc::io_error, "cannot write " + file.string());
    return {};
}

std::string self_exe() {
    std::error_code ec;
    const auto p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? std::string("popchain") : p.string();
}

bool process_alive(pid_t pid) {
    if (::kill(pid, 0) != 0) return false;
    // A zombie (exited, not yet reaped by its parent) is not running.
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return true;
    const auto paren = stat->rfind(')');
    return paren == std::string::npos || paren + 2 >= stat->size() || (*stat)[paren + 2] != 'Z';
}

} // namespace

Result<std::string> read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return make_error(Errc::not_found, "cannot read " + file.string());
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::vector<std::uint32_t> Layout::nodes() const {
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < max_replicas; ++i) {
        std::error_code ec;
        if (!fs::exists(config(i), ec)) break;
        out.push_back(i);
    }
    return out;
}

Result<Layout> layout_of(const std::string& dir) {
    if (dir.empty()) return make_error(Errc::invalid_argument, "--dir must not be empty");
    std::error_code ec;
    const fs::path absolute = fs::absolute(dir, ec);
    if (ec)
        return make_error(Errc::invalid_argument,
                          "--dir " + dir + ": cannot make an absolute path (" + ec.message() + ")");
    return Layout{absolute.lexically_normal()};
}

std::optional<pid_t> running_pid(const Layout& layout, std::uint32_t i) {
    auto text = read_file(layout.pid_file(i));
    if (!text) return std::nullopt;
    long pid = 0;
    const char* begin = text->data();
    if (std::from_chars(begin, begin + text->size(), pid).ec != std::errc{}) return std::nullopt;
    if (pid <= 0 || !process_alive(static_cast<pid_t>(pid))) return std::nullopt;
    // The pid may have been reused: it must be a node run on this config.
    // (layout.dir is absolute: layout_of.)
    auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
    if (cmdline && cmdline->find(layout.config(i).lexically_normal().string()) == std::string::npos)
        return std::nullopt;
    return static_cast<pid_t>(pid);
}

// ---------------------------------------------------------------- testnet init

Result<std::string> read_testnet_passphrase(const Layout& layout) {
    NodeConfig source;
    source.passphrase_file = layout.passphrase();
    return read_passphrase(source);
}

namespace {

// The node binds its listen address with asio::ip::make_address (AsioTransport: "is not a
// numeric IP address"), so init takes exactly that: a numeric IPv4 or IPv6 address. An
// IPv6 host is written in brackets in the endpoints ("[::1]:7000"), not on the command line.
Result<void> check_host(const std::string& host) {
    asio::error_code ec;
    (void)asio::ip::make_address(host, ec);
    if (!ec) return {};
    std::string why = "--host \"" + host +
                      "\" is not a numeric IPv4 or IPv6 address (nodes listen on an address, "
                      "not a name: e.g. 127.0.0.1 or ::1)";
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        why += "; give an IPv6 address without brackets";
    return make_error(Errc::invalid_argument, why);
}

bool printable_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

bool present(const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));
}

// The wallets an earlier init made: those named w<k> that its genesis funds, or, when it
// funds none (--balance 0) or cannot be read, the unbroken run w0, w1, ... A wallet made
// with `wallet new` is not among them unless it continues that run of unfunded wallets.
std::set<std::string> init_wallets(const Layout& layout) {
    std::set<Address> funded;
    if (auto g = Genesis::load(layout.genesis()))
        for (const auto& [address, amount] : g->balances)
            funded.insert(address);
    std::map<std::string, Address> present_wallets;
    for (auto& entry : Keystore(layout.wallets()).list())
        present_wallets.emplace(entry.alias, entry.address);
    std::set<std::string> out;
    for (std::uint64_t k = 0;; ++k) {
        const auto it = present_wallets.find("w" + std::to_string(k));
        if (it == present_wallets.end()) {
            if (funded.empty()) break;
            if (k > max_init_wallets) break;
            continue;
        }
        if (funded.empty() || funded.count(it->second)) out.insert(it->first);
    }
    return out;
}

} // namespace

int cmd_testnet_init(int argc, char** argv, int first) {
    const CommandSpec spec{
        "testnet init",
        "Creates a local testnet in DIR: genesis.json, a key and config per node, funded "
        "wallets.\nThe passphrase file it writes is for local testing only (docs/node.md).",
        {{"nodes", "N", "number of replicas (1..64)", true},
         {"dir", "DIR", "directory to create the testnet in", true},
         {"base-port", "P", "node i listens on P+i (default 7000); its API port is P+100+i"},
         {"host", "HOST",
          "numeric IPv4 or IPv6 address the nodes listen on and dial (default 127.0.0.1)"},
         {"chain-id", "ID",
          "chain id, 1..64 printable ASCII characters (default popchain-testnet)"},
         {"wallets", "W", "funded wallets w0..w{W-1} in DIR/wallets (default 4)"},
         {"balance", "B", "initial balance of each wallet (default 1000000)"},
         {"app", "NAME",
          "consensus-only: the genesis takes unsigned 8-byte commands and every node runs "
          "the built-in application NAME (noop)"},
         {"force", "",
          "replace an existing testnet in DIR (refused while it runs); keeps its passphrase "
          "and the wallets made with wallet new"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        // Every option is checked before anything is written or removed.
        std::string err;
        const auto n = a.get_uint("nodes", 4, 1, 64, err);
        const auto base = a.get_uint("base-port", 7000, 1, 65535 - 164, err);
        const auto wallets = a.get_uint("wallets", 4, 0, max_init_wallets, err);
        const auto balance = a.get_uint("balance", 1'000'000, 0, 1'000'000'000'000'000ull, err);
        if (!n || !base || !wallets || !balance) return usage_fail(spec, err);
        const std::string app = a.get("app", "");
        if (!app.empty() && app != "noop")
            return usage_fail(spec, "--app " + app + ": the built-in applications are: noop");
        auto layout_or = layout_of(a.get("dir"));
        if (!layout_or) return usage_fail(spec, layout_or.error().detail);
        const Layout layout = *layout_or;
        const std::string host = a.get("host", "127.0.0.1");
        if (auto ok = check_host(host); !ok) return usage_fail(spec, ok.error().detail);
        const std::string chain_id = a.get("chain-id", "popchain-testnet");
        if (chain_id.empty() || chain_id.size() > max_chain_id_bytes || !printable_ascii(chain_id))
            return usage_fail(spec, "--chain-id must be 1.." + std::to_string(max_chain_id_bytes) +
                                        " printable ASCII characters, not \"" + chain_id + "\"");

        // An existing testnet: refused without --force; with it, what the earlier init and
        // its nodes wrote is listed for removal (nothing else in DIR).
        std::string passphrase;
        std::vector<fs::path> old_files; // removed with everything under them
        std::vector<fs::path> old_dirs;  // removed if empty afterwards
        std::set<std::string> old_wallets;
        if (present(layout.genesis()) || present(layout.config(0)) ||
            present(layout.passphrase()) || present(layout.authority_key())) {
            if (!a.flag("force"))
                return fail(layout.dir.string() +
                            " already holds a testnet (use --force to replace it)");
            for (auto i : layout.nodes())
                if (running_pid(layout, i))
                    return fail("node " + std::to_string(i) +
                                " of the testnet is running: stop it first (testnet down)");
            // The passphrase stays, so the wallets that stay still open with it.
            if (auto p = read_testnet_passphrase(layout); p && !p->empty())
                passphrase = *p;
            else
                old_files.push_back(layout.passphrase());
            old_files.push_back(layout.genesis());
            old_files.push_back(layout.authority_key());
            for (std::uint32_t i = 0; i < max_replicas && present(layout.node_dir(i)); ++i) {
                for (const char* f :
                     {"config.json", "replica.key", "node.pid", "node.pid.tmp", "node.log", "data"})
                    old_files.push_back(layout.node_dir(i) / f);
                old_dirs.push_back(layout.node_dir(i));
            }
            old_wallets = init_wallets(layout);
            for (const auto& alias : old_wallets)
                old_files.push_back(Keystore(layout.wallets()).path_of(alias));
        }
        Keystore keystore(layout.wallets(), testnet_kdf_msec);
        for (std::uint64_t w = 0; w < *wallets; ++w) {
            const std::string alias = "w" + std::to_string(w);
            if (keystore.contains(alias) && !old_wallets.count(alias))
                return fail(keystore.path_of(alias).string() +
                            " exists and is not a wallet of the testnet being replaced (made "
                            "with wallet new?): move it away or give --wallets " +
                            std::to_string(w));
        }

        // Everything is made in memory first; a genesis that does not build writes nothing.
        if (passphrase.empty()) passphrase = to_hex(random_bytes(24));
        Genesis g;
        g.params.chain_id = chain_id;
        g.timestamp_ms =
            static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
        const SigningKey authority = SigningKey::generate();
        g.params.authority = authority.public_key();
        if (app == "noop") g.params.commands = noop_command_rules();
        auto authority_pem = authority.encrypted_pem(passphrase, testnet_kdf_msec);
        if (!authority_pem) return fail("authority key: " + authority_pem.error().message());

        struct NodeFiles {
            std::string key_pem;
            std::string config;
        };
        std::vector<NodeFiles> node_files;
        const std::uint32_t request_timeout_ms = testnet_request_timeout_ms(*n);
        for (std::uint32_t i = 0; i < *n; ++i) {
            const SigningKey key = SigningKey::generate();
            const Endpoint ep{host, static_cast<std::uint16_t>(*base + i)};
            g.replicas.push_back({i, key.public_key(), ep.to_string()});
            auto pem = key.encrypted_pem(passphrase, testnet_kdf_msec);
            if (!pem) return fail("replica key: " + pem.error().message());
            // Relative paths: the testnet directory can be moved as a whole.
            nlohmann::json config = {
                {"id", i},
                {"data_dir", "data"},
                {"genesis", "../genesis.json"},
                {"key_file", "replica.key"},
                {"passphrase_file", "../passphrase"},
                {"listen", ep.to_string()},
                {"accept_clients", true},
                {"api", Endpoint{host, static_cast<std::uint16_t>(*base + 100 + i)}.to_string()},
                {"status_interval_ms", 5000},
                {"replica", {{"request_timeout_ms", request_timeout_ms}}}};
            if (!app.empty()) config["application"] = app;
            node_files.push_back({std::move(pem).value(), config.dump(2) + "\n"});
        }
        std::vector<Wallet> made;
        for (std::uint64_t w = 0; w < *wallets; ++w) {
            made.push_back(Wallet::generate("w" + std::to_string(w)));
            if (*balance > 0) g.balances.push_back({made.back().address(), *balance});
        }
        if (auto built = g.build(); !built) return fail("genesis: " + built.error().message());

        // Out with the old testnet, in with the new. If a write fails, what this run wrote
        // is removed again, so a rerun does not find half a testnet.
        std::error_code ec;
        for (const auto& p : old_files)
            fs::remove_all(p, ec);
        for (const auto& d : old_dirs)
            fs::remove(d, ec);
        std::vector<fs::path> written;
        auto undo = [&](const std::string& why) {
            for (auto it = written.rbegin(); it != written.rend(); ++it) {
                std::error_code ignored;
                fs::remove(*it, ignored); // a directory only if empty
            }
            return fail(why);
        };
        auto write = [&](const fs::path& file, const std::string& text, mode_t mode) {
            auto ok = write_new_file(file, text, mode);
            if (ok) written.push_back(file);
            return ok;
        };
        auto make_dir = [&](const fs::path& dir) -> Result<void> {
            if (present(dir)) return {};
            std::error_code e;
            fs::create_directories(dir, e);
            if (e)
                return make_error(Errc::io_error,
                                  "cannot create " + dir.string() + ": " + e.message());
            written.push_back(dir);
            return {};
        };
        if (auto ok = make_dir(layout.dir); !ok) return undo(ok.error().message());
        if (!present(layout.passphrase()))
            if (auto ok = write(layout.passphrase(), passphrase + "\n", 0600); !ok)
                return undo(ok.error().message());
        if (auto ok = write(layout.authority_key(), *authority_pem, 0600); !ok)
            return undo(ok.error().message());
        for (std::uint32_t i = 0; i < *n; ++i) {
            if (auto ok = make_dir(layout.node_dir(i)); !ok) return undo(ok.error().message());
            if (auto ok = write(layout.node_dir(i) / "replica.key", node_files[i].key_pem, 0600);
                !ok)
                return undo(ok.error().message());
            if (auto ok = write(layout.config(i), node_files[i].config, 0644); !ok)
                return undo(ok.error().message());
        }
        // The keystore makes its directory itself (mode 0700).
        bool wallets_dir_known = present(layout.wallets());
        for (const auto& wallet : made) {
            auto ok = keystore.save(wallet, passphrase);
            if (!wallets_dir_known && present(layout.wallets())) {
                written.push_back(layout.wallets());
                wallets_dir_known = true;
            }
            if (!ok) return undo("wallet " + wallet.alias() + ": " + ok.error().message());
            written.push_back(keystore.path_of(wallet.alias()));
        }
        if (auto ok = write(layout.genesis(), g.to_json(), 0644); !ok)
            return undo(ok.error().message());
        std::printf("testnet of %u nodes in %s (chain %s, %u wallets)\n", static_cast<unsigned>(*n),
                    layout.dir.c_str(), g.params.chain_id.c_str(), static_cast<unsigned>(*wallets));
        return exit_ok;
    });
}

// ---------------------------------------------------------------- testnet up

int cmd_testnet_up(int argc, char** argv, int first) {
    const CommandSpec spec{
        "testnet up",
        "Starts every node of the testnet that is not running (or only node I), in the "
        "background\n(pid in node<i>/node.pid, log in node<i>/node.log).",
        {{"dir", "DIR", "the testnet directory", true},
         {"node", "I", "start only node I (it must not be running)"},
         {"timeout", "S", "seconds to wait for each node to listen (default 20)"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        std::string err;
        const auto timeout = a.get_uint("timeout", 20, 1, 3600, err);
        const auto only = a.get_uint("node", 0, 0, max_replicas - 1, err);
        if (!timeout || !only) return usage_fail(spec, err);
        auto layout_or = layout_of(a.get("dir"));
        if (!layout_or) return usage_fail(spec, layout_or.error().detail);
        const Layout layout = *layout_or;
        const auto nodes = layout.nodes();
        if (nodes.empty()) return fail("no testnet in " + layout.dir.string() + " (testnet init)");
        std::vector<std::uint32_t> to_start;
        if (a.has("node")) {
            const auto i = static_cast<std::uint32_t>(*only);
            if (std::find(nodes.begin(), nodes.end(), i) == nodes.end())
                return fail("no node " + std::to_string(i) + " in " + layout.dir.string());
            if (running_pid(layout, i))
                return fail("node " + std::to_string(i) + " is already running");
            to_start.push_back(i);
        } else {
            for (auto i : nodes)
                if (!running_pid(layout, i)) to_start.push_back(i);
        }
        if (to_start.empty()) return fail("the testnet is already running");
        const std::string exe = self_exe();

        struct Started {
            std::uint32_t node;
            pid_t pid;
            std::uintmax_t log_offset;
        };
        std::vector<Started> started;
        for (auto i : to_start) {
            const std::string config = layout.config(i).lexically_normal().string();
            const std::string log = layout.log_file(i).string();
            std::error_code ec;
            std::uintmax_t offset = fs::exists(log, ec) ? fs::file_size(log, ec) : 0;
            if (ec) offset = 0;
            // Built before fork: the child only makes async-signal-safe calls until exec.
            std::vector<char*> child_argv{const_cast<char*>(exe.c_str()), const_cast<char*>("node"),
                                          const_cast<char*>("--config"),
                                          const_cast<char*>(config.c_str()), nullptr};
            const pid_t pid = ::fork();
            if (pid < 0) return fail("fork failed");
            if (pid == 0) {
                ::setsid(); // not in our process group: a ^C here does not stop the testnet
                const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
                const int in = ::open("/dev/null", O_RDONLY);
                if (out < 0 || in < 0) ::_exit(126);
                ::dup2(in, STDIN_FILENO);
                ::dup2(out, STDOUT_FILENO);
                ::dup2(out, STDERR_FILENO);
                ::execv(child_argv[0], child_argv.data());
                ::_exit(127);
            }
            const fs::path pid_file = layout.pid_file(i);
            const fs::path tmp = pid_file.string() + ".tmp";
            fs::remove(tmp, ec);
            if (auto ok = write_new_file(tmp, std::to_string(pid) + "\n", 0644); !ok)
                return fail(ok.error().message());
            fs::rename(tmp, pid_file, ec);
            if (ec) return fail("cannot write " + pid_file.string());
            started.push_back({i, pid, offset});
        }

        // Wait until each node says it listens, or exits (then show why).
        int rc = exit_ok;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*timeout);
        for (const auto& s : started) {
            for (;;) {
                auto log = read_file(layout.log_file(s.node));
                const std::string fresh =
                    log && log->size() > s.log_offset ? log->substr(s.log_offset) : "";
                if (fresh.find("listening on") != std::string::npos) {
                    std::printf("node %u started, pid %d\n", s.node, static_cast<int>(s.pid));
                    break;
                }
                int status = 0;
                if (::waitpid(s.pid, &status, WNOHANG) == s.pid) {
                    std::fprintf(stderr, "popchain: node %u failed to start:\n%s", s.node,
                                 fresh.c_str());
                    std::error_code ec;
                    fs::remove(layout.pid_file(s.node), ec);
                    rc = exit_failure;
                    break;
                }
                if (std::chrono::steady_clock::now() > deadline) {
                    std::fprintf(stderr,
                                 "popchain: node %u (pid %d) is not listening yet; see %s\n",
                                 s.node, static_cast<int>(s.pid), layout.log_file(s.node).c_str());
                    rc = exit_failure;
                    break;
                }
                std::this_thread::sleep_for(50ms);
            }
        }
        return rc;
    });
}

// ---------------------------------------------------------------- testnet down

int cmd_testnet_down(int argc, char** argv, int first) {
    const CommandSpec spec{
        "testnet down",
        "Stops every running node of the testnet: SIGTERM, then SIGKILL after the timeout.",
        {{"dir", "DIR", "the testnet directory", true},
         {"timeout", "S", "seconds to wait after SIGTERM before SIGKILL (default 10)"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        std::string err;
        const auto timeout = a.get_uint("timeout", 10, 0, 3600, err);
        if (!timeout) return usage_fail(spec, err);
        auto layout_or = layout_of(a.get("dir"));
        if (!layout_or) return usage_fail(spec, layout_or.error().detail);
        const Layout layout = *layout_or;
        const auto nodes = layout.nodes();
        if (nodes.empty()) return fail("no testnet in " + layout.dir.string());
        std::vector<std::pair<std::uint32_t, pid_t>> running;
        for (auto i : nodes) {
            if (auto pid = running_pid(layout, i)) {
                ::kill(*pid, SIGTERM);
                running.emplace_back(i, *pid);
            } else {
                std::error_code ec;
                fs::remove(layout.pid_file(i), ec); // stale
            }
        }
        if (running.empty()) {
            std::printf("no node running\n");
            return exit_ok;
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*timeout);
        int rc = exit_ok;
        for (const auto& [i, pid] : running) {
            while (process_alive(pid) && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(20ms);
            if (process_alive(pid)) {
                ::kill(pid, SIGKILL);
                if (*timeout == 0)
                    std::fprintf(stderr,
                                 "popchain: node %u (pid %d) had not stopped right after SIGTERM "
                                 "(--timeout 0); killed with SIGKILL\n",
                                 i, static_cast<int>(pid));
                else
                    std::fprintf(stderr,
                                 "popchain: node %u (pid %d) did not stop within %llu s of "
                                 "SIGTERM; killed with SIGKILL\n",
                                 i, static_cast<int>(pid),
                                 static_cast<unsigned long long>(*timeout));
                rc = exit_failure;
            } else {
                std::printf("node %u stopped\n", i);
            }
            std::error_code ec;
            fs::remove(layout.pid_file(i), ec);
        }
        return rc;
    });
}

// ---------------------------------------------------------------- testnet status

int cmd_testnet_status(int argc, char** argv, int first) {
    const CommandSpec spec{
        "testnet status",
        "Per node: running or not, its pid, and the height and view of the last block in its "
        "store\n(read from chain.db; the store may be read while the node writes it).",
        {{"dir", "DIR", "the testnet directory", true},
         {"json", "", "one JSON object per line instead of text"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        auto layout_or = layout_of(a.get("dir"));
        if (!layout_or) return usage_fail(spec, layout_or.error().detail);
        const Layout layout = *layout_or;
        const auto nodes = layout.nodes();
        if (nodes.empty()) return fail("no testnet in " + layout.dir.string());
        for (auto i : nodes) {
            const auto pid = running_pid(layout, i);
            std::optional<std::uint64_t> height, view;
            std::string problem;
            std::error_code ec;
            if (fs::exists(layout.chain_db(i), ec)) {
                auto store = SqliteStore::open(layout.chain_db(i));
                if (!store) {
                    problem = store.error().message();
                } else if (auto tip = (*store)->tip_height()) {
                    height = *tip;
                    if (auto block = (*store)->block_at(*tip)) view = block->header.view;
                }
            }
            if (a.flag("json")) {
                nlohmann::json j = {{"node", i}, {"running", pid.has_value()}};
                j["pid"] = pid ? nlohmann::json(*pid) : nlohmann::json(nullptr);
                j["height"] = height ? nlohmann::json(*height) : nlohmann::json(nullptr);
                j["view"] = view ? nlohmann::json(*view) : nlohmann::json(nullptr);
                if (!problem.empty()) j["error"] = problem;
                std::printf("%s\n", j.dump().c_str());
                continue;
            }
            std::string line = "node" + std::to_string(i) + "  ";
            line += pid ? "running  pid " + std::to_string(*pid) : std::string("stopped");
            if (height) line += "  height " + std::to_string(*height);
            if (view) line += "  view " + std::to_string(*view);
            if (!height && problem.empty()) line += "  (no chain yet)";
            if (!problem.empty()) line += "  store: " + problem;
            std::printf("%s\n", line.c_str());
        }
        return exit_ok;
    });
}

} // namespace popchain::cli
