// SHA-256, ECDSA P-256 keys and signatures, addresses, the signature cache.
#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace popchain;
using namespace popchain::test;

namespace {

Bytes hex_bytes(std::string_view h) {
    auto b = from_hex(h);
    REQUIRE(b.ok());
    return *b;
}

// P-256 group order n (FIPS 186-4 / SEC 2).
const Bytes& order_n() {
    static const Bytes n =
        hex_bytes("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");
    return n;
}

// Big-endian arithmetic on equal-length unsigned numbers, independent of the library.
Bytes be_sub(const Bytes& a, const Bytes& b) { // a - b, requires a >= b
    REQUIRE(a.size() == b.size());
    Bytes out(a.size());
    int borrow = 0;
    for (std::size_t i = a.size(); i-- > 0;) {
        int v = int(a[i]) - int(b[i]) - borrow;
        borrow = v < 0 ? 1 : 0;
        out[i] = static_cast<std::uint8_t>(v + (borrow ? 256 : 0));
    }
    REQUIRE(borrow == 0);
    return out;
}
Bytes be_add_small(const Bytes& a, unsigned x) {
    Bytes out = a;
    unsigned carry = x;
    for (std::size_t i = out.size(); i-- > 0 && carry;) {
        unsigned v = out[i] + carry;
        out[i] = static_cast<std::uint8_t>(v & 0xff);
        carry = v >> 8;
    }
    return out;
}
Bytes be_shr1(const Bytes& a) {
    Bytes out(a.size());
    unsigned carry = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        out[i] = static_cast<std::uint8_t>((a[i] >> 1) | (carry << 7));
        carry = a[i] & 1;
    }
    return out;
}
// -1, 0, 1 like memcmp, for equal-length big-endian numbers.
int be_cmp(ByteView a, ByteView b) {
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

Bytes r_of(const Signature& s) {
    return Bytes(s.bytes.begin(), s.bytes.begin() + 32);
}
Bytes s_of(const Signature& s) {
    return Bytes(s.bytes.begin() + 32, s.bytes.end());
}
Signature make_sig(const Bytes& r, const Bytes& s) {
    Bytes rs = r;
    rs.insert(rs.end(), s.begin(), s.end());
    REQUIRE(rs.size() == 64);
    return Signature::from(rs);
}
// The high-S twin (r, n - s) of a signature.
Signature twin(const Signature& sig) {
    return make_sig(r_of(sig), be_sub(order_n(), s_of(sig)));
}

SigningKey key_from_hex(std::string_view secret_hex) {
    auto k = SigningKey::from_secret(hex_bytes(secret_hex));
    REQUIRE(k.ok());
    return std::move(k).value();
}

Hash256 digest_n(int i) {
    return sha256("digest-" + std::to_string(i));
}

template <class Fixed>
Fixed flip_bit(Fixed v, std::size_t bit) {
    v.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    return v;
}

// RFC 6979, appendix A.2.5 (ECDSA, P-256, SHA-256).
constexpr std::string_view rfc_secret =
    "C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721";
constexpr std::string_view rfc_ux =
    "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6";
// Uy = 7903FE10...4462299 is odd, so the compressed prefix is 03.
constexpr std::string_view rfc_sample_r =
    "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716";
constexpr std::string_view rfc_sample_s =
    "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8";
constexpr std::string_view rfc_test_r =
    "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367";
constexpr std::string_view rfc_test_s =
    "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083";

// The P-256 base point G (SEC 2); Gy is odd.
constexpr std::string_view g_x = "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296";
// The field prime p.
constexpr std::string_view field_p =
    "FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF";

PublicKey compressed(std::uint8_t prefix, std::string_view x_hex) {
    Bytes k{prefix};
    Bytes x = hex_bytes(x_hex);
    k.insert(k.end(), x.begin(), x.end());
    REQUIRE(k.size() == 33);
    return PublicKey::from(k);
}

} // namespace

// ---- SHA-256 ----

