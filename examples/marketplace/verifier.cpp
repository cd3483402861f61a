#include "verifier.hpp"

#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>
#include <popchain/merkle.hpp>
#include <popchain/pbft/certificate.hpp>

#include <algorithm>

namespace popmarket {

using namespace popchain;

BlockCheck Verifier::check_block(std::uint64_t height) {
    BlockCheck out;
    {
        std::lock_guard lock(mutex_);
        if (auto it = verified_blocks_.find(height); it != verified_blocks_.end())
            return it->second;
    }
    auto r = chain_.get("/v1/blocks/" + std::to_string(height));
    if (!r || r->status != 200) {
        out.reason = r ? "no such block" : r.error().message();
        return out;
    }
    auto block = api::block_from_json(r->body["block"]);
    if (!block) {
        out.reason = "malformed block: " + block.error().message();
        return out;
    }
    out.found = true;
    out.block = *block;
    if (!r->body.value("certified", false) || !r->body.contains("commit_proof")) {
        out.reason = "not certified yet (no stable checkpoint covers it)";
        return out;
    }
    auto proof = api::commit_proof_from_json(r->body["commit_proof"]);
    if (!proof) {
        out.reason = "malformed commit proof: " + proof.error().message();
        return out;
    }
    out.commit_proof = *proof;
    const std::uint64_t certified =
        proof->certificate.checkpoints.empty() ? 0 : proof->certificate.checkpoints.front().seq;
    std::lock_guard lock(mutex_);
    if (auto failed = learn_changes_through(certified)) {
        out.reason = "replica set history: " + *failed;
        return out;
    }
    // Tells the page why its own check (against the genesis set) may fail: a hint only, it
    // never makes the page's check pass.
    const auto& set = history_->set_for(certified);
    out.genesis_set = std::equal(
        set.begin(), set.end(), genesis_set_.begin(), genesis_set_.end(),
        [](const ReplicaInfo& a, const ReplicaInfo& b) { return a.id == b.id && a.key == b.key; });
    if (auto ok = pbft::verify_block(*block, *proof, *history_); !ok) {
        out.reason = "commit proof rejected: " + ok.error().message();
        return out;
    }
    out.verified = true;
    verified_blocks_.emplace(height, out);
    return out;
}

std::optional<std::string> Verifier::learn_changes_through(std::uint64_t height) {
    if (!history_) {
        auto status = chain_.get("/v1/status");
        if (!status || status->status != 200 ||
            !status->body["checkpoint_interval"].is_number_unsigned())
            return std::string("no checkpoint interval from the node");
        auto made = pbft::ReplicaSetHistory::create(
            genesis_set_, status->body["checkpoint_interval"].get<std::uint32_t>());
        if (!made) return made.error().message();
        history_.emplace(std::move(made).value());
    }
    // The authority's transactions in chain order; mints far outnumber config ones, so the
    // position read so far is kept and each call reads only what is new.
    constexpr std::uint64_t page = 100;
    for (;;) {
        auto r = chain_.get("/v1/addresses/" + authority_.to_string() + "/txs?offset=" +
                            std::to_string(authority_txs_read_) + "&limit=" + std::to_string(page));
        if (!r || r->status != 200 || !r->body["txs"].is_array())
            return std::string("cannot list the authority's transactions");
        const json& txs = r->body["txs"];
        for (const json& entry : txs) {
            if (!entry["height"].is_number_unsigned()) return std::string("malformed tx list");
            const std::uint64_t at = entry["height"].get<std::uint64_t>();
            if (at > height) return std::nullopt; // later changes: not needed yet
            auto tx = api::tx_from_json(entry["tx"]);
            if (!tx) return "malformed transaction: " + tx.error().message();
            if (tx->kind == TxKind::config && at > history_->learnt_height()) {
                auto b = chain_.get("/v1/blocks/" + std::to_string(at));
                if (!b || b->status != 200 || !b->body.value("certified", false))
                    return "config block " + std::to_string(at) + " is not certified yet";
                auto block = api::block_from_json(b->body["block"]);
                auto proof = api::commit_proof_from_json(b->body["commit_proof"]);
                if (!block || !proof) return "config block " + std::to_string(at) + " is malformed";
                if (auto ok = history_->learn(*block, *proof); !ok)
                    return "config block " + std::to_string(at) + ": " + ok.error().message();
            }
            ++authority_txs_read_;
        }
        if (txs.size() < page) return std::nullopt;
    }
}

TxCheck Verifier::check_tx(const Hash256& txid) {
    TxCheck out;
    auto r = chain_.get("/v1/txs/" + to_hex(txid));
    if (!r || r->status != 200 || r->body.value("status", "") != "committed") {
        out.reason = r ? "not committed" : r.error().message();
        return out;
    }
    const json& j = r->body;
    auto tx = api::tx_from_json(j["tx"]);
    auto proof = api::merkle_proof_from_json(j["merkle_proof"]);
    if (!tx || !proof || !j["height"].is_number_unsigned() || !j["index"].is_number_unsigned()) {
        out.reason = "malformed answer from the node";
        return out;
    }
    out.found = true;
    out.tx = *tx;
    out.height = j["height"].get<std::uint64_t>();
    out.index = j["index"].get<std::uint32_t>();
    out.block_hash = j.value("block_hash", "");
    if (tx->id() != txid) {
        out.reason = "the node returned another transaction";
        return out;
    }
    const BlockCheck block = check_block(out.height);
    if (!block.found) {
        out.reason = block.reason;
        return out;
    }
    // The proof is checked against the root of the block whose certificate is checked, not
    // against anything the transaction answer says about itself.
    if (!merkle_verify(block.block.header.tx_root, txid, *proof) ||
        proof->index >= block.block.txs.size() || block.block.txs[proof->index].id() != txid) {
        out.reason = "merkle proof does not match the block";
        return out;
    }
    out.block_hash = to_hex(block.block.hash());
    out.proof = *proof;
    out.tx_root = block.block.header.tx_root;
    out.header = block.block.header;
    out.commit_proof = block.commit_proof;
    out.genesis_set = block.genesis_set;
    if (!block.verified) {
        out.reason = block.reason;
        return out;
    }
    out.verified = true;
    return out;
}

json check_json(const TxCheck& check) {
    json j{{"found", check.found}, {"verified", check.verified}, {"reason", check.reason}};
    if (check.found) {
        j["txid"] = to_hex(check.tx.id());
        j["tx"] = api::to_json(check.tx);
        j["height"] = check.height;
        j["index"] = check.index;
        j["block_hash"] = check.block_hash;
        if (check.proof.leaf_count > 0) {
            j["merkle_proof"] = api::to_json(check.proof);
            j["tx_root"] = to_hex(check.tx_root);
            j["header"] = api::to_json(check.header);
        }
        if (check.commit_proof) add_commit_proof(j, *check.commit_proof, check.genesis_set);
    }
    return j;
}

std::string replica_set_fingerprint(const std::vector<ReplicaInfo>& replicas) {
    Writer w;
    w.raw(as_bytes(std::string_view("popchain/replica-set/v1")));
    w.u32(static_cast<std::uint32_t>(replicas.size()));
    for (const auto& r : replicas) {
        w.u32(r.id);
        w.fixed(r.key);
    }
    return to_hex(sha256(w.data()));
}

json trust_root_json(const std::vector<ReplicaInfo>& replicas, const std::string& chain_id) {
    json list = json::array();
    for (const auto& r : replicas)
        list.push_back({{"id", r.id}, {"public_key", to_hex(r.key)}});
    return {{"chain_id", chain_id},
            {"replicas", std::move(list)},
            {"fingerprint", replica_set_fingerprint(replicas)}};
}

void add_commit_proof(json& answer, const pbft::CommitProof& proof, bool genesis_set) {
    answer["commit_proof"] = api::to_json(proof);
    answer["replica_set"] = genesis_set ? "genesis" : "changed";
}

} // namespace popmarket
