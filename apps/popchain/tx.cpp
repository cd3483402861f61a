// popchain tx transfer: a payment submitted the way any client submits, through a pbft::Client
// over an AsioTransport client connection, trusted once f+1 replicas agree on its fate.
#include "args.hpp"
#include "testnet.hpp"

#include <popchain/hex.hpp>
#include <popchain/keystore.hpp>
#include <popchain/net/asio_transport.hpp>
#include <popchain/node.hpp>
#include <popchain/pbft/client.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/sqlite_store.hpp>

#include <asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace popchain::cli {

namespace fs = std::filesystem;

namespace {

// The newest state any node's store holds: the sender's next nonce and the replica set the
// chain has now (it may have changed since genesis). Read-only use of the node stores.
struct ChainView {
    std::uint64_t height = 0;
    std::optional<State> state;
};

ChainView newest_state(const Layout& layout) {
    ChainView best;
    for (auto i : layout.nodes()) {
        std::error_code ec;
        if (!fs::exists(layout.chain_db(i), ec)) continue;
        auto store = SqliteStore::open(layout.chain_db(i));
        if (!store || !(*store)->tip_height()) continue;
        if (best.state && *(*store)->tip_height() <= best.height) continue;
        auto state = (*store)->load_state();
        if (!state) continue;
        best.height = *(*store)->tip_height();
        best.state = std::move(state).value();
    }
    return best;
}

} // namespace

