#include "market.hpp"

#include "schema.hpp"

#include <popchain/api/json.hpp>
#include <popchain/hex.hpp>
#include <popchain/wallet.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace popmarket {

using namespace popchain;
using api::HttpRequest;
using api::HttpResponse;

// ---------------------------------------------------------------- plumbing

// Thrown by handlers for anything the caller did wrong; becomes a 4xx JSON error. Nothing
// is written before the checks that can throw it, or it is written in a Db::Tx.
struct ApiError {
    int status;
    std::string code;
    std::string message;
    int retry_after = 0; // seconds, for a Retry-After header; 0: none
};

[[noreturn]] void fail(int status, std::string code, std::string message) {
    throw ApiError{status, std::move(code), std::move(message)};
}

// Refused because the chain or this member's earlier requests are busy; nothing was done.
[[noreturn]] void fail_busy(int status, std::string code, std::string message) {
    throw ApiError{status, std::move(code), std::move(message), 2};
}

// A place among the requests that wait for the chain, or the refusal: nothing was done.
std::shared_ptr<ChainGate::Ticket> admit(ChainGate& gate, std::int64_t member) {
    ChainGate::Refusal why = ChainGate::Refusal::none;
    auto ticket = gate.enter(member, why);
    if (why == ChainGate::Refusal::member)
        fail_busy(429, "too_many_chain_requests",
                  "you already have " + std::to_string(gate.member_limit()) +
                      " requests waiting for the chain (it is slow or has no quorum); nothing "
                      "was done: try again once they are answered");
    if (why == ChainGate::Refusal::total)
        fail_busy(503, "chain_busy",
                  std::to_string(gate.total_limit()) +
                      " requests are already waiting for the chain (it is slow or has no "
                      "quorum); nothing was done: try again later");
    return ticket;
}

HttpResponse error_response(const ApiError& e) {
    HttpResponse r = HttpResponse::error(e.status, e.code, e.message);
    if (e.retry_after > 0) r.headers["Retry-After"] = std::to_string(e.retry_after);
    return r;
}

struct Caller {
    std::int64_t id = 0;
    std::string username;
    std::string address;
    bool admin = false;
    std::string csrf;
    std::string token;
    std::string key_pem; // under the token
};

struct Call {
    const HttpRequest& http;
    const api::PathParams& params;
    std::optional<Caller> caller;
    json body;
    // When a request that waits for the chain stops waiting and answers with what it has.
    Market::Deadline deadline{};

    const std::string& param(const char* name) const { return params.find(name)->second; }
    const Caller& who() const { return *caller; }
};

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

HttpResponse ok_json(int status, const json& body) {
    HttpResponse r = HttpResponse::json(status, body);
    r.headers["Cache-Control"] = "no-store";
    return r;
}

std::string hash_hex(std::string_view text) {
    return to_hex(sha256(text));
}

// Only the fields a route knows: a misspelt one is an error, not silently ignored.
void allow_fields(const json& body, std::initializer_list<const char*> names) {
    if (!body.is_object()) fail(400, "invalid_argument", "the body must be a JSON object");
    for (const auto& [key, value] : body.items()) {
        if (std::none_of(names.begin(), names.end(), [&](const char* n) { return key == n; }))
            fail(400, "invalid_argument", "unknown field: " + key);
    }
}