TEST_CASE("sha256: FIPS 180-2 test vectors") {
    CHECK(to_hex(sha256(std::string_view(""))) ==
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(to_hex(sha256(std::string_view("abc"))) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(to_hex(sha256(
              std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))) ==
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // The same call twice: the thread-local hasher is reset after each use.
    CHECK(sha256(std::string_view("abc")) == sha256(std::string_view("abc")));
    CHECK(sha256(as_bytes("abc")) == sha256(std::string_view("abc")));
}

TEST_CASE("sha256: one million 'a' hashed incrementally") {
    Sha256 h;
    const std::string chunk(1000, 'a');
    for (int i = 0; i < 1000; ++i)
        h.update(chunk);
    CHECK(to_hex(h.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256: incremental equals one-shot for every split point") {
    Bytes data(200);
    for (std::size_t i = 0; i < data.size(); ++i)
        data[i] = static_cast<std::uint8_t>(i * 7 + 3);
    const Hash256 whole = sha256(data);
    for (std::size_t cut = 0; cut <= data.size(); ++cut) {
        CAPTURE(cut);
        Sha256 h;
        h.update(ByteView(data.data(), cut)).update(ByteView(data.data() + cut, data.size() - cut));
        CHECK(h.finish() == whole);
    }
    // Three pieces and the FixedBytes / string overloads.
    Hash256 part = sha256(std::string_view("xyz"));
    Bytes joined(3 + 32 + 1);
    std::copy_n("pre", 3, joined.begin());
    std::copy(part.bytes.begin(), part.bytes.end(), joined.begin() + 3);
    joined.back() = '!';
    CHECK(Sha256().update("pre").update(part).update(as_bytes("!")).finish() == sha256(joined));

    // A moved-to hasher keeps the state.
    Sha256 a;
    a.update("ab");
    Sha256 b = std::move(a);
    b.update("c");
    CHECK(b.finish() == sha256(std::string_view("abc")));
}

TEST_CASE("sha256: a hasher dropped before finish leaves nothing in the next one") {
    // Hashers of a thread reuse each other's state objects; what one left half-done must not
    // show up in a later hash, however many were dropped.
    for (int dropped = 1; dropped <= 12; ++dropped) {
        CAPTURE(dropped);
        {
            std::vector<Sha256> unfinished(static_cast<std::size_t>(dropped));
            for (auto& h : unfinished)
                h.update("left over");
        }
        for (int i = 0; i < dropped; ++i) {
            Sha256 h;
            CHECK(h.update("abc").finish() == sha256(std::string_view("abc")));
        }
        // Two alive at once get separate state.
        Sha256 first, second;
        first.update("ab");
        second.update("xyz");
        first.update("c");
        CHECK(first.finish() == sha256(std::string_view("abc")));
        CHECK(second.finish() == sha256(std::string_view("xyz")));
    }
}

// ---- keys and signatures ----

TEST_CASE("ecdsa: RFC 6979 A.2.5 vectors (deterministic, normalised to low S)") {
    SigningKey key = key_from_hex(rfc_secret);
    CHECK(key.public_key() == compressed(0x03, rfc_ux));

    const Hash256 sample = sha256(std::string_view("sample"));
    const Hash256 test = sha256(std::string_view("test"));

    // "sample": the RFC's s is above n/2, so the library must output n - s.
    const Bytes rfc_s = hex_bytes(rfc_sample_s);
    const Bytes low_s = be_sub(order_n(), rfc_s);
    CHECK(to_hex(low_s) == "0834e36ad29a83bf2bc9385e491d6099c8fdf9d1ed67aa7ea5f51f93782857a9");
    const Signature expected_sample = make_sig(hex_bytes(rfc_sample_r), low_s);
    CHECK(to_hex(key.sign(sample)) == to_hex(expected_sample));
    CHECK(verify(key.public_key(), sample, expected_sample));
    // The RFC's own (high-S) signature is valid ECDSA but must be refused.
    CHECK_FALSE(verify(key.public_key(), sample, make_sig(hex_bytes(rfc_sample_r), rfc_s)));

    // "test": the RFC's s is already low.
    const Signature expected_test = make_sig(hex_bytes(rfc_test_r), hex_bytes(rfc_test_s));
    CHECK(to_hex(key.sign(test)) == to_hex(expected_test));
    CHECK(verify(key.public_key(), test, expected_test));
    CHECK_FALSE(verify(key.public_key(), test, twin(expected_test)));
    CHECK_FALSE(verify(key.public_key(), sample, expected_test));
}

TEST_CASE("ecdsa: known public keys for tiny and huge secrets") {
    Bytes one(32, 0);
    one[31] = 1;
    auto g = SigningKey::from_secret(one);
    REQUIRE(g.ok());
    CHECK(g->public_key() == compressed(0x03, g_x));

    auto minus_g = SigningKey::from_secret(be_sub(order_n(), one));
    REQUIRE(minus_g.ok());
    CHECK(minus_g->public_key() == compressed(0x02, g_x));
}

TEST_CASE("ecdsa: from_secret rejects 0, n and above, and wrong sizes") {
    Bytes zero(32, 0);
    CHECK(code_of(SigningKey::from_secret(zero)) == code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(order_n())) == code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(be_add_small(order_n(), 1))) ==
          code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(Bytes(32, 0xff))) == code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(Bytes(31, 0x11))) == code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(Bytes(33, 0x11))) == code_name(Errc::invalid_argument));
    CHECK(code_of(SigningKey::from_secret(Bytes{})) == code_name(Errc::invalid_argument));
    // The largest valid scalar, n - 1, is accepted.
    Bytes one(32, 0);
    one[31] = 1;
    CHECK(SigningKey::from_secret(be_sub(order_n(), one)).ok());
}

