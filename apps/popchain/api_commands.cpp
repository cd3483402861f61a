// The commands that are clients of a node's HTTP API (docs/api.md): tx get, tx send,
// block get, wallet balance; and the local wallet commands wallet new and wallet list.
// A node is named by --api HOST:PORT, or by --dir DIR [--node I] (the API endpoint in that
// node's config).
#include "api_commands.hpp"
#include "args.hpp"
#include "testnet.hpp"

#include <popchain/api/http_client.hpp>
#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>
#include <popchain/keystore.hpp>
#include <popchain/node.hpp>

#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string_view>

namespace popchain::cli {

namespace fs = std::filesystem;

namespace {

const OptionSpec api_option{"api", "HOST:PORT", "the node's HTTP API"};
const OptionSpec dir_option{"dir", "DIR", "a testnet directory: the API of its node I"};
const OptionSpec node_option{"node", "I", "with --dir: which node to ask (default 0)"};
// The options part of the usage line of the commands that only ask a node.
const std::string node_synopsis = "(--api HOST:PORT | --dir DIR [--node I])";

// Longer than the node's longest ?wait=1, so a slow commit is reported as pending.
constexpr std::chrono::milliseconds request_timeout{20'000};

// The options that name the node to ask, checked before anything is sent: --api HOST:PORT,
// or --dir DIR with an optional --node I. Returns the usage error, if any.
std::optional<std::string> check_node_options(const Args& a) {
    if (!a.has("api") && !a.has("dir")) return "give --api HOST:PORT or --dir DIR";
    if (a.has("api")) {
        if (auto ep = Endpoint::parse(a.get("api")); !ep) return "--api: " + ep.error().detail;
        if (a.has("node")) return "--node picks a node of --dir's testnet; not with --api";
    }
    std::string err;
    if (!a.get_uint("node", 0, 0, max_replicas - 1, err)) return err;
    if (a.has("dir"))
        if (auto layout = layout_of(a.get("dir")); !layout) return layout.error().detail;
    return std::nullopt;
}

// The node's API endpoint (after check_node_options): --api, or the "api" of node I's config.
Result<Endpoint> api_of(const Args& a) {
    if (a.has("api")) return Endpoint::parse(a.get("api"));
    std::string err;
    const auto node = static_cast<std::uint32_t>(*a.get_uint("node", 0, 0, max_replicas - 1, err));
    auto layout = layout_of(a.get("dir"));
    if (!layout) return layout.error();
    auto config = NodeConfig::load(layout->config(node));
    if (!config) return config.error();
    if (!config->api)
        return make_error(Errc::invalid_argument,
                          "node " + std::to_string(node) + "'s config has no \"api\"");
    return *config->api;
}

// "<code>: <message>" of an API error answer ({"error": {"code", "message"}}, docs/api.md),
// or nullopt when the body is not one.
std::optional<std::string> api_error(const nlohmann::json& j) {
    if (j.is_discarded() || !j.is_object() || !j.contains("error") || !j["error"].is_object())
        return std::nullopt;
    const auto field = [&](const char* name) {
        const auto it = j["error"].find(name);
        return it != j["error"].end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    std::string code = field("code");
    std::string message = field("message");
    if (code.empty()) return message.empty() ? std::nullopt : std::optional(message);
    return message.empty() || message == code ? code : code + ": " + message;
}

// GETs or POSTs, prints the JSON answer indented; a 4xx/5xx prints "<status> <code>:
// <message>" and fails. `pending_fails`: a 202 answer (a submit with ?wait=1 whose wait ended
// before its block executed) is printed and fails too, since the caller asked for a commit.
int call(const Args& a, std::string_view method, const std::string& target,
         const std::string& body = {}, bool pending_fails = false) {
    auto api = api_of(a);
    if (!api) return fail(api.error().message());
    auto r =
        api::HttpClient::request(method, api->host, api->port, target, body, {}, request_timeout);
    if (!r) return fail(api->to_string() + ": " + r.error().message());
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (r->status >= 400) {
        if (auto e = api_error(j)) return fail(std::to_string(r->status) + " " + *e);
        return fail("HTTP " + std::to_string(r->status));
    }
    std::printf("%s\n", j.is_discarded() ? r->body.c_str() : j.dump(2).c_str());
    if (pending_fails && r->status == 202)
        return fail("not committed when the node's wait ended: still pending (it may still "
                    "commit; tx get --id shows when)");
    return exit_ok;
}

// Path arguments are checked here, in the form the node takes, and put in the URL in their
// canonical spelling (hex digits, decimal, "pop..."): nothing a user types reaches the path
// as it is, so "../" or "?" cannot change which resource is asked for.
std::optional<std::string> hash_arg(const std::string& text) {
    auto h = fixed_from_hex<Hash256>(text);
    if (!h) return std::nullopt;
    return to_hex(h->view());
}

std::optional<std::string> height_arg(const std::string& text) {
    if (text == "latest") return text;
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
    return std::to_string(v);
}

// A wallet alias the keystore takes (validate_alias) that is also a plain, visible file
// name: no leading '.', so neither ".", "..", nor a hidden file.
Result<void> check_new_alias(const std::string& alias) {
    if (!validate_alias(alias) || alias.front() == '.')
        return make_error(Errc::invalid_argument,
                          "--alias \"" + alias +
                              "\": an alias is 1..64 of A-Z a-z 0-9 _ . - and does not "
                              "start with '.'");
    return {};
}

} // namespace

int cmd_tx_get(int argc, char** argv, int first) {
    const CommandSpec spec{
        "tx get",
        "Prints a transaction (committed, with its Merkle proof, or pending).",
        {api_option, dir_option, node_option, {"id", "TXID", "the tx id (64 hex digits)", true}},
        node_synopsis + " --id TXID"};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        if (auto e = check_node_options(a)) return usage_fail(spec, *e);
        const auto id = hash_arg(a.get("id"));
        if (!id)
            return usage_fail(spec, "--id \"" + a.get("id") + "\" is not a tx id (64 hex digits)");
        return call(a, "GET", "/v1/txs/" + *id);
    });
}

int cmd_block_get(int argc, char** argv, int first) {
    const CommandSpec spec{"block get",
                           "Prints a block with its commit proof (once a checkpoint covers it).\n"
                           "Give exactly one of --height and --hash.",
                           {api_option,
                            dir_option,
                            node_option,
                            {"height", "H", "the block's height, or \"latest\""},
                            {"hash", "HASH", "the block's hash (64 hex digits)"}},
                           node_synopsis + " (--height H|latest | --hash HASH)"};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        if (auto e = check_node_options(a)) return usage_fail(spec, *e);
        if (a.has("height") == a.has("hash"))
            return usage_fail(spec, a.has("height") ? "give --height or --hash, not both"
                                                    : "give --height H|latest or --hash HASH");
        if (a.has("hash")) {
            const auto hash = hash_arg(a.get("hash"));
            if (!hash)
                return usage_fail(spec, "--hash \"" + a.get("hash") +
                                            "\" is not a block hash (64 hex digits)");
            return call(a, "GET", "/v1/blocks/by-hash/" + *hash);
        }
        const auto height = height_arg(a.get("height"));
        if (!height)
            return usage_fail(spec, "--height \"" + a.get("height") +
                                        "\" is neither a non-negative integer nor \"latest\"");
        return call(a, "GET", "/v1/blocks/" + *height);
    });
}

