// pBFT message encodings and authenticated replica links.
#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"

using namespace popchain;
using namespace popchain::pbft;
using namespace popchain::test;

namespace {

struct Cluster {
    std::vector<SigningKey> keys;
    std::vector<ReplicaInfo> members;
    explicit Cluster(std::uint32_t n) {
        for (std::uint32_t i = 0; i < n; ++i) {
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x40 + i)));
            members.push_back({i, keys.back().public_key(), ""});
        }
    }
    LinkAuthenticator link(ReplicaId id) const {
        auto l = LinkAuthenticator::create(id, keys[id], members);
        REQUIRE(l.ok());
        return std::move(l).value();
    }
};

Block sample_block() {
    SigningKey k = key_from_byte(0x31);
    Tx tx;
    tx.chain_id = "test";
    tx.to = Address::of(key_from_byte(0x32).public_key());
    tx.amount = 5;
    Block b;
    b.header.height = 3;
    b.txs.push_back(sign_tx(tx, k));
    b.header.tx_root = compute_tx_root(b.txs);
    return b;
}

std::vector<std::pair<MsgType, Message>> one_of_each(const Cluster& c) {
    Checkpoint cp = sign_checkpoint(
        {1, 32, sha256(std::string_view("b")), sha256(std::string_view("s")), {}}, c.keys[1]);
    ViewChange vc;
    vc.replica = 2;
    vc.new_view = 5;
    vc.stable_seq = 32;
    vc.stable_certificate.checkpoints = {cp};
    const Hash256 parent = sha256(std::string_view("parent"));
    vc.prepared = {{33, sha256(std::string_view("p")), 4, parent}};
    vc.pre_prepared = {{33, sha256(std::string_view("p")), 4, parent},
                       {34, sha256(std::string_view("q")), 3, sha256(std::string_view("p"))}};
    vc = sign_view_change(vc, c.keys[2]);
    NewView nv;
    nv.replica = 1;
    nv.view = 5;
    nv.proofs = {vc};
    nv.decisions = {{33, sha256(std::string_view("p")), 4, parent},
                    {34, sha256(std::string_view("q")), 3, sha256(std::string_view("p"))}};
    nv = sign_new_view(nv, c.keys[1]);
    Block b = sample_block();
    return {
        {MsgType::request, Request{b.txs[0]}},
        {MsgType::pre_prepare, PrePrepare{7, 3, b}},
        {MsgType::prepare, Vote{7, 3, b.hash()}},
        {MsgType::commit, Vote{7, 3, b.hash()}},
        {MsgType::checkpoint, cp},
        {MsgType::view_change, vc},
        {MsgType::new_view, nv},
        {MsgType::fetch, Fetch{10, 20}},
        {MsgType::blocks, Blocks{{b}, {{cp}}, 0x0102030405060708, {{cp}}}},
    };
}

} // namespace

TEST_CASE("pbft messages: every type round-trips and rejects truncation and trailing bytes") {
    Cluster c(4);
    for (const auto& [type, msg] : one_of_each(c)) {
        CAPTURE(msg_type_name(type));
        CHECK(type_matches(type, msg));
        Bytes body = encode_body(msg);
        auto back = decode_body(type, body);
        REQUIRE(back.ok());
        CHECK(*back == msg);
        CHECK(encode_body(*back) == body);
        for (std::size_t cut = 0; cut < body.size(); cut += 1 + body.size() / 97)
            CHECK_FALSE(decode_body(type, ByteView(body.data(), cut)).ok());
        Bytes longer = body;
        longer.push_back(0);
        CHECK(code_of(decode_body(type, longer)) == code_name(Errc::trailing_bytes));
    }
    CHECK(code_of(decode_body(static_cast<MsgType>(0), Bytes{})) == code_name(Errc::unknown_kind));
    CHECK(code_of(decode_body(static_cast<MsgType>(200), Bytes{})) ==
          code_name(Errc::unknown_kind));
    CHECK_FALSE(type_matches(MsgType::prepare, Message{Fetch{}}));
}

