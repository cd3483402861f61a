#include <popchain/api/json.hpp>
#include <popchain/api/node_api.hpp>
#include <popchain/hex.hpp>
#include <popchain/wallet.hpp>

#include <nlohmann/json.hpp>

#include <charconv>
#include <optional>
#include <sstream>

namespace popchain::api {

namespace {

// Errors the client caused get a 4xx; only the node's own trouble is a 5xx.
int status_for(Errc code) {
    switch (code) {
    case Errc::not_found: return 404;
    case Errc::mempool_full:
    case Errc::not_member: return 503; // another node can take it
    case Errc::io_error:
    case Errc::storage_corrupt: return 500;
    default: return 400;
    }
}

// The code goes in "code" only: "message" is the detail (Error::message() would repeat the
// code in front of it); HttpResponse::error puts the code's name there when it is empty.
HttpResponse error_response(const Error& e) {
    return HttpResponse::error(status_for(e.code), errc_name(e.code), e.detail);
}

HttpResponse bad_request(std::string_view message) {
    return HttpResponse::error(400, "invalid_argument", message);
}

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return v;
}

Result<Hash256> parse_hash(std::string_view text, std::string_view what) {
    auto h = fixed_from_hex<Hash256>(text);
    if (!h) return make_error(Errc::invalid_argument, std::string(what) + ": 64 hex digits");
    return *h;
}

// offset/limit of a list route, limit capped at `max_page` (default 100).
Result<std::pair<std::uint64_t, std::uint32_t>> page(const HttpRequest& r, std::uint32_t max_page) {
    std::uint64_t offset = 0;
    std::uint64_t limit = std::min<std::uint64_t>(100, max_page);
    if (auto o = r.query_param("offset")) {
        auto v = parse_u64(*o);
        if (!v) return make_error(Errc::invalid_argument, "offset: a non-negative integer");
        offset = *v;
    }
    if (auto l = r.query_param("limit")) {
        auto v = parse_u64(*l);
        if (!v || *v == 0 || *v > max_page)
            return make_error(Errc::invalid_argument,
                              "limit: an integer in 1 .. " + std::to_string(max_page));
        limit = *v;
    }
    return std::make_pair(offset, static_cast<std::uint32_t>(limit));
}

json tx_record_json(const TxRecord& record, const Block& block) {
    json j = to_json(record);
    j["block_hash"] = to_hex(block.hash().view());
    j["merkle_proof"] = to_json(block.prove_tx(record.index));
    return j;
}

void metric(std::ostringstream& out, const char* name, const char* type, const char* help,
            std::uint64_t value) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << value << '\n';
}

} // namespace

NodeApi::NodeApi(pbft::Replica& replica, const BlockStore& store, net::Transport& timers,
                 NodeApiOptions options)
    : replica_(replica), store_(store), timers_(timers), options_(std::move(options)) {}

NodeApi::~NodeApi() {
    *alive_ = false;
}

Result<std::unique_ptr<NodeApi>> NodeApi::attach(HttpServer& server, pbft::Replica& replica,
                                                 const BlockStore& store, net::Transport& timers,
                                                 NodeApiOptions options) {
    if (options.max_page == 0)
        return make_error(Errc::invalid_argument, "max_page must be at least 1");
    std::unique_ptr<NodeApi> api(new NodeApi(replica, store, timers, std::move(options)));
    if (auto ok = api->add_routes(server); !ok) return ok.error();
    return api;
}

void NodeApi::block_committed(std::uint64_t height, const Hash256& block_hash,
                              const std::vector<Hash256>& txids) {
    if (waiting_.empty()) return;
    for (const Hash256& txid : txids) {
        auto it = waiting_.find(txid);
        if (it == waiting_.end()) continue;
        json body{{"id", to_hex(it->first.view())},
                  {"status", "committed"},
                  {"height", height},
                  {"block_hash", to_hex(block_hash.view())}};
        for (auto& respond : it->second)
            respond(HttpResponse::json(200, body));
        waiting_.erase(it);
    }
    // What is still waiting and has left the mempool without committing here (another
    // transaction took its nonce, or it could not execute) is answered now, not at wait_ms.
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        if (auto answer = settled(it->first)) {
            for (auto& respond : it->second)
                if (!respond.answered()) respond(*answer);
            it = waiting_.erase(it);
        } else {
            ++it;
        }
    }
}

