#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <optional>

namespace popchain::api {

namespace {

// A proof's headers run from the proven block to the next checkpoint; no checkpoint
// interval comes near this, and it keeps a hostile document from costing unbounded work.
constexpr std::size_t max_proof_headers = 1 << 16;
// A Merkle tree over at most 2^32 leaves is at most 32 levels deep.
constexpr std::size_t max_merkle_depth = 32;

// Reads the fields of one JSON object. The first problem is remembered, with the path of
// the field, and every later read returns a default, so a parser reads all fields in a row
// and checks ok() once at the end.
class Fields {
public:
    Fields(const json& j, std::string path, std::initializer_list<std::string_view> allowed)
        : j_(j), path_(std::move(path)) {
        if (!j.is_object()) {
            fail_at(path_, "must be an object");
            return;
        }
        for (const auto& item : j.items()) {
            if (std::find(allowed.begin(), allowed.end(), item.key()) == allowed.end()) {
                fail_at(path_, "unknown field \"" + item.key() + "\"");
                return;
            }
        }
    }

    bool ok() const { return !error_; }
    const Error& error() const { return *error_; }
    std::string path(std::string_view name) const { return path_ + "." + std::string(name); }

    bool has(std::string_view name) const {
        return ok() && j_.is_object() && j_.find(name) != j_.end();
    }

    // The field, or nullptr (and a "missing" error).
    const json* get(std::string_view name) {
        if (!ok()) return nullptr;
        auto it = j_.find(name);
        if (it == j_.end()) {
            fail_at(path(name), "missing");
            return nullptr;
        }
        return &*it;
    }

    std::uint64_t u64(std::string_view name,
                      std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) {
        const json* v = get(name);
        if (!v) return 0;
        std::optional<std::uint64_t> value;
        if (v->is_number_unsigned()) {
            value = v->get<std::uint64_t>();
        } else if (v->is_number_integer() && v->get<std::int64_t>() >= 0) {
            value = static_cast<std::uint64_t>(v->get<std::int64_t>());
        }
        if (!value || *value > max) {
            fail_at(path(name), "must be an integer from 0 to " + std::to_string(max));
            return 0;
        }
        return *value;
    }
    std::uint32_t u32(std::string_view name) {
        return static_cast<std::uint32_t>(u64(name, std::numeric_limits<std::uint32_t>::max()));
    }

    std::string str(std::string_view name, std::size_t max_bytes) {
        const json* v = get(name);
        if (!v) return {};
        if (!v->is_string()) {
            fail_at(path(name), "must be a string");
            return {};
        }
        const auto& s = v->get_ref<const std::string&>();
        if (s.size() > max_bytes) {
            fail_at(path(name), "longer than " + std::to_string(max_bytes) + " bytes");
            return {};
        }
        return s;
    }

    Bytes bytes(std::string_view name, std::size_t max_bytes) {
        const json* v = get(name);
        if (!v) return {};
        if (!v->is_string()) {
            fail_at(path(name), "must be a hex string");
            return {};
        }
        const auto& s = v->get_ref<const std::string&>();
        if (s.size() > 2 * max_bytes) {
            fail_at(path(name), "longer than " + std::to_string(max_bytes) + " bytes");
            return {};
        }
        auto raw = from_hex(s);
        if (!raw) {
            fail_at(path(name), raw.error().detail);
            return {};
        }
        return std::move(*raw);
    }

    template <class Fixed>
    Fixed fixed(std::string_view name) {
        const json* v = get(name);
        if (!v) return {};
        if (!v->is_string()) {
            fail_at(path(name), "must be a hex string");
            return {};
        }
        auto value = fixed_from_hex<Fixed>(v->get_ref<const std::string&>());
        if (!value) {
            fail_at(path(name), value.error().detail);
            return {};
        }
        return *value;
    }

    Address address(std::string_view name) {
        const json* v = get(name);
        if (!v) return {};
        if (!v->is_string()) {
            fail_at(path(name), "must be an address string");
            return {};
        }
        auto a = Address::parse(v->get_ref<const std::string&>());
        if (!a) {
            fail_at(path(name), a.error().message());
            return {};
        }
        return *a;
    }

    // The array field, checked for size; nullptr on error.
    const json* array(std::string_view name, std::size_t max_items) {
        const json* v = get(name);
        if (!v) return nullptr;
        if (!v->is_array()) {
            fail_at(path(name), "must be an array");
            return nullptr;
        }
        if (v->size() > max_items) {
            fail_at(path(name), "more than " + std::to_string(max_items) + " entries");
            return nullptr;
        }
        return v;
    }

