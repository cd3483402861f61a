#include <popchain/codec.hpp>
#include <popchain/pbft/client.hpp>
#include <popchain/pbft/config.hpp>

#include <algorithm>

namespace popchain::pbft {

namespace {

constexpr std::uint8_t client_version = 1;
constexpr std::string_view reply_domain = "popchain/reply/v1";
constexpr std::size_t max_client_frame_bytes = 1u << 20; // one transaction, generously
constexpr std::size_t max_reply_frame_bytes = 8u << 20;  // max_replies_per_frame, generously

Hash256 reply_mac(const Hash256& key, ByteView signed_part) {
    return hmac_sha256(key.view(), as_bytes(reply_domain), signed_part);
}

Result<ClientMsgType> frame_type(Reader& r) {
    const std::uint8_t version = r.u8();
    const std::uint8_t type = r.u8();
    if (version != client_version)
        return make_error(Errc::malformed, "client frame version " + std::to_string(version));
    if (type != static_cast<std::uint8_t>(ClientMsgType::submit) &&
        type != static_cast<std::uint8_t>(ClientMsgType::reply))
        return make_error(Errc::malformed, "client frame type " + std::to_string(type));
    return static_cast<ClientMsgType>(type);
}

} // namespace

Result<Hash256> reply_key(const SigningKey& own, const PublicKey& peer, ReplicaId replica) {
    auto shared = own.agree(peer);
    if (!shared) return shared.error();
    Writer id;
    id.u32(replica);
    return Sha256().update("popchain/client-mac/v1").update(*shared).update(id.data()).finish();
}

Bytes encode_client_submit(const ClientSubmit& s) {
    Writer w;
    w.u8(client_version);
    w.u8(static_cast<std::uint8_t>(ClientMsgType::submit));
    w.fixed(s.client_key);
    encode_tx(w, s.tx);
    return w.take();
}

Bytes encode_replies(std::span<const Reply> replies, const Hash256& key) {
    Writer w(64 + replies.size() * 96);
    w.u8(client_version);
    w.u8(static_cast<std::uint8_t>(ClientMsgType::reply));
    w.u32(replies.empty() ? 0 : replies.front().replica);
    w.u64(replies.empty() ? 0 : replies.front().view);
    w.u32(static_cast<std::uint32_t>(replies.size()));
    for (const Reply& r : replies) {
        w.fixed(r.txid);
        w.u8(static_cast<std::uint8_t>(r.status));
        w.u16(r.code);
        w.u64(r.height);
        w.fixed(r.block_hash);
        w.bytes(r.result);
    }
    const Hash256 tag = reply_mac(key, w.data());
    w.fixed(tag);
    return w.take();
}

Bytes encode_reply(const Reply& r, const Hash256& key) {
    return encode_replies(std::span<const Reply>(&r, 1), key);
}

Result<ClientMsgType> client_frame_type(ByteView frame) {
    Reader r(frame);
    return frame_type(r);
}

Result<ClientSubmit> decode_client_submit(ByteView frame) {
    if (frame.size() > max_client_frame_bytes)
        return make_error(Errc::too_large,
                          "client frame of " + std::to_string(frame.size()) + " bytes");
    Reader r(frame);
    auto type = frame_type(r);
    if (!type) return type.error();
    if (*type != ClientMsgType::submit) return make_error(Errc::malformed, "not a submit frame");
    ClientSubmit s;
    s.client_key = r.fixed<PublicKey>();
    s.tx = decode_tx(r);
    if (auto ok = r.finish(); !ok) return ok.error();
    if (auto key = parse_public_key(s.client_key.view()); !key) return key.error();
    return s;
}

Result<std::vector<Reply>>
open_replies(ByteView frame, const std::function<std::optional<Hash256>(ReplicaId)>& key_of) {
    if (frame.size() > max_reply_frame_bytes)
        return make_error(Errc::too_large,
                          "reply frame of " + std::to_string(frame.size()) + " bytes");
    Reader r(frame);
    auto type = frame_type(r);
    if (!type) return type.error();
    if (*type != ClientMsgType::reply) return make_error(Errc::malformed, "not a reply frame");
    const ReplicaId replica = r.u32();
    const std::uint64_t view = r.u64();
    const std::uint32_t count = r.u32();
    if (r.ok() && (count == 0 || count > max_replies_per_frame))
        return make_error(Errc::malformed,
                          "reply frame with " + std::to_string(count) + " replies");
    std::vector<Reply> replies;
    for (std::uint32_t i = 0; i < count && r.ok(); ++i) {
        Reply reply;
        reply.replica = replica;
        reply.view = view;
        reply.txid = r.fixed<Hash256>();
        const std::uint8_t status = r.u8();
        reply.code = r.u16();
        reply.height = r.u64();
        reply.block_hash = r.fixed<Hash256>();
        reply.result = r.bytes(max_result_bytes);
        if (r.ok() && status != static_cast<std::uint8_t>(ReplyStatus::committed) &&
            status != static_cast<std::uint8_t>(ReplyStatus::rejected))
            return make_error(Errc::malformed, "reply status " + std::to_string(status));
        reply.status = static_cast<ReplyStatus>(status);
        replies.push_back(std::move(reply));
    }
    const Hash256 tag = r.fixed<Hash256>();
    if (auto ok = r.finish(); !ok) return ok.error();
    const auto key = key_of(replica);
    if (!key)
        return make_error(Errc::unknown_peer,
                          "reply from " + std::to_string(replica) + ", not a replica");
    if (!equal_in_constant_time(reply_mac(*key, frame.first(frame.size() - Hash256::size())), tag))
        return make_error(Errc::bad_mac, "reply MAC does not verify");
    return replies;
}

Result<Reply> open_reply(ByteView frame,
                         const std::function<std::optional<Hash256>(ReplicaId)>& key_of) {
    auto replies = open_replies(frame, key_of);
    if (!replies) return replies.error();
    if (replies->size() != 1) return make_error(Errc::malformed, "more than one reply");
    return std::move(replies->front());
}

Result<void> ClientConfig::validate() const {
    if (retry_ms < 1 || retry_ms > 600'000)
        return make_error(Errc::invalid_argument, "retry_ms must be in 1 .. 600,000");
    if (max_retry_ms < retry_ms || max_retry_ms > 3'600'000)
        return make_error(Errc::invalid_argument, "max_retry_ms must be in retry_ms .. 3,600,000");
    return {};
}

// ---- Client ----

Client::Client(net::Transport& transport, SigningKey session, ClientConfig config)
    : transport_(transport), session_(std::move(session)), config_(config) {}

Client::~Client() {
    *alive_ = false;
    for (auto& [txid, o] : outstanding_)
        if (o.timer != 0) transport_.cancel_timer(o.timer);
}

Result<std::unique_ptr<Client>>
Client::create(net::Transport& transport, std::vector<ReplicaInfo> replicas, ClientConfig config) {
    if (auto ok = config.validate(); !ok) return ok.error();
    std::unique_ptr<Client> client(new Client(transport, SigningKey::generate(), config));
    if (auto ok = client->set_replicas(std::move(replicas)); !ok) return ok.error();
    return client;
}

Result<void> Client::set_replicas(std::vector<ReplicaInfo> replicas) {
    if (replicas.empty()) return make_error(Errc::invalid_argument, "empty replica set");
    std::map<ReplicaId, Hash256> keys;
    for (const auto& r : replicas) {
        auto key = reply_key(session_, r.key, r.id);
        if (!key) return key.error();
        if (!keys.emplace(r.id, *key).second)
            return make_error(Errc::invalid_argument,
                              "replica " + std::to_string(r.id) + " listed twice");
    }
    replicas_ = std::move(replicas);
    keys_ = std::move(keys);
    // Replies from replicas that left no longer count.
    for (auto& [txid, o] : outstanding_)
        std::erase_if(o.replies, [&](const auto& kv) { return keys_.count(kv.first) == 0; });
    return {};
}

std::uint32_t Client::f() const {
    return max_faulty(static_cast<std::uint32_t>(replicas_.size()));
}

void Client::submit(const Tx& tx, DoneFn done) {
    const Hash256 txid = tx.id();
    if (auto it = outstanding_.find(txid); it != outstanding_.end()) {
        it->second.done.push_back(std::move(done));
        return;
    }
    ++stats_.submitted;
    Outstanding& o = outstanding_[txid];
    o.tx = tx;
    o.frame = encode_client_submit(ClientSubmit{session_.public_key(), tx});
    o.done.push_back(std::move(done));
    o.started = transport_.now();
    o.interval = config_.retry_ms;
    send_to_all(o);
    arm(txid, o);
}

void Client::arm(const Hash256& txid, Outstanding& o) {
    std::weak_ptr<bool> alive = alive_;
    o.timer = transport_.set_timer(o.interval, [this, alive, txid] {
        if (alive.expired()) return;
        retry(txid);
    });
}

void Client::send_to_all(const Outstanding& o) {
    for (const auto& r : replicas_)
        transport_.send(r.id, o.frame);
}

void Client::retry(const Hash256& txid) {
    auto it = outstanding_.find(txid);
    if (it == outstanding_.end()) return;
    Outstanding& o = it->second;
    o.timer = 0;
    if (config_.give_up_ms != 0 && transport_.now() - o.started >= config_.give_up_ms) {
        ++stats_.timed_out;
        finish(txid, make_error(Errc::timeout, "no f+1 matching replies"));
        return;
    }
    ++stats_.retransmissions;
    send_to_all(o);
    o.interval = std::min(o.interval * 2, config_.max_retry_ms);
    arm(txid, o);
}

void Client::on_message(net::NodeId from, ByteView message) {
    auto replies = open_replies(message, [this](ReplicaId id) -> std::optional<Hash256> {
        auto it = keys_.find(id);
        if (it == keys_.end()) return std::nullopt;
        return it->second;
    });
    if (!replies || replies->front().replica != from) {
        ++stats_.bad_replies;
        return;
    }
    for (Reply& reply : *replies)
        on_reply(std::move(reply));
}

void Client::on_reply(Reply&& reply) {
    ++stats_.replies;
    auto it = outstanding_.find(reply.txid);
    if (it == outstanding_.end()) {
        ++stats_.stale_replies;
        return;
    }
    Outstanding& o = it->second;
    const ReplicaId from = reply.replica;
    o.replies[from] = std::move(reply);
    const Reply& latest = o.replies[from];
    std::size_t matching = 0;
    for (const auto& [id, r] : o.replies)
        if (r.status == latest.status && r.code == latest.code && r.height == latest.height &&
            r.block_hash == latest.block_hash && r.result == latest.result)
            ++matching;
    if (matching < f() + 1) return;
    const Hash256 txid = latest.txid;
    if (latest.status == ReplyStatus::committed) {
        ++stats_.committed;
        finish(txid, Committed{txid, latest.height, latest.block_hash, latest.result});
    } else {
        ++stats_.rejected;
        finish(txid, make_error(static_cast<Errc>(latest.code),
                                "refused by " + std::to_string(matching) + " replicas"));
    }
}

void Client::finish(const Hash256& txid, Result<Committed> result) {
    auto node = outstanding_.extract(txid);
    if (node.empty()) return;
    Outstanding& o = node.mapped();
    if (o.timer != 0) transport_.cancel_timer(o.timer);
    std::weak_ptr<bool> alive = alive_;
    for (auto& done : o.done) {
        if (alive.expired()) return; // a callback destroyed the client
        done(result);
    }
}

} // namespace popchain::pbft
