// The command line shared by sim_replay and sim_seeds: numbers, a fault profile and a fixed
// cluster size, each tool accepting its own subset.
#pragma once

#include <popchain/net/sim_scenario.hpp>

#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popchain::sim_tools {

struct SimArgs {
    std::map<std::string, std::uint64_t> numbers; // "--seed", "--from", "--count" as given
    std::string profile_name = "all";
    std::uint64_t n = 0; // 0: the profile draws the cluster size
    bool trace = false;
    net::ScenarioProfile profile;
};

inline bool parse_u64(std::string_view text, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
}

// Parses argv; `required` are number options that must be given (and be positive when
// named in `positive`), `allow_trace` admits --trace. Returns the reason on bad usage.
inline std::optional<std::string> parse_sim_args(int argc, char** argv,
                                                 const std::vector<std::string>& required,
                                                 const std::vector<std::string>& positive,
                                                 bool allow_trace, SimArgs& out) {
    auto is_in = [](const std::vector<std::string>& list, std::string_view s) {
        for (const auto& x : list)
            if (x == s) return true;
        return false;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
        if (is_in(required, arg)) {
            std::uint64_t v = 0;
            if (!value || !parse_u64(value, v) || (v == 0 && is_in(positive, arg)))
                return arg +
                       (is_in(positive, arg) ? " needs a positive number" : " needs a number");
            out.numbers[arg] = v;
            ++i;
        } else if (arg == "--profile") {
            if (!value) return std::string("--profile needs a name");
            out.profile_name = value;
            ++i;
        } else if (arg == "--n") {
            if (!value || !parse_u64(value, out.n) || out.n == 0 || out.n > 1024)
                return std::string("--n needs a cluster size (1..1024)");
            ++i;
        } else if (arg == "--trace" && allow_trace) {
            out.trace = true;
        } else {
            return "unknown argument " + arg;
        }
    }
    for (const auto& r : required)
        if (!out.numbers.count(r)) return r + " is required";
    auto profile = net::profile_named(out.profile_name);
    if (!profile) return "unknown profile " + out.profile_name;
    out.profile = *profile;
    if (out.n != 0) out.profile.sizes = {static_cast<std::uint32_t>(out.n)};
    return std::nullopt;
}

} // namespace popchain::sim_tools
