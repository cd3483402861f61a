// A directory of passphrase-encrypted signing keys, one file per alias.
//
// File `<dir>/<alias>.key`, mode 0600 from the moment it exists:
//
//   popchain-keystore v1
//   alias: <alias>
//   address: <address text form>
//   -----BEGIN ENCRYPTED PRIVATE KEY-----
//   ... PKCS#8, PBES2 with scrypt and AES-256/GCM ...
//   -----END ENCRYPTED PRIVATE KEY-----
//
// The alias and address lines are not secret; they let list() work without a passphrase.
// load() checks them against the decrypted key, so an edited header is caught.
//
// A file is written to a temporary name in the same directory, fsynced, then hard-linked to
// its final name and the directory fsynced: a crash leaves either no key or a complete one,
// and the link fails if the alias already exists, so an existing key is never replaced, not
// even by a concurrent save of the same alias.
//
// Aliases are 1-64 characters of [A-Za-z0-9_.-]. With no '/' allowed and ".key" appended,
// no alias names a file outside the directory.
//
// Thread-safe except for set_kdf_msec(), and several processes may share one directory: the
// file system operations above are atomic.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/result.hpp>
#include <popchain/wallet.hpp>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popchain {

struct KeystoreEntry {
    std::string alias;
    Address address;
    friend bool operator==(const KeystoreEntry&, const KeystoreEntry&) = default;
};

// Ok for 1-64 characters of [A-Za-z0-9_.-]; invalid_argument otherwise.
Result<void> validate_alias(std::string_view alias);

class Keystore {
public:
    // How long the scrypt parameters are tuned to take on this machine, in milliseconds.
    static constexpr std::size_t default_kdf_msec = 100;
    // Key files larger than this are rejected unread (a real one is well under 1 KiB).
    static constexpr std::size_t max_file_bytes = 64 * 1024;

    // The directory is created (mode 0700) by the first save, not here.
    explicit Keystore(std::filesystem::path dir, std::size_t kdf_msec = default_kdf_msec)
        : dir_(std::move(dir)), kdf_msec_(kdf_msec) {}

    const std::filesystem::path& dir() const { return dir_; }
    std::size_t kdf_msec() const { return kdf_msec_; }
    // Only affects later saves; loading reads the parameters from the file.
    void set_kdf_msec(std::size_t msec) { kdf_msec_ = msec; }

    // Generates a key, saves it under `alias` and returns it.
    Result<Wallet> create(std::string_view alias, std::string_view passphrase);
    // Saves under wallet.alias(). invalid_argument for a bad alias, an empty passphrase or
    // an alias already present; io_error when the file system fails.
    Result<void> save(const Wallet& wallet, std::string_view passphrase);
    // not_found when there is no such key; wrong_passphrase when decryption fails (a wrong
    // passphrase and a corrupted ciphertext cannot be told apart: AES-GCM only says the tag
    // does not match); malformed for a file that is not a keystore file or asks for
    // excessive KDF work; storage_corrupt when the header disagrees with the key.
    Result<Wallet> load(std::string_view alias, std::string_view passphrase) const;

    // Keys whose header reads well, sorted by alias. Unreadable files are skipped.
    std::vector<KeystoreEntry> list() const;
    bool contains(std::string_view alias) const;
    // Where the key of a valid alias lives (for tools and tests).
    std::filesystem::path path_of(std::string_view alias) const;

private:
    std::filesystem::path dir_;
    std::size_t kdf_msec_;
};

} // namespace popchain
