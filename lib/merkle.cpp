#include <popchain/codec.hpp>
#include <popchain/merkle.hpp>

#include <array>
#include <cstring>

namespace popchain {

namespace {
// One-shot hashes of small stack buffers: cheaper than an incremental hasher per node.
Hash256 leaf_hash(const Hash256& leaf) {
    std::array<std::uint8_t, 33> buf;
    buf[0] = 0x00;
    std::memcpy(buf.data() + 1, leaf.data(), 32);
    return sha256(buf);
}
Hash256 node_hash(const Hash256& left, const Hash256& right) {
    std::array<std::uint8_t, 65> buf;
    buf[0] = 0x01;
    std::memcpy(buf.data() + 1, left.data(), 32);
    std::memcpy(buf.data() + 33, right.data(), 32);
    return sha256(buf);
}

// Pairs up a level in place; an odd last node moves up unchanged.
void next_level(std::vector<Hash256>& level) {
    std::size_t out = 0;
    for (std::size_t i = 0; i < level.size(); i += 2)
        level[out++] = i + 1 < level.size() ? node_hash(level[i], level[i + 1]) : level[i];
    level.resize(out);
}

// The root commits to the number of leaves: without it a proof for leaf i of n could be
// relabelled as a proof for another position in a tree of another size and still verify.
Hash256 seal_root(const Hash256& top, std::size_t leaf_count) {
    std::array<std::uint8_t, 37> buf;
    buf[0] = 0x02;
    const auto count = static_cast<std::uint32_t>(leaf_count);
    for (int i = 0; i < 4; ++i)
        buf[1 + i] = static_cast<std::uint8_t>(count >> (8 * i)); // u32, little-endian
    std::memcpy(buf.data() + 5, top.data(), 32);
    return sha256(buf);
}

std::vector<Hash256> leaf_level(std::span<const Hash256> leaves) {
    std::vector<Hash256> level;
    level.reserve(leaves.size());
    for (const auto& l : leaves)
        level.push_back(leaf_hash(l));
    return level;
}
} // namespace

Hash256 merkle_root(std::span<const Hash256> leaves) {
    if (leaves.empty()) return Hash256{};
    std::vector<Hash256> level = leaf_level(leaves);
    while (level.size() > 1)
        next_level(level);
    return seal_root(level[0], leaves.size());
}

MerkleProof merkle_prove(std::span<const Hash256> leaves, std::size_t index) {
    MerkleProof proof;
    proof.index = static_cast<std::uint32_t>(index);
    proof.leaf_count = static_cast<std::uint32_t>(leaves.size());
    std::vector<Hash256> level = leaf_level(leaves);
    std::size_t pos = index;
    while (level.size() > 1) {
        std::size_t sibling = pos ^ 1;
        if (sibling < level.size()) proof.siblings.push_back(level[sibling]);
        next_level(level);
        pos /= 2;
    }
    return proof;
}

bool merkle_verify(const Hash256& root, const Hash256& leaf, const MerkleProof& proof) {
    if (proof.leaf_count == 0 || proof.index >= proof.leaf_count) return false;
    Hash256 acc = leaf_hash(leaf);
    std::size_t pos = proof.index;
    std::size_t width = proof.leaf_count;
    std::size_t used = 0;
    while (width > 1) {
        std::size_t sibling = pos ^ 1;
        if (sibling < width) {
            if (used == proof.siblings.size()) return false;
            const Hash256& s = proof.siblings[used++];
            acc = (pos & 1) ? node_hash(s, acc) : node_hash(acc, s);
        }
        pos /= 2;
        width = (width + 1) / 2;
    }
    return used == proof.siblings.size() && seal_root(acc, proof.leaf_count) == root;
}

} // namespace popchain
