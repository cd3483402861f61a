// libFuzzer target: what a replica does with bytes from a peer before any protocol rule
// applies: opening a link envelope, splitting a bundle, decoding a message body.
//
// Input: one byte naming a message type, then a body.
// Properties (any violation aborts):
//  - decode_body never crashes and fails only with a decoding error code; a message it
//    returns fits the type, and encoding it and decoding that gives the same message;
//  - decode_bundle fails only with a decoding error code; a bundle it accepts holds 2 ..
//    max_bundle_messages messages, none of them a bundle, and encodes back to the input
//    bytes exactly; each message in it decodes (or fails) as above;
//  - an envelope sealed for a member opens there with the same type and body, whatever they
//    are; the whole input taken as an envelope is refused unless its MAC is right (the
//    fuzzer cannot forge one), with one of the link's own error codes.
#include "fuzz_common.hpp"

#include <popchain/pbft/link.hpp>
#include <popchain/pbft/messages.hpp>

#include <algorithm>
#include <cstdint>

using namespace popchain;
using namespace popchain::pbft;

namespace {

void check_message(MsgType type, ByteView body) {
    auto decoded = decode_body(type, body);
    if (!decoded) {
        FUZZ_CHECK(fuzz::is_decode_error(decoded.code()));
        return;
    }
    FUZZ_CHECK(type_matches(type, *decoded));
    auto again = decode_body(type, encode_body(*decoded));
    FUZZ_CHECK(again.ok() && *again == *decoded);
}

const LinkAuthenticator& link(ReplicaId self) {
    static const std::vector<ReplicaInfo> members = {{0, fuzz::key("replica-0").public_key(), ""},
                                                     {1, fuzz::key("replica-1").public_key(), ""}};
    static const LinkAuthenticator links[2] = {
        LinkAuthenticator::create(0, fuzz::key("replica-0"), members).value(),
        LinkAuthenticator::create(1, fuzz::key("replica-1"), members).value()};
    return links[self];
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const auto type = static_cast<MsgType>(data[0]);
    const ByteView body(data + 1, size - 1);

    if (type != MsgType::bundle) {
        check_message(type, body);
    } else if (auto bundle = decode_bundle(body); !bundle) {
        FUZZ_CHECK(fuzz::is_decode_error(bundle.code()));
    } else {
        FUZZ_CHECK(bundle->size() >= 2 && bundle->size() <= max_bundle_messages);
        for (const BundledMessage& m : *bundle) {
            FUZZ_CHECK(m.type != MsgType::bundle);
            check_message(m.type, m.body);
        }
        const Bytes encoded = encode_bundle(*bundle);
        FUZZ_CHECK(std::equal(encoded.begin(), encoded.end(), body.begin(), body.end()));
    }

    // Sealed by 0 for 1, it opens at 1 as it was.
    const Bytes sealed = link(0).seal(1, type, body);
    auto opened = link(1).open(0, sealed);
    FUZZ_CHECK(opened.ok() && opened->type == type && opened->from == 0 && opened->to == 1);
    FUZZ_CHECK(std::equal(opened->body.begin(), opened->body.end(), body.begin(), body.end()));

    // The raw input as an envelope from 0: a fuzzer does not find HMAC-SHA256 tags.
    auto raw = link(1).open(0, ByteView(data, size));
    if (!raw) {
        const Errc c = raw.code();
        FUZZ_CHECK(fuzz::is_decode_error(c) || c == Errc::unknown_peer ||
                   c == Errc::forged_sender || c == Errc::invalid_argument || c == Errc::bad_mac);
    }
    return 0;
}
