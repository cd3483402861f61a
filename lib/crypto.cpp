#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include "crypto_backends.hpp"

#include <botan/auto_rng.h>
#include <botan/bigint.h>
#include <botan/data_src.h>
#include <botan/ec_group.h>
#include <botan/ecdh.h>
#include <botan/ecdsa.h>
#include <botan/hash.h>
#include <botan/mac.h>
#include <botan/pkcs8.h>
#include <botan/pubkey.h>
#include <botan/version.h>

#include <new>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace popchain {

namespace {

const Botan::EC_Group& curve() {
    static const Botan::EC_Group group("secp256r1");
    return group;
}

// "Raw(SHA-256)": the input is already the SHA-256 digest; the hash name still selects
// SHA-256 for the RFC 6979 nonce, so the result equals standard ECDSA-SHA256 over the
// message the digest was taken of.
constexpr const char* signature_scheme = "Raw(SHA-256)";

Botan::RandomNumberGenerator& thread_rng() {
    thread_local Botan::AutoSeeded_RNG rng;
    return rng;
}

const Botan::BigInt& half_order() {
    static const Botan::BigInt half = curve().get_order() >> 1;
    return half;
}

} // namespace

// ---- hashing ----

Hash256 sha256(ByteView data) {
    thread_local auto fn = Botan::HashFunction::create_or_throw("SHA-256");
    fn->update(data.data(), data.size());
    Hash256 out;
    fn->final(out.data());
    return out;
}

// Building a hash object looks the algorithm up by name and allocates its state, which cost
// more than hashing the few dozen bytes most callers hash (a Merkle root's seal, a signature
// cache key, a message digest). So each thread keeps the objects of finished hashes for the
// next ones. `spares_gone` is a plain flag (nothing to destroy), so a hash that outlives its
// thread's spares still knows not to use them.
struct Sha256::Impl {
    std::unique_ptr<Botan::HashFunction> fn = Botan::HashFunction::create_or_throw("SHA-256");

    struct Spares {
        std::vector<std::unique_ptr<Impl>> objects;
        ~Spares() { spares_gone = true; }
    };
    static constexpr std::size_t max_spares = 8;
    static thread_local bool spares_gone;
    static thread_local Spares spares;
};
thread_local bool Sha256::Impl::spares_gone = false;
thread_local Sha256::Impl::Spares Sha256::Impl::spares;

Sha256::Sha256() {
    if (!Impl::spares_gone && !Impl::spares.objects.empty()) {
        impl_ = std::move(Impl::spares.objects.back());
        Impl::spares.objects.pop_back();
    } else {
        impl_ = std::make_unique<Impl>();
    }
}
Sha256::~Sha256() {
    if (!impl_ || Impl::spares_gone || Impl::spares.objects.size() >= Impl::max_spares) return;
    impl_->fn->clear(); // a hash dropped before finish() must not leak into the next one
    try {
        Impl::spares.objects.push_back(std::move(impl_));
    } catch (const std::bad_alloc&) {
        // Kept nothing; impl_ still owns the object and frees it.
    }
}
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;
Sha256& Sha256::update(ByteView data) {
    impl_->fn->update(data.data(), data.size());
    return *this;
}
Hash256 Sha256::finish() {
    Hash256 out;
    impl_->fn->final(out.data());
    return out;
}

Bytes random_bytes(std::size_t count) {
    Bytes out(count);
    if (count > 0) thread_rng().randomize(out.data(), out.size());
    return out;
}

Hash256 hmac_sha256(ByteView key, ByteView data) {
    return hmac_sha256(key, ByteView(), data);
}

Hash256 hmac_sha256(ByteView key, ByteView prefix, ByteView data) {
    thread_local auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
    mac->set_key(key.data(), key.size());
    mac->update(prefix.data(), prefix.size());
    mac->update(data.data(), data.size());
    Hash256 out;
    mac->final(out.data());
    return out;
}

struct HmacSha256::Impl {
    Botan::secure_vector<std::uint8_t> key;
    std::unique_ptr<Botan::MessageAuthenticationCode> fn =
        Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
    explicit Impl(ByteView k) : key(k.begin(), k.end()) { fn->set_key(key.data(), key.size()); }
};
HmacSha256::HmacSha256(ByteView key) : impl_(std::make_unique<Impl>(key)) {}
HmacSha256::~HmacSha256() = default;
HmacSha256::HmacSha256(const HmacSha256& other)
    : impl_(std::make_unique<Impl>(ByteView(other.impl_->key.data(), other.impl_->key.size()))) {}