TEST_CASE("ecdsa: sign then verify; deterministic per key and digest") {
    SigningKey key = SigningKey::generate();
    SigningKey same = key_from_byte(0x42);
    SigningKey same_again = key_from_byte(0x42);
    REQUIRE(same.public_key() == same_again.public_key());
    REQUIRE(key.public_key() != same.public_key());
    std::set<Signature> seen;
    for (int i = 0; i < 16; ++i) {
        CAPTURE(i);
        const Hash256 d = digest_n(i);
        Signature s = key.sign(d);
        CHECK(verify(key.public_key(), d, s));
        CHECK(key.sign(d) == s); // RFC 6979: no fresh randomness in the nonce
        Signature t = same.sign(d);
        CHECK(same_again.sign(d) == t); // a second key object with the same secret
        CHECK(verify(same.public_key(), d, t));
        CHECK_FALSE(verify(same.public_key(), d, s)); // other key's signature
        CHECK(seen.insert(s).second);
        CHECK(seen.insert(t).second);
    }
}

TEST_CASE("ecdsa: every signature is low-S and its high-S twin is rejected") {
    const Bytes half = be_shr1(order_n()); // (n - 1) / 2, n is odd
    SigningKey key = key_from_byte(0x07);
    for (int i = 0; i < 64; ++i) {
        CAPTURE(i);
        const Hash256 d = digest_n(1000 + i);
        const Signature sig = key.sign(d);
        CHECK(be_cmp(s_of(sig), half) <= 0);
        CHECK(verify(key.public_key(), d, sig));
        const Signature hi = twin(sig);
        CHECK(be_cmp(s_of(hi), half) > 0);
        CHECK_FALSE(verify(key.public_key(), d, hi));
    }
}

TEST_CASE("ecdsa: zero r or zero s is rejected") {
    SigningKey key = key_from_byte(0x08);
    const Hash256 d = digest_n(7);
    const Signature sig = key.sign(d);
    CHECK_FALSE(verify(key.public_key(), d, make_sig(Bytes(32, 0), s_of(sig))));
    CHECK_FALSE(verify(key.public_key(), d, make_sig(r_of(sig), Bytes(32, 0))));
    CHECK_FALSE(verify(key.public_key(), d, Signature{}));
}