TEST_CASE("pbft messages: signed statements verify and any change breaks them") {
    Cluster c(4);
    auto all = one_of_each(c);
    const auto& cp = std::get<Checkpoint>(all[4].second);
    const auto& vc = std::get<ViewChange>(all[5].second);
    const auto& nv = std::get<NewView>(all[6].second);
    CHECK(verify(c.keys[1].public_key(), cp.signed_digest(), cp.signature));
    CHECK(verify(c.keys[2].public_key(), vc.signed_digest(), vc.signature));
    CHECK(verify(c.keys[1].public_key(), nv.signed_digest(), nv.signature));
    CHECK_FALSE(verify(c.keys[2].public_key(), cp.signed_digest(), cp.signature)); // wrong signer

    Checkpoint cp2 = cp;
    cp2.seq += 1;
    CHECK_FALSE(verify(c.keys[1].public_key(), cp2.signed_digest(), cp2.signature));
    cp2 = cp;
    cp2.replica = 3; // claiming someone else's statement
    CHECK_FALSE(verify(c.keys[1].public_key(), cp2.signed_digest(), cp2.signature));
    ViewChange vc2 = vc;
    vc2.prepared[0].view += 1;
    CHECK(vc2.signed_digest() != vc.signed_digest());
    NewView nv2 = nv;
    nv2.decisions.pop_back();
    CHECK(nv2.signed_digest() != nv.signed_digest());
    // Domain separation: the three statement kinds never share a digest for the same bytes.
    CHECK(Checkpoint{}.signed_digest() != ViewChange{}.signed_digest());
}

TEST_CASE("pbft link: sealed envelopes open only at the addressee, from the true sender") {
    Cluster c(4);
    LinkAuthenticator a0 = c.link(0), a1 = c.link(1), a2 = c.link(2);
    const Bytes body = encode_body(Vote{1, 2, sha256(std::string_view("block"))});
    Bytes env = a0.seal(1, MsgType::prepare, body);
    REQUIRE_FALSE(env.empty());

    auto opened = a1.open(0, env);
    REQUIRE(opened.ok());
    CHECK(opened->type == MsgType::prepare);
    CHECK(opened->from == 0);
    CHECK(opened->to == 1);
    CHECK(Bytes(opened->body.begin(), opened->body.end()) == body);

    CHECK(code_of(a2.open(0, env)) == code_name(Errc::invalid_argument)); // not addressed to 2
    CHECK(code_of(a1.open(3, env)) == code_name(Errc::forged_sender));    // arrived from 3

    SUBCASE("every single-bit change is caught") {
        for (std::size_t i = 0; i < env.size(); ++i) {
            Bytes bad = env;
            bad[i] ^= 0x01;
            CAPTURE(i);
            CHECK_FALSE(a1.open(0, bad).ok());
        }
    }
    SUBCASE("truncated and extended envelopes") {
        CHECK(code_of(a1.open(0, ByteView(env.data(), env.size() - 1))) ==
              code_name(Errc::truncated));
        Bytes longer = env;
        longer.push_back(0);
        CHECK(code_of(a1.open(0, longer)) == code_name(Errc::trailing_bytes));
    }
    SUBCASE("a replica forging another's id fails the MAC") {
        // Replica 2 writes an envelope claiming to be 0: it lacks k_0,1.
        Bytes forged = a2.seal(1, MsgType::prepare, body);
        forged[2] = 0; // from = 0 (little-endian u32 at offset 2)
        CHECK(code_of(a1.open(0, forged)) == code_name(Errc::bad_mac));
    }
    SUBCASE("an impostor with its own key and a member's id fails the MAC") {
        Cluster other(4);
        other.keys[0] = key_from_byte(0x7f);
        other.members[0].key = other.keys[0].public_key();
        LinkAuthenticator impostor = other.link(0);
        CHECK(code_of(a1.open(0, impostor.seal(1, MsgType::prepare, body))) ==
              code_name(Errc::bad_mac));
    }
    SUBCASE("a non-member is refused, and so is a removed member") {
        Cluster bigger(5);
        LinkAuthenticator outsider = bigger.link(4);
        Bytes from4 = outsider.seal(1, MsgType::prepare, body);
        CHECK(code_of(a1.open(4, from4)) == code_name(Errc::unknown_peer));
        CHECK(a0.seal(9, MsgType::prepare, body).empty()); // sealing to a non-member
        a1.remove_member(0);
        CHECK(code_of(a1.open(0, env)) == code_name(Errc::unknown_peer));
        REQUIRE(a1.add_member(c.keys[1], c.members[0]).ok());
        CHECK(a1.open(0, env).ok());
    }
}