HmacSha256& HmacSha256::operator=(const HmacSha256& other) {
    if (this != &other) *this = HmacSha256(other);
    return *this;
}
HmacSha256::HmacSha256(HmacSha256&&) noexcept = default;
HmacSha256& HmacSha256::operator=(HmacSha256&&) noexcept = default;
Hash256 HmacSha256::mac(ByteView prefix, ByteView data) {
    // Botan's HMAC absorbs the inner pad again when it finishes, ready for the next message.
    impl_->fn->update(prefix.data(), prefix.size());
    impl_->fn->update(data.data(), data.size());
    Hash256 out;
    impl_->fn->final(out.data());
    return out;
}

bool equal_in_constant_time(const Hash256& a, const Hash256& b) {
    std::uint8_t diff = 0;
    for (std::size_t i = 0; i < Hash256::size(); ++i)
        diff |= a.bytes[i] ^ b.bytes[i];
    return diff == 0;
}

// ---- addresses ----

namespace {
constexpr std::string_view address_prefix = "pop";

std::array<std::uint8_t, 4> address_checksum(const Address& a) {
    Hash256 h = Sha256().update("popchain-address").update(a.view()).finish();
    return {h.bytes[0], h.bytes[1], h.bytes[2], h.bytes[3]};
}
} // namespace

Address Address::of(const PublicKey& key) {
    Hash256 h = sha256(key.view());
    Address a;
    std::memcpy(a.data(), h.data(), Address::size());
    return a;
}

std::string Address::to_string() const {
    auto sum = address_checksum(*this);
    return std::string(address_prefix) + to_hex(view()) + to_hex(ByteView(sum.data(), sum.size()));
}

Result<Address> Address::parse(std::string_view text) {
    if (text.substr(0, address_prefix.size()) != address_prefix)
        return make_error(Errc::bad_address, "address must start with \"pop\"");
    text.remove_prefix(address_prefix.size());
    if (text.size() != 2 * (Address::size() + 4))
        return make_error(Errc::bad_address, "address must have 48 hex digits after \"pop\"");
    auto raw = from_hex(text);
    if (!raw) return make_error(Errc::bad_address, "address is not hex");
    Address a;
    std::memcpy(a.data(), raw->data(), Address::size());
    auto sum = address_checksum(a);
    if (std::memcmp(sum.data(), raw->data() + Address::size(), sum.size()) != 0)
        return make_error(Errc::bad_address, "address checksum mismatch (mistyped?)");
    return a;
}

// ---- public keys and verification ----

namespace {
std::unique_ptr<Botan::ECDSA_PublicKey> load_public(const PublicKey& key) {
    try {
        Botan::PointGFp point = curve().OS2ECP(key.data(), key.size());
        if (point.is_zero() || !point.on_the_curve()) return nullptr;
        return std::make_unique<Botan::ECDSA_PublicKey>(curve(), point);
    } catch (const std::exception&) {
        return nullptr;
    }
}
} // namespace

Result<PublicKey> parse_public_key(ByteView bytes) {
    if (bytes.size() != PublicKey::size())
        return make_error(Errc::bad_public_key, "public key must be 33 bytes (compressed)");
    PublicKey key = PublicKey::from(bytes);
    if (key.bytes[0] != 0x02 && key.bytes[0] != 0x03)
        return make_error(Errc::bad_public_key, "public key must be a compressed point");
    // Checking the point costs a modular square root, and a client or replica presents the
    // same key in every message it sends (a node's profile showed this check, not the
    // signature checks, as its largest Botan cost), so each thread remembers keys it found
    // good.
    constexpr std::size_t max_remembered = 4096;
    thread_local std::unordered_set<PublicKey, FixedBytesHash> good;
    if (good.count(key)) return key;
    if (!load_public(key)) return make_error(Errc::bad_public_key, "not a point on P-256");
    if (good.size() >= max_remembered) good.clear();
    good.insert(key);
    return key;
}