// 200 with where the transaction committed, if the store has it.
std::optional<HttpResponse> NodeApi::committed(const Hash256& txid) const {
    auto record = store_.tx_by_id(txid);
    if (!record) return std::nullopt;
    auto block = store_.block_at(record->height);
    if (!block) return error_response(block.error());
    return HttpResponse::json(200, {{"id", to_hex(txid.view())},
                                    {"status", "committed"},
                                    {"height", record->height},
                                    {"block_hash", to_hex(block->hash().view())}});
}

// The final answer for a transaction a submit waits for, once there is one: committed (it
// may have been in a later block of the same batch), or dropped when it left the mempool
// without committing.
std::optional<HttpResponse> NodeApi::settled(const Hash256& txid) const {
    if (replica_.mempool().contains(txid)) return std::nullopt;
    if (auto answer = committed(txid)) return answer;
    return HttpResponse::error(409, "dropped",
                               "the transaction left this node's mempool without committing: "
                               "another transaction of its sender took its nonce, or it could "
                               "not execute; submit it again if it should still go through");
}

// Accepts a signed transaction as JSON (the form api/json.hpp defines). mint_only: the
// seed's /charge route, which only ever carried top-ups.
void NodeApi::submit(const HttpRequest& request, Responder respond, bool mint_only) {
    auto parsed = parse_json(request.body);
    if (!parsed) return respond(error_response(parsed.error()));
    auto tx = tx_from_json(*parsed);
    if (!tx) return respond(error_response(tx.error()));
    if (mint_only && tx->kind != TxKind::mint)
        return respond(bad_request("/charge takes a mint transaction signed by the authority"));
    const Hash256 txid = tx->id();
    const std::string id = to_hex(txid.view());
    ++api_submits_;
    // Already committed: say so (a retried submit is not an error, and never pays twice).
    if (auto answer = committed(txid)) return respond(*answer);
    // How long to wait, read before anything is admitted: a bad value changes nothing.
    std::optional<std::uint64_t> wait;
    if (const auto w = request.query_param("wait"); w && *w != "0" && *w != "false") {
        wait = options_.wait_ms;
        if (const auto asked = request.query_param("wait_ms")) {
            const auto v = parse_u64(*asked);
            if (!v || *v == 0 || *v > options_.wait_ms)
                return respond(bad_request("wait_ms: 1.." + std::to_string(options_.wait_ms)));
            wait = *v;
        }
    }
    // The replica refuses what cannot execute as its sender's next transaction (an
    // overdraft, a bad escrow step) as well as what its mempool refuses.
    if (auto ok = replica_.submit(*tx); !ok && ok.code() != Errc::already_known) {
        ++api_refused_;
        return respond(error_response(ok.error()));
    }
    if (!wait) return respond(HttpResponse::json(202, {{"id", id}, {"status", "pending"}}));
    waiting_[txid].push_back(respond);
    std::weak_ptr<bool> alive = alive_;
    timers_.set_timer(*wait, [this, alive, txid, respond, id] {
        if (alive.expired() || respond.answered()) return;
        if (auto answer = settled(txid))
            respond(*answer);
        else
            respond(HttpResponse::json(202, {{"id", id}, {"status", "pending"}}));
        auto it = waiting_.find(txid);
        if (it == waiting_.end()) return;
        std::erase_if(it->second, [](const Responder& r) { return r.answered(); });
        if (it->second.empty()) waiting_.erase(it);
    });
}

HttpResponse NodeApi::block_response(const Block& block) const {
    json body{{"block", to_json(block)}, {"certified", false}};
    // The commit proof a light client checks with verify_block() and the replica set (for
    // a block changing the set, the set before the change) alone.
    if (auto proof = replica_.commit_proof(block, options_.max_proof_headers)) {
        body["certified"] = true;
        body["commit_proof"] = to_json(*proof);
    }
    return HttpResponse::json(200, body);
}

