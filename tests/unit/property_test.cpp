// Seeded property test of the ledger against an independent reference model.
//
// For each seed, a few hundred random transactions of every kind (valid ones mixed with
// overdrafts, bad nonces, wrong signers, unknown or closed escrows, deadlines around the
// current height, non-authority mints and config changes, ...) are each put in a block of
// their own, either assembled by build_block() or crafted by hand so invalid transactions
// reach apply(). After every block the ledger must agree with a plain-map model: the
// verdict and its error code, balances, nonces, escrows, replicas, supply, and the state
// root (recomputed from the model's own idea of what changed).
#include <popchain/genesis.hpp>
#include <popchain/ledger.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace popchain;

namespace {

constexpr std::uint64_t u64_max = std::numeric_limits<std::uint64_t>::max();
constexpr int wallet_count = 8;
constexpr int authority_actor = wallet_count; // actors 0..7 are wallets, 8 is the authority
constexpr int actor_count = wallet_count + 1;
constexpr int replica_key_count = 8;
constexpr int trade_pool_size = 40;
constexpr std::string_view chain = "property-chain";

struct Keys {
    std::vector<SigningKey> actors;
    std::vector<SigningKey> replicas;
    std::vector<PublicKey> actor_pks;
    std::vector<Address> actor_addresses;
    Keys() {
        for (int i = 0; i < actor_count; ++i) {
            auto k = SigningKey::from_secret(Bytes(32, static_cast<std::uint8_t>(0x20 + i)));
            actor_pks.push_back(k->public_key());
            actor_addresses.push_back(k->address());
            actors.push_back(std::move(k).value());
        }
        for (int i = 0; i < replica_key_count; ++i)
            replicas.push_back(
                SigningKey::from_secret(Bytes(32, static_cast<std::uint8_t>(0x60 + i))).value());
    }
};
const Keys& keys() {
    static const Keys k;
    return k;
}

// ---- the reference model ----

struct ModelAccount {
    std::uint64_t balance = 0;
    std::uint64_t nonce = 0;
    bool operator==(const ModelAccount&) const = default;
};
struct ModelEscrow {
    Address buyer, seller;
    std::uint64_t amount = 0, deadline = 0, opened_at = 0;
    int status = 1; // 1 open, 2 released, 3 refunded
    bool operator==(const ModelEscrow&) const = default;
};
struct Model {
    std::map<Address, ModelAccount> accounts;
    std::map<Hash256, ModelEscrow> escrows;
    std::map<std::uint32_t, ReplicaInfo> replicas;
    std::uint64_t total_minted = 0;
    std::uint64_t height = 0;
    Hash256 state_root;
    Hash256 tip;
};

// A transaction plus what the generator knows about how it was made.
struct Planned {
    Tx tx;
    bool signature_ok = true; // signed by the key in tx.public_key over tx.id()
    bool payload_ok = true;   // config payload is a well-formed ConfigChange
    int signer = -1;          // actor whose key is in tx.public_key
    std::string what;         // description for failure messages
};

bool addr_zero(const Address& a) {
    return a.is_zero();
}

// Validates `p` against `m` as the next transaction at block height `height`, and applies
// it to `m` when valid. Returns the expected error code (Errc{} for success).
Errc model_execute(Model& m, const Planned& p, std::uint64_t height) {
    const Tx& tx = p.tx;
    // Shape, by kind.
    switch (tx.kind) {
    case TxKind::transfer:
    case TxKind::mint:
    case TxKind::escrow_open:
        if (tx.amount == 0) return Errc::zero_amount;
        if (tx.kind == TxKind::escrow_open) {
            if (tx.trade_id.is_zero()) return Errc::malformed;
        } else if (!tx.trade_id.is_zero() || tx.deadline != 0) {
            return Errc::malformed;
        }
        break;
    case TxKind::escrow_release:
    case TxKind::escrow_refund:
        if (tx.trade_id.is_zero() || tx.amount != 0 || !addr_zero(tx.to) || tx.deadline != 0)
            return Errc::malformed;
        break;
    case TxKind::config:
        if (tx.amount != 0 || !addr_zero(tx.to) || !tx.trade_id.is_zero() || tx.deadline != 0)
            return Errc::malformed;
        if (!p.payload_ok) return Errc::bad_config;
        break;
    case TxKind::command: return Errc::command_refused; // the generator makes none
    }
    if (tx.chain_id != chain) return Errc::wrong_chain_id;
    if (keys().actor_addresses[static_cast<std::size_t>(p.signer)] != tx.from)
        return Errc::sender_mismatch;
    if (!p.signature_ok) return Errc::bad_signature;

    ModelAccount sender = m.accounts.count(tx.from) ? m.accounts.at(tx.from) : ModelAccount{};
    if (tx.nonce < sender.nonce) return Errc::nonce_reused;
    if (tx.nonce > sender.nonce) return Errc::nonce_gap;
    const Address& authority = keys().actor_addresses[authority_actor];

    switch (tx.kind) {
    case TxKind::transfer: {
        if (sender.balance < tx.amount) return Errc::insufficient_funds;
        if (tx.to == tx.from) {
            m.accounts[tx.from].nonce += 1;
            return Errc{};
        }
        ModelAccount payee = m.accounts.count(tx.to) ? m.accounts.at(tx.to) : ModelAccount{};
        if (payee.balance > u64_max - tx.amount) return Errc::amount_overflow;
        m.accounts[tx.from] = {sender.balance - tx.amount, sender.nonce + 1};
        m.accounts[tx.to] = {payee.balance + tx.amount, payee.nonce};
        return Errc{};
    }
    case TxKind::mint: {
        if (tx.from != authority) return Errc::not_authority;
        if (m.total_minted > u64_max - tx.amount) return Errc::amount_overflow;
        m.accounts[tx.from].nonce += 1;
        m.accounts[tx.to].balance += tx.amount;
        m.total_minted += tx.amount;
        return Errc{};
    }
    case TxKind::escrow_open: {
        if (m.escrows.count(tx.trade_id)) return Errc::escrow_exists;
        if (tx.to == tx.from) return Errc::not_escrow_party;
        if (tx.deadline < height) return Errc::deadline_passed;
        if (sender.balance < tx.amount) return Errc::insufficient_funds;
        m.accounts[tx.from] = {sender.balance - tx.amount, sender.nonce + 1};
        m.escrows[tx.trade_id] = {tx.from, tx.to, tx.amount, tx.deadline, height, 1};
        return Errc{};
    }
    case TxKind::escrow_release:
    case TxKind::escrow_refund: {
        auto it = m.escrows.find(tx.trade_id);
        if (it == m.escrows.end()) return Errc::unknown_escrow;
        ModelEscrow& e = it->second;
        if (e.status != 1) return Errc::escrow_closed;
        Address payee;
        if (tx.kind == TxKind::escrow_release) {
            if (tx.from != e.buyer) return Errc::not_escrow_party;
            payee = e.seller;
            e.status = 2;
        } else {
            if (tx.from == e.buyer) {
                if (height <= e.deadline) return Errc::refund_before_deadline;
            } else if (tx.from != e.seller) {
                return Errc::not_escrow_party;
            }
            payee = e.buyer;
            e.status = 3;
        }
        m.accounts[tx.from].nonce += 1;
        m.accounts[payee].balance += e.amount;
        return Errc{};
    }
    case TxKind::config: {
        if (tx.from != authority) return Errc::not_authority;
        auto change = decode_config_change(tx.payload);
        REQUIRE(change.ok()); // the generator only makes valid payloads when payload_ok
        const ReplicaInfo& r = change->replica;
        if (change->action == ConfigChange::Action::add_replica) {
            if (m.replicas.count(r.id)) return Errc::bad_config;
            for (const auto& [id, info] : m.replicas)
                if (info.key == r.key) return Errc::bad_config;
            m.replicas[r.id] = r;
        } else {
            if (!m.replicas.count(r.id)) return Errc::bad_config;
            if (m.replicas.size() == 1) return Errc::bad_config;
            m.replicas.erase(r.id);
        }
        m.accounts[tx.from].nonce += 1;
        return Errc{};
    }
    case TxKind::command: break; // refused by the shape switch above
    }
    return Errc::unknown_kind;
}

// The state root the header of the block taking `before` to `after` must carry: the delta
// holds the new value of every account and escrow that changed, the replica set if it
// changed, and the supply.
Hash256 model_state_root(const Model& before, const Model& after, std::uint64_t height) {
    StateDelta d;
    d.height = height;
    for (const auto& [a, acc] : after.accounts) {
        auto it = before.accounts.find(a);
        if (it == before.accounts.end() || !(it->second == acc))
            d.accounts[a] = Account{acc.balance, acc.nonce};
    }
    for (const auto& [id, e] : after.escrows) {
        auto it = before.escrows.find(id);
        if (it == before.escrows.end() || !(it->second == e))
            d.escrows[id] = Escrow{e.buyer,    e.seller,    e.amount,
                                   e.deadline, e.opened_at, static_cast<EscrowStatus>(e.status)};
    }
    bool replicas_changed = before.replicas.size() != after.replicas.size();
    if (!replicas_changed)
        for (auto a = before.replicas.begin(), b = after.replicas.begin();
             a != before.replicas.end(); ++a, ++b)
            if (!(a->second == b->second)) replicas_changed = true;
    if (replicas_changed) {
        std::vector<ReplicaInfo> set;
        for (const auto& [id, r] : after.replicas)
            set.push_back(r);
        d.replicas = set;
    }
    d.total_minted = after.total_minted;
    return next_state_root(before.state_root, d);
}

// ---- one seeded run ----

class Run {
public:
    explicit Run(std::uint64_t seed) : seed_(seed), rng_(seed) {}

