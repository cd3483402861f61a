// Helpers shared by the unit tests.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/result.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace popchain::test {

// Error codes as names, so a failing CHECK prints "nonce_gap" rather than a number.
inline std::string code_name(Errc c) {
    return errc_name(c);
}
template <class T>
std::string code_of(const Result<T>& r) {
    return r.ok() ? "ok" : errc_name(r.code());
}

// A deterministic key: the secret is 32 copies of `b` (b != 0).
inline SigningKey key_from_byte(std::uint8_t b) {
    auto k = SigningKey::from_secret(Bytes(32, b));
    REQUIRE(k.ok());
    return std::move(k).value();
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
public:
    TempDir() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "popchain-test-XXXXXX").string();
        char* made = ::mkdtemp(pattern.data());
        REQUIRE(made != nullptr);
        path_ = made;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

} // namespace popchain::test
