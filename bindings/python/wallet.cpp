// Wallets (a key under an alias, with a signing builder per transaction kind) and the
// passphrase-encrypted keystore.
#include "common.hpp"

#include <popchain/keystore.hpp>
#include <popchain/wallet.hpp>

#include <pybind11/stl/filesystem.h>

#include <string>

namespace popchain::python {

void init_wallet(py::module_& m) {
    py::class_<Wallet>(m, "Wallet",
                       "A signing key under a human-readable alias, with builders that return\n"
                       "signed transactions. The builders do not look at any ledger: the caller\n"
                       "gives the chain id and the sender's next nonce.")
        .def_static("generate", &Wallet::generate, py::arg("alias"), "A fresh random key.")
        .def_static(
            "from_secret",
            [](std::string alias, const py::buffer& secret) {
                return Wallet(std::move(alias),
                              unwrap(SigningKey::from_secret(from_py_bytes(secret))));
            },
            py::arg("alias"), py::arg("secret"),
            "From a 32-byte secret scalar (see SigningKey.from_secret).")
        .def_static(
            "from_encrypted_pem",
            [](std::string alias, std::string_view pem, std::string_view passphrase) {
                return Wallet(std::move(alias),
                              unwrap(SigningKey::from_encrypted_pem(pem, passphrase)));
            },
            py::arg("alias"), py::arg("pem"), py::arg("passphrase"),
            "From an encrypted PKCS#8 PEM key file's text (e.g. a testnet's authority.key);\n"
            "popchain.Error wrong_passphrase when it does not decrypt.")
        .def_property_readonly("alias", &Wallet::alias)
        .def_property_readonly("address", &Wallet::address)
        .def_property_readonly("public_key", &Wallet::public_key)
        .def_property_readonly("signing_key", &Wallet::signing_key,
                               py::return_value_policy::reference_internal,
                               "The wallet's SigningKey (valid while the wallet lives).")
        .def("sign", &Wallet::sign, py::arg("tx"),
             "A copy of `tx` with public_key and from_ filled in, signed.")
        .def(
            "transfer",
            [](const Wallet& w, std::string_view chain_id, std::uint64_t nonce, const Address& to,
               std::uint64_t amount, const py::buffer& memo) {
                return w.transfer(chain_id, nonce, to, amount, from_py_bytes(memo));
            },
            py::arg("chain_id"), py::arg("nonce"), py::arg("to"), py::arg("amount"),
            py::arg("memo") = py::bytes(), "A signed transfer of `amount` to `to`.")
        .def(
            "mint",
            [](const Wallet& w, std::string_view chain_id, std::uint64_t nonce, const Address& to,
               std::uint64_t amount, const py::buffer& memo) {
                return w.mint(chain_id, nonce, to, amount, from_py_bytes(memo));
            },
            py::arg("chain_id"), py::arg("nonce"), py::arg("to"), py::arg("amount"),
            py::arg("memo") = py::bytes(),
            "A signed mint (valid only when this wallet is the chain authority).")
        .def(
            "escrow_open",
            [](const Wallet& w, std::string_view chain_id, std::uint64_t nonce,
               const Address& seller, std::uint64_t amount, const Hash256& trade_id,
               std::uint64_t deadline, const py::buffer& memo) {
                return w.escrow_open(chain_id, nonce, seller, amount, trade_id, deadline,
                                     from_py_bytes(memo));
            },
            py::arg("chain_id"), py::arg("nonce"), py::arg("seller"), py::arg("amount"),
            py::arg("trade_id"), py::arg("deadline"), py::arg("memo") = py::bytes(),
            "This wallet (the buyer) locks `amount` for `seller` under `trade_id`; the buyer\n"
            "may reclaim it in blocks with height > deadline.")
        .def(
            "escrow_release",
            [](const Wallet& w, std::string_view chain_id, std::uint64_t nonce,
               const Hash256& trade_id, const py::buffer& memo) {
                return w.escrow_release(chain_id, nonce, trade_id, from_py_bytes(memo));
            },
            py::arg("chain_id"), py::arg("nonce"), py::arg("trade_id"),
            py::arg("memo") = py::bytes(), "The buyer releases the escrow to the seller.")
        .def(
            "escrow_refund",
            [](const Wallet& w, std::string_view chain_id, std::uint64_t nonce,
               const Hash256& trade_id, const py::buffer& memo) {
                return w.escrow_refund(chain_id, nonce, trade_id, from_py_bytes(memo));
            },
            py::arg("chain_id"), py::arg("nonce"), py::arg("trade_id"),
            py::arg("memo") = py::bytes(),
            "The escrow goes back to the buyer (the seller any time, the buyer after the\n"
            "deadline).")
        .def("config", &Wallet::config, py::arg("chain_id"), py::arg("nonce"), py::arg("change"),
             "A signed config transaction (valid only from the chain authority).")
        .def("__repr__", [](const Wallet& w) {
            return "Wallet(alias='" + w.alias() + "', address='" + w.address().to_string() + "')";
        });

    py::class_<KeystoreEntry>(m, "KeystoreEntry", "A key file's public header.")
        .def_readonly("alias", &KeystoreEntry::alias)
        .def_readonly("address", &KeystoreEntry::address)
        .def("__repr__", [](const KeystoreEntry& e) {
            return "KeystoreEntry(alias='" + e.alias + "', address='" + e.address.to_string() +
                   "')";
        });

    py::class_<Keystore>(m, "Keystore",
                         "A directory of passphrase-encrypted keys, one file <alias>.key each\n"
                         "(mode 0600, PKCS#8 with scrypt and AES-256/GCM). An existing key is\n"
                         "never replaced. Aliases are 1-64 characters of [A-Za-z0-9_.-].")
        .def(py::init<std::filesystem::path, std::size_t>(), py::arg("dir"),
             py::arg("kdf_msec") = Keystore::default_kdf_msec,
             "The directory is created by the first save. kdf_msec: how long scrypt is tuned\n"
             "to take per save (lower it in tests).")
        .def_property_readonly("dir", &Keystore::dir)
        .def(
            "create",
            [](Keystore& k, std::string_view alias, std::string_view passphrase) {
                return unwrap(k.create(alias, passphrase));
            },
            py::arg("alias"), py::arg("passphrase"), "Generates a key, saves it, returns it.")
        .def(
            "save",
            [](Keystore& k, const Wallet& w, std::string_view passphrase) {
                unwrap(k.save(w, passphrase));
            },
            py::arg("wallet"), py::arg("passphrase"),
            "Saves under wallet.alias; popchain.Error (invalid_argument) for a bad alias, an\n"
            "empty passphrase or an alias already present.")
        .def(
            "load",
            [](const Keystore& k, std::string_view alias, std::string_view passphrase) {
                return unwrap(k.load(alias, passphrase));
            },
            py::arg("alias"), py::arg("passphrase"),
            "popchain.Error: not_found, wrong_passphrase, malformed or storage_corrupt.")
        .def("list", &Keystore::list, "Entries whose header reads well, sorted by alias.")
        .def("contains", &Keystore::contains, py::arg("alias"))
        .def("__contains__", &Keystore::contains, py::arg("alias"))
        .def("path_of", &Keystore::path_of, py::arg("alias"), "Where the key of `alias` lives.");
}

} // namespace popchain::python
