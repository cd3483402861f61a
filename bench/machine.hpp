// Facts about the machine a benchmark ran on, shared by the harnesses so every JSON report
// describes its machine the same way (docs/benchmarks.md).
#pragma once

#include <fstream>
#include <string>

namespace popchain::bench {

inline std::string compiler() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return "unknown";
#endif
}

inline std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("model name", 0) == 0) {
            auto colon = line.find(':');
            if (colon != std::string::npos)
                return line.substr(line.find_first_not_of(" \t", colon + 1));
        }
    }
    return "unknown";
}

// The 1-minute load average: other work on the machine (a parallel build, say) depresses
// every figure, so a report carries how busy the machine was.
inline double load_average() {
    std::ifstream in("/proc/loadavg");
    double one = -1;
    in >> one;
    return one;
}

} // namespace popchain::bench
