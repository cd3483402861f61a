// Merkle roots and inclusion proofs.
#include <popchain/hex.hpp>
#include <popchain/merkle.hpp>

#include <doctest/doctest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

using namespace popchain;

namespace {

// Reference construction written from the documented rules: leaf = H(0x00 || id),
// node = H(0x01 || left || right), an odd node at the end of a level moves up unchanged,
// root = H(0x02 || u32le(leaf count) || top node).
Hash256 ref_leaf(const Hash256& id) {
    Bytes b{0x00};
    b.insert(b.end(), id.bytes.begin(), id.bytes.end());
    return sha256(b);
}
Hash256 ref_node(const Hash256& l, const Hash256& r) {
    Bytes b{0x01};
    b.insert(b.end(), l.bytes.begin(), l.bytes.end());
    b.insert(b.end(), r.bytes.begin(), r.bytes.end());
    return sha256(b);
}
Hash256 ref_level_root(const std::vector<Hash256>& level) {
    if (level.size() == 1) return level[0];
    std::vector<Hash256> up;
    for (std::size_t i = 0; i + 1 < level.size(); i += 2)
        up.push_back(ref_node(level[i], level[i + 1]));
    if (level.size() % 2 == 1) up.push_back(level.back());
    return ref_level_root(up);
}
Hash256 ref_seal(const Hash256& top, std::uint32_t n) {
    Bytes b{0x02, static_cast<std::uint8_t>(n), static_cast<std::uint8_t>(n >> 8),
            static_cast<std::uint8_t>(n >> 16), static_cast<std::uint8_t>(n >> 24)};
    b.insert(b.end(), top.bytes.begin(), top.bytes.end());
    return sha256(b);
}
Hash256 ref_root(const std::vector<Hash256>& ids) {
    if (ids.empty()) return Hash256{};
    std::vector<Hash256> level;
    for (const auto& id : ids)
        level.push_back(ref_leaf(id));
    return ref_seal(ref_level_root(level), static_cast<std::uint32_t>(ids.size()));
}

std::vector<Hash256> make_ids(std::size_t n, const std::string& salt = "leaf") {
    std::vector<Hash256> ids;
    for (std::size_t i = 0; i < n; ++i)
        ids.push_back(sha256(salt + std::to_string(i)));
    return ids;
}

Hash256 tweak(Hash256 h, std::size_t byte = 0) {
    h.bytes[byte % h.bytes.size()] ^= 0x01;
    return h;
}

} // namespace

TEST_CASE("merkle: root of no leaves is zero; small trees match hand-built shapes") {
    CHECK(merkle_root({}).is_zero());
    auto id = make_ids(7);
    std::vector<Hash256> L;
    for (const auto& i : id)
        L.push_back(ref_leaf(i));
    auto root = [&](std::size_t n) { return merkle_root(std::span<const Hash256>(id.data(), n)); };
    CHECK(root(1) == ref_seal(L[0], 1));
    CHECK(root(2) == ref_seal(ref_node(L[0], L[1]), 2));
    CHECK(root(3) == ref_seal(ref_node(ref_node(L[0], L[1]), L[2]), 3));
    CHECK(root(4) == ref_seal(ref_node(ref_node(L[0], L[1]), ref_node(L[2], L[3])), 4));
    CHECK(root(5) ==
          ref_seal(ref_node(ref_node(ref_node(L[0], L[1]), ref_node(L[2], L[3])), L[4]), 5));
    CHECK(root(6) == ref_seal(ref_node(ref_node(ref_node(L[0], L[1]), ref_node(L[2], L[3])),
                                       ref_node(L[4], L[5])),
                              6));
    CHECK(root(7) == ref_seal(ref_node(ref_node(ref_node(L[0], L[1]), ref_node(L[2], L[3])),
                                       ref_node(ref_node(L[4], L[5]), L[6])),
                              7));
    // The root of one leaf is derived from its leaf hash, never the id itself.
    CHECK(root(1) != id[0]);
}

