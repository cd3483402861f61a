// The two implementations of ECDSA P-256 verification behind popchain::verify(). Internal:
// not installed, not part of the public surface. The unit tests and the benchmark include it
// (they add lib/ to their include path) to hold the two side by side.
//
// Each function decides exactly what verify() documents: a 33-byte compressed key, a 32-byte
// digest signed as is (not hashed again), a 64-byte r||s signature with s <= n/2. With
// allow_high_s the s <= n/2 rule is skipped, so the tests can also compare the two backends
// on signatures that only the low-S rule rejects.
#pragma once

#include <popchain/crypto.hpp>

#include <string>

namespace popchain::detail {

// Botan 2: the only backend when the library is configured with -DPOPCHAIN_OPENSSL_VERIFY=OFF.
bool verify_with_botan(const PublicKey& key, const Hash256& digest, const Signature& sig,
                       bool allow_high_s = false);

#if POPCHAIN_OPENSSL_VERIFY
// OpenSSL 3 libcrypto (its EC_KEY/ECDSA interface): what verify() uses when the option is on.
bool verify_with_openssl(const PublicKey& key, const Hash256& digest, const Signature& sig,
                         bool allow_high_s = false);
#endif

// What verify() runs, e.g. "OpenSSL 3.0.19 1 Jul 2025" or "Botan 2.19.3", for reports.
std::string verify_backend();

} // namespace popchain::detail
