// Byte containers and fixed-size byte values shared by every layer.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace popchain {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

// A fixed-size byte string with value semantics (hashes, keys, signatures, addresses).
// The Tag keeps different kinds of N-byte values from being mixed up by accident.
template <std::size_t N, class Tag>
struct FixedBytes {
    static constexpr std::size_t size_bytes = N;
    std::array<std::uint8_t, N> bytes{};

    static FixedBytes from(ByteView v) {
        FixedBytes out;
        if (v.size() == N) std::memcpy(out.bytes.data(), v.data(), N);
        return out;
    }
    ByteView view() const { return ByteView(bytes.data(), N); }
    const std::uint8_t* data() const { return bytes.data(); }
    std::uint8_t* data() { return bytes.data(); }
    static constexpr std::size_t size() { return N; }
    bool is_zero() const {
        for (auto b : bytes)
            if (b != 0) return false;
        return true;
    }
    friend auto operator<=>(const FixedBytes&, const FixedBytes&) = default;
    friend bool operator==(const FixedBytes&, const FixedBytes&) = default;
};

// Hash-table support: values are already uniformly distributed (hashes, keys), so the first
// eight bytes are a fine bucket index.
// Mixes every byte: ids and addresses derived from hashes are uniform in any 8 bytes, but
// client ids of unsigned commands and escrow trade ids are chosen by users, and keys that
// shared their first 8 bytes would all land in one bucket.
struct FixedBytesHash {
    template <std::size_t N, class Tag>
    std::size_t operator()(const FixedBytes<N, Tag>& v) const noexcept {
        std::uint64_t h = 0;
        for (std::size_t i = 0; i < N; i += 8) {
            std::uint64_t word = 0;
            std::memcpy(&word, v.bytes.data() + i, N - i < 8 ? N - i : 8);
            h = (h ^ word) * 0x9e3779b97f4a7c15ull;
            h ^= h >> 29;
        }
        return static_cast<std::size_t>(h);
    }
};

inline Bytes to_bytes(std::string_view s) {
    return Bytes(s.begin(), s.end());
}
// A view of a string's bytes, without copying.
inline ByteView as_bytes(std::string_view s) {
    return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

} // namespace popchain
