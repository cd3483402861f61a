// ECDSA P-256 verification with OpenSSL 3 libcrypto. Every replica checks every client
// signature, so verification bounds throughput; OpenSSL's P-256 code (constant-time
// assembly field arithmetic and a precomputed table for the base point) verifies about four
// times as fast as Botan 2 on the project's machines (docs/dependencies.md). Keys, signing and
// everything else stay on Botan: this file only decides accept or reject, and it must decide
// exactly as detail::verify_with_botan does (tests/unit/crypto_backends_test.cpp).
#include "crypto_backends.hpp"

#if POPCHAIN_OPENSSL_VERIFY

// The EC_KEY/ECDSA_do_verify interface is deprecated in OpenSSL 3 in favour of EVP, but it
// is still shipped and supported through 3.x, and for the workload that matters here (a key
// never seen before on almost every transaction) it costs a third less per verification: the
// EVP route builds a provider key, a key check context and a verify context, and fetches
// the digest, for every new key (profile in docs/benchmarks.md).
#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <unordered_map>

namespace popchain::detail {

namespace {

struct Free {
    void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
    void operator()(EC_KEY* k) const { EC_KEY_free(k); }
    void operator()(EC_POINT* p) const { EC_POINT_free(p); }
    void operator()(BN_CTX* c) const { BN_CTX_free(c); }
    void operator()(BIGNUM* b) const { BN_free(b); }
    void operator()(BN_MONT_CTX* m) const { BN_MONT_CTX_free(m); }
    void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
template <class T>
using Owned = std::unique_ptr<T, Free>;

// (n - 1) / 2 for the P-256 group order n, big-endian: the largest s verify() accepts.
// Comparing bytes avoids a bignum allocation on every call.
constexpr std::array<std::uint8_t, 32> half_order = {
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};

bool low_s(const Signature& sig) {
    return std::memcmp(sig.data() + 32, half_order.data(), half_order.size()) <= 0;
}

// What each thread builds once: the curve (its field constants and the base point's
// precomputed table), and what decompressing a key needs (p, b, (p + 1) / 4, a Montgomery
// context for p). Objects from OpenSSL's low-level API must not be shared between threads
// while they are used, so every thread has its own.
struct Curve {
    Owned<EC_GROUP> group{EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)};
    Owned<BN_CTX> ctx{BN_CTX_new()};
    Owned<BIGNUM> p{BN_new()}, b{BN_new()}, sqrt_exponent{BN_new()};
    Owned<BN_MONT_CTX> mont{BN_MONT_CTX_new()};
    bool ready = false;

