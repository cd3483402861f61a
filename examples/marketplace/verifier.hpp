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
    // What the check used, so a browser can repeat the Merkle step itself.
    popchain::MerkleProof proof;
    popchain::Hash256 tx_root;
};

struct BlockCheck {
    bool found = false;
    bool verified = false;
    std::string reason;
    popchain::Block block;
};

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
    std::map<std::uint64_t, popchain::Block> verified_blocks_;
};

} // namespace popmarket
