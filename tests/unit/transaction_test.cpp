// Transactions: encoding, ids, stateless checks, config payloads.
#include <popchain/application.hpp>
#include <popchain/hex.hpp>
#include <popchain/transaction.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

#include <functional>
#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::test;

namespace {

constexpr std::string_view chain = "tx-test-chain";

const SigningKey& alice() {
    static const SigningKey k = key_from_byte(0x61);
    return k;
}
const SigningKey& bob() {
    static const SigningKey k = key_from_byte(0x62);
    return k;
}
const SigningKey& replica_key() {
    static const SigningKey k = key_from_byte(0x63);
    return k;
}

const std::vector<TxKind>& all_kinds() {
    static const std::vector<TxKind> kinds = {TxKind::transfer,      TxKind::mint,
                                              TxKind::escrow_open,   TxKind::escrow_release,
                                              TxKind::escrow_refund, TxKind::config};
    return kinds;
}

Bytes add_replica_payload(std::uint32_t id = 7) {
    ConfigChange c;
    c.action = ConfigChange::Action::add_replica;
    c.replica = {id, replica_key().public_key(), "10.0.0.7:7000"};
    return c.encode();
}

// The unsigned fields of a well-formed transaction of `kind`.
Tx unsigned_tx(TxKind kind) {
    Tx tx;
    tx.kind = kind;
    tx.chain_id = std::string(chain);
    tx.nonce = 3;
    tx.payload = to_bytes("memo");
    switch (kind) {
    case TxKind::transfer:
    case TxKind::mint:
        tx.to = bob().address();
        tx.amount = 1234;
        break;
    case TxKind::escrow_open:
        tx.to = bob().address();
        tx.amount = 99;
        tx.trade_id = sha256(std::string_view("trade-1"));
        tx.deadline = 42;
        break;
    case TxKind::escrow_release:
    case TxKind::escrow_refund: tx.trade_id = sha256(std::string_view("trade-1")); break;
    case TxKind::config: tx.payload = add_replica_payload(); break;
    case TxKind::command: break; // the memo is the command (application_test.cpp)
    }
    return tx;
}

Tx signed_tx(TxKind kind, const SigningKey& key = alice()) {
    return sign_tx(unsigned_tx(kind), key);
}

// Re-signs after a field was changed, keeping the signer.
Tx resign(Tx tx, const SigningKey& key = alice()) {
    return sign_tx(std::move(tx), key);
}

std::uint64_t read_le(const Bytes& b, std::size_t off, int width) {
    std::uint64_t v = 0;
    for (int i = 0; i < width; ++i)
        v |= std::uint64_t(b[off + static_cast<std::size_t>(i)]) << (8 * i);
    return v;
}

} // namespace

TEST_CASE("tx: kind names round trip") {
    for (TxKind k : all_kinds()) {
        auto back = tx_kind_from_name(tx_kind_name(k));
        REQUIRE(back.has_value());
        CHECK(*back == k);
    }
    CHECK(std::string(tx_kind_name(TxKind::escrow_open)) == "escrow_open");
    CHECK_FALSE(tx_kind_from_name("unknown").has_value());
    CHECK_FALSE(tx_kind_from_name("").has_value());
    CHECK_FALSE(tx_kind_from_name("Transfer").has_value());
}

TEST_CASE("tx: sign_tx fills in key and sender; every kind is stateless-valid") {
    SignatureCache cache;
    for (TxKind k : all_kinds()) {
        CAPTURE(tx_kind_name(k));
        Tx tx = signed_tx(k);
        CHECK(tx.public_key == alice().public_key());
        CHECK(tx.from == alice().address());
        CHECK(verify(tx.public_key, tx.id(), tx.signature));
        CHECK(check_tx_shape(tx).ok());
        CHECK(code_of(check_tx_stateless(tx, chain)) == "ok");
        CHECK(code_of(check_tx_stateless(tx, chain, &cache)) == "ok");
        CHECK(code_of(check_tx_stateless(tx, tx.id(), chain, &cache)) == "ok");
    }
    CHECK(cache.hits() == all_kinds().size());
}

