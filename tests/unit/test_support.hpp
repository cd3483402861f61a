// Helpers shared by the unit tests.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/result.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace popchain::test {

// Error codes as names, so a failing CHECK prints "nonce_gap" rather than a number.
inline std::string code_name(Errc c) {
    return errc_name(c);
}
template <class T>
std::string code_of(const Result<T>& r) {
    return r.ok() ? "ok" : errc_name(r.code());
}

// A deterministic key: the secret is 32 copies of `b` (b != 0).
inline SigningKey key_from_byte(std::uint8_t b) {
    auto k = SigningKey::from_secret(Bytes(32, b));
    REQUIRE(k.ok());
    return std::move(k).value();
}

// Lets the simulator hand a Transport to a node before its receiver (a Replica) exists.
struct Shim : net::Receiver {
    net::Receiver* target = nullptr;
    void on_message(net::NodeId from, ByteView message) override {
        if (target) target->on_message(from, message);
    }
    void on_burst_begin() override {
        if (target) target->on_burst_begin();
    }
    void on_burst_end() override {
        if (target) target->on_burst_end();
    }
};

// The identities and genesis of a test chain: replica i has key_from_byte(replica_key + i)
// and id i; wallet w has key_from_byte(wallet_key + w) and `balance`; the authority key is
// key_from_byte(0xa0). Keys sit in a deque because replicas keep references to them.
struct TestChain {
    std::deque<SigningKey> replica_keys;
    std::vector<SigningKey> wallets;
    Genesis genesis;
};
inline TestChain make_test_chain(std::string chain_id, std::uint32_t replicas, std::size_t wallets,
                                 std::uint8_t replica_key = 0x10, std::uint8_t wallet_key = 0xc0,
                                 std::uint64_t balance = 1'000'000) {
    TestChain c;
    c.genesis.params.chain_id = std::move(chain_id);
    c.genesis.params.authority = key_from_byte(0xa0).public_key();
    c.genesis.timestamp_ms = 1'700'000'000'000ull;
    for (std::uint32_t i = 0; i < replicas; ++i) {
        c.replica_keys.push_back(key_from_byte(static_cast<std::uint8_t>(replica_key + i)));
        c.genesis.replicas.push_back({i, c.replica_keys[i].public_key(), ""});
    }
    for (std::size_t w = 0; w < wallets; ++w) {
        c.wallets.push_back(key_from_byte(static_cast<std::uint8_t>(wallet_key + w)));
        c.genesis.balances.push_back({c.wallets[w].address(), balance});
    }
    return c;
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "popchain-test-XXXXXX").string();
        char* made = ::mkdtemp(pattern.data());
        REQUIRE(made != nullptr);
        path_ = made;
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

// A writer process killed with SIGKILL at an arbitrary instant, and what it had printed.
struct KilledRun {
    std::optional<std::string> last_line; // the last complete line: the kill may cut one short
    int status = 0;                       // from waitpid
};

// Runs `argv` (argv[0] the program) with its stdout on a pipe for `run_for`, then SIGKILLs it.
inline KilledRun run_and_kill(const std::vector<std::string>& argv,
                              std::chrono::milliseconds run_for) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    // Built before fork: the child may only make async-signal-safe calls until exec.
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (::dup2(fds[1], STDOUT_FILENO) < 0) ::_exit(126);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(fds[1]);
    std::this_thread::sleep_for(run_for);
    ::kill(pid, SIGKILL);
    KilledRun out;
    while (::waitpid(pid, &out.status, 0) < 0 && errno == EINTR) {
    }
    // The writer is dead, so the pipe ends after what it wrote.
    std::string text;
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n > 0) {
            text.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    ::close(fds[0]);
    if (const auto end = text.rfind('\n'); end != std::string::npos) {
        const std::string complete = text.substr(0, end);
        const auto start = complete.rfind('\n');
        out.last_line = complete.substr(start == std::string::npos ? 0 : start + 1);
    }
    return out;
}

} // namespace popchain::test