// The number of Unicode code points (characters) in `text`, or nothing when it is not valid
// UTF-8: a stray continuation byte, a sequence cut short, an overlong form, a surrogate, or a
// value past U+10FFFF.
std::optional<std::size_t> utf8_length(std::string_view text) {
    std::size_t count = 0, i = 0;
    while (i < text.size()) {
        const auto lead = static_cast<unsigned char>(text[i]);
        std::size_t len = 1;
        std::uint32_t cp = lead;
        if (lead >= 0xC2 && lead <= 0xDF)
            len = 2, cp = lead & 0x1F;
        else if (lead >= 0xE0 && lead <= 0xEF)
            len = 3, cp = lead & 0x0F;
        else if (lead >= 0xF0 && lead <= 0xF4)
            len = 4, cp = lead & 0x07;
        else if (lead >= 0x80)
            return std::nullopt;
        if (len > text.size() - i) return std::nullopt;
        for (std::size_t k = 1; k < len; ++k) {
            const auto next = static_cast<unsigned char>(text[i + k]);
            if ((next & 0xC0) != 0x80) return std::nullopt;
            cp = (cp << 6) | (next & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return std::nullopt;
        i += len;
        ++count;
    }
    return count;
}

// Lengths are counted in characters (code points), as the error says: "é" is one, not two.
std::string get_string(const json& body, const char* name, std::size_t min, std::size_t max,
                       bool required = true) {
    if (!body.contains(name)) {
        if (!required) return {};
        fail(400, "invalid_argument", std::string(name) + " is required");
    }
    if (!body[name].is_string()) fail(400, "invalid_argument", std::string(name) + ": a string");
    std::string v = body[name].get<std::string>();
    const auto length = utf8_length(v);
    if (!length) fail(400, "invalid_argument", std::string(name) + ": not valid UTF-8");
    if (*length < min || *length > max)
        fail(400, "invalid_argument",
             std::string(name) + ": " + std::to_string(min) + " to " + std::to_string(max) +
                 " characters");
    return v;
}

std::uint64_t get_uint(const json& body, const char* name, std::uint64_t min, std::uint64_t max) {
    if (!body.contains(name)) fail(400, "invalid_argument", std::string(name) + " is required");
    const json& v = body[name];
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
        fail(400, "invalid_argument", std::string(name) + ": a whole number");
    const auto n = v.get<std::uint64_t>();
    if (n < min || n > max)
        fail(400, "invalid_argument",
             std::string(name) + ": " + std::to_string(min) + " to " + std::to_string(max));
    return n;
}

std::optional<std::uint64_t> parse_uint(std::string_view text) {
    if (text.empty() || text.size() > 19) return std::nullopt;
    std::uint64_t v = 0;
    for (char ch : text) {
        if (ch < '0' || ch > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    return v;
}

std::int64_t path_id(const Call& c, const char* name) {
    auto v = parse_uint(c.param(name));
    if (!v || *v > static_cast<std::uint64_t>(INT64_MAX)) fail(404, "not_found", "no such id");
    return static_cast<std::int64_t>(*v);
}

std::pair<std::int64_t, std::int64_t> paging(const Call& c, std::int64_t max_limit) {
    std::int64_t offset = 0, limit = std::min<std::int64_t>(20, max_limit);
    if (auto o = c.http.query_param("offset")) {
        auto v = parse_uint(*o);
        if (!v || *v > 1'000'000'000) fail(400, "invalid_argument", "offset: a whole number");
        offset = static_cast<std::int64_t>(*v);
    }
    if (auto l = c.http.query_param("limit")) {
        auto v = parse_uint(*l);
        if (!v || *v < 1 || *v > static_cast<std::uint64_t>(max_limit))
            fail(400, "invalid_argument", "limit: 1 to " + std::to_string(max_limit));
        limit = static_cast<std::int64_t>(*v);
    }
    return {offset, limit};
}

std::optional<std::string> base64_decode(std::string_view in) {
    auto value = [](char ch) -> int {
        if (ch >= 'A' && ch <= 'Z') return ch - 'A';
        if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
        if (ch >= '0' && ch <= '9') return ch - '0' + 52;
        if (ch == '+') return 62;
        if (ch == '/') return 63;
        return -1;
    };
    while (!in.empty() && in.back() == '=')
        in.remove_suffix(1);
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char ch : in) {
        const int v = value(ch);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return out;
}

std::optional<std::string> cookie(const HttpRequest& r, std::string_view name) {
    auto header = r.header("Cookie");
    if (!header) return std::nullopt;
    std::string_view rest = *header;
    while (!rest.empty()) {
        const auto semi = rest.find(';');
        std::string_view part = rest.substr(0, semi);
        rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
        while (!part.empty() && part.front() == ' ')
            part.remove_prefix(1);
        const auto eq = part.find('=');
        if (eq != std::string_view::npos && part.substr(0, eq) == name)
            return std::string(part.substr(eq + 1));
    }
    return std::nullopt;
}

constexpr const char* session_cookie = "pm_session";

Hash256 parse_trade_id(const Call& c) {
    auto id = fixed_from_hex<Hash256>(c.param("trade_id"));
    if (!id) fail(404, "not_found", "no such trade");
    return *id;
}

// The canonical text a review's digest covers; the anchoring transaction carries the digest.
std::string review_digest(const std::string& trade_id, const std::string& buyer,
                          std::int64_t rating, const std::string& body) {
    return hash_hex("popmarket/review/v1\n" + trade_id + "\n" + buyer + "\n" +
                    std::to_string(rating) + "\n" + body);
}
constexpr std::string_view review_prefix = "popmarket-review:";

bool is_valid_username(const std::string& name) {
    return std::all_of(name.begin(), name.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '-' || ch == '.';
    });
}

} // namespace

// ---------------------------------------------------------------- setup and routing

Market::Market(Db& db, ChainClient& chain, MarketOptions options)
    : db_(db), chain_(chain),
      verifier_(chain, options.replicas, popchain::Address::of(options.chain_authority)),
      options_(std::move(options)),
      trust_root_(trust_root_json(options_.replicas, options_.chain_id)),
      chain_gate_(options_.chain_workers, options_.chain_requests_per_member) {
    dummy_hash_ = hash_password("not a real password", options_.passwords);
}

Result<void> Market::setup(const std::string& admin_password) {
    try {
        db_.exec_script(schema_sql);
        // Usernames are unique without regard to (ASCII) case. A database from before that
        // rule may hold names that differ only in case: they are kept (and logged), and sign-up
        // still refuses any new look-alike, as it checks the folded name itself.
        try {
            db_.exec_script(members_nocase_index_sql);
        } catch (const DbError&) {
            if (!db_.one("SELECT 1 FROM members GROUP BY lower(username) HAVING COUNT(*) > 1"))
                throw;
            db_.exec_script(members_folded_index_sql);
            std::fprintf(stderr,
                         "popmarket: warning: existing members have usernames that differ only "
                         "in letter case; they are kept, and new sign-ups are checked without "
                         "case\n");
        }
        if (options_.admin_username.empty()) return {};
        auto admin =
            db_.one("SELECT id FROM members WHERE username = ?", {options_.admin_username});
        if (!admin) {
            if (auto other = db_.one("SELECT username FROM members WHERE lower(username) = "
                                     "lower(?)",
                                     {options_.admin_username}))
                return make_error(Errc::invalid_argument,
                                  "--admin " + options_.admin_username + ": the member \"" +
                                      other->text(0) +
                                      "\" differs only in letter case; give that name");
            if (admin_password.size() < 8)
                return make_error(Errc::invalid_argument,
                                  "the admin member does not exist yet: give its password (8+ "
                                  "characters) to create it");
            Wallet wallet = Wallet::generate(options_.admin_username);
            auto pem = wallet.signing_key().encrypted_pem(admin_password, options_.key_kdf_msec);
            if (!pem) return pem.error();
            db_.query("INSERT INTO members (username, password_hash, address, key_pem, is_admin, "
                      "created_at) VALUES (?, ?, ?, ?, 1, ?)",
                      {options_.admin_username, hash_password(admin_password, options_.passwords),
                       wallet.address().to_string(), *pem, now_ms()});
        }
        // The role follows the configuration: a former admin loses it on restart.
        db_.query("UPDATE members SET is_admin = (username = ?)", {options_.admin_username});
        for (const char* name : {"index.html", "app.js", "verify.js", "style.css"}) {
            std::ifstream in(options_.static_dir / name, std::ios::binary);
            if (!in)
                return make_error(Errc::not_found,
                                  "web UI file missing: " + (options_.static_dir / name).string());
            std::ostringstream s;
            s << in.rdbuf();
            static_files_[name] = s.str();
        }
    } catch (const DbError& e) {
        return make_error(Errc::io_error, e.what());
    }
    return {};
}

Result<void> Market::add_routes(api::HttpServer& server, WorkerPool& pool, WorkerPool& chain_pool) {
    std::vector<Result<void>> added;
    // What `make` answers, or the error it threw as an answer. `make` answers nothing when it
    // handed the request on.
    auto answer = [](auto&& make) -> std::optional<HttpResponse> {
        try {
            return make();
        } catch (const ApiError& e) {
            return error_response(e);
        } catch (const DbError& e) {
            return HttpResponse::error(500, "database", e.what());
        } catch (const std::exception& e) {
            return HttpResponse::error(500, "internal", e.what());
        }
    };
    // Every request is checked (session, role, CSRF, JSON) on `pool`. One that signs a
    // transaction and waits for its commit (`waits`) is then admitted by the ChainGate or
    // refused at once (nothing done), and runs on `chain_pool`: the threads of `pool` are
    // never held by a wait for the chain.
    auto route = [&](const char* method, const char* pattern, Access access, Handler handler,
                     bool waits = false) {
        const bool changes = std::string_view(method) != "GET";
        added.push_back(server.route_async(
            method, pattern,
            [this, &pool, &chain_pool, access, changes, waits, handler,
             answer](const HttpRequest& r, const api::PathParams& p, api::Responder respond) {
                pool.post([this, &chain_pool, access, changes, waits, handler, answer, r, p,
                           respond] {
                    auto out = answer([&]() -> std::optional<HttpResponse> {
                        Call c{r, p, caller_of(r), json()};
                        if (access != Access::anyone && !c.caller)
                            fail(401, "unauthenticated", "log in first");
                        if (access == Access::admin && !c.caller->admin)
                            fail(403, "forbidden", "only the admin may do this");
                        if (changes) {
                            // A cross-site form cannot send JSON without a CORS preflight,
                            // and only our own page can read the session's CSRF token.
                            auto type = r.header("Content-Type");
                            if (!type || type->find("application/json") != 0)
                                fail(415, "unsupported_media_type", "send application/json");
                            if (c.caller) {
                                auto token = r.header("X-CSRF-Token");
                                if (!token ||
                                    !equal_in_constant_time(sha256(*token), sha256(c.caller->csrf)))
                                    fail(403, "csrf", "missing or wrong X-CSRF-Token header");
                            }
                            c.body = r.body.empty() ? json::object()
                                                    : json::parse(r.body, nullptr, false);
                            if (c.body.is_discarded())
                                fail(400, "malformed", "the body is not valid JSON");
                        }
                        if (!waits) {
                            c.deadline = Clock::now() + options_.commit_wait;
                            return handler(c);
                        }
                        auto ticket = admit(chain_gate_, c.who().id);
                        chain_pool.post([this, handler, answer, r, p, respond, ticket,
                                         caller = c.caller, body = c.body] {
                            auto out = answer([&]() -> std::optional<HttpResponse> {
                                Call c{r, p, caller, body, Clock::now() + options_.commit_wait};
                                return handler(c);
                            });
                            // Free the place before answering: the member's next request,
                            // sent on this answer, must find it free.
                            ticket->release();
                            respond(std::move(*out));
                        });
                        return std::nullopt;
                    });
                    if (out) respond(std::move(*out));
                });
            }));
    };
    auto bind = [this](HttpResponse (Market::*fn)(Call&)) -> Handler {
        return [this, fn](Call& c) { return (this->*fn)(c); };
    };
    const auto anyone = Access::anyone, member = Access::member, admin = Access::admin;

    route("GET", "/api/session", anyone, bind(&Market::session));
    route("POST", "/api/signup", anyone, bind(&Market::signup));
    route("POST", "/api/login", anyone, bind(&Market::login));
    route("POST", "/api/logout", member, bind(&Market::logout));
    route("GET", "/api/me", member, bind(&Market::me));
    route("GET", "/api/products", anyone, bind(&Market::list_products));
    route("POST", "/api/products", member, bind(&Market::create_product));
    route("GET", "/api/products/{id}", anyone, bind(&Market::product));
    route("GET", "/api/products/{id}/photo", anyone, bind(&Market::photo));
    // The routes that sign a transaction and wait for its commit run behind the ChainGate.
    const bool waits = true;
    route("POST", "/api/products/{id}/buy", member, bind(&Market::buy), waits);
    route("GET", "/api/trades", member, bind(&Market::my_trades));
    route("GET", "/api/trades/{trade_id}", member, bind(&Market::trade));
    for (const char* action : {"confirm", "cancel", "reclaim"}) {
        route(
            "POST", (std::string("/api/trades/{trade_id}/") + action).c_str(), member,
            [this, action](Call& c) { return close_trade(c, action); }, waits);
    }
    route("POST", "/api/trades/{trade_id}/review", member, bind(&Market::review), waits);
    // A charge request waits for the chain only when it may be approved at once.
    route("POST", "/api/charges", member, bind(&Market::request_charge),
          options_.authority && options_.auto_approve_limit > 0);
    route("GET", "/api/charges", member, bind(&Market::my_charges));
    route("GET", "/api/admin/charges", admin, bind(&Market::admin_charges));
    route(
        "POST", "/api/admin/charges/{id}/approve", admin,
        [this](Call& c) { return decide_charge(c, true); }, waits);
    route("POST", "/api/admin/charges/{id}/reject", admin,
          [this](Call& c) { return decide_charge(c, false); });
    route("GET", "/api/sellers/{username}", anyone, bind(&Market::seller_profile));
    route("GET", "/api/chain/status", anyone, bind(&Market::chain_status));
    route("GET", "/api/chain/trust-root", anyone, bind(&Market::chain_trust_root));
    route("GET", "/api/chain/blocks", anyone, bind(&Market::chain_blocks));
    route("GET", "/api/chain/blocks/{height}", anyone, bind(&Market::chain_block));
    route("GET", "/api/chain/txs/{id}", anyone, bind(&Market::chain_tx));
    route("GET", "/api/chain/addresses/{address}", anyone, bind(&Market::chain_address));

    // The web UI: four files, held in memory, under a policy that allows nothing from
    // elsewhere (there is no CDN; uploaded photos preview as data: URLs).
    auto file = [this](const std::string& name, const char* type) {
        return [this, name, type](const HttpRequest&, const api::PathParams&) {
            HttpResponse r = HttpResponse::text(200, static_files_.at(name));
            r.headers["Content-Type"] = type;
            r.headers["Content-Security-Policy"] =
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";
            r.headers["X-Content-Type-Options"] = "nosniff";
            r.headers["Referrer-Policy"] = "same-origin";
            return r;
        };
    };
    added.push_back(server.route("GET", "/", file("index.html", "text/html; charset=utf-8")));
    added.push_back(
        server.route("GET", "/static/app.js", file("app.js", "text/javascript; charset=utf-8")));
    added.push_back(server.route("GET", "/static/verify.js",
                                 file("verify.js", "text/javascript; charset=utf-8")));
    added.push_back(
        server.route("GET", "/static/style.css", file("style.css", "text/css; charset=utf-8")));
    for (auto& a : added)
        if (!a) return a.error();
    return {};
}

// ---------------------------------------------------------------- sessions

std::optional<Caller> Market::caller_of(const HttpRequest& r) {
    auto token = cookie(r, session_cookie);
    if (!token || token->size() != 64) return std::nullopt;
    auto row = db_.one("SELECT m.id, m.username, m.address, m.is_admin, s.csrf, s.key_pem "
                       "FROM sessions s JOIN members m ON m.id = s.member_id "
                       "WHERE s.token_hash = ? AND s.expires_at > ?",
                       {hash_hex(*token), now_ms()});
    if (!row) return std::nullopt;
    return Caller{row->integer(0), row->text(1), row->text(2), row->integer(3) != 0,
                  row->text(4),    *token,       row->text(5)};
}

// The wallet key is re-encrypted under the session token, which only the browser holds (the
// table keeps its hash): the server can sign for a member while a request of that member's
// session is in hand, and a copy of the database alone signs nothing.
HttpResponse Market::start_session(std::int64_t member_id, const SigningKey& key, int status) {
    const std::string token = random_token(32);
    const std::string csrf = random_token(16);
    auto pem = key.encrypted_pem(token, 1);
    if (!pem) fail(500, "internal", pem.error().message());
    const auto lifetime =
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.session_lifetime).count();
    db_.query("DELETE FROM sessions WHERE expires_at <= ?", {now_ms()});
    db_.query("INSERT INTO sessions (token_hash, member_id, csrf, key_pem, expires_at) "
              "VALUES (?, ?, ?, ?, ?)",
              {hash_hex(token), member_id, csrf, *pem, now_ms() + lifetime});
    auto m =
        db_.one("SELECT id, username, address, is_admin FROM members WHERE id = ?", {member_id});
    HttpResponse r = ok_json(status, {{"member",
                                       {{"id", m->integer(0)},
                                        {"username", m->text(1)},
                                        {"address", m->text(2)},
                                        {"is_admin", m->integer(3) != 0}}},
                                      {"csrf", csrf}});
    r.headers["Set-Cookie"] = std::string(session_cookie) + "=" + token +
                              "; Path=/; HttpOnly; SameSite=Strict; Max-Age=" +
                              std::to_string(options_.session_lifetime.count());
    return r;
}

SigningKey Market::caller_key(const Caller& caller) {
    auto key = SigningKey::from_encrypted_pem(caller.key_pem, caller.token);
    if (!key) fail(401, "unauthenticated", "the session's key cannot be opened: log in again");
    return std::move(*key);
}

HttpResponse Market::session(Call& c) {
    if (!c.caller) return ok_json(200, {{"member", nullptr}});
    const Caller& w = c.who();
    return ok_json(
        200,
        {{"member",
          {{"id", w.id}, {"username", w.username}, {"address", w.address}, {"is_admin", w.admin}}},
         {"csrf", w.csrf}});
}

HttpResponse Market::signup(Call& c) {
    allow_fields(c.body, {"username", "password"});
    const std::string username = get_string(c.body, "username", 3, 32);
    const std::string password = get_string(c.body, "password", 8, 256);
    if (!is_valid_username(username))
        fail(400, "invalid_argument", "username: letters, digits, '_', '-' and '.' only");
    // Names are ASCII, and unique without regard to case: "ADMIN" would pass for "admin".
    auto taken = [&] {
        if (auto m = db_.one("SELECT username FROM members WHERE lower(username) = lower(?)",
                             {username}))
            fail(409, "username_taken",
                 m->text(0) == username
                     ? "that username is taken"
                     : "that username is taken: it differs from \"" + m->text(0) +
                           "\" only in letter case, and usernames are compared without case");
    };
    taken();
    // The wallet key is kept only encrypted under the member's password (scrypt + AES-GCM):
    // the service can sign for a member only while that member is logged in.
    Wallet wallet = Wallet::generate(username);
    auto pem = wallet.signing_key().encrypted_pem(password, options_.key_kdf_msec);
    if (!pem) fail(500, "internal", pem.error().message());
    const std::string hash = hash_password(password, options_.passwords);
    std::int64_t id = 0;
    {
        Db::Tx tx(db_);
        taken();
        db_.query("INSERT INTO members (username, password_hash, address, key_pem, created_at) "
                  "VALUES (?, ?, ?, ?, ?)",
                  {username, hash, wallet.address().to_string(), *pem, now_ms()});
        id = db_.last_insert_id();
        tx.commit();
    }
    return start_session(id, wallet.signing_key(), 201);
}

HttpResponse Market::login(Call& c) {
    allow_fields(c.body, {"username", "password"});
    const std::string username = get_string(c.body, "username", 1, 64);
    const std::string password = get_string(c.body, "password", 1, 256);
    // Any letter case logs in ("Alice" is "alice"). A database from before names were unique
    // without case may hold two that differ only in case: the exact spelling picks one.
    auto m = db_.one("SELECT id, password_hash, key_pem FROM members WHERE lower(username) = "
                     "lower(?) ORDER BY username = ? DESC, id LIMIT 1",
                     {username, username});
    if (!m) {
        (void)check_password(password, dummy_hash_);
        fail(401, "bad_credentials", "wrong username or password");
    }
    if (!check_password(password, m->text(1)))
        fail(401, "bad_credentials", "wrong username or password");
    auto key = SigningKey::from_encrypted_pem(m->text(2), password);
    if (!key) fail(500, "internal", "the wallet key does not open: " + key.error().message());
    return start_session(m->integer(0), *key, 200);
}

HttpResponse Market::logout(Call& c) {
    db_.query("DELETE FROM sessions WHERE token_hash = ?", {hash_hex(c.who().token)});
    HttpResponse r = ok_json(200, {{"ok", true}});
    r.headers["Set-Cookie"] =
        std::string(session_cookie) + "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";
    return r;
}

// ---------------------------------------------------------------- signed transactions

std::timed_mutex& Market::signer_lock(const std::string& address) {
    std::lock_guard lock(locks_mutex_);
    auto& m = signer_locks_[address];
    if (!m) m = std::make_unique<std::timed_mutex>();
    return *m;
}

// Another request signing for the same account holds the lock while it waits for its
// commit; this one waits no longer than its own deadline, and has done nothing by then.
std::unique_lock<std::timed_mutex> Market::lock_signer(const std::string& address,
                                                       Deadline deadline) {
    std::unique_lock lock(signer_lock(address), deadline);
    if (!lock)
        fail_busy(429, "too_many_chain_requests",
                  "another request signing for this account is still waiting for the chain; "
                  "nothing was done: try again once it is answered");
    return lock;
}

std::uint64_t Market::balance_of(const std::string& address) {
    auto r = chain_.get("/v1/accounts/" + address);
    if (!r || r->status != 200) fail(503, "chain_unavailable", "no node answered");
    return r->body.value("balance", std::uint64_t{0});
}

std::uint64_t Market::chain_height() {
    auto r = chain_.get("/v1/status");
    if (!r || r->status != 200) fail(503, "chain_unavailable", "no node answered");
    return r->body.value("height", std::uint64_t{0});
}

// The signer's next nonce. Every key the service signs with is used only through it, and
// only with the signer's lock held and nothing of that signer pending, so the committed
// nonce is the next one. A node that lags behind could report an older nonce; the highest
// nonce this service saw committed covers that.
std::uint64_t Market::next_nonce(const std::string& address) {
    auto r = chain_.get("/v1/accounts/" + address);
    if (!r || r->status != 200) fail(503, "chain_unavailable", "no node answered");
    std::uint64_t nonce = r->body.value("nonce", std::uint64_t{0});
    auto mine = db_.one("SELECT MAX(nonce) FROM chain_txs WHERE signer = ? AND status = "
                        "'committed'",
                        {address});
    if (mine && !mine->is_null(0))
        nonce = std::max(nonce, static_cast<std::uint64_t>(mine->integer(0)) + 1);
    return nonce;
}

// Called inside the Db::Tx that records what the transaction is for, before it is sent.
void Market::record_tx(const Tx& tx) {
    db_.query("INSERT INTO chain_txs (txid, signer, nonce, kind, tx_json, status, created_at) "
              "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
              {to_hex(tx.id()), tx.from.to_string(), static_cast<std::int64_t>(tx.nonce),
               std::string(tx_kind_name(tx.kind)), api::to_json(tx).dump(), now_ms()});
}

// Sends a stored transaction (again) and records what became of it: "committed",
// "pending" or "failed".
std::string Market::push_tx(const std::string& txid, std::optional<Deadline> deadline) {
    auto row = db_.one("SELECT tx_json, status FROM chain_txs WHERE txid = ?", {txid});
    if (!row) return "failed";
    if (row->text(1) != "pending") return row->text(1);
    auto parsed = api::parse_json(row->text(0));
    auto tx = parsed ? api::tx_from_json(*parsed) : Result<Tx>(parsed.error());
    if (!tx) {
        tx_final(txid, false, "stored transaction unreadable");
        return "failed";
    }
    const SubmitOutcome out = deadline ? chain_.submit(*tx, *deadline) : chain_.send(*tx);
    switch (out.state) {
    case SubmitState::committed:
        db_.query("UPDATE chain_txs SET height = ?, block_hash = ? WHERE txid = ?",
                  {static_cast<std::int64_t>(out.height), out.block_hash, txid});
        tx_final(txid, true, {});
        return "committed";
    case SubmitState::pending:
    case SubmitState::unreachable: return "pending";
    case SubmitState::refused: break;
    }
    // A refusal is final only if no node holds the transaction: a node may refuse a copy
    // (its nonce already taken) of a transaction that is on its way into a block.
    auto known = chain_.get("/v1/txs/" + txid);
    if (!known) return "pending";
    if (known->status == 200 && known->body.value("status", "") == "committed") {
        db_.query("UPDATE chain_txs SET height = ?, block_hash = ? WHERE txid = ?",
                  {known->body.value("height", std::int64_t{0}),
                   known->body.value("block_hash", ""), txid});
        tx_final(txid, true, {});
        return "committed";
    }
    if (known->status == 404) {
        tx_final(txid, false, out.error_code + ": " + out.message);
        return "failed";
    }
    return "pending";
}

// A pending transaction: first asks whether it committed (cheap), else resends it.
std::string Market::settle_tx(const std::string& txid, std::optional<Deadline> deadline) {
    auto known = chain_.get("/v1/txs/" + txid);
    if (known && known->status == 200 && known->body.value("status", "") == "committed") {
        db_.query("UPDATE chain_txs SET height = ?, block_hash = ? WHERE txid = ? AND status = "
                  "'pending'",
                  {known->body.value("height", std::int64_t{0}),
                   known->body.value("block_hash", ""), txid});
        tx_final(txid, true, {});
        return "committed";
    }
    return push_tx(txid, deadline);
}

// What a transaction's fate means for the rows that wait on it. Idempotent.
void Market::tx_final(const std::string& txid, bool committed, const std::string& error) {
    Db::Tx tx(db_);
    auto row = db_.one("SELECT status FROM chain_txs WHERE txid = ?", {txid});
    if (!row || row->text(0) != "pending") return;
    db_.query("UPDATE chain_txs SET status = ?, error = ? WHERE txid = ?",
              {std::string(committed ? "committed" : "failed"),
               error.empty() ? DbValue(nullptr) : DbValue(error), txid});
    const auto now = now_ms();
    if (committed) {
        db_.query("UPDATE trades SET status = 'open', updated_at = ? WHERE open_txid = ? AND "
                  "status = 'opening'",
                  {now, txid});
        db_.query("UPDATE trades SET status = CASE close_kind WHEN 'escrow_release' THEN "
                  "'released' ELSE 'refunded' END, updated_at = ? WHERE close_txid = ?",
                  {now, txid});
        db_.query("UPDATE products SET status = 'sold' WHERE id IN (SELECT product_id FROM "
                  "trades WHERE close_txid = ? AND status = 'released')",
                  {txid});
        db_.query("UPDATE products SET status = 'listed', listing_round = listing_round + 1 "
                  "WHERE id IN (SELECT product_id FROM trades WHERE close_txid = ? AND status = "
                  "'refunded')",
                  {txid});
        db_.query("UPDATE charges SET status = 'approved', decided_at = ? WHERE txid = ?",
                  {now, txid});
        db_.query("UPDATE reviews SET status = 'anchored' WHERE txid = ?", {txid});
    } else {
        db_.query("UPDATE products SET status = 'listed', listing_round = listing_round + 1 "
                  "WHERE id IN (SELECT product_id FROM trades WHERE open_txid = ? AND status = "
                  "'opening')",
                  {txid});
        db_.query("UPDATE trades SET status = 'failed', updated_at = ? WHERE open_txid = ? AND "
                  "status = 'opening'",
                  {now, txid});
        db_.query("UPDATE trades SET status = 'open', close_txid = NULL, close_kind = NULL, "
                  "updated_at = ? WHERE close_txid = ?",
                  {now, txid});
        db_.query("UPDATE charges SET status = 'requested', txid = NULL, decided_by = NULL, "
                  "note = ? WHERE txid = ?",
                  {"mint failed: " + error, txid});
        db_.query("DELETE FROM reviews WHERE txid = ?", {txid});
    }
    tx.commit();
}

// Before a signer signs again, everything it signed earlier must have an outcome: the next
// nonce depends on it.
void Market::settle_signer(const std::string& address, Deadline deadline) {
    auto rows = db_.query(
        "SELECT txid FROM chain_txs WHERE signer = ? AND status = 'pending' ORDER BY nonce",
        {address});
    for (const auto& row : rows) {
        if (settle_tx(row.text(0), deadline) == "pending")
            fail(409, "previous_tx_pending",
                 "an earlier transaction is still waiting to commit; nothing was done: try "
                 "again shortly");
    }
    // What is signed from here on is stored and answered as pending at worst; with no time
    // left to wait for it, nothing is signed.
    if (Clock::now() >= deadline)
        fail_busy(503, "chain_unavailable",
                  "the chain did not answer in time; nothing was done: try again later");
}

void Market::settle_all() {
    try {
        auto rows = db_.query("SELECT txid, signer FROM chain_txs WHERE status = 'pending' AND "
                              "created_at < ? ORDER BY signer, nonce",
                              {now_ms() - 1000});
        for (const auto& row : rows) {
            // Sent without waiting for the commit: the lock is held for a few round trips,
            // never a member's request for a whole commit wait. The next round sees the commit.
            std::unique_lock lock(signer_lock(row.text(1)), std::try_to_lock);
            if (lock) (void)settle_tx(row.text(0), std::nullopt);
        }
    } catch (const std::exception&) {
        // Retried on the next round; a request that needs the outcome settles it itself.
    }
}

// ---------------------------------------------------------------- members and products

HttpResponse Market::me(Call& c) {
    const Caller& w = c.who();
    json pending = json::array();
    for (const auto& row : db_.query("SELECT txid, kind, created_at FROM chain_txs WHERE signer "
                                     "= ? AND status = 'pending' ORDER BY nonce",
                                     {w.address}))
        pending.push_back(
            {{"txid", row.text(0)}, {"kind", row.text(1)}, {"created_at", row.integer(2)}});
    json body{
        {"member",
         {{"id", w.id}, {"username", w.username}, {"address", w.address}, {"is_admin", w.admin}}},
        {"pending_txs", pending}};
    // The committed balance, as each node reports it: they agree once every node executed
    // the same blocks, which the page shows.
    json nodes = json::array();
    std::optional<std::uint64_t> balance;
    for (std::size_t i = 0; i < chain_.node_count(); ++i) {
        auto r = chain_.get_from(i, "/v1/accounts/" + w.address);
        if (r && r->status == 200) {
            const auto b = r->body.value("balance", std::uint64_t{0});
            nodes.push_back({{"node", chain_.node(i).to_string()}, {"balance", b}});
            if (!balance) balance = b;
        } else {
            nodes.push_back({{"node", chain_.node(i).to_string()}, {"balance", nullptr}});
        }
    }
    body["balance"] = balance ? json(*balance) : json(nullptr);
    body["balance_by_node"] = nodes;
    auto held = db_.one("SELECT COALESCE(SUM(amount), 0) FROM trades WHERE buyer_id = ? AND "
                        "status IN ('open', 'releasing', 'refunding')",
                        {w.id});
    body["in_escrow"] = held ? held->integer(0) : 0;
    return ok_json(200, body);
}

namespace {
json product_json(const DbRow& p) {
    // columns: id, title, description, price, status, has_photo, seller username, seller
    // address, created_at
    return {
        {"id", p.integer(0)},    {"title", p.text(1)},          {"description", p.text(2)},
        {"price", p.integer(3)}, {"status", p.text(4)},         {"has_photo", p.integer(5) != 0},
        {"seller", p.text(6)},   {"seller_address", p.text(7)}, {"created_at", p.integer(8)}};
}
constexpr const char* product_columns =
    "p.id, p.title, p.description, p.price, p.status, p.photo IS NOT NULL, m.username, "
    "m.address, p.created_at FROM products p JOIN members m ON m.id = p.seller_id";

std::string like_pattern(const std::string& q) {
    std::string out = "%";
    for (char ch : q) {
        if (ch == '%' || ch == '_' || ch == '\\') out.push_back('\\');
        out.push_back(ch);
    }
    return out + "%";
}
} // namespace

HttpResponse Market::list_products(Call& c) {
    auto [offset, limit] = paging(c, 60);
    std::string q;
    if (auto v = c.http.query_param("q")) q = std::string(*v);
    const auto q_length = utf8_length(q);
    if (!q_length) fail(400, "invalid_argument", "q: not valid UTF-8");
    if (*q_length > 100) fail(400, "invalid_argument", "q: at most 100 characters");
    std::string where = " WHERE p.status != 'sold'";
    std::vector<DbValue> args;
    if (auto s = c.http.query_param("seller")) {
        where = " WHERE m.username = ?";
        args.emplace_back(std::string(*s));
    }
    if (!q.empty()) {
        where += " AND (p.title LIKE ? ESCAPE '\\' OR p.description LIKE ? ESCAPE '\\')";
        args.emplace_back(like_pattern(q));
        args.emplace_back(like_pattern(q));
    }
    auto total = db_.one(
        "SELECT COUNT(*) FROM products p JOIN members m ON m.id = p.seller_id" + where, args);
    args.emplace_back(limit);
    args.emplace_back(offset);
    json list = json::array();
    for (const auto& row : db_.query(std::string("SELECT ") + product_columns + where +
                                         " ORDER BY p.id DESC LIMIT ? OFFSET ?",
                                     args))
        list.push_back(product_json(row));
    return ok_json(200, {{"products", list},
                         {"total", total ? total->integer(0) : 0},
                         {"offset", offset},
                         {"limit", limit}});
}

HttpResponse Market::create_product(Call& c) {
    allow_fields(c.body, {"title", "description", "price", "photo"});
    const std::string title = get_string(c.body, "title", 1, 100);
    const std::string description = get_string(c.body, "description", 0, 2000, false);
    const std::uint64_t price = get_uint(c.body, "price", 1, 1'000'000'000);
    DbValue photo = nullptr, photo_type = nullptr;
    if (c.body.contains("photo") && !c.body["photo"].is_null()) {
        // data:image/png;base64,....
        const std::string url = get_string(c.body, "photo", 1, 1'000'000);
        const auto comma = url.find(',');
        const std::string head = url.substr(0, comma == std::string::npos ? 0 : comma);
        static const char* types[] = {"image/png", "image/jpeg", "image/gif", "image/webp"};
        const auto* type = std::find_if(std::begin(types), std::end(types), [&](const char* t) {
            return head == std::string("data:") + t + ";base64";
        });
        if (type == std::end(types))
            fail(400, "invalid_argument", "photo: a base64 data: URL of a PNG, JPEG, GIF or WebP");
        auto bytes = base64_decode(std::string_view(url).substr(comma + 1));
        if (!bytes || bytes->empty() || bytes->size() > 512 * 1024)
            fail(400, "invalid_argument", "photo: valid base64, at most 512 KiB");
        photo = *bytes;
        photo_type = std::string(*type);
    }
    db_.query("INSERT INTO products (seller_id, title, description, price, photo, photo_type, "
              "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
              {c.who().id, title, description, static_cast<std::int64_t>(price), photo, photo_type,
               now_ms()});
    const auto id = db_.last_insert_id();
    auto row = db_.one(std::string("SELECT ") + product_columns + " WHERE p.id = ?", {id});
    return ok_json(201, product_json(*row));
}

HttpResponse Market::product(Call& c) {
    const auto id = path_id(c, "id");
    auto row = db_.one(std::string("SELECT ") + product_columns + " WHERE p.id = ?", {id});
    if (!row) fail(404, "not_found", "no such product");
    json body = product_json(*row);
    if (c.caller) {
        // The caller's own live trade for it, so the page can show where the purchase is.
        auto t = db_.one("SELECT trade_id, status FROM trades WHERE product_id = ? AND "
                         "(buyer_id = ? OR seller_id = ?) ORDER BY created_at DESC LIMIT 1",
                         {id, c.who().id, c.who().id});
        if (t) body["my_trade"] = {{"trade_id", t->text(0)}, {"status", t->text(1)}};
    }
    return ok_json(200, body);
}

HttpResponse Market::photo(Call& c) {
    const auto id = path_id(c, "id");
    auto row =
        db_.one("SELECT photo, photo_type FROM products WHERE id = ? AND photo IS NOT NULL", {id});
    if (!row) fail(404, "not_found", "no photo");
    HttpResponse r = HttpResponse::text(200, row->text(0));
    r.headers["Content-Type"] = row->text(1);
    r.headers["X-Content-Type-Options"] = "nosniff";
    r.headers["Cache-Control"] = "max-age=3600";
    return r;
}

// ---------------------------------------------------------------- trades

namespace {
constexpr const char* trade_columns =
    "t.trade_id, t.product_id, p.title, t.amount, t.deadline, t.status, t.open_txid, "
    "t.close_txid, t.close_kind, b.username, b.address, s.username, s.address, t.created_at, "
    "t.updated_at, t.buyer_id, t.seller_id, r.rating, r.body, r.status FROM trades t "
    "JOIN products p ON p.id = t.product_id JOIN members b ON b.id = t.buyer_id "
    "JOIN members s ON s.id = t.seller_id LEFT JOIN reviews r ON r.trade_id = t.trade_id";
}

json Market::trade_json(const DbRow& t) {
    json j{{"trade_id", t.text(0)},
           {"product_id", t.integer(1)},
           {"title", t.text(2)},
           {"amount", t.integer(3)},
           {"deadline", t.integer(4)},
           {"status", t.text(5)},
           {"open_txid", t.text(6)},
           {"close_txid", t.is_null(7) ? json(nullptr) : json(t.text(7))},
           {"buyer", t.text(9)},
           {"buyer_address", t.text(10)},
           {"seller", t.text(11)},
           {"seller_address", t.text(12)},
           {"created_at", t.integer(13)},
           {"updated_at", t.integer(14)}};
    const std::string status = t.text(5);
    // Only what the chain has executed counts as done; the rest is shown as pending.
    j["committed"] = status == "open" || status == "released" || status == "refunded";
    if (!t.is_null(17))
        j["review"] = {{"rating", t.integer(17)}, {"body", t.text(18)}, {"status", t.text(19)}};
    return j;
}

HttpResponse Market::buy(Call& c) {
    allow_fields(c.body, {"request_id"});
    const auto product_id = path_id(c, "id");
    const Caller& w = c.who();
    auto signer = lock_signer(w.address, c.deadline);
    auto p =
        db_.one("SELECT p.seller_id, p.price, p.status, p.listing_round, p.created_at, "
                "m.address FROM products p JOIN members m ON m.id = p.seller_id WHERE p.id = ?",
                {product_id});
    if (!p) fail(404, "not_found", "no such product");
    if (p->integer(0) == w.id) fail(403, "own_product", "you cannot buy your own product");
    // A repeated purchase (a double click, a retry after a timeout) finds the trade the
    // first one made and answers with it: one purchase, one payment.
    auto live = db_.one(std::string("SELECT ") + trade_columns +
                            " WHERE t.product_id = ? AND t.status != 'failed' AND t.status != "
                            "'refunded'",
                        {product_id});
    if (live) {
        if (live->integer(15) != w.id)
            fail(409, "product_reserved", "someone else is buying this product");
        std::string status = live->text(5);
        if (status == "opening") status = settle_tx(live->text(6), c.deadline);
        auto again = db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?",
                             {live->text(0)});
        json j = trade_json(*again);
        j["repeated"] = true;
        return ok_json(j["committed"].get<bool>() ? 200 : 202, j);
    }
    // The same request id again, after that purchase failed or was refunded, gets that
    // outcome back: only a new request (a new click) starts a new payment.
    const std::string request_id = get_string(c.body, "request_id", 1, 64, false);
    if (!request_id.empty()) {
        auto earlier =
            db_.one(std::string("SELECT ") + trade_columns +
                        " WHERE t.product_id = ? AND t.buyer_id = ? AND t.request_id = ?",
                    {product_id, w.id, request_id});
        if (earlier) {
            json j = trade_json(*earlier);
            j["repeated"] = true;
            return ok_json(200, j);
        }
    }
    if (p->text(2) != "listed") fail(409, "not_for_sale", "this product is not for sale");
    settle_signer(w.address, c.deadline);
    const auto price = static_cast<std::uint64_t>(p->integer(1));
    const auto balance = balance_of(w.address);
    if (balance < price)
        throw ApiError{409, "insufficient_funds",
                       "the price is " + std::to_string(price) + " and your balance " +
                           std::to_string(balance) + ": request a charge first"};
    auto seller = Address::parse(p->text(5));
    if (!seller) fail(500, "internal", "seller address unreadable");
    // A fresh trade id for every purchase attempt. The chain refuses an escrow_open whose
    // trade id is taken, by anyone: an id computed from public data alone (seller, product,
    // listing) could be opened first by any wallet for 1 coin, and the purchase would fail
    // every time. 32 bytes from the system's CSPRNG make it unguessable until the buyer's
    // signed transaction is sent; the buyer and listing only separate it further. The id is
    // never recomputed: it is stored with the trade (older databases keep the older ids).
    const Hash256 trade_id = sha256("popmarket/trade/v2|" + w.address + "|" + p->text(5) + "|" +
                                    std::to_string(product_id) + "|" +
                                    std::to_string(p->integer(3)) + "|" + to_hex(random_bytes(32)));
    const std::uint64_t deadline = chain_height() + options_.escrow_blocks;
    SigningKey key = caller_key(w);
    const std::string memo = "popmarket product " + std::to_string(product_id);
    const Tx tx = sign_tx(
        [&] {
            Tx t;
            t.kind = TxKind::escrow_open;
            t.chain_id = options_.chain_id;
            t.nonce = next_nonce(w.address);
            t.to = *seller;
            t.amount = price;
            t.trade_id = trade_id;
            t.deadline = deadline;
            t.payload.assign(memo.begin(), memo.end());
            return t;
        }(),
        key);
    const std::string txid = to_hex(tx.id());
    {
        Db::Tx dbtx(db_);
        // Checked again under the write lock: two buyers racing for one product.
        auto now = db_.one("SELECT status FROM products WHERE id = ?", {product_id});
        if (!now || now->text(0) != "listed")
            fail(409, "product_reserved", "someone else is buying this product");
        record_tx(tx);
        db_.query("INSERT INTO trades (trade_id, product_id, buyer_id, seller_id, amount, "
                  "deadline, status, open_txid, request_id, created_at, updated_at) VALUES (?, "
                  "?, ?, ?, ?, ?, 'opening', ?, ?, ?, ?)",
                  {to_hex(trade_id), product_id, w.id, p->integer(0),
                   static_cast<std::int64_t>(price), static_cast<std::int64_t>(deadline), txid,
                   request_id.empty() ? DbValue(nullptr) : DbValue(request_id), now_ms(),
                   now_ms()});
        db_.query("UPDATE products SET status = 'reserved' WHERE id = ?", {product_id});
        dbtx.commit();
    }
    const std::string outcome = push_tx(txid, c.deadline);
    auto row = db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?",
                       {to_hex(trade_id)});
    json j = trade_json(*row);
    if (outcome == "failed") {
        auto err = db_.one("SELECT error FROM chain_txs WHERE txid = ?", {txid});
        return ok_json(409, {{"error",
                              {{"code", "payment_refused"},
                               {"message", "the chain refused the payment: " +
                                               (err ? err->text(0) : std::string())}}},
                             {"trade", j}});
    }
    return ok_json(outcome == "committed" ? 201 : 202, j);
}

HttpResponse Market::my_trades(Call& c) {
    std::string role = "buyer";
    if (auto r = c.http.query_param("role")) role = std::string(*r);
    if (role != "buyer" && role != "seller") fail(400, "invalid_argument", "role: buyer or seller");
    json list = json::array();
    for (const auto& row : db_.query(std::string("SELECT ") + trade_columns + " WHERE t." + role +
                                         "_id = ? ORDER BY t.created_at DESC LIMIT 200",
                                     {c.who().id}))
        list.push_back(trade_json(row));
    return ok_json(200, {{"role", role}, {"trades", list}});
}

HttpResponse Market::trade(Call& c) {
    const Hash256 id = parse_trade_id(c);
    auto row =
        db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
    if (!row) fail(404, "not_found", "no such trade");
    if (row->integer(15) != c.who().id && row->integer(16) != c.who().id)
        fail(403, "forbidden", "only the buyer and the seller see a trade");
    // Looking at a pending trade moves it along: the stored transaction is resent.
    for (int col : {6, 7}) {
        if (row->is_null(col)) continue;
        auto tx = db_.one("SELECT status FROM chain_txs WHERE txid = ?", {row->text(col)});
        if (tx && tx->text(0) == "pending") {
            auto signer = db_.one("SELECT signer FROM chain_txs WHERE txid = ?", {row->text(col)});
            std::unique_lock lock(signer_lock(signer->text(0)), std::try_to_lock);
            if (lock) (void)settle_tx(row->text(col), std::nullopt); // never waits
        }
    }
    row = db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
    json j = trade_json(*row);
    json proofs = json::array();
    for (int col : {6, 7}) {
        if (row->is_null(col)) continue;
        auto txid = fixed_from_hex<Hash256>(row->text(col));
        if (txid) proofs.push_back(check_json(verifier_.check_tx(*txid)));
    }
    j["proofs"] = proofs;
    // The trade's own state comes from the database; the height only enables "reclaim", so
    // an unreachable chain leaves it out rather than failing the page.
    auto status = chain_.get("/v1/status");
    j["chain_height"] = status && status->status == 200 ? status->body["height"] : json(nullptr);
    return ok_json(200, j);
}

HttpResponse Market::close_trade(Call& c, const std::string& action) {
    allow_fields(c.body, {});
    const Hash256 id = parse_trade_id(c);
    const Caller& w = c.who();
    auto signer = lock_signer(w.address, c.deadline);
    auto row =
        db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
    if (!row) fail(404, "not_found", "no such trade");
    const bool buyer = row->integer(15) == w.id, seller = row->integer(16) == w.id;
    if (!buyer && !seller) fail(403, "forbidden", "this is not your trade");
    if ((action == "confirm" || action == "reclaim") && !buyer)
        fail(403, "forbidden", "only the buyer may " + action);
    if (action == "cancel" && !seller) fail(403, "forbidden", "only the seller may cancel");
    std::string status = row->text(5);
    if (status == "opening")
        status = settle_tx(row->text(6), c.deadline) == "committed" ? "open" : status;
    if (status == "releasing" || status == "refunding") {
        auto again =
            db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
        json j = trade_json(*again);
        j["repeated"] = true;
        return ok_json(202, j);
    }
    if (status != "open") fail(409, "wrong_state", "the trade is " + status + ", not open");
    if (action == "reclaim" && chain_height() + 1 <= static_cast<std::uint64_t>(row->integer(4)))
        fail(409, "before_deadline",
             "the buyer may reclaim only after block " + std::to_string(row->integer(4)));
    settle_signer(w.address, c.deadline);
    SigningKey key = caller_key(w);
    Tx t;
    t.kind = action == "confirm" ? TxKind::escrow_release : TxKind::escrow_refund;
    t.chain_id = options_.chain_id;
    t.nonce = next_nonce(w.address);
    t.trade_id = id;
    const Tx tx = sign_tx(std::move(t), key);
    const std::string txid = to_hex(tx.id());
    {
        Db::Tx dbtx(db_);
        auto now = db_.one("SELECT status FROM trades WHERE trade_id = ?", {to_hex(id)});
        if (!now || now->text(0) != "open") fail(409, "wrong_state", "the trade is not open");
        record_tx(tx);
        db_.query("UPDATE trades SET status = ?, close_txid = ?, close_kind = ?, updated_at = ? "
                  "WHERE trade_id = ?",
                  {std::string(action == "confirm" ? "releasing" : "refunding"), txid,
                   std::string(tx_kind_name(tx.kind)), now_ms(), to_hex(id)});
        dbtx.commit();
    }
    const std::string outcome = push_tx(txid, c.deadline);
    auto after =
        db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
    json j = trade_json(*after);
    if (outcome == "failed")
        return ok_json(409, {{"error",
                              {{"code", "refused_by_chain"},
                               {"message", "the chain refused it; the trade is still open"}}},
                             {"trade", j}});
    return ok_json(outcome == "committed" ? 200 : 202, j);
}

HttpResponse Market::review(Call& c) {
    allow_fields(c.body, {"rating", "body"});
    const Hash256 id = parse_trade_id(c);
    const auto rating = static_cast<std::int64_t>(get_uint(c.body, "rating", 1, 5));
    const std::string body = get_string(c.body, "body", 1, 1000);
    const Caller& w = c.who();
    auto signer = lock_signer(w.address, c.deadline);
    auto row =
        db_.one(std::string("SELECT ") + trade_columns + " WHERE t.trade_id = ?", {to_hex(id)});
    if (!row) fail(404, "not_found", "no such trade");
    if (row->integer(15) != w.id) fail(403, "forbidden", "only the buyer reviews a trade");
    if (row->text(5) != "released")
        fail(409, "wrong_state", "a trade can be reviewed once the buyer confirmed receipt");
    if (!row->is_null(17)) fail(409, "already_reviewed", "this trade has its review");
    settle_signer(w.address, c.deadline);
    // The review's digest goes on the chain in the memo of a transfer to oneself (amount 1,
    // which moves nothing): anyone can check the text shown against what the buyer signed.
    if (balance_of(w.address) < 1)
        fail(409, "insufficient_funds", "anchoring a review needs a balance of at least 1");
    const std::string digest = review_digest(to_hex(id), w.address, rating, body);
    const std::string memo = std::string(review_prefix) + digest;
    SigningKey key = caller_key(w);
    auto self = Address::parse(w.address);
    Tx t;
    t.kind = TxKind::transfer;
    t.chain_id = options_.chain_id;
    t.nonce = next_nonce(w.address);
    t.to = *self;
    t.amount = 1;
    t.payload.assign(memo.begin(), memo.end());
    const Tx tx = sign_tx(std::move(t), key);
    const std::string txid = to_hex(tx.id());
    {
        Db::Tx dbtx(db_);
        if (db_.one("SELECT 1 FROM reviews WHERE trade_id = ?", {to_hex(id)}))
            fail(409, "already_reviewed", "this trade has its review");
        record_tx(tx);
        db_.query("INSERT INTO reviews (trade_id, buyer_id, seller_id, rating, body, digest, "
                  "txid, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'anchoring', ?)",
                  {to_hex(id), w.id, row->integer(16), rating, body, digest, txid, now_ms()});
        dbtx.commit();
    }
    const std::string outcome = push_tx(txid, c.deadline);
    if (outcome == "failed")
        fail(409, "refused_by_chain", "the chain refused the review's transaction");
    return ok_json(outcome == "committed" ? 201 : 202,
                   {{"trade_id", to_hex(id)},
                    {"rating", rating},
                    {"body", body},
                    {"digest", digest},
                    {"txid", txid},
                    {"status", outcome == "committed" ? "anchored" : "anchoring"}});
}

// ---------------------------------------------------------------- charges

namespace {
constexpr const char* charge_columns =
    "c.id, m.username, m.address, c.amount, c.status, c.txid, c.decided_by, c.note, "
    "c.created_at, c.decided_at FROM charges c JOIN members m ON m.id = c.member_id";
json charge_json(const DbRow& r) {
    return {{"id", r.integer(0)},
            {"member", r.text(1)},
            {"address", r.text(2)},
            {"amount", r.integer(3)},
            {"status", r.text(4)},
            {"txid", r.is_null(5) ? json(nullptr) : json(r.text(5))},
            {"decided_by", r.is_null(6) ? json(nullptr) : json(r.text(6))},
            {"note", r.is_null(7) ? json(nullptr) : json(r.text(7))},
            {"created_at", r.integer(8)},
            {"decided_at", r.is_null(9) ? json(nullptr) : json(r.integer(9))}};
}
} // namespace

// Mints with the authority key. One authority, one nonce sequence: serialised by its lock.
std::string Market::approve_charge(std::int64_t charge_id, const std::string& by,
                                   Deadline deadline) {
    if (!options_.authority) fail(503, "no_authority", "this service has no authority key");
    const std::string authority = options_.authority->address().to_string();
    auto signer = lock_signer(authority, deadline);
    auto row = db_.one("SELECT c.status, c.amount, m.address, c.txid FROM charges c JOIN members "
                       "m ON m.id = c.member_id WHERE c.id = ?",
                       {charge_id});
    if (!row) fail(404, "not_found", "no such charge request");
    if (row->text(0) == "approving") return settle_tx(row->text(3), deadline);
    if (row->text(0) != "requested")
        fail(409, "wrong_state", "the request is already " + row->text(0));
    settle_signer(authority, deadline);
    auto to = Address::parse(row->text(2));
    Tx t;
    t.kind = TxKind::mint;
    t.chain_id = options_.chain_id;
    t.nonce = next_nonce(authority);
    t.to = *to;
    t.amount = static_cast<std::uint64_t>(row->integer(1));
    const std::string memo = "popmarket charge " + std::to_string(charge_id);
    t.payload.assign(memo.begin(), memo.end());
    const Tx tx = sign_tx(std::move(t), *options_.authority);
    const std::string txid = to_hex(tx.id());
    {
        Db::Tx dbtx(db_);
        auto now = db_.one("SELECT status FROM charges WHERE id = ?", {charge_id});
        if (!now || now->text(0) != "requested")
            fail(409, "wrong_state", "the request was decided meanwhile");
        record_tx(tx);
        db_.query("UPDATE charges SET status = 'approving', txid = ?, decided_by = ?, note = NULL "
                  "WHERE id = ?",
                  {txid, by, charge_id});
        dbtx.commit();
    }
    return push_tx(txid, deadline);
}

HttpResponse Market::request_charge(Call& c) {
    allow_fields(c.body, {"amount"});
    const auto amount = get_uint(c.body, "amount", 1, options_.max_charge);
    const auto open = db_.one("SELECT COUNT(*) FROM charges WHERE member_id = ? AND status IN "
                              "('requested', 'approving')",
                              {c.who().id});
    if (open && open->integer(0) >= 5)
        fail(429, "too_many_requests", "five requests are already waiting for the admin");
    db_.query("INSERT INTO charges (member_id, amount, status, created_at) VALUES (?, ?, "
              "'requested', ?)",
              {c.who().id, static_cast<std::int64_t>(amount), now_ms()});
    const auto id = db_.last_insert_id();
    int status = 201;
    if (options_.authority && amount <= options_.auto_approve_limit) {
        // The request is recorded either way; if the chain cannot take the mint now, it
        // waits in the admin's queue like any other.
        try {
            if (approve_charge(id, "auto", c.deadline) == "pending") status = 202;
        } catch (const ApiError& e) {
            db_.query("UPDATE charges SET note = ? WHERE id = ? AND status = 'requested'",
                      {"automatic approval failed: " + e.message, id});
        }
    }
    auto row = db_.one(std::string("SELECT ") + charge_columns + " WHERE c.id = ?", {id});
    return ok_json(status, charge_json(*row));
}

HttpResponse Market::my_charges(Call& c) {
    json list = json::array();
    for (const auto& row : db_.query(std::string("SELECT ") + charge_columns +
                                         " WHERE c.member_id = ? ORDER BY c.id DESC LIMIT 100",
                                     {c.who().id}))
        list.push_back(charge_json(row));
    return ok_json(200, {{"charges", list}});
}

HttpResponse Market::admin_charges(Call& c) {
    std::string status = "requested";
    if (auto s = c.http.query_param("status")) status = std::string(*s);
    static const char* statuses[] = {"requested", "approving", "approved", "rejected", "all"};
    if (std::none_of(std::begin(statuses), std::end(statuses),
                     [&](const char* s) { return status == s; }))
        fail(400, "invalid_argument", "status: requested, approving, approved, rejected or all");
    json list = json::array();
    const std::string where = status == "all" ? "" : " WHERE c.status = ?";
    std::vector<DbValue> args;
    if (status != "all") args.emplace_back(status);
    for (const auto& row : db_.query(
             std::string("SELECT ") + charge_columns + where + " ORDER BY c.id LIMIT 500", args))
        list.push_back(charge_json(row));
    return ok_json(200, {{"charges", list}, {"auto_approve_limit", options_.auto_approve_limit}});
}

HttpResponse Market::decide_charge(Call& c, bool approve) {
    allow_fields(c.body, {"note"});
    const auto id = path_id(c, "id");
    int status = 200;
    if (approve) {
        if (approve_charge(id, c.who().username, c.deadline) != "committed") status = 202;
    } else {
        const std::string note = get_string(c.body, "note", 0, 200, false);
        Db::Tx dbtx(db_);
        auto row = db_.one("SELECT status FROM charges WHERE id = ?", {id});
        if (!row) fail(404, "not_found", "no such charge request");
        if (row->text(0) != "requested")
            fail(409, "wrong_state", "the request is already " + row->text(0));
        db_.query("UPDATE charges SET status = 'rejected', decided_by = ?, decided_at = ?, note "
                  "= ? WHERE id = ?",
                  {c.who().username, now_ms(), note, id});
        dbtx.commit();
    }
    auto row = db_.one(std::string("SELECT ") + charge_columns + " WHERE c.id = ?", {id});
    return ok_json(status, charge_json(*row));
}

// ---------------------------------------------------------------- reading the chain

// A seller's record as the chain has it: every escrow opened to the seller's address, and
// how each ended, each transaction checked by Merkle and commit proof. The marketplace's own
// tables are not consulted, so the record cannot be edited by editing them.
json Market::trust_profile(const Address& seller) {
    struct Trade {
        Tx open;
        std::optional<Tx> close;
    };
    std::map<Hash256, Trade> trades;
    std::map<Hash256, Tx> closes;
    auto scan = [&](const Address& who, auto&& on_tx) {
        for (std::uint64_t offset = 0; offset < 10'000; offset += 100) {
            auto r = chain_.get("/v1/addresses/" + who.to_string() +
                                "/txs?limit=100&offset=" + std::to_string(offset));
            if (!r || r->status != 200) fail(503, "chain_unavailable", "no node answered");
            const json& txs = r->body["txs"];
            for (const auto& rec : txs) {
                auto tx = api::tx_from_json(rec["tx"]);
                if (tx) on_tx(*tx);
            }
            if (txs.size() < 100) break;
        }
    };
    std::set<Address> buyers;
    scan(seller, [&](const Tx& tx) {
        if (tx.kind == TxKind::escrow_open && tx.to == seller) {
            trades[tx.trade_id].open = tx;
            buyers.insert(tx.from);
        }
        if (tx.kind == TxKind::escrow_refund) closes[tx.trade_id] = tx;
    });
    for (const auto& b : buyers)
        scan(b, [&](const Tx& tx) {
            if (tx.kind == TxKind::escrow_release || tx.kind == TxKind::escrow_refund)
                closes[tx.trade_id] = tx;
        });
    std::uint64_t completed = 0, refunded = 0, open = 0, unverified = 0;
    json list = json::array();
    for (auto& [id, t] : trades) {
        const TxCheck open_check = verifier_.check_tx(t.open.id());
        std::optional<TxCheck> close_check;
        std::string status = "open";
        if (auto it = closes.find(id); it != closes.end()) {
            close_check = verifier_.check_tx(it->second.id());
            status = it->second.kind == TxKind::escrow_release ? "released" : "refunded";
        }
        const bool verified = open_check.verified && (!close_check || close_check->verified);
        if (!verified)
            ++unverified;
        else if (status == "released")
            ++completed;
        else if (status == "refunded")
            ++refunded;
        else
            ++open;
        json item{{"trade_id", to_hex(id)},  {"buyer", t.open.from.to_string()},
                  {"amount", t.open.amount}, {"status", status},
                  {"verified", verified},    {"open", check_json(open_check)}};
        if (close_check) item["close"] = check_json(*close_check);
        list.push_back(item);
    }
    return {{"address", seller.to_string()}, {"completed", completed},
            {"refunded", refunded},          {"open", open},
            {"unverified", unverified},      {"trades", list}};
}

HttpResponse Market::seller_profile(Call& c) {
    auto m = db_.one("SELECT id, username, address, created_at FROM members WHERE username = ?",
                     {c.param("username")});
    if (!m) fail(404, "not_found", "no such member");
    auto address = Address::parse(m->text(2));
    json body{{"username", m->text(1)}, {"member_since", m->integer(3)}};
    body["record"] = trust_profile(*address);
    json reviews = json::array();
    for (const auto& r :
         db_.query("SELECT r.trade_id, r.rating, r.body, r.digest, r.txid, r.status, b.username, "
                   "b.address, r.created_at FROM reviews r JOIN members b ON b.id = r.buyer_id "
                   "WHERE r.seller_id = ? ORDER BY r.created_at DESC LIMIT 100",
                   {m->integer(0)})) {
        // The text shown must hash to what the buyer's signed transaction carries.
        json item{{"trade_id", r.text(0)}, {"rating", r.integer(1)},     {"body", r.text(2)},
                  {"buyer", r.text(6)},    {"created_at", r.integer(8)}, {"txid", r.text(4)}};
        bool verified = false;
        std::string reason = "not anchored yet";
        std::optional<TxCheck> check;
        if (r.text(5) == "anchored") {
            check = verifier_.check_tx(*fixed_from_hex<Hash256>(r.text(4)));
            const std::string recomputed =
                review_digest(r.text(0), r.text(7), r.integer(1), r.text(2));
            const std::string carried(check->tx.payload.begin(), check->tx.payload.end());
            if (!check->verified)
                reason = check->reason;
            else if (check->tx.from.to_string() != r.text(7) ||
                     carried != std::string(review_prefix) + recomputed)
                reason = "the text does not match what the buyer signed";
            else
                verified = true, reason.clear();
        }
        item["verified"] = verified;
        item["reason"] = reason;
        // What the page needs to repeat the check: the buyer's address (the digest's input
        // and the transaction's sender) and the transaction's proofs.
        item["buyer_address"] = r.text(7);
        if (check) item["proof"] = check_json(*check);
        reviews.push_back(item);
    }
    body["reviews"] = reviews;
    return ok_json(200, body);
}

HttpResponse Market::chain_status(Call&) {
    json nodes = json::array();
    for (std::size_t i = 0; i < chain_.node_count(); ++i) {
        auto r = chain_.get_from(i, "/v1/status");
        json n{{"node", chain_.node(i).to_string()}, {"up", r && r->status == 200}};
        if (r && r->status == 200) n["status"] = r->body;
        nodes.push_back(n);
    }
    return ok_json(200, {{"chain_id", options_.chain_id},
                         {"replicas", options_.replicas.size()},
                         {"nodes", nodes}});
}

HttpResponse Market::chain_trust_root(Call&) {
    return ok_json(200, trust_root_);
}

HttpResponse Market::chain_blocks(Call& c) {
    auto [offset, limit] = paging(c, 20);
    const std::uint64_t top = chain_height();
    json list = json::array();
    for (std::uint64_t k = static_cast<std::uint64_t>(offset);
         k < static_cast<std::uint64_t>(offset + limit) && k <= top; ++k) {
        const BlockCheck b = verifier_.check_block(top - k);
        if (!b.found) continue;
        list.push_back({{"height", b.block.header.height},
                        {"hash", to_hex(b.block.hash())},
                        {"txs", b.block.txs.size()},
                        {"timestamp_ms", b.block.header.timestamp_ms},
                        {"verified", b.verified},
                        {"reason", b.reason}});
        // The header and commit proof, so the page checks each block itself.
        if (b.commit_proof) {
            list.back()["header"] = api::to_json(b.block.header);
            add_commit_proof(list.back(), *b.commit_proof, b.genesis_set);
        }
    }
    return ok_json(200, {{"height", top}, {"offset", offset}, {"blocks", list}});
}

HttpResponse Market::chain_block(Call& c) {
    auto h = parse_uint(c.param("height"));
    if (!h) fail(400, "invalid_argument", "height: a whole number");
    const BlockCheck b = verifier_.check_block(*h);
    if (!b.found) fail(404, "not_found", b.reason);
    json body{{"block", api::to_json(b.block)}, {"verified", b.verified}, {"reason", b.reason}};
    if (b.commit_proof) add_commit_proof(body, *b.commit_proof, b.genesis_set);
    return ok_json(200, body);
}

HttpResponse Market::chain_tx(Call& c) {
    auto id = fixed_from_hex<Hash256>(c.param("id"));
    if (!id) fail(400, "invalid_argument", "tx id: 64 hex digits");
    const TxCheck check = verifier_.check_tx(*id);
    if (!check.found) fail(404, "not_found", "no committed transaction with that id");
    return ok_json(200, check_json(check));
}

HttpResponse Market::chain_address(Call& c) {
    auto address = Address::parse(c.param("address"));
    if (!address) fail(400, "invalid_argument", "not an address");
    auto [offset, limit] = paging(c, 100);
    auto account = chain_.get("/v1/accounts/" + address->to_string());
    auto txs = chain_.get("/v1/addresses/" + address->to_string() + "/txs?offset=" +
                          std::to_string(offset) + "&limit=" + std::to_string(limit));
    if (!account || !txs || account->status != 200 || txs->status != 200)
        fail(503, "chain_unavailable", "no node answered");
    json list = json::array();
    for (const auto& rec : txs->body["txs"]) {
        auto tx = api::tx_from_json(rec["tx"]);
        if (!tx) continue;
        list.push_back({{"txid", to_hex(tx->id())},
                        {"kind", tx_kind_name(tx->kind)},
                        {"from", tx->from.to_string()},
                        {"to", tx->to.to_string()},
                        {"amount", tx->amount},
                        {"height", rec["height"]}});
    }
    auto member = db_.one("SELECT username FROM members WHERE address = ?", {address->to_string()});
    return ok_json(200, {{"address", address->to_string()},
                         {"balance", account->body["balance"]},
                         {"nonce", account->body["nonce"]},
                         {"member", member ? json(member->text(0)) : json(nullptr)},
                         {"offset", offset},
                         {"txs", list}});
}

} // namespace popmarket