TEST_CASE("tx: encode/decode round trip for every kind, with the documented layout") {
    for (TxKind k : all_kinds()) {
        CAPTURE(tx_kind_name(k));
        const Tx tx = signed_tx(k);
        const Bytes enc = tx.encode();
        const std::size_t c = tx.chain_id.size(), p = tx.payload.size();
        REQUIRE(enc.size() == 1 + 4 + c + 20 + 20 + 8 + 8 + 32 + 8 + 4 + p + 33 + 64);
        // kind, chain id (u32 length + bytes), from, to, amount, nonce, trade id, deadline,
        // payload (u32 length + bytes), public key, signature.
        std::size_t off = 0;
        CHECK(enc[off] == static_cast<std::uint8_t>(k));
        off += 1;
        CHECK(read_le(enc, off, 4) == c);
        off += 4;
        CHECK(std::string(enc.begin() + static_cast<std::ptrdiff_t>(off),
                          enc.begin() + static_cast<std::ptrdiff_t>(off + c)) == tx.chain_id);
        off += c;
        CHECK(Address::from(ByteView(enc.data() + off, 20)) == tx.from);
        off += 20;
        CHECK(Address::from(ByteView(enc.data() + off, 20)) == tx.to);
        off += 20;
        CHECK(read_le(enc, off, 8) == tx.amount);
        off += 8;
        CHECK(read_le(enc, off, 8) == tx.nonce);
        off += 8;
        CHECK(Hash256::from(ByteView(enc.data() + off, 32)) == tx.trade_id);
        off += 32;
        CHECK(read_le(enc, off, 8) == tx.deadline);
        off += 8;
        CHECK(read_le(enc, off, 4) == p);
        off += 4 + p;
        CHECK(PublicKey::from(ByteView(enc.data() + off, 33)) == tx.public_key);
        off += 33;
        CHECK(Signature::from(ByteView(enc.data() + off, 64)) == tx.signature);

        auto back = decode_tx(enc);
        REQUIRE(back.ok());
        CHECK(*back == tx);
        CHECK(back->id() == tx.id());
        CHECK(back->encode() == enc);

        // The Reader overload consumes exactly one tx.
        Bytes two = enc;
        two.insert(two.end(), enc.begin(), enc.end());
        Reader r(two);
        CHECK(decode_tx(r) == tx);
        CHECK(decode_tx(r) == tx);
        CHECK(r.finish().ok());
    }
}

TEST_CASE("tx: encoded_size is the encoding's size, for every kind and payload length") {
    std::vector<Tx> txs;
    for (TxKind k : all_kinds())
        txs.push_back(signed_tx(k));
    const Tx command =
        make_command("a-chain-id-longer-than-a-short-string", command_client(3), 9, Bytes(8, 0x22));
    txs.push_back(command);                 // unsigned: no key, no signature
    txs.push_back(sign_tx(command, bob())); // signed
    for (Tx tx : txs) {
        for (std::size_t payload : {std::size_t{0}, std::size_t{1}, std::size_t{300}}) {
            CAPTURE(tx_kind_name(tx.kind));
            CAPTURE(payload);
            tx.payload.assign(payload, 0x33);
            CHECK(encoded_size(tx) == tx.encode().size());
        }
    }
}

TEST_CASE("tx: round trip of extreme field values") {
    Tx tx = unsigned_tx(TxKind::escrow_open);
    tx.chain_id = std::string(max_chain_id_bytes, 'c');
    tx.payload = Bytes(max_payload_bytes, 0xee);
    tx.amount = ~std::uint64_t{0};
    tx.nonce = ~std::uint64_t{0};
    tx.deadline = ~std::uint64_t{0};
    tx = resign(tx);
    auto back = decode_tx(tx.encode());
    REQUIRE(back.ok());
    CHECK(*back == tx);
}

