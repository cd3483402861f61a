#include <popchain/pbft/config.hpp>

#include <doctest/doctest.h>

using namespace popchain;
using namespace popchain::pbft;

TEST_CASE("pbft config: defaults are valid for every cluster size we support") {
    for (std::uint32_t n : {1u, 4u, 7u, 10u, 64u, 1024u})
        CHECK(ReplicaConfig{}.validate(n).ok());
}

TEST_CASE("pbft config: quorum arithmetic") {
    for (std::uint32_t n = 1; n <= 200; ++n) {
        const std::uint32_t f = max_faulty(n);
        CAPTURE(n);
        CHECK(n >= 3 * f + 1);
        CHECK(n < 3 * (f + 1) + 1); // f is the largest that fits
        // Two quorums intersect in at least f+1 replicas, so in at least one honest one.
        CHECK(2 * quorum(n) >= n + f + 1);
        // ... and the n - f replicas that are not faulty can always form one (liveness).
        CHECK(quorum(n) <= n - f);
    }
}

TEST_CASE("pbft config: each bound is enforced and named in the error") {
    auto rejected = [](ReplicaConfig c, const char* field) {
        auto r = c.validate(4);
        REQUIRE_FALSE(r.ok());
        CHECK(r.code() == Errc::invalid_argument);
        CHECK(r.error().message().find(field) != std::string::npos);
    };
    ReplicaConfig c;
    rejected(
        [&] {
            auto x = c;
            x.max_block_txs = 0;
            return x;
        }(),
        "max_block_txs");
    rejected(
        [&] {
            auto x = c;
            x.max_block_txs = (1u << 16) + 1;
            return x;
        }(),
        "max_block_txs");
    rejected(
        [&] {
            auto x = c;
            x.max_batch_delay_ms = 10'001;
            return x;
        }(),
        "max_batch_delay_ms");
    rejected(
        [&] {
            auto x = c;
            x.request_timeout_ms = 500;
            x.max_batch_delay_ms = 500;
            return x;
        }(),
        "must be below request_timeout_ms");
    ReplicaConfig waits_less = c;
    waits_less.request_timeout_ms = 500;
    waits_less.max_batch_delay_ms = 499;
    CHECK(waits_less.validate(4).ok());
    rejected(
        [&] {
            auto x = c;
            x.checkpoint_interval = 0;
            return x;
        }(),
        "checkpoint_interval");
    rejected(
        [&] {
            auto x = c;
            x.watermark_window = 2 * x.checkpoint_interval - 1;
            return x;
        }(),
        "watermark_window");
    rejected(
        [&] {
            auto x = c;
            x.request_timeout_ms = 9;
            return x;
        }(),
        "request_timeout_ms");
    rejected(
        [&] {
            auto x = c;
            x.max_view_change_timeout_ms = x.request_timeout_ms - 1;
            return x;
        }(),
        "max_view_change_timeout_ms");
    rejected(
        [&] {
            auto x = c;
            x.fetch_timeout_ms = 0;
            return x;
        }(),
        "fetch_timeout_ms");
    CHECK_FALSE(c.validate(0).ok());
    CHECK_FALSE(c.validate(1025).ok());
    ReplicaConfig edge = c;
    edge.watermark_window = 2 * edge.checkpoint_interval;
    CHECK(edge.validate(4).ok());
}
