// Checks, as a light client, that a transaction is on the chain: the node's Merkle proof
// puts it in its block, and the block's commit proof (a stable checkpoint certificate and
// the headers down to the block) is signed by a quorum of the replica set from genesis.
// Nothing a single node says is believed without those two checks.
#pragma once

#include "chain_client.hpp"

#include <popchain/block.hpp>
#include <popchain/merkle.hpp>
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
    Verifier(ChainClient& chain, std::vector<popchain::ReplicaInfo> replicas)
        : chain_(chain), replicas_(std::move(replicas)) {}

    TxCheck check_tx(const popchain::Hash256& txid);
    BlockCheck check_block(std::uint64_t height);

private:
    ChainClient& chain_;
    std::vector<popchain::ReplicaInfo> replicas_;
    // Verified results only: a certified block never changes, so it is checked once.
    std::mutex mutex_;
    std::map<std::uint64_t, popchain::Block> verified_blocks_;
};

} // namespace popmarket
