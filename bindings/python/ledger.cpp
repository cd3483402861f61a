// Genesis, the ledger and block stores.
#include "common.hpp"

#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/sqlite_store.hpp>
#include <popchain/store.hpp>

#include <pybind11/stl/filesystem.h>

#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace popchain::python {

namespace {

// A ledger positioned at what `store` holds, or right after genesis for an empty store.
Ledger ledger_from_store(const Genesis& genesis, const BlockStore& store) {
    if (!store.tip_height()) return unwrap(genesis.ledger());
    return Ledger(genesis.params, unwrap(store.load_state()));
}

} // namespace

void init_ledger(py::module_& m) {
    // Declared before any method, so that signatures mentioning the other class show its
    // Python name in help().
    py::class_<Genesis> genesis(
        m, "Genesis",
        "What a chain starts from: chain id, authority key, replicas and initial\n"
        "balances; read from and written to the JSON genesis file.");
    py::class_<Ledger> ledger(
        m, "Ledger",
        "The deterministic state machine: balances and nonces per address,\n"
        "escrows by trade id, the replica set, the total minted. A block applies\n"
        "completely or not at all.");

    py::class_<Account>(m, "Account", "An address's balance and next nonce.")
        .def_readonly("balance", &Account::balance)
        .def_readonly("nonce", &Account::nonce, "The next nonce this address must use.")
        .def(
            "__eq__", [](const Account& a, const Account& b) { return a == b; }, py::is_operator())
        .def("__repr__", [](const Account& a) {
            return "Account(balance=" + std::to_string(a.balance) +
                   ", nonce=" + std::to_string(a.nonce) + ")";
        });

    py::enum_<EscrowStatus>(m, "EscrowStatus")
        .value("open", EscrowStatus::open)
        .value("released", EscrowStatus::released)
        .value("refunded", EscrowStatus::refunded);
    py::class_<Escrow>(m, "Escrow", "Payment held for a trade until released or refunded.")
        .def_readonly("buyer", &Escrow::buyer)
        .def_readonly("seller", &Escrow::seller)
        .def_readonly("amount", &Escrow::amount)
        .def_readonly("deadline", &Escrow::deadline,
                      "The buyer may reclaim in blocks with height > deadline.")
        .def_readonly("opened_at", &Escrow::opened_at, "Height of the block that opened it.")
        .def_readonly("status", &Escrow::status)
        .def(
            "__eq__", [](const Escrow& a, const Escrow& b) { return a == b; }, py::is_operator());

    py::class_<StateDelta>(m, "StateDelta",
                           "What one block changes (from Ledger.execute/apply); hand it to\n"
                           "Ledger.commit or BlockStore.append with its block.")
        .def_readonly("height", &StateDelta::height)
        .def_readonly("block_hash", &StateDelta::block_hash)
        .def_readonly("state_root", &StateDelta::state_root)
        .def_readonly("total_minted", &StateDelta::total_minted)
        .def_property_readonly(
            "accounts",
            [](const StateDelta& d) {
                return std::map<Address, Account>(d.accounts.begin(), d.accounts.end());
            },
            "New values of the accounts the block changed.");

    py::class_<RejectedTx>(m, "RejectedTx", "A candidate the block builder left out, and why.")
        .def_readonly("txid", &RejectedTx::txid)
        .def_property_readonly(
            "code", [](const RejectedTx& r) { return errc_name(r.error.code); },
            "The error's snake_case name, e.g. 'insufficient_funds'.")
        .def_property_readonly(
            "message", [](const RejectedTx& r) { return r.error.message(); }, "code: detail")
        .def("__repr__", [](const RejectedTx& r) {
            return "RejectedTx(txid=" + to_hex(r.txid) + ", '" + r.error.message() + "')";
        });
    py::class_<BuiltBlock>(m, "BuiltBlock", "A block from Ledger.build_block or Genesis.build.")
        .def_readonly("block", &BuiltBlock::block)
        .def_readonly("delta", &BuiltBlock::delta)
        .def_readonly("rejected", &BuiltBlock::rejected);

    genesis
        .def(py::init([](std::string chain_id, const PublicKey& authority,
                         std::vector<ReplicaInfo> replicas,
                         std::vector<std::pair<Address, std::uint64_t>> balances,
                         std::uint64_t timestamp_ms) {
                 Genesis g;
                 g.params = {std::move(chain_id), authority, {}};
                 g.replicas = std::move(replicas);
                 g.balances = std::move(balances);
                 g.timestamp_ms = timestamp_ms;
                 return g;
             }),
             py::arg("chain_id"), py::arg("authority"),
             py::arg("replicas") = std::vector<ReplicaInfo>{},
             py::arg("balances") = std::vector<std::pair<Address, std::uint64_t>>{},
             py::arg("timestamp_ms") = 0,
             "balances: a list of (Address, amount); `authority` is the key whose mints and\n"
             "config transactions are valid.")
        .def_static(
            "from_json", [](std::string_view text) { return unwrap(Genesis::from_json(text)); },
            py::arg("text"), "Parses a genesis file; popchain.Error on any problem.")
        .def_static(
            "load", [](const std::filesystem::path& file) { return unwrap(Genesis::load(file)); },
            py::arg("path"), "Reads and parses a genesis file.")
        .def("to_json", &Genesis::to_json)
        .def_property_readonly("chain_id", [](const Genesis& g) { return g.params.chain_id; })
        .def_property_readonly("authority", [](const Genesis& g) { return g.params.authority; })
        .def_readonly("timestamp_ms", &Genesis::timestamp_ms)
        .def_readonly("replicas", &Genesis::replicas)
        .def_readonly("balances", &Genesis::balances, "List of (Address, amount).")
        .def(
            "build", [](const Genesis& g) { return unwrap(g.build()); },
            "The height-0 block and its delta (to append to an empty store).")
        .def(
            "block", [](const Genesis& g) { return unwrap(g.build()).block; },
            "The height-0 block.")
        .def(
            "ledger", [](const Genesis& g) { return unwrap(g.ledger()); },
            "A ledger positioned right after genesis.")
        .def(
            "__eq__", [](const Genesis& a, const Genesis& b) { return a == b; }, py::is_operator());

    py::class_<TxRecord>(m, "TxRecord", "A stored transaction and where it is.")
        .def_readonly("tx", &TxRecord::tx)
        .def_readonly("height", &TxRecord::height, "Height of the block that holds it.")
        .def_readonly("index", &TxRecord::index, "Its position in that block.");

    py::class_<BlockStore>(m, "BlockStore",
                           "The committed chain, its transaction index and the state after it.")
        .def_property_readonly("tip_height", &BlockStore::tip_height,
                               "Height of the last block; None for an empty store.")
        .def("__len__",
             [](const BlockStore& s) {
                 auto tip = s.tip_height();
                 return tip ? *tip + 1 : 0;
             })
        .def(
            "append",
            [](BlockStore& s, const Block& b, const StateDelta& d) { unwrap(s.append(b, d)); },
            py::arg("block"), py::arg("delta"),
            "Records a block and its state change, all or nothing.")
        .def(
            "block_at", [](const BlockStore& s, std::uint64_t h) { return unwrap(s.block_at(h)); },
            py::arg("height"), "The block at `height`; popchain.Error (not_found) otherwise.")
        .def(
            "block_by_hash",
            [](const BlockStore& s, const Hash256& h) { return unwrap(s.block_by_hash(h)); },
            py::arg("hash"))
        .def(
            "blocks",
            [](const BlockStore& s) {
                std::vector<Block> out;
                if (auto tip = s.tip_height())
                    for (std::uint64_t h = 0; h <= *tip; ++h)
                        out.push_back(unwrap(s.block_at(h)));
                return out;
            },
            "Every block, genesis first.")
        .def(
            "tx", [](const BlockStore& s, const Hash256& id) { return unwrap(s.tx_by_id(id)); },
            py::arg("txid"), "The TxRecord; popchain.Error (not_found) otherwise.")
        .def(
            "txs_of",
            [](const BlockStore& s, const Address& a, std::uint64_t offset, std::uint32_t limit) {
                return unwrap(s.txs_of_address(a, offset, limit));
            },
            py::arg("address"), py::arg("offset") = 0, py::arg("limit") = 100,
            "Transactions involving `address`, oldest first.")
        .def(
            "state_digest",
            [](const BlockStore& s) { return state_digest(unwrap(s.load_state())); },
            "state_digest of the stored state (equals the ledger's at the same tip).");

    py::class_<MemoryStore, BlockStore>(m, "MemoryStore",
                                        "A BlockStore in memory (tests, simulations).")
        .def(py::init<>());
    py::class_<SqliteStore, BlockStore>(m, "SqliteStore",
                                        "A durable BlockStore in one SQLite file (WAL,\n"
                                        "synchronous=FULL): an append is durable on return.")
        .def_static(
            "open",
            [](const std::filesystem::path& file) { return unwrap(SqliteStore::open(file)); },
            py::arg("path"), "Opens or creates the store file.");

    ledger
        .def(py::init([](const Genesis& g) { return unwrap(g.ledger()); }), py::arg("genesis"),
             "The ledger right after `genesis`.")
        .def_static("from_store", &ledger_from_store, py::arg("genesis"), py::arg("store"),
                    "The ledger at the tip of `store` (after genesis if it is empty).")
        .def(
            "copy", [](const Ledger& l) { return l; }, "An independent copy.")
        .def("__copy__", [](const Ledger& l) { return l; })
        .def_property_readonly("chain_id", [](const Ledger& l) { return l.params().chain_id; })
        .def_property_readonly("authority", [](const Ledger& l) { return l.params().authority; })
        .def_property_readonly("height", &Ledger::height, "Height of the last applied block.")
        .def_property_readonly(
            "tip_hash", [](const Ledger& l) { return l.state().tip_hash; },
            "Hash of the last applied block.")
        .def_property_readonly("state_root", [](const Ledger& l) { return l.state().state_root; })
        .def_property_readonly("total_minted",
                               [](const Ledger& l) { return l.state().total_minted; })
        .def_property_readonly(
            "replicas", [](const Ledger& l) { return l.state().replicas; },
            "The replica set, sorted by id.")
        .def("account", &Ledger::account, py::arg("address"),
             "Balance and next nonce (zeros for an unknown address).")
        .def(
            "balance", [](const Ledger& l, const Address& a) { return l.account(a).balance; },
            py::arg("address"))
        .def(
            "nonce", [](const Ledger& l, const Address& a) { return l.account(a).nonce; },
            py::arg("address"), "The next nonce `address` must use.")
        .def("escrow", &Ledger::escrow, py::arg("trade_id"), "The escrow, or None.")
        .def(
            "accounts",
            [](const Ledger& l) {
                return std::map<Address, Account>(l.state().accounts.begin(),
                                                  l.state().accounts.end());
            },
            "Every account, as a dict Address -> Account.")
        .def(
            "escrows",
            [](const Ledger& l) {
                return std::map<Hash256, Escrow>(l.state().escrows.begin(),
                                                 l.state().escrows.end());
            },
            "Every escrow (closed ones too), as a dict trade id -> Escrow.")
        .def(
            "check_tx", [](const Ledger& l, const Tx& tx) { unwrap(l.check_tx(tx)); },
            py::arg("tx"),
            "Raises popchain.Error unless `tx` is valid as the next transaction of a block\n"
            "at height + 1.")
        .def(
            "execute", [](const Ledger& l, const Block& b) { return unwrap(l.execute(b)); },
            py::arg("block"),
            "Validates `block` (height, parent, tx root, every transaction in order, state\n"
            "root) and returns its StateDelta without changing the ledger.")
        .def(
            "commit",
            [](Ledger& l, const StateDelta& d) {
                // The C++ contract says the delta must come from execute() on this state; a
                // delta for another height would silently corrupt it, so refuse that here.
                if (d.height != l.height() + 1 || d.state_root.is_zero())
                    throw std::invalid_argument(
                        "commit: the delta is for height " + std::to_string(d.height) +
                        ", but this ledger is at height " + std::to_string(l.height()) +
                        " and takes only a delta for height " + std::to_string(l.height() + 1) +
                        " made by execute() on it");
                l.commit(d);
            },
            py::arg("delta"), "Installs a delta that execute() produced on this state.")
        .def(
            "apply", [](Ledger& l, const Block& b) { return unwrap(l.apply(b)); }, py::arg("block"),
            "execute() then commit(): all or nothing. Raises popchain.Error (the ledger is\n"
            "unchanged then); returns the StateDelta.")
        .def("build_block", &Ledger::build_block, py::arg("txs"), py::arg("view") = 0,
             py::arg("proposer") = 0, py::arg("timestamp_ms") = 0,
             "The next block from candidate transactions in order, leaving out those invalid\n"
             "at their position (BuiltBlock.rejected says why); fills both roots. The ledger\n"
             "is unchanged: apply(built.block) to take it.")
        .def(
            "check_invariants", [](const Ledger& l) { unwrap(l.check_invariants()); },
            "Raises popchain.Error unless balances + open escrows == total minted and the\n"
            "replica set is well formed.")
        .def("state_digest", &Ledger::state_digest,
             "SHA-256 of the canonical encoding of the whole state.");
}

} // namespace popchain::python
