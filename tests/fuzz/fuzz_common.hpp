// Shared by the libFuzzer targets and the seed generator: the property check and the fixed
// chain whose blocks the seeds are, so that fuzzed blocks can get deep into Ledger::execute.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/result.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

// A property the library promises does not hold: stop with a message, so libFuzzer records
// the input as a crash. (assert() would vanish in the NDEBUG builds the fuzzers use.)
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            std::fprintf(stderr, "property violated: %s\n  at %s:%d\n", #cond, __FILE__,           \
                         __LINE__);                                                                \
            std::abort();                                                                          \
        }                                                                                          \
    } while (0)

namespace popchain::fuzz {

// The only errors decoding may report (codec.hpp, decode_tx's kind check, and malformed for
// a command's signed flag that is neither 0 nor 1, or 1 with a zero key). Anything else
// would mean a decoder validates more than the wire format, or reports the wrong thing.
inline bool is_decode_error(Errc code) {
    return code == Errc::truncated || code == Errc::trailing_bytes || code == Errc::too_large ||
           code == Errc::unknown_kind || code == Errc::malformed;
}

// Deterministic keys: the same seeds and the same genesis on every run and machine.
inline SigningKey key(const std::string& label) {
    auto secret = sha256("popchain-fuzz/key/" + label);
    auto k = SigningKey::from_secret(secret.view());
    if (!k) std::abort(); // a SHA-256 output at or above the group order: ~2^-32, never seen
    return std::move(k).value();
}

inline constexpr const char* chain_id = "popchain-fuzz";

// The chain the block seeds extend: an authority, one replica, two funded accounts.
inline Genesis genesis() {
    Genesis g;
    g.params.chain_id = chain_id;
    g.params.authority = key("authority").public_key();
    g.timestamp_ms = 1'700'000'000'000;
    g.replicas.push_back({0, key("replica-0").public_key(), "127.0.0.1:7000"});
    g.balances.emplace_back(key("alice").address(), 1'000'000);
    g.balances.emplace_back(key("bob").address(), 500);
    return g;
}

} // namespace popchain::fuzz