namespace {
// Decompressing a point and setting up a verifier costs about as much as the verification
// itself, and the same few keys (clients, replicas) sign most messages, so each thread keeps
// ready verifiers for recently seen keys. PK_Verifier is not thread-safe: one map per thread.
struct ReadyVerifier {
    std::unique_ptr<Botan::ECDSA_PublicKey> key;
    std::unique_ptr<Botan::PK_Verifier> verifier;
};
constexpr std::size_t max_ready_verifiers = 1024;

Botan::PK_Verifier* verifier_for(const PublicKey& key) {
    thread_local std::unordered_map<PublicKey, ReadyVerifier, FixedBytesHash> ready;
    if (auto it = ready.find(key); it != ready.end()) return it->second.verifier.get();
    auto pub = load_public(key);
    if (!pub) return nullptr;
    if (ready.size() >= max_ready_verifiers) ready.clear();
    auto verifier = std::make_unique<Botan::PK_Verifier>(*pub, signature_scheme);
    auto* raw = verifier.get();
    ready.emplace(key, ReadyVerifier{std::move(pub), std::move(verifier)});
    return raw;
}
} // namespace

bool detail::verify_with_botan(const PublicKey& key, const Hash256& digest, const Signature& sig,
                               bool allow_high_s) {
    Botan::BigInt s(sig.data() + 32, 32);
    if (!allow_high_s && s > half_order()) return false;
    try {
        Botan::PK_Verifier* verifier = verifier_for(key);
        return verifier &&
               verifier->verify_message(digest.data(), digest.size(), sig.data(), sig.size());
    } catch (const std::exception&) {
        return false;
    }
}

bool verify(const PublicKey& key, const Hash256& digest, const Signature& sig) {
#if POPCHAIN_OPENSSL_VERIFY
    return detail::verify_with_openssl(key, digest, sig);
#else
    return detail::verify_with_botan(key, digest, sig);
#endif
}

#if !POPCHAIN_OPENSSL_VERIFY
std::string detail::verify_backend() {
    return "Botan " + Botan::short_version_string();
}
#endif

// ---- signing keys ----

struct SigningKey::Impl {
    explicit Impl(Botan::ECDSA_PrivateKey k) : key(std::move(k)) {}
    Botan::ECDSA_PrivateKey key;
    mutable std::mutex mutex;
    mutable std::unique_ptr<Botan::PK_Signer> signer;
    // Built on first use: constructing it multiplies the base point, which doubled the cost
    // of every agree() (a replica agrees once with each peer).
    mutable std::unique_ptr<Botan::ECDH_PrivateKey> ecdh;
    mutable std::unique_ptr<Botan::PK_Key_Agreement> agreement;
};

namespace {
PublicKey encode_public(const Botan::ECDSA_PrivateKey& k) {
    auto enc = k.public_point().encode(Botan::PointGFp::COMPRESSED);
    return PublicKey::from(ByteView(enc.data(), enc.size()));
}
} // namespace

SigningKey::SigningKey(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), public_key_(encode_public(impl_->key)) {}
SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

SigningKey SigningKey::generate() {
    return SigningKey(std::make_unique<Impl>(Botan::ECDSA_PrivateKey(thread_rng(), curve())));
}

Result<SigningKey> SigningKey::from_secret(ByteView secret) {
    if (secret.size() != 32) return make_error(Errc::invalid_argument, "secret must be 32 bytes");
    Botan::BigInt x(secret.data(), secret.size());
    if (x.is_zero() || x >= curve().get_order())
        return make_error(Errc::invalid_argument, "secret is not a valid P-256 scalar");
    return SigningKey(std::make_unique<Impl>(Botan::ECDSA_PrivateKey(thread_rng(), curve(), x)));
}

Signature SigningKey::sign(const Hash256& digest) const {
    std::vector<std::uint8_t> raw;
    {
        // A PK_Signer is not thread-safe; one per key, used under a lock.
        std::lock_guard lock(impl_->mutex);
        if (!impl_->signer)
            impl_->signer =
                std::make_unique<Botan::PK_Signer>(impl_->key, thread_rng(), signature_scheme);
        raw = impl_->signer->sign_message(digest.data(), digest.size(), thread_rng());
    }
    Signature sig = Signature::from(ByteView(raw.data(), raw.size()));
    Botan::BigInt s(sig.data() + 32, 32);
    if (s > half_order()) {
        Botan::BigInt low = curve().get_order() - s;
        low.binary_encode(sig.data() + 32, 32);
    }
    return sig;
}

