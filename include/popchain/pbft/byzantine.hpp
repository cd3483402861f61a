// Byzantine replicas for the simulator: an honest Replica made to lie by its Transport.
//
// A ByzantineTransport wraps the Transport of one (faulty) replica and rewrites, multiplies,
// delays or withholds the envelopes that replica sends, so the replica code under test stays
// the honest code and every lie is told on the wire, where the other replicas must catch it.
//
// How it can lie with valid MACs. The decorator belongs to the faulty replica, so it holds
// that replica's identity key: it shares the MAC key k_self,to with every member and can seal
// any body it likes to any member (LinkAuthenticator::seal). It reads the replica's outgoing
// envelopes by the documented layout (pbft/link.hpp) and the bodies with decode_body. What it
// cannot do is produce a valid envelope that claims another sender: forged copies are meant
// to be refused (forged_sender from any transport that reports the true link; bad_mac even
// from one that lies about the link).
//
// What is rewritten. Only envelopes addressed to a member (id < net::first_client_id, in the
// member list given at construction) whose header parses as a link envelope sealed by this
// replica for that destination; anything else (client traffic, a member added later, bytes
// it cannot parse) is forwarded unchanged. Withholding (silent, silent_to) and delay_ms act
// on every send whatever its destination or content: they model the node, not a message.
// Within one send the order is: withhold; rewrite (equivocate, conflicting_votes; each
// message of a bundle on its own); corrupt or send intact; maybe replay an earlier envelope;
// maybe forge a copy.
//
// Determinism. Every random choice comes from one net::SimRng seeded at construction, so a
// run is reproducible from (seed, sequence of sends). A rate of 0 draws nothing, and
// equivocation and conflicting votes never draw, so adding those two to a behaviour keeps
// its random choices.
//
// Misuse is a logic error (std::invalid_argument): `self` or `key` not in `members`, an inner
// transport whose self() is not `self`, a rate outside [0, 1], replay_history of 0.
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/net/sim_network.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace popchain::pbft {

// What a faulty replica does to its outgoing messages. Plain data; everything is off by
// default, so a default ByzantineBehavior forwards every envelope byte for byte.
struct ByzantineBehavior {
    // Sends nothing at all (a replica that looks crashed, yet still receives and runs).
    bool silent = false;
    // Sends nothing to these nodes (a selective omission: starve chosen peers).
    std::set<ReplicaId> silent_to;

    // For every pre-prepare, the victims get a different block for the same (view, seq): the
    // same transactions with header.timestamp_ms + 1. The timestamp is covered by the block
    // hash but by neither the transaction root nor the state root (Ledger::execute does not
    // check it), so an honest backup accepts either block. Successive alternative blocks
    // chain to each other by prev_hash, so the victims are fed a consistent fork rather than
    // one odd block they would then fail to extend.
    bool equivocate = false;
    // The victims of equivocation. Empty: every second peer by id (the other members sorted
    // by id, positions 1, 3, 5, ...; for n = 4 and self = 0 that is replica 2).
    std::set<ReplicaId> equivocate_to;

    // Prepares and commits to the victims carry another digest: the hash of the alternative
    // block when this replica equivocated that block, else a digest of no block at all.
    bool conflicting_votes = false;
    // Its victims. Empty: the same peers as equivocation, so both lies tell one story.
    std::set<ReplicaId> conflicting_to;

    // Answers to fetches (blocks) carry bodies that do not match their headers: each block
    // loses its last transaction, the headers (and so the hashes the receiver checks the
    // chain by) unchanged, and the answer claims every block in it executed.
    bool tamper_blocks = false;

    // Answers to fetches keep their blocks but carry a chunk certificate
    // (Blocks::chunk_certificate) with one signature altered: blocks a receiver can use,
    // with a proof it must not keep.
    bool forge_chunk_certificates = false;

    // Per send, the probability of also re-sending one earlier envelope (chosen uniformly
    // from the last replay_history sent intact), byte for byte, to its original destination.
    double replay_rate = 0;
    std::size_t replay_history = 1000;

    // Per send, the probability of also sending a copy that claims to come from another
    // member (never this replica or the destination): half the time re-sealed under a key
    // derived from this replica's own secret for the claimed id, half the time the genuine
    // envelope with only its `from` field rewritten. No-op with fewer than three members.
    double forge_rate = 0;

    // Per send, the probability of flipping one random byte of the envelope instead of
    // sending it intact (every field is covered by the MAC or checked by open(), so the
    // receiver refuses it).
    double corrupt_rate = 0;

    // Holds every outgoing message back this long on the inner transport's timers (a slow
    // replica). Its own timers are not slowed.
    net::Millis delay_ms = 0;
};

// What the decorator did, counted per envelope.
struct ByzantineStats {
    std::uint64_t sent = 0;           // envelopes handed to the inner transport (or its timers)
    std::uint64_t passed_through = 0; // sends forwarded unchanged: client or unparseable
    std::uint64_t withheld = 0;       // sends dropped by silent / silent_to
    std::uint64_t equivocated = 0;    // pre-prepares replaced by the alternative block
    std::uint64_t conflicting = 0;    // prepares / commits sent with another digest
    std::uint64_t tampered = 0;       // blocks answers sent with bodies off their headers
    std::uint64_t forged_certs = 0;   // blocks answers sent with a forged chunk certificate
    std::uint64_t replayed = 0;       // earlier envelopes sent again
    std::uint64_t forged = 0;         // copies claiming another sender
    std::uint64_t corrupted = 0;      // envelopes sent with one byte flipped
    std::uint64_t delayed = 0;        // envelopes held back by delay_ms
};

class ByzantineTransport : public net::Transport {
public:
    // `key` is kept BY REFERENCE (SigningKey is move-only; the node owning the replica keeps
    // it) and must outlive this object; `inner` is borrowed likewise. Link keys are derived
    // for `members` here, once: later membership changes are not followed (envelopes to new
    // members pass through unchanged). Throws std::invalid_argument on misuse (see top).
    ByzantineTransport(ReplicaId self, const SigningKey& key,
                       const std::vector<ReplicaInfo>& members, net::Transport& inner,
                       ByzantineBehavior behavior, std::uint64_t seed);

    net::NodeId self() const override { return inner_.self(); }
    void send(net::NodeId to, Bytes message) override;
    net::TimerId set_timer(net::Millis delay, std::function<void()> fire) override {
        return inner_.set_timer(delay, std::move(fire));
    }
    void cancel_timer(net::TimerId id) override { inner_.cancel_timer(id); }
    net::Millis now() const override { return inner_.now(); }

    const ByzantineBehavior& behavior() const { return behavior_; }
    const ByzantineStats& stats() const { return stats_; }
    const SigningKey& key() const { return key_; }

private:
    struct Header {
        MsgType type{};
        ByteView body;
    };
    std::optional<Header> parse(net::NodeId to, ByteView envelope) const;
    bool is_victim(const std::set<ReplicaId>& chosen, ReplicaId to) const;
    std::optional<Bytes> equivocate(ByteView body);
    static std::optional<Bytes> tamper(ByteView body);
    static std::optional<Bytes> forge_chunk_certificate(ByteView body);
    std::optional<Bytes> conflict(MsgType type, ByteView body) const;
    // The lie told instead of one message for `to` (a new body), if any.
    std::optional<Bytes> rewrite(net::NodeId to, MsgType type, ByteView body);
    std::optional<Bytes> forge(net::NodeId to, const Bytes& genuine);
    void emit(net::NodeId to, Bytes message);

    ReplicaId self_;
    const SigningKey& key_;
    std::vector<ReplicaInfo> members_; // sorted by id
    std::set<ReplicaId> default_victims_;
    net::Transport& inner_;
    ByzantineBehavior behavior_;
    net::SimRng rng_;
    LinkAuthenticator link_;
    ByzantineStats stats_;

    // Equivocation: original block hash -> alternative block hash, oldest first evicted.
    std::map<Hash256, Hash256> alternative_;
    std::deque<Hash256> alternative_order_;
    // The last pre-prepare body rewritten, since a broadcast seals the same body per peer.
    Bytes last_body_, last_rewrite_;
    // Intact envelopes sent, for replays.
    std::deque<std::pair<net::NodeId, Bytes>> history_;
    // Authenticators that seal as (claimed sender -> destination) under this replica's key.
    std::map<std::pair<ReplicaId, ReplicaId>, LinkAuthenticator> forgers_;
};

// The wrap hook of the simulated cluster: given a replica's id, identity key, member list and
// real transport, returns the transport that replica must use. Never returns nullptr: a
// replica in `who` gets a ByzantineTransport with its behaviour (dynamic_cast the result to
// read its stats), any other replica a plain pass-through that forwards every call as is.
// Each ByzantineTransport's PRNG is seeded from (seed, replica id), so faulty replicas do not
// draw the same numbers, and a replica wrapped again (after a restart) repeats its choices.
// The returned transport borrows the key and the inner transport, as the constructor says.
using TransportWrapper = std::function<std::unique_ptr<net::Transport>(
    ReplicaId, const SigningKey&, const std::vector<ReplicaInfo>&, net::Transport&)>;
TransportWrapper byzantine_wrapper(std::map<ReplicaId, ByzantineBehavior> who, std::uint64_t seed);

} // namespace popchain::pbft
