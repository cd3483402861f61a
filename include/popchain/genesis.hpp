// Genesis: what a chain starts from, read from a JSON genesis file.
//
//   {
//     "chain_id": "popchain-dev",
//     "timestamp_ms": 0,
//     "authority": "<33-byte compressed public key, hex>",
//     "commands": {"max_bytes": 8, "unsigned": true},   // optional: see CommandRules
//     "replicas": [ {"id": 0, "public_key": "<hex>", "endpoint": "127.0.0.1:7000"}, ... ],
//     "balances": [ {"address": "pop...", "amount": 1000}, ... ]
//   }
//
// Unknown fields are rejected (a misspelt field must not be silently ignored).
#pragma once

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace popchain {

struct Genesis {
    ChainParams params;
    std::uint64_t timestamp_ms = 0;
    std::vector<ReplicaInfo> replicas;
    std::vector<std::pair<Address, std::uint64_t>> balances;

    static Result<Genesis> from_json(std::string_view text);
    static Result<Genesis> load(const std::filesystem::path& file);
    std::string to_json() const;

    // Height-0 block and the state after it. The balances form the genesis delta; their
    // sum is the initial total minted.
    Result<BuiltBlock> build() const;
    // The ledger positioned right after genesis.
    Result<Ledger> ledger(SignatureCache* cache = nullptr) const;

    friend bool operator==(const Genesis&, const Genesis&) = default;
};

} // namespace popchain