std::string NodeApi::metrics() const {
    const auto& s = replica_.stats();
    std::ostringstream out;
    metric(out, "popchain_height", "gauge", "Height of the last executed block.",
           replica_.height());
    metric(out, "popchain_view", "gauge", "Current pBFT view.", replica_.view());
    metric(out, "popchain_committed_blocks_total", "counter",
           "Blocks executed since the node started.", s.executed_blocks);
    metric(out, "popchain_committed_txs_total", "counter",
           "Transactions executed since the node started (rate() gives tx/s).", s.executed_txs);
    metric(out, "popchain_view_changes_total", "counter", "View changes started.", s.view_changes);
    metric(out, "popchain_state_transfers_total", "counter",
           "Certified checkpoints reached by fetching blocks.", s.state_transfers);
    metric(out, "popchain_retransmissions_total", "counter",
           "Replica messages re-sent after a period without progress.", s.retransmissions);
    metric(out, "popchain_bodies_resent_total", "counter",
           "Pre-prepares re-sent to a peer, each with its whole block.", s.bodies_resent);
    metric(out, "popchain_blocks_served_total", "counter",
           "Blocks sent to peers that fetched them.", s.blocks_served);
    metric(out, "popchain_mempool_txs", "gauge", "Transactions waiting for a block.",
           replica_.pending());
    metric(out, "popchain_api_submits_total", "counter", "Transactions submitted over HTTP.",
           api_submits_);
    metric(out, "popchain_api_refused_total", "counter",
           "Submitted transactions the mempool refused.", api_refused_);
    if (options_.peers_connected)
        metric(out, "popchain_peers_connected", "gauge", "Authenticated replica connections.",
               options_.peers_connected());
    out << "# HELP popchain_dropped_messages_total Replica messages dropped, by reason.\n"
           "# TYPE popchain_dropped_messages_total counter\n";
    const std::pair<const char*, std::uint64_t> drops[] = {
        {"unknown_peer", s.unknown_peer},
        {"forged_sender", s.forged_sender},
        {"bad_mac", s.bad_mac},
        {"wrong_destination", s.wrong_destination},
        {"malformed", s.malformed},
        {"wrong_view", s.wrong_view},
        {"wrong_role", s.wrong_role},
        {"outside_watermarks", s.outside_watermarks},
        {"bad_block", s.bad_block},
        {"duplicate", s.duplicate},
        {"conflicting", s.conflicting},
        {"bad_signature", s.bad_signature},
        {"bad_view_change", s.bad_view_change},
        {"bad_client_frame", s.bad_client_frames},
    };
    for (const auto& [reason, count] : drops)
        out << "popchain_dropped_messages_total{reason=\"" << reason << "\"} " << count << '\n';
    if (options_.handshake_refusals) {
        out << "# HELP popchain_handshake_refused_total Replica connections refused during the "
               "handshake, by reason.\n"
               "# TYPE popchain_handshake_refused_total counter\n";
        for (const auto& [reason, count] : options_.handshake_refusals())
            out << "popchain_handshake_refused_total{reason=\"" << reason << "\"} " << count
                << '\n';
    }
    return out.str();
}

