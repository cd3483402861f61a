// The view-change decision procedure (pbft/view_change.hpp), on hand-built view changes.
#include <popchain/pbft/config.hpp>
#include <popchain/pbft/view_change.hpp>

#include "test_support.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace popchain;
using namespace popchain::pbft;
using popchain::test::key_from_byte;

namespace {

Hash256 h(const std::string& s) {
    return sha256(std::string_view(s));
}

const Hash256 genesis = h("genesis");

struct Members {
    std::vector<SigningKey> keys;
    std::vector<ReplicaInfo> info;
    explicit Members(std::uint32_t n) {
        for (std::uint32_t i = 0; i < n; ++i) {
            keys.push_back(key_from_byte(static_cast<std::uint8_t>(0x30 + i)));
            info.push_back({i, keys[i].public_key(), ""});
        }
    }
    ViewChange vc(ReplicaId r, std::uint64_t view, std::vector<LogEntry> p,
                  std::vector<LogEntry> q) const {
        ViewChange v;
        v.replica = r;
        v.new_view = view;
        v.prepared = std::move(p);
        v.pre_prepared = std::move(q);
        return sign_view_change(v, keys[r]);
    }
};

// Blocks a1 <- a2 (one chain) and b1 (a rival at height 1).
const LogEntry a1_v0{1, h("a1"), 0, genesis};
const LogEntry a2_v0{2, h("a2"), 0, h("a1")};
const LogEntry b1_v1{1, h("b1"), 1, genesis};

} // namespace

TEST_CASE("view change: a block prepared by a quorum is re-proposed, with its parent chain") {
    Members m(4);
    // Replicas 0..2 prepared a1 and a2 in view 0; replica 3 saw nothing.
    std::vector<ViewChange> set = {m.vc(1, 1, {a1_v0, a2_v0}, {a1_v0, a2_v0}),
                                   m.vc(2, 1, {a1_v0, a2_v0}, {a1_v0, a2_v0}), m.vc(3, 1, {}, {})};
    auto d = decide_view(set, 4, genesis);
    REQUIRE(d);
    CHECK(d->checkpoint_seq == 0);
    CHECK(d->blocks == std::vector<LogEntry>{a1_v0, a2_v0});
}

TEST_CASE("view change: fewer than a quorum of view changes decide nothing") {
    Members m(4);
    CHECK_FALSE(decide_view({m.vc(1, 1, {}, {}), m.vc(2, 1, {}, {})}, 4, genesis));
}

TEST_CASE("view change: nothing prepared anywhere gives an empty decision") {
    Members m(4);
    auto d =
        decide_view({m.vc(1, 1, {}, {a1_v0}), m.vc(2, 1, {}, {}), m.vc(3, 1, {}, {})}, 4, genesis);
    REQUIRE(d);
    CHECK(d->blocks.empty());
}

TEST_CASE("view change: one prepared report without f+1 pre-prepare reports waits") {
    Members m(4);
    // Replica 1 prepared a1 but nobody else reports having pre-prepared it, and only two
    // messages lack a P entry: a1 may have committed (via replica 0, not heard from), so the
    // primary must wait for more view changes rather than drop or trust it.
    auto d = decide_view({m.vc(1, 1, {a1_v0}, {a1_v0}), m.vc(2, 1, {}, {}), m.vc(3, 1, {}, {})}, 4,
                         genesis);
    CHECK_FALSE(d);
    // Replica 0's report settles it.
    d = decide_view({m.vc(0, 1, {}, {a1_v0}), m.vc(1, 1, {a1_v0}, {a1_v0}), m.vc(2, 1, {}, {}),
                     m.vc(3, 1, {}, {})},
                    4, genesis);
    REQUIRE(d);
    CHECK(d->blocks == std::vector<LogEntry>{a1_v0});
}

TEST_CASE("view change: the block prepared in the highest view wins") {
    Members m(4);
    // a1 prepared in view 0 at replica 1; b1 prepared in view 1 at replicas 2 and 3.
    std::vector<ViewChange> set = {m.vc(1, 2, {a1_v0}, {a1_v0}),
                                   m.vc(2, 2, {b1_v1}, {a1_v0, b1_v1}),
                                   m.vc(3, 2, {b1_v1}, {b1_v1})};
    auto d = decide_view(set, 4, genesis);
    REQUIRE(d);
    CHECK(d->blocks == std::vector<LogEntry>{b1_v1});
}