    Curve() {
        if (!group || !ctx || !p || !b || !sqrt_exponent || !mont) return;
        if (EC_GROUP_get_curve(group.get(), p.get(), nullptr, b.get(), ctx.get()) != 1) return;
        // p = 3 (mod 4), so a square a has the root a^((p + 1) / 4).
        if (BN_copy(sqrt_exponent.get(), p.get()) == nullptr ||
            BN_add_word(sqrt_exponent.get(), 1) != 1 ||
            BN_rshift(sqrt_exponent.get(), sqrt_exponent.get(), 2) != 1)
            return;
        ready = BN_MONT_CTX_set(mont.get(), p.get(), ctx.get()) == 1;
    }
};

Curve& curve() {
    thread_local Curve c;
    return c;
}

// The point with the key's x coordinate and the y whose parity the prefix gives, or null
// when there is none (x >= p, or x^3 - 3x + b not a square). OpenSSL's own decoder takes a
// general modular square root and builds a Montgomery context for p on every call, which
// was a tenth of a node's time when each transaction brings a new key.
Owned<EC_POINT> decompress(Curve& c, const PublicKey& key) {
    // The library's keys are compressed points only; Botan refuses every other prefix.
    if (key.bytes[0] != 0x02 && key.bytes[0] != 0x03) return nullptr;
    BN_CTX* ctx = c.ctx.get();
    BN_CTX_start(ctx);
    Owned<EC_POINT> point;
    BIGNUM* x = BN_CTX_get(ctx);
    BIGNUM* rhs = BN_CTX_get(ctx);
    BIGNUM* t = BN_CTX_get(ctx);
    BIGNUM* y = BN_CTX_get(ctx);
    const bool built =
        y != nullptr && BN_bin2bn(key.data() + 1, 32, x) != nullptr && BN_cmp(x, c.p.get()) < 0 &&
        // rhs = x^3 - 3x + b (mod p)
        BN_mod_sqr(t, x, c.p.get(), ctx) == 1 && BN_mod_mul(rhs, t, x, c.p.get(), ctx) == 1 &&
        BN_mod_lshift1_quick(t, x, c.p.get()) == 1 && BN_mod_add_quick(t, t, x, c.p.get()) == 1 &&
        BN_mod_sub_quick(rhs, rhs, t, c.p.get()) == 1 &&
        BN_mod_add_quick(rhs, rhs, c.b.get(), c.p.get()) == 1 &&
        BN_mod_exp_mont(y, rhs, c.sqrt_exponent.get(), c.p.get(), ctx, c.mont.get()) == 1 &&
        BN_mod_sqr(t, y, c.p.get(), ctx) == 1 && BN_cmp(t, rhs) == 0;
    if (built) {
        // The root found may have the other parity; p - y has the same square.
        const bool odd = key.bytes[0] == 0x03;
        if (!BN_is_zero(y) && BN_is_odd(y) != odd) (void)BN_sub(y, c.p.get(), y);
        if (BN_is_odd(y) == odd) {
            point.reset(EC_POINT_new(c.group.get()));
            // Sets the point and checks it is on the curve (it is, by construction: the
            // check states that here instead of relying on the arithmetic above). P-256 has
            // cofactor 1, so no subgroup check is needed.
            if (point &&
                EC_POINT_set_affine_coordinates(c.group.get(), point.get(), x, y, ctx) != 1)
                point.reset();
        }
    }
    BN_CTX_end(ctx);
    return point;
}

// Decompressing a key costs a modular exponentiation, a sizeable share of one verification,
// and the same few keys (clients, replicas) sign most messages. So each thread keeps the
// keys it has decoded recently.
constexpr std::size_t max_ready_keys = 1024;

EC_KEY* key_for(Curve& c, const PublicKey& key) {
    thread_local std::unordered_map<PublicKey, Owned<EC_KEY>, FixedBytesHash> ready;
    if (auto it = ready.find(key); it != ready.end()) return it->second.get();
    Owned<EC_POINT> point = decompress(c, key);
    if (!point) return nullptr;
    Owned<EC_KEY> k(EC_KEY_new());
    if (!k || EC_KEY_set_group(k.get(), c.group.get()) != 1 ||
        EC_KEY_set_public_key(k.get(), point.get()) != 1)
        return nullptr;
    if (ready.size() >= max_ready_keys) ready.clear();
    return ready.emplace(key, std::move(k)).first->second.get();
}

} // namespace

bool verify_with_openssl(const PublicKey& key, const Hash256& digest, const Signature& sig,
                         bool allow_high_s) {
    if (!allow_high_s && !low_s(sig)) return false;
    Curve& c = curve();
    bool good = false;
    if (EC_KEY* k = c.ready ? key_for(c, key) : nullptr) {
        Owned<ECDSA_SIG> s(ECDSA_SIG_new());
        BIGNUM* r_value = BN_bin2bn(sig.data(), 32, nullptr);
        BIGNUM* s_value = BN_bin2bn(sig.data() + 32, 32, nullptr);
        // set0 takes both values only when it succeeds.
        if (s && r_value && s_value && ECDSA_SIG_set0(s.get(), r_value, s_value) == 1) {
            // Checks 0 < r, s < n itself; the digest is used as is (32 bytes, a 256-bit order).
            good = ECDSA_do_verify(digest.data(), static_cast<int>(digest.size()), s.get(), k) == 1;
        } else {
            BN_free(r_value);
            BN_free(s_value);
        }
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