TEST_CASE("tx: the id covers every field except the signature") {
    const Tx base = signed_tx(TxKind::escrow_open);
    const Hash256 id = base.id();
    CHECK(id == sha256(base.signing_bytes()));

    // signing_bytes: a domain tag, then the encoding without the signature.
    const Bytes enc = base.encode();
    const Bytes unsigned_part(enc.begin(), enc.end() - 64);
    const Bytes sb = base.signing_bytes();
    REQUIRE(sb.size() > unsigned_part.size());
    CHECK(Bytes(sb.end() - static_cast<std::ptrdiff_t>(unsigned_part.size()), sb.end()) ==
          unsigned_part);

    SUBCASE("signature does not change the id") {
        Tx t = base;
        t.signature = Signature{};
        CHECK(t.id() == id);
        t.signature.bytes[63] = 1;
        CHECK(t.id() == id);
        CHECK(resign(base, alice()).id() == id);
    }

    using Mutator = std::function<void(Tx&)>;
    const std::vector<std::pair<const char*, Mutator>> mutations = {
        {"kind", [](Tx& t) { t.kind = TxKind::transfer; }},
        {"kind (invalid value)", [](Tx& t) { t.kind = static_cast<TxKind>(77); }},
        {"chain_id", [](Tx& t) { t.chain_id += "x"; }},
        {"chain_id (empty)", [](Tx& t) { t.chain_id.clear(); }},
        {"from", [](Tx& t) { t.from.bytes[19] ^= 1; }},
        {"to", [](Tx& t) { t.to.bytes[0] ^= 1; }},
        {"amount", [](Tx& t) { t.amount += 1; }},
        {"nonce", [](Tx& t) { t.nonce += 1; }},
        {"trade_id", [](Tx& t) { t.trade_id.bytes[31] ^= 0x80; }},
        {"deadline", [](Tx& t) { t.deadline += 1; }},
        {"payload", [](Tx& t) { t.payload.back() ^= 1; }},
        {"payload (longer)", [](Tx& t) { t.payload.push_back(0); }},
        {"payload (empty)", [](Tx& t) { t.payload.clear(); }},
        {"public_key", [](Tx& t) { t.public_key = bob().public_key(); }},
    };
    for (const auto& [name, mutate] : mutations) {
        CAPTURE(name);
        Tx t = base;
        mutate(t);
        CHECK(t.id() != id);
        // The old signature no longer matches.
        CHECK_FALSE(verify(t.public_key, t.id(), t.signature));
    }
}

TEST_CASE("tx: decode rejects an unknown kind") {
    const Bytes enc = signed_tx(TxKind::transfer).encode();
    for (int kind : {0, 8, 9, 0x7f, 0xff}) {
        CAPTURE(kind);
        Bytes bad = enc;
        bad[0] = static_cast<std::uint8_t>(kind);
        CHECK(code_of(decode_tx(bad)) == code_name(Errc::unknown_kind));
    }
}

TEST_CASE("tx: decode reports truncation at every cut, and a trailing byte") {
    for (TxKind k : all_kinds()) {
        CAPTURE(tx_kind_name(k));
        const Bytes enc = signed_tx(k).encode();
        for (std::size_t cut = 0; cut < enc.size(); ++cut) {
            CAPTURE(cut);
            CHECK(code_of(decode_tx(ByteView(enc.data(), cut))) == code_name(Errc::truncated));
        }
        Bytes extra = enc;
        extra.push_back(0);
        CHECK(code_of(decode_tx(extra)) == code_name(Errc::trailing_bytes));
    }
}

