// sim_replay: runs one random scenario of the pBFT simulator and says what happened, so a
// failing seed from sim_seeds (or CI) can be replayed, traced and debugged on its own.
//
//   sim_replay --seed S [--profile P] [--trace] [--n N]
//
// Prints the scenario (describe()), the result, the SimNetwork trace digest and, with
// --trace, every trace line. P is a fault profile (net::profile_named): "all" (the default),
// "today", either with +kind/-kind, e.g. "all-duplicates". --n fixes the cluster size instead
// of drawing it. The same
// arguments give the same run and the same digest. Exit status: 0 if the run passed, 1 if it
// failed, 2 on bad usage.
#include <popchain/hex.hpp>
#include <popchain/net/sim_scenario.hpp>

#include "sim_args.hpp"

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

using namespace popchain;

namespace {

int usage(const char* why) {
    std::fprintf(stderr,
                 "sim_replay: %s\n"
                 "usage: sim_replay --seed S [--profile P] [--trace] [--n N]\n",
                 why);
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    sim_tools::SimArgs args;
    if (auto bad = sim_tools::parse_sim_args(argc, argv, {"--seed"}, {}, true, args))
        return usage(bad->c_str());
    const std::uint64_t seed = args.numbers.at("--seed");
    const bool trace = args.trace;

    const net::Scenario scenario = net::random_scenario(seed, args.profile);
    std::printf("scenario: %s\n", net::describe(scenario).c_str());
    const net::ScenarioResult result = net::run_scenario(scenario, trace);
    std::printf("result: %s height=%llu end=%llums messages=%llu\n", result.ok ? "PASS" : "FAIL",
                static_cast<unsigned long long>(result.height),
                static_cast<unsigned long long>(result.end_time),
                static_cast<unsigned long long>(result.messages));
    if (!result.ok) std::printf("failure: %s\n", result.failure.c_str());
    std::printf("trace_digest: %s\n", to_hex(result.trace_digest).c_str());
    for (const auto& line : result.trace)
        std::printf("%s\n", line.c_str());
    return result.ok ? 0 : 1;
}
