// ECDSA P-256 verification with OpenSSL 3 libcrypto. Every replica checks every client
// signature, so verification bounds throughput; OpenSSL's P-256 code (constant-time
// assembly field arithmetic and a precomputed table for the base point) verifies about four
// times as fast as Botan 2 on the project's machines (docs/dependencies.md). Keys, signing and
// everything else stay on Botan: this file only decides accept or reject, and it must decide
// exactly as detail::verify_with_botan does (tests/unit/crypto_backends_test.cpp).
#include "crypto_backends.hpp"

#if POPCHAIN_OPENSSL_VERIFY

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace popchain::detail {

namespace {

struct CtxFree {
    void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct PkeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using CtxPtr = std::unique_ptr<EVP_PKEY_CTX, CtxFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// (n - 1) / 2 for the P-256 group order n, big-endian: the largest s verify() accepts.
// Comparing bytes avoids a bignum allocation on every call.
constexpr std::array<std::uint8_t, 32> half_order = {
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};

bool low_s(const Signature& sig) {
    return std::memcmp(sig.data() + 32, half_order.data(), half_order.size()) <= 0;
}

// A key holding only the curve, per thread. Building P-256 from its name (parameters,
// Montgomery constants, a modular inverse) cost as much as the point decompression; copying
// a built one does not (profile of a node checking one new key per transaction).
EVP_PKEY* curve_template() {
    thread_local PkeyPtr curve = [] {
        CtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
        EVP_PKEY* raw = nullptr;
        char group[] = "prime256v1";
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
            OSSL_PARAM_construct_end()};
        if (ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1)
            (void)EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEY_PARAMETERS, params);
        return PkeyPtr(raw);
    }();
    return curve.get();
}

PkeyPtr load_public(const PublicKey& key) {
    // OpenSSL would also take other SEC1 forms given the right length; the library's keys are
    // compressed points only, and Botan refuses every other prefix at 33 bytes.
    if (key.bytes[0] != 0x02 && key.bytes[0] != 0x03) return nullptr;
    EVP_PKEY* curve = curve_template();
    if (!curve) return nullptr;
    PkeyPtr pkey(EVP_PKEY_dup(curve));
    if (!pkey || EVP_PKEY_set1_encoded_public_key(pkey.get(), key.data(), key.size()) != 1)
        return nullptr;
    // Decoding already refuses x >= p and an x with no square root, so the point is on the
    // curve and not infinity; the check states that here instead of leaving it to the
    // decoder's internals. P-256 has cofactor 1, so no subgroup check is needed.
    CtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
    if (!check || EVP_PKEY_public_check_quick(check.get()) != 1) return nullptr;
    return pkey;
}

// Building a key from its compressed form costs a square root mod p and OpenSSL 3's provider
// lookups, a sizeable share of one verification, and the same few keys (clients, replicas)
// sign most messages. So each thread keeps verify-initialised contexts for recently seen keys;
// an EVP_PKEY_CTX must not be shared between threads, and OpenSSL documents that
// EVP_PKEY_verify() may be called repeatedly on one context. Each context holds a reference
// to its key.
constexpr std::size_t max_ready_verifiers = 1024;

EVP_PKEY_CTX* verifier_for(const PublicKey& key) {
    thread_local std::unordered_map<PublicKey, CtxPtr, FixedBytesHash> ready;
    if (auto it = ready.find(key); it != ready.end()) return it->second.get();
    PkeyPtr pkey = load_public(key);
    if (!pkey) return nullptr;
    CtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1) return nullptr;
    // Not a second hash: with a digest named, OpenSSL refuses input that is not exactly 32
    // bytes, as Botan's "Raw(SHA-256)" does.
    if (EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1) return nullptr;
    if (ready.size() >= max_ready_verifiers) ready.clear();
    return ready.emplace(key, std::move(ctx)).first->second.get();
}

// OpenSSL 3.0 takes ECDSA signatures only as DER; the library's form is r||s. Each half
// becomes a minimal INTEGER (leading zero bytes dropped, one zero byte added when the top bit
// is set so the value stays non-negative). At most 2 + 2 * 35 = 72 bytes, so every length
// fits the one-byte form. OpenSSL refuses any encoding it would not produce itself, so a
// mistake here would reject valid signatures, not accept bad ones.
std::size_t put_integer(const std::uint8_t* value, std::uint8_t* out) {
    std::size_t skip = 0;
    while (skip < 31 && value[skip] == 0)
        ++skip;
    const std::size_t pad = (value[skip] & 0x80) ? 1 : 0;
    const std::size_t length = 32 - skip + pad;
    out[0] = 0x02;
    out[1] = static_cast<std::uint8_t>(length);
    out[2] = 0x00;
    std::memcpy(out + 2 + pad, value + skip, 32 - skip);
    return 2 + length;
}

std::size_t to_der(const Signature& sig, std::array<std::uint8_t, 72>& out) {
    std::size_t at = 2;
    at += put_integer(sig.data(), out.data() + at);
    at += put_integer(sig.data() + 32, out.data() + at);
    out[0] = 0x30;
    out[1] = static_cast<std::uint8_t>(at - 2);
    return at;
}

} // namespace

bool verify_with_openssl(const PublicKey& key, const Hash256& digest, const Signature& sig,
                         bool allow_high_s) {
    if (!allow_high_s && !low_s(sig)) return false;
    bool good = false;
    if (EVP_PKEY_CTX* ctx = verifier_for(key)) {
        std::array<std::uint8_t, 72> der;
        const std::size_t der_size = to_der(sig, der);
        good = EVP_PKEY_verify(ctx, der.data(), der_size, digest.data(), digest.size()) == 1;
    }
    // A rejection can leave entries in the thread's OpenSSL error queue; nothing reads them,
    // and stale ones would mislead whatever next inspects the queue on this thread.
    if (!good) ERR_clear_error();
    return good;
}

std::string verify_backend() {
    return OpenSSL_version(OPENSSL_VERSION);
}

} // namespace popchain::detail

#endif
