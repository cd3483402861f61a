// Byzantine behaviour as a Transport decorator (see pbft/byzantine.hpp for the contract).
#include <popchain/codec.hpp>
#include <popchain/pbft/byzantine.hpp>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace popchain::pbft {

namespace {

// The envelope layout of pbft/link.hpp: version, type, from, to, length-prefixed body, MAC.
constexpr std::uint8_t link_version = 1;
constexpr std::size_t from_offset = 2;
constexpr std::size_t body_offset = 1 + 1 + 4 + 4 + 4;
constexpr std::size_t mac_bytes = Hash256::size();

// Enough to cover any fork a victim can still be extending: far beyond a watermark window.
constexpr std::size_t alternative_memory = 1024;

LinkAuthenticator link_or_throw(ReplicaId self, const SigningKey& key,
                                const std::vector<ReplicaInfo>& members) {
    auto link = LinkAuthenticator::create(self, key, members);
    if (!link) throw std::invalid_argument("ByzantineTransport: " + link.error().message());
    return std::move(link).value();
}

void check_rate(const char* name, double rate) {
    if (!(rate >= 0 && rate <= 1)) // NaN fails too
        throw std::invalid_argument(std::string("ByzantineTransport: ") + name +
                                    " must be in [0, 1]");
}

// What a replica not in the Byzantine set gets: its transport, untouched.
class PassThrough : public net::Transport {
public:
    explicit PassThrough(net::Transport& inner) : inner_(inner) {}
    net::NodeId self() const override { return inner_.self(); }
    void send(net::NodeId to, Bytes message) override { inner_.send(to, std::move(message)); }
    net::TimerId set_timer(net::Millis delay, std::function<void()> fire) override {
        return inner_.set_timer(delay, std::move(fire));
    }
    void cancel_timer(net::TimerId id) override { inner_.cancel_timer(id); }
    net::Millis now() const override { return inner_.now(); }

private:
    net::Transport& inner_;
};

} // namespace

ByzantineTransport::ByzantineTransport(ReplicaId self, const SigningKey& key,
                                       const std::vector<ReplicaInfo>& members,
                                       net::Transport& inner, ByzantineBehavior behavior,
                                       std::uint64_t seed)
    : self_(self), key_(key), members_(members), inner_(inner), behavior_(std::move(behavior)),
      rng_(seed), link_(link_or_throw(self, key, members)) {
    check_rate("replay_rate", behavior_.replay_rate);
    check_rate("forge_rate", behavior_.forge_rate);
    check_rate("corrupt_rate", behavior_.corrupt_rate);
    if (behavior_.replay_history == 0)
        throw std::invalid_argument("ByzantineTransport: replay_history must be at least 1");
    if (inner_.self() != self)
        throw std::invalid_argument("ByzantineTransport: the inner transport is node " +
                                    std::to_string(inner_.self()) + ", not replica " +
                                    std::to_string(self));
    std::sort(members_.begin(), members_.end(),
              [](const ReplicaInfo& a, const ReplicaInfo& b) { return a.id < b.id; });
    std::size_t position = 0;
    for (const auto& m : members_) {
        if (m.id == self_) continue;
        if (position++ % 2 == 1) default_victims_.insert(m.id);
    }
}

std::optional<ByzantineTransport::Header> ByzantineTransport::parse(net::NodeId to,
                                                                    ByteView envelope) const {
    // Only what this replica sealed for `to` is ours to rewrite: anything else might be a
    // message we do not understand, and must reach the wire as the replica meant it.
    if (to >= net::first_client_id || to == self_ || !link_.is_member(to)) return std::nullopt;
    if (envelope.size() < body_offset + mac_bytes) return std::nullopt;
    Reader r(envelope);
    const std::uint8_t version = r.u8();
    const auto type = static_cast<MsgType>(r.u8());
    const std::uint32_t from = r.u32();
    const std::uint32_t dest = r.u32();
    const std::uint32_t length = r.u32();
    if (version != link_version || from != self_ || dest != to) return std::nullopt;
    if (envelope.size() != body_offset + std::size_t{length} + mac_bytes) return std::nullopt;
    return Header{type, envelope.subspan(body_offset, length)};
}

bool ByzantineTransport::is_victim(const std::set<ReplicaId>& chosen, ReplicaId to) const {
    return chosen.empty() ? default_victims_.count(to) != 0 : chosen.count(to) != 0;
}