TEST_CASE("pbft link: creation checks the replica set") {
    Cluster c(4);
    CHECK(code_of(LinkAuthenticator::create(7, c.keys[0], c.members)) ==
          code_name(Errc::invalid_argument)); // not a member
    CHECK(code_of(LinkAuthenticator::create(1, c.keys[0], c.members)) ==
          code_name(Errc::invalid_argument)); // key is not replica 1's
    auto bad = c.members;
    bad[3].key.bytes[0] = 0x07;
    CHECK(code_of(LinkAuthenticator::create(0, c.keys[0], bad)) == code_name(Errc::bad_public_key));
}

TEST_CASE(
    "pbft bundle: several messages for one peer round-trip in order; bad bundles are refused") {
    const Bytes vote = encode_body(Vote{3, 7, sha256("block")});
    const Bytes fetch = encode_body(Fetch{1, 9});
    const Bytes bundle =
        encode_bundle({{MsgType::prepare, vote}, {MsgType::fetch, fetch}, {MsgType::commit, vote}});
    auto decoded = decode_bundle(bundle);
    REQUIRE(decoded.ok());
    REQUIRE(decoded->size() == 3);
    CHECK((*decoded)[0].type == MsgType::prepare);
    CHECK((*decoded)[1].type == MsgType::fetch);
    CHECK((*decoded)[2].type == MsgType::commit);
    CHECK(Bytes((*decoded)[1].body.begin(), (*decoded)[1].body.end()) == fetch);
    CHECK(decode_body(MsgType::commit, (*decoded)[2].body).value() ==
          Message{Vote{3, 7, sha256("block")}});

    CHECK(code_of(decode_bundle(ByteView(bundle.data(), bundle.size() - 1))) ==
          code_name(Errc::truncated));
    Bytes longer = bundle;
    longer.push_back(0);
    CHECK(code_of(decode_bundle(longer)) == code_name(Errc::trailing_bytes));
    CHECK(code_of(decode_bundle(encode_bundle({{MsgType::prepare, vote}}))) ==
          code_name(Errc::malformed)); // one message goes in a plain envelope
    const Bytes inner = encode_bundle({{MsgType::prepare, vote}, {MsgType::commit, vote}});
    CHECK(code_of(
              decode_bundle(encode_bundle({{MsgType::prepare, vote}, {MsgType::bundle, inner}}))) ==
          code_name(Errc::malformed)); // no bundle in a bundle
    Bytes huge_count = bundle;
    huge_count[3] = 0x7f; // u32 count, little-endian: now above max_bundle_messages
    CHECK(code_of(decode_bundle(huge_count)) == code_name(Errc::too_large));
    // A bundle is not a message body of its own.
    CHECK_FALSE(decode_body(MsgType::bundle, bundle).ok());

    // Sealed in place, it is the same envelope as the encoded bundle sealed.
    Cluster c(4);
    LinkAuthenticator a0 = c.link(0), a1 = c.link(1);
    const std::vector<BundledMessage> three = {
        {MsgType::prepare, vote}, {MsgType::fetch, fetch}, {MsgType::commit, vote}};
    const Bytes env = a0.seal_bundle(1, three);
    CHECK(env == a0.seal(1, MsgType::bundle, bundle));
    auto opened = a1.open(0, env);
    REQUIRE(opened.ok());
    CHECK(opened->type == MsgType::bundle);
    CHECK(decode_bundle(opened->body).value().size() == 3);
    CHECK(a0.seal_bundle(9, three).empty()); // not a member
}
