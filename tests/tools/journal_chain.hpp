// The batches the journal crash test writes, shared by the writer (tests/tools/
// journal_writer.cpp) and the test that checks its journal (tests/unit/pbft_journal_test.cpp).
//
// Batch k (k = 1, 2, ...) depends on k alone, so the state after k batches is reproducible:
// write batches 1..k to a MemoryJournal, syncing after each, and load() it. Every batch
// changes several tables at once (a view flag, a new pre-prepare with its block, Q, P, votes,
// now and then a checkpoint, a re-proposal after a view change, a new stable checkpoint), so
// half a batch is never equal to a whole number of batches.
#pragma once

#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/pbft/journal.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

namespace popchain::journal_chain {

inline constexpr std::uint64_t view_every = 5;   // a view change every 5 batches
inline constexpr std::uint64_t stable_every = 8; // set_stable every 8 batches ...
inline constexpr std::uint64_t stable_lag = 8;   // ... to the seq 8 below the newest

// The view batch k writes in; batch k is in a view change towards it when it is the last
// batch of its view.
inline std::uint64_t view_of(std::uint64_t k) {
    return (k + 1) / view_every;
}
inline bool in_view_change(std::uint64_t k) {
    return k % view_every == view_every - 1;
}
// The stable seq after batch k (closed form, for the writer's start-up check).
inline std::uint64_t stable_after(std::uint64_t k) {
    const std::uint64_t last = k / stable_every * stable_every;
    return last > stable_lag ? last - stable_lag : 0;
}

inline Hash256 tagged(std::string_view tag, std::uint64_t a, std::uint64_t b = 0) {
    return Sha256()
        .update(as_bytes(tag))
        .update(to_bytes(std::to_string(a) + "/" + std::to_string(b)))
        .finish();
}

// A block for (seq, view) with a few transactions. Their signatures are filler: the journal
// stores blocks without checking them.
inline Block block(std::uint64_t seq, std::uint64_t view) {
    Block b;
    for (std::uint64_t i = 0; i <= seq % 3; ++i) {
        Tx tx;
        tx.kind = TxKind::transfer;
        tx.chain_id = "journal-crash-test";
        tx.from = Address::from(tagged("from", seq, i).view().first(20));
        tx.to = Address::from(tagged("to", seq, i).view().first(20));
        tx.amount = seq * 10 + i + 1;
        tx.nonce = seq;
        const Hash256 fill = tagged("signature", seq, i);
        std::copy(fill.bytes.begin(), fill.bytes.end(), tx.public_key.bytes.begin());
        std::copy(fill.bytes.begin(), fill.bytes.end(), tx.signature.bytes.begin());
        std::copy(fill.bytes.begin(), fill.bytes.end(), tx.signature.bytes.begin() + 32);
        b.txs.push_back(std::move(tx));
    }
    b.header.height = seq;
    b.header.prev_hash = tagged("prev", seq);
    b.header.tx_root = compute_tx_root(b.txs);
    b.header.state_root = tagged("state", seq, view);
    b.header.view = view;
    b.header.proposer = static_cast<std::uint32_t>(view % 4);
    b.header.timestamp_ms = 1'700'000'000'000ull + seq;
    return b;
}

// The P / Q entry for `b` in `view`.
inline pbft::LogEntry entry(const Block& b, std::uint64_t view) {
    pbft::LogEntry e;
    e.seq = b.header.height;
    e.digest = b.hash();
    e.view = view;
    e.parent = b.header.prev_hash;
    return e;
}

// A P entry no replica would write (the block does not exist), in `view`.
inline pbft::LogEntry stale_entry(std::uint64_t seq, std::uint64_t view) {
    pbft::LogEntry e;
    e.seq = seq;
    e.digest = tagged("stale", seq);
    e.view = view;
    return e;
}

inline pbft::Checkpoint checkpoint(std::uint32_t replica, std::uint64_t seq) {
    pbft::Checkpoint c;
    c.replica = replica;
    c.seq = seq;
    c.block_hash = block(seq, view_of(seq)).hash();
    c.state_root = tagged("state", seq, view_of(seq));
    const Hash256 fill = tagged("checkpoint signature", seq, replica);
    std::copy(fill.bytes.begin(), fill.bytes.end(), c.signature.bytes.begin());
    return c;
}

inline pbft::CheckpointCertificate certificate(std::uint64_t seq) {
    pbft::CheckpointCertificate cert;
    for (std::uint32_t r = 0; r < 3; ++r)
        cert.checkpoints.push_back(checkpoint(r, seq));
    return cert;
}

// Writes batch k (k >= 1) to `journal`, without syncing.
inline void write_batch(pbft::Journal& journal, std::uint64_t k) {
    const std::uint64_t v = view_of(k);
    journal.set_view(v, in_view_change(k));

    // Slot k, proposed in view v.
    const Block b = block(k, v);
    const Hash256 d = b.hash();
    journal.put_pre_prepare({v, k, b});
    journal.put_pre_prepared(entry(b, v));
    journal.put_vote(pbft::MsgType::prepare, {v, k, d});

    if (k >= 2) {
        // Slot k-1 prepared and committed in the view it was proposed in.
        const std::uint64_t pv = view_of(k - 1);
        const Block prev = block(k - 1, pv);
        const Hash256 pd = prev.hash();
        journal.put_prepared(entry(prev, pv));
        journal.put_vote(pbft::MsgType::commit, {pv, k - 1, pd});
        if (pv != v) {
            // The first batch of a new view re-proposes slot k-1: a second pre-prepare for it,
            // a new Q digest, the old digest's Q view raised, and P moving to the new view.
            const Block again = block(k - 1, v);
            journal.put_pre_prepare({v, k - 1, again});
            journal.put_pre_prepared(entry(again, v));
            journal.put_pre_prepared(entry(prev, v));
            journal.put_prepared(entry(again, v));
        }
    }
    if (k >= 3) {
        // An older view never replaces P or a vote: slot k-2 stays as it is.
        const std::uint64_t old = view_of(k - 2);
        if (old > 0) {
            journal.put_prepared(stale_entry(k - 2, old - 1));
            journal.put_vote(pbft::MsgType::commit, {old - 1, k - 2, tagged("stale", k - 2)});
        }
    }
    if (k % 3 == 0) journal.put_checkpoint(checkpoint(1, k));
    if (k % stable_every == 0 && stable_after(k) > 0)
        journal.set_stable(stable_after(k), certificate(stable_after(k)));
}

} // namespace popchain::journal_chain