TEST_CASE("ecdsa: any flipped bit in signature, digest or key fails") {
    SigningKey key = key_from_byte(0x09);
    const Hash256 d = digest_n(9);
    const Signature sig = key.sign(d);
    REQUIRE(verify(key.public_key(), d, sig));
    int sig_fail = 0, digest_fail = 0, key_fail = 0;
    for (std::size_t bit = 0; bit < Signature::size() * 8; ++bit)
        sig_fail += verify(key.public_key(), d, flip_bit(sig, bit)) ? 0 : 1;
    for (std::size_t bit = 0; bit < Hash256::size() * 8; ++bit)
        digest_fail += verify(key.public_key(), flip_bit(d, bit), sig) ? 0 : 1;
    for (std::size_t bit = 0; bit < PublicKey::size() * 8; ++bit)
        key_fail += verify(flip_bit(key.public_key(), bit), d, sig) ? 0 : 1;
    CHECK(sig_fail == 512);
    CHECK(digest_fail == 256);
    CHECK(key_fail == 264);
}

TEST_CASE("ecdsa: signing is thread-safe and stays deterministic") {
    SigningKey key = key_from_byte(0x0a);
    std::vector<Signature> expected;
    for (int i = 0; i < 8; ++i)
        expected.push_back(key.sign(digest_n(500 + i)));
    std::vector<int> wrong(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int round = 0; round < 3; ++round)
                for (int i = 0; i < 8; ++i)
                    if (key.sign(digest_n(500 + i)) != expected[static_cast<std::size_t>(i)])
                        ++wrong[static_cast<std::size_t>(t)];
        });
    for (auto& th : threads)
        th.join();
    for (int w : wrong)
        CHECK(w == 0);
}

// ---- public keys ----

TEST_CASE("parse_public_key: wrong length or prefix") {
    SigningKey key = key_from_byte(0x21);
    const PublicKey pk = key.public_key();
    CHECK(parse_public_key(pk.view()).ok());
    CHECK(*parse_public_key(pk.view()) == pk);
    CHECK(code_of(parse_public_key(ByteView{})) == code_name(Errc::bad_public_key));
    CHECK(code_of(parse_public_key(ByteView(pk.data(), 32))) == code_name(Errc::bad_public_key));
    Bytes longer(34, 0);
    std::copy(pk.bytes.begin(), pk.bytes.end(), longer.begin());
    CHECK(code_of(parse_public_key(longer)) == code_name(Errc::bad_public_key));
    // 65-byte uncompressed encoding, and a 33-byte buffer with the uncompressed/hybrid prefixes.
    Bytes uncompressed(65, 0x11);
    uncompressed[0] = 0x04;
    CHECK(code_of(parse_public_key(uncompressed)) == code_name(Errc::bad_public_key));
    for (std::uint8_t prefix : {0x00, 0x01, 0x04, 0x05, 0x06, 0x07, 0x12, 0xff}) {
        CAPTURE(int(prefix));
        PublicKey bad = pk;
        bad.bytes[0] = prefix;
        CHECK(code_of(parse_public_key(bad.view())) == code_name(Errc::bad_public_key));
    }
    // Both parities of the same x are points (P and -P).
    PublicKey other = pk;
    other.bytes[0] = pk.bytes[0] == 0x02 ? 0x03 : 0x02;
    CHECK(parse_public_key(other.view()).ok());
}

TEST_CASE("parse_public_key: off-curve x is rejected, and so is x >= p") {
    // About half of all x are the abscissa of a P-256 point. Whether a given x is on the curve
    // does not depend on the prefix parity.
    int on = 0, off = 0;
    const Bytes p = hex_bytes(field_p);
    for (unsigned x = 0; x < 64; ++x) {
        CAPTURE(x);
        Bytes x_be(32, 0);
        x_be[31] = static_cast<std::uint8_t>(x);
        Bytes k2{0x02}, k3{0x03};
        k2.insert(k2.end(), x_be.begin(), x_be.end());
        k3.insert(k3.end(), x_be.begin(), x_be.end());
        auto r2 = parse_public_key(k2);
        auto r3 = parse_public_key(k3);
        CHECK(r2.ok() == r3.ok());
        if (r2.ok()) {
            ++on;
            // The same x plus p must not be accepted as a second encoding of that point.
            Bytes alias{0x02};
            Bytes xp = be_add_small(p, x);
            alias.insert(alias.end(), xp.begin(), xp.end());
            CHECK(code_of(parse_public_key(alias)) == code_name(Errc::bad_public_key));
        } else {
            ++off;
            CHECK(code_of(r2) == code_name(Errc::bad_public_key));
        }
    }
    CHECK(on >= 10);
    CHECK(off >= 10);
    Bytes all_ff(33, 0xff);
    all_ff[0] = 0x02;
    CHECK(code_of(parse_public_key(all_ff)) == code_name(Errc::bad_public_key));
    // A bad key never verifies anything.
    CHECK_FALSE(verify(PublicKey::from(all_ff), digest_n(1), Signature{}));
}

