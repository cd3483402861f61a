// Transactions, replica descriptions and config changes.
#include "common.hpp"

#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>

#include <nlohmann/json.hpp>
#include <popchain/transaction.hpp>

#include <optional>
#include <string>

namespace popchain::python {

namespace {

// Sets one field of `tx` by its Python name. The names are the C++ ones, except `from_`
// (`from` is a Python keyword).
void set_tx_field_as_is(Tx& tx, const std::string& name, const py::handle& value);

// pybind11's own cast error names neither the field nor the value's type.
void set_tx_field(Tx& tx, const std::string& name, const py::handle& value) {
    try {
        set_tx_field_as_is(tx, name, value);
    } catch (const py::cast_error&) {
        const auto type = py::str(py::type::of(value).attr("__name__")).cast<std::string>();
        throw py::type_error("Tx.replace: " + name + " cannot be " + type + " " +
                             py::repr(value).cast<std::string>() +
                             " (integers are 0 .. 2**64-1; hashes, keys and signatures are "
                             "their popchain types)");
    }
}

void set_tx_field_as_is(Tx& tx, const std::string& name, const py::handle& value) {
    if (name == "kind")
        tx.kind = value.cast<TxKind>();
    else if (name == "chain_id")
        tx.chain_id = value.cast<std::string>();
    else if (name == "from_")
        tx.from = value.cast<Address>();
    else if (name == "to")
        tx.to = value.cast<Address>();
    else if (name == "amount")
        tx.amount = value.cast<std::uint64_t>();
    else if (name == "nonce")
        tx.nonce = value.cast<std::uint64_t>();
    else if (name == "trade_id")
        tx.trade_id = value.cast<Hash256>();
    else if (name == "deadline")
        tx.deadline = value.cast<std::uint64_t>();
    else if (name == "payload")
        tx.payload = from_py_bytes(value.cast<py::buffer>());
    else if (name == "public_key")
        tx.public_key = value.cast<PublicKey>();
    else if (name == "signature")
        tx.signature = value.cast<Signature>();
    else
        throw py::type_error("Tx has no field '" + name + "'");
}

Result<void> check(const Tx& tx, const std::optional<std::string>& chain_id) {
    return check_tx_stateless(tx, chain_id ? *chain_id : tx.chain_id);
}

} // namespace

void init_tx(py::module_& m) {
    py::enum_<TxKind>(m, "TxKind", "What a transaction does (see Tx).")
        .value("transfer", TxKind::transfer, "from -> to, amount")
        .value("mint", TxKind::mint, "the authority credits `to` with `amount`")
        .value("escrow_open", TxKind::escrow_open, "buyer locks `amount` for seller `to`")
        .value("escrow_release", TxKind::escrow_release, "buyer releases the escrow to the seller")
        .value("escrow_refund", TxKind::escrow_refund, "the escrow goes back to the buyer")
        .value("config", TxKind::config, "the authority changes the replica set")
        .value("command", TxKind::command, "an opaque command for the chain's application");

    py::class_<ReplicaInfo>(m, "ReplicaInfo", "A replica as the ledger knows it.")
        .def(py::init([](std::uint32_t id, const PublicKey& key, std::string endpoint) {
                 return ReplicaInfo{id, key, std::move(endpoint)};
             }),
             py::arg("id"), py::arg("public_key"), py::arg("endpoint") = "")
        .def_readonly("id", &ReplicaInfo::id, "Replica id.")
        .def_readonly("public_key", &ReplicaInfo::key, "Its identity key.")
        .def_readonly("endpoint", &ReplicaInfo::endpoint, "'host:port'; empty in simulations.")
        .def(
            "__eq__", [](const ReplicaInfo& a, const ReplicaInfo& b) { return a == b; },
            py::is_operator())
        .def("__repr__", [](const ReplicaInfo& r) {
            return "ReplicaInfo(id=" + std::to_string(r.id) + ", public_key='" + to_hex(r.key) +
                   "', endpoint='" + r.endpoint + "')";
        });

    py::class_<ConfigChange> cc(m, "ConfigChange",
                                "The payload of a config transaction: add or remove a replica.");
    py::enum_<ConfigChange::Action>(cc, "Action")
        .value("add_replica", ConfigChange::Action::add_replica)
        .value("remove_replica", ConfigChange::Action::remove_replica);
    cc.def(py::init([](ConfigChange::Action action, const ReplicaInfo& replica) {
               return ConfigChange{action, replica};
           }),
           py::arg("action"), py::arg("replica"), "For remove_replica only replica.id is used.")
        .def_readonly("action", &ConfigChange::action)
        .def_readonly("replica", &ConfigChange::replica)
        .def(
            "encode", [](const ConfigChange& c) { return to_py_bytes(c.encode()); },
            "The canonical encoding (a config transaction's payload).")
        .def_static(
            "decode",
            [](const py::buffer& b) { return unwrap(decode_config_change(from_py_bytes(b))); },
            py::arg("data"), "Decodes; popchain.Error on malformed bytes.")
        .def(
            "__eq__", [](const ConfigChange& a, const ConfigChange& b) { return a == b; },
            py::is_operator());

    py::class_<Tx>(m, "Tx",
                   "A transaction: the signed value every ledger change comes from. Immutable\n"
                   "from Python: replace() gives a changed copy, sign() a signed one.\n\n"
                   "Fields by kind (unused ones stay zero/empty):\n"
                   "  transfer, mint    to=payee, amount > 0, payload = optional memo\n"
                   "  escrow_open       to=seller, amount > 0, trade_id (new), deadline (height)\n"
                   "  escrow_release    trade_id\n"
                   "  escrow_refund     trade_id\n"
                   "  config            payload = ConfigChange.encode()\n"
                   "`from_` is always the address of `public_key`; `nonce` is the sender's next\n"
                   "nonce, from 0. Wallet has a signing builder for each kind.")
        .def(py::init([](TxKind kind, std::string chain_id, const Address& to, std::uint64_t amount,
                         std::uint64_t nonce, const Hash256& trade_id, std::uint64_t deadline,
                         const py::buffer& payload) {
                 Tx tx;
                 tx.kind = kind;
                 tx.chain_id = std::move(chain_id);
                 tx.to = to;
                 tx.amount = amount;
                 tx.nonce = nonce;
                 tx.trade_id = trade_id;
                 tx.deadline = deadline;
                 tx.payload = from_py_bytes(payload);
                 return tx;
             }),
             py::arg("kind"), py::arg("chain_id"), py::arg("to") = Address{}, py::arg("amount") = 0,
             py::arg("nonce") = 0, py::arg("trade_id") = Hash256{}, py::arg("deadline") = 0,
             py::arg("payload") = py::bytes(),
             "An unsigned transaction; sign(key) fills in from_, public_key and signature.")
        .def_readonly("kind", &Tx::kind)
        .def_readonly("chain_id", &Tx::chain_id)
        .def_readonly("from_", &Tx::from, "The sender's address ('from' is a Python keyword).")
        .def_readonly("to", &Tx::to)
        .def_readonly("amount", &Tx::amount)
        .def_readonly("nonce", &Tx::nonce)
        .def_readonly("trade_id", &Tx::trade_id)
        .def_readonly("deadline", &Tx::deadline)
        .def_property_readonly(
            "payload", [](const Tx& tx) { return to_py_bytes(tx.payload); },
            "Memo, or the encoded ConfigChange of a config transaction.")
        .def_readonly("public_key", &Tx::public_key)
        .def_readonly("signature", &Tx::signature)
        .def_property_readonly("txid", &Tx::id,
                               "SHA-256 of signing_bytes(): every field but the signature.")
        .def(
            "signing_bytes", [](const Tx& tx) { return to_py_bytes(tx.signing_bytes()); },
            "The bytes the signature covers (a domain tag and every field but the signature).")
        .def("sign", &sign_tx, py::arg("key"),
             "A copy with public_key and from_ set to `key`'s and signed by it.")
        .def(
            "replace",
            [](const Tx& tx, const py::kwargs& fields) {
                Tx out = tx;
                for (auto [name, value] : fields)
                    set_tx_field(out, name.cast<std::string>(), value);
                return out;
            },
            "A copy with the given fields changed (kind, chain_id, from_, to, amount, nonce,\n"
            "trade_id, deadline, payload, public_key, signature). The signature is NOT\n"
            "redone: sign() the copy if it should be valid.")
        .def(
            "check",
            [](const Tx& tx, std::optional<std::string> chain_id) { unwrap(check(tx, chain_id)); },
            py::arg("chain_id") = py::none(),
            "Every check that needs no ledger: field shapes, chain id (the transaction's own\n"
            "when not given), sender matches key, signature. Raises popchain.Error.")
        .def(
            "verify",
            [](const Tx& tx, std::optional<std::string> chain_id) {
                return check(tx, chain_id).ok();
            },
            py::arg("chain_id") = py::none(), "check() as a bool.")
        .def(
            "config_change",
            [](const Tx& tx) {
                if (tx.kind != TxKind::config)
                    throw std::invalid_argument("config_change(): a " +
                                                std::string(tx_kind_name(tx.kind)) +
                                                " transaction is not a config transaction");
                return unwrap(decode_config_change(tx.payload));
            },
            "The ConfigChange in the payload of a config transaction (ValueError for other "
            "kinds).")
        .def(
            "encode", [](const Tx& tx) { return to_py_bytes(tx.encode()); },
            "The canonical encoding (signing bytes without the tag, then the signature).")
        .def(
            "to_json", [](const Tx& tx) { return api::to_json(tx).dump(); },
            "The JSON text a node's HTTP API takes (POST /v1/txs; docs/api.md).")
        .def_static(
            "from_json",
            [](const std::string& text) {
                auto j = unwrap(api::parse_json(text));
                return unwrap(api::tx_from_json(j));
            },
            py::arg("text"), "The Tx of the API's JSON form; popchain.Error for anything else.")
        .def_static(
            "decode", [](const py::buffer& b) { return unwrap(decode_tx(from_py_bytes(b))); },
            py::arg("data"),
            "The one Tx whose encoding is exactly `data`; popchain.Error (truncated,\n"
            "trailing_bytes, too_large, unknown_kind, ...) for anything else.")
        .def(
            "__eq__", [](const Tx& a, const Tx& b) { return a == b; }, py::is_operator())
        .def("__hash__", [](const Tx& tx) { return py::hash(to_py_bytes(tx.id().view())); })
        .def("__copy__", [](const Tx& tx) { return tx; })
        .def("__deepcopy__", [](const Tx& tx, const py::object&) { return tx; })
        .def("__repr__", [](const Tx& tx) {
            return std::string("Tx(") + tx_kind_name(tx.kind) + ", from=" + tx.from.to_string() +
                   ", to=" + tx.to.to_string() + ", amount=" + std::to_string(tx.amount) +
                   ", nonce=" + std::to_string(tx.nonce) + ", txid=" + to_hex(tx.id()) + ")";
        });
}

} // namespace popchain::python
