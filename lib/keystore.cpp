#include <popchain/keystore.hpp>

#include <botan/asn1_obj.h>
#include <botan/ber_dec.h>
#include <botan/pem.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <optional>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace popchain {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t max_alias_chars = 64;
constexpr std::string_view file_suffix = ".key";
constexpr std::string_view magic_line = "popchain-keystore v1";
constexpr std::string_view alias_label = "alias: ";
constexpr std::string_view address_label = "address: ";
constexpr std::string_view pem_label = "ENCRYPTED PRIVATE KEY";
constexpr std::string_view pem_begin = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

// The only scheme SigningKey::encrypted_pem writes. Anything else in a key file was not
// written by us, and accepting it would let a file pick its own KDF (PBKDF2 with 2^32
// iterations, say) or hand over an unencrypted key that loads with any passphrase.
const Botan::OID& pbes2_oid() {
    static const Botan::OID oid("1.2.840.113549.1.5.13");
    return oid;
}
const Botan::OID& scrypt_oid() {
    static const Botan::OID oid("1.3.6.1.4.1.11591.4.11");
    return oid;
}
const Botan::OID& aes256_gcm_oid() {
    static const Botan::OID oid("2.16.840.1.101.3.4.1.46");
    return oid;
}

// Scrypt parameters come from the file, and Botan accepts N up to 2^22 with r up to 256:
// a damaged or hostile file could make load() allocate 128 GiB or run for hours. Botan's
// tuner picks N=2^18, r=8, p=1 (256 MiB, about a second) for kdf_msec=1000, so these bounds
// leave room for a few seconds of deliberate hardening and reject only the absurd.
constexpr std::uint64_t max_scrypt_memory = std::uint64_t{1} << 30; // 128 * N * r bytes
constexpr std::uint64_t max_scrypt_work = std::uint64_t{1} << 24;   // N * r * p

Error io_error(const std::string& what, int err) {
    return make_error(Errc::io_error, what + ": " + std::generic_category().message(err));
}

bool alias_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

// Checks the PEM is PBES2 + scrypt + AES-256/GCM with bounded scrypt cost, before Botan
// derives a key from it.
Result<void> check_encryption_scheme(std::string_view pem) {
    auto bad = [](const std::string& why) {
        return make_error(Errc::malformed, "encrypted key: " + why);
    };
    try {
        std::string label;
        Botan::secure_vector<std::uint8_t> der = Botan::PEM_Code::decode(std::string(pem), label);
        if (label != pem_label) return bad("PEM label is \"" + label + "\"");

        Botan::AlgorithmIdentifier pbes;
        std::vector<std::uint8_t> ciphertext;
        Botan::BER_Decoder(der)
            .start_cons(Botan::SEQUENCE)
            .decode(pbes)
            .decode(ciphertext, Botan::OCTET_STRING)
            .end_cons()
            .verify_end();
        if (pbes.get_oid() != pbes2_oid()) return bad("not PBES2");

        Botan::AlgorithmIdentifier kdf;
        Botan::AlgorithmIdentifier cipher;
        Botan::BER_Decoder(pbes.get_parameters())
            .start_cons(Botan::SEQUENCE)
            .decode(kdf)
            .decode(cipher)
            .end_cons();
        if (kdf.get_oid() != scrypt_oid()) return bad("key derivation is not scrypt");
        if (cipher.get_oid() != aes256_gcm_oid()) return bad("cipher is not AES-256/GCM");

        std::vector<std::uint8_t> salt;
        std::size_t n = 0, r = 0, p = 0;
        Botan::BER_Decoder(kdf.get_parameters())
            .start_cons(Botan::SEQUENCE)
            .decode(salt, Botan::OCTET_STRING)
            .decode(n)
            .decode(r)
            .decode(p)
            .discard_remaining() // the optional key length
            .end_cons();
        // Divisions rather than products, so hostile values cannot overflow the checks.
        bool within = n > 0 && r > 0 && p > 0 && n <= max_scrypt_memory / 128 / r &&
                      p <= max_scrypt_work / (std::uint64_t{n} * r);
        if (!within)
            return bad("scrypt parameters N=" + std::to_string(n) + " r=" + std::to_string(r) +
                       " p=" + std::to_string(p) + " are outside the keystore's limits");
    } catch (const std::exception& e) {
        return bad(std::string("unreadable: ") + e.what());
    }
    return {};
}

struct Header {
    std::string alias;
    Address address;
    std::string_view pem; // points into the file content
};

// Removes and returns the next '\n'-terminated line.
std::optional<std::string_view> take_line(std::string_view& text) {
    std::size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    return line;
}

