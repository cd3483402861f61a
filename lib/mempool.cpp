#include <popchain/hex.hpp>
#include <popchain/mempool.hpp>

#include <algorithm>
#include <iterator>

namespace popchain {

Mempool::Mempool(std::string chain_id, SignatureCache* cache, MempoolLimits limits,
                 CommandRules commands)
    : chain_id_(std::move(chain_id)), cache_(cache), limits_(limits), commands_(commands) {}

Result<void> Mempool::add(const Tx& tx, std::uint64_t sender_next_nonce) {
    return add(tx, tx.id(), sender_next_nonce);
}

Result<void> Mempool::add(const Tx& tx, const Hash256& id, std::uint64_t sender_next_nonce) {
    // Before the signature check: a re-broadcast costs a hash, not a verification.
    if (contains(id)) return make_error(Errc::already_known, "tx " + to_hex(id) + " is pending");
    if (auto ok = check_tx_stateless(tx, id, chain_id_, cache_, commands_); !ok) return ok;

    if (tx.nonce < sender_next_nonce)
        return make_error(Errc::nonce_reused, "nonce " + std::to_string(tx.nonce) +
                                                  " is used; the sender's next nonce is " +
                                                  std::to_string(sender_next_nonce));
    auto sender = senders_.find(tx.from);
    std::size_t pending = sender == senders_.end() ? 0 : sender->second.size();
    if (sender != senders_.end() && sender->second.count(tx.nonce))
        return make_error(Errc::nonce_reused, "the sender has another pending tx with nonce " +
                                                  std::to_string(tx.nonce) + " (no replacement)");
    if (pending >= limits_.max_per_sender)
        return make_error(Errc::mempool_full, "sender has " + std::to_string(pending) +
                                                  " pending txs (max_per_sender)");
    if (tx.nonce - sender_next_nonce >= limits_.max_per_sender)
        return make_error(Errc::nonce_gap, "nonce " + std::to_string(tx.nonce) +
                                               " is too far ahead of the next nonce " +
                                               std::to_string(sender_next_nonce) +
                                               " (window of max_per_sender)");
    if (size() >= limits_.max_txs)
        return make_error(Errc::mempool_full,
                          "pool holds " + std::to_string(size()) + " txs (max_txs)");
    const std::size_t tx_size = encoded_size(tx);
    // bytes_ <= max_bytes always holds, so the subtraction cannot wrap.
    if (tx_size > limits_.max_bytes - bytes_)
        return make_error(Errc::mempool_full, "pool holds " + std::to_string(bytes_) +
                                                  " bytes, tx has " + std::to_string(tx_size) +
                                                  " (max_bytes)");

    // Nothing can fail past this point, so a rejected add changes nothing.
    senders_[tx.from].emplace(tx.nonce, Entry{tx, id, tx_size, next_seq_++});
    by_id_.emplace(id, std::make_pair(tx.from, tx.nonce));
    bytes_ += tx_size;
    return {};
}

Mempool::SenderQueue::const_iterator Mempool::run_end(const SenderQueue& queue,
                                                      SenderQueue::const_iterator first) {
    auto end = std::next(first);
    while (end != queue.end() && end->first == std::prev(end)->first + 1)
        ++end;
    return end;
}

std::vector<Tx> Mempool::take_ready(std::size_t max_txs, const NextNonceFn& next_nonce) const {
    // A run is followed only as far as the block needs: finding every run's end first made
    // a one-transaction block cost a walk over the whole mempool.
    struct Run {
        SenderQueue::const_iterator next; // the sender's next tx to hand out
        SenderQueue::const_iterator end;  // its queue's end
        std::uint64_t nonce;              // the nonce `next` must have to extend the run
    };
    std::vector<std::pair<std::uint64_t, Run>> runs; // (arrival of the run's first tx, run)
    for (const auto& [address, queue] : senders_) {
        const std::uint64_t nonce = next_nonce(address);
        auto first = queue.find(nonce);
        if (first == queue.end()) continue; // nothing, or a gap at the next nonce
        runs.push_back({first->second.seq, Run{first, queue.end(), nonce}});
    }
    // Arrival numbers are unique, so this order is total and deterministic.
    std::sort(runs.begin(), runs.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });

    std::vector<Tx> out;
    while (out.size() < max_txs && !runs.empty()) {
        for (auto& [seq, run] : runs) {
            if (out.size() == max_txs) break;
            out.push_back(run.next->second.tx);
            ++run.next;
            ++run.nonce;
        }
        std::erase_if(runs, [](const auto& r) {
            return r.second.next == r.second.end || r.second.next->first != r.second.nonce;
        });
    }
    return out;
}

bool Mempool::in_ready_run(const Address& sender, std::uint64_t nonce,
                           std::uint64_t next_nonce) const {
    if (nonce < next_nonce) return false;
    auto it = senders_.find(sender);
    if (it == senders_.end()) return false;
    const SenderQueue& queue = it->second;
    auto first = queue.find(next_nonce);
    if (first == queue.end()) return false;
    // The run holds the consecutive nonces next_nonce, next_nonce + 1, ...
    const auto length = static_cast<std::uint64_t>(std::distance(first, run_end(queue, first)));
    return nonce - next_nonce < length;
}

std::vector<Tx> Mempool::oldest(std::size_t max_txs) const {
    std::vector<const Entry*> all;
    all.reserve(by_id_.size());
    for (const auto& [address, queue] : senders_)
        for (const auto& [nonce, entry] : queue)
            all.push_back(&entry);
    const std::size_t n = std::min(max_txs, all.size());
    std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n), all.end(),
                      [](const Entry* a, const Entry* b) { return a->seq < b->seq; });
    std::vector<Tx> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(all[i]->tx);
    return out;
}

Mempool::SenderMap::iterator Mempool::drop_front(SenderMap::iterator sender,
                                                 SenderQueue::iterator end) {
    SenderQueue& queue = sender->second;
    for (auto it = queue.begin(); it != end; it = queue.erase(it)) {
        bytes_ -= it->second.size;
        by_id_.erase(it->second.id);
    }
    return queue.empty() ? senders_.erase(sender) : std::next(sender);
}

void Mempool::remove_committed(const Block& block) {
    // Highest committed nonce per sender; a block orders each sender's nonces anyway, but
    // taking the maximum does not rely on it.
    std::unordered_map<Address, std::uint64_t> highest;
    for (const Tx& tx : block.txs) {
        auto [it, inserted] = highest.emplace(tx.from, tx.nonce);
        if (!inserted) it->second = std::max(it->second, tx.nonce);
    }
    for (const auto& [address, nonce] : highest) {
        auto sender = senders_.find(address);
        // upper_bound, not lower_bound(nonce + 1), which would wrap at the maximum nonce.
        if (sender != senders_.end()) drop_front(sender, sender->second.upper_bound(nonce));
    }
}

void Mempool::prune(const NextNonceFn& next_nonce) {
    for (auto sender = senders_.begin(); sender != senders_.end();)
        sender = drop_front(sender, sender->second.lower_bound(next_nonce(sender->first)));
}

bool Mempool::remove(const Hash256& txid) {
    auto found = by_id_.find(txid);
    if (found == by_id_.end()) return false;
    auto [address, nonce] = found->second;
    auto sender = senders_.find(address);
    SenderQueue& queue = sender->second;
    auto entry = queue.find(nonce);
    bytes_ -= entry->second.size;
    queue.erase(entry);
    by_id_.erase(found);
    if (queue.empty()) senders_.erase(sender);
    return true;
}

std::size_t Mempool::pending_for(const Address& sender) const {
    auto it = senders_.find(sender);
    return it == senders_.end() ? 0 : it->second.size();
}

} // namespace popchain
