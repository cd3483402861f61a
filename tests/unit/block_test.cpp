// Blocks: header hashing, encoding, decoding limits, transaction inclusion proofs.
#include <popchain/application.hpp>
#include <popchain/block.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

#include <chrono>
#include <functional>
#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::test;

namespace {

const SigningKey& sender() {
    static const SigningKey k = key_from_byte(0x71);
    return k;
}

Tx transfer(std::uint64_t nonce, std::uint64_t amount, std::size_t memo_len = 0) {
    Tx tx;
    tx.kind = TxKind::transfer;
    tx.chain_id = "block-test";
    tx.to = Address::of(key_from_byte(0x72).public_key());
    tx.amount = amount;
    tx.nonce = nonce;
    tx.payload = Bytes(memo_len, 0x6d);
    return sign_tx(tx, sender());
}

BlockHeader sample_header() {
    BlockHeader h;
    h.height = 0x0102030405060708ull;
    h.prev_hash = sha256(std::string_view("prev"));
    h.tx_root = sha256(std::string_view("txs"));
    h.state_root = sha256(std::string_view("state"));
    h.view = 77;
    h.proposer = 3;
    h.timestamp_ms = 1'700'000'000'123ull;
    return h;
}

Block sample_block(std::size_t ntx) {
    Block b;
    b.header = sample_header();
    for (std::size_t i = 0; i < ntx; ++i)
        b.txs.push_back(transfer(i, 10 + i, i));
    b.header.tx_root = compute_tx_root(b.txs);
    b.certificate.view = 77;
    for (std::uint8_t r = 0; r < 3; ++r) {
        SigningKey k = key_from_byte(static_cast<std::uint8_t>(0x80 + r));
        b.certificate.signatures.push_back({r, k.sign(b.hash())});
    }
    return b;
}

void put_u32_le(Bytes& b, std::size_t off, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        b[off + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v >> (8 * i));
}

constexpr std::size_t header_size = 8 + 32 + 32 + 32 + 8 + 4 + 8;

// decode_block_tx gives every transaction of `b` out of its encoding `enc`.
void check_each_tx_decodes(const Block& b, const Bytes& enc) {
    for (std::size_t i = 0; i < b.txs.size(); ++i) {
        CAPTURE(i);
        auto tx = decode_block_tx(enc, i);
        REQUIRE(tx.ok());
        CHECK(*tx == b.txs[i]);
    }
}

} // namespace

TEST_CASE("block header: the hash covers every header field") {
    const BlockHeader base = sample_header();
    const Hash256 h = base.hash();
    CHECK(base.hash() == h);
    CHECK_FALSE(h.is_zero());
    using Mutator = std::function<void(BlockHeader&)>;
    const std::vector<std::pair<const char*, Mutator>> mutations = {
        {"height", [](BlockHeader& x) { x.height += 1; }},
        {"prev_hash", [](BlockHeader& x) { x.prev_hash.bytes[0] ^= 1; }},
        {"tx_root", [](BlockHeader& x) { x.tx_root.bytes[31] ^= 1; }},
        {"state_root", [](BlockHeader& x) { x.state_root.bytes[15] ^= 0x80; }},
        {"view", [](BlockHeader& x) { x.view += 1; }},
        {"proposer", [](BlockHeader& x) { x.proposer += 1; }},
        {"timestamp_ms", [](BlockHeader& x) { x.timestamp_ms += 1; }},
    };
    for (const auto& [name, mutate] : mutations) {
        CAPTURE(name);
        BlockHeader x = base;
        mutate(x);
        CHECK(x.hash() != h);
    }
    // Swapping two hash fields is also a different header.
    BlockHeader swapped = base;
    std::swap(swapped.tx_root, swapped.state_root);
    CHECK(swapped.hash() != h);
    // The hash is not simply the SHA-256 of the encoding (it is domain separated).
    Writer w;
    encode_header(w, base);
    CHECK(sha256(w.data()) != h);
}

TEST_CASE("block: the hash is the header's and ignores the certificate") {
    Block b = sample_block(2);
    const Hash256 h = b.hash();
    CHECK(h == b.header.hash());
    Block c = b;
    c.certificate.view += 5;
    c.certificate.signatures.pop_back();
    c.certificate.signatures[0].signature.bytes[0] ^= 1;
    CHECK(c.hash() == h);
    c.certificate = CommitCertificate{};
    CHECK(c.certificate.empty());
    CHECK(c.hash() == h);
}

TEST_CASE("block header: encode/decode round trip, layout, truncation, trailing bytes") {
    const BlockHeader h = sample_header();
    Writer w;
    encode_header(w, h);
    const Bytes enc = w.take();
    REQUIRE(enc.size() == header_size);
    // Height first, little-endian.
    for (int i = 0; i < 8; ++i)
        CHECK(enc[static_cast<std::size_t>(i)] == 8 - i);
    auto back = decode_header(enc);
    REQUIRE(back.ok());
    CHECK(*back == h);
    for (std::size_t cut = 0; cut < enc.size(); ++cut) {
        CAPTURE(cut);
        CHECK(code_of(decode_header(ByteView(enc.data(), cut))) == code_name(Errc::truncated));
    }
    Bytes extra = enc;
    extra.push_back(0);
    CHECK(code_of(decode_header(extra)) == code_name(Errc::trailing_bytes));
}