TEST_CASE("tx: decode enforces the chain id and payload limits") {
    SUBCASE("chain id") {
        Tx at = unsigned_tx(TxKind::transfer);
        at.chain_id = std::string(max_chain_id_bytes, 'a');
        CHECK(decode_tx(at.encode()).ok());
        Tx over = at;
        over.chain_id += "a";
        CHECK(code_of(decode_tx(over.encode())) == code_name(Errc::too_large));
    }
    SUBCASE("payload") {
        Tx at = unsigned_tx(TxKind::transfer);
        at.payload = Bytes(max_payload_bytes, 1);
        CHECK(decode_tx(at.encode()).ok());
        Tx over = at;
        over.payload.push_back(1);
        CHECK(code_of(decode_tx(over.encode())) == code_name(Errc::too_large));
    }
    SUBCASE("forged huge payload length") {
        Tx t = unsigned_tx(TxKind::transfer);
        t.payload.clear();
        Bytes enc = t.encode();
        const std::size_t len_off = 1 + 4 + t.chain_id.size() + 20 + 20 + 8 + 8 + 32 + 8;
        REQUIRE(read_le(enc, len_off, 4) == 0);
        for (std::size_t i = 0; i < 4; ++i)
            enc[len_off + i] = 0xff;
        CHECK(code_of(decode_tx(enc)) == code_name(Errc::too_large));
    }
}

