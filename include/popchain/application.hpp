// Applications: what a replica runs the commands it orders through.
//
// The ledger orders every transaction and executes the kinds it knows (transfers, escrows,
// membership). A `command` transaction (transaction.hpp) is opaque to it: the ledger checks
// the chain's CommandRules, spends the client's nonce (so a command executes once however
// often it is sent) and leaves the rest to the Application attached to the replica. This is
// the consensus-only mode: with NoopApplication and 8-byte unsigned commands the replica
// does what other BFT engines are measured doing, ordering dummy commands, and the figures
// compare directly (docs/application.md).
//
// An application sees committed blocks only, in height order, each exactly once per
// replica, so it needs no rollback. It keeps its state where it likes; a replica that
// starts replays to it the stored blocks above the application's height() before it takes
// any input, so an application that keeps nothing (height() == 0 at start) is rebuilt from
// the chain.
#pragma once

#include <popchain/block.hpp>
#include <popchain/crypto.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace popchain {

class Application {
public:
    virtual ~Application() = default;

    // Height of the last block executed; 0 when none.
    virtual std::uint64_t height() const = 0;

    // Executes the `command` transactions of `block` (height() + 1), in block order, and
    // returns one result per command (empty bytes when a command has nothing to say), at
    // most max_result_bytes each. Must be deterministic: every replica gets the same blocks
    // and must reach the same state_digest().
    virtual std::vector<Bytes> execute(const Block& block) = 0;

    // A digest of the application's state after height(); equal on replicas that executed
    // the same blocks.
    virtual Hash256 state_digest() const = 0;
};

inline constexpr std::size_t max_result_bytes = 1024;

// The no-op application: it does nothing with its commands (up to `command_bytes` bytes on
// a chain with noop_command_rules()) and answers each with nothing. Its digest chains every
// command it executed: digest(h) = SHA-256("popchain/noop/v1" || digest(h-1) || u64 h ||
// the length-prefixed commands of block h),
// so replicas that agree on it executed the same commands in the same order.
class NoopApplication final : public Application {
public:
    static constexpr std::uint32_t command_bytes = 8;

    std::uint64_t height() const override { return height_; }
    std::vector<Bytes> execute(const Block& block) override;
    Hash256 state_digest() const override { return digest_; }
    // Commands executed since the application was made (the replayed ones included).
    std::uint64_t executed_commands() const { return executed_; }

private:
    std::uint64_t height_ = 0;
    std::uint64_t executed_ = 0;
    Hash256 digest_;
};

// The CommandRules a chain running NoopApplication declares in its genesis.
inline CommandRules noop_command_rules() {
    return CommandRules{NoopApplication::command_bytes, true};
}

// The client id of the load generator's or a script's client number `n`: a fixed 8-byte tag
// then n, so no number gives the zero address (which no command may come from).
Address command_client(std::uint64_t n);

// An unsigned command from `client` with that client's `nonce` (its commands execute in
// nonce order, from 0), `command` as the payload. Valid on a chain whose CommandRules allow
// unsigned commands of that size; sign_tx() makes a signed one of it.
Tx make_command(std::string chain_id, const Address& client, std::uint64_t nonce, Bytes command);

} // namespace popchain