    // Returns an empty string on success, else a description of the first failure.
    std::string go(int steps) {
        const Keys& k = keys();
        Genesis g;
        g.params.chain_id = std::string(chain);
        g.params.authority = k.actor_pks[authority_actor];
        g.timestamp_ms = seed_;
        for (std::uint32_t i = 0; i < 4; ++i)
            g.replicas.push_back({i, k.replicas[i].public_key(), ""});
        for (int i = 0; i < 6; ++i)
            g.balances.emplace_back(k.actor_addresses[static_cast<std::size_t>(i)], below(1001));
        for (int i = 0; i < trade_pool_size; ++i)
            trades_.push_back(sha256("trade/" + std::to_string(seed_) + "/" + std::to_string(i)));

        auto primary = g.ledger(&cache_);
        auto backup = g.ledger(&cache_);
        if (!primary || !backup) return "genesis ledger failed";
        primary_.emplace(std::move(primary).value());
        backup_.emplace(std::move(backup).value());

        // The model starts from the genesis balances and replicas.
        Model empty;
        for (const auto& [a, amount] : g.balances) {
            model_.accounts[a].balance += amount;
            model_.total_minted += amount;
        }
        for (const auto& r : g.replicas)
            model_.replicas[r.id] = r;
        model_.height = 0;
        model_.state_root = model_state_root(empty, model_, 0);
        if (model_.state_root != primary_->state().state_root)
            return "genesis state root differs from the model's";
        model_.tip = primary_->state().tip_hash;
        if (auto bad = compare(); !bad.empty()) return "at genesis: " + bad;

        for (step_ = 0; step_ < steps; ++step_) {
            if (auto bad = one_step(); !bad.empty()) {
                std::ostringstream os;
                os << "seed " << seed_ << ", step " << step_ << " (" << last_ << "): " << bad;
                return os.str();
            }
        }
        return {};
    }

