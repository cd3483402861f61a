// pBFT messages and their canonical encodings (see docs/consensus.md for the protocol).
//
// Every message between replicas travels in an envelope authenticated by a MAC under the
// pairwise key of its sender and receiver (link.hpp). Statements that are forwarded as proof
// (checkpoints, view changes, new views) are additionally signed with the sender's ECDSA
// key, and carry the sender's id inside the signed bytes.
#pragma once

#include <popchain/block.hpp>
#include <popchain/codec.hpp>
#include <popchain/crypto.hpp>
#include <popchain/transaction.hpp>

#include <cstdint>
#include <variant>
#include <vector>

namespace popchain::pbft {

using ReplicaId = std::uint32_t;

enum class MsgType : std::uint8_t {
    request = 1,     // a client transaction, forwarded to the primary
    pre_prepare = 2, // primary: the block proposed for (view, seq)
    prepare = 3,     // backup: accepted the pre-prepare
    commit = 4,      // replica: prepared; ready to execute
    checkpoint = 5,  // signed: state after seq
    view_change = 6, // signed: wants view v+1, with its prepared / pre-prepared log
    new_view = 7,    // signed: new primary starts the view, with proofs and decisions
    fetch = 8,       // state transfer: ask for blocks in a range
    blocks = 9,      // state transfer: committed blocks and the checkpoint certifying them
    bundle = 10,     // several of the above for one peer, under one MAC (encode_bundle)
};
const char* msg_type_name(MsgType t) noexcept;

// Limits enforced by the decoders.
inline constexpr std::size_t max_log_entries = 100'000;
inline constexpr std::size_t max_view_change_proofs = max_replicas;
inline constexpr std::size_t max_fetch_blocks = 256;

struct Request {
    Tx tx;
    friend bool operator==(const Request&, const Request&) = default;
};

struct PrePrepare {
    std::uint64_t view = 0;
    std::uint64_t seq = 0; // equals block.header.height
    Block block;
    friend bool operator==(const PrePrepare&, const PrePrepare&) = default;
};

// Prepare and commit are the same shape: a vote for (view, seq, block hash).
struct Vote {
    std::uint64_t view = 0;
    std::uint64_t seq = 0;
    Hash256 digest; // block hash
    friend bool operator==(const Vote&, const Vote&) = default;
};

// A replica's signed statement: after executing block `seq` (whose hash is `block_hash`),
// its state root is `state_root`. 2f+1 of them, matching, make a checkpoint certificate.
struct Checkpoint {
    ReplicaId replica = 0;
    std::uint64_t seq = 0;
    Hash256 block_hash;
    Hash256 state_root;
    Signature signature;
    Hash256 signed_digest() const; // what `signature` covers
    friend bool operator==(const Checkpoint&, const Checkpoint&) = default;
};

struct CheckpointCertificate {
    std::vector<Checkpoint>
        checkpoints; // matching (seq, block_hash, state_root), distinct replicas
    friend bool operator==(const CheckpointCertificate&, const CheckpointCertificate&) = default;
};

// One entry of a replica's P (prepared) or Q (pre-prepared) log, or a new-view decision.
// `parent` is the block's prev_hash: blocks chain, so a new primary must re-propose a
// prefix whose blocks extend each other, and every replica must be able to check that
// from the signed view changes alone.
struct LogEntry {
    std::uint64_t seq = 0;
    Hash256 digest;
    std::uint64_t view = 0;
    Hash256 parent;
    friend bool operator==(const LogEntry&, const LogEntry&) = default;
};

struct ViewChange {
    ReplicaId replica = 0;
    std::uint64_t new_view = 0;
    std::uint64_t stable_seq = 0;
    CheckpointCertificate stable_certificate; // empty when stable_seq is genesis (0)
    std::vector<LogEntry> prepared;           // P, sorted by seq
    std::vector<LogEntry> pre_prepared;       // Q, sorted by (seq, digest)
    Signature signature;
    Hash256 signed_digest() const;
    friend bool operator==(const ViewChange&, const ViewChange&) = default;
};

struct NewView {
    ReplicaId replica = 0; // the new primary
    std::uint64_t view = 0;
    std::vector<ViewChange> proofs;  // the view changes the decisions follow from
    std::vector<LogEntry> decisions; // per seq: the digest to re-propose, zero for a null block
    Signature signature;
    Hash256 signed_digest() const;
    friend bool operator==(const NewView&, const NewView&) = default;
};

struct Fetch {
    std::uint64_t from_height = 0;
    std::uint64_t to_height = 0; // inclusive
    friend bool operator==(const Fetch&, const Fetch&) = default;
};

struct Blocks {
    std::vector<Block> blocks;         // consecutive heights
    CheckpointCertificate certificate; // certifies the last block's checkpoint, when it has one
    // The sender's executed height: blocks at or below it are ones it executed (committed),
    // the rest only proposed. f+1 such reports of one block vouch that it is committed.
    std::uint64_t executed_height = 0;
    // A state-transfer chunk: the lowest certificate the sender keeps of a checkpoint among
    // these blocks (empty if none), so that the receiver, which never saw those checkpoints
    // become stable, can keep it and prove the blocks later (Replica::commit_proof).
    CheckpointCertificate chunk_certificate;
    friend bool operator==(const Blocks&, const Blocks&) = default;
};

using Message =
    std::variant<Request, PrePrepare, Vote, Checkpoint, ViewChange, NewView, Fetch, Blocks>;

// The body encodings. decode_message() needs the type to know the shape; prepare and
// commit share the Vote shape.
Bytes encode_body(const Message& m);
Result<Message> decode_body(MsgType type, ByteView body);

// A checkpoint certificate on its own, as the block store keeps every stable one (so that
// Replica::commit_proof can prove any stored block): the same encoding as inside a message.
Bytes encode_checkpoint_certificate(const CheckpointCertificate& certificate);
Result<CheckpointCertificate> decode_checkpoint_certificate(ByteView bytes);

// Checks that a message variant fits its envelope type (Vote for prepare/commit, ...).
bool type_matches(MsgType type, const Message& m);

// A bundle: the messages one pass of a replica has for one peer, in the order it sent them,
// in one envelope, so that the peer checks one MAC and the transport carries one message.
//   bundle body = u32 count (2 .. max_bundle_messages) | count x (u8 type | bytes body)
// No bundle inside a bundle. The decoded bodies are views into `body`.
inline constexpr std::size_t max_bundle_messages = 1u << 16;
struct BundledMessage {
    MsgType type{};
    ByteView body;
};
Bytes encode_bundle(const std::vector<BundledMessage>& messages);
Result<std::vector<BundledMessage>> decode_bundle(ByteView body);

// Signing helpers for the signed statements.
Checkpoint sign_checkpoint(Checkpoint c, const SigningKey& key);
ViewChange sign_view_change(ViewChange v, const SigningKey& key);
NewView sign_new_view(NewView n, const SigningKey& key);

} // namespace popchain::pbft