TEST_CASE("block: encode/decode round trip including the certificate") {
    for (std::size_t ntx : {0u, 1u, 2u, 5u}) {
        CAPTURE(ntx);
        const Block b = sample_block(ntx);
        const Bytes enc = b.encode();
        auto back = decode_block(enc);
        REQUIRE(back.ok());
        CHECK(*back == b);
        CHECK(back->certificate.signatures.size() == 3);
        CHECK(back->certificate.view == 77);
        CHECK(back->encode() == enc);
        CHECK(back->hash() == b.hash());

        // Layout: header, u32 tx count, txs, u64 certificate view, u32 signature count, sigs.
        std::size_t tx_bytes = 0;
        for (const auto& tx : b.txs)
            tx_bytes += tx.encode().size();
        CHECK(enc.size() == header_size + 4 + tx_bytes + 8 + 4 + 3 * (4 + 64));
        CHECK(enc[header_size] == ntx);
    }
    // No certificate at all.
    Block bare = sample_block(1);
    bare.certificate = {};
    auto back = decode_block(bare.encode());
    REQUIRE(back.ok());
    CHECK(*back == bare);
}

TEST_CASE("block: decode reports truncation at every cut, and trailing bytes") {
    const Block b = sample_block(2);
    const Bytes enc = b.encode();
    for (std::size_t cut = 0; cut < enc.size(); ++cut) {
        CAPTURE(cut);
        CHECK(code_of(decode_block(ByteView(enc.data(), cut))) == code_name(Errc::truncated));
    }
    Bytes extra = enc;
    extra.push_back(0);
    CHECK(code_of(decode_block(extra)) == code_name(Errc::trailing_bytes));
}

TEST_CASE("block: tx and signature counts are bounded") {
    const Block b = sample_block(0);
    const Bytes enc = b.encode();
    SUBCASE("tx count above max_block_txs") {
        for (std::uint32_t count : {static_cast<std::uint32_t>(max_block_txs + 1), 0xffffffffu}) {
            Bytes bad = enc;
            put_u32_le(bad, header_size, count);
            CHECK(code_of(decode_block(bad)) == code_name(Errc::too_large));
        }
    }
    SUBCASE("certificate signature count above the replica limit") {
        Bytes bad = enc;
        const std::size_t sig_count_off = header_size + 4 + 8;
        put_u32_le(bad, sig_count_off, static_cast<std::uint32_t>(max_replicas + 1));
        CHECK(code_of(decode_block(bad)) == code_name(Errc::too_large));
        put_u32_le(bad, sig_count_off, 0xffffffffu);
        CHECK(code_of(decode_block(bad)) == code_name(Errc::too_large));
    }
}

TEST_CASE("block: a forged huge tx count with short input fails fast without a huge allocation") {
    // A header, a tx count of max_block_txs, and a single transaction (no certificate).
    Block one = sample_block(1);
    one.certificate = {};
    Bytes enc = one.encode();
    enc.resize(enc.size() - 8 - 4);
    REQUIRE(enc.size() == header_size + 4 + one.txs[0].encode().size());
    put_u32_le(enc, header_size, static_cast<std::uint32_t>(max_block_txs));
    const std::size_t input_size = enc.size();

    const auto start = std::chrono::steady_clock::now();
    Reader r(enc);
    Block partial = decode_block(r);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    CHECK(code_of(r.finish()) == code_name(Errc::truncated));
    // What was reserved must be bounded by what the input could hold, not by the count:
    // 65536 transactions would be ~20 MB of Tx structs.
    CHECK(partial.txs.capacity() * sizeof(Tx) <= 4 * input_size + 8 * sizeof(Tx));
    CHECK(partial.txs.size() <= 2);
    CHECK(elapsed < std::chrono::seconds(1));

    // Header plus the bare count, nothing else.
    Bytes bare(enc.begin(), enc.begin() + static_cast<std::ptrdiff_t>(header_size + 4));
    Reader r2(bare);
    Block b2 = decode_block(r2);
    CHECK(code_of(r2.finish()) == code_name(Errc::truncated));
    CHECK(b2.txs.capacity() <= 1);
    CHECK(code_of(decode_block(bare)) == code_name(Errc::truncated));
}

TEST_CASE("block: every transaction has an inclusion proof against the header's tx root") {
    for (std::size_t ntx = 1; ntx <= 9; ++ntx) {
        Block b = sample_block(ntx);
        const auto ids = b.txids();
        REQUIRE(ids.size() == ntx);
        for (std::size_t i = 0; i < ntx; ++i)
            CHECK(ids[i] == b.txs[i].id());
        CHECK(compute_tx_root(b.txs) == merkle_root(ids));
        CHECK(b.header.tx_root == merkle_root(ids));
        for (std::size_t i = 0; i < ntx; ++i) {
            CAPTURE(ntx);
            CAPTURE(i);
            MerkleProof p = b.prove_tx(i);
            CHECK(p.index == i);
            CHECK(p.leaf_count == ntx);
            CHECK(merkle_verify(b.header.tx_root, b.txs[i].id(), p));
            for (std::size_t j = 0; j < ntx; ++j)
                if (j != i) CHECK_FALSE(merkle_verify(b.header.tx_root, b.txs[j].id(), p));
        }
    }
    CHECK(compute_tx_root({}).is_zero());
}