int cmd_tx_transfer(int argc, char** argv, int first) {
    const CommandSpec spec{
        "tx transfer",
        "Signs a transfer with a wallet of the testnet and submits it to every replica.\n"
        "With --wait, waits until f+1 replicas report it committed (or rejected) and prints\n"
        "\"committed txid=<hex> height=<h> block=<hex>\".",
        {{"dir", "DIR", "the testnet directory", true},
         {"from", "ALIAS", "the paying wallet (DIR/wallets/ALIAS.key)", true},
         {"to", "ADDR", "the payee: an address or a wallet alias", true},
         {"amount", "A", "amount to transfer (> 0)", true},
         {"nonce", "N", "the sender's nonce (default: read from the nodes' stores)"},
         {"wait", "", "wait for the outcome"},
         {"timeout", "S",
          "give up after S seconds (default 30), counted from the start: loading, connecting, "
          "submitting and waiting"}}};
    return with_args(spec, argc, argv, first, [&](const Args& a) -> int {
        const auto started = std::chrono::steady_clock::now();
        std::string err;
        const auto amount = a.get_uint("amount", 0, 1, ~0ull, err);
        const auto timeout = a.get_uint("timeout", 30, 1, 3600, err);
        const auto nonce_arg = a.get_uint("nonce", 0, 0, ~0ull, err);
        if (!amount || !timeout || !nonce_arg) return usage_fail(spec, err);
        // One deadline for the whole command: the client's own give-up is checked only when
        // it retransmits (after 0.5, 1, 2, 4, 8 s), which can be seconds past --timeout.
        const auto deadline = started + std::chrono::seconds(*timeout);
        auto layout_or = layout_of(a.get("dir"));
        if (!layout_or) return usage_fail(spec, layout_or.error().detail);
        const Layout layout = *layout_or;
        auto genesis = Genesis::load(layout.genesis());
        if (!genesis) return fail(layout.genesis().string() + ": " + genesis.error().message());
        auto built = genesis->build();
        if (!built) return fail("genesis: " + built.error().message());
        auto passphrase = read_testnet_passphrase(layout);
        if (!passphrase) return fail(passphrase.error().message());

        Keystore keystore(layout.wallets());
        auto wallet = keystore.load(a.get("from"), *passphrase);
        if (!wallet) return fail("wallet " + a.get("from") + ": " + wallet.error().message());
        Address to;
        if (auto parsed = Address::parse(a.get("to"))) {
            to = *parsed;
        } else {
            bool found = false;
            for (const auto& entry : keystore.list())
                if (entry.alias == a.get("to")) {
                    to = entry.address;
                    found = true;
                }
            if (!found) return fail("--to " + a.get("to") + " is neither an address nor a wallet");
        }

        const ChainView chain = newest_state(layout);
        std::uint64_t nonce = *nonce_arg;
        if (!a.has("nonce") && chain.state) {
            const auto it = chain.state->accounts.find(wallet->address());
            if (it != chain.state->accounts.end()) nonce = it->second.nonce;
        }
        std::vector<ReplicaInfo> replicas = chain.state && !chain.state->replicas.empty()
                                                ? chain.state->replicas
                                                : genesis->replicas;

        const Tx tx = wallet->transfer(genesis->params.chain_id, nonce, to, *amount);
        const std::string txid = to_hex(tx.id());

        asio::io_context io(1);
        // A throwaway identity for this connection: replies are MACed to the pbft::Client's
        // own session key, so the transport key need not be known to anyone.
        const SigningKey session = SigningKey::generate();
        net::AsioOptions options;
        std::uint32_t random_id = 0;
        for (auto b : random_bytes(4))
            random_id = (random_id << 8) | b;
        options.self = net::first_client_id + (random_id % (net::first_client_id - 1));
        options.key = &session;
        options.network_id = built->block.hash();
        options.listen = false;
        for (const auto& r : replicas) {
            auto ep = Endpoint::parse(r.endpoint);
            if (!ep) return fail("replica " + std::to_string(r.id) + ": " + ep.error().detail);
            options.peers[r.id] = net::PeerAddress{ep->host, ep->port, r.key};
        }
        auto transport = net::AsioTransport::create(io, options);
        if (!transport) return fail("client transport: " + transport.error().message());
        pbft::ClientConfig cc;
        cc.give_up_ms = *timeout * 1000;
        auto client = pbft::Client::create(**transport, replicas, cc);
        if (!client) return fail("client: " + client.error().message());
        (*transport)->set_receiver(client->get());

        std::optional<Result<pbft::Committed>> outcome;
        (*client)->submit(tx, [&](Result<pbft::Committed> r) { outcome = std::move(r); });
        if (!a.flag("wait")) {
            // Until every replica has the request on the wire (or the timeout): a request
            // that reaches f+1 correct replicas is bound to be ordered.
            const auto n = static_cast<std::uint64_t>(replicas.size());
            while (!outcome && (*transport)->stats().frames_sent < n &&
                   std::chrono::steady_clock::now() < deadline) {
                io.restart();
                io.run_for(std::chrono::milliseconds(10));
            }
            const auto sent = (*transport)->stats().frames_sent;
            if (sent < pbft::max_faulty(static_cast<std::uint32_t>(n)) + 1)
                return fail("could reach only " + std::to_string(sent) + " of " +
                            std::to_string(n) + " replicas");
            std::printf("submitted txid=%s nonce=%llu\n", txid.c_str(),
                        static_cast<unsigned long long>(nonce));
            return exit_ok;
        }
        for (auto now = std::chrono::steady_clock::now(); !outcome && now < deadline;
             now = std::chrono::steady_clock::now()) {
            io.restart();
            io.run_for(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(50),
                                                                     deadline - now));
        }
        if (!outcome || outcome->code() == Errc::timeout)
            return fail("txid " + txid + ": timed out after " + std::to_string(*timeout) +
                        " s: still pending (no f+1 matching replies yet; it may still commit)");
        if (!*outcome) return fail("txid " + txid + " rejected: " + outcome->error().message());
        std::printf("committed txid=%s height=%llu block=%s\n", txid.c_str(),
                    static_cast<unsigned long long>((*outcome)->height),
                    to_hex((*outcome)->block_hash).c_str());
        return exit_ok;
    });
}

} // namespace popchain::cli