TEST_CASE("merkle: roots match vectors computed outside the library") {
    // Computed with Python's hashlib from the rules in merkle.hpp, so an encoding slip that
    // the reference above shares with the library (the count's byte order, a domain byte)
    // still shows: ids are SHA-256("tx 0"), SHA-256("tx 1"), SHA-256("tx 2").
    std::vector<Hash256> ids;
    for (int i = 0; i < 3; ++i)
        ids.push_back(sha256("tx " + std::to_string(i)));
    CHECK(to_hex(merkle_root(std::span<const Hash256>(ids.data(), 1)).view()) ==
          "96a9abcab78f4615e287f76e004f92ceec198d7a2b22bd9a9b8bcbff981368df");
    CHECK(to_hex(merkle_root(ids).view()) ==
          "1ce09ce09fa319a38a9ac62a4285fc75960cf4e147792a203a03292c311371b8");
}

TEST_CASE("merkle: roots for 0..33 leaves match the reference and are all distinct") {
    auto ids = make_ids(33);
    std::set<Hash256> roots;
    for (std::size_t n = 0; n <= 33; ++n) {
        CAPTURE(n);
        std::vector<Hash256> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n));
        Hash256 r = merkle_root(prefix);
        CHECK(r == ref_root(prefix));
        CHECK(roots.insert(r).second);
        // Deterministic.
        CHECK(merkle_root(prefix) == r);
    }
}

TEST_CASE("merkle: root depends on every leaf and on order") {
    for (std::size_t n : {2u, 3u, 5u, 8u, 13u}) {
        CAPTURE(n);
        auto ids = make_ids(n);
        const Hash256 r = merkle_root(ids);
        for (std::size_t i = 0; i < n; ++i) {
            auto changed = ids;
            changed[i] = tweak(changed[i], i);
            CHECK(merkle_root(changed) != r);
        }
        auto swapped = ids;
        std::swap(swapped[0], swapped[n - 1]);
        CHECK(merkle_root(swapped) != r);
    }
}

TEST_CASE("merkle: duplicating the odd last leaf changes the root") {
    auto abc = make_ids(3, "abc");
    auto abcc = abc;
    abcc.push_back(abc[2]);
    CHECK(merkle_root(abc) != merkle_root(abcc));
    for (std::size_t n = 1; n <= 33; n += 2) {
        CAPTURE(n);
        auto ids = make_ids(n);
        auto dup = ids;
        dup.push_back(ids.back());
        CHECK(merkle_root(ids) != merkle_root(dup));
    }
    // Lists of different lengths sharing a prefix never collide (promotion, not copying).
    auto six = make_ids(6);
    auto five = std::vector<Hash256>(six.begin(), six.begin() + 5);
    CHECK(merkle_root(five) != merkle_root(six));
}

TEST_CASE("merkle: every proof of every leaf verifies, for 1..33 leaves") {
    for (std::size_t n = 1; n <= 33; ++n) {
        auto ids = make_ids(n);
        const Hash256 root = merkle_root(ids);
        for (std::size_t i = 0; i < n; ++i) {
            CAPTURE(n);
            CAPTURE(i);
            MerkleProof p = merkle_prove(ids, i);
            CHECK(p.index == i);
            CHECK(p.leaf_count == n);
            CHECK(p.siblings.size() <= 6);
            CHECK(merkle_verify(root, ids[i], p));
            CHECK(merkle_prove(ids, i) == p);
        }
    }
}

