#include "verifier.hpp"

#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>
#include <popchain/merkle.hpp>
#include <popchain/pbft/certificate.hpp>

namespace popmarket {

using namespace popchain;

BlockCheck Verifier::check_block(std::uint64_t height) {
    BlockCheck out;
    {
        std::lock_guard lock(mutex_);
        if (auto it = verified_blocks_.find(height); it != verified_blocks_.end()) {
            out.found = out.verified = true;
            out.block = it->second;
            return out;
        }
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
    std::lock_guard lock(mutex_);
    if (auto failed = learn_changes_through(proof->certificate.checkpoints.empty()
                                                ? 0
                                                : proof->certificate.checkpoints.front().seq)) {
        out.reason = "replica set history: " + *failed;
        return out;
    }
    if (auto ok = pbft::verify_block(*block, *proof, *history_); !ok) {
        out.reason = "commit proof rejected: " + ok.error().message();
        return out;
    }
    out.verified = true;
    verified_blocks_.emplace(height, *block);
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
    if (!block.verified) {
        out.reason = block.reason;
        return out;
    }
    out.verified = true;
    return out;
}

} // namespace popmarket
