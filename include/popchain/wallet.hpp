// A wallet: one signing key under a human-readable alias, plus builders for signed
// transactions of every kind.
//
// The builders are pure: they do not look at any ledger, so the caller supplies the chain id
// and the nonce (usually the sender's Account::nonce, plus the number of its transactions
// still pending). Whether a transaction will be accepted is for the ledger to decide.
// Persisting a wallet is the keystore's job (keystore.hpp).
#pragma once

#include <popchain/crypto.hpp>
#include <popchain/transaction.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace popchain {

// Move-only, like the SigningKey it owns. sign() and the builders are thread-safe.
class Wallet {
public:
    Wallet(std::string alias, SigningKey key)
        : alias_(std::move(alias)), key_(std::move(key)), address_(key_.address()) {}

    // A fresh random key.
    static Wallet generate(std::string alias) {
        return Wallet(std::move(alias), SigningKey::generate());
    }

    const std::string& alias() const { return alias_; }
    const Address& address() const { return address_; }
    const PublicKey& public_key() const { return key_.public_key(); }
    const SigningKey& signing_key() const { return key_; }

    // Fills in public_key and from, then signs; everything else must already be set.
    Tx sign(Tx tx) const { return sign_tx(std::move(tx), key_); }

    Tx transfer(std::string_view chain_id, std::uint64_t nonce, const Address& to,
                std::uint64_t amount, ByteView memo = {}) const {
        Tx tx = base(TxKind::transfer, chain_id, nonce, memo);
        tx.to = to;
        tx.amount = amount;
        return sign(std::move(tx));
    }

    // Only the chain authority's mints are valid; the builder does not check that.
    Tx mint(std::string_view chain_id, std::uint64_t nonce, const Address& to, std::uint64_t amount,
            ByteView memo = {}) const {
        Tx tx = base(TxKind::mint, chain_id, nonce, memo);
        tx.to = to;
        tx.amount = amount;
        return sign(std::move(tx));
    }

    // This wallet is the buyer. The buyer may reclaim in blocks with height > deadline.
    Tx escrow_open(std::string_view chain_id, std::uint64_t nonce, const Address& seller,
                   std::uint64_t amount, const Hash256& trade_id, std::uint64_t deadline,
                   ByteView memo = {}) const {
        Tx tx = base(TxKind::escrow_open, chain_id, nonce, memo);
        tx.to = seller;
        tx.amount = amount;
        tx.trade_id = trade_id;
        tx.deadline = deadline;
        return sign(std::move(tx));
    }

    Tx escrow_release(std::string_view chain_id, std::uint64_t nonce, const Hash256& trade_id,
                      ByteView memo = {}) const {
        Tx tx = base(TxKind::escrow_release, chain_id, nonce, memo);
        tx.trade_id = trade_id;
        return sign(std::move(tx));
    }

    Tx escrow_refund(std::string_view chain_id, std::uint64_t nonce, const Hash256& trade_id,
                     ByteView memo = {}) const {
        Tx tx = base(TxKind::escrow_refund, chain_id, nonce, memo);
        tx.trade_id = trade_id;
        return sign(std::move(tx));
    }

    Tx config(std::string_view chain_id, std::uint64_t nonce, const ConfigChange& change) const {
        Tx tx = base(TxKind::config, chain_id, nonce, {});
        tx.payload = change.encode();
        return sign(std::move(tx));
    }

private:
    static Tx base(TxKind kind, std::string_view chain_id, std::uint64_t nonce, ByteView memo) {
        Tx tx;
        tx.kind = kind;
        tx.chain_id = std::string(chain_id);
        tx.nonce = nonce;
        tx.payload.assign(memo.begin(), memo.end());
        return tx;
    }

    std::string alias_;
    SigningKey key_;
    Address address_; // cached: SigningKey::address() hashes on every call
};

} // namespace popchain