TEST_CASE("tx: stateless check rejects a bad signature") {
    for (TxKind k : all_kinds()) {
        CAPTURE(tx_kind_name(k));
        const Tx good = signed_tx(k);
        for (std::size_t bit : {0u, 100u, 255u, 256u, 300u, 511u}) {
            Tx t = good;
            t.signature.bytes[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
            CHECK(code_of(check_tx_stateless(t, chain)) == code_name(Errc::bad_signature));
        }
        // Claims alice's key, but bob signed.
        Tx forged = good;
        forged.signature = bob().sign(forged.id());
        CHECK(code_of(check_tx_stateless(forged, chain)) == code_name(Errc::bad_signature));
        // Unsigned.
        Tx unsigned_copy = good;
        unsigned_copy.signature = Signature{};
        CHECK(code_of(check_tx_stateless(unsigned_copy, chain)) == code_name(Errc::bad_signature));
        // A field changed after signing.
        Tx changed = good;
        changed.nonce += 1;
        CHECK(code_of(check_tx_stateless(changed, chain)) == code_name(Errc::bad_signature));
    }
}

TEST_CASE("tx: stateless check: a failed signature is never cached") {
    SignatureCache cache;
    Tx t = signed_tx(TxKind::transfer);
    t.signature.bytes[5] ^= 1;
    for (int i = 0; i < 3; ++i)
        CHECK(code_of(check_tx_stateless(t, chain, &cache)) == code_name(Errc::bad_signature));
    CHECK(cache.size() == 0);
    CHECK(cache.hits() == 0);
}

TEST_CASE("tx: stateless check rejects the wrong chain id") {
    const Tx t = signed_tx(TxKind::transfer);
    CHECK(code_of(check_tx_stateless(t, "other-chain")) == code_name(Errc::wrong_chain_id));
    CHECK(code_of(check_tx_stateless(t, "")) == code_name(Errc::wrong_chain_id));
    CHECK(code_of(check_tx_stateless(t, std::string(chain) + " ")) ==
          code_name(Errc::wrong_chain_id));
    // Signed for another chain, checked on ours.
    Tx other = unsigned_tx(TxKind::transfer);
    other.chain_id = "other-chain";
    other = resign(other);
    CHECK(code_of(check_tx_stateless(other, chain)) == code_name(Errc::wrong_chain_id));
    CHECK(code_of(check_tx_stateless(other, "other-chain")) == "ok");
}

TEST_CASE("tx: stateless check rejects a sender that is not the signer's address") {
    Tx t = unsigned_tx(TxKind::transfer);
    t.public_key = alice().public_key();
    t.from = bob().address();
    t.signature = alice().sign(t.id()); // a valid signature over these exact fields
    REQUIRE(verify(t.public_key, t.id(), t.signature));
    CHECK(code_of(check_tx_stateless(t, chain)) == code_name(Errc::sender_mismatch));

    // Bob's key with Alice's address, signed by Bob.
    Tx u = unsigned_tx(TxKind::transfer);
    u.public_key = bob().public_key();
    u.from = alice().address();
    u.signature = bob().sign(u.id());
    CHECK(code_of(check_tx_stateless(u, chain)) == code_name(Errc::sender_mismatch));
}

TEST_CASE("tx: zero amount is rejected where an amount is required") {
    for (TxKind k : {TxKind::transfer, TxKind::mint, TxKind::escrow_open}) {
        CAPTURE(tx_kind_name(k));
        Tx t = unsigned_tx(k);
        t.amount = 0;
        t = resign(t);
        CHECK(code_of(check_tx_shape(t)) == code_name(Errc::zero_amount));
        CHECK(code_of(check_tx_stateless(t, chain)) == code_name(Errc::zero_amount));
    }
}

TEST_CASE("tx: fields a kind does not use must be empty") {
    using Mutator = std::function<void(Tx&)>;
    const Mutator set_to = [](Tx& t) { t.to = bob().address(); };
    const Mutator set_amount = [](Tx& t) { t.amount = 1; };
    const Mutator set_trade = [](Tx& t) { t.trade_id = sha256(std::string_view("t")); };
    const Mutator set_deadline = [](Tx& t) { t.deadline = 1; };
    const Mutator clear_trade = [](Tx& t) { t.trade_id = Hash256{}; };
    struct Case {
        TxKind kind;
        const char* what;
        Mutator mutate;
    };
    const std::vector<Case> cases = {
        {TxKind::transfer, "trade_id", set_trade},
        {TxKind::transfer, "deadline", set_deadline},
        {TxKind::mint, "trade_id", set_trade},
        {TxKind::mint, "deadline", set_deadline},
        {TxKind::escrow_open, "missing trade_id", clear_trade},
        {TxKind::escrow_release, "to", set_to},
        {TxKind::escrow_release, "amount", set_amount},
        {TxKind::escrow_release, "deadline", set_deadline},
        {TxKind::escrow_release, "missing trade_id", clear_trade},
        {TxKind::escrow_refund, "to", set_to},
        {TxKind::escrow_refund, "amount", set_amount},
        {TxKind::escrow_refund, "deadline", set_deadline},
        {TxKind::escrow_refund, "missing trade_id", clear_trade},
        {TxKind::config, "to", set_to},
        {TxKind::config, "amount", set_amount},
        {TxKind::config, "trade_id", set_trade},
        {TxKind::config, "deadline", set_deadline},
    };
    for (const auto& c : cases) {
        CAPTURE(tx_kind_name(c.kind));
        CAPTURE(c.what);
        Tx t = unsigned_tx(c.kind);
        c.mutate(t);
        t = resign(t);
        CHECK(code_of(check_tx_shape(t)) == code_name(Errc::malformed));
        CHECK(code_of(check_tx_stateless(t, chain)) == code_name(Errc::malformed));
    }
}

TEST_CASE("tx: config payload must be a valid ConfigChange") {
    ConfigChange add;
    add.action = ConfigChange::Action::add_replica;
    add.replica = {3, replica_key().public_key(), "h:1"};
    const Bytes good = add.encode();

    Bytes bad_key_payload = good;
    bad_key_payload[1 + 4] = 0x04; // the key's prefix byte: not a compressed point
    Bytes unknown_action = good;
    unknown_action[0] = 3;
    Bytes zero_action = good;
    zero_action[0] = 0;
    Bytes trailing = good;
    trailing.push_back(0);
    const std::vector<std::pair<const char*, Bytes>> garbage = {
        {"empty", Bytes{}},
        {"one byte", Bytes{1}},
        {"text", to_bytes("add replica 3 please")},
        {"truncated", Bytes(good.begin(), good.end() - 1)},
        {"trailing", trailing},
        {"unknown action", unknown_action},
        {"action zero", zero_action},
        {"bad key", bad_key_payload},
    };
    for (const auto& [name, payload] : garbage) {
        CAPTURE(name);
        Tx t = unsigned_tx(TxKind::config);
        t.payload = payload;
        t = resign(t);
        CHECK(code_of(check_tx_shape(t)) == code_name(Errc::bad_config));
        CHECK(code_of(check_tx_stateless(t, chain)) == code_name(Errc::bad_config));
    }
}

TEST_CASE("tx: oversized chain id or payload in a struct, and an unknown kind") {
    Tx t = unsigned_tx(TxKind::transfer);
    t.chain_id = std::string(max_chain_id_bytes + 1, 'x');
    t = resign(t);
    CHECK(code_of(check_tx_shape(t)) == code_name(Errc::too_large));
    Tx p = unsigned_tx(TxKind::transfer);
    p.payload = Bytes(max_payload_bytes + 1, 0);
    p = resign(p);
    CHECK(code_of(check_tx_shape(p)) == code_name(Errc::too_large));
    Tx k = unsigned_tx(TxKind::transfer);
    k.kind = static_cast<TxKind>(9);
    k = resign(k);
    CHECK(code_of(check_tx_shape(k)) == code_name(Errc::unknown_kind));
    CHECK(code_of(check_tx_stateless(k, chain)) == code_name(Errc::unknown_kind));
}

TEST_CASE("config change: round trip; decode errors") {
    ConfigChange add;
    add.action = ConfigChange::Action::add_replica;
    add.replica = {0xfffffffeu, replica_key().public_key(), std::string(max_endpoint_bytes, 'e')};
    auto back = decode_config_change(add.encode());
    REQUIRE(back.ok());
    CHECK(*back == add);

    ConfigChange remove;
    remove.action = ConfigChange::Action::remove_replica;
    remove.replica.id = 5; // only the id matters; the key is not checked
    auto rback = decode_config_change(remove.encode());
    REQUIRE(rback.ok());
    CHECK(*rback == remove);

    // Layout: action byte, then the replica (u32 id, 33-byte key, endpoint).
    const Bytes enc = add.encode();
    REQUIRE(enc.size() == 1 + 4 + 33 + 4 + max_endpoint_bytes);
    CHECK(enc[0] == 1);
    CHECK(read_le(enc, 1, 4) == 0xfffffffeu);
    CHECK(remove.encode()[0] == 2);

    for (std::size_t cut = 0; cut < enc.size(); ++cut) {
        CAPTURE(cut);
        CHECK(code_of(decode_config_change(ByteView(enc.data(), cut))) ==
              code_name(Errc::truncated));
    }
    Bytes extra = enc;
    extra.push_back(9);
    CHECK(code_of(decode_config_change(extra)) == code_name(Errc::trailing_bytes));
    Bytes action = enc;
    action[0] = 7;
    CHECK(code_of(decode_config_change(action)) == code_name(Errc::bad_config));

    ConfigChange long_endpoint = add;
    long_endpoint.replica.endpoint += "e";
    CHECK(code_of(decode_config_change(long_endpoint.encode())) == code_name(Errc::too_large));

    ConfigChange bad_key = add;
    bad_key.replica.key = PublicKey{}; // all zero: no prefix, no point
    CHECK(code_of(decode_config_change(bad_key.encode())) == code_name(Errc::bad_public_key));
    ConfigChange remove_bad_key = remove;
    remove_bad_key.replica.key = PublicKey{};
    CHECK(decode_config_change(remove_bad_key.encode()).ok());
}

TEST_CASE("replica info: round trip") {
    ReplicaInfo r{42, replica_key().public_key(), "127.0.0.1:9000"};
    Writer w;
    encode_replica(w, r);
    Reader rd(w.data());
    CHECK(decode_replica(rd) == r);
    CHECK(rd.finish().ok());
}
