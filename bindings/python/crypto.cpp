// Hashes, public keys, signatures, addresses and signing keys.
#include "common.hpp"

#include <popchain/crypto.hpp>
#include <popchain/hex.hpp>

#include <string>

namespace popchain::python {

namespace {

template <class T>
T fixed_from_buffer(const py::buffer& b) {
    Bytes raw = from_py_bytes(b);
    if (raw.size() != T::size())
        raise(make_error(Errc::malformed, "expected " + std::to_string(T::size()) + " bytes, got " +
                                              std::to_string(raw.size())));
    return T::from(raw);
}

// The behaviour every fixed-size value shares: bytes and hex in and out, value equality,
// ordering and hashing (so they work as dict keys and in sets).
template <class T>
py::class_<T> bind_fixed(py::module_& m, const char* name, const char* doc) {
    py::class_<T> c(m, name, doc);
    c.def_static(
         "from_hex", [](std::string_view text) { return unwrap(fixed_from_hex<T>(text)); },
         py::arg("text"), "Parses lower- or upper-case hex of exactly the right length.")
        .def(
            "hex", [](const T& v) { return to_hex(v.view()); }, "Lower-case hex of the bytes.")
        .def(
            "__bytes__", [](const T& v) { return to_py_bytes(v.view()); }, "The raw bytes.")
        .def("is_zero", &T::is_zero, "True for the all-zero value.")
        .def("__len__", [](const T&) { return T::size(); })
        .def(
            "__eq__", [](const T& a, const T& b) { return a == b; }, py::is_operator())
        .def(
            "__ne__", [](const T& a, const T& b) { return a != b; }, py::is_operator())
        .def(
            "__lt__", [](const T& a, const T& b) { return a < b; }, py::is_operator())
        .def("__hash__", [](const T& v) { return py::hash(to_py_bytes(v.view())); })
        .def("__copy__", [](const T& v) { return v; })
        .def("__deepcopy__", [](const T& v, const py::object&) { return v; });
    return c;
}

template <class T>
void add_plain_constructors(py::class_<T>& c, const char* what) {
    c.def(py::init<>(), (std::string("The all-zero ") + what + ".").c_str())
        .def(py::init(&fixed_from_buffer<T>), py::arg("data"),
             (std::string("From exactly ") + std::to_string(T::size()) +
              " bytes; popchain.Error (malformed) otherwise.")
                 .c_str())
        .def("__repr__", [name = std::string(py::str(c.attr("__name__")))](const T& v) {
            return name + "('" + to_hex(v.view()) + "')";
        });
}

} // namespace

void init_crypto(py::module_& m) {
    auto hash = bind_fixed<Hash256>(m, "Hash256", "A 32-byte SHA-256 value (txids, block hashes).");
    add_plain_constructors(hash, "hash");

    auto sig = bind_fixed<Signature>(m, "Signature",
                                     "A 64-byte ECDSA P-256 signature r||s, normalised to low S.");
    add_plain_constructors(sig, "signature");

    auto pk = bind_fixed<PublicKey>(
        m, "PublicKey", "A 33-byte compressed P-256 public key (checked on the curve).");
    pk.def(py::init([](const py::buffer& b) { return unwrap(parse_public_key(from_py_bytes(b))); }),
           py::arg("data"),
           "From 33 bytes; popchain.Error (bad_public_key) unless a valid compressed point.")
        .def_property_readonly("address", &Address::of, "The address of this key.")
        .def(
            "verify",
            [](const PublicKey& k, const Hash256& digest, const Signature& s) {
                return popchain::verify(k, digest, s);
            },
            py::arg("digest"), py::arg("signature"),
            "True if `signature` is this key's valid low-S signature over `digest`.")
        .def("__repr__", [](const PublicKey& k) { return "PublicKey('" + to_hex(k) + "')"; });

    auto addr = bind_fixed<Address>(
        m, "Address",
        "An account: the first 20 bytes of SHA-256(public key). str() gives the text form,\n"
        "'pop' + 40 hex digits + an 8-digit checksum; Address.parse() reads it back.");
    add_plain_constructors(addr, "address");
    addr.def_static(
            "parse", [](std::string_view text) { return unwrap(Address::parse(text)); },
            py::arg("text"),
            "Parses the text form; popchain.Error (bad_address) on a wrong prefix, length,\n"
            "digit or checksum.")
        .def_static("of", &Address::of, py::arg("public_key"), "The address of a public key.")
        .def("__str__", &Address::to_string)
        .def("__repr__", [](const Address& a) { return "Address('" + a.to_string() + "')"; });

    m.def(
        "sha256", [](const py::buffer& data) { return sha256(from_py_bytes(data)); },
        py::arg("data"), "SHA-256 of a bytes-like object, as a Hash256.");
    m.def(
        "verify",
        [](const PublicKey& k, const Hash256& digest, const Signature& s) {
            return popchain::verify(k, digest, s);
        },
        py::arg("public_key"), py::arg("digest"), py::arg("signature"),
        "True if `signature` is `public_key`'s valid low-S ECDSA signature over `digest`.");

    py::class_<SigningKey>(m, "SigningKey",
                           "A P-256 private key. It cannot be copied or exported in the clear:\n"
                           "persist it with encrypted_pem() or a Keystore.")
        .def_static("generate", &SigningKey::generate, "A fresh random key.")
        .def_static(
            "from_secret",
            [](const py::buffer& secret) {
                return unwrap(SigningKey::from_secret(from_py_bytes(secret)));
            },
            py::arg("secret"),
            "From the 32-byte big-endian secret scalar (for example sha256(b'label').\n"
            "__bytes__() for a deterministic test key); popchain.Error if it is zero or not\n"
            "below the group order.")
        .def_static(
            "from_encrypted_pem",
            [](std::string_view pem, std::string_view passphrase) {
                return unwrap(SigningKey::from_encrypted_pem(pem, passphrase));
            },
            py::arg("pem"), py::arg("passphrase"),
            "Decrypts an ENCRYPTED PRIVATE KEY PEM block (popchain.Error wrong_passphrase\n"
            "for a wrong passphrase or a damaged file).")
        .def_property_readonly("public_key", &SigningKey::public_key, "The public key.")
        .def_property_readonly("address", &SigningKey::address, "The address of the key.")
        .def("sign", &SigningKey::sign, py::arg("digest"),
             "Signs a 32-byte digest (deterministic, RFC 6979, low S).")
        .def(
            "agree",
            [](const SigningKey& k, const PublicKey& peer) { return unwrap(k.agree(peer)); },
            py::arg("peer"), "ECDH with `peer`: SHA-256 of the shared x-coordinate.")
        .def(
            "encrypted_pem",
            [](const SigningKey& k, std::string_view passphrase, std::size_t kdf_msec) {
                return unwrap(k.encrypted_pem(passphrase, kdf_msec));
            },
            py::arg("passphrase"), py::arg("kdf_msec") = 100,
            "The key as encrypted PKCS#8 PEM (scrypt tuned to about kdf_msec, AES-256/GCM).")
        .def("__repr__", [](const SigningKey& k) {
            return "SigningKey(address='" + k.address().to_string() + "')";
        });
}

} // namespace popchain::python
