// Hashes, keys, signatures and addresses (ECDSA over NIST P-256 with SHA-256, via Botan;
// verify() runs on OpenSSL's libcrypto unless the library is built with
// -DPOPCHAIN_OPENSSL_VERIFY=OFF, with the same decision for every input).
//
// Signatures are 64 bytes r||s, deterministic (RFC 6979) and normalised to low S: for every
// (r, s) the twin (r, n-s) is also a valid ECDSA signature, so verify() accepts only
// s <= n/2 and a third party cannot produce a second valid encoding of a signature.
// Public keys are 33-byte compressed SEC1 points.
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/result.hpp>

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

namespace popchain {

struct Hash256Tag {};
struct PublicKeyTag {};
struct SignatureTag {};
struct AddressTag {};

using Hash256 = FixedBytes<32, Hash256Tag>;
using PublicKey = FixedBytes<33, PublicKeyTag>;
using Signature = FixedBytes<64, SignatureTag>;

// SHA-256 of a byte string.
Hash256 sha256(ByteView data);
inline Hash256 sha256(std::string_view s) {
    return sha256(as_bytes(s));
}

// Incremental SHA-256, for hashing structures without building one big buffer.
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(Sha256&&) noexcept;
    Sha256& operator=(Sha256&&) noexcept;
    Sha256& update(ByteView data);
    Sha256& update(std::string_view s) { return update(as_bytes(s)); }
    template <std::size_t N, class Tag>
    Sha256& update(const FixedBytes<N, Tag>& v) {
        return update(v.view());
    }
    Hash256 finish();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// `count` bytes from a cryptographic RNG (Botan's AutoSeeded_RNG, one per thread): for
// nonces that must be unpredictable, such as the transport handshake's.
Bytes random_bytes(std::size_t count);

// HMAC-SHA256 of `data` under `key`.
Hash256 hmac_sha256(ByteView key, ByteView data);
// The MAC of prefix || data, without joining them first.
Hash256 hmac_sha256(ByteView key, ByteView prefix, ByteView data);
// HMAC-SHA256 under one key that is set once. Keying builds the two pad blocks and hashes
// the inner one; for the short messages of a replica link that was as much work as the MAC
// itself, so a link keeps one of these per peer instead of calling hmac_sha256(). Copies
// are keyed afresh. mac() changes internal state: one object is for one thread at a time.
class HmacSha256 {
public:
    explicit HmacSha256(ByteView key);
    ~HmacSha256();
    HmacSha256(const HmacSha256& other);
    HmacSha256& operator=(const HmacSha256& other);
    HmacSha256(HmacSha256&&) noexcept;
    HmacSha256& operator=(HmacSha256&&) noexcept;
    // The MAC of prefix || data; the same as hmac_sha256(key, prefix, data).
    Hash256 mac(ByteView prefix, ByteView data);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Compares two MACs in time independent of where they differ.
bool equal_in_constant_time(const Hash256& a, const Hash256& b);

// An account identifier: the first 20 bytes of SHA-256(compressed public key).
//
// Text form: "pop" followed by 48 lower-case hex digits: the 20 address bytes, then a
// 4-byte checksum, the first 4 bytes of SHA-256("popchain-address" || address bytes).
// parse() rejects a wrong prefix, wrong length, non-hex digits and a checksum mismatch,
// so a mistyped address is caught before any funds move. Upper-case hex is accepted.
struct Address : FixedBytes<20, AddressTag> {
    Address() = default;
    Address(const FixedBytes<20, AddressTag>& raw) : FixedBytes(raw) {}
    // Exactly 20 bytes, else the zero address (hides the base's from(), which would
    // return the base type).
    static Address from(ByteView v) { return Address(FixedBytes::from(v)); }
    static Address of(const PublicKey& key);
    static Result<Address> parse(std::string_view text);
    std::string to_string() const;
};

// Checks that 33 bytes are a valid compressed point on P-256.
Result<PublicKey> parse_public_key(ByteView bytes);

// Verifies a signature over a 32-byte digest (the digest is the ECDSA input as is, not hashed
// again). False for high-S signatures, r or s outside [1, n-1], keys that are not compressed
// points on P-256, and any mismatch. Thread-safe; each thread caches parsed keys.
bool verify(const PublicKey& key, const Hash256& digest, const Signature& sig);

// A P-256 private key. Move-only; the secret is wiped when the key is destroyed.
// sign() is thread-safe.
class SigningKey {
public:
    static SigningKey generate();
    // The 32-byte big-endian secret scalar; rejects zero and values >= the group order.
    static Result<SigningKey> from_secret(ByteView secret);

    SigningKey(SigningKey&&) noexcept;
    SigningKey& operator=(SigningKey&&) noexcept;
    ~SigningKey();

    const PublicKey& public_key() const { return public_key_; }
    Address address() const { return Address::of(public_key_); }
    Signature sign(const Hash256& digest) const;

    // Static-static ECDH with `peer`: SHA-256 of the shared point's x-coordinate. Both sides
    // get the same value (a.agree(b.public_key()) == b.agree(a.public_key())); replicas
    // derive their pairwise MAC keys from it. Fails only for a key not on the curve.
    Result<Hash256> agree(const PublicKey& peer) const;

    // The key as encrypted PKCS#8 PEM (PBES2: scrypt tuned to take about kdf_msec, then
    // AES-256/GCM). Used by the keystore; the secret never leaves unencrypted.
    Result<std::string> encrypted_pem(std::string_view passphrase, std::size_t kdf_msec) const;
    // Only an ENCRYPTED PRIVATE KEY block is accepted: a plaintext key file is refused.
    static Result<SigningKey> from_encrypted_pem(std::string_view pem, std::string_view passphrase);

private:
    struct Impl;
    explicit SigningKey(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    PublicKey public_key_;
};

// A bounded cache of signature checks that succeeded, so a transaction seen in the mempool
// is not verified again when its block arrives. Thread-safe; the oldest entries are
// evicted first. Failed checks are never cached.
class SignatureCache {
public:
    explicit SignatureCache(std::size_t capacity = 1 << 16) : capacity_(capacity) {}

    bool verify(const PublicKey& key, const Hash256& digest, const Signature& sig);
    std::size_t size() const;
    std::size_t hits() const;

private:
    static Hash256 entry_id(const PublicKey& key, const Hash256& digest, const Signature& sig);

    std::size_t capacity_;
    mutable std::mutex mutex_;
    std::deque<Hash256> order_; // insertion order, for eviction
    std::unordered_set<Hash256, FixedBytesHash> entries_;
    std::size_t hits_ = 0;
};

} // namespace popchain

template <>
struct std::hash<popchain::Address> {
    std::size_t operator()(const popchain::Address& a) const noexcept {
        return popchain::FixedBytesHash{}(a);
    }
};
