#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>

namespace popchain::pbft {

namespace {

void encode_checkpoint_fields(Writer& w, const Checkpoint& c) {
    w.u32(c.replica);
    w.u64(c.seq);
    w.fixed(c.block_hash);
    w.fixed(c.state_root);
}

void encode_checkpoint(Writer& w, const Checkpoint& c) {
    encode_checkpoint_fields(w, c);
    w.fixed(c.signature);
}

Checkpoint decode_checkpoint(Reader& r) {
    Checkpoint c;
    c.replica = r.u32();
    c.seq = r.u64();
    c.block_hash = r.fixed<Hash256>();
    c.state_root = r.fixed<Hash256>();
    c.signature = r.fixed<Signature>();
    return c;
}

void encode_certificate(Writer& w, const CheckpointCertificate& c) {
    w.u32(static_cast<std::uint32_t>(c.checkpoints.size()));
    for (const auto& cp : c.checkpoints)
        encode_checkpoint(w, cp);
}

CheckpointCertificate decode_certificate(Reader& r) {
    CheckpointCertificate c;
    std::size_t n = r.count(max_replicas);
    for (std::size_t i = 0; i < n && r.ok(); ++i)
        c.checkpoints.push_back(decode_checkpoint(r));
    return c;
}

void encode_entries(Writer& w, const std::vector<LogEntry>& entries) {
    w.u32(static_cast<std::uint32_t>(entries.size()));
    for (const auto& e : entries) {
        w.u64(e.seq);
        w.fixed(e.digest);
        w.u64(e.view);
        w.fixed(e.parent);
    }
}

std::vector<LogEntry> decode_entries(Reader& r) {
    std::vector<LogEntry> out;
    std::size_t n = r.count(max_log_entries);
    out.reserve(std::min(n, r.remaining() / 80));
    for (std::size_t i = 0; i < n && r.ok(); ++i) {
        LogEntry e;
        e.seq = r.u64();
        e.digest = r.fixed<Hash256>();
        e.view = r.u64();
        e.parent = r.fixed<Hash256>();
        out.push_back(e);
    }
    return out;
}

void encode_view_change_fields(Writer& w, const ViewChange& v) {
    w.u32(v.replica);
    w.u64(v.new_view);
    w.u64(v.stable_seq);
    encode_certificate(w, v.stable_certificate);
    encode_entries(w, v.prepared);
    encode_entries(w, v.pre_prepared);
}

void encode_view_change(Writer& w, const ViewChange& v) {
    encode_view_change_fields(w, v);
    w.fixed(v.signature);
}

ViewChange decode_view_change(Reader& r) {
    ViewChange v;
    v.replica = r.u32();
    v.new_view = r.u64();
    v.stable_seq = r.u64();
    v.stable_certificate = decode_certificate(r);
    v.prepared = decode_entries(r);
    v.pre_prepared = decode_entries(r);
    v.signature = r.fixed<Signature>();
    return v;
}

void encode_new_view_fields(Writer& w, const NewView& n) {
    w.u32(n.replica);
    w.u64(n.view);
    w.u32(static_cast<std::uint32_t>(n.proofs.size()));
    for (const auto& v : n.proofs)
        encode_view_change(w, v);
    encode_entries(w, n.decisions);
}

Hash256 signed_digest_of(std::string_view domain, const Writer& fields) {
    return Sha256().update(domain).update(fields.data()).finish();
}

struct BodyEncoder {
    Writer& w;
    void operator()(const Request& m) { encode_tx(w, m.tx); }
    void operator()(const PrePrepare& m) {
        w.u64(m.view);
        w.u64(m.seq);
        encode_block(w, m.block);
    }
    void operator()(const Vote& m) {
        w.u64(m.view);
        w.u64(m.seq);
        w.fixed(m.digest);
    }
    void operator()(const Checkpoint& m) { encode_checkpoint(w, m); }
    void operator()(const ViewChange& m) { encode_view_change(w, m); }
    void operator()(const NewView& m) {
        encode_new_view_fields(w, m);
        w.fixed(m.signature);
    }
    void operator()(const Fetch& m) {
        w.u64(m.from_height);
        w.u64(m.to_height);
    }
    void operator()(const Blocks& m) {
        w.u32(static_cast<std::uint32_t>(m.blocks.size()));
        for (const auto& b : m.blocks)
            encode_block(w, b);
        encode_certificate(w, m.certificate);
        w.u64(m.executed_height);
        encode_certificate(w, m.chunk_certificate);
    }
};

Message decode_typed(MsgType type, Reader& r) {
    switch (type) {
    case MsgType::request: return Request{decode_tx(r)};
    case MsgType::pre_prepare: {
        PrePrepare m;
        m.view = r.u64();
        m.seq = r.u64();
        m.block = decode_block(r);
        return m;
    }
    case MsgType::prepare:
    case MsgType::commit: {
        Vote m;
        m.view = r.u64();
        m.seq = r.u64();
        m.digest = r.fixed<Hash256>();
        return m;
    }
    case MsgType::checkpoint: return decode_checkpoint(r);
    case MsgType::view_change: return decode_view_change(r);
    case MsgType::new_view: {
        NewView m;
        m.replica = r.u32();
        m.view = r.u64();
        std::size_t n = r.count(max_view_change_proofs);
        for (std::size_t i = 0; i < n && r.ok(); ++i)
            m.proofs.push_back(decode_view_change(r));
        m.decisions = decode_entries(r);
        m.signature = r.fixed<Signature>();
        return m;
    }
    case MsgType::fetch: {
        Fetch m;
        m.from_height = r.u64();
        m.to_height = r.u64();
        return m;
    }
    case MsgType::blocks: {
        Blocks m;
        std::size_t n = r.count(max_fetch_blocks);
        for (std::size_t i = 0; i < n && r.ok(); ++i)
            m.blocks.push_back(decode_block(r));
        m.certificate = decode_certificate(r);
        m.executed_height = r.u64();
        m.chunk_certificate = decode_certificate(r);
        return m;
    }
    case MsgType::bundle: break; // decode_bundle
    }
    r.fail(Errc::unknown_kind, "unknown message type " + std::to_string(static_cast<int>(type)));
    return Request{};
}

constexpr std::string_view link_domain = "popchain/link/v1";
constexpr std::uint8_t link_version = 1;
constexpr std::size_t envelope_header_bytes = 1 + 1 + 4 + 4;
constexpr std::size_t max_body_bytes = 64u << 20;

} // namespace

const char* msg_type_name(MsgType t) noexcept {
    switch (t) {
    case MsgType::request: return "request";
    case MsgType::pre_prepare: return "pre_prepare";
    case MsgType::prepare: return "prepare";
    case MsgType::commit: return "commit";
    case MsgType::checkpoint: return "checkpoint";
    case MsgType::view_change: return "view_change";
    case MsgType::new_view: return "new_view";
    case MsgType::fetch: return "fetch";
    case MsgType::blocks: return "blocks";
    case MsgType::bundle: return "bundle";
    }
    return "unknown";
}

Hash256 Checkpoint::signed_digest() const {
    Writer w;
    encode_checkpoint_fields(w, *this);
    return signed_digest_of("popchain/checkpoint/v1", w);
}

Hash256 ViewChange::signed_digest() const {
    Writer w;
    encode_view_change_fields(w, *this);
    return signed_digest_of("popchain/view-change/v1", w);
}

Hash256 NewView::signed_digest() const {
    Writer w;
    encode_new_view_fields(w, *this);
    return signed_digest_of("popchain/new-view/v1", w);
}

Checkpoint sign_checkpoint(Checkpoint c, const SigningKey& key) {
    c.signature = key.sign(c.signed_digest());
    return c;
}
ViewChange sign_view_change(ViewChange v, const SigningKey& key) {
    v.signature = key.sign(v.signed_digest());
    return v;
}
NewView sign_new_view(NewView n, const SigningKey& key) {
    n.signature = key.sign(n.signed_digest());
    return n;
}

bool type_matches(MsgType type, const Message& m) {
    switch (type) {
    case MsgType::request: return std::holds_alternative<Request>(m);
    case MsgType::pre_prepare: return std::holds_alternative<PrePrepare>(m);
    case MsgType::prepare:
    case MsgType::commit: return std::holds_alternative<Vote>(m);
    case MsgType::checkpoint: return std::holds_alternative<Checkpoint>(m);
    case MsgType::view_change: return std::holds_alternative<ViewChange>(m);
    case MsgType::new_view: return std::holds_alternative<NewView>(m);
    case MsgType::fetch: return std::holds_alternative<Fetch>(m);
    case MsgType::blocks: return std::holds_alternative<Blocks>(m);
    case MsgType::bundle: return false; // not a message of its own: decode_bundle
    }
    return false;
}

Bytes encode_body(const Message& m) {
    // Most bodies are votes of about 50 bytes; growing from empty took seven allocations.
    Writer w(256);
    std::visit(BodyEncoder{w}, m);
    return w.take();
}

Result<Message> decode_body(MsgType type, ByteView body) {
    return decode_all<Message>(body, [type](Reader& r) { return decode_typed(type, r); });
}

Bytes encode_checkpoint_certificate(const CheckpointCertificate& certificate) {
    Writer w;
    encode_certificate(w, certificate);
    return w.take();
}

Result<CheckpointCertificate> decode_checkpoint_certificate(ByteView bytes) {
    return decode_all<CheckpointCertificate>(bytes,
                                             [](Reader& r) { return decode_certificate(r); });
}

namespace {
std::size_t bundle_bytes(const std::vector<BundledMessage>& messages) {
    std::size_t size = 4;
    for (const auto& m : messages)
        size += 1 + 4 + m.body.size();
    return size;
}
void write_bundle(Writer& w, const std::vector<BundledMessage>& messages) {
    w.u32(static_cast<std::uint32_t>(messages.size()));
    for (const auto& m : messages) {
        w.u8(static_cast<std::uint8_t>(m.type));
        w.bytes(m.body);
    }
}
} // namespace

Bytes encode_bundle(const std::vector<BundledMessage>& messages) {
    Writer w(bundle_bytes(messages));
    write_bundle(w, messages);
    return w.take();
}

Result<std::vector<BundledMessage>> decode_bundle(ByteView body) {
    Reader r(body);
    const std::size_t count = r.count(max_bundle_messages);
    if (r.ok() && count < 2) return make_error(Errc::malformed, "a bundle of fewer than two");
    std::vector<BundledMessage> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count && r.ok(); ++i) {
        BundledMessage m;
        m.type = static_cast<MsgType>(r.u8());
        m.body = r.view(max_body_bytes);
        if (r.ok() && m.type == MsgType::bundle)
            return make_error(Errc::malformed, "a bundle inside a bundle");
        out.push_back(m);
    }
    if (auto ok = r.finish(); !ok) return ok.error();
    return out;
}