Result<Header> parse_file(std::string_view text) {
    auto bad = [](const std::string& why) {
        return make_error(Errc::malformed, "not a keystore file: " + why);
    };
    auto magic = take_line(text);
    if (!magic || *magic != magic_line) return bad("first line is not \"popchain-keystore v1\"");
    auto alias = take_line(text);
    if (!alias || !alias->starts_with(alias_label)) return bad("no alias line");
    alias->remove_prefix(alias_label.size());
    if (!validate_alias(*alias)) return bad("invalid alias");
    auto address = take_line(text);
    if (!address || !address->starts_with(address_label)) return bad("no address line");
    address->remove_prefix(address_label.size());
    auto parsed = Address::parse(*address);
    if (!parsed) return bad("address line: " + parsed.error().message());
    if (!text.starts_with(pem_begin)) return bad("no encrypted private key block");
    return Header{std::string(*alias), *parsed, text};
}

class FdGuard {
public:
    explicit FdGuard(int fd) : fd_(fd) {}
    FdGuard(const FdGuard&) = delete;
    FdGuard& operator=(const FdGuard&) = delete;
    ~FdGuard() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }
    // Closes now, so the caller sees close() errors (on some file systems the write error
    // only surfaces there).
    int close() {
        int rc = ::close(fd_);
        fd_ = -1;
        return rc;
    }

private:
    int fd_;
};

// Reads a key file, refusing anything but a small regular file.
Result<std::string> read_key_file(const fs::path& path) {
    FdGuard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT) return make_error(Errc::not_found, "no key file " + path.string());
        return io_error("cannot open " + path.string(), errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return io_error("cannot stat " + path.string(), errno);
    if (!S_ISREG(st.st_mode))
        return make_error(Errc::malformed, path.string() + " is not a regular file");
    // st_size is only a hint (the file may change under us); the read loop enforces the cap.
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return io_error("cannot read " + path.string(), errno);
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > Keystore::max_file_bytes)
            return make_error(Errc::malformed, path.string() + " is too large for a key file");
    }
    return out;
}

Result<void> write_all(int fd, std::string_view data, const fs::path& path) {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return io_error("cannot write " + path.string(), errno);
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return {};
}

Result<void> fsync_dir(const fs::path& dir) {
    FdGuard fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return io_error("cannot open directory " + dir.string(), errno);
    if (::fsync(fd.get()) != 0) return io_error("cannot fsync directory " + dir.string(), errno);
    return {};
}

// Creates the keystore directory itself with mode 0700; parents get the usual mode.
Result<void> ensure_dir(fs::path dir) {
    if (!dir.has_filename()) dir = dir.parent_path(); // "keys/" -> "keys"
    std::error_code ec;
    if (fs::is_directory(dir, ec)) return {};
    if (dir.has_parent_path()) {
        fs::create_directories(dir.parent_path(), ec);
        if (ec)
            return make_error(Errc::io_error,
                              "cannot create " + dir.parent_path().string() + ": " + ec.message());
    }
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return io_error("cannot create " + dir.string(), errno);
    if (!fs::is_directory(dir, ec))
        return make_error(Errc::io_error, dir.string() + " is not a directory");
    return {};
}

// Writes `content` as a new file `target` in `dir`, never replacing an existing one.
//
// The temporary is created 0600 with O_EXCL, so the secret is never readable by others and
// a planted file or symlink at that name is not followed. link() rather than rename()
// publishes it, because rename() silently replaces an existing key.
Result<void> publish_new_file(const fs::path& dir, const fs::path& target,
                              std::string_view content) {
    static std::atomic<unsigned> counter{0};
    fs::path tmp;
    int raw_fd = -1;
    for (int attempt = 0; attempt < 16 && raw_fd < 0; ++attempt) {
        tmp = target;
        tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
        raw_fd = ::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (raw_fd < 0 && errno != EEXIST) return io_error("cannot create " + tmp.string(), errno);
    }
    if (raw_fd < 0) return make_error(Errc::io_error, "cannot pick a temporary file name");
    FdGuard fd(raw_fd);
    // The temporary name must not outlive this call, whatever happens below.
    struct TmpName {
        const fs::path& path;
        bool present = true;
        void remove() {
            if (present) ::unlink(path.c_str());
            present = false;
        }
        ~TmpName() { remove(); }
    } tmp_name{tmp};

    if (auto w = write_all(fd.get(), content, tmp); !w) return w;
    if (::fsync(fd.get()) != 0) return io_error("cannot fsync " + tmp.string(), errno);
    if (fd.close() != 0) return io_error("cannot close " + tmp.string(), errno);
    if (::link(tmp.c_str(), target.c_str()) != 0) {
        if (errno == EEXIST)
            return make_error(Errc::invalid_argument, target.string() + " already exists");
        return io_error("cannot link " + target.string(), errno);
    }
    tmp_name.remove(); // before the directory fsync, which then persists link and unlink
    return fsync_dir(dir);
}

} // namespace

