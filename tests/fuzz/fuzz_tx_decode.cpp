// libFuzzer target: transaction decoding and the checks that need no ledger state.
//
// Properties (any violation aborts):
//  - decoding never crashes, and fails only with a decoding error code;
//  - the encoding is canonical: re-encoding a decoded tx gives back the input bytes exactly,
//    and decoding that gives an equal tx;
//  - the txid is SHA-256 of the signing bytes, which are the domain tag followed by the
//    encoding without its signature (so the signature cannot change the id); an unsigned
//    command has no signature in its encoding;
//  - check_tx_stateless gives the same verdict with and without a SignatureCache (also on a
//    cache hit), and a tx it accepts has a valid key that matches its sender and verifies
//    (unsigned commands: nothing is verified); a command is refused on a chain without
//    commands;
//  - a config payload that decodes re-encodes to the same bytes.
#include "fuzz_common.hpp"

#include <popchain/transaction.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>

using namespace popchain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const ByteView input(data, size);
    auto decoded = decode_tx(input);
    if (!decoded) {
        FUZZ_CHECK(fuzz::is_decode_error(decoded.code()));
        return 0;
    }
    const Tx& tx = *decoded;

    const Bytes encoded = tx.encode();
    FUZZ_CHECK(std::equal(encoded.begin(), encoded.end(), input.begin(), input.end()));
    auto again = decode_tx(encoded);
    FUZZ_CHECK(again.ok() && *again == tx);

    // signing_bytes() = tag || encoding minus the trailing 64-byte signature (an unsigned
    // command has none: all of its encoding is signed over).
    const Bytes signing = tx.signing_bytes();
    const std::size_t trailer = is_unsigned_command(tx) ? 0 : Signature::size();
    FUZZ_CHECK(encoded.size() >= trailer);
    const std::size_t unsigned_len = encoded.size() - trailer;
    FUZZ_CHECK(signing.size() > unsigned_len);
    const std::size_t tag_len = signing.size() - unsigned_len;
    FUZZ_CHECK(std::equal(signing.begin() + static_cast<std::ptrdiff_t>(tag_len), signing.end(),
                          encoded.begin()));
    if (trailer > 0) {
        const bool signature_last =
            std::memcmp(encoded.data() + unsigned_len, tx.signature.data(), Signature::size()) == 0;
        FUZZ_CHECK(signature_last);
    } else {
        FUZZ_CHECK(tx.signature.is_zero());
    }
    const Hash256 id = tx.id();
    FUZZ_CHECK(id == sha256(signing));

    // The stateless checks against the tx's own chain id, so that they get past that test,
    // and rules that take every command, signed or not, so that commands get past those.
    const CommandRules rules{static_cast<std::uint32_t>(max_payload_bytes), true};
    auto plain = check_tx_stateless(tx, tx.chain_id, nullptr, rules);
    SignatureCache cache(4);
    auto first = check_tx_stateless(tx, tx.chain_id, &cache, rules);      // a miss
    auto second = check_tx_stateless(tx, id, tx.chain_id, &cache, rules); // a hit when valid
    FUZZ_CHECK(plain.code() == first.code() && first.code() == second.code());
    if (plain) {
        FUZZ_CHECK(check_tx_shape(tx).ok());
        if (is_unsigned_command(tx)) {
            FUZZ_CHECK(cache.size() == 0); // nothing to verify
        } else {
            FUZZ_CHECK(parse_public_key(tx.public_key.view()).ok());
            FUZZ_CHECK(Address::of(tx.public_key) == tx.from);
            FUZZ_CHECK(verify(tx.public_key, id, tx.signature));
            FUZZ_CHECK(cache.size() == 1 && cache.hits() == 1);
        }
        FUZZ_CHECK(std::string(tx_kind_name(tx.kind)) != "unknown");
        // The same tx presented for another chain must be refused, and a command on a
        // chain that takes none.
        FUZZ_CHECK(check_tx_stateless(tx, tx.chain_id + "-other", nullptr, rules).code() ==
                   Errc::wrong_chain_id);
        if (tx.kind == TxKind::command)
            FUZZ_CHECK(check_tx_stateless(tx, tx.chain_id).code() == Errc::command_refused);
    } else {
        FUZZ_CHECK(cache.size() == 0);
    }

    // The sender's text address round-trips.
    auto parsed = Address::parse(tx.from.to_string());
    FUZZ_CHECK(parsed.ok() && *parsed == tx.from);

    // Any payload is also a candidate ConfigChange encoding.
    if (auto change = decode_config_change(tx.payload); change.ok()) {
        const Bytes reencoded = change->encode();
        FUZZ_CHECK(reencoded == tx.payload);
    }
    return 0;
}