    int accepted() const { return accepted_; }
    int rejected() const { return rejected_; }
    const std::map<std::string, int>& codes() const { return codes_; }

private:
    std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
    bool chance(int percent) { return below(100) < static_cast<std::uint64_t>(percent); }

    const Address& addr(int actor) const {
        return keys().actor_addresses[static_cast<std::size_t>(actor)];
    }
    ModelAccount model_account(const Address& a) const {
        auto it = model_.accounts.find(a);
        return it == model_.accounts.end() ? ModelAccount{} : it->second;
    }

    std::uint64_t pick_nonce(int actor) {
        const std::uint64_t next = model_account(addr(actor)).nonce;
        const auto r = below(100);
        if (r < 80) return next;
        if (r < 88) return next > 0 ? next - 1 - below(std::min<std::uint64_t>(next, 3)) : next + 1;
        if (r < 97) return next + 1 + below(3);
        return rng_();
    }
    std::uint64_t pick_amount(std::uint64_t balance) {
        const auto r = below(100);
        if (r < 60 && balance > 0) return 1 + below(balance);
        if (r < 80) return balance + 1 + below(100); // overdraft
        if (r < 85) return balance;                  // everything (zero if empty)
        return 1 + below(2000);
    }
    Address pick_to(int from) {
        const auto r = below(100);
        if (r < 7) return addr(from);
        if (r < 10)
            return Address::of(
                keys().replicas[below(replica_key_count)].public_key()); // a fresh account
        return addr(static_cast<int>(below(actor_count)));
    }
    const Hash256& pick_existing_or_pool() {
        std::vector<const Hash256*> open;
        for (const auto& [id, e] : model_.escrows)
            if (e.status == 1) open.push_back(&id);
        if (!open.empty() && chance(60)) return *open[below(open.size())];
        if (!model_.escrows.empty() && chance(60)) {
            auto it = model_.escrows.begin();
            std::advance(it, static_cast<std::ptrdiff_t>(below(model_.escrows.size())));
            return it->first;
        }
        return trades_[below(trades_.size())];
    }

