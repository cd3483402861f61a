#include <popchain/transaction.hpp>

#include <algorithm>

namespace popchain {

namespace {
constexpr std::string_view tx_domain = "popchain/tx/v1";

constexpr std::uint8_t last_kind = static_cast<std::uint8_t>(TxKind::command);

bool valid_kind(std::uint8_t k) {
    return k >= 1 && k <= last_kind;
}

// A command carries only the fields it uses, and an unsigned one no key or signature: at
// 8-byte commands the fixed fields of the other kinds would be 20 times the command.
void encode_command_unsigned(Writer& w, const Tx& tx) {
    w.u8(static_cast<std::uint8_t>(tx.kind));
    w.str(tx.chain_id);
    w.fixed(tx.from);
    w.u64(tx.nonce);
    w.bytes(tx.payload);
    const bool is_signed = !tx.public_key.is_zero();
    w.u8(is_signed ? 1 : 0);
    if (is_signed) w.fixed(tx.public_key);
}

void encode_unsigned(Writer& w, const Tx& tx) {
    if (tx.kind == TxKind::command) {
        encode_command_unsigned(w, tx);
        return;
    }
    w.u8(static_cast<std::uint8_t>(tx.kind));
    w.str(tx.chain_id);
    w.fixed(tx.from);
    w.fixed(tx.to);
    w.u64(tx.amount);
    w.u64(tx.nonce);
    w.fixed(tx.trade_id);
    w.u64(tx.deadline);
    w.bytes(tx.payload);
    w.fixed(tx.public_key);
}
} // namespace

const char* tx_kind_name(TxKind kind) noexcept {
    switch (kind) {
    case TxKind::transfer: return "transfer";
    case TxKind::mint: return "mint";
    case TxKind::escrow_open: return "escrow_open";
    case TxKind::escrow_release: return "escrow_release";
    case TxKind::escrow_refund: return "escrow_refund";
    case TxKind::config: return "config";
    case TxKind::command: return "command";
    }
    return "unknown";
}

std::optional<TxKind> tx_kind_from_name(std::string_view name) noexcept {
    for (std::uint8_t k = 1; k <= last_kind; ++k)
        if (name == tx_kind_name(static_cast<TxKind>(k))) return static_cast<TxKind>(k);
    return std::nullopt;
}

namespace {
void write_signing_bytes(Writer& w, const Tx& tx) {
    w.raw(as_bytes(tx_domain));
    encode_unsigned(w, tx);
}
} // namespace

Bytes Tx::signing_bytes() const {
    Writer w(256 + payload.size());
    write_signing_bytes(w, *this);
    return w.take();
}

Hash256 Tx::id() const {
    // Ids are computed at every step a transaction passes (admission, blocks, execution,
    // store); the thread's one buffer spares an allocation each time.
    thread_local Writer w(256);
    w.clear();
    write_signing_bytes(w, *this);
    return sha256(w.data());
}

bool is_unsigned_command(const Tx& tx) {
    return tx.kind == TxKind::command && tx.public_key.is_zero();
}

void encode_tx(Writer& w, const Tx& tx) {
    encode_unsigned(w, tx);
    if (!is_unsigned_command(tx)) w.fixed(tx.signature);
}

std::size_t encoded_size(const Tx& tx) {
    constexpr std::size_t length_prefix = 4;
    const std::size_t common = 1 + length_prefix + tx.chain_id.size() + tx.from.bytes.size() + 8 +
                               length_prefix + tx.payload.size();
    const std::size_t key_and_signature = tx.public_key.bytes.size() + tx.signature.bytes.size();
    if (tx.kind == TxKind::command)
        return common + 1 + (is_unsigned_command(tx) ? 0 : key_and_signature);
    return common + tx.to.bytes.size() + 8 + tx.trade_id.bytes.size() + 8 + key_and_signature;
}

Bytes Tx::encode() const {
    Writer w(256 + payload.size());
    encode_tx(w, *this);
    return w.take();
}

Tx decode_tx(Reader& r) {
    Tx tx;
    std::uint8_t kind = r.u8();
    if (r.ok() && !valid_kind(kind)) r.fail(Errc::unknown_kind, "tx kind " + std::to_string(kind));
    tx.kind = static_cast<TxKind>(kind);
    tx.chain_id = r.str(max_chain_id_bytes);
    if (tx.kind == TxKind::command) {
        tx.from = r.fixed<Address>();
        tx.nonce = r.u64();
        tx.payload = r.bytes(max_payload_bytes);
        const std::uint8_t is_signed = r.u8();
        if (r.ok() && is_signed > 1) r.fail(Errc::malformed, "command signed flag");
        if (is_signed == 1) {
            tx.public_key = r.fixed<PublicKey>();
            tx.signature = r.fixed<Signature>();
            // A zero key would encode back as unsigned: one value, one encoding.
            if (r.ok() && tx.public_key.is_zero())
                r.fail(Errc::malformed, "signed command with a zero key");
        }
        return tx;
    }
    tx.from = r.fixed<Address>();
    tx.to = r.fixed<Address>();
    tx.amount = r.u64();
    tx.nonce = r.u64();
    tx.trade_id = r.fixed<Hash256>();
    tx.deadline = r.u64();
    tx.payload = r.bytes(max_payload_bytes);
    tx.public_key = r.fixed<PublicKey>();
    tx.signature = r.fixed<Signature>();
    return tx;
}

// Field for field the layout decode_tx reads.
void skip_tx(Reader& r) {
    std::uint8_t kind = r.u8();
    if (r.ok() && !valid_kind(kind)) r.fail(Errc::unknown_kind, "tx kind " + std::to_string(kind));
    r.skip_bytes(max_chain_id_bytes);
    if (kind == static_cast<std::uint8_t>(TxKind::command)) {
        r.skip(Address::size() + 8);
        r.skip_bytes(max_payload_bytes);
        const std::uint8_t is_signed = r.u8();
        if (r.ok() && is_signed > 1) r.fail(Errc::malformed, "command signed flag");
        if (is_signed == 1) {
            if (r.ok() && r.fixed<PublicKey>().is_zero())
                r.fail(Errc::malformed, "signed command with a zero key");
            r.skip(Signature::size());
        }
        return;
    }
    r.skip(Address::size() + Address::size() + 8 + 8 + Hash256::size() + 8);
    r.skip_bytes(max_payload_bytes);
    r.skip(PublicKey::size() + Signature::size());
}

Result<Tx> decode_tx(ByteView bytes) {
    return decode_all<Tx>(bytes, [](Reader& r) { return decode_tx(r); });
}

Tx sign_tx(Tx tx, const SigningKey& key) {
    tx.public_key = key.public_key();
    tx.from = key.address();
    tx.signature = key.sign(tx.id());
    return tx;
}

Result<void> check_tx_shape(const Tx& tx) {
    auto unused = [](const char* field) {
        return make_error(Errc::malformed, std::string(field) + " must be empty for this kind");
    };
    switch (tx.kind) {
    case TxKind::transfer:
    case TxKind::mint:
    case TxKind::escrow_open:
        if (tx.amount == 0) return make_error(Errc::zero_amount, "amount must be positive");
        // Nobody holds the key of the zero address: funds sent there would be lost for good.
        if (tx.to.is_zero()) return make_error(Errc::malformed, "recipient address is zero");
        if (tx.kind != TxKind::escrow_open) {
            if (!tx.trade_id.is_zero()) return unused("trade_id");
            if (tx.deadline != 0) return unused("deadline");
        } else if (tx.trade_id.is_zero()) {
            return make_error(Errc::malformed, "escrow_open needs a trade_id");
        }
        break;
    case TxKind::escrow_release:
    case TxKind::escrow_refund:
        if (tx.trade_id.is_zero()) return make_error(Errc::malformed, "escrow tx needs a trade_id");
        if (tx.amount != 0) return unused("amount");
        if (!tx.to.is_zero()) return unused("to");
        if (tx.deadline != 0) return unused("deadline");
        break;
    case TxKind::config: {
        if (tx.amount != 0) return unused("amount");
        if (!tx.to.is_zero()) return unused("to");
        if (!tx.trade_id.is_zero()) return unused("trade_id");
        if (tx.deadline != 0) return unused("deadline");
        auto change = decode_config_change(tx.payload);
        if (!change) return make_error(Errc::bad_config, change.error().message());
        break;
    }
    case TxKind::command:
        if (tx.amount != 0) return unused("amount");
        if (!tx.to.is_zero()) return unused("to");
        if (!tx.trade_id.is_zero()) return unused("trade_id");
        if (tx.deadline != 0) return unused("deadline");
        if (tx.payload.empty()) return make_error(Errc::malformed, "command is empty");
        if (tx.from.is_zero()) return make_error(Errc::malformed, "command client id is zero");
        if (tx.public_key.is_zero() && !tx.signature.is_zero())
            return make_error(Errc::malformed, "unsigned command with a signature");
        break;
    default: return make_error(Errc::unknown_kind);
    }
    if (tx.chain_id.size() > max_chain_id_bytes) return make_error(Errc::too_large, "chain id");
    if (tx.payload.size() > max_payload_bytes) return make_error(Errc::too_large, "payload");
    return {};
}

Result<void> check_tx_stateless(const Tx& tx, std::string_view chain_id, SignatureCache* cache,
                                const CommandRules& commands) {
    return check_tx_stateless(tx, tx.id(), chain_id, cache, commands);
}

Result<void> check_tx_stateless(const Tx& tx, const Hash256& id, std::string_view chain_id,
                                SignatureCache* cache, const CommandRules& commands) {
    if (auto shape = check_tx_shape(tx); !shape) return shape;
    if (tx.chain_id != chain_id)
        return make_error(Errc::wrong_chain_id, "tx is for chain \"" + tx.chain_id + "\"");
    if (tx.kind == TxKind::command) {
        if (!commands.enabled())
            return make_error(Errc::command_refused, "this chain takes no commands");
        if (tx.payload.size() > commands.max_bytes)
            return make_error(Errc::command_refused, "command of " +
                                                         std::to_string(tx.payload.size()) +
                                                         " bytes; this chain takes at most " +
                                                         std::to_string(commands.max_bytes));
        if (tx.public_key.is_zero()) {
            if (!commands.allow_unsigned)
                return make_error(Errc::command_refused, "this chain takes only signed commands");
            return {};
        }
    }
    if (Address::of(tx.public_key) != tx.from)
        return make_error(Errc::sender_mismatch, "from is not the signer's address");
    bool good = cache ? cache->verify(tx.public_key, id, tx.signature)
                      : verify(tx.public_key, id, tx.signature);
    if (!good) return make_error(Errc::bad_signature, "signature does not verify");
    return {};
}

void encode_replica(Writer& w, const ReplicaInfo& r) {
    w.u32(r.id);
    w.fixed(r.key);
    w.str(r.endpoint);
}

ReplicaInfo decode_replica(Reader& r) {
    ReplicaInfo out;
    out.id = r.u32();
    out.key = r.fixed<PublicKey>();
    out.endpoint = r.str(max_endpoint_bytes);
    return out;
}

Bytes ConfigChange::encode() const {
    Writer w;
    w.u8(static_cast<std::uint8_t>(action));
    encode_replica(w, replica);
    return w.take();
}

Result<ConfigChange> decode_config_change(ByteView bytes) {
    return decode_all<ConfigChange>(bytes, [](Reader& r) {
        ConfigChange c;
        std::uint8_t action = r.u8();
        if (r.ok() && action != 1 && action != 2)
            r.fail(Errc::bad_config, "unknown config action " + std::to_string(action));
        c.action = static_cast<ConfigChange::Action>(action);
        c.replica = decode_replica(r);
        if (r.ok() && c.action == ConfigChange::Action::add_replica &&
            !parse_public_key(c.replica.key.view()))
            r.fail(Errc::bad_public_key, "new replica's key is not a P-256 point");
        return c;
    });
}

Result<std::vector<ReplicaInfo>> apply_config_change(std::vector<ReplicaInfo> set,
                                                     const ConfigChange& change) {
    auto same_id = [&](const ReplicaInfo& r) { return r.id == change.replica.id; };
    if (change.action == ConfigChange::Action::add_replica) {
        if (std::any_of(set.begin(), set.end(), same_id))
            return make_error(Errc::bad_config, "replica id already in the set");
        if (std::any_of(set.begin(), set.end(),
                        [&](const ReplicaInfo& r) { return r.key == change.replica.key; }))
            return make_error(Errc::bad_config, "replica key already in the set");
        if (set.size() >= max_replicas) return make_error(Errc::bad_config, "replica set is full");
        set.push_back(change.replica);
        std::sort(set.begin(), set.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    } else {
        auto it = std::find_if(set.begin(), set.end(), same_id);
        if (it == set.end()) return make_error(Errc::bad_config, "no replica with that id");
        if (set.size() == 1) return make_error(Errc::bad_config, "cannot remove the last replica");
        set.erase(it);
    }
    return set;
}

} // namespace popchain