    // A derived field (an id, a hash), optional in input: when present, it must equal what
    // the parsed value computes.
    void check_derived(std::string_view name, const Hash256& computed) {
        if (!has(name)) return;
        auto given = fixed<Hash256>(name);
        if (ok() && given != computed)
            fail_at(path(name),
                    "does not match the value's contents (computed " + to_hex(computed) + ")");
    }

    // Adopts an error from a nested parser (which already carries its full path).
    void fail(const Error& e) {
        if (!error_) error_ = e;
    }
    void fail_at(const std::string& where, const std::string& what) {
        if (!error_) error_ = make_error(Errc::malformed, where + ": " + what);
    }

private:
    const json& j_;
    std::string path_;
    std::optional<Error> error_;
};

std::string index_path(const std::string& base, std::size_t i) {
    return base + "[" + std::to_string(i) + "]";
}

// Parses each element of `arr` with `parse(element, path)`, into `out`.
template <class T, class Parse>
void each(Fields& f, const json* arr, std::string_view name, std::vector<T>& out, Parse parse) {
    if (!arr) return;
    out.reserve(arr->size());
    for (std::size_t i = 0; i < arr->size() && f.ok(); ++i) {
        Result<T> item = parse((*arr)[i], index_path(f.path(name), i));
        if (!item) {
            f.fail(item.error());
            return;
        }
        out.push_back(std::move(*item));
    }
}

template <class T>
Result<T> finish(Fields& f, T value) {
    if (!f.ok()) return f.error();
    return value;
}

// ---- the parsers, each with the path of the value it reads ----

Result<Tx> parse_tx(const json& j, const std::string& at) {
    Fields f(j, at,
             {"id", "kind", "chain_id", "from", "to", "amount", "nonce", "trade_id", "deadline",
              "payload", "public_key", "signature"});
    Tx tx;
    std::string kind = f.str("kind", 32);
    if (f.ok()) {
        auto k = tx_kind_from_name(kind);
        if (!k)
            f.fail_at(f.path("kind"), "unknown transaction kind \"" + kind + "\"");
        else
            tx.kind = *k;
    }
    tx.chain_id = f.str("chain_id", max_chain_id_bytes);
    tx.from = f.address("from");
    tx.to = f.address("to");
    tx.amount = f.u64("amount");
    tx.nonce = f.u64("nonce");
    tx.trade_id = f.fixed<Hash256>("trade_id");
    tx.deadline = f.u64("deadline");
    tx.payload = f.bytes("payload", max_payload_bytes);
    tx.public_key = f.fixed<PublicKey>("public_key");
    tx.signature = f.fixed<Signature>("signature");
    if (f.ok()) f.check_derived("id", tx.id());
    return finish(f, std::move(tx));
}

Result<BlockHeader> parse_header(const json& j, const std::string& at) {
    Fields f(j, at,
             {"height", "prev_hash", "tx_root", "state_root", "view", "proposer", "timestamp_ms",
              "hash"});
    BlockHeader h;
    h.height = f.u64("height");
    h.prev_hash = f.fixed<Hash256>("prev_hash");
    h.tx_root = f.fixed<Hash256>("tx_root");
    h.state_root = f.fixed<Hash256>("state_root");
    h.view = f.u64("view");
    h.proposer = f.u32("proposer");
    h.timestamp_ms = f.u64("timestamp_ms");
    if (f.ok()) f.check_derived("hash", h.hash());
    return finish(f, h);
}

Result<CommitSignature> parse_commit_signature(const json& j, const std::string& at) {
    Fields f(j, at, {"replica", "signature"});
    CommitSignature s;
    s.replica = f.u32("replica");
    s.signature = f.fixed<Signature>("signature");
    return finish(f, s);
}

Result<CommitCertificate> parse_commit_certificate(const json& j, const std::string& at) {
    Fields f(j, at, {"view", "signatures"});
    CommitCertificate c;
    c.view = f.u64("view");
    each(f, f.array("signatures", max_replicas), "signatures", c.signatures,
         parse_commit_signature);
    return finish(f, std::move(c));
}

Result<Block> parse_block(const json& j, const std::string& at) {
    Fields f(j, at, {"hash", "header", "txs", "certificate"});
    Block b;
    if (const json* h = f.get("header")) {
        auto header = parse_header(*h, f.path("header"));
        if (header)
            b.header = *header;
        else
            f.fail(header.error());
    }
    each(f, f.array("txs", max_block_txs), "txs", b.txs, parse_tx);
    if (const json* c = f.get("certificate")) {
        auto cert = parse_commit_certificate(*c, f.path("certificate"));
        if (cert)
            b.certificate = std::move(*cert);
        else
            f.fail(cert.error());
    }
    if (f.ok()) f.check_derived("hash", b.hash());
    return finish(f, std::move(b));
}

Result<TxRecord> parse_tx_record(const json& j, const std::string& at) {
    Fields f(j, at, {"tx", "height", "index"});
    TxRecord r;
    if (const json* t = f.get("tx")) {
        auto tx = parse_tx(*t, f.path("tx"));
        if (tx)
            r.tx = std::move(*tx);
        else
            f.fail(tx.error());
    }
    r.height = f.u64("height");
    r.index = f.u32("index");
    return finish(f, std::move(r));
}

Result<Hash256> parse_hash(const json& j, const std::string& at) {
    if (!j.is_string()) return make_error(Errc::malformed, at + ": must be a hex string");
    auto h = fixed_from_hex<Hash256>(j.get_ref<const std::string&>());
    if (!h) return make_error(Errc::malformed, at + ": " + h.error().detail);
    return *h;
}

Result<MerkleProof> parse_merkle_proof(const json& j, const std::string& at) {
    Fields f(j, at, {"index", "leaf_count", "siblings"});
    MerkleProof p;
    p.index = f.u32("index");
    p.leaf_count = f.u32("leaf_count");
    if (f.ok() && p.index >= p.leaf_count) f.fail_at(f.path("index"), "must be below leaf_count");
    each(f, f.array("siblings", max_merkle_depth), "siblings", p.siblings, parse_hash);
    return finish(f, std::move(p));
}

Result<pbft::Checkpoint> parse_checkpoint(const json& j, const std::string& at) {
    Fields f(j, at, {"replica", "seq", "block_hash", "state_root", "signature"});
    pbft::Checkpoint c;
    c.replica = f.u32("replica");
    c.seq = f.u64("seq");
    c.block_hash = f.fixed<Hash256>("block_hash");
    c.state_root = f.fixed<Hash256>("state_root");
    c.signature = f.fixed<Signature>("signature");
    return finish(f, c);
}

Result<pbft::CheckpointCertificate> parse_checkpoint_certificate(const json& j,
                                                                 const std::string& at) {
    Fields f(j, at, {"checkpoints"});
    pbft::CheckpointCertificate c;
    each(f, f.array("checkpoints", max_replicas), "checkpoints", c.checkpoints, parse_checkpoint);
    return finish(f, std::move(c));
}

Result<pbft::CommitProof> parse_commit_proof(const json& j, const std::string& at) {
    Fields f(j, at, {"headers", "certificate"});
    pbft::CommitProof p;
    each(f, f.array("headers", max_proof_headers), "headers", p.headers, parse_header);
    if (const json* c = f.get("certificate")) {
        auto cert = parse_checkpoint_certificate(*c, f.path("certificate"));
        if (cert)
            p.certificate = std::move(*cert);
        else
            f.fail(cert.error());
    }
    return finish(f, std::move(p));
}

std::optional<EscrowStatus> escrow_status_from_name(std::string_view name) {
    for (auto s : {EscrowStatus::open, EscrowStatus::released, EscrowStatus::refunded})
        if (name == escrow_status_name(s)) return s;
    return std::nullopt;
}

json hex(ByteView v) {
    return to_hex(v);
}
template <std::size_t N, class Tag>
json hex(const FixedBytes<N, Tag>& v) {
    return to_hex(v);
}

} // namespace

Result<json> parse_json(std::string_view text) {
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return make_error(Errc::malformed, "body is not valid JSON");
    return j;
}

json to_json(const Tx& tx) {
    return {{"id", hex(tx.id())},
            {"kind", tx_kind_name(tx.kind)},
            {"chain_id", tx.chain_id},
            {"from", tx.from.to_string()},
            {"to", tx.to.to_string()},
            {"amount", tx.amount},
            {"nonce", tx.nonce},
            {"trade_id", hex(tx.trade_id)},
            {"deadline", tx.deadline},
            {"payload", hex(tx.payload)},
            {"public_key", hex(tx.public_key)},
            {"signature", hex(tx.signature)}};
}
Result<Tx> tx_from_json(const json& j) {
    return parse_tx(j, "tx");
}

json to_json(const BlockHeader& h) {
    return {{"height", h.height},
            {"prev_hash", hex(h.prev_hash)},
            {"tx_root", hex(h.tx_root)},
            {"state_root", hex(h.state_root)},
            {"view", h.view},
            {"proposer", h.proposer},
            {"timestamp_ms", h.timestamp_ms},
            {"hash", hex(h.hash())}};
}
Result<BlockHeader> header_from_json(const json& j) {
    return parse_header(j, "header");
}

json to_json(const CommitCertificate& c) {
    json sigs = json::array();
    for (const auto& s : c.signatures)
        sigs.push_back({{"replica", s.replica}, {"signature", hex(s.signature)}});
    return {{"view", c.view}, {"signatures", std::move(sigs)}};
}
Result<CommitCertificate> commit_certificate_from_json(const json& j) {
    return parse_commit_certificate(j, "certificate");
}

json to_json(const Block& b) {
    json txs = json::array();
    for (const auto& tx : b.txs)
        txs.push_back(to_json(tx));
    return {{"hash", hex(b.hash())},
            {"header", to_json(b.header)},
            {"txs", std::move(txs)},
            {"certificate", to_json(b.certificate)}};
}
Result<Block> block_from_json(const json& j) {
    return parse_block(j, "block");
}

json to_json(const TxRecord& r) {
    return {{"tx", to_json(r.tx)}, {"height", r.height}, {"index", r.index}};
}
Result<TxRecord> tx_record_from_json(const json& j) {
    return parse_tx_record(j, "record");
}

json to_json(const MerkleProof& p) {
    json siblings = json::array();
    for (const auto& s : p.siblings)
        siblings.push_back(hex(s));
    return {{"index", p.index}, {"leaf_count", p.leaf_count}, {"siblings", std::move(siblings)}};
}
Result<MerkleProof> merkle_proof_from_json(const json& j) {
    return parse_merkle_proof(j, "proof");
}

json to_json(const pbft::Checkpoint& c) {
    return {{"replica", c.replica},
            {"seq", c.seq},
            {"block_hash", hex(c.block_hash)},
            {"state_root", hex(c.state_root)},
            {"signature", hex(c.signature)}};
}
Result<pbft::Checkpoint> checkpoint_from_json(const json& j) {
    return parse_checkpoint(j, "checkpoint");
}

json to_json(const pbft::CheckpointCertificate& c) {
    json cps = json::array();
    for (const auto& cp : c.checkpoints)
        cps.push_back(to_json(cp));
    return {{"checkpoints", std::move(cps)}};
}
Result<pbft::CheckpointCertificate> checkpoint_certificate_from_json(const json& j) {
    return parse_checkpoint_certificate(j, "certificate");
}

json to_json(const pbft::CommitProof& p) {
    json headers = json::array();
    for (const auto& h : p.headers)
        headers.push_back(to_json(h));
    return {{"headers", std::move(headers)}, {"certificate", to_json(p.certificate)}};
}
Result<pbft::CommitProof> commit_proof_from_json(const json& j) {
    return parse_commit_proof(j, "proof");
}

json to_json(const Address& address, const Account& account) {
    return {
        {"address", address.to_string()}, {"balance", account.balance}, {"nonce", account.nonce}};
}
Result<std::pair<Address, Account>> account_from_json(const json& j) {
    Fields f(j, "account", {"address", "balance", "nonce"});
    std::pair<Address, Account> out;
    out.first = f.address("address");
    out.second.balance = f.u64("balance");
    out.second.nonce = f.u64("nonce");
    return finish(f, out);
}

json to_json(const Hash256& trade_id, const Escrow& e) {
    return {{"trade_id", hex(trade_id)},
            {"buyer", e.buyer.to_string()},
            {"seller", e.seller.to_string()},
            {"amount", e.amount},
            {"deadline", e.deadline},
            {"opened_at", e.opened_at},
            {"status", escrow_status_name(e.status)}};
}
Result<std::pair<Hash256, Escrow>> escrow_from_json(const json& j) {
    Fields f(j, "escrow",
             {"trade_id", "buyer", "seller", "amount", "deadline", "opened_at", "status"});
    std::pair<Hash256, Escrow> out;
    out.first = f.fixed<Hash256>("trade_id");
    out.second.buyer = f.address("buyer");
    out.second.seller = f.address("seller");
    out.second.amount = f.u64("amount");
    out.second.deadline = f.u64("deadline");
    out.second.opened_at = f.u64("opened_at");
    std::string status = f.str("status", 32);
    if (f.ok()) {
        auto s = escrow_status_from_name(status);
        if (!s)
            f.fail_at(f.path("status"), "unknown escrow status \"" + status + "\"");
        else
            out.second.status = *s;
    }
    return finish(f, out);
}

json to_json(const ReplicaInfo& r) {
    return {{"id", r.id}, {"public_key", hex(r.key)}, {"endpoint", r.endpoint}};
}
Result<ReplicaInfo> replica_from_json(const json& j) {
    Fields f(j, "replica", {"id", "public_key", "endpoint"});
    ReplicaInfo r;
    r.id = f.u32("id");
    r.key = f.fixed<PublicKey>("public_key");
    r.endpoint = f.str("endpoint", max_endpoint_bytes);
    return finish(f, std::move(r));
}

} // namespace popchain::api