// ---- link authentication ----

Result<LinkAuthenticator> LinkAuthenticator::create(ReplicaId self, const SigningKey& key,
                                                    const std::vector<ReplicaInfo>& members) {
    LinkAuthenticator link(self);
    bool found_self = false;
    for (const auto& m : members) {
        if (m.id == self) {
            if (m.key != key.public_key())
                return make_error(Errc::invalid_argument,
                                  "replica " + std::to_string(self) +
                                      "'s key does not match the replica set");
            found_self = true;
        }
        if (auto ok = link.add_member(key, m); !ok) return ok.error();
    }
    if (!found_self)
        return make_error(Errc::invalid_argument,
                          "replica " + std::to_string(self) + " is not in the replica set");
    return link;
}

Result<void> LinkAuthenticator::add_member(const SigningKey& key, const ReplicaInfo& member) {
    auto shared = key.agree(member.key);
    if (!shared) return shared.error();
    Writer ids;
    ids.u32(std::min(self_, member.id));
    ids.u32(std::max(self_, member.id));
    const Hash256 pairwise =
        Sha256().update("popchain/mac/v1").update(*shared).update(ids.data()).finish();
    keys_.insert_or_assign(member.id, HmacSha256(pairwise.view()));
    return {};
}

namespace {
// The envelope around a body of `body_size` bytes that `write_body` writes.
template <class WriteBody>
Bytes seal_with(HmacSha256& key, ReplicaId from, ReplicaId to, MsgType type, std::size_t body_size,
                WriteBody write_body) {
    Writer w(envelope_header_bytes + 4 + body_size + 32);
    w.u8(link_version);
    w.u8(static_cast<std::uint8_t>(type));
    w.u32(from);
    w.u32(to);
    w.u32(static_cast<std::uint32_t>(body_size));
    write_body(w);
    Hash256 tag = key.mac(as_bytes(link_domain), w.data());
    w.fixed(tag);
    return w.take();
}
} // namespace

