// The commands that are clients of a node's HTTP API (docs/api.md): tx get, tx send,
// block get, wallet balance; and the local wallet commands wallet new and wallet list.
// A node is named by --api HOST:PORT, or by --dir DIR [--node I] (the API endpoint in that
// node's config).
#include "api_commands.hpp"
#include "args.hpp"
#include "testnet.hpp"

#include <popchain/api/http_client.hpp>
#include <popchain/api/json.hpp>
#include <popchain/keystore.hpp>
#include <popchain/node.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>

namespace popchain::cli {

namespace fs = std::filesystem;

namespace {

const OptionSpec api_option{"api", "HOST:PORT", "the node's HTTP API"};
const OptionSpec dir_option{"dir", "DIR", "a testnet directory (its node's API, its wallets)"};
const OptionSpec node_option{"node", "I", "with --dir: which node to ask (default 0)"};

Result<Endpoint> api_of(const Args& a) {
    if (a.has("api")) return Endpoint::parse(a.get("api"));
    if (!a.has("dir")) return make_error(Errc::invalid_argument, "give --api or --dir");
    std::string err;
    const auto node = a.get_uint("node", 0, 0, 1023, err);
    if (!node) return make_error(Errc::invalid_argument, err);
    const Layout layout{fs::absolute(a.get("dir")).lexically_normal()};
    auto config = NodeConfig::load(layout.config(static_cast<std::uint32_t>(*node)));
    if (!config) return config.error();
    if (!config->api)
        return make_error(Errc::invalid_argument,
                          "node " + std::to_string(*node) + "'s config has no \"api\"");
    return *config->api;
}

// GETs or POSTs, prints the JSON answer indented; a 4xx/5xx prints the error and fails.
int call(const Args& a, std::string_view method, const std::string& target,
         const std::string& body = {}) {
    auto api = api_of(a);
    if (!api) return fail(api.error().message());
    // Longer than the node's longest ?wait=1, so a slow commit is reported as pending.
    auto r = api::HttpClient::request(method, api->host, api->port, target, body, {},
                                      std::chrono::milliseconds(20'000));
    if (!r) return fail(api->to_string() + ": " + r.error().message());
    auto j = nlohmann::json::parse(r->body, nullptr, false);
    if (r->status >= 400) {
        if (!j.is_discarded() && j.contains("error"))
            return fail(std::to_string(r->status) + " " +
                        j["error"].value("message", std::string("error")));
        return fail("HTTP " + std::to_string(r->status));
    }
    std::printf("%s\n", j.is_discarded() ? r->body.c_str() : j.dump(2).c_str());
    return exit_ok;
}

Result<Keystore> testnet_keystore(const Args& a, std::string& passphrase) {
    if (!a.has("dir")) return make_error(Errc::invalid_argument, "give --dir");
    const Layout layout{fs::absolute(a.get("dir")).lexically_normal()};
    auto p = read_testnet_passphrase(layout);
    if (!p) return p.error();
    passphrase = *p;
    return Keystore(layout.wallets());
}

} // namespace

int cmd_tx_get(int argc, char** argv, int first) {
    const CommandSpec spec{
        "tx get",
        "Prints a transaction (committed, with its Merkle proof, or pending).",
        {api_option, dir_option, node_option, {"id", "TXID", "the tx id", true}}};
    return with_args(spec, argc, argv, first,
                     [&](const Args& a) { return call(a, "GET", "/v1/txs/" + a.get("id")); });
}

int cmd_block_get(int argc, char** argv, int first) {
    const CommandSpec spec{"block get",
                           "Prints a block with its commit proof (once a checkpoint covers it).",
                           {api_option,
                            dir_option,
                            node_option,
                            {"height", "H", "the block's height, or \"latest\""},
                            {"hash", "HASH", "the block's hash"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        if (a.has("hash")) return call(a, "GET", "/v1/blocks/by-hash/" + a.get("hash"));
        return call(a, "GET", "/v1/blocks/" + a.get("height", "latest"));
    });
}

int cmd_wallet_balance(int argc, char** argv, int first) {
    const CommandSpec spec{
        "wallet balance",
        "Prints an account's committed balance and next nonce.",
        {api_option, dir_option, node_option, {"address", "ADDR", "the account", true}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        return call(a, "GET", "/v1/accounts/" + a.get("address"));
    });
}

int cmd_wallet_new(int argc, char** argv, int first) {
    const CommandSpec spec{"wallet new",
                           "Makes a key, stored encrypted in DIR/wallets under ALIAS; prints its "
                           "address.",
                           {dir_option, {"alias", "ALIAS", "the wallet's name", true}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        std::string passphrase;
        auto keystore = testnet_keystore(a, passphrase);
        if (!keystore) return fail(keystore.error().message());
        auto wallet = keystore->create(a.get("alias"), passphrase);
        if (!wallet) return fail("wallet " + a.get("alias") + ": " + wallet.error().message());
        std::printf("%s %s\n", a.get("alias").c_str(), wallet->address().to_string().c_str());
        return exit_ok;
    });
}

int cmd_wallet_list(int argc, char** argv, int first) {
    const CommandSpec spec{"wallet list", "Lists the wallets in DIR/wallets.", {dir_option}};
    return with_args(spec, argc, argv, first, [&](const Args& a) {
        std::string passphrase;
        auto keystore = testnet_keystore(a, passphrase);
        if (!keystore) return fail(keystore.error().message());
        for (const auto& entry : keystore->list())
            std::printf("%s %s\n", entry.alias.c_str(), entry.address.to_string().c_str());
        return exit_ok;
    });
}

int cmd_tx_send(int argc, char** argv, int first) {
    const CommandSpec spec{
        "tx send",
        "Signs a transfer with a wallet of the testnet and submits it to one node's HTTP API\n"
        "(POST /v1/txs); with --wait, answers once the block holding it executed there.",
        {dir_option,
         node_option,
         api_option,
         {"from", "ALIAS", "the paying wallet (DIR/wallets/ALIAS.key)", true},
         {"to", "ADDR", "the payee's address", true},
         {"amount", "A", "amount to transfer (> 0)", true},
         {"wait", "", "wait until it is committed"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        std::string err;
        const auto amount = a.get_uint("amount", 0, 1, ~0ull, err);
        if (!amount) {
            print_usage_error(spec, err);
            return exit_usage;
        }
        auto to = Address::parse(a.get("to"));
        if (!to) return fail("--to: " + to.error().message());
        std::string passphrase;
        auto keystore = testnet_keystore(a, passphrase);
        if (!keystore) return fail(keystore.error().message());
        auto wallet = keystore->load(a.get("from"), passphrase);
        if (!wallet) return fail("wallet " + a.get("from") + ": " + wallet.error().message());
        auto api = api_of(a);
        if (!api) return fail(api.error().message());
        // The nonce and the chain id, from the node.
        auto account = api::HttpClient::request("GET", api->host, api->port,
                                                "/v1/accounts/" + wallet->address().to_string());
        if (!account || account->status != 200) return fail("cannot read the sender's account");
        auto genesis = Genesis::load(Layout{fs::absolute(a.get("dir"))}.genesis());
        if (!genesis) return fail("genesis: " + genesis.error().message());
        const auto nonce = nlohmann::json::parse(account->body)["nonce"].get<std::uint64_t>();
        const Tx tx = wallet->transfer(genesis->params.chain_id, nonce, *to, *amount);
        return call(a, "POST", a.flag("wait") ? "/v1/txs?wait=1" : "/v1/txs",
                    api::to_json(tx).dump());
    });
}

} // namespace popchain::cli