Result<Hash256> SigningKey::agree(const PublicKey& peer) const {
    auto pub = load_public(peer);
    if (!pub) return make_error(Errc::bad_public_key, "peer key is not a P-256 point");
    try {
        std::lock_guard lock(impl_->mutex);
        if (!impl_->agreement) {
            impl_->ecdh = std::make_unique<Botan::ECDH_PrivateKey>(thread_rng(), curve(),
                                                                   impl_->key.private_value());
            impl_->agreement =
                std::make_unique<Botan::PK_Key_Agreement>(*impl_->ecdh, thread_rng(), "Raw");
        }
        auto point = pub->public_point().encode(Botan::PointGFp::UNCOMPRESSED);
        Botan::SymmetricKey shared = impl_->agreement->derive_key(0, point.data(), point.size());
        return sha256(ByteView(shared.begin(), shared.size()));
    } catch (const std::exception& e) {
        return make_error(Errc::bad_public_key, std::string("key agreement failed: ") + e.what());
    }
}

Result<std::string> SigningKey::encrypted_pem(std::string_view passphrase,
                                              std::size_t kdf_msec) const {
    try {
        return Botan::PKCS8::PEM_encode(impl_->key, thread_rng(), std::string(passphrase),
                                        std::chrono::milliseconds(kdf_msec),
                                        "PBES2(AES-256/GCM,Scrypt)");
    } catch (const std::exception& e) {
        return make_error(Errc::invalid_argument, std::string("cannot encrypt key: ") + e.what());
    }
}

Result<SigningKey> SigningKey::from_encrypted_pem(std::string_view pem,
                                                  std::string_view passphrase) {
    // Checked before Botan sees the text: load_key would also take a plaintext key.
    constexpr std::string_view armour = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    auto start = pem.find_first_not_of(" \t\r\n");
    if (start == std::string_view::npos || pem.substr(start, armour.size()) != armour)
        return make_error(Errc::malformed, "not an encrypted private key file");
    std::unique_ptr<Botan::Private_Key> loaded;
    try {
        Botan::DataSource_Memory src(std::string{pem});
        loaded = Botan::PKCS8::load_key(src, std::string(passphrase));
    } catch (const std::exception& e) {
        // AES-GCM authenticates the ciphertext, so a wrong passphrase and a damaged body look
        // alike here.
        return make_error(Errc::wrong_passphrase,
                          std::string("cannot decrypt key (wrong passphrase or damaged file): ") +
                              e.what());
    }
    auto* ecdsa = dynamic_cast<Botan::ECDSA_PrivateKey*>(loaded.get());
    if (!ecdsa || ecdsa->domain() != curve())
        return make_error(Errc::malformed, "key file does not hold a P-256 ECDSA key");
    return SigningKey(std::make_unique<Impl>(
        Botan::ECDSA_PrivateKey(thread_rng(), curve(), ecdsa->private_value())));
}

// ---- signature cache ----

Hash256 SignatureCache::entry_id(const PublicKey& key, const Hash256& digest,
                                 const Signature& sig) {
    return Sha256().update(key).update(digest).update(sig).finish();
}

bool SignatureCache::verify(const PublicKey& key, const Hash256& digest, const Signature& sig) {
    Hash256 id = entry_id(key, digest, sig);
    {
        std::lock_guard lock(mutex_);
        if (entries_.count(id)) {
            ++hits_;
            return true;
        }
    }
    if (!popchain::verify(key, digest, sig)) return false;
    std::lock_guard lock(mutex_);
    if (capacity_ == 0 || entries_.count(id)) return true;
    if (entries_.size() >= capacity_) {
        entries_.erase(order_.front());
        order_.pop_front();
    }
    order_.push_back(id);
    entries_.insert(id);
    return true;
}

std::size_t SignatureCache::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}
std::size_t SignatureCache::hits() const {
    std::lock_guard lock(mutex_);
    return hits_;
}

} // namespace popchain
