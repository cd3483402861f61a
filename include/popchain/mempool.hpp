// The mempool: signed transactions waiting for a block.
//
// What it checks: everything that needs no ledger state (check_tx_stateless, so the
// signature is verified exactly once on entry, through the SignatureCache when one is
// given, which the ledger then reuses when the block arrives), that the nonce is not
// already used, and its limits. What it does not check: balances, escrows, authority. A
// pending transaction may still fail in the block builder; remove() drops such a one.
//
// Transactions are kept per sender, ordered by nonce. A sender's transaction is ready when
// every nonce from the sender's next nonce up to it is pending too: a gap holds the later
// ones back until it is filled.
//
// Outputs never depend on hash-table order: senders are kept in an ordered map and every
// transaction carries its arrival number, so two replicas that received the same
// transactions in the same order propose the same blocks.
//
// Not thread-safe: a mempool is owned by the replica thread, which is also the thread that
// commits blocks, so adds and removals are naturally serialised. Share it only behind a
// lock.
#pragma once

#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/result.hpp>
#include <popchain/transaction.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace popchain {

struct MempoolLimits {
    // Pending transactions in total: a few full blocks' worth at typical block sizes.
    std::size_t max_txs = 20'000;
    // Sum of encoded sizes. A transaction is ~230 bytes plus its payload (up to 4096), so
    // this, not max_txs, is what binds when payloads are large.
    std::size_t max_bytes = 16 * 1024 * 1024;
    // Pending transactions per sender, so one account cannot fill the pool. It is also the
    // nonce window: a nonce at or beyond sender_next_nonce + max_per_sender is refused,
    // since it could not become ready before the sender's slots run out.
    std::size_t max_per_sender = 64;
};

class Mempool {
public:
    // The sender's next nonce per the ledger (Ledger::account(a).nonce).
    using NextNonceFn = std::function<std::uint64_t(const Address&)>;

    explicit Mempool(std::string chain_id, SignatureCache* cache = nullptr,
                     MempoolLimits limits = {}, CommandRules commands = {});

    // Admits `tx`; `sender_next_nonce` is the ledger's next nonce for tx.from. Errors, in
    // the order they are checked:
    //   already_known   a transaction with this txid is pending
    //   (any error of check_tx_stateless: malformed, wrong_chain_id, bad_signature, ...)
    //   nonce_reused    nonce < sender_next_nonce, or the sender already has a different
    //                   pending transaction with this nonce (no replace-by-nonce: whichever
    //                   arrived first stays, so replicas cannot be played off each other)
    //   mempool_full    the sender has max_per_sender pending transactions
    //   nonce_gap       nonce >= sender_next_nonce + max_per_sender
    //   mempool_full    max_txs or max_bytes is reached
    // The message of mempool_full names the limit.
    // A rejected transaction leaves the mempool unchanged.
    Result<void> add(const Tx& tx, std::uint64_t sender_next_nonce);
    // The same, for a caller that already computed `txid` (== tx.id()).
    Result<void> add(const Tx& tx, const Hash256& txid, std::uint64_t sender_next_nonce);

    // Up to `max_txs` transactions that can execute in this order on top of the ledger
    // whose next nonces `next_nonce` reports: per sender, the contiguous nonce run from its
    // next nonce. Senders take turns, one transaction per turn, in the arrival order of the
    // first transaction of their run, so a sender with a long run cannot crowd out others.
    // Nothing is removed; that happens when the block commits.
    std::vector<Tx> take_ready(std::size_t max_txs, const NextNonceFn& next_nonce) const;

    // Whether `sender` has every nonce from `next_nonce` to `nonce` pending: a transaction
    // with that nonce is then part of the run take_ready would hand out for the sender.
    bool in_ready_run(const Address& sender, std::uint64_t nonce, std::uint64_t next_nonce) const;

    // Up to `max_txs` pending transactions, oldest arrival first, whether ready or not (for
    // relaying requests to other replicas).
    std::vector<Tx> oldest(std::size_t max_txs) const;
    // Drops the block's transactions and every pending one they made stale: a committed
    // nonce n of a sender uses up all of its nonces <= n.
    void remove_committed(const Block& block);
    // Drops every transaction whose nonce is below its sender's next nonce (after a state
    // sync, for example, when blocks were not seen one by one).
    void prune(const NextNonceFn& next_nonce);
    // Drops one transaction (for example, one the block builder rejected). Later nonces of
    // the same sender stay: they wait for a replacement. False if it was not pending.
    bool remove(const Hash256& txid);

    std::size_t size() const { return by_id_.size(); }
    std::size_t bytes() const { return bytes_; }
    bool contains(const Hash256& txid) const { return by_id_.count(txid) != 0; }
    // Pending transactions of one sender.
    std::size_t pending_for(const Address& sender) const;
    const MempoolLimits& limits() const { return limits_; }
    const std::string& chain_id() const { return chain_id_; }

private:
    struct Entry {
        Tx tx;
        Hash256 id;
        std::size_t size = 0;  // encoded bytes
        std::uint64_t seq = 0; // arrival number
    };
    using SenderQueue = std::map<std::uint64_t, Entry>; // by nonce
    // Hashed, not ordered: every walk over the senders sorts what it takes by arrival
    // number, so their order never shows.
    using SenderMap = std::unordered_map<Address, SenderQueue>;

    // Past the run of consecutive nonces that starts at `first` (not queue.end()).
    static SenderQueue::const_iterator run_end(const SenderQueue& queue,
                                               SenderQueue::const_iterator first);
    // Drops the sender's entries before `end`; returns the next sender (the queue itself is
    // erased once empty).
    SenderMap::iterator drop_front(SenderMap::iterator sender, SenderQueue::iterator end);

    std::string chain_id_;
    SignatureCache* cache_;
    MempoolLimits limits_;
    CommandRules commands_;
    SenderMap senders_;
    // txid -> (sender, nonce); for lookups only, never iterated.
    std::unordered_map<Hash256, std::pair<Address, std::uint64_t>, FixedBytesHash> by_id_;
    std::size_t bytes_ = 0;
    std::uint64_t next_seq_ = 0;
};

} // namespace popchain
