// The client side of pBFT: submitting a transaction to the replicas and trusting the answer.
//
// Clients are not members, so their messages do not travel in link envelopes (link.hpp).
// A client frame is
//
//   frame  = u8 version (1) | u8 type | body
//   submit = 33-byte client public key | tx                          (client -> replica)
//   replies = u32 replica | u64 view | u32 count | count x reply | 32-byte MAC
//                                                                    (replica -> client)
//   reply   = txid | u8 status | u16 code | u64 height | block hash | bytes result
//   MAC    = HMAC-SHA256(k, "popchain/reply/v1" || frame up to the MAC)
//   k      = SHA-256("popchain/client-mac/v1" || ECDH(replica key, client key) || u32 replica)
//
// A replica answers every request of one client that one block settled in one frame, with
// one MAC: at hundreds of commands per block, a frame and a MAC per reply would cost the
// client more than the commands cost the replicas.
//
// The client key is a session key the client makes up (it need not be a wallet key: the
// transaction carries its own signature). The replica derives k from the static-static ECDH
// of its identity key and that key, so a reply is authenticated end to end with no handshake
// and no replica signature per reply, whatever transport carried it.
//
// A reply says "committed at (height, block hash)", with the application's result for a
// command (application.hpp; empty otherwise), or "rejected with code". One replica may lie,
// so the client trusts an answer only when f+1 replicas sent the same (status, code, height,
// block hash, result): at least one of them is honest. A reply answered from the store (a
// late duplicate, below) carries no result: an application keeps no results, so a client
// that needs one must ask before the command's reply is done. A committed transaction's reply comes
// from the replica's block store, which therefore serves as the durable reply cache: a
// duplicate or late request for a committed transaction is answered from it and never
// enters the mempool again.
#pragma once

#include <popchain/application.hpp>
#include <popchain/crypto.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/pbft/messages.hpp>
#include <popchain/result.hpp>
#include <popchain/transaction.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

namespace popchain::pbft {

using Millis = net::Millis;

enum class ClientMsgType : std::uint8_t { submit = 1, reply = 2 };

enum class ReplyStatus : std::uint8_t { committed = 1, rejected = 2 };

struct ClientSubmit {
    PublicKey client_key;
    Tx tx;
    friend bool operator==(const ClientSubmit&, const ClientSubmit&) = default;
};

struct Reply {
    ReplicaId replica = 0;
    std::uint64_t view = 0; // the replica's view when it replied (for diagnostics)
    Hash256 txid;
    ReplyStatus status = ReplyStatus::committed;
    std::uint16_t code = 0;   // the Errc of a rejection, 0 when committed
    std::uint64_t height = 0; // committed: the block's height
    Hash256 block_hash;       // committed: the block's hash
    Bytes result;             // committed command: the application's result (may be empty)
    friend bool operator==(const Reply&, const Reply&) = default;
};

// The reply MAC key between `replica` (holding `replica_key`) and a client's session key.
// The client computes the same value from its own key and the replica's public key.
Result<Hash256> reply_key(const SigningKey& own, const PublicKey& peer, ReplicaId replica);

Bytes encode_client_submit(const ClientSubmit& s);
// At most this many replies per frame (encode_replies' caller splits longer lists).
inline constexpr std::size_t max_replies_per_frame = 4096;
// `replies` (1..max_replies_per_frame) share the frame's replica and view: the first's.
Bytes encode_replies(std::span<const Reply> replies, const Hash256& key);
Bytes encode_reply(const Reply& r, const Hash256& key);
// The frame's type byte, if it has a known version and type.
Result<ClientMsgType> client_frame_type(ByteView frame);
Result<ClientSubmit> decode_client_submit(ByteView frame);
// Decodes a reply frame and checks its MAC with `key_of(replica)` (nullopt: unknown
// replica); every reply gets the frame's replica and view.
Result<std::vector<Reply>>
open_replies(ByteView frame, const std::function<std::optional<Hash256>(ReplicaId)>& key_of);
// The same for a frame of exactly one reply.
Result<Reply> open_reply(ByteView frame,
                         const std::function<std::optional<Hash256>(ReplicaId)>& key_of);

struct ClientConfig {
    // A request unanswered by f+1 matching replies after this long is sent again, to every
    // replica; the interval doubles up to max_retry_ms.
    Millis retry_ms = 500;
    Millis max_retry_ms = 8000;
    // Give up (done with Errc::timeout) after this long; 0 = never.
    Millis give_up_ms = 0;
    Result<void> validate() const;
};

struct ClientStats {
    std::uint64_t submitted = 0;
    std::uint64_t committed = 0;       // done with f+1 matching committed replies
    std::uint64_t rejected = 0;        // done with f+1 matching rejections
    std::uint64_t timed_out = 0;       // gave up
    std::uint64_t retransmissions = 0; // requests re-sent to every replica
    std::uint64_t replies = 0;         // authenticated replies received
    std::uint64_t bad_replies = 0;     // malformed, unknown replica, bad MAC, forged sender
    std::uint64_t stale_replies = 0;   // for a transaction no longer outstanding
};

// Outcome of a committed transaction, vouched for by f+1 replicas.
struct Committed {
    Hash256 txid;
    std::uint64_t height = 0;
    Hash256 block_hash;
    Bytes result; // a command's result from the application, as f+1 replicas sent it
    friend bool operator==(const Committed&, const Committed&) = default;
};

// An event-driven client, like the replica: no sockets, threads or clock of its own.
// Attach it to a transport as the Receiver of a node id >= net::first_client_id.
class Client : public net::Receiver {
public:
    using DoneFn = std::function<void(Result<Committed>)>;

