// Canonical binary codec (Writer/Reader) and hex text.
#include <popchain/codec.hpp>
#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::test;

namespace {

// A composite value exercising every Writer primitive; used for truncation tests.
struct Sample {
    std::uint8_t a = 0;
    std::uint16_t b = 0;
    std::uint32_t c = 0;
    std::uint64_t d = 0;
    Hash256 h;
    Bytes blob;
    std::string text;
    bool operator==(const Sample&) const = default;
};

constexpr std::size_t sample_max_blob = 16;
constexpr std::size_t sample_max_text = 8;

void encode_sample(Writer& w, const Sample& s) {
    w.u8(s.a);
    w.u16(s.b);
    w.u32(s.c);
    w.u64(s.d);
    w.fixed(s.h);
    w.bytes(s.blob);
    w.str(s.text);
}

Sample decode_sample(Reader& r) {
    Sample s;
    s.a = r.u8();
    s.b = r.u16();
    s.c = r.u32();
    s.d = r.u64();
    s.h = r.fixed<Hash256>();
    s.blob = r.bytes(sample_max_blob);
    s.text = r.str(sample_max_text);
    return s;
}

Sample make_sample() {
    Sample s;
    s.a = 0xa1;
    s.b = 0xb2b1;
    s.c = 0xc4c3c2c1u;
    s.d = 0xd8d7d6d5d4d3d2d1ull;
    for (std::size_t i = 0; i < s.h.bytes.size(); ++i)
        s.h.bytes[i] = static_cast<std::uint8_t>(i);
    s.blob = {1, 2, 3, 4, 5};
    s.text = "hey";
    return s;
}

} // namespace

TEST_CASE("codec: integers are little-endian, byte by byte") {
    Writer w;
    w.u8(0x01);
    w.u16(0x0302);
    w.u32(0x07060504u);
    w.u64(0x0f0e0d0c0b0a0908ull);
    const Bytes& out = w.data();
    REQUIRE(out.size() == 1 + 2 + 4 + 8);
    for (std::size_t i = 0; i < out.size(); ++i) {
        INFO("byte " << i);
        CHECK(out[i] == i + 1);
    }

    Reader r(out);
    CHECK(r.u8() == 0x01);
    CHECK(r.u16() == 0x0302);
    CHECK(r.u32() == 0x07060504u);
    CHECK(r.u64() == 0x0f0e0d0c0b0a0908ull);
    CHECK(r.remaining() == 0);
    CHECK(r.finish().ok());
}

TEST_CASE("codec: round trip of boundary values for every width") {
    const std::vector<std::uint64_t> values = {0,
                                               1,
                                               0x7f,
                                               0x80,
                                               0xff,
                                               0x100,
                                               0xffff,
                                               0x10000,
                                               0xffffffffull,
                                               0x100000000ull,
                                               0x8000000000000000ull,
                                               std::numeric_limits<std::uint64_t>::max()};
    for (std::uint64_t v : values) {
        CAPTURE(v);
        Writer w;
        w.u8(static_cast<std::uint8_t>(v));
        w.u16(static_cast<std::uint16_t>(v));
        w.u32(static_cast<std::uint32_t>(v));
        w.u64(v);
        REQUIRE(w.data().size() == 15);
        // Each field is the low bytes of v, least significant first.
        const Bytes& out = w.data();
        std::size_t pos = 0;
        for (int width : {1, 2, 4, 8})
            for (int i = 0; i < width; ++i)
                CHECK(out[pos++] == static_cast<std::uint8_t>(v >> (8 * i)));

        Reader r(out);
        CHECK(r.u8() == static_cast<std::uint8_t>(v));
        CHECK(r.u16() == static_cast<std::uint16_t>(v));
        CHECK(r.u32() == static_cast<std::uint32_t>(v));
        CHECK(r.u64() == v);
        CHECK(r.finish().ok());
    }
}

TEST_CASE("codec: bytes and str carry a u32 little-endian length prefix") {
    Writer w;
    w.bytes(Bytes{0xaa, 0xbb, 0xcc});
    w.str("hi");
    w.bytes(Bytes{});
    w.str("");
    const Bytes expected = {3,   0,   0, 0, 0xaa, 0xbb, 0xcc, 2, 0, 0, 0,
                            'h', 'i', 0, 0, 0,    0,    0,    0, 0, 0};
    CHECK(w.data() == expected);

    Reader r(w.data());
    CHECK(r.bytes(3) == Bytes{0xaa, 0xbb, 0xcc});
    CHECK(r.str(2) == "hi");
    CHECK(r.bytes(0).empty());
    CHECK(r.str(0).empty());
    CHECK(r.finish().ok());
}

