// libFuzzer target: block decoding, the values derived from a block, and block execution.
//
// Properties (any violation aborts):
//  - decoding never crashes, and fails only with a decoding error code;
//  - the encoding is canonical: re-encoding gives back the input bytes exactly, and decoding
//    that gives an equal block; the header decodes alone from the front of the input;
//  - txids, tx root and Merkle proofs agree: compute_tx_root == merkle_root(txids), and a
//    proof for a tx verifies against that root while the same proof for another id does not;
//  - every tx gets the stateless checks (the verdict itself is free, it must not crash);
//  - executing the block on the fuzz genesis ledger either fails cleanly or yields a delta
//    whose state root is the header's and after which the ledger's invariants still hold.
#include "fuzz_common.hpp"

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>

#include <algorithm>
#include <cstdint>

using namespace popchain;

namespace {

// Built once: every input is executed against the same post-genesis state.
const Ledger& genesis_ledger() {
    static const Ledger ledger = [] {
        auto l = fuzz::genesis().ledger();
        if (!l) std::abort();
        return std::move(l).value();
    }();
    return ledger;
}

// Successful signature checks are remembered across inputs: the seeds' valid transactions
// recur in most mutated blocks, and verifying them again would dominate the run time. The
// cache changes only speed, never a verdict (fuzz_tx_decode checks exactly that).
SignatureCache& signature_cache() {
    static SignatureCache cache(1 << 12);
    return cache;
}

void check_proofs(const std::vector<Hash256>& ids, const Hash256& root, std::size_t index) {
    MerkleProof proof = merkle_prove(ids, index);
    FUZZ_CHECK(proof.index == index && proof.leaf_count == ids.size());
    FUZZ_CHECK(merkle_verify(root, ids[index], proof));
    Hash256 other = ids[index];
    other.bytes[0] ^= 0x01;
    FUZZ_CHECK(!merkle_verify(root, other, proof));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const ByteView input(data, size);
    auto decoded = decode_block(input);
    if (!decoded) {
        FUZZ_CHECK(fuzz::is_decode_error(decoded.code()));
        return 0;
    }
    const Block& block = *decoded;

    const Bytes encoded = block.encode();
    FUZZ_CHECK(std::equal(encoded.begin(), encoded.end(), input.begin(), input.end()));
    auto again = decode_block(encoded);
    FUZZ_CHECK(again.ok() && *again == block);

    // The header is the block's prefix and decodes on its own.
    Writer header_writer;
    encode_header(header_writer, block.header);
    const Bytes& header_bytes = header_writer.data();
    FUZZ_CHECK(header_bytes.size() <= input.size());
    auto header = decode_header(input.first(header_bytes.size()));
    FUZZ_CHECK(header.ok() && *header == block.header);
    FUZZ_CHECK(block.hash() == block.header.hash());

    const std::vector<Hash256> ids = block.txids();
    FUZZ_CHECK(ids.size() == block.txs.size());
    const Hash256 root = compute_tx_root(block.txs);
    FUZZ_CHECK(root == merkle_root(ids));
    if (!ids.empty()) {
        // Proofs cost O(n) each; the ends and the middle cover the odd-node cases.
        check_proofs(ids, root, 0);
        check_proofs(ids, root, ids.size() / 2);
        check_proofs(ids, root, ids.size() - 1);
        FUZZ_CHECK(block.prove_tx(ids.size() - 1) == merkle_prove(ids, ids.size() - 1));
    }

    for (std::size_t i = 0; i < block.txs.size(); ++i) {
        FUZZ_CHECK(block.txs[i].id() == ids[i]);
        (void)check_tx_stateless(block.txs[i], ids[i], fuzz::chain_id, &signature_cache());
    }

    // Execution on the genesis ledger: deep only for blocks at height 1 that extend the
    // fuzz genesis (the seeds), cheap rejection for everything else.
    Ledger ledger(genesis_ledger().params(), genesis_ledger().state(), &signature_cache());
    auto delta = ledger.execute(block);
    if (delta) {
        FUZZ_CHECK(delta->height == block.header.height);
        FUZZ_CHECK(delta->state_root == block.header.state_root);
        FUZZ_CHECK(delta->block_hash == block.hash());
        ledger.commit(*delta);
        FUZZ_CHECK(ledger.check_invariants().ok());
        FUZZ_CHECK(ledger.state().tip_hash == block.hash());
    } else {
        FUZZ_CHECK(ledger.state() == genesis_ledger().state()); // execute() changed nothing
    }
    return 0;
}