    // `replicas` is the set the client trusts (ids and identity keys). Fails for a bad
    // configuration, an empty set or a replica key that is not a P-256 point.
    static Result<std::unique_ptr<Client>>
    create(net::Transport& transport, std::vector<ReplicaInfo> replicas, ClientConfig config = {});
    ~Client() override;
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Sends `tx` to every replica and again, with backoff, until f+1 replicas agree on its
    // fate; then calls `done` once, on the transport's thread. Submitting a transaction that
    // is still outstanding only adds `done` to it.
    //
    // Why every replica, at once: a replica answers only clients it heard from (the block
    // does not say who submitted what), and the client needs f+1 answers; and a request
    // that reaches every replica cannot be held back by a faulty primary, since every
    // backup then watches the primary for it. Replicas do not pass client requests on to
    // the primary, so the primary still receives each one once.
    void submit(const Tx& tx, DoneFn done);

    // Replaces the trusted replica set (after a membership change the client learnt of).
    Result<void> set_replicas(std::vector<ReplicaInfo> replicas);

    void on_message(net::NodeId from, ByteView message) override;

    std::size_t outstanding() const { return outstanding_.size(); }
    const ClientStats& stats() const { return stats_; }
    const PublicKey& session_key() const { return session_.public_key(); }

private:
    struct Outstanding {
        Tx tx;
        Bytes frame;
        std::vector<DoneFn> done;
        std::map<ReplicaId, Reply> replies; // latest per replica
        Millis started = 0;
        Millis interval = 0;
        net::TimerId timer = 0;
    };
    Client(net::Transport& transport, SigningKey session, ClientConfig config);
    void send_to_all(const Outstanding& o);
    void arm(const Hash256& txid, Outstanding& o);
    void retry(const Hash256& txid);
    void on_reply(Reply&& reply);
    void finish(const Hash256& txid, Result<Committed> result);
    std::uint32_t f() const;

    net::Transport& transport_;
    SigningKey session_;
    ClientConfig config_;
    std::vector<ReplicaInfo> replicas_;
    std::map<ReplicaId, Hash256> keys_;
    std::unordered_map<Hash256, Outstanding, FixedBytesHash> outstanding_;
    ClientStats stats_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

} // namespace popchain::pbft
