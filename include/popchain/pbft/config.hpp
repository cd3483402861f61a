// Replica configuration: every tunable of the pBFT replica, with its bounds.
#pragma once

#include <popchain/net/transport.hpp>
#include <popchain/result.hpp>

#include <cstdint>
#include <string>

namespace popchain::pbft {

using net::Millis;

// The largest f for n replicas: n >= 3f + 1.
constexpr std::uint32_t max_faulty(std::uint32_t n) {
    return n == 0 ? 0 : (n - 1) / 3;
}
// Matching votes that make a quorum: ceil((n + f + 1) / 2), which is 2f + 1 when n = 3f + 1.
// Any two quorums then share at least f + 1 replicas, one of them honest. Plain 2f + 1 is
// not enough when n is not of the form 3f + 1 (n = 5: two sets of 3 may share only one,
// possibly faulty, replica), and membership changes produce such n.
constexpr std::uint32_t quorum(std::uint32_t n) {
    return (n + max_faulty(n) + 2) / 2;
}
static_assert(max_faulty(4) == 1 && quorum(4) == 3);
static_assert(max_faulty(7) == 2 && quorum(7) == 5);
static_assert(max_faulty(64) == 21 && quorum(64) == 43);
static_assert(max_faulty(5) == 1 && quorum(5) == 4);

struct ReplicaConfig {
    // Batching: the primary closes a block when it holds `max_block_txs` transactions or
    // when the oldest pending one has waited `max_batch_delay_ms`, whichever comes first, so
    // a partial block is never held back indefinitely. A partial batch also goes at once
    // when the primary's last block in flight executes: nothing else is then in the pipeline.
    // Keep the delay well below `request_timeout_ms`, or backups suspect a waiting primary.
    std::uint32_t max_block_txs = 1000; // 1 .. max_block_txs (block.hpp)
    Millis max_batch_delay_ms = 2;      // 0 .. 10,000

    // Checkpoints: a checkpoint is taken every `checkpoint_interval` blocks (and at blocks
    // the primary marks when its queue runs dry); 2f+1 signed checkpoint messages make it
    // stable, and the log below it is discarded.
    std::uint32_t checkpoint_interval = 32; // 1 .. 10,000

    // Pipelining: sequence numbers in flight lie within (stable checkpoint, stable
    // checkpoint + watermark_window]. At least two checkpoint intervals, so proposing goes
    // on while the next checkpoint collects its signatures.
    std::uint32_t watermark_window = 128; // 2 * checkpoint_interval .. 100,000

    // View change: a backup that has a request pending for `request_timeout_ms` without
    // seeing it execute suspects the primary. Each further view change without progress
    // doubles the timeout, up to `max_view_change_timeout_ms`.
    Millis request_timeout_ms = 1000;          // 10 .. 600,000
    Millis max_view_change_timeout_ms = 60000; // request_timeout_ms .. 3,600,000

    // Retransmission: a replica that made no progress for this long re-sends the messages
    // its stuck slots still need (to the peers that have not answered), its view change,
    // and its latest checkpoint, so lost messages cost one interval, not a view change;
    // while it stays stuck it repeats them with backoff (after 2, 4 and 8 intervals, then
    // every 8). It is also the idle interval after which a replica checkpoints its tip.
    Millis retransmit_ms = 100; // 1 .. request_timeout_ms

    // State transfer: how long to wait for a peer's answer before asking another one.
    Millis fetch_timeout_ms = 500; // 10 .. 600,000

    // Bundling: the messages a replica has for one peer after handling one input (or one
    // burst of inputs, net::Receiver) travel in one envelope under one MAC. Off, every
    // message has an envelope of its own (for tools and tests that look at traffic message
    // by message); peers accept both either way.
    bool bundle_messages = true;

    // Every bound above, checked for a cluster of `replicas` members. The message names the
    // field and its allowed range.
    Result<void> validate(std::uint32_t replicas) const;
};

} // namespace popchain::pbft
