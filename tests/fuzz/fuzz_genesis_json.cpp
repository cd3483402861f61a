// libFuzzer target: the genesis file parser.
//
// Properties (any violation aborts):
//  - parsing arbitrary text never crashes or throws, and a refusal is Errc::malformed;
//  - an accepted genesis survives to_json(): parsing that text gives an equal Genesis, and
//    printing it again gives the same text (JSON input is not canonical, so the input bytes
//    themselves are not compared);
//  - an accepted genesis builds a height-0 block and a ledger whose invariants hold, with
//    the initial supply equal to the sum of the balances.
#include "fuzz_common.hpp"

#include <popchain/genesis.hpp>

#include <cstdint>
#include <string_view>

using namespace popchain;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = Genesis::from_json(text);
    if (!parsed) {
        FUZZ_CHECK(parsed.code() == Errc::malformed);
        return 0;
    }
    const Genesis& g = *parsed;

    const std::string printed = g.to_json();
    auto reparsed = Genesis::from_json(printed);
    FUZZ_CHECK(reparsed.ok());
    FUZZ_CHECK(*reparsed == g);
    FUZZ_CHECK(reparsed->to_json() == printed);

    auto built = g.build();
    FUZZ_CHECK(built.ok());
    FUZZ_CHECK(built->block.header.height == 0 && built->block.txs.empty());
    FUZZ_CHECK(built->delta.block_hash == built->block.hash());
    FUZZ_CHECK(built->delta.state_root == built->block.header.state_root);

    auto ledger = g.ledger();
    FUZZ_CHECK(ledger.ok());
    FUZZ_CHECK(ledger->check_invariants().ok());
    FUZZ_CHECK(ledger->state().tip_hash == built->block.hash());
    unsigned __int128 supply = 0;
    for (const auto& [address, amount] : g.balances)
        supply += amount;
    FUZZ_CHECK(supply == ledger->state().total_minted);
    FUZZ_CHECK(ledger->state().replicas.size() == g.replicas.size());
    return 0;
}
