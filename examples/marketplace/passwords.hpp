// Login passwords: Argon2id (memory-hard) from Botan, stored as a self-describing hash
// string with its own salt and parameters, so they can be raised later without a migration.
#pragma once

#include <string>
#include <string_view>

namespace popmarket {

struct PasswordParams {
    std::size_t memory_kib = 19 * 1024; // per hash; what makes GPU guessing expensive
    std::size_t passes = 2;
    std::size_t lanes = 1;
};

std::string hash_password(std::string_view password, const PasswordParams& params = {});
// Constant work whether or not the password matches; false for a malformed hash.
bool check_password(std::string_view password, const std::string& hash);

// 2*bytes lower-case hex digits from the system's cryptographic RNG: session tokens, CSRF
// tokens.
std::string random_token(std::size_t bytes = 32);

} // namespace popmarket