    Planned generate() {
        const std::uint64_t height = model_.height + 1;
        Planned p;
        Tx& tx = p.tx;
        tx.chain_id = std::string(chain);
        const auto k = below(100);
        int from = static_cast<int>(below(actor_count));
        if (k < 30) {
            tx.kind = TxKind::transfer;
            tx.to = pick_to(from);
            tx.amount = pick_amount(model_account(addr(from)).balance);
        } else if (k < 40) {
            tx.kind = TxKind::mint;
            if (chance(80)) from = authority_actor;
            tx.to = pick_to(from);
            if (chance(4)) { // near the top of the 64-bit supply, on either side of the edge
                const std::uint64_t room = u64_max - model_.total_minted;
                const std::uint64_t under = below(3), over = below(3);
                tx.amount = chance(50) ? (room > under ? room - under : 1)
                                       : (room <= u64_max - over ? room + over : u64_max);
                if (tx.amount == 0) tx.amount = 1;
            } else {
                tx.amount = 1 + below(1000);
            }
        } else if (k < 58) {
            tx.kind = TxKind::escrow_open;
            tx.to = pick_to(from);
            tx.amount = pick_amount(model_account(addr(from)).balance);
            tx.trade_id = trades_[below(trades_.size())];
            const std::int64_t d =
                static_cast<std::int64_t>(height) + static_cast<std::int64_t>(below(7)) - 1;
            tx.deadline = d < 0 ? 0 : static_cast<std::uint64_t>(d);
        } else if (k < 90) {
            tx.kind = k < 74 ? TxKind::escrow_release : TxKind::escrow_refund;
            tx.trade_id = pick_existing_or_pool();
            auto it = model_.escrows.find(tx.trade_id);
            if (it != model_.escrows.end()) {
                // Mostly a party to the trade; sometimes a stranger.
                const auto r = below(100);
                const Address& who = r < 50   ? it->second.buyer
                                     : r < 85 ? it->second.seller
                                              : addr(from);
                for (int a = 0; a < actor_count; ++a)
                    if (addr(a) == who) from = a;
            }
        } else {
            tx.kind = TxKind::config;
            if (chance(85)) from = authority_actor;
            ConfigChange c;
            c.action = chance(50) ? ConfigChange::Action::add_replica
                                  : ConfigChange::Action::remove_replica;
            c.replica.id = static_cast<std::uint32_t>(below(8));
            if (c.action == ConfigChange::Action::add_replica)
                c.replica.key = keys().replicas[below(replica_key_count)].public_key();
            tx.payload = c.encode();
        }
        tx.nonce = pick_nonce(from);
        if (chance(20)) { // a memo; on a config tx it is a trailing byte after the ConfigChange
            tx.payload.push_back(static_cast<std::uint8_t>(below(256)));
            if (tx.kind == TxKind::config) p.payload_ok = false;
        }

        // Occasional flaws in the fields.
        const auto f = below(100);
        if (f < 3) {
            tx.chain_id = "other-chain";
            p.what += "wrong chain; ";
        } else if (f < 7) {
            switch (tx.kind) {
            case TxKind::transfer:
            case TxKind::mint: tx.deadline = 1 + below(5); break;
            case TxKind::escrow_open: tx.amount = 0; break;
            case TxKind::escrow_release:
            case TxKind::escrow_refund: tx.to = addr(static_cast<int>(below(actor_count))); break;
            case TxKind::config:
                tx.payload = Bytes{static_cast<std::uint8_t>(below(256))};
                p.payload_ok = false;
                break;
            case TxKind::command: break; // not generated: the chain takes no commands
            }
            p.what += "bad field; ";
        } else if (f < 9 && tx.kind == TxKind::escrow_open) {
            tx.trade_id = Hash256{};
            p.what += "no trade id; ";
        }

        // Signing, sometimes wrongly.
        const auto s = below(100);
        const SigningKey& own = keys().actors[static_cast<std::size_t>(from)];
        const int other = static_cast<int>(
            (static_cast<std::uint64_t>(from) + 1 + below(actor_count - 1)) % actor_count);
        p.signer = from;
        if (s < 3) { // someone else signs for `from`
            tx.public_key = keys().actor_pks[static_cast<std::size_t>(from)];
            tx.from = addr(from);
            tx.signature = keys().actors[static_cast<std::size_t>(other)].sign(tx.id());
            p.signature_ok = false;
            p.what += "signed by another key; ";
        } else if (s < 6) { // corrupted signature
            tx = sign_tx(tx, own);
            tx.signature.bytes[below(64)] ^= static_cast<std::uint8_t>(1u << below(8));
            p.signature_ok = false;
            p.what += "corrupted signature; ";
        } else if (s < 8) { // claims another sender
            tx.public_key = keys().actor_pks[static_cast<std::size_t>(from)];
            tx.from = addr(other);
            tx.signature = own.sign(tx.id());
            p.what += "sender mismatch; ";
        } else {
            tx = sign_tx(tx, own);
        }
        p.what = std::string(tx_kind_name(tx.kind)) + " by actor " + std::to_string(from) +
                 ", nonce " + std::to_string(tx.nonce) + ", amount " + std::to_string(tx.amount) +
                 "; " + p.what;
        return p;
    }

