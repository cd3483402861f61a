#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace popchain {

namespace {
using nlohmann::json;

constexpr std::string_view genesis_domain = "popchain/genesis/v1";

Error bad(std::string what) {
    return make_error(Errc::malformed, "genesis: " + std::move(what));
}

Result<void> only_keys(const json& obj, std::initializer_list<const char*> allowed,
                       const char* where) {
    for (const auto& item : obj.items()) {
        const std::string& key = item.key();
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
// Printable ASCII only: these strings end up in JSON, logs and HTTP headers.
bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

// Everything a genesis must satisfy, whether it came from a file or was built in code.
Result<void> validate(const Genesis& g) {
    const std::string& id = g.params.chain_id;
    if (id.empty() || id.size() > max_chain_id_bytes || !printable(id))
        return bad("chain_id must be 1.." + std::to_string(max_chain_id_bytes) +
                   " printable ASCII characters");
    if (!parse_public_key(g.params.authority.view())) return bad("authority is not a P-256 key");
    const CommandRules& c = g.params.commands;
    if (c.max_bytes > max_payload_bytes)
        return bad("commands.max_bytes must be at most " + std::to_string(max_payload_bytes));
    if (c.allow_unsigned && !c.enabled())
        return bad("commands.unsigned needs commands.max_bytes > 0");
    if (g.replicas.empty()) return bad("the replica set is empty");
    if (g.replicas.size() > max_replicas) return bad("too many replicas");
    std::set<std::uint32_t> ids;
    std::set<PublicKey> keys;
    for (const auto& r : g.replicas) {
        if (!ids.insert(r.id).second) return bad("duplicate replica id " + std::to_string(r.id));
        if (!keys.insert(r.key).second) return bad("duplicate replica public key");
        if (!parse_public_key(r.key.view())) return bad("replica key is not a P-256 key");
        if (r.endpoint.size() > max_endpoint_bytes || !printable(r.endpoint))
            return bad("endpoint must be at most " + std::to_string(max_endpoint_bytes) +
                       " printable ASCII characters");
    }
    std::set<Address> seen;
    std::uint64_t total = 0;
    for (const auto& [a, amount] : g.balances) {
        if (!seen.insert(a).second) return bad("address listed twice in balances");
        if (total > std::numeric_limits<std::uint64_t>::max() - amount)
            return bad("initial balances overflow 64 bits");
        total += amount;
    }
    return {};
}

std::vector<ReplicaInfo> sorted_by_id(std::vector<ReplicaInfo> replicas) {
    std::sort(replicas.begin(), replicas.end(), [](auto& x, auto& y) { return x.id < y.id; });
    return replicas;
}
} // namespace

Result<Genesis> Genesis::from_json(std::string_view text) {
    json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
    if (auto ok = only_keys(
            doc, {"chain_id", "timestamp_ms", "authority", "commands", "replicas", "balances"},
            "genesis");
        !ok)
        return ok.error();
    Genesis g;
    if (!doc.contains("chain_id") || !doc["chain_id"].is_string()) return bad("missing chain_id");
    g.params.chain_id = doc["chain_id"].get<std::string>();
    if (doc.contains("timestamp_ms")) {
        auto ts = uint_field(doc, "timestamp_ms");
        if (!ts) return ts.error();
        g.timestamp_ms = *ts;
    }
    auto authority = key_field(doc, "authority");
    if (!authority) return authority.error();
    g.params.authority = *authority;
    if (doc.contains("commands")) {
        const json& c = doc["commands"];
        if (!c.is_object()) return bad("commands must be an object");
        if (auto ok = only_keys(c, {"max_bytes", "unsigned"}, "commands"); !ok) return ok.error();
        auto max_bytes = uint_field(c, "max_bytes");
        if (!max_bytes || *max_bytes == 0 || *max_bytes > max_payload_bytes)
            return bad("commands.max_bytes must be 1.." + std::to_string(max_payload_bytes));
        g.params.commands.max_bytes = static_cast<std::uint32_t>(*max_bytes);
        if (c.contains("unsigned")) {
            if (!c["unsigned"].is_boolean()) return bad("commands.unsigned must be true or false");
            g.params.commands.allow_unsigned = c["unsigned"].get<bool>();
        }
    }

    if (!doc.contains("replicas") || !doc["replicas"].is_array() || doc["replicas"].empty())
        return bad("replicas must be a non-empty array");
    for (const auto& r : doc["replicas"]) {
        if (!r.is_object()) return bad("replica entries must be objects");
        if (auto ok = only_keys(r, {"id", "public_key", "endpoint"}, "replica"); !ok)
            return ok.error();
        auto id = uint_field(r, "id");
        if (!id || *id > 0xffffffffu) return bad("replica id must be a 32-bit unsigned integer");
        auto key = key_field(r, "public_key");
        if (!key) return key.error();
        std::string endpoint;
        if (r.contains("endpoint")) {
            if (!r["endpoint"].is_string()) return bad("endpoint must be a string");
            endpoint = r["endpoint"].get<std::string>();
        }
        g.replicas.push_back({static_cast<std::uint32_t>(*id), *key, endpoint});
    }
    if (doc.contains("balances")) {
        if (!doc["balances"].is_array()) return bad("balances must be an array");
        for (const auto& b : doc["balances"]) {
            if (!b.is_object()) return bad("balance entries must be objects");
            if (auto ok = only_keys(b, {"address", "amount"}, "balance"); !ok) return ok.error();
            if (!b.contains("address") || !b["address"].is_string())
                return bad("balance without address");
            auto address = Address::parse(b["address"].get<std::string>());
            if (!address) return bad(address.error().message());
            auto amount = uint_field(b, "amount");
            if (!amount) return amount.error();
            g.balances.emplace_back(*address, *amount);
        }
    }
    g.replicas = sorted_by_id(std::move(g.replicas));
    if (auto ok = validate(g); !ok) return ok.error();
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
    if (params.commands.enabled())
        doc["commands"] = {{"max_bytes", params.commands.max_bytes},
                           {"unsigned", params.commands.allow_unsigned}};
    doc["replicas"] = json::array();
    for (const auto& r : sorted_by_id(replicas))
        doc["replicas"].push_back(
            {{"id", r.id}, {"public_key", to_hex(r.key)}, {"endpoint", r.endpoint}});
    doc["balances"] = json::array();
    for (const auto& [a, amount] : balances)
        doc["balances"].push_back({{"address", a.to_string()}, {"amount", amount}});
    return doc.dump(2) + "\n";
}

Result<BuiltBlock> Genesis::build() const {
    if (auto ok = validate(*this); !ok) return ok.error();
    BuiltBlock out;
    StateDelta& d = out.delta;
    d.height = 0;
    for (const auto& [a, amount] : balances) { // validate() ruled out overflow
        d.total_minted += amount;
        d.accounts[a].balance += amount;
    }
    d.replicas = sorted_by_id(replicas);
    BlockHeader& h = out.block.header;
    h.height = 0;
    // The genesis block's parent hash commits to the chain parameters, so two chains that
    // differ only in chain id or authority never share a genesis hash.
    Writer params_bytes(128);
    params_bytes.str(params.chain_id);
    params_bytes.fixed(params.authority);
    // Only chains that take commands add their rules, so the hashes of chains made before
    // commands existed stay as they were.
    if (params.commands.enabled()) {
        params_bytes.u32(params.commands.max_bytes);
        params_bytes.u8(params.commands.allow_unsigned ? 1 : 0);
    }
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
