// Error values. Every fallible operation in libpopchain returns Result<T>: bad input is a
// value the caller inspects, never an exception escaping from deep inside or undefined
// behaviour.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace popchain {

enum class Errc : std::uint16_t {
    // decoding
    truncated = 1,
    trailing_bytes,
    too_large,
    malformed,
    // crypto and identity
    bad_public_key,
    bad_signature,
    bad_address,
    wrong_passphrase,
    // transaction rules
    unknown_kind,
    wrong_chain_id,
    sender_mismatch,
    nonce_reused,
    nonce_gap,
    zero_amount,
    insufficient_funds,
    amount_overflow,
    not_authority,
    escrow_exists,
    unknown_escrow,
    escrow_closed,
    not_escrow_party,
    refund_before_deadline,
    deadline_passed,
    bad_config,
    // block rules
    wrong_height,
    wrong_prev_hash,
    bad_tx_root,
    bad_state_root,
    duplicate_tx,
    too_many_txs,
    // mempool
    mempool_full,
    already_known,
    // replica links
    unknown_peer,
    forged_sender,
    bad_mac,
    // storage and files
    not_found,
    io_error,
    storage_corrupt,
    invalid_argument,
    // waiting
    timeout,
    // transaction rules (added later; codes are stable, so new ones go last)
    command_refused,
    // replica membership
    not_member,
    // keep last: the end of the range (tests walk every code)
    last_ = not_member,
};

// Stable snake_case name of an error code ("insufficient_funds"); used in logs and APIs.
const char* errc_name(Errc code) noexcept;

struct Error {
    Errc code{};
    std::string detail;

    std::string message() const {
        return detail.empty() ? errc_name(code) : std::string(errc_name(code)) + ": " + detail;
    }
    friend bool operator==(const Error&, const Error&) = default;
};

// Thrown only by Result::value() on misuse (reading the value of an error).
class BadResultAccess : public std::logic_error {
public:
    explicit BadResultAccess(const Error& e) : std::logic_error(e.message()), error_(e) {}
    const Error& error() const noexcept { return error_; }

private:
    Error error_;
};

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : state_(std::move(value)) {}
    Result(Error error) : state_(std::move(error)) {}

    bool ok() const noexcept { return state_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & {
        check();
        return std::get<0>(state_);
    }
    const T& value() const& {
        check();
        return std::get<0>(state_);
    }
    T&& value() && {
        check();
        return std::get<0>(std::move(state_));
    }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const { return std::get<1>(state_); }
    Errc code() const { return ok() ? Errc{} : error().code; }

private:
    void check() const {
        if (!ok()) throw BadResultAccess(std::get<1>(state_));
    }
    std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : error_(std::move(error)), failed_(true) {}

    bool ok() const noexcept { return !failed_; }
    explicit operator bool() const noexcept { return ok(); }
    void value() const {
        if (failed_) throw BadResultAccess(error_);
    }
    const Error& error() const { return error_; }
    Errc code() const { return failed_ ? error_.code : Errc{}; }

private:
    Error error_;
    bool failed_ = false;
};

inline Error make_error(Errc code, std::string detail = {}) {
    return Error{code, std::move(detail)};
}

} // namespace popchain