TEST_CASE("block: the tx root does not depend on signatures, only on txids") {
    Block b = sample_block(3);
    const Hash256 root = compute_tx_root(b.txs);
    b.txs[1].signature.bytes[7] ^= 1;
    CHECK(compute_tx_root(b.txs) == root);
    b.txs[1].amount += 1;
    CHECK(compute_tx_root(b.txs) != root);
}

TEST_CASE("block: one transaction decodes out of a block of commands and transfers") {
    Block b = sample_block(2);
    const Tx command = make_command(b.txs[0].chain_id, command_client(9), 0, Bytes(8, 0x11));
    Tx signed_command = sign_tx(command, sender());
    signed_command.payload = Bytes(40, 0x22);
    signed_command = sign_tx(signed_command, sender());
    b.txs.insert(b.txs.begin(), command);
    b.txs.insert(b.txs.begin() + 2, signed_command);
    b.header.tx_root = compute_tx_root(b.txs);
    const Bytes enc = b.encode();
    check_each_tx_decodes(b, enc);
    // The unsigned command's flag byte ends it: 2 is refused when passed over.
    const std::size_t tx0 = header_size + 4;
    const std::size_t flag_at = tx0 + command.encode().size() - 1;
    Bytes bad_flag = enc;
    bad_flag[flag_at] = 2;
    CHECK(code_of(decode_block_tx(bad_flag, 1)) == code_name(Errc::malformed));
    CHECK(code_of(decode_block_tx(bad_flag, 0)) == code_name(Errc::malformed));
}

TEST_CASE("block: one transaction decodes out of an encoded block") {
    Block b = sample_block(6);
    // Fields of every variable length: a long chain id and payloads of several sizes, so a
    // skip that misjudged any length would land inside the next transaction.
    Tx odd = b.txs[2];
    odd.chain_id = std::string(max_chain_id_bytes, 'c');
    odd.payload = Bytes(300, 0x5a);
    b.txs[2] = sign_tx(odd, sender());
    const Bytes enc = b.encode();
    check_each_tx_decodes(b, enc);
    CHECK(code_of(decode_block_tx(enc, b.txs.size())) == code_name(Errc::not_found));
    CHECK(code_of(decode_block_tx(sample_block(0).encode(), 0)) == code_name(Errc::not_found));

    // Only the bytes up to the wanted transaction are read: any cut before its end fails,
    // a cut after it does not.
    std::size_t end_of_3 = header_size + 4;
    for (std::size_t i = 0; i <= 3; ++i)
        end_of_3 += b.txs[i].encode().size();
    for (std::size_t cut = 0; cut < end_of_3; ++cut) {
        CAPTURE(cut);
        CHECK(code_of(decode_block_tx(ByteView(enc.data(), cut), 3)) == code_name(Errc::truncated));
    }
    auto cut_after = decode_block_tx(ByteView(enc.data(), end_of_3), 3);
    REQUIRE(cut_after.ok());
    CHECK(*cut_after == b.txs[3]);

    // A transaction passed over is checked as decode_tx checks it.
    const std::size_t tx0 = header_size + 4;
    Bytes bad_kind = enc;
    bad_kind[tx0] = 9;
    CHECK(code_of(decode_block_tx(bad_kind, 1)) == code_name(Errc::unknown_kind));
    Bytes long_chain_id = enc;
    put_u32_le(long_chain_id, tx0 + 1, static_cast<std::uint32_t>(max_chain_id_bytes + 1));
    CHECK(code_of(decode_block_tx(long_chain_id, 1)) == code_name(Errc::too_large));
    Bytes long_payload = enc;
    const std::size_t payload_len_at = tx0 + 1 + 4 + b.txs[0].chain_id.size() + 96;
    put_u32_le(long_payload, payload_len_at, static_cast<std::uint32_t>(max_payload_bytes + 1));
    CHECK(code_of(decode_block_tx(long_payload, 1)) == code_name(Errc::too_large));
    Bytes tx_count = enc;
    put_u32_le(tx_count, header_size, static_cast<std::uint32_t>(max_block_txs + 1));
    CHECK(code_of(decode_block_tx(tx_count, 0)) == code_name(Errc::too_large));
}

TEST_CASE("block: first_repeated_id finds the first id seen before, or none") {
    const Hash256 a = sha256("a"), b = sha256("b"), c = sha256("c");
    CHECK(first_repeated_id({}) == 0);
    CHECK(first_repeated_id({a, b, c}) == 3);
    CHECK(first_repeated_id({a, b, a}) == 2);
    // The first repeat in block order, though c was seen first.
    CHECK(first_repeated_id({c, b, b, c}) == 2);
    CHECK(first_repeated_id({a, a}) == 1);
}