    Block craft(std::vector<Tx> txs, const Hash256& state_root) {
        Block b;
        b.header.height = primary_->height() + 1;
        b.header.prev_hash = primary_->state().tip_hash;
        b.header.tx_root = compute_tx_root(txs);
        b.header.state_root = state_root;
        b.header.view = below(10);
        b.header.proposer = static_cast<std::uint32_t>(below(4));
        b.header.timestamp_ms = rng_();
        b.txs = std::move(txs);
        return b;
    }

    // Applies `b`, expecting `expected` (Errc{} for success), and on success the model state
    // `after`. Checks every property that must hold after the block.
    std::string apply_and_check(const Block& b, Errc expected, const Model& after) {
        const Hash256 digest = primary_->state_digest();
        const std::uint64_t height = primary_->height();
        auto res = primary_->apply(b);
        const Errc got = res ? Errc{} : res.code();
        ++codes_[got == Errc{} ? "accepted" : errc_name(got)];
        if (got != expected) {
            return std::string("apply: expected ") +
                   (expected == Errc{} ? "ok" : errc_name(expected)) + ", got " +
                   (res ? std::string("ok") : res.error().message());
        }
        if (auto inv = primary_->check_invariants(); !inv)
            return "invariants: " + inv.error().message();
        if (res) {
            ++accepted_;
            if (primary_->height() != height + 1)
                return "accepted block did not advance the height by one";
            if (primary_->state().tip_hash != b.hash()) return "tip is not the applied block";
            if (primary_->state().state_root != b.header.state_root)
                return "state root differs from header";
            model_ = after;
            model_.height = height + 1;
            model_.tip = b.hash();
            model_.state_root = b.header.state_root;
            auto on_backup = backup_->apply(b);
            if (!on_backup)
                return "backup refused an accepted block: " + on_backup.error().message();
            if (backup_->state_digest() != primary_->state_digest()) return "backup diverged";
        } else {
            ++rejected_;
            if (primary_->state_digest() != digest)
                return "rejected block changed the state digest";
            if (primary_->height() != height) return "rejected block changed the height";
        }
        return compare();
    }