// ---- addresses ----

TEST_CASE("address: derived from SHA-256 of the compressed key; text form per spec") {
    SigningKey key = key_from_byte(0x31);
    const Address a = Address::of(key.public_key());
    CHECK(key.address() == a);
    const Hash256 h = sha256(key.public_key().view());
    CHECK(std::equal(a.bytes.begin(), a.bytes.end(), h.bytes.begin()));

    // "pop" || hex(address) || hex(first 4 bytes of SHA-256("popchain-address" || address)).
    Bytes pre = to_bytes("popchain-address");
    pre.insert(pre.end(), a.bytes.begin(), a.bytes.end());
    const Hash256 sum = sha256(pre);
    const std::string expected = "pop" + to_hex(a.view()) + to_hex(ByteView(sum.data(), 4));
    const std::string text = a.to_string();
    CHECK(text == expected);
    CHECK(text.size() == 3 + 48);

    auto back = Address::parse(text);
    REQUIRE(back.ok());
    CHECK(*back == a);
}

TEST_CASE("address: any single changed character is caught") {
    SigningKey key = key_from_byte(0x32);
    const std::string text = key.address().to_string();
    const std::string digits = "0123456789abcdef";
    int rejected = 0, tried = 0;
    for (std::size_t pos = 0; pos < text.size(); ++pos) {
        for (char c : pos < 3 ? std::string("pqoxPQO0") : digits) {
            if (c == text[pos]) continue;
            std::string bad = text;
            bad[pos] = c;
            ++tried;
            auto res = Address::parse(bad);
            if (code_of(res) == code_name(Errc::bad_address)) {
                ++rejected;
            } else {
                FAIL_CHECK("accepted a mistyped address: " << bad);
            }
        }
    }
    CHECK(rejected == tried);
    CHECK(tried > 48 * 15);
}

TEST_CASE("address: wrong prefix, wrong length, non-hex, upper case") {
    SigningKey key = key_from_byte(0x33);
    const Address a = key.address();
    const std::string text = a.to_string();
    const std::string body = text.substr(3);
    auto bad = [](const std::string& s) { return code_of(Address::parse(s)); };
    const std::string bad_address = code_name(Errc::bad_address);
    CHECK(bad("") == bad_address);
    CHECK(bad("pop") == bad_address);
    CHECK(bad("po") == bad_address);
    CHECK(bad(body) == bad_address);          // no prefix
    CHECK(bad("pos" + body) == bad_address);  // wrong prefix
    CHECK(bad("0x" + body) == bad_address);   // wrong prefix
    CHECK(bad(" pop" + body) == bad_address); // leading space
    CHECK(bad(text + " ") == bad_address);    // trailing space
    CHECK(bad(text.substr(0, text.size() - 1)) == bad_address);
    CHECK(bad(text + "0") == bad_address);
    CHECK(bad(text + "00") == bad_address);
    CHECK(bad(text.substr(0, text.size() - 2)) == bad_address);
    CHECK(bad("pop" + body.substr(0, 40)) == bad_address); // address without checksum
    std::string nonhex = text;
    nonhex[10] = 'g';
    CHECK(bad(nonhex) == bad_address);

    std::string upper = "pop";
    for (char c : body)
        upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    REQUIRE(upper != text);
    auto up = Address::parse(upper);
    REQUIRE(up.ok());
    CHECK(*up == a);
    CHECK(up->to_string() == text); // printing is always lower case
}

