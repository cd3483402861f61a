// The node's HTTP/JSON API: versioned routes under /v1, Prometheus metrics, and the
// original POP Market routes as thin aliases (docs/api.md lists them all).
//
// The API runs on the replica's thread (the HttpServer shares the node's io_context), so
// handlers read the replica, its ledger and the store directly, without locks. It changes
// the chain only by handing signed transactions to Replica::submit: every rule the ledger
// enforces holds for API clients too, and a refused transaction changes nothing.
//
// Waiting for commit. POST /v1/txs answers 202 at once with the txid, or with ?wait=1
// defers the answer until the transaction's block executes here (200 with height and block
// hash), it leaves the mempool without committing (409 dropped: another transaction took its
// nonce, or it could not execute), or wait_ms passes (202, still pending; ?wait_ms=N asks for
// less). The node calls block_committed() for every executed block.
#pragma once

#include <popchain/api/http_server.hpp>
#include <popchain/pbft/replica.hpp>
#include <popchain/store.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace popchain::api {

struct NodeApiOptions {
    std::uint64_t wait_ms = 10'000;         // longest ?wait=1 on a submit
    std::uint32_t max_page = 1000;          // largest `limit` of a list route
    std::uint32_t max_proof_headers = 4096; // longest header chain in a commit proof
    // POST /makeWallet generates a key on the node and returns it encrypted under the
    // caller's passphrase. For local and development chains only (a production client keeps
    // its key and signs locally), so it is off unless enabled.
    bool dev_wallets = false;
    // Authenticated replica connections, for /v1/status and the metrics (optional).
    std::function<std::size_t()> peers_connected;
    // Connections closed during the replica handshake, by reason: an unknown id, a key
    // that is not the member's (an impostor), another network... (optional).
    std::function<std::vector<std::pair<std::string, std::uint64_t>>()> handshake_refusals;
};

class NodeApi {
public:
    // Registers every route on `server` (before server.start()). `timers` is the replica's
    // transport (for the ?wait=1 deadline). The replica, store and transport must outlive
    // the NodeApi; the server must not call it after it is gone (close it first).
    static Result<std::unique_ptr<NodeApi>> attach(HttpServer& server, pbft::Replica& replica,
                                                   const BlockStore& store, net::Transport& timers,
                                                   NodeApiOptions options = {});
    ~NodeApi();
    NodeApi(const NodeApi&) = delete;
    NodeApi& operator=(const NodeApi&) = delete;

    // Answers the submits waiting for any of `txids`, committed in the block `block_hash` at
    // `height`.
    void block_committed(std::uint64_t height, const Hash256& block_hash,
                         const std::vector<Hash256>& txids);

    // The Prometheus text exposition of the node's counters and gauges.
    std::string metrics() const;

private:
    NodeApi(pbft::Replica& replica, const BlockStore& store, net::Transport& timers,
            NodeApiOptions options);
    Result<void> add_routes(HttpServer& server);
    void submit(const HttpRequest& request, Responder respond, bool mint_only);
    HttpResponse block_response(const Block& block) const;
    std::optional<HttpResponse> committed(const Hash256& txid) const;
    std::optional<HttpResponse> settled(const Hash256& txid) const;

    pbft::Replica& replica_;
    const BlockStore& store_;
    net::Transport& timers_;
    NodeApiOptions options_;
    std::map<Hash256, std::vector<Responder>> waiting_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::uint64_t api_submits_ = 0;
    std::uint64_t api_refused_ = 0;
};

} // namespace popchain::api