int cmd_wallet_balance(int argc, char** argv, int first) {
    const CommandSpec spec{
        "wallet balance",
        "Prints an account's committed balance and next nonce.",
        {api_option, dir_option, node_option, {"address", "ADDR", "the account", true}},
        node_synopsis + " --address ADDR"};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        if (auto e = check_node_options(a)) return usage_fail(spec, *e);
        auto address = Address::parse(a.get("address"));
        if (!address)
            return usage_fail(spec, "--address \"" + a.get("address") +
                                        "\" is not an address: " + address.error().message());
        return call(a, "GET", "/v1/accounts/" + address->to_string());
    });
}

int cmd_wallet_new(int argc, char** argv, int first) {
    const CommandSpec spec{"wallet new",
                           "Makes a key, stored encrypted in DIR/wallets under ALIAS; prints its "
                           "address.",
                           {{"dir", "DIR", "the testnet directory", true},
                            {"alias", "ALIAS",
                             "the wallet's name: 1..64 of A-Z a-z 0-9 _ . -, not starting "
                             "with '.'",
                             true}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        auto layout = layout_of(a.get("dir"));
        if (!layout) return usage_fail(spec, layout.error().detail);
        const std::string alias = a.get("alias");
        if (auto ok = check_new_alias(alias); !ok) return usage_fail(spec, ok.error().detail);
        auto passphrase = read_testnet_passphrase(*layout);
        if (!passphrase) return fail(passphrase.error().message());
        Keystore keystore(layout->wallets());
        auto wallet = keystore.create(alias, *passphrase);
        if (!wallet) return fail("wallet " + alias + ": " + wallet.error().message());
        std::printf("%s %s\n", alias.c_str(), wallet->address().to_string().c_str());
        return exit_ok;
    });
}

