// Command-line options for the popchain tool: each command declares its options, and the
// parser refuses anything else, so a typo is a usage error (exit 2), never ignored.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace popchain::cli {

// Exit codes shared by every command.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1; // the command ran and failed
inline constexpr int exit_usage = 2;   // the command line is wrong

// Reports a runtime failure on stderr; returns exit_failure for `return fail(...)`.
inline int fail(const std::string& what) {
    std::fprintf(stderr, "popchain: %s\n", what.c_str());
    return exit_failure;
}

struct OptionSpec {
    std::string name;  // without the leading "--"
    std::string value; // placeholder for its value ("N"); empty for a flag
    std::string help;
    bool required = false;
};

struct CommandSpec {
    std::string name;    // "testnet init"
    std::string summary; // one line
    std::vector<OptionSpec> options;
    // The options part of the usage line when it cannot be derived from `options` (options
    // of which one or the other is required): "(--api HOST:PORT | --dir DIR) --id TXID".
    std::string synopsis = {};
    std::string usage() const; // the --help text
};

struct Args {
    std::map<std::string, std::string> values; // options with a value
    std::map<std::string, bool> flags;         // flags given

    bool flag(const std::string& name) const { return flags.count(name) != 0; }
    bool has(const std::string& name) const { return values.count(name) != 0; }
    std::string get(const std::string& name, const std::string& fallback = {}) const;
    // The option as an unsigned integer in [min, max]; the error names the option.
    std::optional<std::uint64_t> get_uint(const std::string& name, std::uint64_t fallback,
                                          std::uint64_t min, std::uint64_t max,
                                          std::string& error) const;
};

struct Parsed {
    enum class Kind { ok, help, usage_error } kind = Kind::ok;
    Args args;
    std::string error;
};

// Parses argv[first..argc) against `spec`: "--name value", "--name=value", "--flag", "--help".
Parsed parse_args(const CommandSpec& spec, int argc, char** argv, int first);

// Runs `body` with the parsed options, or prints help (exit 0) or a usage error (exit 2).
template <class Body>
int with_args(const CommandSpec& spec, int argc, char** argv, int first, Body&& body);

void print_usage_error(const CommandSpec& spec, const std::string& error);
void print_help(const CommandSpec& spec);

// Prints a usage error; returns exit_usage for `return usage_fail(...)`.
inline int usage_fail(const CommandSpec& spec, const std::string& error) {
    print_usage_error(spec, error);
    return exit_usage;
}

template <class Body>
int with_args(const CommandSpec& spec, int argc, char** argv, int first, Body&& body) {
    Parsed p = parse_args(spec, argc, argv, first);
    if (p.kind == Parsed::Kind::help) {
        print_help(spec);
        return exit_ok;
    }
    if (p.kind == Parsed::Kind::usage_error) {
        print_usage_error(spec, p.error);
        return exit_usage;
    }
    return body(p.args);
}

} // namespace popchain::cli
