// sim_seeds: runs many consecutive seeds of the pBFT simulator's random scenarios and reports
// every failure with the sim_replay command that reproduces it.
//
//   sim_seeds --from A --count N [--profile P] [--n N]
//
// P is a fault profile as for sim_replay ("all", the default, "today", "all-duplicates", ...).
// Prints one summary line (passed, failed, wall time) and, for each failing seed, its first
// failure line and `sim_replay --seed S --profile P [--n N]`. Exit status: 0 if every seed
// passed, 1 if any failed, 2 on bad usage.
#include <popchain/net/sim_scenario.hpp>

#include "sim_args.hpp"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <unistd.h>

using namespace popchain;

namespace {

// The seed being run, for the crash report: a seed that crashes the process must still be
// named, or it cannot be replayed.
volatile std::uint64_t current_seed = 0;
const char* volatile current_profile = "all";
const char* volatile current_extra = "";

extern "C" void on_fatal_signal(int sig) {
    // Only async-signal-safe calls here: format by hand, write(2), then die as intended.
    char buf[160];
    std::size_t len = 0;
    auto put = [&](const char* text) {
        for (; *text && len < sizeof buf - 24; ++text)
            buf[len++] = *text;
    };
    put("sim_seeds: crashed; reproduce: sim_replay --profile ");
    put(current_profile);
    put(" --seed ");
    char digits[24];
    std::size_t k = 0;
    std::uint64_t v = current_seed;
    do {
        digits[k++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (k > 0)
        buf[len++] = digits[--k];
    put(current_extra);
    buf[len++] = '\n';
    (void)!::write(2, buf, len);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

int usage(const char* why) {
    std::fprintf(stderr,
                 "sim_seeds: %s\n"
                 "usage: sim_seeds --from A --count N [--profile P] [--n N]\n",
                 why);
    return 2;
}

} // namespace

int main(int argc, char** argv) {
    sim_tools::SimArgs args;
    if (auto bad =
            sim_tools::parse_sim_args(argc, argv, {"--from", "--count"}, {"--count"}, false, args))
        return usage(bad->c_str());
    const std::uint64_t from = args.numbers.at("--from"), count = args.numbers.at("--count");
    const std::uint64_t n = args.n;
    const std::string& profile_name = args.profile_name;
    current_profile = profile_name.c_str();
    const std::string extra = n != 0 ? " --n " + std::to_string(n) : "";
    current_extra = extra.c_str();

    for (int sig : {SIGSEGV, SIGABRT, SIGFPE, SIGBUS, SIGILL})
        std::signal(sig, on_fatal_signal);

    const auto start = std::chrono::steady_clock::now();
    std::uint64_t failed = 0;
    for (std::uint64_t seed = from; seed - from < count; ++seed) {
        current_seed = seed;
        const net::ScenarioResult r = net::run_scenario(net::random_scenario(seed, args.profile));
        if (r.ok) continue;
        ++failed;
        const std::string first_line = r.failure.substr(0, r.failure.find('\n'));
        std::printf("FAIL seed %llu: %s\n  reproduce: sim_replay --seed %llu --profile %s%s\n",
                    static_cast<unsigned long long>(seed), first_line.c_str(),
                    static_cast<unsigned long long>(seed), profile_name.c_str(), extra.c_str());
        std::fflush(stdout); // visible while the run goes on, and kept if a later seed crashes
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("sim_seeds: profile %s, seeds %llu..%llu: %llu passed, %llu failed in %.1f s\n",
                profile_name.c_str(), static_cast<unsigned long long>(from),
                static_cast<unsigned long long>(from + count - 1),
                static_cast<unsigned long long>(count - failed),
                static_cast<unsigned long long>(failed), seconds);
    return failed == 0 ? 0 : 1;
}