    std::string compare() const {
        const State& s = primary_->state();
        if (s.height != model_.height) return "height differs from the model";
        if (s.tip_hash != model_.tip) return "tip differs from the model";
        if (s.state_root != model_.state_root) return "state root differs from the model";
        if (s.total_minted != model_.total_minted) return "total minted differs from the model";
        if (s.accounts.size() != model_.accounts.size())
            return "account count differs from the model";
        for (const auto& [a, acc] : model_.accounts) {
            auto it = s.accounts.find(a);
            if (it == s.accounts.end()) return "account missing: " + a.to_string();
            if (it->second.balance != acc.balance || it->second.nonce != acc.nonce)
                return "account " + a.to_string() + " is {" + std::to_string(it->second.balance) +
                       ", " + std::to_string(it->second.nonce) + "}, model says {" +
                       std::to_string(acc.balance) + ", " + std::to_string(acc.nonce) + "}";
        }
        if (s.escrows.size() != model_.escrows.size()) return "escrow count differs from the model";
        for (const auto& [id, e] : model_.escrows) {
            auto it = s.escrows.find(id);
            if (it == s.escrows.end()) return "escrow missing";
            const Escrow& x = it->second;
            if (x.buyer != e.buyer || x.seller != e.seller || x.amount != e.amount ||
                x.deadline != e.deadline || x.opened_at != e.opened_at ||
                static_cast<int>(x.status) != e.status)
                return std::string("escrow differs from the model (status ") +
                       escrow_status_name(x.status) + " vs " + std::to_string(e.status) + ")";
        }
        if (s.replicas.size() != model_.replicas.size())
            return "replica count differs from the model";
        std::size_t i = 0;
        for (const auto& [id, r] : model_.replicas)
            if (!(s.replicas[i++] == r)) return "replica set differs from the model";
        return {};
    }

