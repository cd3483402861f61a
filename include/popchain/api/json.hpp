// JSON forms of the chain's value types, for the HTTP API and its clients.
//
// Conventions: byte strings are lower-case hex (either case accepted); addresses use their
// checksummed text form ("pop..."); integers are JSON numbers (unsigned, exact up to 2^64-1;
// a float, a negative number or anything larger is refused); enums are their snake_case
// names ("escrow_open", "refunded"). Objects carry every field of the value, so
// from_json(to_json(x)) == x. Derived fields (a tx's "id", a block's "hash") are written
// for the reader's convenience and, when present in input, must match what the value hashes
// to.
//
// Parsing never throws: errors are Errc::malformed with the path of the bad field
// ("block.txs[2].signature: expected 64 bytes of hex, got 63"). Unknown fields are refused,
// so a misspelt field is an error and not a silently ignored one. Parsing checks form and
// range only; whether a transaction is valid (its signature, its nonce) is the ledger's call.
#pragma once

#include <popchain/block.hpp>
#include <popchain/ledger.hpp>
#include <popchain/merkle.hpp>
#include <popchain/pbft/certificate.hpp>
#include <popchain/pbft/messages.hpp>
#include <popchain/result.hpp>
#include <popchain/store.hpp>
#include <popchain/transaction.hpp>

#include <nlohmann/json_fwd.hpp>

#include <string_view>
#include <utility>

namespace popchain::api {

using nlohmann::json;

// Parses JSON text without exceptions; Errc::malformed for text that is not JSON.
Result<json> parse_json(std::string_view text);

// {"id","kind","chain_id","from","to","amount","nonce","trade_id","deadline","payload",
//  "public_key","signature"}
json to_json(const Tx& tx);
Result<Tx> tx_from_json(const json& j);

// {"height","prev_hash","tx_root","state_root","view","proposer","timestamp_ms","hash"}
json to_json(const BlockHeader& header);
Result<BlockHeader> header_from_json(const json& j);

// {"view","signatures":[{"replica","signature"}]}
json to_json(const CommitCertificate& certificate);
Result<CommitCertificate> commit_certificate_from_json(const json& j);

// {"hash","header":{...},"txs":[...],"certificate":{...}}
json to_json(const Block& block);
Result<Block> block_from_json(const json& j);

// {"tx":{...},"height","index"}
json to_json(const TxRecord& record);
Result<TxRecord> tx_record_from_json(const json& j);

// {"index","leaf_count","siblings":[hex...]}
json to_json(const MerkleProof& proof);
Result<MerkleProof> merkle_proof_from_json(const json& j);

// {"replica","seq","block_hash","state_root","signature"}
json to_json(const pbft::Checkpoint& checkpoint);
Result<pbft::Checkpoint> checkpoint_from_json(const json& j);

// {"checkpoints":[...]}
json to_json(const pbft::CheckpointCertificate& certificate);
Result<pbft::CheckpointCertificate> checkpoint_certificate_from_json(const json& j);

// {"headers":[...],"certificate":{...}}
json to_json(const pbft::CommitProof& proof);
Result<pbft::CommitProof> commit_proof_from_json(const json& j);

// An account as Ledger::account() gives it: {"address","balance","nonce"}.
json to_json(const Address& address, const Account& account);
Result<std::pair<Address, Account>> account_from_json(const json& j);

// An escrow as Ledger::escrow() gives it:
// {"trade_id","buyer","seller","amount","deadline","opened_at","status"}.
json to_json(const Hash256& trade_id, const Escrow& escrow);
Result<std::pair<Hash256, Escrow>> escrow_from_json(const json& j);

// {"id","public_key","endpoint"}
json to_json(const ReplicaInfo& replica);
Result<ReplicaInfo> replica_from_json(const json& j);

} // namespace popchain::api
