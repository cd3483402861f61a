#include <popchain/hex.hpp>
#include <popchain/ledger.hpp>

#include <algorithm>
#include <limits>
#include <unordered_set>

namespace popchain {

namespace {
constexpr std::string_view state_domain = "popchain/state/v1";
constexpr std::uint64_t max_amount = std::numeric_limits<std::uint64_t>::max();

bool add_overflows(std::uint64_t a, std::uint64_t b) {
    return a > max_amount - b;
}

void encode_account(Writer& w, const Address& a, const Account& acc) {
    w.fixed(a);
    w.u64(acc.balance);
    w.u64(acc.nonce);
}

void encode_escrow(Writer& w, const Hash256& id, const Escrow& e) {
    w.fixed(id);
    w.fixed(e.buyer);
    w.fixed(e.seller);
    w.u64(e.amount);
    w.u64(e.deadline);
    w.u64(e.opened_at);
    w.u8(static_cast<std::uint8_t>(e.status));
}

void encode_replicas(Writer& w, const std::vector<ReplicaInfo>& replicas) {
    w.u32(static_cast<std::uint32_t>(replicas.size()));
    for (const auto& r : replicas)
        encode_replica(w, r);
}

Error at_tx(std::size_t index, const Hash256& txid, const Error& e) {
    return make_error(e.code, "tx #" + std::to_string(index) + " (" + to_hex(txid).substr(0, 16) +
                                  "): " + e.message());
}
} // namespace

const char* escrow_status_name(EscrowStatus s) noexcept {
    switch (s) {
    case EscrowStatus::open: return "open";
    case EscrowStatus::released: return "released";
    case EscrowStatus::refunded: return "refunded";
    }
    return "unknown";
}

Bytes StateDelta::encode_changes() const {
    Writer w(64 + accounts.size() * 36 + escrows.size() * 110);
    w.u64(height);
    w.u32(static_cast<std::uint32_t>(accounts.size()));
    for (const auto& [a, acc] : accounts)
        encode_account(w, a, acc);
    w.u32(static_cast<std::uint32_t>(escrows.size()));
    for (const auto& [id, e] : escrows)
        encode_escrow(w, id, e);
    w.u8(replicas ? 1 : 0);
    if (replicas) encode_replicas(w, *replicas);
    w.u64(total_minted);
    return w.take();
}

Result<StateDelta> decode_changes(ByteView bytes) {
    return decode_all<StateDelta>(bytes, [](Reader& r) {
        StateDelta d;
        d.height = r.u64();
        // Each entry takes at least 36 (account) or 97 (escrow) bytes, so a count larger
        // than the input allows fails here instead of looping over a truncated buffer.
        const std::uint32_t accounts = r.u32();
        if (r.ok() && accounts > r.remaining() / 36)
            r.fail(Errc::truncated, std::to_string(accounts) + " accounts cannot fit");
        for (std::uint32_t i = 0; r.ok() && i < accounts; ++i) {
            const auto address = r.fixed<Address>();
            Account acc{r.u64(), r.u64()};
            if (r.ok() && !d.accounts.empty() && !(d.accounts.rbegin()->first < address))
                r.fail(Errc::malformed, "accounts out of order");
            d.accounts.emplace_hint(d.accounts.end(), address, acc);
        }
        const std::uint32_t escrows = r.u32();
        if (r.ok() && escrows > r.remaining() / 97)
            r.fail(Errc::truncated, std::to_string(escrows) + " escrows cannot fit");
        for (std::uint32_t i = 0; r.ok() && i < escrows; ++i) {
            const auto id = r.fixed<Hash256>();
            Escrow e;
            e.buyer = r.fixed<Address>();
            e.seller = r.fixed<Address>();
            e.amount = r.u64();
            e.deadline = r.u64();
            e.opened_at = r.u64();
            const std::uint8_t status = r.u8();
            if (r.ok() && (status < static_cast<std::uint8_t>(EscrowStatus::open) ||
                           status > static_cast<std::uint8_t>(EscrowStatus::refunded)))
                r.fail(Errc::malformed, "escrow status " + std::to_string(status));
            e.status = static_cast<EscrowStatus>(status);
            if (r.ok() && !d.escrows.empty() && !(d.escrows.rbegin()->first < id))
                r.fail(Errc::malformed, "escrows out of order");
            d.escrows.emplace_hint(d.escrows.end(), id, e);
        }
        const std::uint8_t has_replicas = r.u8();
        if (r.ok() && has_replicas > 1)
            r.fail(Errc::malformed, "replica flag " + std::to_string(has_replicas));
        if (r.ok() && has_replicas == 1) {
            const std::uint32_t count = r.u32();
            if (r.ok() && count > r.remaining() / 41)
                r.fail(Errc::truncated, std::to_string(count) + " replicas cannot fit");
            std::vector<ReplicaInfo> set;
            for (std::uint32_t i = 0; r.ok() && i < count; ++i)
                set.push_back(decode_replica(r));
            d.replicas = std::move(set);
        }
        d.total_minted = r.u64();
        return d;
    });
}

Hash256 next_state_root(const Hash256& prev_root, const StateDelta& delta) {
    return next_state_root(prev_root, delta.encode_changes());
}

Hash256 next_state_root(const Hash256& prev_root, ByteView encoded_changes) {
    return Sha256().update(state_domain).update(prev_root).update(encoded_changes).finish();
}

void apply_delta(State& state, const StateDelta& delta) {
    for (const auto& [a, acc] : delta.accounts)
        state.accounts[a] = acc;
    for (const auto& [id, e] : delta.escrows)
        state.escrows[id] = e;
    if (delta.replicas) state.replicas = *delta.replicas;
    state.total_minted = delta.total_minted;
    state.height = delta.height;
    state.tip_hash = delta.block_hash;
    state.state_root = delta.state_root;
}

Hash256 state_digest(const State& state) {
    std::vector<std::pair<Address, Account>> accounts(state.accounts.begin(), state.accounts.end());
    std::sort(accounts.begin(), accounts.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<std::pair<Hash256, Escrow>> escrows(state.escrows.begin(), state.escrows.end());
    std::sort(escrows.begin(), escrows.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    Writer w;
    w.u64(state.height);
    w.fixed(state.tip_hash);
    w.fixed(state.state_root);
    w.u64(state.total_minted);
    w.u32(static_cast<std::uint32_t>(accounts.size()));
    for (const auto& [a, acc] : accounts)
        encode_account(w, a, acc);
    w.u32(static_cast<std::uint32_t>(escrows.size()));
    for (const auto& [id, e] : escrows)
        encode_escrow(w, id, e);
    encode_replicas(w, state.replicas);
    return Sha256().update("popchain/state-digest/v1").update(w.data()).finish();
}

// The state as seen by the transactions of one block: the ledger's state plus the changes
// of the transactions executed so far. Nothing touches the ledger until commit().
class Ledger::Overlay {
public:
    Overlay(const State& base, std::uint64_t height) : base_(base) {
        delta.height = height;
        delta.total_minted = base.total_minted;
    }

    Account account(const Address& a) const {
        if (auto it = delta.accounts.find(a); it != delta.accounts.end()) return it->second;
        if (auto it = base_.accounts.find(a); it != base_.accounts.end()) return it->second;
        return {};
    }
    std::optional<Escrow> escrow(const Hash256& id) const {
        if (auto it = delta.escrows.find(id); it != delta.escrows.end()) return it->second;
        if (auto it = base_.escrows.find(id); it != base_.escrows.end()) return it->second;
        return std::nullopt;
    }
    const std::vector<ReplicaInfo>& replicas() const {
        return delta.replicas ? *delta.replicas : base_.replicas;
    }

    // Checks `tx` against the overlay and, only if every check passes, records its effects.
    Result<void> execute(const Tx& tx, const Hash256& txid, const ChainParams& params,
                         SignatureCache* cache) {
        if (auto ok = check_tx_stateless(tx, txid, params.chain_id, cache, params.commands); !ok)
            return ok;
        const std::uint64_t height = delta.height;
        Account sender = account(tx.from);
        if (tx.nonce < sender.nonce)
            return make_error(Errc::nonce_reused, "nonce " + std::to_string(tx.nonce) +
                                                      " already used; next is " +
                                                      std::to_string(sender.nonce));
        if (tx.nonce > sender.nonce)
            return make_error(Errc::nonce_gap, "nonce " + std::to_string(tx.nonce) +
                                                   " skips ahead; next is " +
                                                   std::to_string(sender.nonce));
        // Each case validates completely before it writes anything.
        switch (tx.kind) {
        case TxKind::transfer: {
            if (sender.balance < tx.amount) return insufficient(sender, tx.amount);
            if (tx.to == tx.from) {
                ++sender.nonce;
                delta.accounts[tx.from] = sender;
                return {};
            }
            Account payee = account(tx.to);
            if (add_overflows(payee.balance, tx.amount))
                return make_error(Errc::amount_overflow, "payee balance would overflow");
            sender.balance -= tx.amount;
            ++sender.nonce;
            payee.balance += tx.amount;
            delta.accounts[tx.from] = sender;
            delta.accounts[tx.to] = payee;
            return {};
        }
        case TxKind::mint: {
            if (tx.from != params.authority_address())
                return make_error(Errc::not_authority, "only the chain authority may mint");
            if (add_overflows(delta.total_minted, tx.amount))
                return make_error(Errc::amount_overflow, "total supply would overflow");
            ++sender.nonce;
            delta.accounts[tx.from] = sender;
            Account payee =
                account(tx.to);         // read after the nonce write: payee may be the authority
            payee.balance += tx.amount; // cannot overflow: balance <= total_minted
            delta.accounts[tx.to] = payee;
            delta.total_minted += tx.amount;
            return {};
        }
        case TxKind::escrow_open: {
            if (escrow(tx.trade_id))
                return make_error(Errc::escrow_exists, "trade id already used");
            if (tx.to == tx.from)
                return make_error(Errc::not_escrow_party, "buyer and seller must differ");
            if (tx.deadline < height)
                return make_error(Errc::deadline_passed, "deadline " + std::to_string(tx.deadline) +
                                                             " is below height " +
                                                             std::to_string(height));
            if (sender.balance < tx.amount) return insufficient(sender, tx.amount);
            sender.balance -= tx.amount;
            ++sender.nonce;
            delta.accounts[tx.from] = sender;
            delta.escrows[tx.trade_id] =
                Escrow{tx.from, tx.to, tx.amount, tx.deadline, height, EscrowStatus::open};
            return {};
        }
        case TxKind::escrow_release:
        case TxKind::escrow_refund: {
            auto found = escrow(tx.trade_id);
            if (!found) return make_error(Errc::unknown_escrow, "no escrow with this trade id");
            Escrow e = *found;
            if (e.status != EscrowStatus::open)
                return make_error(Errc::escrow_closed,
                                  std::string("escrow already ") + escrow_status_name(e.status));
            Address payee_address;
            if (tx.kind == TxKind::escrow_release) {
                if (tx.from != e.buyer)
                    return make_error(Errc::not_escrow_party, "only the buyer may release");
                payee_address = e.seller;
                e.status = EscrowStatus::released;
            } else {
                if (tx.from == e.buyer) {
                    if (height <= e.deadline)
                        return make_error(Errc::refund_before_deadline,
                                          "buyer may reclaim after height " +
                                              std::to_string(e.deadline));
                } else if (tx.from != e.seller) {
                    return make_error(
                        Errc::not_escrow_party,
                        "only the seller, or the buyer after the deadline, may refund");
                }
                payee_address = e.buyer;
                e.status = EscrowStatus::refunded;
            }
            ++sender.nonce;
            delta.accounts[tx.from] = sender;
            Account payee = account(payee_address);
            payee.balance += e.amount; // cannot overflow: balance + escrow <= total_minted
            delta.accounts[payee_address] = payee;
            delta.escrows[tx.trade_id] = e;
            return {};
        }
        case TxKind::config: {
            if (tx.from != params.authority_address())
                return make_error(Errc::not_authority,
                                  "only the chain authority may change membership");
            auto change = decode_config_change(tx.payload);
            if (!change) return make_error(Errc::bad_config, change.error().message());
            auto next = apply_config_change(replicas(), *change);
            if (!next) return next.error();
            ++sender.nonce;
            delta.accounts[tx.from] = sender;
            delta.replicas = std::move(next).value();
            return {};
        }
        case TxKind::command:
            // The ledger only orders the command and spends the client's nonce, so that a
            // retransmitted command cannot execute twice; the application executes it.
            ++sender.nonce;
            delta.accounts[tx.from] = sender;
            return {};
        }
        return make_error(Errc::unknown_kind);
    }

    StateDelta delta;

private:
    static Error insufficient(const Account& a, std::uint64_t amount) {
        return make_error(Errc::insufficient_funds, "balance " + std::to_string(a.balance) +
                                                        " < amount " + std::to_string(amount));
    }
    const State& base_;
};

Ledger::Ledger(ChainParams params, State state, SignatureCache* cache)
    : params_(std::move(params)), state_(std::move(state)), cache_(cache) {}

Account Ledger::account(const Address& a) const {
    auto it = state_.accounts.find(a);
    return it == state_.accounts.end() ? Account{} : it->second;
}

std::optional<Escrow> Ledger::escrow(const Hash256& trade_id) const {
    auto it = state_.escrows.find(trade_id);
    if (it == state_.escrows.end()) return std::nullopt;
    return it->second;
}

Result<StateDelta> Ledger::execute(const Block& block) const {
    const BlockHeader& h = block.header;
    if (h.height != state_.height + 1)
        return make_error(Errc::wrong_height, "block height " + std::to_string(h.height) +
                                                  ", ledger expects " +
                                                  std::to_string(state_.height + 1));
    if (h.prev_hash != state_.tip_hash)
        return make_error(Errc::wrong_prev_hash, "block does not extend the ledger's tip");
    if (block.txs.size() > max_block_txs) return make_error(Errc::too_many_txs);
    std::vector<Hash256> ids = block.txids();
    if (merkle_root(ids) != h.tx_root)
        return make_error(Errc::bad_tx_root, "tx root does not match the transactions");
    const std::size_t repeated = first_repeated_id(ids);
    Overlay overlay(state_, h.height);
    for (std::size_t i = 0; i < block.txs.size(); ++i) {
        if (i == repeated)
            return at_tx(i, ids[i],
                         make_error(Errc::duplicate_tx, "transaction repeated in block"));
        if (auto ok = overlay.execute(block.txs[i], ids[i], params_, cache_); !ok)
            return at_tx(i, ids[i], ok.error());
    }
    StateDelta delta = std::move(overlay.delta);
    delta.state_root = next_state_root(state_.state_root, delta);
    if (delta.state_root != h.state_root)
        return make_error(Errc::bad_state_root, "state root does not match the executed state");
    delta.block_hash = block.hash();
    delta.txids = std::move(ids);
    return delta;
}

void Ledger::commit(const StateDelta& delta) {
    apply_delta(state_, delta);
}

Result<StateDelta> Ledger::apply(const Block& block) {
    auto delta = execute(block);
    if (delta) commit(*delta);
    return delta;
}

Result<void> Ledger::check_tx(const Tx& tx) const {
    return check_tx(tx, tx.id());
}

Result<void> Ledger::check_tx(const Tx& tx, const Hash256& txid) const {
    Overlay overlay(state_, state_.height + 1);
    return overlay.execute(tx, txid, params_, cache_);
}

BuiltBlock Ledger::build_block(const std::vector<Tx>& candidates, std::uint64_t view,
                               std::uint32_t proposer, std::uint64_t timestamp_ms) const {
    BuiltBlock out;
    Overlay overlay(state_, state_.height + 1);
    std::unordered_set<Hash256, FixedBytesHash> seen;
    std::vector<Hash256> ids;
    for (const Tx& tx : candidates) {
        if (out.block.txs.size() == max_block_txs) break;
        Hash256 id = tx.id();
        // Only accepted txs count as seen: a candidate rejected for a nonce gap may become
        // valid once an earlier candidate fills the gap.
        if (seen.count(id)) {
            out.rejected.push_back({id, make_error(Errc::duplicate_tx)});
            continue;
        }
        if (auto ok = overlay.execute(tx, id, params_, cache_); !ok) {
            out.rejected.push_back({id, ok.error()});
            continue;
        }
        seen.insert(id);
        out.block.txs.push_back(tx);
        ids.push_back(id);
    }
    BlockHeader& h = out.block.header;
    h.height = state_.height + 1;
    h.prev_hash = state_.tip_hash;
    h.tx_root = merkle_root(ids);
    h.view = view;
    h.proposer = proposer;
    h.timestamp_ms = timestamp_ms;
    out.delta = std::move(overlay.delta);
    out.delta.state_root = next_state_root(state_.state_root, out.delta);
    h.state_root = out.delta.state_root;
    out.delta.block_hash = h.hash();
    out.delta.txids = std::move(ids);
    return out;
}

Result<void> Ledger::check_invariants() const {
    unsigned __int128 held = 0;
    for (const auto& [a, acc] : state_.accounts)
        held += acc.balance;
    for (const auto& [id, e] : state_.escrows)
        if (e.status == EscrowStatus::open) held += e.amount;
    if (held != state_.total_minted)
        return make_error(Errc::storage_corrupt,
                          "balances + open escrows != total minted (" +
                              std::to_string(static_cast<std::uint64_t>(held)) + " vs " +
                              std::to_string(state_.total_minted) + ")");
    for (std::size_t i = 1; i < state_.replicas.size(); ++i)
        if (state_.replicas[i - 1].id >= state_.replicas[i].id)
            return make_error(Errc::storage_corrupt, "replica set not sorted by unique id");
    return {};
}

Hash256 Ledger::state_digest() const {
    return popchain::state_digest(state_);
}

} // namespace popchain
