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

#include <charconv>
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

bool parse_u64(std::string_view text, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
}

} // namespace

int main(int argc, char** argv) {
    std::uint64_t seed = 0, n = 0;
    bool have_seed = false, trace = false;
    std::string profile_name = "all";
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        if (arg == "--seed") {
            const char* v = value();
            if (!v || !parse_u64(v, seed)) return usage("--seed needs a number");
            have_seed = true;
        } else if (arg == "--profile") {
            const char* v = value();
            if (!v) return usage("--profile needs a name");
            profile_name = v;
        } else if (arg == "--n") {
            const char* v = value();
            if (!v || !parse_u64(v, n) || n == 0 || n > 1024)
                return usage("--n needs a cluster size (1..1024)");
        } else if (arg == "--trace") {
            trace = true;
        } else {
            return usage(("unknown argument " + std::string(arg)).c_str());
        }
    }
    if (!have_seed) return usage("--seed is required");
    auto profile = net::profile_named(profile_name);
    if (!profile) return usage(("unknown profile " + profile_name).c_str());
    if (n != 0) profile->sizes = {static_cast<std::uint32_t>(n)};

    const net::Scenario scenario = net::random_scenario(seed, *profile);
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