TEST_CASE("view change: the list ends at a block that does not extend the one below") {
    Members m(4);
    // b1 won height 1 in view 1, but a2 (built on a1) is still reported prepared at height 2.
    const LogEntry a2_v0_only{2, h("a2"), 0, h("a1")};
    std::vector<ViewChange> set = {m.vc(1, 2, {b1_v1, a2_v0_only}, {b1_v1, a2_v0_only}),
                                   m.vc(2, 2, {b1_v1, a2_v0_only}, {b1_v1, a2_v0_only}),
                                   m.vc(3, 2, {b1_v1}, {b1_v1})};
    auto d = decide_view(set, 4, genesis);
    REQUIRE(d);
    CHECK(d->blocks == std::vector<LogEntry>{b1_v1});
}

TEST_CASE("view change: a lying replica cannot change a block's parent") {
    Members m(4);
    LogEntry forged = a2_v0;
    forged.parent = h("elsewhere");
    // Replica 3 (faulty) reports a2 with another parent; f+1 = 2 honest reports win.
    std::vector<ViewChange> set = {m.vc(1, 1, {a1_v0, a2_v0}, {a1_v0, a2_v0}),
                                   m.vc(2, 1, {a1_v0, a2_v0}, {a1_v0, a2_v0}),
                                   m.vc(3, 1, {a1_v0, forged}, {a1_v0, forged})};
    auto d = decide_view(set, 4, genesis);
    REQUIRE(d);
    CHECK(d->blocks == std::vector<LogEntry>{a1_v0, a2_v0});
}

TEST_CASE("view change: check_view_change and check_new_view refuse what does not add up") {
    Members m(4);
    std::vector<ViewChange> set = {m.vc(1, 1, {a1_v0}, {a1_v0}), m.vc(2, 1, {a1_v0}, {a1_v0}),
                                   m.vc(3, 1, {}, {})};
    for (const auto& vc : set)
        CHECK(check_view_change(vc, m.info).ok());

    ViewChange tampered = set[0];
    tampered.prepared.clear();
    CHECK(check_view_change(tampered, m.info).code() == Errc::bad_signature);
    ViewChange stranger = set[0];
    stranger.replica = 9;
    CHECK(check_view_change(stranger, m.info).code() == Errc::unknown_peer);
    ViewChange future = m.vc(1, 1, {LogEntry{1, h("x"), 1, genesis}}, {});
    CHECK(check_view_change(future, m.info).code() == Errc::invalid_argument);

    auto decision = decide_view(set, 4, genesis);
    REQUIRE(decision);
    NewView nv;
    nv.replica = 1; // primary of view 1
    nv.view = 1;
    nv.proofs = set;
    nv.decisions = decision->blocks;
    NewView good = sign_new_view(nv, m.keys[1]);
    auto ok = check_new_view(good, 1, 1, m.info, genesis);
    REQUIRE(ok.ok());
    CHECK(ok->blocks == decision->blocks);

    CHECK(check_new_view(good, 2, 1, m.info, genesis).code() == Errc::forged_sender);
    NewView dropped = nv; // the primary drops the prepared block
    dropped.decisions.clear();
    CHECK(check_new_view(sign_new_view(dropped, m.keys[1]), 1, 1, m.info, genesis).code() ==
          Errc::invalid_argument);
    NewView thin = nv; // too few proofs
    thin.proofs.pop_back();
    CHECK_FALSE(check_new_view(sign_new_view(thin, m.keys[1]), 1, 1, m.info, genesis).ok());
    NewView repeated = nv;
    repeated.proofs[2] = repeated.proofs[0];
    CHECK_FALSE(check_new_view(sign_new_view(repeated, m.keys[1]), 1, 1, m.info, genesis).ok());
    NewView unsigned_nv = good;
    unsigned_nv.view = 5;
    CHECK(check_new_view(unsigned_nv, 1, 1, m.info, genesis).code() == Errc::bad_signature);
}
