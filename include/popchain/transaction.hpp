// Transactions: the signed value type every ledger change comes from.
#pragma once

#include <popchain/codec.hpp>
#include <popchain/crypto.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace popchain {

enum class TxKind : std::uint8_t {
    transfer = 1,       // from -> to, amount
    mint = 2,           // authority credits `to` with `amount` (an approved top-up)
    escrow_open = 3,    // buyer (from) locks `amount` for seller (`to`) under `trade_id`
    escrow_release = 4, // buyer confirms receipt: the locked amount goes to the seller
    escrow_refund = 5,  // seller cancels any time, or the buyer reclaims after `deadline`
    config = 6,         // authority changes the replica set; `payload` is a ConfigChange
    command = 7,        // an opaque request for the chain's application (application.hpp)
};

const char* tx_kind_name(TxKind kind) noexcept;
std::optional<TxKind> tx_kind_from_name(std::string_view name) noexcept;

// Limits enforced by decoding and by check_tx_shape().
inline constexpr std::size_t max_chain_id_bytes = 64;
inline constexpr std::size_t max_payload_bytes = 4096;

// Field use by kind (fields a kind does not use must be zero/empty):
//
//   kind            to        amount  trade_id  deadline  payload
//   transfer        payee     > 0     -         -         optional memo
//   mint            payee     > 0     -         -         optional memo
//   escrow_open     seller    > 0     new id    height    optional memo
//   escrow_release  -         -       trade     -         optional memo
//   escrow_refund   -         -       trade     -         optional memo
//   config          -         -       -         -         ConfigChange
//   command         -         -       -         -         the command (1..max bytes)
//
// `from` is Address::of(public_key); `nonce` is the sender's next nonce (from 0).
//
// Commands are what the ledger orders for an application without looking inside them
// (consensus-only use, docs/application.md). A chain takes them only when its genesis says
// so (CommandRules). A command may be unsigned, if the chain allows it: then public_key and
// signature are zero and `from` is any non-zero client id, which only orders and
// de-duplicates that client's commands (its nonces) and proves nothing about who sent
// them. An unsigned command is encoded without the key and signature fields:
//
//   command = u8 kind | str chain_id | from | u64 nonce | bytes payload | u8 signed
//             [ | public_key | signature ]   (when signed = 1)
struct Tx {
    TxKind kind = TxKind::transfer;
    std::string chain_id;
    Address from;
    Address to;
    std::uint64_t amount = 0;
    std::uint64_t nonce = 0;
    Hash256 trade_id;
    std::uint64_t deadline = 0;
    Bytes payload;
    PublicKey public_key;
    Signature signature;

    // The bytes the signature covers: a domain tag and every field but the signature.
    Bytes signing_bytes() const;
    // txid: SHA-256 of signing_bytes(). The signature is not part of it, so nobody can
    // change a transaction's id by re-encoding its signature.
    Hash256 id() const;
    Bytes encode() const;

    friend bool operator==(const Tx&, const Tx&) = default;
};

void encode_tx(Writer& w, const Tx& tx);
// tx.encode().size(), without encoding.
std::size_t encoded_size(const Tx& tx);
Tx decode_tx(Reader& r);
Result<Tx> decode_tx(ByteView bytes);
// Advances `r` past one encoded transaction, failing as decode_tx would on a bad kind, an
// over-long field or truncation, without building the Tx.
void skip_tx(Reader& r);

// Fills in public_key and from, then signs. The rest of `tx` must be set already.
Tx sign_tx(Tx tx, const SigningKey& key);

// Which `command` transactions a chain takes (from its genesis). The default takes none.
struct CommandRules {
    std::uint32_t max_bytes = 0; // largest command; 0 = the chain takes no commands
    bool allow_unsigned = false; // commands without a key and signature are valid
    bool enabled() const { return max_bytes > 0; }
    friend bool operator==(const CommandRules&, const CommandRules&) = default;
};

// True for a command that carries no key and signature.
bool is_unsigned_command(const Tx& tx);

// Everything that can be checked without ledger state: field shapes, chain id, sender
// matches the key, signature, and for commands the chain's CommandRules (a command on a
// chain that takes none is Errc::command_refused). `cache` (optional) skips repeated
// signature checks.
Result<void> check_tx_shape(const Tx& tx);
Result<void> check_tx_stateless(const Tx& tx, std::string_view chain_id,
                                SignatureCache* cache = nullptr, const CommandRules& commands = {});
// The same, for a caller that already computed `txid` (== tx.id()).
Result<void> check_tx_stateless(const Tx& tx, const Hash256& txid, std::string_view chain_id,
                                SignatureCache* cache, const CommandRules& commands = {});

// A replica as known to the ledger (membership lives in ledger state).
struct ReplicaInfo {
    std::uint32_t id = 0;
    PublicKey key;
    std::string endpoint; // "host:port"; empty in pure simulations
    friend bool operator==(const ReplicaInfo&, const ReplicaInfo&) = default;
};
inline constexpr std::size_t max_endpoint_bytes = 256;
inline constexpr std::size_t max_replicas = 1024;

void encode_replica(Writer& w, const ReplicaInfo& r);
ReplicaInfo decode_replica(Reader& r);

// The payload of a `config` transaction.
struct ConfigChange {
    enum class Action : std::uint8_t { add_replica = 1, remove_replica = 2 };
    Action action = Action::add_replica;
    ReplicaInfo replica; // for remove, only `id` is used
    Bytes encode() const;
    friend bool operator==(const ConfigChange&, const ConfigChange&) = default;
};
Result<ConfigChange> decode_config_change(ByteView bytes);

// The replica set after `change` (kept sorted by id); refuses adding an id or key already
// in the set, growing past max_replicas, removing an unknown id or the last replica. The
// ledger applies config transactions with it, and light clients replay them with it.
Result<std::vector<ReplicaInfo>> apply_config_change(std::vector<ReplicaInfo> set,
                                                     const ConfigChange& change);

} // namespace popchain
