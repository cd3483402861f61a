#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace popchain {

namespace {
using nlohmann::json;

constexpr std::string_view genesis_domain = "popchain/genesis/v1";

Error bad(std::string what) { return make_error(Errc::malformed, "genesis: " + std::move(what)); }

Result<void> only_keys(const json& obj, std::initializer_list<const char*> allowed, const char* where) {
    for (const auto& [key, value] : obj.items()) {
        (void)value;
        if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; }))
            return bad(std::string("unknown field \"") + key + "\" in " + where);
    }
    return {};
}

Result<PublicKey> key_field(const json& obj, const char* name) {
    if (!obj.contains(name) || !obj[name].is_string()) return bad(std::string("missing ") + name);
    auto raw = from_hex(obj[name].get<std::string>());
    if (!raw) return bad(std::string(name) + " is not hex");
    auto key = parse_public_key(*raw);
    if (!key) return bad(std::string(name) + ": " + key.error().message());
    return *key;
}

Result<std::uint64_t> uint_field(const json& obj, const char* name) {
    if (!obj.contains(name) || !obj[name].is_number_unsigned())
        return bad(std::string(name) + " must be a non-negative integer");
    return obj[name].get<std::uint64_t>();
}
} // namespace

Result<Genesis> Genesis::from_json(std::string_view text) {
    json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
    if (auto ok = only_keys(doc, {"chain_id", "timestamp_ms", "authority", "replicas", "balances"},
                            "genesis");
        !ok)
        return ok.error();
    Genesis g;
    if (!doc.contains("chain_id") || !doc["chain_id"].is_string()) return bad("missing chain_id");
    g.params.chain_id = doc["chain_id"].get<std::string>();
    if (g.params.chain_id.empty() || g.params.chain_id.size() > max_chain_id_bytes)
        return bad("chain_id must be 1.." + std::to_string(max_chain_id_bytes) + " bytes");
    if (doc.contains("timestamp_ms")) {
        auto ts = uint_field(doc, "timestamp_ms");
        if (!ts) return ts.error();
        g.timestamp_ms = *ts;
    }
    auto authority = key_field(doc, "authority");
    if (!authority) return authority.error();
    g.params.authority = *authority;

    if (!doc.contains("replicas") || !doc["replicas"].is_array() || doc["replicas"].empty())
        return bad("replicas must be a non-empty array");
    for (const auto& r : doc["replicas"]) {
        if (!r.is_object()) return bad("replica entries must be objects");
        if (auto ok = only_keys(r, {"id", "public_key", "endpoint"}, "replica"); !ok) return ok.error();
        auto id = uint_field(r, "id");
        if (!id || *id > 0xffffffffu) return bad("replica id must be a 32-bit unsigned integer");
        auto key = key_field(r, "public_key");
        if (!key) return key.error();
        std::string endpoint;
        if (r.contains("endpoint")) {
            if (!r["endpoint"].is_string()) return bad("endpoint must be a string");
            endpoint = r["endpoint"].get<std::string>();
            if (endpoint.size() > max_endpoint_bytes) return bad("endpoint too long");
        }
        g.replicas.push_back({static_cast<std::uint32_t>(*id), *key, endpoint});
    }
    std::sort(g.replicas.begin(), g.replicas.end(), [](auto& x, auto& y) { return x.id < y.id; });
    for (std::size_t i = 1; i < g.replicas.size(); ++i) {
        if (g.replicas[i - 1].id == g.replicas[i].id) return bad("duplicate replica id");
    }
    std::set<PublicKey> keys;
    for (const auto& r : g.replicas)
        if (!keys.insert(r.key).second) return bad("duplicate replica public key");
    if (g.replicas.size() > max_replicas) return bad("too many replicas");

    if (doc.contains("balances")) {
        if (!doc["balances"].is_array()) return bad("balances must be an array");
        std::set<Address> seen;
        for (const auto& b : doc["balances"]) {
            if (!b.is_object()) return bad("balance entries must be objects");
            if (auto ok = only_keys(b, {"address", "amount"}, "balance"); !ok) return ok.error();
            if (!b.contains("address") || !b["address"].is_string()) return bad("balance without address");
            auto address = Address::parse(b["address"].get<std::string>());
            if (!address) return bad(address.error().message());
            auto amount = uint_field(b, "amount");
            if (!amount) return amount.error();
            if (!seen.insert(*address).second) return bad("address listed twice in balances");
            g.balances.emplace_back(*address, *amount);
        }
    }
    if (auto built = g.build(); !built) return built.error();
    return g;
}

Result<Genesis> Genesis::load(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return make_error(Errc::io_error, "cannot read " + file.string());
    std::stringstream text;
    text << in.rdbuf();
    return from_json(text.str());
}

std::string Genesis::to_json() const {
    json doc;
    doc["chain_id"] = params.chain_id;
    doc["timestamp_ms"] = timestamp_ms;
    doc["authority"] = to_hex(params.authority);
    doc["replicas"] = json::array();
    for (const auto& r : replicas)
        doc["replicas"].push_back({{"id", r.id}, {"public_key", to_hex(r.key)}, {"endpoint", r.endpoint}});
    doc["balances"] = json::array();
    for (const auto& [a, amount] : balances)
        doc["balances"].push_back({{"address", a.to_string()}, {"amount", amount}});
    return doc.dump(2) + "\n";
}

Result<BuiltBlock> Genesis::build() const {
    BuiltBlock out;
    StateDelta& d = out.delta;
    d.height = 0;
    for (const auto& [a, amount] : balances) {
        if (d.total_minted > std::numeric_limits<std::uint64_t>::max() - amount)
            return bad("initial balances overflow 64 bits");
        d.total_minted += amount;
        d.accounts[a].balance += amount;
    }
    std::vector<ReplicaInfo> sorted = replicas;
    std::sort(sorted.begin(), sorted.end(), [](auto& x, auto& y) { return x.id < y.id; });
    d.replicas = sorted;
    BlockHeader& h = out.block.header;
    h.height = 0;
    // The genesis block's parent hash commits to the chain parameters, so two chains that
    // differ only in chain id or authority never share a genesis hash.
    Writer params_bytes;
    params_bytes.str(params.chain_id);
    params_bytes.fixed(params.authority);
    h.prev_hash = Sha256().update(genesis_domain).update(params_bytes.data()).finish();
    h.tx_root = Hash256{};
    d.state_root = next_state_root(Hash256{}, d);
    h.state_root = d.state_root;
    h.timestamp_ms = timestamp_ms;
    d.block_hash = h.hash();
    return out;
}

Result<Ledger> Genesis::ledger(SignatureCache* cache) const {
    auto built = build();
    if (!built) return built.error();
    State state;
    apply_delta(state, built->delta);
    return Ledger(params, std::move(state), cache);
}

} // namespace popchain