    std::string one_step() {
        const std::uint64_t height = model_.height + 1;
        const auto mode = below(100);
        if (mode < 4) { // an empty block, built
            last_ = "empty block";
            BuiltBlock built = primary_->build_block({}, 0, 0, 0);
            if (built.block.header.state_root != model_state_root(model_, model_, height))
                return "empty block: state root differs from the model's";
            return apply_and_check(built.block, Errc{}, model_);
        }

        const Planned p = generate();
        last_ = p.what;
        Model after = model_;
        const Errc verdict = model_execute(after, p, height);
        const Hash256 root =
            verdict == Errc{} ? model_state_root(model_, after, height) : sha256("garbage");

        if (mode < 8) { // the transaction twice in one block
            last_ += " [twice in one block]";
            Model ignored = model_;
            const Errc first = model_execute(ignored, p, height);
            return apply_and_check(craft({p.tx, p.tx}, root),
                                   first == Errc{} ? Errc::duplicate_tx : first, model_);
        }
        if (mode < 16) { // a crafted block with one corrupted header field
            Block b = craft({p.tx}, root);
            Errc expected = verdict;
            switch (below(4)) {
            case 0:
                b.header.height += chance(50) ? 1 : std::uint64_t(0) - 1;
                expected = Errc::wrong_height;
                last_ += " [wrong height]";
                break;
            case 1:
                b.header.prev_hash.bytes[below(32)] ^= 1;
                expected = Errc::wrong_prev_hash;
                last_ += " [wrong prev hash]";
                break;
            case 2:
                b.header.tx_root.bytes[below(32)] ^= 1;
                expected = Errc::bad_tx_root;
                last_ += " [wrong tx root]";
                break;
            default:
                b.header.state_root.bytes[below(32)] ^= 1;
                if (expected == Errc{}) expected = Errc::bad_state_root;
                last_ += " [wrong state root]";
                break;
            }
            return apply_and_check(b, expected, model_);
        }
        if (mode < 58) { // assembled by build_block, then applied
            last_ += " [build_block]";
            const Hash256 digest = primary_->state_digest();
            BuiltBlock built = primary_->build_block({p.tx}, below(10), 0, rng_());
            if (primary_->state_digest() != digest) return "build_block changed the state";
            if (verdict == Errc{}) {
                if (built.block.txs.size() != 1 || !built.rejected.empty())
                    return "build_block left out a valid tx: " +
                           (built.rejected.empty() ? std::string("?")
                                                   : built.rejected[0].error.message());
            } else {
                ++codes_[errc_name(verdict)];
                if (!built.block.txs.empty())
                    return std::string("build_block included a tx the model rejects with ") +
                           errc_name(verdict);
                if (built.rejected.size() != 1 || built.rejected[0].error.code != verdict ||
                    built.rejected[0].txid != p.tx.id())
                    return std::string("build_block reason differs: expected ") +
                           errc_name(verdict) + ", got " +
                           (built.rejected.empty() ? std::string("none")
                                                   : built.rejected[0].error.message());
            }
            const Model& target = verdict == Errc{} ? after : model_;
            if (built.block.header.state_root != model_state_root(model_, target, height))
                return "built block's state root differs from the model's";
            return apply_and_check(built.block, Errc{}, target);
        }
        // Crafted by hand: invalid transactions reach apply().
        last_ += " [crafted]";
        return apply_and_check(craft({p.tx}, root), verdict, verdict == Errc{} ? after : model_);
    }

    std::uint64_t seed_;
    std::mt19937_64 rng_;
    SignatureCache cache_{1 << 14};
    std::optional<Ledger> primary_, backup_;
    Model model_;
    std::vector<Hash256> trades_;
    int step_ = 0;
    std::string last_;
    int accepted_ = 0, rejected_ = 0;
    std::map<std::string, int> codes_;
};

} // namespace

TEST_CASE("property: random transaction sequences agree with a reference model") {
    constexpr int seeds = 20;
    constexpr int steps = 300;
    int accepted = 0, rejected = 0;
    std::map<std::string, int> codes;
    for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
        Run run(seed * 0x9e3779b97f4a7c15ull);
        const std::string failure = run.go(steps);
        INFO("seed index " << seed << " (rng seed " << seed * 0x9e3779b97f4a7c15ull << ")");
        CHECK_MESSAGE(failure.empty(), failure);
        accepted += run.accepted();
        rejected += run.rejected();
        for (const auto& [c, n] : run.codes())
            codes[c] += n;
    }
    // The mix must actually exercise both outcomes and the interesting rejections.
    std::ostringstream mix;
    for (const auto& [c, n] : codes)
        mix << c << "=" << n << " ";
    INFO("outcomes: " << mix.str());
    CHECK(accepted > seeds * steps / 4);
    CHECK(rejected > seeds * steps / 4);
    for (Errc c : {Errc::bad_signature,      Errc::wrong_chain_id,
                   Errc::sender_mismatch,    Errc::nonce_reused,
                   Errc::nonce_gap,          Errc::zero_amount,
                   Errc::insufficient_funds, Errc::amount_overflow,
                   Errc::not_authority,      Errc::escrow_exists,
                   Errc::unknown_escrow,     Errc::escrow_closed,
                   Errc::not_escrow_party,   Errc::refund_before_deadline,
                   Errc::deadline_passed,    Errc::bad_config,
                   Errc::malformed,          Errc::wrong_height,
                   Errc::wrong_prev_hash,    Errc::bad_tx_root,
                   Errc::bad_state_root,     Errc::duplicate_tx}) {
        CAPTURE(errc_name(c));
        CHECK(codes[errc_name(c)] > 0);
    }
}
