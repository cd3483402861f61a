#include "passwords.hpp"

#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include <botan/argon2.h>
#include <botan/auto_rng.h>

namespace popmarket {

std::string hash_password(std::string_view password, const PasswordParams& params) {
    Botan::AutoSeeded_RNG rng;
    // y = 2: Argon2id, resistant to both GPU guessing and side channels.
    return Botan::argon2_generate_pwhash(password.data(), password.size(), rng, params.lanes,
                                         params.memory_kib, params.passes, 2);
}

bool check_password(std::string_view password, const std::string& hash) {
    try {
        return Botan::argon2_check_pwhash(password.data(), password.size(), hash);
    } catch (const std::exception&) {
        return false;
    }
}

std::string random_token(std::size_t bytes) {
    return popchain::to_hex(popchain::random_bytes(bytes));
}

} // namespace popmarket
