// Blocks: a header that chains to its parent and commits to the transactions and the
// resulting ledger state, the transactions, and the commit certificate consensus attaches.
#pragma once

#include <popchain/codec.hpp>
#include <popchain/crypto.hpp>
#include <popchain/merkle.hpp>
#include <popchain/transaction.hpp>

#include <vector>

namespace popchain {

inline constexpr std::size_t max_block_txs = 1 << 16;

struct BlockHeader {
    std::uint64_t height = 0;
    Hash256 prev_hash;  // hash of the header at height - 1; for genesis, of the chain params
    Hash256 tx_root;    // merkle_root of the txids
    Hash256 state_root; // ledger state root after applying this block (see ledger.hpp)
    std::uint64_t view = 0;
    std::uint32_t proposer = 0;
    std::uint64_t timestamp_ms = 0; // proposer's clock; informative, not validated
    // The block's identity: SHA-256 over a domain tag and the encoded header.
    Hash256 hash() const;
    friend bool operator==(const BlockHeader&, const BlockHeader&) = default;
};

// 2f+1 replica signatures over the block hash, attached once consensus commits the block.
// Not covered by the block hash (different quorums may certify the same block).
struct CommitSignature {
    std::uint32_t replica = 0;
    Signature signature;
    friend bool operator==(const CommitSignature&, const CommitSignature&) = default;
};
struct CommitCertificate {
    std::uint64_t view = 0;
    std::vector<CommitSignature> signatures;
    bool empty() const { return signatures.empty(); }
    friend bool operator==(const CommitCertificate&, const CommitCertificate&) = default;
};

struct Block {
    BlockHeader header;
    std::vector<Tx> txs;
    CommitCertificate certificate;

    Hash256 hash() const { return header.hash(); }
    std::vector<Hash256> txids() const;
    // Proof that txs[index] is in this block, checkable against header.tx_root.
    MerkleProof prove_tx(std::size_t index) const;
    Bytes encode() const;
    friend bool operator==(const Block&, const Block&) = default;
};

Hash256 compute_tx_root(const std::vector<Tx>& txs);
// The index of the first id in `ids` that occurs earlier in it; ids.size() when none repeats
// (a block that repeats a transaction is invalid).
std::size_t first_repeated_id(const std::vector<Hash256>& ids);

void encode_header(Writer& w, const BlockHeader& h);
BlockHeader decode_header(Reader& r);
void encode_block(Writer& w, const Block& b);
Block decode_block(Reader& r);
Result<Block> decode_block(ByteView bytes);
// txs[index] of an encoded block, passing over the transactions before it (skip_tx) and not
// reading past it: a store that keeps only blocks reads one transaction at the cost of its
// offset, not of the whole block. Errc::not_found when the block has no such index.
Result<Tx> decode_block_tx(ByteView bytes, std::size_t index);
Result<BlockHeader> decode_header(ByteView bytes);

} // namespace popchain