TEST_CASE("codec: a 300-byte field has length bytes 0x2c 0x01 0 0") {
    Bytes big(300, 0x5a);
    Writer w;
    w.bytes(big);
    REQUIRE(w.data().size() == 304);
    CHECK(w.data()[0] == 0x2c);
    CHECK(w.data()[1] == 0x01);
    CHECK(w.data()[2] == 0);
    CHECK(w.data()[3] == 0);
    Reader r(w.data());
    CHECK(r.bytes(300) == big);
    CHECK(r.finish().ok());
}

TEST_CASE("codec: fixed values are raw, without a prefix") {
    Hash256 h;
    for (std::size_t i = 0; i < h.bytes.size(); ++i)
        h.bytes[i] = static_cast<std::uint8_t>(0xf0 ^ i);
    Writer w;
    w.fixed(h);
    CHECK(w.data() == Bytes(h.bytes.begin(), h.bytes.end()));
    Reader r(w.data());
    CHECK(r.fixed<Hash256>() == h);
    CHECK(r.finish().ok());
}

TEST_CASE("codec: maximum lengths are enforced (too_large)") {
    Writer w;
    w.bytes(Bytes(5, 1));
    SUBCASE("exactly the maximum is fine") {
        Reader r(w.data());
        CHECK(r.bytes(5).size() == 5);
        CHECK(r.finish().ok());
    }
    SUBCASE("one over the maximum is too_large") {
        Reader r(w.data());
        CHECK(r.bytes(4).empty());
        CHECK_FALSE(r.ok());
        CHECK(code_of(r.finish()) == code_name(Errc::too_large));
    }
    SUBCASE("str has the same check") {
        Reader r(w.data());
        CHECK(r.str(4).empty());
        CHECK(code_of(r.finish()) == code_name(Errc::too_large));
    }
    SUBCASE("count has the same check") {
        Writer c;
        c.u32(11);
        Reader r(c.data());
        CHECK(r.count(10) == 0);
        CHECK(code_of(r.finish()) == code_name(Errc::too_large));
        Reader ok(c.data());
        CHECK(ok.count(11) == 11);
        CHECK(ok.finish().ok());
    }
    SUBCASE("a forged 4 GiB length is too_large, not truncated") {
        Bytes forged = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
        Reader r(forged);
        CHECK(r.bytes(4096).empty());
        CHECK(code_of(r.finish()) == code_name(Errc::too_large));
    }
}

TEST_CASE("codec: a length within the maximum but beyond the input is truncated") {
    Bytes in = {10, 0, 0, 0, 1, 2, 3};
    Reader r(in);
    CHECK(r.bytes(100).empty());
    CHECK(code_of(r.finish()) == code_name(Errc::truncated));
}

TEST_CASE("codec: composite value round trips") {
    Sample s = make_sample();
    Writer w;
    encode_sample(w, s);
    auto back = decode_all<Sample>(w.data(), decode_sample);
    REQUIRE(back.ok());
    CHECK(*back == s);
}

TEST_CASE("codec: truncation at every possible cut is reported as truncated") {
    Sample s = make_sample();
    Writer w;
    encode_sample(w, s);
    const Bytes full = w.take();
    REQUIRE(full.size() == 1 + 2 + 4 + 8 + 32 + 4 + 5 + 4 + 3);
    for (std::size_t cut = 0; cut < full.size(); ++cut) {
        CAPTURE(cut);
        auto res = decode_all<Sample>(ByteView(full.data(), cut), decode_sample);
        CHECK(code_of(res) == code_name(Errc::truncated));
    }
    CHECK(decode_all<Sample>(full, decode_sample).ok());
}

TEST_CASE("codec: trailing bytes are rejected") {
    Sample s = make_sample();
    Writer w;
    encode_sample(w, s);
    Bytes extra = w.take();
    extra.push_back(0);
    auto res = decode_all<Sample>(extra, decode_sample);
    CHECK(code_of(res) == code_name(Errc::trailing_bytes));

    // finish() on a reader that read nothing of a non-empty input.
    Bytes two = {1, 2};
    Reader r(two);
    CHECK(code_of(r.finish()) == code_name(Errc::trailing_bytes));
    CHECK(r.remaining() == 2);
}