TEST_CASE("merkle: a proof fails for a wrong leaf, index, root, or a tampered sibling list") {
    for (std::size_t n = 1; n <= 33; ++n) {
        auto ids = make_ids(n);
        const Hash256 root = merkle_root(ids);
        for (std::size_t i = 0; i < n; ++i) {
            CAPTURE(n);
            CAPTURE(i);
            const MerkleProof p = merkle_prove(ids, i);
            // Wrong leaf: every other leaf of the tree and a tweaked copy of the right one.
            for (std::size_t j = 0; j < n; ++j)
                if (j != i) CHECK_FALSE(merkle_verify(root, ids[j], p));
            CHECK_FALSE(merkle_verify(root, tweak(ids[i]), p));
            // Wrong root.
            CHECK_FALSE(merkle_verify(tweak(root, 5), ids[i], p));
            CHECK_FALSE(merkle_verify(Hash256{}, ids[i], p));
            // Wrong index, with the true leaf count.
            for (std::uint32_t j = 0; j < n + 3; ++j) {
                if (j == i) continue;
                MerkleProof q = p;
                q.index = j;
                CHECK_FALSE(merkle_verify(root, ids[i], q));
            }
            // Tampered sibling.
            for (std::size_t s = 0; s < p.siblings.size(); ++s) {
                MerkleProof q = p;
                q.siblings[s] = tweak(q.siblings[s], s + 7);
                CHECK_FALSE(merkle_verify(root, ids[i], q));
            }
            // Extra sibling, at the end or at the front.
            {
                MerkleProof q = p;
                q.siblings.push_back(root);
                CHECK_FALSE(merkle_verify(root, ids[i], q));
                MerkleProof f = p;
                f.siblings.insert(f.siblings.begin(), ids[i]);
                CHECK_FALSE(merkle_verify(root, ids[i], f));
            }
            // Missing sibling, at the end or at the front.
            if (!p.siblings.empty()) {
                MerkleProof q = p;
                q.siblings.pop_back();
                CHECK_FALSE(merkle_verify(root, ids[i], q));
                MerkleProof f = p;
                f.siblings.erase(f.siblings.begin());
                CHECK_FALSE(merkle_verify(root, ids[i], f));
            }
            // Zero leaf count.
            MerkleProof z = p;
            z.leaf_count = 0;
            CHECK_FALSE(merkle_verify(root, ids[i], z));
        }
    }
}

TEST_CASE("merkle: an inner node cannot be passed off as a leaf") {
    auto ids = make_ids(4);
    const Hash256 root = merkle_root(ids);
    const Hash256 left = ref_node(ref_leaf(ids[0]), ref_leaf(ids[1]));
    const Hash256 right = ref_node(ref_leaf(ids[2]), ref_leaf(ids[3]));
    REQUIRE(ref_seal(ref_node(left, right), 4) == root);
    MerkleProof p;
    p.index = 0;
    p.leaf_count = 2;
    p.siblings = {right};
    CHECK_FALSE(merkle_verify(root, left, p));
}

// A proof states "leaf sits at `index` of a tree of `leaf_count` leaves". The root fixes the
// leaf count (it is sealed into the root), so a proof relabelled with another index or leaf
// count must not verify, even where the left/right pattern of siblings is the same.
TEST_CASE("merkle: a proof relabelled with another index and leaf count must not verify") {
    auto abc = make_ids(3, "abc");
    const Hash256 root = merkle_root(abc);
    MerkleProof p = merkle_prove(abc, 2); // c is the third of three leaves
    REQUIRE(merkle_verify(root, abc[2], p));
    MerkleProof relabelled = p;
    relabelled.index = 1; // "c is the second of two leaves"
    relabelled.leaf_count = 2;
    CHECK_FALSE(merkle_verify(root, abc[2], relabelled));

    MerkleProof first = merkle_prove(abc, 0);
    first.leaf_count = 4; // "a is the first of four leaves"
    CHECK_FALSE(merkle_verify(root, abc[0], first));
}

TEST_CASE("merkle: a proof fails under any other leaf count (exhaustive, 1..33)") {
    int accepted = 0;
    std::ostringstream examples;
    for (std::size_t n = 1; n <= 33; ++n) {
        auto ids = make_ids(n);
        const Hash256 root = merkle_root(ids);
        for (std::size_t i = 0; i < n; ++i) {
            const MerkleProof p = merkle_prove(ids, i);
            for (std::uint32_t m = 1; m <= 40; ++m) {
                if (m == n) continue;
                // Same index; and the index the leaf would have if counted from the right.
                for (std::uint32_t idx : {static_cast<std::uint32_t>(i), m - 1}) {
                    MerkleProof q = p;
                    q.leaf_count = m;
                    q.index = idx;
                    if (merkle_verify(root, ids[i], q)) {
                        if (accepted < 5)
                            examples << " [leaf " << i << " of " << n << " accepted as " << idx
                                     << " of " << m << "]";
                        ++accepted;
                    }
                }
            }
        }
    }
    INFO("relabelled proofs accepted:" << examples.str());
    CHECK(accepted == 0);
}