std::optional<Bytes> ByzantineTransport::equivocate(ByteView body) {
    if (!last_body_.empty() &&
        std::equal(body.begin(), body.end(), last_body_.begin(), last_body_.end()))
        return last_rewrite_;
    auto decoded = decode_body(MsgType::pre_prepare, body);
    if (!decoded || !std::holds_alternative<PrePrepare>(*decoded)) return std::nullopt;
    PrePrepare pp = std::get<PrePrepare>(std::move(*decoded));
    const Hash256 original = pp.block.hash();
    // Follow our own fork: a victim that took the alternative parent must get a child of it.
    if (auto parent = alternative_.find(pp.block.header.prev_hash); parent != alternative_.end())
        pp.block.header.prev_hash = parent->second;
    ++pp.block.header.timestamp_ms;
    if (alternative_.emplace(original, pp.block.hash()).second) {
        alternative_order_.push_back(original);
        if (alternative_order_.size() > alternative_memory) {
            alternative_.erase(alternative_order_.front());
            alternative_order_.pop_front();
        }
    }
    last_body_.assign(body.begin(), body.end());
    last_rewrite_ = encode_body(pp);
    return last_rewrite_;
}

std::optional<Bytes> ByzantineTransport::tamper(ByteView body) {
    auto decoded = decode_body(MsgType::blocks, body);
    if (!decoded || !std::holds_alternative<Blocks>(*decoded)) return std::nullopt;
    Blocks b = std::get<Blocks>(std::move(*decoded));
    bool changed = false;
    for (Block& block : b.blocks)
        if (!block.txs.empty()) {
            block.txs.pop_back();
            changed = true;
        }
    if (!changed) return std::nullopt;
    b.executed_height = std::numeric_limits<std::uint64_t>::max();
    return encode_body(b);
}

std::optional<Bytes> ByzantineTransport::forge_chunk_certificate(ByteView body) {
    auto decoded = decode_body(MsgType::blocks, body);
    if (!decoded || !std::holds_alternative<Blocks>(*decoded)) return std::nullopt;
    Blocks b = std::get<Blocks>(std::move(*decoded));
    if (b.chunk_certificate.checkpoints.empty()) return std::nullopt;
    b.chunk_certificate.checkpoints.back().signature.data()[7] ^= 0x01;
    return encode_body(b);
}

std::optional<Bytes> ByzantineTransport::conflict(MsgType type, ByteView body) const {
    auto decoded = decode_body(type, body);
    if (!decoded || !std::holds_alternative<Vote>(*decoded)) return std::nullopt;
    Vote v = std::get<Vote>(*decoded);
    if (auto alt = alternative_.find(v.digest); alt != alternative_.end())
        v.digest = alt->second;
    else
        v.digest = Sha256().update("popchain/byzantine/conflict/v1").update(v.digest).finish();
    return encode_body(v);
}

std::optional<Bytes> ByzantineTransport::forge(net::NodeId to, const Bytes& genuine) {
    // Claiming to be the destination itself or this replica would not be a forgery of
    // another member; the receiver checks those differently.
    std::vector<const ReplicaInfo*> claimable;
    const ReplicaInfo* dest = nullptr;
    for (const auto& m : members_) {
        if (m.id == to) dest = &m;
        if (m.id != self_ && m.id != to) claimable.push_back(&m);
    }
    if (claimable.empty() || dest == nullptr) return std::nullopt;
    const ReplicaId claimed = claimable[rng_.uniform(0, claimable.size() - 1)]->id;

    if (rng_.chance(0.5)) {
        // Re-sealed: an authenticator that believes it is `claimed` holding our key, so the
        // envelope is well formed and MAC'd, under a key the receiver does not share with
        // `claimed` (pairwise keys bind both ids as well as the secret).
        auto forger = forgers_.find({claimed, to});
        if (forger == forgers_.end()) {
            auto made = LinkAuthenticator::create(
                claimed, key_, {ReplicaInfo{claimed, key_.public_key(), ""}, *dest});
            if (made)
                forger = forgers_.emplace(std::pair{claimed, to}, std::move(made).value()).first;
        }
        auto header = parse(to, genuine);
        if (forger != forgers_.end() && header)
            return forger->second.seal(to, header->type, header->body);
    }
    // Re-labelled: the genuine bytes with another sender written in, MAC untouched.
    Bytes copy = genuine;
    for (std::size_t i = 0; i < 4; ++i)
        copy[from_offset + i] = static_cast<std::uint8_t>(claimed >> (8 * i));
    return copy;
}

