#include <popchain/block.hpp>

#include <algorithm>
#include <unordered_set>

namespace popchain {

namespace {
constexpr std::string_view header_domain = "popchain/block/v1";
constexpr std::size_t max_certificate_signatures = max_replicas;
} // namespace

void encode_header(Writer& w, const BlockHeader& h) {
    w.u64(h.height);
    w.fixed(h.prev_hash);
    w.fixed(h.tx_root);
    w.fixed(h.state_root);
    w.u64(h.view);
    w.u32(h.proposer);
    w.u64(h.timestamp_ms);
}

BlockHeader decode_header(Reader& r) {
    BlockHeader h;
    h.height = r.u64();
    h.prev_hash = r.fixed<Hash256>();
    h.tx_root = r.fixed<Hash256>();
    h.state_root = r.fixed<Hash256>();
    h.view = r.u64();
    h.proposer = r.u32();
    h.timestamp_ms = r.u64();
    return h;
}

Result<BlockHeader> decode_header(ByteView bytes) {
    return decode_all<BlockHeader>(bytes, [](Reader& r) { return decode_header(r); });
}

Hash256 BlockHeader::hash() const {
    // Every replica hashes each header several times (agreement, execution, store); the
    // thread's one buffer spares an allocation each time. encode_header() cannot re-enter.
    thread_local Writer w(160);
    w.clear();
    w.raw(as_bytes(header_domain));
    encode_header(w, *this);
    return sha256(w.data());
}

namespace {
std::vector<Hash256> txids_of(const std::vector<Tx>& txs) {
    std::vector<Hash256> ids;
    ids.reserve(txs.size());
    for (const auto& tx : txs)
        ids.push_back(tx.id());
    return ids;
}
} // namespace

std::vector<Hash256> Block::txids() const {
    return txids_of(txs);
}

MerkleProof Block::prove_tx(std::size_t index) const {
    return merkle_prove(txids(), index);
}

Hash256 compute_tx_root(const std::vector<Tx>& txs) {
    return merkle_root(txids_of(txs));
}

std::size_t first_repeated_id(const std::vector<Hash256>& ids) {
    // Sorting a copy costs less than a hash set's allocation per id; only blocks with a
    // repeat (invalid ones) pay for the scan that finds where it is.
    if (ids.size() < 2) return ids.size();
    std::vector<Hash256> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()) return ids.size();
    std::unordered_set<Hash256, FixedBytesHash> seen;
    for (std::size_t i = 0; i < ids.size(); ++i)
        if (!seen.insert(ids[i]).second) return i;
    return ids.size();
}

void encode_block(Writer& w, const Block& b) {
    encode_header(w, b.header);
    w.u32(static_cast<std::uint32_t>(b.txs.size()));
    for (const auto& tx : b.txs)
        encode_tx(w, tx);
    w.u64(b.certificate.view);
    w.u32(static_cast<std::uint32_t>(b.certificate.signatures.size()));
    for (const auto& s : b.certificate.signatures) {
        w.u32(s.replica);
        w.fixed(s.signature);
    }
}

Bytes Block::encode() const {
    Writer w(256 + txs.size() * 300);
    encode_block(w, *this);
    return w.take();
}

Block decode_block(Reader& r) {
    Block b;
    b.header = decode_header(r);
    std::size_t n = r.count(max_block_txs);
    // Reserve only what the remaining input could hold, so a forged count cannot make us
    // allocate gigabytes before the truncation is noticed.
    b.txs.reserve(std::min(n, r.remaining() / 200));
    for (std::size_t i = 0; i < n && r.ok(); ++i)
        b.txs.push_back(decode_tx(r));
    b.certificate.view = r.u64();
    std::size_t m = r.count(max_certificate_signatures);
    for (std::size_t i = 0; i < m && r.ok(); ++i) {
        CommitSignature s;
        s.replica = r.u32();
        s.signature = r.fixed<Signature>();
        b.certificate.signatures.push_back(s);
    }
    return b;
}

Result<Block> decode_block(ByteView bytes) {
    return decode_all<Block>(bytes, [](Reader& r) { return decode_block(r); });
}

Result<Tx> decode_block_tx(ByteView bytes, std::size_t index) {
    Reader r(bytes);
    (void)decode_header(r);
    const std::size_t n = r.count(max_block_txs);
    if (!r.ok()) return r.finish().error();
    if (index >= n)
        return make_error(Errc::not_found, "transaction " + std::to_string(index) +
                                               " of a block of " + std::to_string(n));
    for (std::size_t i = 0; i < index && r.ok(); ++i)
        skip_tx(r);
    Tx tx = decode_tx(r);
    if (!r.ok()) return r.finish().error();
    return tx;
}

} // namespace popchain
