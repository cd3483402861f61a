#include <popchain/result.hpp>

namespace popchain {

const char* errc_name(Errc code) noexcept {
    switch (code) {
    case Errc::truncated: return "truncated";
    case Errc::trailing_bytes: return "trailing_bytes";
    case Errc::too_large: return "too_large";
    case Errc::malformed: return "malformed";
    case Errc::bad_public_key: return "bad_public_key";
    case Errc::bad_signature: return "bad_signature";
    case Errc::bad_address: return "bad_address";
    case Errc::wrong_passphrase: return "wrong_passphrase";
    case Errc::unknown_kind: return "unknown_kind";
    case Errc::wrong_chain_id: return "wrong_chain_id";
    case Errc::sender_mismatch: return "sender_mismatch";
    case Errc::nonce_reused: return "nonce_reused";
    case Errc::nonce_gap: return "nonce_gap";
    case Errc::zero_amount: return "zero_amount";
    case Errc::insufficient_funds: return "insufficient_funds";
    case Errc::amount_overflow: return "amount_overflow";
    case Errc::not_authority: return "not_authority";
    case Errc::escrow_exists: return "escrow_exists";
    case Errc::unknown_escrow: return "unknown_escrow";
    case Errc::escrow_closed: return "escrow_closed";
    case Errc::not_escrow_party: return "not_escrow_party";
    case Errc::refund_before_deadline: return "refund_before_deadline";
    case Errc::deadline_passed: return "deadline_passed";
    case Errc::bad_config: return "bad_config";
    case Errc::wrong_height: return "wrong_height";
    case Errc::wrong_prev_hash: return "wrong_prev_hash";
    case Errc::bad_tx_root: return "bad_tx_root";
    case Errc::bad_state_root: return "bad_state_root";
    case Errc::duplicate_tx: return "duplicate_tx";
    case Errc::too_many_txs: return "too_many_txs";
    case Errc::mempool_full: return "mempool_full";
    case Errc::already_known: return "already_known";
    case Errc::unknown_peer: return "unknown_peer";
    case Errc::forged_sender: return "forged_sender";
    case Errc::bad_mac: return "bad_mac";
    case Errc::not_found: return "not_found";
    case Errc::io_error: return "io_error";
    case Errc::storage_corrupt: return "storage_corrupt";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::timeout: return "timeout";
    case Errc::command_refused: return "command_refused";
    case Errc::not_member: return "not_member";
    }
    return "unknown_error";
}

} // namespace popchain