void ByzantineTransport::emit(net::NodeId to, Bytes message) {
    ++stats_.sent;
    if (behavior_.delay_ms == 0) {
        inner_.send(to, std::move(message));
        return;
    }
    ++stats_.delayed;
    // Capture the inner transport, not this: a held-back message still leaves if the
    // decorator is destroyed first (the inner transport outlives its timers).
    net::Transport& inner = inner_;
    inner_.set_timer(behavior_.delay_ms, [&inner, to, m = std::move(message)]() mutable {
        inner.send(to, std::move(m));
    });
}

std::optional<Bytes> ByzantineTransport::rewrite(net::NodeId to, MsgType type, ByteView body) {
    std::optional<Bytes> rewritten;
    const bool vote = type == MsgType::prepare || type == MsgType::commit;
    const auto& conflicting_to =
        behavior_.conflicting_to.empty() ? behavior_.equivocate_to : behavior_.conflicting_to;
    if (behavior_.equivocate && type == MsgType::pre_prepare &&
        is_victim(behavior_.equivocate_to, to)) {
        if ((rewritten = equivocate(body))) ++stats_.equivocated;
    } else if (behavior_.tamper_blocks && type == MsgType::blocks) {
        if ((rewritten = tamper(body))) ++stats_.tampered;
    } else if (behavior_.forge_chunk_certificates && type == MsgType::blocks) {
        if ((rewritten = forge_chunk_certificate(body))) ++stats_.forged_certs;
    } else if (behavior_.conflicting_votes && vote && is_victim(conflicting_to, to)) {
        if ((rewritten = conflict(type, body))) ++stats_.conflicting;
    }
    return rewritten;
}

void ByzantineTransport::send(net::NodeId to, Bytes message) {
    if (behavior_.silent || behavior_.silent_to.count(to) != 0) {
        ++stats_.withheld;
        return;
    }
    auto header = parse(to, message);
    if (!header) {
        ++stats_.passed_through;
        emit(to, std::move(message));
        return;
    }

    std::optional<Bytes> rewritten;
    if (header->type != MsgType::bundle) {
        if (auto body = rewrite(to, header->type, header->body))
            rewritten = link_.seal(to, header->type, *body);
    } else if (auto bundle = decode_bundle(header->body)) {
        std::vector<Bytes> bodies; // the rewritten bodies the bundle's views point into
        bodies.reserve(bundle->size());
        for (BundledMessage& m : *bundle)
            if (auto body = rewrite(to, m.type, m.body)) {
                bodies.push_back(std::move(*body));
                m.body = bodies.back();
            }
        if (!bodies.empty()) rewritten = link_.seal_bundle(to, *bundle);
    }
    Bytes envelope = rewritten ? std::move(*rewritten) : std::move(message);

    const bool corrupt = behavior_.corrupt_rate > 0 && rng_.chance(behavior_.corrupt_rate);
    if (corrupt) {
        Bytes bad = envelope;
        const std::size_t at = rng_.uniform(0, bad.size() - 1);
        bad[at] ^= static_cast<std::uint8_t>(rng_.uniform(1, 255));
        ++stats_.corrupted;
        emit(to, std::move(bad));
    } else {
        emit(to, envelope);
    }

    // Chosen before this envelope joins the history: a replay is of something sent earlier.
    if (behavior_.replay_rate > 0 && rng_.chance(behavior_.replay_rate) && !history_.empty()) {
        const auto& [old_to, old] = history_[rng_.uniform(0, history_.size() - 1)];
        ++stats_.replayed;
        emit(old_to, old);
    }
    if (!corrupt) {
        if (history_.size() == behavior_.replay_history) history_.pop_front();
        history_.emplace_back(to, envelope);
    }

    if (behavior_.forge_rate > 0 && rng_.chance(behavior_.forge_rate)) {
        if (auto forged = forge(to, envelope)) {
            ++stats_.forged;
            emit(to, std::move(*forged));
        }
    }
}

TransportWrapper byzantine_wrapper(std::map<ReplicaId, ByzantineBehavior> who, std::uint64_t seed) {
    return [who = std::move(who), seed](ReplicaId id, const SigningKey& key,
                                        const std::vector<ReplicaInfo>& members,
                                        net::Transport& inner) -> std::unique_ptr<net::Transport> {
        auto it = who.find(id);
        if (it == who.end()) return std::make_unique<PassThrough>(inner);
        // SimRng runs the seed through splitmix64, so adjacent seeds give unrelated streams.
        const std::uint64_t own_seed = seed + 0x9e3779b97f4a7c15ull * (std::uint64_t{id} + 1);
        return std::make_unique<ByzantineTransport>(id, key, members, inner, it->second, own_seed);
    };
}

} // namespace popchain::pbft
