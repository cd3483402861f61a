// The ledger: a deterministic state machine over blocks.
//
// State is balances and nonces per address, escrows by trade id, the replica set and the
// total minted. A block is executed against the current state into a StateDelta (nothing
// changes yet); commit() then installs it. apply() = execute + commit, so a block either
// applies completely or not at all.
//
// State root. Every header carries state_root(h) = SHA-256("popchain/state/v1" ||
// state_root(h-1) || encoded delta of block h), with the genesis delta chained to zero.
// Replicas that executed the same blocks hold the same root, and it costs O(changes) per
// block rather than O(accounts). state_digest() hashes the whole current state, O(n), for
// audits and tests (for example, that a store reopened after a crash holds the state that
// replaying its blocks produces).
#pragma once

#include <popchain/block.hpp>
#include <popchain/crypto.hpp>
#include <popchain/transaction.hpp>

#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace popchain {

struct Account {
    std::uint64_t balance = 0;
    std::uint64_t nonce = 0; // the next nonce this address must use
    friend bool operator==(const Account&, const Account&) = default;
};

enum class EscrowStatus : std::uint8_t { open = 1, released = 2, refunded = 3 };
const char* escrow_status_name(EscrowStatus s) noexcept;

struct Escrow {
    Address buyer;
    Address seller;
    std::uint64_t amount = 0;
    std::uint64_t deadline = 0;  // the buyer may reclaim in blocks with height > deadline
    std::uint64_t opened_at = 0; // height of the block that opened it
    EscrowStatus status = EscrowStatus::open;
    friend bool operator==(const Escrow&, const Escrow&) = default;
};

// Fixed for the life of a chain; comes from the genesis file.
struct ChainParams {
    std::string chain_id;
    PublicKey authority;
    CommandRules commands; // none by default
    Address authority_address() const { return Address::of(authority); }
    friend bool operator==(const ChainParams&, const ChainParams&) = default;
};

struct State {
    std::unordered_map<Address, Account> accounts;
    std::unordered_map<Hash256, Escrow, FixedBytesHash>
        escrows;                       // closed ones stay: ids are never reused
    std::vector<ReplicaInfo> replicas; // sorted by id
    std::uint64_t total_minted = 0;
    std::uint64_t height = 0; // height of the last applied block
    Hash256 tip_hash;         // hash of the last applied block
    Hash256 state_root;       // its state root
    bool operator==(const State&) const = default;
};

// What one block changes. Ordered maps, so its encoding (hashed into the state root) is
// canonical.
struct StateDelta {
    std::uint64_t height = 0;
    Hash256 block_hash;
    std::map<Address, Account> accounts;              // new values of changed accounts
    std::map<Hash256, Escrow> escrows;                // new values of changed escrows
    std::optional<std::vector<ReplicaInfo>> replicas; // the new set, when it changed
    std::uint64_t total_minted = 0;                   // after the block
    Hash256 state_root;                               // after the block
    // The block's transaction ids, in block order, as execution computed them, so that the
    // store, the mempool and the replies need not hash every transaction again. Not part of
    // the state: empty when unknown (a store then computes them itself).
    std::vector<Hash256> txids;
    // Encoding of everything but block_hash and state_root: what the state root chains.
    Bytes encode_changes() const;
};

// The inverse of StateDelta::encode_changes(): height, accounts, escrows, replicas and
// total_minted (block_hash, state_root and txids stay empty). Errors for bytes that are not
// such an encoding: truncated or trailing input, an unknown escrow status or replica flag,
// accounts or escrows out of key order or repeated (encode_changes writes each once, sorted).
Result<StateDelta> decode_changes(ByteView bytes);

Hash256 next_state_root(const Hash256& prev_root, const StateDelta& delta);
// The same from the delta's encode_changes(), for a caller that has them encoded already.
Hash256 next_state_root(const Hash256& prev_root, ByteView encoded_changes);

// A transaction the block builder left out, and why.
struct RejectedTx {
    Hash256 txid;
    Error error;
};
struct BuiltBlock {
    Block block;
    StateDelta delta;
    std::vector<RejectedTx> rejected;
};

class Ledger {
public:
    // A ledger positioned after `state` (for example genesis, or what a store loaded).
    Ledger(ChainParams params, State state, SignatureCache* cache = nullptr);

    const ChainParams& params() const { return params_; }
    const State& state() const { return state_; }
    std::uint64_t height() const { return state_.height; }
    Account account(const Address& a) const;
    std::optional<Escrow> escrow(const Hash256& trade_id) const;

    // Validates `block` against the current state: height, prev hash, tx root, every
    // transaction (in order, each seeing the effects of the ones before it), state root.
    // Returns the delta; the ledger is unchanged either way.
    Result<StateDelta> execute(const Block& block) const;
    // Installs a delta produced by execute() on this state.
    void commit(const StateDelta& delta);
    // execute() then commit(): all or nothing.
    Result<StateDelta> apply(const Block& block);

    // Would `tx` be valid as the next transaction in a block at height() + 1? (`txid`:
    // tx.id(), for a caller that has it.)
    Result<void> check_tx(const Tx& tx) const;
    Result<void> check_tx(const Tx& tx, const Hash256& txid) const;

    // Assembles the next block from candidate transactions in the given order, leaving out
    // those that are invalid at their position; fills tx root and state root.
    BuiltBlock build_block(const std::vector<Tx>& candidates, std::uint64_t view,
                           std::uint32_t proposer, std::uint64_t timestamp_ms) const;

    // sum(balances) + sum(open escrows) == total_minted, and the replica set is well formed.
    Result<void> check_invariants() const;
    // SHA-256 over the canonical encoding of the whole state. O(size of state).
    Hash256 state_digest() const;

private:
    class Overlay;
    ChainParams params_;
    State state_;
    SignatureCache* cache_;
};

// Applies a delta to a bare State (what Ledger::commit and stores that rebuild state use).
void apply_delta(State& state, const StateDelta& delta);
Hash256 state_digest(const State& state);

} // namespace popchain
