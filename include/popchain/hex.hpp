// Lower-case hexadecimal text for bytes; parsing accepts either case and rejects anything else.
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/result.hpp>

#include <string>
#include <string_view>

namespace popchain {

inline std::string to_hex(ByteView v) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.resize(v.size() * 2);
    for (std::size_t i = 0; i < v.size(); ++i) {
        out[2 * i] = digits[v[i] >> 4];
        out[2 * i + 1] = digits[v[i] & 0x0f];
    }
    return out;
}

namespace detail {
inline int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
} // namespace detail

inline Result<Bytes> from_hex(std::string_view text) {
    if (text.size() % 2 != 0) return make_error(Errc::malformed, "hex text has odd length");
    Bytes out(text.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        int hi = detail::hex_value(text[2 * i]);
        int lo = detail::hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return make_error(Errc::malformed, "not a hex digit");
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return out;
}

// Parses exactly FixedBytes::size() bytes of hex.
template <class Fixed>
Result<Fixed> fixed_from_hex(std::string_view text) {
    auto raw = from_hex(text);
    if (!raw) return raw.error();
    if (raw->size() != Fixed::size())
        return make_error(Errc::malformed, "expected " + std::to_string(Fixed::size()) +
                                               " bytes of hex, got " + std::to_string(raw->size()));
    return Fixed::from(*raw);
}

template <std::size_t N, class Tag>
std::string to_hex(const FixedBytes<N, Tag>& v) {
    return to_hex(v.view());
}

} // namespace popchain