TEST_CASE("codec: the first error is sticky; later reads return zeros") {
    SUBCASE("truncated, then other failures") {
        Bytes in = {1, 2, 3};
        Reader r(in);
        CHECK(r.u32() == 0); // needs 4, only 3
        CHECK_FALSE(r.ok());
        CHECK(r.remaining() == 0);
        r.fail(Errc::malformed, "later problem");
        CHECK(r.u8() == 0); // bytes remain in the input, but nothing is read after an error
        CHECK(r.bytes(10).empty());
        CHECK(r.fixed<Hash256>().is_zero());
        auto res = r.finish();
        CHECK(code_of(res) == code_name(Errc::truncated));
    }
    SUBCASE("too_large, then a read that would succeed") {
        Bytes in = {9, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99};
        Reader r(in);
        CHECK(r.bytes(8).empty());
        CHECK(r.u64() == 0);
        CHECK(r.u8() == 0);
        CHECK(r.u16() == 0);
        CHECK(r.count(100) == 0);
        CHECK(code_of(r.finish()) == code_name(Errc::too_large));
    }
    SUBCASE("explicit fail() latches too") {
        Bytes in = {1, 2, 3, 4};
        Reader r(in);
        CHECK(r.u8() == 1);
        r.fail(Errc::unknown_kind, "first");
        r.fail(Errc::bad_config, "second");
        CHECK(r.u8() == 0);
        auto res = r.finish();
        CHECK(code_of(res) == code_name(Errc::unknown_kind));
        CHECK(res.error().detail == "first");
    }
}

TEST_CASE("codec: empty input") {
    Reader r(ByteView{});
    CHECK(r.finish().ok());
    CHECK(r.u8() == 0);
    CHECK(code_of(r.finish()) == code_name(Errc::truncated));
}

TEST_CASE("hex: round trip of every byte value, lower-case output") {
    Bytes all(256);
    for (std::size_t i = 0; i < all.size(); ++i)
        all[i] = static_cast<std::uint8_t>(i);
    std::string text = to_hex(all);
    REQUIRE(text.size() == 512);
    CHECK(text.substr(0, 8) == "00010203");
    CHECK(text.substr(508) == "feff");
    CHECK(text.find_first_not_of("0123456789abcdef") == std::string::npos);
    auto back = from_hex(text);
    REQUIRE(back.ok());
    CHECK(*back == all);

    CHECK(to_hex(Bytes{}).empty());
    auto empty = from_hex("");
    REQUIRE(empty.ok());
    CHECK(empty->empty());
}

TEST_CASE("hex: upper-case and mixed-case input is accepted") {
    auto upper = from_hex("DEADBEEF0A");
    REQUIRE(upper.ok());
    CHECK(*upper == Bytes{0xde, 0xad, 0xbe, 0xef, 0x0a});
    auto mixed = from_hex("dEaDbEeF0a");
    REQUIRE(mixed.ok());
    CHECK(*mixed == *upper);
}

TEST_CASE("hex: bad text is malformed") {
    for (const char* bad : {"0", "abc", "0g", "g0", "zz", "0x00", " 00", "00 ", "-1", "0:", "@A",
                            "`a", "/0", "G0", "\xff\xff"}) {
        CAPTURE(bad);
        CHECK(code_of(from_hex(bad)) == code_name(Errc::malformed));
    }
    // A NUL byte in the middle is not a hex digit either.
    std::string with_nul("00\0"
                         "0",
                         4);
    CHECK(code_of(from_hex(with_nul)) == code_name(Errc::malformed));
}

TEST_CASE("hex: fixed_from_hex insists on the exact size") {
    std::string h64(64, 'a');
    auto ok = fixed_from_hex<Hash256>(h64);
    REQUIRE(ok.ok());
    for (auto b : ok->bytes)
        CHECK(b == 0xaa);
    CHECK(to_hex(*ok) == h64);
    CHECK(code_of(fixed_from_hex<Hash256>(std::string(62, 'a'))) == code_name(Errc::malformed));
    CHECK(code_of(fixed_from_hex<Hash256>(std::string(66, 'a'))) == code_name(Errc::malformed));
    CHECK(code_of(fixed_from_hex<Hash256>(std::string(63, 'a'))) == code_name(Errc::malformed));
    CHECK(code_of(fixed_from_hex<Hash256>(std::string(63, 'a') + "x")) ==
          code_name(Errc::malformed));
}