TEST_CASE("address: distinct keys give distinct addresses") {
    std::set<Address> seen;
    for (int b = 1; b <= 20; ++b)
        CHECK(seen.insert(key_from_byte(static_cast<std::uint8_t>(b)).address()).second);
}

// ---- signature cache ----

TEST_CASE("signature cache: caches successes only and counts hits") {
    SigningKey key = key_from_byte(0x41);
    SignatureCache cache(8);
    const Hash256 d = digest_n(1);
    const Signature sig = key.sign(d);
    CHECK(cache.size() == 0);
    CHECK(cache.hits() == 0);
    CHECK(cache.verify(key.public_key(), d, sig));
    CHECK(cache.size() == 1);
    CHECK(cache.hits() == 0);
    CHECK(cache.verify(key.public_key(), d, sig));
    CHECK(cache.hits() == 1);
    CHECK(cache.size() == 1);

    // Failures: wrong digest, high-S twin, flipped signature. Never cached, never a hit.
    for (int round = 0; round < 3; ++round) {
        CHECK_FALSE(cache.verify(key.public_key(), digest_n(2), sig));
        CHECK_FALSE(cache.verify(key.public_key(), d, twin(sig)));
        CHECK_FALSE(cache.verify(key.public_key(), d, flip_bit(sig, 3)));
    }
    CHECK(cache.size() == 1);
    CHECK(cache.hits() == 1);

    // A hit is specific to (key, digest, signature).
    SigningKey other = key_from_byte(0x42);
    CHECK_FALSE(cache.verify(other.public_key(), d, sig));
    CHECK(cache.hits() == 1);
}

TEST_CASE("signature cache: bounded, oldest evicted first") {
    SigningKey key = key_from_byte(0x43);
    SignatureCache cache(3);
    std::vector<Hash256> ds;
    std::vector<Signature> sigs;
    for (int i = 0; i < 5; ++i) {
        ds.push_back(digest_n(100 + i));
        sigs.push_back(key.sign(ds.back()));
    }
    for (int i = 0; i < 5; ++i) {
        CHECK(cache.verify(key.public_key(), ds[static_cast<std::size_t>(i)],
                           sigs[static_cast<std::size_t>(i)]));
        CHECK(cache.size() == std::min<std::size_t>(static_cast<std::size_t>(i) + 1, 3));
    }
    CHECK(cache.hits() == 0);
    // Entries 2, 3, 4 remain: hits.
    for (std::size_t i = 2; i < 5; ++i)
        CHECK(cache.verify(key.public_key(), ds[i], sigs[i]));
    CHECK(cache.hits() == 3);
    // Entry 0 was evicted: verified again (still true) but not a hit.
    CHECK(cache.verify(key.public_key(), ds[0], sigs[0]));
    CHECK(cache.hits() == 3);
    CHECK(cache.size() == 3);
}

TEST_CASE("signature cache: capacity zero caches nothing") {
    SigningKey key = key_from_byte(0x44);
    SignatureCache cache(0);
    const Hash256 d = digest_n(3);
    const Signature sig = key.sign(d);
    CHECK(cache.verify(key.public_key(), d, sig));
    CHECK(cache.verify(key.public_key(), d, sig));
    CHECK(cache.size() == 0);
    CHECK(cache.hits() == 0);
}

// ---- keystore ----