Result<void> validate_alias(std::string_view alias) {
    if (alias.empty() || alias.size() > max_alias_chars)
        return make_error(Errc::invalid_argument, "alias must be 1 to 64 characters long");
    if (!std::all_of(alias.begin(), alias.end(), alias_char))
        return make_error(Errc::invalid_argument,
                          "alias may only contain A-Z, a-z, 0-9, '_', '.' and '-'");
    return {};
}

fs::path Keystore::path_of(std::string_view alias) const {
    std::string name(alias);
    name += file_suffix;
    return dir_ / name;
}

bool Keystore::contains(std::string_view alias) const {
    if (!validate_alias(alias)) return false;
    std::error_code ec;
    return fs::exists(fs::symlink_status(path_of(alias), ec));
}

Result<Wallet> Keystore::create(std::string_view alias, std::string_view passphrase) {
    // Checked here too so a doomed create costs no key generation or KDF run.
    if (auto ok = validate_alias(alias); !ok) return ok.error();
    if (passphrase.empty()) return make_error(Errc::invalid_argument, "empty passphrase");
    Wallet wallet = Wallet::generate(std::string(alias));
    if (auto saved = save(wallet, passphrase); !saved) return saved.error();
    return wallet;
}

Result<void> Keystore::save(const Wallet& wallet, std::string_view passphrase) {
    const std::string& alias = wallet.alias();
    if (auto ok = validate_alias(alias); !ok) return ok;
    if (passphrase.empty()) return make_error(Errc::invalid_argument, "empty passphrase");
    if (contains(alias))
        return make_error(Errc::invalid_argument, "alias \"" + alias + "\" already exists");

    auto encrypted = wallet.signing_key().encrypted_pem(passphrase, kdf_msec_);
    if (!encrypted) return encrypted.error();
    const std::string& pem = *encrypted;
    // Never write a file load() would refuse (a huge kdf_msec tunes scrypt past the limits).
    if (auto scheme = check_encryption_scheme(pem); !scheme)
        return make_error(Errc::invalid_argument, "kdf_msec " + std::to_string(kdf_msec_) +
                                                      " is too large: " + scheme.error().message());

    std::string content;
    content.reserve(pem.size() + 128);
    content.append(magic_line).append("\n");
    content.append(alias_label).append(alias).append("\n");
    content.append(address_label).append(wallet.address().to_string()).append("\n");
    content.append(pem);

    if (auto dir = ensure_dir(dir_); !dir) return dir;
    return publish_new_file(dir_, path_of(alias), content);
}

Result<Wallet> Keystore::load(std::string_view alias, std::string_view passphrase) const {
    if (auto ok = validate_alias(alias); !ok) return ok.error();
    if (passphrase.empty()) return make_error(Errc::invalid_argument, "empty passphrase");
    auto content = read_key_file(path_of(alias));
    if (!content) return content.error();
    auto header = parse_file(*content);
    if (!header) return header.error();
    if (header->alias != alias)
        return make_error(Errc::storage_corrupt, "key file for \"" + std::string(alias) +
                                                     "\" names alias \"" + header->alias + "\"");
    if (auto scheme = check_encryption_scheme(header->pem); !scheme) return scheme.error();
    auto key = SigningKey::from_encrypted_pem(header->pem, passphrase);
    if (!key) return key.error();
    if (key->address() != header->address)
        return make_error(Errc::storage_corrupt,
                          "key file header says " + header->address.to_string() +
                              " but the key is " + key->address().to_string());
    return Wallet(std::string(alias), std::move(*key));
}

std::vector<KeystoreEntry> Keystore::list() const {
    std::vector<KeystoreEntry> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name.size() <= file_suffix.size() || !name.ends_with(file_suffix)) continue;
        std::string alias = name.substr(0, name.size() - file_suffix.size());
        if (!validate_alias(alias)) continue;
        auto content = read_key_file(it->path());
        if (!content) continue;
        auto header = parse_file(*content);
        if (!header || header->alias != alias) continue;
        out.push_back(KeystoreEntry{std::move(alias), header->address});
    }
    // Directory order is arbitrary; callers get a stable listing.
    std::sort(out.begin(), out.end(),
              [](const KeystoreEntry& a, const KeystoreEntry& b) { return a.alias < b.alias; });
    return out;
}

} // namespace popchain
