// Helpers shared by the unit tests.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/result.hpp>

#include <doctest/doctest.h>

#include <string>

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

} // namespace popchain::test