Result<void> NodeApi::add_routes(HttpServer& server) {
    std::vector<Result<void>> added;
    auto get = [&](std::string pattern, Handler h) {
        added.push_back(server.route("GET", std::move(pattern), std::move(h)));
    };
    auto post = [&](std::string pattern, AsyncHandler h) {
        added.push_back(server.route_async("POST", std::move(pattern), std::move(h)));
    };

    auto status = [this](const HttpRequest&, const PathParams&) {
        json body{{"id", replica_.id()},
                  {"height", replica_.height()},
                  {"view", replica_.view()},
                  {"view_active", replica_.view_active()},
                  {"primary", replica_.primary()},
                  {"voting", replica_.voting()},
                  {"replicas", replica_.replica_set().size()},
                  {"mempool", replica_.pending()},
                  {"stable_checkpoint", replica_.stable_seq()},
                  {"checkpoint_interval", replica_.config().checkpoint_interval}};
        if (options_.peers_connected) body["peers_connected"] = options_.peers_connected();
        if (const Application* app = replica_.application())
            body["application"] = {{"height", app->height()},
                                   {"state_digest", to_hex(app->state_digest().view())}};
        return HttpResponse::json(200, body);
    };
    auto block_at = [this](std::string_view text) {
        std::optional<std::uint64_t> height =
            text == "latest" ? std::optional<std::uint64_t>(replica_.height()) : parse_u64(text);
        if (!height) return bad_request("height: a non-negative integer or \"latest\"");
        auto block = store_.block_at(*height);
        if (!block) return error_response(block.error());
        return block_response(*block);
    };
    auto block_by_hash = [this](std::string_view text) {
        auto hash = parse_hash(text, "hash");
        if (!hash) return error_response(hash.error());
        auto block = store_.block_by_hash(*hash);
        if (!block) return error_response(block.error());
        return block_response(*block);
    };
    auto tx_by_id = [this](std::string_view text) {
        auto txid = parse_hash(text, "tx id");
        if (!txid) return error_response(txid.error());
        auto record = store_.tx_by_id(*txid);
        if (!record) {
            if (replica_.mempool().contains(*txid))
                return HttpResponse::json(200, {{"id", std::string(text)}, {"status", "pending"}});
            return error_response(record.error());
        }
        auto block = store_.block_at(record->height);
        if (!block) return error_response(block.error());
        json body = tx_record_json(*record, *block);
        body["status"] = "committed";
        return HttpResponse::json(200, body);
    };
    auto txs_of = [this](const HttpRequest& r, std::string_view text) {
        auto address = Address::parse(text);
        if (!address) return error_response(address.error());
        auto p = page(r, options_.max_page);
        if (!p) return error_response(p.error());
        auto records = store_.txs_of_address(*address, p->first, p->second);
        if (!records) return error_response(records.error());
        json list = json::array();
        for (const auto& record : *records) {
            auto block = store_.block_at(record.height);
            if (!block) return error_response(block.error());
            list.push_back(tx_record_json(record, *block));
        }
        return HttpResponse::json(
            200,
            {{"address", address->to_string()}, {"offset", p->first}, {"txs", std::move(list)}});
    };
    // The most recent transactions of the chain, newest first.
    auto recent_txs = [this](const HttpRequest& r) {
        auto p = page(r, options_.max_page);
        if (!p) return error_response(p.error());
        json list = json::array();
        std::uint64_t skipped = 0;
        for (std::uint64_t h = replica_.height(); h >= 1 && list.size() < p->second; --h) {
            auto block = store_.block_at(h);
            if (!block) return error_response(block.error());
            for (std::size_t i = block->txs.size(); i-- > 0 && list.size() < p->second;) {
                if (skipped++ < p->first) continue;
                TxRecord record{block->txs[i], h, static_cast<std::uint32_t>(i)};
                list.push_back(tx_record_json(record, *block));
            }
        }
        return HttpResponse::json(200, {{"offset", p->first}, {"txs", std::move(list)}});
    };
    auto account = [this](std::string_view text) {
        auto address = Address::parse(text);
        if (!address) return error_response(address.error());
        return HttpResponse::json(200, to_json(*address, replica_.ledger().account(*address)));
    };
    auto escrow = [this](std::string_view text) {
        auto trade = parse_hash(text, "trade id");
        if (!trade) return error_response(trade.error());
        auto e = replica_.ledger().escrow(*trade);
        if (!e) return HttpResponse::error(404, "not_found", "no escrow with that trade id");
        return HttpResponse::json(200, to_json(*trade, *e));
    };
    auto param = [](const PathParams& p, const char* name) -> std::string_view {
        return p.find(name)->second;
    };
    auto query = [](const HttpRequest& r, const char* name) -> std::optional<std::string_view> {
        return r.query_param(name);
    };

    // ---- /v1 ----
    get("/v1/status", status);
    get("/v1/blocks/{height}",
        [=](const HttpRequest&, const PathParams& p) { return block_at(param(p, "height")); });
    get("/v1/blocks/by-hash/{hash}",
        [=](const HttpRequest&, const PathParams& p) { return block_by_hash(param(p, "hash")); });
    get("/v1/txs/{id}",
        [=](const HttpRequest&, const PathParams& p) { return tx_by_id(param(p, "id")); });
    get("/v1/txs", [=](const HttpRequest& r, const PathParams&) { return recent_txs(r); });
    get("/v1/addresses/{address}/txs",
        [=](const HttpRequest& r, const PathParams& p) { return txs_of(r, param(p, "address")); });
    get("/v1/accounts/{address}",
        [=](const HttpRequest&, const PathParams& p) { return account(param(p, "address")); });
    get("/v1/escrows/{trade_id}",
        [=](const HttpRequest&, const PathParams& p) { return escrow(param(p, "trade_id")); });
    post("/v1/txs", [this](const HttpRequest& r, const PathParams&, Responder respond) {
        submit(r, std::move(respond), false);
    });
    get("/metrics", [this](const HttpRequest&, const PathParams&) {
        HttpResponse r = HttpResponse::text(200, metrics());
        r.headers["Content-Type"] = "text/plain; version=0.0.4";
        return r;
    });

    // ---- the original system's routes (docs/api.md maps each) ----
    post("/newTx", [this](const HttpRequest& r, const PathParams&, Responder respond) {
        submit(r, std::move(respond), false);
    });
    post("/charge", [this](const HttpRequest& r, const PathParams&, Responder respond) {
        submit(r, std::move(respond), true);
    });
    // Blocks are cut by the primary when transactions are ready; asking for one only reports
    // where the chain is.
    post("/newBlock", [this](const HttpRequest&, const PathParams&, Responder respond) {
        respond(HttpResponse::json(
            202, {{"height", replica_.height()}, {"pending", replica_.pending()}}));
    });
    get("/getBlockOne", [=](const HttpRequest& r, const PathParams&) {
        auto hash = query(r, "hash");
        auto height = query(r, "height");
        if (hash && height) return bad_request("give ?height=N or ?hash=H, not both");
        if (hash) return block_by_hash(*hash);
        if (height) return block_at(*height);
        return bad_request("give ?height=N or ?hash=H");
    });
    get("/getTx", [=](const HttpRequest& r, const PathParams&) {
        auto id = query(r, "id");
        if (!id) return bad_request("give ?id=<tx id>");
        return tx_by_id(*id);
    });
    get("/getAllTx", [=](const HttpRequest& r, const PathParams&) {
        if (auto a = query(r, "address")) return txs_of(r, *a);
        return recent_txs(r);
    });
    post("/makeWallet", [this](const HttpRequest& r, const PathParams&, Responder respond) {
        if (!options_.dev_wallets)
            return respond(HttpResponse::error(
                403, "forbidden",
                "wallets are made by clients (sign locally); this node does not make them"));
        auto parsed = parse_json(r.body);
        if (!parsed) return respond(error_response(parsed.error()));
        const json& j = *parsed;
        if (!j.is_object() || j.size() != 1 || !j.contains("passphrase") ||
            !j["passphrase"].is_string() || j["passphrase"].get<std::string>().size() < 8)
            return respond(bad_request(
                "body: {\"passphrase\": \"...\"} with a passphrase of at least 8 characters"));
        SigningKey key = SigningKey::generate();
        auto pem = key.encrypted_pem(j["passphrase"].get<std::string>(), 100);
        if (!pem) return respond(error_response(pem.error()));
        respond(HttpResponse::json(200, {{"address", key.address().to_string()},
                                         {"public_key", to_hex(key.public_key().view())},
                                         {"encrypted_key", *pem}}));
    });

    for (auto& ok : added)
        if (!ok) return ok.error();
    return {};
}

} // namespace popchain::api