TEST_CASE("keystore: encrypted PEM round trip; wrong passphrase; garbage") {
    SigningKey key = key_from_byte(0x51);
    const std::string pem = key.encrypted_pem("correct horse", 1).value();
    CHECK(pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos);
    CHECK(pem.find(to_hex(Bytes(32, 0x51))) == std::string::npos);
    auto back = SigningKey::from_encrypted_pem(pem, "correct horse");
    REQUIRE(back.ok());
    CHECK(back->public_key() == key.public_key());
    const Hash256 d = digest_n(4);
    CHECK(back->sign(d) == key.sign(d));
    CHECK(code_of(SigningKey::from_encrypted_pem(pem, "wrong horse")) ==
          code_name(Errc::wrong_passphrase));
    CHECK(code_of(SigningKey::from_encrypted_pem("hello", "x")) == code_name(Errc::malformed));
    // A plaintext key block is refused whatever its content: keys are only read encrypted.
    std::string plain = pem;
    plain.replace(plain.find("ENCRYPTED "), 10, "");
    CHECK(code_of(SigningKey::from_encrypted_pem(plain, "correct horse")) ==
          code_name(Errc::malformed));
}

// ---- error names ----

TEST_CASE("errc_name: every code has a distinct snake_case name") {
    std::set<std::string> names;
    for (int c = static_cast<int>(Errc::truncated); c <= static_cast<int>(Errc::last_); ++c) {
        std::string n = errc_name(static_cast<Errc>(c));
        CAPTURE(c);
        CHECK(n != "unknown_error");
        CHECK(n.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos);
        CHECK(names.insert(n).second);
    }
    CHECK(std::string(errc_name(Errc::insufficient_funds)) == "insufficient_funds");
    CHECK(make_error(Errc::nonce_gap, "x").message() == "nonce_gap: x");
    CHECK(make_error(Errc::nonce_gap).message() == "nonce_gap");
}

// ---- key agreement and MACs (replica link authentication) ----

TEST_CASE("crypto: ECDH agreement is symmetric and differs per pair") {
    SigningKey a = key_from_byte(0x21), b = key_from_byte(0x22), c = key_from_byte(0x23);
    auto ab = a.agree(b.public_key()), ba = b.agree(a.public_key()), ac = a.agree(c.public_key());
    REQUIRE(ab.ok());
    REQUIRE(ba.ok());
    REQUIRE(ac.ok());
    CHECK(*ab == *ba);
    CHECK(*ab != *ac);
    PublicKey off_curve = b.public_key();
    off_curve.bytes[0] = 0x05; // not a compressed-point prefix
    CHECK(code_of(a.agree(off_curve)) == code_name(Errc::bad_public_key));
}

TEST_CASE("crypto: HMAC-SHA256 matches RFC 4231 test case 1 and detects changes") {
    const Bytes key(20, 0x0b);
    const Hash256 mac = hmac_sha256(key, as_bytes("Hi There"));
    CHECK(to_hex(mac) == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    CHECK(hmac_sha256(key, as_bytes("Hi There!")) != mac);
    CHECK(hmac_sha256(Bytes(20, 0x0c), as_bytes("Hi There")) != mac);
    Hash256 other = mac;
    CHECK(equal_in_constant_time(mac, other));
    other.bytes[31] ^= 1;
    CHECK_FALSE(equal_in_constant_time(mac, other));
}

TEST_CASE(
    "crypto: a keyed HmacSha256 gives hmac_sha256's result on every use, and so do its copies") {
    const Bytes key(20, 0x0b);
    HmacSha256 keyed(key);
    CHECK(to_hex(keyed.mac({}, as_bytes("Hi There"))) ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    // Used again and again, with prefixes and messages longer than a block, it starts afresh
    // each time.
    for (std::size_t size : {0u, 1u, 55u, 64u, 65u, 1000u}) {
        CAPTURE(size);
        const Bytes data(size, static_cast<std::uint8_t>(size));
        CHECK(keyed.mac(as_bytes("prefix"), data) == hmac_sha256(key, as_bytes("prefix"), data));
    }
    HmacSha256 copy = keyed;
    HmacSha256 assigned(Bytes(32, 0x01));
    assigned = keyed;
    CHECK(copy.mac({}, as_bytes("Hi There")) == hmac_sha256(key, as_bytes("Hi There")));
    CHECK(assigned.mac({}, as_bytes("Hi There")) == hmac_sha256(key, as_bytes("Hi There")));
    CHECK(HmacSha256(Bytes(20, 0x0c)).mac({}, as_bytes("Hi There")) !=
          keyed.mac({}, as_bytes("Hi There")));
}
