// Blocks, Merkle proofs, checkpoint certificates and the light-client check.
#include "common.hpp"

#include <popchain/block.hpp>
#include <popchain/hex.hpp>
#include <popchain/merkle.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/messages.hpp>

#include <optional>
#include <stdexcept>
#include <string>

namespace popchain::python {

namespace {

void set_header_field(BlockHeader& h, const std::string& name, const py::handle& value) {
    if (name == "height")
        h.height = value.cast<std::uint64_t>();
    else if (name == "prev_hash")
        h.prev_hash = value.cast<Hash256>();
    else if (name == "tx_root")
        h.tx_root = value.cast<Hash256>();
    else if (name == "state_root")
        h.state_root = value.cast<Hash256>();
    else if (name == "view")
        h.view = value.cast<std::uint64_t>();
    else if (name == "proposer")
        h.proposer = value.cast<std::uint32_t>();
    else if (name == "timestamp_ms")
        h.timestamp_ms = value.cast<std::uint64_t>();
    else
        throw py::type_error("BlockHeader has no field '" + name + "'");
}

void set_block_field(Block& b, const std::string& name, const py::handle& value) {
    if (name == "header")
        b.header = value.cast<BlockHeader>();
    else if (name == "txs")
        b.txs = value.cast<std::vector<Tx>>();
    else if (name == "certificate")
        b.certificate = value.cast<CommitCertificate>();
    else
        throw py::type_error("Block has no field '" + name + "'");
}

} // namespace

void init_block(py::module_& m) {
    py::class_<MerkleProof>(m, "MerkleProof",
                            "Proof that a txid is leaf `index` of a tree of `leaf_count` leaves.")
        .def(py::init(
                 [](std::uint32_t index, std::uint32_t leaf_count, std::vector<Hash256> siblings) {
                     return MerkleProof{index, leaf_count, std::move(siblings)};
                 }),
             py::arg("index"), py::arg("leaf_count"), py::arg("siblings"))
        .def_readonly("index", &MerkleProof::index)
        .def_readonly("leaf_count", &MerkleProof::leaf_count)
        .def_readonly("siblings", &MerkleProof::siblings, "Sibling hashes, bottom-up.")
        .def(
            "verify",
            [](const MerkleProof& p, const Hash256& root, const Hash256& leaf) {
                return merkle_verify(root, leaf, p);
            },
            py::arg("root"), py::arg("leaf"), "True if `leaf` (a txid) is under `root`.")
        .def(
            "__eq__", [](const MerkleProof& a, const MerkleProof& b) { return a == b; },
            py::is_operator());

    m.def(
        "merkle_root", [](const std::vector<Hash256>& leaves) { return merkle_root(leaves); },
        py::arg("leaves"), "Root of the tree over `leaves` (the zero hash for none).");
    m.def(
        "merkle_prove",
        [](const std::vector<Hash256>& leaves, std::size_t index) {
            if (index >= leaves.size()) throw std::out_of_range("leaf index out of range");
            return merkle_prove(leaves, index);
        },
        py::arg("leaves"), py::arg("index"), "Proof for leaves[index].");
    m.def("merkle_verify", &merkle_verify, py::arg("root"), py::arg("leaf"), py::arg("proof"),
          "True if `proof` shows `leaf` under `root`.");

    py::class_<BlockHeader>(m, "BlockHeader", "A block header; its hash is the block's identity.")
        .def(py::init<>(), "An all-zero header (build blocks with Ledger.build_block).")
        .def_readonly("height", &BlockHeader::height)
        .def_readonly("prev_hash", &BlockHeader::prev_hash, "Hash of the parent header.")
        .def_readonly("tx_root", &BlockHeader::tx_root, "Merkle root of the txids.")
        .def_readonly("state_root", &BlockHeader::state_root, "Ledger state root after it.")
        .def_readonly("view", &BlockHeader::view)
        .def_readonly("proposer", &BlockHeader::proposer)
        .def_readonly("timestamp_ms", &BlockHeader::timestamp_ms)
        .def_property_readonly("hash", &BlockHeader::hash, "The block hash.")
        .def(
            "replace",
            [](const BlockHeader& h, const py::kwargs& fields) {
                BlockHeader out = h;
                for (auto [name, value] : fields)
                    set_header_field(out, name.cast<std::string>(), value);
                return out;
            },
            "A copy with the given fields changed (height, prev_hash, tx_root, state_root,\n"
            "view, proposer, timestamp_ms).")
        .def(
            "__eq__", [](const BlockHeader& a, const BlockHeader& b) { return a == b; },
            py::is_operator())
        .def("__repr__", [](const BlockHeader& h) {
            return "BlockHeader(height=" + std::to_string(h.height) +
                   ", view=" + std::to_string(h.view) + ", hash=" + to_hex(h.hash()) + ")";
        });

    py::class_<CommitSignature>(m, "CommitSignature", "One replica's signature over a block.")
        .def_readonly("replica", &CommitSignature::replica)
        .def_readonly("signature", &CommitSignature::signature);
    py::class_<CommitCertificate>(m, "CommitCertificate",
                                  "Signatures attached to a block (not covered by its hash).")
        .def(py::init<>())
        .def_readonly("view", &CommitCertificate::view)
        .def_readonly("signatures", &CommitCertificate::signatures)
        .def("empty", &CommitCertificate::empty);

    py::class_<Block>(m, "Block",
                      "A block: header, transactions and commit certificate. Immutable from\n"
                      "Python; replace() gives a changed copy.")
        .def(py::init([](const BlockHeader& header, std::vector<Tx> txs,
                         const CommitCertificate& certificate) {
                 return Block{header, std::move(txs), certificate};
             }),
             py::arg("header"), py::arg("txs") = std::vector<Tx>{},
             py::arg("certificate") = CommitCertificate{})
        .def_readonly("header", &Block::header)
        .def_property_readonly(
            "height", [](const Block& b) { return b.header.height; }, "header.height")
        .def_property_readonly("hash", &Block::hash, "The header's hash.")
        .def_readonly("txs", &Block::txs, "The transactions (a copy, as a list).")
        .def_readonly("certificate", &Block::certificate)
        .def("txids", &Block::txids, "The txids, in block order.")
        .def(
            "prove_tx",
            [](const Block& b, std::size_t index) {
                if (index >= b.txs.size()) throw std::out_of_range("no transaction at index");
                return b.prove_tx(index);
            },
            py::arg("index"), "Merkle proof that txs[index] is under header.tx_root.")
        .def(
            "replace",
            [](const Block& b, const py::kwargs& fields) {
                Block out = b;
                for (auto [name, value] : fields)
                    set_block_field(out, name.cast<std::string>(), value);
                return out;
            },
            "A copy with header, txs or certificate replaced (no root is recomputed).")
        .def(
            "encode", [](const Block& b) { return to_py_bytes(b.encode()); },
            "The canonical encoding (header, transactions, certificate).")
        .def_static(
            "decode", [](const py::buffer& d) { return unwrap(decode_block(from_py_bytes(d))); },
            py::arg("data"), "Decodes exactly one block; popchain.Error otherwise.")
        .def(
            "__eq__", [](const Block& a, const Block& b) { return a == b; }, py::is_operator())
        .def("__len__", [](const Block& b) { return b.txs.size(); })
        .def("__repr__", [](const Block& b) {
            return "Block(height=" + std::to_string(b.header.height) +
                   ", txs=" + std::to_string(b.txs.size()) + ", hash=" + to_hex(b.hash()) + ")";
        });
    m.def("compute_tx_root", &compute_tx_root, py::arg("txs"),
          "The tx_root a header over `txs` must carry.");

    using pbft::Checkpoint;
    using pbft::CheckpointCertificate;
    using pbft::CommitProof;
    py::class_<Checkpoint>(m, "Checkpoint",
                           "A replica's signed statement: after block `seq` (hash block_hash)\n"
                           "its state root is state_root.")
        .def(py::init([](std::uint32_t replica, std::uint64_t seq, const Hash256& block_hash,
                         const Hash256& state_root, const Signature& signature) {
                 return Checkpoint{replica, seq, block_hash, state_root, signature};
             }),
             py::arg("replica"), py::arg("seq"), py::arg("block_hash"), py::arg("state_root"),
             py::arg("signature") = Signature{})
        .def_readonly("replica", &Checkpoint::replica)
        .def_readonly("seq", &Checkpoint::seq)
        .def_readonly("block_hash", &Checkpoint::block_hash)
        .def_readonly("state_root", &Checkpoint::state_root)
        .def_readonly("signature", &Checkpoint::signature)
        .def("signed_digest", &Checkpoint::signed_digest, "What the signature covers.")
        .def(
            "sign",
            [](const Checkpoint& c, const SigningKey& key) {
                return pbft::sign_checkpoint(c, key);
            },
            py::arg("key"), "A copy signed by `key`.")
        .def("__repr__", [](const Checkpoint& c) {
            return "Checkpoint(replica=" + std::to_string(c.replica) +
                   ", seq=" + std::to_string(c.seq) + ", block_hash=" + to_hex(c.block_hash) + ")";
        });
    py::class_<CheckpointCertificate>(m, "CheckpointCertificate",
                                      "Matching checkpoints from a quorum of distinct replicas.")
        .def(py::init(
                 [](std::vector<Checkpoint> cps) { return CheckpointCertificate{std::move(cps)}; }),
             py::arg("checkpoints") = std::vector<Checkpoint>{})
        .def_readonly("checkpoints", &CheckpointCertificate::checkpoints)
        .def_property_readonly(
            "seq",
            [](const CheckpointCertificate& c) -> std::optional<std::uint64_t> {
                if (c.checkpoints.empty()) return std::nullopt;
                return c.checkpoints.front().seq;
            },
            "Height it certifies (that of its first checkpoint), None when empty.")
        .def("__len__", [](const CheckpointCertificate& c) { return c.checkpoints.size(); });
    py::class_<CommitProof>(m, "CommitProof",
                            "What proves a block committed to a light client: the headers from\n"
                            "the block (exclusive) up to a checkpoint block (inclusive), and\n"
                            "that checkpoint's certificate.")
        .def(py::init([](std::vector<BlockHeader> headers, CheckpointCertificate certificate) {
                 return CommitProof{std::move(headers), std::move(certificate)};
             }),
             py::arg("headers"), py::arg("certificate"))
        .def_readonly("headers", &CommitProof::headers)
        .def_readonly("certificate", &CommitProof::certificate);

    m.def(
        "verify_checkpoint_certificate",
        [](const CheckpointCertificate& c, const std::vector<ReplicaInfo>& replicas) {
            unwrap(pbft::verify_checkpoint_certificate(c, replicas));
        },
        py::arg("certificate"), py::arg("replicas"),
        "Raises popchain.Error unless a quorum of distinct members of `replicas` validly\n"
        "signed matching checkpoints.");
    m.def(
        "verify_block",
        [](const Block& b, const CommitProof& p, const std::vector<ReplicaInfo>& replicas) {
            unwrap(pbft::verify_block(b, p, replicas));
        },
        py::arg("block"), py::arg("proof"), py::arg("replicas"),
        "The light-client check, with nothing but the replica set: the block's transactions\n"
        "match its tx root, proof.headers chain from it to the checkpoint block, and the\n"
        "certificate certifies that block under `replicas`. Raises popchain.Error (for\n"
        "example bad_tx_root, wrong_prev_hash, bad_signature) when any link fails.");
}

} // namespace popchain::python
