// Canonical binary encoding.
//
//   integers  fixed width, little-endian (u8, u16, u32, u64)
//   bytes     u32 length, then the bytes; every field declares a maximum length
//   fixed     N raw bytes (hashes, keys, signatures, addresses), no prefix
//   lists     u32 count, then the elements; every list declares a maximum count
//
// One value has exactly one encoding, so hashes over encodings are well defined.
// Decoding is total: a Reader never reads out of bounds and never throws; the first
// problem (truncated input, an over-long field, a bad enum value) latches an error, later
// reads return zeros, and finish() reports the error or any trailing bytes.
#pragma once

#include <popchain/bytes.hpp>
#include <popchain/result.hpp>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace popchain {

class Writer {
public:
    Writer() = default;
    explicit Writer(std::size_t reserve) { buf_.reserve(reserve); }

    void u8(std::uint8_t v) { buf_.push_back(v); }
    void u16(std::uint16_t v) { put_le(v, 2); }
    void u32(std::uint32_t v) { put_le(v, 4); }
    void u64(std::uint64_t v) { put_le(v, 8); }
    void raw(ByteView v) { buf_.insert(buf_.end(), v.begin(), v.end()); }
    template <std::size_t N, class Tag>
    void fixed(const FixedBytes<N, Tag>& v) {
        raw(v.view());
    }
    // Callers bound every field far below 4 GiB (see the max_* limits), so the u32 length
    // cannot wrap.
    void bytes(ByteView v) {
        u32(static_cast<std::uint32_t>(v.size()));
        raw(v);
    }
    void str(std::string_view s) { bytes(as_bytes(s)); }

    const Bytes& data() const { return buf_; }
    Bytes take() { return std::move(buf_); }
    // Empties the buffer and keeps its capacity, for a writer that is reused.
    void clear() { buf_.clear(); }

private:
    void put_le(std::uint64_t v, int width) {
        for (int i = 0; i < width; ++i)
            buf_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    Bytes buf_;
};

class Reader {
public:
    explicit Reader(ByteView in) : in_(in) {}

    std::uint8_t u8() { return static_cast<std::uint8_t>(get_le(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(get_le(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get_le(4)); }
    std::uint64_t u64() { return get_le(8); }

    template <class Fixed>
    Fixed fixed() {
        Fixed out;
        if (take(Fixed::size()))
            std::memcpy(out.data(), in_.data() + pos_ - Fixed::size(), Fixed::size());
        return out;
    }
    Bytes bytes(std::size_t max_len) {
        std::size_t n = length(max_len);
        if (!take(n)) return {};
        return Bytes(in_.begin() + static_cast<std::ptrdiff_t>(pos_ - n),
                     in_.begin() + static_cast<std::ptrdiff_t>(pos_));
    }
    // A length-prefixed field like bytes(), as a view into the input (empty on error).
    ByteView view(std::size_t max_len) {
        std::size_t n = length(max_len);
        if (!take(n)) return {};
        return in_.subspan(pos_ - n, n);
    }
    std::string str(std::size_t max_len) {
        Bytes b = bytes(max_len);
        return std::string(b.begin(), b.end());
    }
    // Reads a list count and checks it against a maximum.
    std::size_t count(std::size_t max_count) { return length(max_count); }
    // Passes over `n` bytes, or a length-prefixed field, with the checks of the reads above
    // but without copying: how one element of a list is reached without decoding the others.
    void skip(std::size_t n) { (void)take(n); }
    void skip_bytes(std::size_t max_len) { (void)take(length(max_len)); }

    // Latches an error (the first one wins).
    void fail(Errc code, std::string detail) {
        if (!error_) error_ = Error{code, std::move(detail)};
    }
    bool ok() const { return !error_; }
    std::size_t remaining() const { return error_ ? 0 : in_.size() - pos_; }

    // The decoding verdict: the latched error, or trailing_bytes when input is left over.
    Result<void> finish() const {
        if (error_) return *error_;
        if (pos_ != in_.size())
            return make_error(Errc::trailing_bytes,
                              std::to_string(in_.size() - pos_) + " bytes after the value");
        return {};
    }

private:
    std::size_t length(std::size_t max) {
        std::uint32_t n = u32();
        if (n > max) {
            fail(Errc::too_large,
                 "length " + std::to_string(n) + " exceeds " + std::to_string(max));
            return 0;
        }
        return n;
    }
    bool take(std::size_t n) {
        if (error_) return false;
        if (in_.size() - pos_ < n) {
            fail(Errc::truncated, "needed " + std::to_string(n) + " bytes, " +
                                      std::to_string(in_.size() - pos_) + " left");
            return false;
        }
        pos_ += n;
        return true;
    }
    std::uint64_t get_le(int width) {
        if (!take(static_cast<std::size_t>(width))) return 0;
        std::uint64_t v = 0;
        for (int i = 0; i < width; ++i)
            v |= static_cast<std::uint64_t>(
                     in_[pos_ - static_cast<std::size_t>(width) + static_cast<std::size_t>(i)])
                 << (8 * i);
        return v;
    }

    ByteView in_;
    std::size_t pos_ = 0;
    std::optional<Error> error_;
};

// Decodes a whole buffer with `decode_fn(Reader&) -> T`, insisting nothing is left over.
template <class T, class DecodeFn>
Result<T> decode_all(ByteView in, DecodeFn decode_fn) {
    Reader r(in);
    T value = decode_fn(r);
    if (auto done = r.finish(); !done) return done.error();
    return value;
}

} // namespace popchain
