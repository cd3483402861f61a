// Checks, as a light client, that a transaction is on the chain: the node's Merkle proof
// puts it in its block, and the block's commit proof (a stable checkpoint certificate and
// the headers down to the block) is signed by a quorum of the replica set that certified
// that checkpoint. Nothing a single node says is believed without those two checks.
//
// The replica set starts as genesis's and follows the chain's config transactions (signed
// by the chain authority): before checking a certificate at height S the verifier reads the
// authority's transactions up to S from the node, and learns each config block with its own
// commit proof, which the node gives under the set before the change
// (pbft::ReplicaSetHistory). A node that hides a config block cannot make a false block
// pass, only true blocks after the change fail until the change is learnt.
#pragma once

#include "chain_client.hpp"

#include <popchain/block.hpp>
#include <popchain/merkle.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/transaction.hpp>

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace popmarket {

struct TxCheck {
    bool found = false;    // committed on the node that answered
    bool verified = false; // Merkle proof and commit proof both passed
    std::string reason;    // why not verified ("not certified yet", "bad merkle proof"...)
    popchain::Tx tx;
    std::uint64_t height = 0;
    std::uint32_t index = 0;
    std::string block_hash;
    // What the check used, so a browser can repeat the whole check itself: the Merkle
    // proof, the block's header and the block's commit proof (headers up to a checkpoint and
    // its certificate), when the block has one.
    popchain::MerkleProof proof;
    popchain::Hash256 tx_root;
    popchain::BlockHeader header;
    std::optional<popchain::pbft::CommitProof> commit_proof;
    bool genesis_set = true; // the certificate's height is still under the genesis set
};

struct BlockCheck {
    bool found = false;
    bool verified = false;
    std::string reason;
    popchain::Block block;
    std::optional<popchain::pbft::CommitProof> commit_proof;
    bool genesis_set = true;
};

// A check as popmarket's answers carry it (GET /api/chain/txs/{id}, trades, profiles).
nlohmann::json check_json(const TxCheck& check);

// The replica set the web page checks certificates against, fixed when popmarket starts:
// {"chain_id", "replicas": [{id, public_key}], "fingerprint"}. The fingerprint is SHA-256 over
// "popchain/replica-set/v1", the u32 count and each replica's u32 id and 33-byte key (codec.hpp
// encodings, in the genesis file's order), so a user can compare it with the one
// `popmarket --print-trust-root GENESIS` computes from a genesis file they hold.
std::string replica_set_fingerprint(const std::vector<popchain::ReplicaInfo>& replicas);
nlohmann::json trust_root_json(const std::vector<popchain::ReplicaInfo>& replicas,
                               const std::string& chain_id);

// Adds a block's commit proof to an answer, with whether the genesis set certified it
// ("replica_set": a hint for the page, which checks against the genesis set only).
void add_commit_proof(nlohmann::json& answer, const popchain::pbft::CommitProof& proof,
                      bool genesis_set);

class Verifier {
public:
    Verifier(ChainClient& chain, std::vector<popchain::ReplicaInfo> genesis_set,
             popchain::Address authority)
        : chain_(chain), genesis_set_(std::move(genesis_set)), authority_(authority) {}

    TxCheck check_tx(const popchain::Hash256& txid);
    BlockCheck check_block(std::uint64_t height);

private:
    // Learns the config blocks up to `height` (under `mutex_`); a message when it cannot.
    std::optional<std::string> learn_changes_through(std::uint64_t height);

    ChainClient& chain_;
    std::vector<popchain::ReplicaInfo> genesis_set_;
    popchain::Address authority_;
    // Created at first use: the checkpoint interval comes from the node's status.
    std::optional<popchain::pbft::ReplicaSetHistory> history_;
    std::uint64_t authority_txs_read_ = 0; // offset into the authority's transaction list
    // Verified results only: a certified block never changes, so it is checked once.
    std::mutex mutex_;
    std::map<std::uint64_t, BlockCheck> verified_blocks_;
};

} // namespace popmarket
