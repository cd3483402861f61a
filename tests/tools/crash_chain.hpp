// The chain the crash-safety test writes, shared by the writer (tests/tools/crash_writer.cpp)
// and the test that checks its store (tests/unit/crash_test.cpp), so both build the same
// genesis from the same seed.
//
// Keys come from the seed, key i = SigningKey::from_secret(sha256(seed || u32le(i))):
// 0 is the authority, 1..replica_count the replicas, first_user.. the users.
#pragma once

#include <popchain/genesis.hpp>

#include <string_view>
#include <vector>

namespace popchain::crash_chain {

inline constexpr std::uint32_t replica_count = 4;
inline constexpr std::uint32_t user_count = 8;
inline constexpr std::uint32_t first_user = 1 + replica_count;
inline constexpr std::uint32_t key_count = first_user + user_count;

// A SHA-256 output is a valid P-256 scalar except with probability about 2^-32.
inline Result<SigningKey> key(std::string_view seed, std::uint32_t i) {
    Bytes material = to_bytes(seed);
    for (int b = 0; b < 4; ++b)
        material.push_back(static_cast<std::uint8_t>(i >> (8 * b)));
    return SigningKey::from_secret(sha256(material).view());
}

// All key_count keys of the seed, in order.
inline Result<std::vector<SigningKey>> keys(std::string_view seed) {
    std::vector<SigningKey> out;
    for (std::uint32_t i = 0; i < key_count; ++i) {
        auto k = key(seed, i);
        if (!k) return k.error();
        out.push_back(std::move(*k));
    }
    return out;
}

inline Genesis genesis(const std::vector<SigningKey>& keys) {
    Genesis g;
    g.params.chain_id = "crash-test";
    g.params.authority = keys[0].public_key();
    for (std::uint32_t i = 0; i < replica_count; ++i)
        g.replicas.push_back({i, keys[1 + i].public_key(), ""});
    for (std::uint32_t i = 0; i < user_count; ++i)
        g.balances.emplace_back(keys[first_user + i].address(), 1'000'000);
    return g;
}

} // namespace popchain::crash_chain