int cmd_wallet_list(int argc, char** argv, int first) {
    const CommandSpec spec{"wallet list",
                           "Lists the wallets in DIR/wallets.",
                           {{"dir", "DIR", "the testnet directory", true}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        auto layout = layout_of(a.get("dir"));
        if (!layout) return usage_fail(spec, layout.error().detail);
        auto passphrase = read_testnet_passphrase(*layout); // the directory is a testnet's
        if (!passphrase) return fail(passphrase.error().message());
        for (const auto& entry : Keystore(layout->wallets()).list())
            std::printf("%s %s\n", entry.alias.c_str(), entry.address.to_string().c_str());
        return exit_ok;
    });
}

int cmd_tx_send(int argc, char** argv, int first) {
    const CommandSpec spec{
        "tx send",
        "Signs a transfer with a wallet of the testnet and submits it to one node's HTTP API\n"
        "(POST /v1/txs); with --wait, answers once the block holding it executed there, and\n"
        "exits 1 if it is still pending when the node's wait ends (10 s, or --timeout).",
        {{"dir", "DIR", "the testnet directory (its wallets and genesis; its node I's API)", true},
         node_option,
         {"api", "HOST:PORT", "the node's HTTP API instead of node I's"},
         {"from", "ALIAS", "the paying wallet (DIR/wallets/ALIAS.key)", true},
         {"to", "ADDR", "the payee's address", true},
         {"amount", "A", "amount to transfer (> 0)", true},
         {"wait", "", "wait until it is committed"},
         {"timeout", "S",
          "with --wait: the node waits at most S seconds (default: the node's own limit, "
          "10 s; a node refuses more than its limit)"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        std::string err;
        const auto amount = a.get_uint("amount", 0, 1, ~0ull, err);
        const auto timeout = a.get_uint("timeout", 0, 1, 3600, err);
        if (!amount || !timeout) return usage_fail(spec, err);
        if (a.has("timeout") && !a.flag("wait"))
            return usage_fail(spec, "--timeout goes with --wait");
        if (auto e = check_node_options(a)) return usage_fail(spec, *e);
        auto to = Address::parse(a.get("to"));
        if (!to)
            return usage_fail(spec, "--to \"" + a.get("to") +
                                        "\" is not an address: " + to.error().message());
        const Layout layout = *layout_of(a.get("dir")); // checked by check_node_options
        auto passphrase = read_testnet_passphrase(layout);
        if (!passphrase) return fail(passphrase.error().message());
        auto wallet = Keystore(layout.wallets()).load(a.get("from"), *passphrase);
        if (!wallet) return fail("wallet " + a.get("from") + ": " + wallet.error().message());
        auto genesis = Genesis::load(layout.genesis());
        if (!genesis) return fail("genesis: " + genesis.error().message());
        auto api = api_of(a);
        if (!api) return fail(api.error().message());
        // The nonce, from the node.
        const std::string account_failed =
            "cannot read the sender's account from the node at " + api->to_string() + " (" +
            (a.has("api") ? std::string("--api") : "node " + a.get("node", "0")) + "): ";
        auto account = api::HttpClient::request("GET", api->host, api->port,
                                                "/v1/accounts/" + wallet->address().to_string(), {},
                                                {}, request_timeout);
        if (!account) return fail(account_failed + account.error().message());
        const auto j = nlohmann::json::parse(account->body, nullptr, false);
        if (account->status != 200) {
            std::string why = "HTTP " + std::to_string(account->status);
            if (auto e = api_error(j)) why += " " + *e;
            return fail(account_failed + why);
        }
        if (!j.is_object() || !j.contains("nonce") || !j["nonce"].is_number_unsigned())
            return fail(account_failed + "the answer has no nonce");
        const auto nonce = j["nonce"].get<std::uint64_t>();
        const Tx tx = wallet->transfer(genesis->params.chain_id, nonce, *to, *amount);
        std::string target = "/v1/txs";
        if (a.flag("wait")) {
            target += "?wait=1";
            if (a.has("timeout")) target += "&wait_ms=" + std::to_string(*timeout * 1000);
        }
        return call(a, "POST", target, api::to_json(tx).dump(), a.flag("wait"));
    });
}

} // namespace popchain::cli
