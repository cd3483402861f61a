// Helpers shared by the unit tests.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/result.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <deque>
#include <filesystem>
#include <string>
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

} // namespace popchain::test
