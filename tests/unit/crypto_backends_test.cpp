// Differential test of the two ECDSA verification backends (lib/crypto_backends.hpp): OpenSSL,
// which verify() uses, must accept and reject exactly what the Botan code it replaced does,
// on valid signatures and on every kind of damage a peer could send.
//
// POPCHAIN_DIFF_SIGNATURES=N sets how many random valid signatures the main case makes
// (default 2,000); each is also checked with three random mutations. The seed is random and
// printed on failure; POPCHAIN_DIFF_SEED=S repeats a run.
#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include <doctest/doctest.h>

#include "crypto_backends.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if POPCHAIN_OPENSSL_VERIFY

using namespace popchain;

namespace {

using Be32 = std::array<std::uint8_t, 32>;

// Also runs during static initialisation, outside any test, so no doctest assertions.
Be32 be32(std::string_view hex) {
    auto b = from_hex(hex);
    if (!b.ok() || b->size() != 32) std::abort();
    Be32 out;
    std::copy(b->begin(), b->end(), out.begin());
    return out;
}
// Curve constants (SEC 2), written out here rather than taken from either library.
const Be32 order_n = be32("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
const Be32 prime_p = be32("FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF");

// a + b mod 2^256 and a - b mod 2^256, big-endian.
Be32 add(const Be32& a, const Be32& b) {
    Be32 out;
    unsigned carry = 0;
    for (std::size_t i = 32; i-- > 0;) {
        unsigned v = a[i] + b[i] + carry;
        out[i] = static_cast<std::uint8_t>(v);
        carry = v >> 8;
    }
    return out;
}
Be32 sub(const Be32& a, const Be32& b) {
    Be32 out;
    int borrow = 0;
    for (std::size_t i = 32; i-- > 0;) {
        int v = int(a[i]) - int(b[i]) - borrow;
        borrow = v < 0 ? 1 : 0;
        out[i] = static_cast<std::uint8_t>(v + 256 * borrow);
    }
    return out;
}
Be32 small(unsigned v) {
    Be32 out{};
    out[31] = static_cast<std::uint8_t>(v);
    out[30] = static_cast<std::uint8_t>(v >> 8);
    return out;
}

Be32 r_of(const Signature& s) {
    Be32 out;
    std::copy(s.bytes.begin(), s.bytes.begin() + 32, out.begin());
    return out;
}
Be32 s_of(const Signature& s) {
    Be32 out;
    std::copy(s.bytes.begin() + 32, s.bytes.end(), out.begin());
    return out;
}
Signature make_sig(const Be32& r, const Be32& s) {
    Signature out;
    std::copy(r.begin(), r.end(), out.bytes.begin());
    std::copy(s.begin(), s.end(), out.bytes.begin() + 32);
    return out;
}
PublicKey make_key(std::uint8_t prefix, const Be32& x) {
    PublicKey k;
    k.bytes[0] = prefix;
    std::copy(x.begin(), x.end(), k.bytes.begin() + 1);
    return k;
}
Be32 x_of(const PublicKey& k) {
    Be32 out;
    std::copy(k.bytes.begin() + 1, k.bytes.end(), out.begin());
    return out;
}

template <class T>
T flip_bit(T v, std::size_t bit) {
    v.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    return v;
}

// Runs both backends on one input, with and without the low-S rule, and records any
// disagreement; counts acceptances so a test can also show it is not comparing only "false".
struct Differ {
    std::vector<std::string> mismatches;
    std::size_t checked = 0;
    std::size_t accepted = 0;

    bool check(const std::string& what, const PublicKey& key, const Hash256& digest,
               const Signature& sig) {
        bool decision = false;
        for (bool allow_high_s : {false, true}) {
            const bool b = detail::verify_with_botan(key, digest, sig, allow_high_s);
            const bool o = detail::verify_with_openssl(key, digest, sig, allow_high_s);
            ++checked;
            accepted += b ? 1 : 0;
            if (b != o && mismatches.size() < 20)
                mismatches.push_back(
                    what + (allow_high_s ? " (any s)" : "") + ": botan=" + std::to_string(b) +
                    " openssl=" + std::to_string(o) + " key=" + to_hex(key.view()) +
                    " digest=" + to_hex(digest.view()) + " sig=" + to_hex(sig.view()));
            if (!allow_high_s) decision = b;
        }
        return decision;
    }
    void report() const {
        for (const auto& m : mismatches)
            FAIL_CHECK(m);
        CHECK(mismatches.empty());
    }
};

std::size_t signature_count() {
    if (const char* env = std::getenv("POPCHAIN_DIFF_SIGNATURES")) {
        const long v = std::strtol(env, nullptr, 10);
        if (v > 0) return static_cast<std::size_t>(v);
    }
    return 2000;
}

template <class T>
T random_bytes_of(std::mt19937_64& rng) {
    T out;
    for (auto& b : out.bytes)
        b = static_cast<std::uint8_t>(rng());
    return out;
}
Be32 random_be32(std::mt19937_64& rng) {
    Be32 out;
    for (auto& b : out)
        b = static_cast<std::uint8_t>(rng());
    return out;
}

} // namespace

TEST_CASE("verify backends: verify() is the OpenSSL path") {
    CHECK(detail::verify_backend().rfind("OpenSSL 3", 0) == 0);
    SigningKey key = SigningKey::generate();
    const Hash256 d = sha256(std::string_view("backend"));
    const Signature sig = key.sign(d);
    CHECK(verify(key.public_key(), d, sig));
    CHECK(detail::verify_with_openssl(key.public_key(), d, sig));
    CHECK(detail::verify_with_botan(key.public_key(), d, sig));
}

TEST_CASE("verify backends: same decisions on random valid signatures and mutations") {
    std::uint64_t seed = std::random_device{}();
    if (const char* env = std::getenv("POPCHAIN_DIFF_SEED")) seed = std::strtoull(env, nullptr, 10);
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const std::size_t count = signature_count();

    // A few keys, so both per-key caches see repeated and new keys.
    std::vector<SigningKey> keys;
    for (int i = 0; i < 12; ++i)
        keys.push_back(SigningKey::generate());

    Differ diff;
    std::size_t valid_accepted = 0;
    for (std::size_t i = 0; i < count; ++i) {
        const SigningKey& key = keys[rng() % keys.size()];
        const PublicKey& pub = key.public_key();
        const Hash256 d = random_bytes_of<Hash256>(rng);
        const Signature sig = key.sign(d);
        valid_accepted += diff.check("valid", pub, d, sig) ? 1 : 0;

        for (int m = 0; m < 3; ++m) {
            switch (rng() % 9) {
            case 0: diff.check("sig bit", pub, d, flip_bit(sig, rng() % 512)); break;
            case 1: diff.check("digest bit", pub, flip_bit(d, rng() % 256), sig); break;
            case 2: diff.check("key bit", flip_bit(pub, rng() % 264), d, sig); break;
            case 3:
                diff.check("high-S twin", pub, d, make_sig(r_of(sig), sub(order_n, s_of(sig))));
                break;
            case 4: diff.check("random x", make_key(pub.bytes[0], random_be32(rng)), d, sig); break;
            case 5: diff.check("other key", keys[rng() % keys.size()].public_key(), d, sig); break;
            case 6: diff.check("r and s swapped", pub, d, make_sig(s_of(sig), r_of(sig))); break;
            case 7: diff.check("random sig", pub, d, random_bytes_of<Signature>(rng)); break;
            default: diff.check("r + n", pub, d, make_sig(add(r_of(sig), order_n), s_of(sig)));
            }
        }
    }
    CHECK(valid_accepted == count);
    diff.report();
    MESSAGE(diff.checked << " decisions per backend compared, " << diff.accepted << " accepts");
}

TEST_CASE("verify backends: same decisions on boundary values of r and s") {
    SigningKey key = SigningKey::generate();
    const PublicKey& pub = key.public_key();
    const Hash256 d = sha256(std::string_view("boundaries"));
    const Signature sig = key.sign(d);
    const Be32 r = r_of(sig), s = s_of(sig), one = small(1);
    const Be32 zero{};
    const Be32 ones = be32("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF");
    const Be32 half = be32("7FFFFFFF800000007FFFFFFFFFFFFFFFDE737D56D38BCF4279DCE5617E3192A8");

    Differ diff;
    CHECK(diff.check("valid", pub, d, sig));
    // The twin (r, n - s) is valid ECDSA: only the low-S rule rejects it, in both backends.
    const Signature high = make_sig(r, sub(order_n, s));
    CHECK_FALSE(diff.check("high-S twin", pub, d, high));
    CHECK(detail::verify_with_botan(pub, d, high, true));
    CHECK(detail::verify_with_openssl(pub, d, high, true));

    for (const auto& [name, value] :
         std::vector<std::pair<std::string, Be32>>{{"0", zero},
                                                   {"1", one},
                                                   {"n", order_n},
                                                   {"n - 1", sub(order_n, one)},
                                                   {"n + 1", add(order_n, one)},
                                                   {"(n - 1) / 2", half},
                                                   {"(n + 1) / 2", add(half, one)},
                                                   {"p", prime_p},
                                                   {"2^256 - 1", ones}}) {
        diff.check("r = " + name, pub, d, make_sig(value, s));
        diff.check("s = " + name, pub, d, make_sig(r, value));
        diff.check("r = s = " + name, pub, d, make_sig(value, value));
        // Values at or above n stand for the same residue plus n: a backend that reduced r or
        // s mod n instead of rejecting them would accept these.
        diff.check("r + " + name, pub, d, make_sig(add(r, value), s));
        diff.check("s + " + name, pub, d, make_sig(r, add(s, value)));
    }
    CHECK_FALSE(diff.check("r = s = 0", pub, d, Signature{}));
    diff.report();
}

TEST_CASE("verify backends: digests are used as given, reduced mod n, never hashed again") {
    SigningKey key = SigningKey::generate();
    const PublicKey& pub = key.public_key();
    Differ diff;
    // A digest e and e + n are the same number mod n, and ECDSA only uses e mod n; both
    // backends must agree on that, including for e = 0 and a digest above n.
    for (unsigned e : {0u, 1u, 2u, 1000u}) {
        CAPTURE(e);
        const Hash256 d = Hash256::from(ByteView(small(e).data(), 32));
        const Signature sig = key.sign(d);
        CHECK(diff.check("small digest", pub, d, sig));
        const Be32 plus_n = add(small(e), order_n);
        CHECK(diff.check("digest + n", pub, Hash256::from(ByteView(plus_n.data(), 32)), sig));
    }
    const Hash256 all_ones = Hash256::from(Bytes(32, 0xff));
    CHECK(diff.check("all-ones digest", pub, all_ones, key.sign(all_ones)));
    // Signing the SHA-256 of the digest is a different message.
    const Hash256 d = sha256(std::string_view("once"));
    CHECK_FALSE(diff.check("hashed twice", pub, d, key.sign(sha256(d.view()))));
    diff.report();
}

TEST_CASE("verify backends: same decisions on malformed and off-curve public keys") {
    std::mt19937_64 rng(20261126);
    SigningKey key = SigningKey::generate();
    const Hash256 d = sha256(std::string_view("keys"));
    const Signature sig = key.sign(d);
    const Be32 x = x_of(key.public_key());
    Differ diff;

    CHECK(diff.check("valid", key.public_key(), d, sig));
    CHECK_FALSE(diff.check("all-zero key", PublicKey{}, d, sig));
    CHECK_FALSE(diff.check("all-ones key", PublicKey::from(Bytes(33, 0xff)), d, sig));
    // Every prefix byte with the right x: only 0x02 and 0x03 are compressed points; 0x04,
    // 0x06 and 0x07 announce other SEC1 forms whose length is not 33.
    for (unsigned prefix = 0; prefix < 256; ++prefix)
        diff.check("prefix " + std::to_string(prefix),
                   make_key(static_cast<std::uint8_t>(prefix), x), d, sig);
    // x >= p: x + p would be the same field element if reduced; both must refuse it.
    std::size_t wrapped = 0;
    for (int i = 0; i < 200 && wrapped < 8; ++i) {
        Be32 small_x = random_be32(rng);
        small_x[0] = small_x[1] = small_x[2] = small_x[3] = 0; // below 2^224, so x + p < 2^256
        const PublicKey low = make_key(0x02, small_x);
        if (!parse_public_key(low.view())) continue;
        ++wrapped;
        CHECK_FALSE(diff.check("x + p", make_key(0x02, add(small_x, prime_p)), d, sig));
        CHECK_FALSE(diff.check("x + p", make_key(0x03, add(small_x, prime_p)), d, sig));
    }
    CHECK(wrapped == 8);
    CHECK_FALSE(diff.check("x = p", make_key(0x02, prime_p), d, sig));
    CHECK_FALSE(diff.check("x = 0", make_key(0x02, Be32{}), d, sig));
    // Random x: about half have no point on the curve. Count both kinds, so the test shows it
    // covered off-curve keys and not only other valid keys.
    std::size_t off_curve = 0;
    for (int i = 0; i < 400; ++i) {
        const PublicKey k = make_key(0x02 | (rng() & 1), random_be32(rng));
        off_curve += parse_public_key(k.view()) ? 0 : 1;
        diff.check("random x", k, d, sig);
    }
    CHECK(off_curve > 100);
    CHECK(off_curve < 300);
    // Every single-bit change of the key.
    for (std::size_t bit = 0; bit < PublicKey::size() * 8; ++bit)
        CHECK_FALSE(diff.check("key bit", flip_bit(key.public_key(), bit), d, sig));
    diff.report();
}

TEST_CASE("verify backends: OpenSSL path is thread-safe and survives its cache being emptied") {
    // More keys than the per-thread cache holds (1,024), so it is cleared while in use.
    constexpr std::size_t key_count = 1100;
    std::vector<PublicKey> pubs;
    std::vector<Signature> sigs;
    const Hash256 d = sha256(std::string_view("many keys"));
    for (std::size_t i = 0; i < key_count; ++i) {
        SigningKey k = SigningKey::generate();
        pubs.push_back(k.public_key());
        sigs.push_back(k.sign(d));
    }
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (std::size_t i = 0; i < key_count; ++i) {
                const std::size_t j = (i * 7 + t * 131) % key_count;
                if (!detail::verify_with_openssl(pubs[j], d, sigs[j])) ++wrong;
                // A cached key with someone else's signature: still rejected.
                if (detail::verify_with_openssl(pubs[j], d, sigs[(j + 1) % key_count])) ++wrong;
            }
        });
    for (auto& th : threads)
        th.join();
    CHECK(wrong.load() == 0);
}

#endif
