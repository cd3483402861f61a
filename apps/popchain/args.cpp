#include "args.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>

namespace popchain::cli {

std::string CommandSpec::usage() const {
    std::string out = "usage: popchain " + name;
    if (!synopsis.empty()) {
        out += " " + synopsis;
    } else {
        for (const auto& o : options) {
            std::string item = "--" + o.name + (o.value.empty() ? "" : " " + o.value);
            out += o.required ? " " + item : " [" + item + "]";
        }
    }
    out += "\n\n" + summary + "\n\noptions:\n";
    for (const auto& o : options) {
        std::string left = "  --" + o.name + (o.value.empty() ? "" : " " + o.value);
        if (left.size() < 26) left.resize(26, ' ');
        out += left + " " + o.help + "\n";
    }
    out += "  --help                   this text\n";
    return out;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
    const auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
}

std::optional<std::uint64_t> Args::get_uint(const std::string& name, std::uint64_t fallback,
                                            std::uint64_t min, std::uint64_t max,
                                            std::string& error) const {
    const auto it = values.find(name);
    if (it == values.end()) return fallback;
    const std::string& text = it->second;
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || v < min || v > max) {
        error = "--" + name + " must be an integer in " + std::to_string(min) + ".." +
                std::to_string(max) + ", not \"" + text + "\"";
        return std::nullopt;
    }
    return v;
}

Parsed parse_args(const CommandSpec& spec, int argc, char** argv, int first) {
    Parsed p;
    auto fail = [&](std::string why) {
        p.kind = Parsed::Kind::usage_error;
        p.error = std::move(why);
        return p;
    };
    for (int i = first; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            p.kind = Parsed::Kind::help;
            return p;
        }
        if (arg.substr(0, 2) != "--" || arg.size() == 2)
            return fail("unexpected argument \"" + std::string(arg) + "\"");
        arg.remove_prefix(2);
        std::optional<std::string> inline_value;
        if (const auto eq = arg.find('='); eq != std::string_view::npos) {
            inline_value = std::string(arg.substr(eq + 1));
            arg = arg.substr(0, eq);
        }
        const auto spec_it = std::find_if(spec.options.begin(), spec.options.end(),
                                          [&](const OptionSpec& o) { return o.name == arg; });
        if (spec_it == spec.options.end()) return fail("unknown option --" + std::string(arg));
        const std::string name(arg);
        if (spec_it->value.empty()) {
            if (inline_value) return fail("--" + name + " takes no value");
            p.args.flags[name] = true;
            continue;
        }
        if (p.args.values.count(name)) return fail("--" + name + " given twice");
        if (inline_value) {
            p.args.values[name] = *inline_value;
        } else {
            if (i + 1 >= argc) return fail("--" + name + " needs a value (" + spec_it->value + ")");
            p.args.values[name] = argv[++i];
        }
    }
    for (const auto& o : spec.options)
        if (o.required && !p.args.has(o.name)) return fail("--" + o.name + " is required");
    return p;
}

void print_usage_error(const CommandSpec& spec, const std::string& error) {
    std::fprintf(stderr, "popchain %s: %s\n\n%s", spec.name.c_str(), error.c_str(),
                 spec.usage().c_str());
}

void print_help(const CommandSpec& spec) {
    std::fputs(spec.usage().c_str(), stdout);
}

} // namespace popchain::cli
