// Authenticated replica-to-replica envelopes.
//
//   envelope = u8 version (1) | u8 type | u32 from | u32 to | bytes body | 32-byte MAC
//   MAC      = HMAC-SHA256(k_from,to, "popchain/link/v1" || version .. body)
//
// k_ij is derived from static-static ECDH between the two replicas' identity keys (see
// docs/consensus.md), so two members can authenticate each other with no handshake, on any
// transport. open() accepts an envelope only from a member, addressed to this replica,
// whose claimed sender is the peer the transport delivered it from, with a valid MAC; every
// refusal is a specific error for the drop counters.
#pragma once

#include <popchain/net/transport.hpp>
#include <popchain/pbft/messages.hpp>

#include <map>

namespace popchain::pbft {

// An opened envelope. `body` points into the bytes given to open(): it is valid as long as
// they are, and no copy of a large message (a block, a bundle) is made to read it.
struct Envelope {
    MsgType type{};
    ReplicaId from = 0;
    ReplicaId to = 0;
    ByteView body;
};

class LinkAuthenticator {
public:
    // Derives a key with every other member. Fails if a member's key is not a P-256 point
    // or `self` is not among the members with `key`'s public key.
    static Result<LinkAuthenticator> create(ReplicaId self, const SigningKey& key,
                                            const std::vector<ReplicaInfo>& members);

    ReplicaId self() const { return self_; }
    bool is_member(ReplicaId id) const { return id == self_ || keys_.count(id) != 0; }

    // Membership changes (applied by the replica at checkpoint boundaries).
    Result<void> add_member(const SigningKey& key, const ReplicaInfo& member);
    void remove_member(ReplicaId id) { keys_.erase(id); }

    // The envelope for `to`; `to` must be a member (else the result is empty bytes).
    Bytes seal(ReplicaId to, MsgType type, ByteView body) const;
    // The bundle envelope for `to` (messages.hpp: encode_bundle), written in place.
    Bytes seal_bundle(ReplicaId to, const std::vector<BundledMessage>& messages) const;
    // Checks an envelope that the transport delivered from `link_from`.
    Result<Envelope> open(net::NodeId link_from, ByteView envelope) const;

private:
    LinkAuthenticator(ReplicaId self) : self_(self) {}
    ReplicaId self_;
    // Pairwise MAC keys, by peer (self included), each keyed once. Mutable: a MAC changes
    // the keyed hash's state, so seal() and open() are for one thread at a time (a
    // replica's).
    mutable std::map<ReplicaId, HmacSha256> keys_;
};

} // namespace popchain::pbft
