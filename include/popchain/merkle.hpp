// Merkle trees over transaction ids, with inclusion proofs a third party can check.
//
// Leaves and inner nodes are domain-separated (leaf = H(0x00 || id), node = H(0x01 || l || r))
// so a leaf can never pass for an inner node. An odd node at the end of a level moves up
// unchanged instead of being paired with a copy of itself, so two different lists of ids
// never share a root. The root seals the tree with its leaf count (root = H(0x02 || u32 count ||
// top node)), so a proof cannot be relabelled with another index or tree size. The root of
// no leaves is the all-zero hash.
#pragma once

#include <popchain/crypto.hpp>

#include <span>
#include <vector>

namespace popchain {

struct MerkleProof {
    std::uint32_t index = 0;       // position of the leaf
    std::uint32_t leaf_count = 0;  // leaves in the tree
    std::vector<Hash256> siblings; // bottom-up
    friend bool operator==(const MerkleProof&, const MerkleProof&) = default;
};

Hash256 merkle_root(std::span<const Hash256> leaves);
// Precondition: index < leaves.size().
MerkleProof merkle_prove(std::span<const Hash256> leaves, std::size_t index);
bool merkle_verify(const Hash256& root, const Hash256& leaf, const MerkleProof& proof);

} // namespace popchain