Bytes LinkAuthenticator::seal(ReplicaId to, MsgType type, ByteView body) const {
    auto key = keys_.find(to);
    if (key == keys_.end()) return {};
    return seal_with(key->second, self_, to, type, body.size(), [&](Writer& w) { w.raw(body); });
}

Bytes LinkAuthenticator::seal_bundle(ReplicaId to,
                                     const std::vector<BundledMessage>& messages) const {
    auto key = keys_.find(to);
    if (key == keys_.end()) return {};
    return seal_with(key->second, self_, to, MsgType::bundle, bundle_bytes(messages),
                     [&](Writer& w) { write_bundle(w, messages); });
}

Result<Envelope> LinkAuthenticator::open(net::NodeId link_from, ByteView envelope) const {
    Reader r(envelope);
    Envelope e;
    std::uint8_t version = r.u8();
    e.type = static_cast<MsgType>(r.u8());
    e.from = r.u32();
    e.to = r.u32();
    e.body = r.view(max_body_bytes);
    Hash256 tag = r.fixed<Hash256>();
    if (auto ok = r.finish(); !ok) return ok.error();
    if (version != link_version)
        return make_error(Errc::malformed, "envelope version " + std::to_string(version));
    auto key = keys_.find(e.from);
    if (key == keys_.end())
        return make_error(Errc::unknown_peer,
                          "sender " + std::to_string(e.from) + " is not a member");
    if (e.from != link_from)
        return make_error(Errc::forged_sender, "envelope claims sender " + std::to_string(e.from) +
                                                   " on the link from " +
                                                   std::to_string(link_from));
    if (e.to != self_)
        return make_error(Errc::invalid_argument, "envelope addressed to " + std::to_string(e.to));
    ByteView signed_part = envelope.first(envelope.size() - Hash256::size());
    if (!equal_in_constant_time(key->second.mac(as_bytes(link_domain), signed_part), tag))
        return make_error(Errc::bad_mac, "MAC does not verify");
    return e;
}

} // namespace popchain::pbft
