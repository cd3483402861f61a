// HttpServer and HttpClient over real loopback sockets: routing, the error shape, keep-alive
// and pipelining, every limit, timeouts, deferred answers, and survival of hostile input.
//
// The server runs on an io_context driven by its own thread; the tests talk to it through
// plain blocking POSIX sockets (RawConn), so they see exactly the bytes a client would.
#include <popchain/api/http_client.hpp>
#include <popchain/api/http_server.hpp>

#include <nlohmann/json.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <mutex>
#include <random>
#include <thread>

using namespace popchain;
using namespace popchain::api;
using namespace std::chrono_literals;

namespace {

// The server on a thread of its own. Routes are added before start(); stop() closes the
// server on its thread and joins.
class TestServer {
public:
    explicit TestServer(HttpServerOptions options = {}) : server_(io_, std::move(options)) {}
    ~TestServer() { stop(); }

    HttpServer& server() { return server_; }
    asio::io_context& io() { return io_; }
    std::uint16_t port() const { return server_.local_port(); }

    void start() {
        REQUIRE(server_.start().ok());
        thread_ = std::thread([this] { io_.run(); });
    }
    void stop() {
        if (!thread_.joinable()) return;
        std::promise<void> closed;
        asio::post(io_, [&] {
            server_.close();
            closed.set_value();
        });
        closed.get_future().wait();
        work_.reset();
        io_.stop();
        thread_.join();
    }
    // Runs `f` on the server's thread and waits for it.
    template <class F>
    void on_server_thread(F f) {
        std::promise<void> done;
        asio::post(io_, [&] {
            f();
            done.set_value();
        });
        done.get_future().wait();
    }

private:
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
    HttpServer server_;
    std::thread thread_;
};

struct Reply {
    int status = 0;
    std::string head; // status line and headers
    std::string body;
    std::string header(const std::string& name) const {
        auto pos = head.find("\r\n" + name + ": ");
        if (pos == std::string::npos) return "";
        pos += name.size() + 4;
        return head.substr(pos, head.find("\r\n", pos) - pos);
    }
    nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// A blocking TCP client that sends raw bytes and reads raw responses.
class RawConn {
public:
    explicit RawConn(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~RawConn() { close(); }
    RawConn(const RawConn&) = delete;
    RawConn& operator=(const RawConn&) = delete;

    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
    // False when the peer has already closed (EPIPE/ECONNRESET).
    bool send(std::string_view bytes) {
        while (!bytes.empty()) {
            ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    // Reads more bytes into the buffer; false on EOF, error or timeout.
    bool fill(std::chrono::milliseconds timeout) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) {
            eof_ = true;
            return false;
        }
        buffer_.append(buf, static_cast<std::size_t>(n));
        return true;
    }
    // One response (Content-Length framed; no body for a HEAD request); status 0 if none
    // came in time.
    Reply read_reply(std::chrono::milliseconds timeout = 5000ms, bool head = false) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (true) {
            auto end = buffer_.find("\r\n\r\n");
            if (end != std::string::npos) {
                Reply r;
                r.head = buffer_.substr(0, end + 2);
                std::size_t length = 0;
                if (auto cl = r.header("Content-Length"); !cl.empty() && !head)
                    length = std::stoul(cl);
                if (buffer_.size() >= end + 4 + length) {
                    r.status = std::stoi(buffer_.substr(9, 3));
                    r.body = buffer_.substr(end + 4, length);
                    buffer_.erase(0, end + 4 + length);
                    return r;
                }
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left <= 0ms || !fill(left)) return {};
        }
    }
    // True when the server closed the connection (EOF or reset) within `timeout`.
    bool closed_by_peer(std::chrono::milliseconds timeout = 5000ms) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!eof_) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left <= 0ms) return false;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
            char buf[4096];
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0)
                eof_ = true;
            else
                buffer_.append(buf, static_cast<std::size_t>(n));
        }
        return true;
    }
    const std::string& buffered() const { return buffer_; }

private:
    int fd_ = -1;
    bool eof_ = false;
    std::string buffer_;
};

std::string get(const std::string& target, const std::string& extra = "") {
    return "GET " + target + " HTTP/1.1\r\nHost: test\r\n" + extra + "\r\n";
}

void check_error_shape(const Reply& r, int status, const std::string& code) {
    CHECK(r.status == status);
    CHECK(r.header("Content-Type") == "application/json");
    auto j = r.json();
    REQUIRE(j.is_object());
    REQUIRE(j.contains("error"));
    CHECK(j["error"]["code"] == code);
    CHECK(j["error"]["message"].is_string());
    CHECK(!j["error"]["message"].get<std::string>().empty());
}

// The routes most tests use.
void add_routes(HttpServer& s) {
    REQUIRE(s.route("GET", "/v1/blocks/{height}", [](const HttpRequest& req, const PathParams& p) {
                 nlohmann::json j = {{"height", p.at("height")}};
                 if (auto full = req.query_param("full")) j["full"] = *full;
                 return HttpResponse::json(200, j);
             }).ok());
    REQUIRE(s.route("GET", "/v1/blocks/latest", [](const HttpRequest&, const PathParams&) {
                 return HttpResponse::json(200, {{"latest", true}});
             }).ok());
    REQUIRE(s.route("POST", "/v1/echo", [](const HttpRequest& req, const PathParams&) {
                 HttpResponse r = HttpResponse::text(200, req.body);
                 if (auto h = req.header("x-tag")) r.headers["X-Tag"] = std::string(*h);
                 return r;
             }).ok());
    REQUIRE(s.route("GET", "/v1/accounts/{address}/txs/{page}",
                    [](const HttpRequest&, const PathParams& p) {
                        return HttpResponse::json(
                            200, {{"address", p.at("address")}, {"page", p.at("page")}});
                    })
                .ok());
    REQUIRE(s.route("GET", "/v1/throw", [](const HttpRequest&, const PathParams&) -> HttpResponse {
                 throw std::runtime_error("boom");
             }).ok());
}

} // namespace

TEST_CASE("http server: routes with path and query parameters") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send(get("/v1/blocks/42?full=yes%21&x"));
    Reply r = c.read_reply();
    CHECK(r.status == 200);
    CHECK(r.json() == nlohmann::json{{"height", "42"}, {"full", "yes!"}});
    // A literal segment beats a parameter.
    c.send(get("/v1/blocks/latest"));
    CHECK(c.read_reply().json() == nlohmann::json{{"latest", true}});
    // Two parameters, percent-decoded.
    c.send(get("/v1/accounts/pop%20x/txs/3"));
    CHECK(c.read_reply().json() == nlohmann::json{{"address", "pop x"}, {"page", "3"}});
    // HEAD is served by the GET route, without a body but with its length.
    c.send("HEAD /v1/blocks/7 HTTP/1.1\r\nHost: t\r\n\r\n");
    Reply head = c.read_reply(5000ms, /*head=*/true);
    CHECK(head.status == 200);
    CHECK(head.header("Content-Length") == "14"); // {"height":"7"}
    CHECK(c.buffered().empty());
    CHECK(t.server().stats().requests == 4);
}

TEST_CASE("http server: 404, 405 with Allow, and the JSON error shape") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send(get("/v1/nothing"));
    check_error_shape(c.read_reply(), 404, "not_found");
    c.send(get("/v1/blocks/")); // an empty segment is not a parameter
    check_error_shape(c.read_reply(), 404, "not_found");
    c.send("DELETE /v1/blocks/3 HTTP/1.1\r\nHost: t\r\n\r\n");
    Reply r = c.read_reply();
    check_error_shape(r, 405, "method_not_allowed");
    CHECK(r.header("Allow") == "GET, HEAD");
    c.send(get("/v1/echo"));
    Reply r2 = c.read_reply();
    check_error_shape(r2, 405, "method_not_allowed");
    CHECK(r2.header("Allow") == "POST");
    // The connection survives all of these.
    c.send(get("/v1/blocks/1"));
    CHECK(c.read_reply().status == 200);
}

TEST_CASE("http: HttpResponse::error puts the code in the message only when there is none") {
    auto message = [](const HttpResponse& r) {
        return nlohmann::json::parse(r.body)["error"]["message"].get<std::string>();
    };
    CHECK(message(HttpResponse::error(400, "invalid_argument", "height: an integer")) ==
          "height: an integer");
    CHECK(message(HttpResponse::error(404, "not_found", "")) == "not_found");
}

TEST_CASE("http server: percent-escapes are decoded the same way in every segment of the "
          "target") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    // A malformed escape anywhere (a literal segment, a parameter, an unknown path, the
    // query) is 400 naming the escape, never a 404 that depends on where it is.
    for (const std::string target :
         {"/v1/blocks%zz", "/v1/bl%zzocks/7", "/v1%zz/blocks/7", "/v1/blocks/%zz", "/nothing/%zz",
          "/v1/blocks/7%4", "/v1/blocks/7?full=%zz", "/v1/blocks/7?%g1=1"}) {
        RawConn bad(t.port());
        bad.send(get(target));
        const Reply r = bad.read_reply();
        INFO(target);
        check_error_shape(r, 400, "bad_request");
        const std::string message = r.json()["error"]["message"];
        CHECK(message.find("malformed percent-escape") != std::string::npos);
        const bool in_query = target.find('?') != std::string::npos;
        CHECK(message.find(in_query ? "in the query" : "in the path") != std::string::npos);
        CHECK((message.find("\"%zz\"") != std::string::npos ||
               message.find("\"%4\"") != std::string::npos ||
               message.find("\"%g1\"") != std::string::npos));
    }
    // A well-formed escape is the character it stands for, in literal segments as in
    // parameters: the route's usual answer, or 404 for a path no route has.
    c.send(get("/v1/%62locks/7"));
    CHECK(c.read_reply().json() == nlohmann::json{{"height", "7"}});
    c.send(get("/v1/blocks/%6catest")); // "latest": the literal route, as when sent plainly
    CHECK(c.read_reply().json() == nlohmann::json{{"latest", true}});
    c.send(get("/%76%31/accounts/pop%20x/txs/3"));
    CHECK(c.read_reply().json() == nlohmann::json{{"address", "pop x"}, {"page", "3"}});
    c.send(get("/v1/nothin%67"));
    check_error_shape(c.read_reply(), 404, "not_found");
    c.send(get("/v1/blocks%2F7")); // an escaped '/' is data, not a separator
    check_error_shape(c.read_reply(), 404, "not_found");
}

TEST_CASE("http server: route registration refuses bad patterns and duplicates") {
    asio::io_context io;
    HttpServer s(io);
    auto h = [](const HttpRequest&, const PathParams&) { return HttpResponse::text(200, ""); };
    CHECK(s.route("GET", "/a/{id}", h).ok());
    CHECK(!s.route("GET", "/a/{other}", h).ok()); // same shape
    CHECK(s.route("POST", "/a/{id}", h).ok());
    CHECK(!s.route("GET", "no-slash", h).ok());
    CHECK(!s.route("GET", "/a/{}", h).ok());
    CHECK(!s.route("GET", "/a/{x}/{x}", h).ok());
    CHECK(!s.route("get", "/b", h).ok());
    CHECK(!s.route("GET", "/c", Handler{}).ok());
    CHECK(s.local_port() == 0);
}

TEST_CASE("http server: keep-alive serves two requests on one connection") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send("POST /v1/echo HTTP/1.1\r\nHost: t\r\nX-Tag: one\r\nContent-Length: 5\r\n\r\nhello");
    Reply a = c.read_reply();
    CHECK(a.status == 200);
    CHECK(a.body == "hello");
    CHECK(a.header("X-Tag") == "one");
    CHECK(a.header("Connection") == "keep-alive");
    c.send("POST /v1/echo HTTP/1.1\r\nHost: t\r\ncontent-length: 3\r\nx-tag: two\r\n\r\nabc");
    Reply b = c.read_reply();
    CHECK(b.body == "abc");
    CHECK(b.header("X-Tag") == "two");
    auto st = t.server().stats();
    CHECK(st.connections_accepted == 1);
    CHECK(st.requests == 2);
    // Connection: close is honoured: the answer, then the close.
    c.send(get("/v1/blocks/1", "Connection: close\r\n"));
    Reply last = c.read_reply();
    CHECK(last.status == 200);
    CHECK(last.header("Connection") == "close");
    CHECK(c.closed_by_peer());
}

TEST_CASE("http server: pipelined requests are answered in order, a slow one holding the rest") {
    TestServer t;
    add_routes(t.server());
    // The first answer comes 100 ms late, from another thread.
    std::vector<std::thread> late;
    std::mutex late_mutex;
    REQUIRE(t.server()
                .route_async("GET", "/v1/slow",
                             [&](const HttpRequest&, const PathParams&, Responder respond) {
                                 std::lock_guard lock(late_mutex);
                                 late.emplace_back([respond] {
                                     std::this_thread::sleep_for(100ms);
                                     respond(HttpResponse::json(200, {{"slow", true}}));
                                 });
                             })
                .ok());
    t.start();
    RawConn c(t.port());
    // Everything in one write, the last one split across the next write.
    std::string all = get("/v1/slow") + get("/v1/blocks/1") +
                      "POST /v1/echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody" + get("/v1/nope") +
                      get("/v1/blocks/2");
    REQUIRE(c.send(all.substr(0, all.size() - 10)));
    std::this_thread::sleep_for(20ms);
    REQUIRE(c.send(all.substr(all.size() - 10)));
    CHECK(c.read_reply().json() == nlohmann::json{{"slow", true}});
    CHECK(c.read_reply().json() == nlohmann::json{{"height", "1"}});
    CHECK(c.read_reply().body == "body");
    CHECK(c.read_reply().status == 404);
    CHECK(c.read_reply().json() == nlohmann::json{{"height", "2"}});
    std::lock_guard lock(late_mutex);
    for (auto& th : late)
        th.join();
}

TEST_CASE("http server: a client that half-closes after pipelining still gets every answer") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send(get("/v1/blocks/1") + get("/v1/blocks/2"));
    c.shutdown_write();
    CHECK(c.read_reply().status == 200);
    CHECK(c.read_reply().json() == nlohmann::json{{"height", "2"}});
    CHECK(c.closed_by_peer());
}

TEST_CASE("http server: limits answer 413, 431, 411, 400, then close") {
    HttpServerOptions o;
    o.max_body_bytes = 1024;
    o.max_header_bytes = 2048;
    TestServer t(o);
    add_routes(t.server());
    t.start();
    SUBCASE("body over the limit: 413 before the body is read") {
        RawConn c(t.port());
        c.send("POST /v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
        check_error_shape(c.read_reply(), 413, "body_too_large");
        CHECK(c.closed_by_peer());
    }
    SUBCASE("a body at the limit is fine") {
        RawConn c(t.port());
        c.send("POST /v1/echo HTTP/1.1\r\nContent-Length: 1024\r\n\r\n" + std::string(1024, 'x'));
        Reply r = c.read_reply();
        CHECK(r.status == 200);
        CHECK(r.body.size() == 1024);
    }
    SUBCASE("headers over the limit: 431") {
        RawConn c(t.port());
        c.send("GET /v1/blocks/1 HTTP/1.1\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
        check_error_shape(c.read_reply(), 431, "headers_too_large");
        CHECK(c.closed_by_peer());
    }
    SUBCASE("many small headers over the limit: 431") {
        RawConn c(t.port());
        std::string req = "GET /v1/blocks/1 HTTP/1.1\r\n";
        for (int i = 0; i < 300; ++i)
            req += "X-" + std::to_string(i) + ": v\r\n";
        c.send(req + "\r\n");
        check_error_shape(c.read_reply(), 431, "headers_too_large");
    }
    SUBCASE("a long target counts too: 431") {
        RawConn c(t.port());
        c.send(get("/v1/blocks/" + std::string(3000, '9')));
        check_error_shape(c.read_reply(), 431, "headers_too_large");
    }
    SUBCASE("chunked body: 411") {
        RawConn c(t.port());
        c.send(
            "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        check_error_shape(c.read_reply(), 411, "length_required");
        CHECK(c.closed_by_peer());
    }
    SUBCASE("malformed request line: 400") {
        RawConn c(t.port());
        c.send("GARBAGE\r\n\r\n");
        check_error_shape(c.read_reply(), 400, "bad_request");
        CHECK(c.closed_by_peer());
    }
    SUBCASE("malformed header line: 400") {
        RawConn c(t.port());
        c.send("GET / HTTP/1.1\r\nNo colon here\r\n\r\n");
        check_error_shape(c.read_reply(), 400, "bad_request");
    }
    SUBCASE("HTTP/2.0: 505") {
        RawConn c(t.port());
        c.send("GET / HTTP/2.0\r\n\r\n");
        check_error_shape(c.read_reply(), 505, "http_version_not_supported");
    }
    SUBCASE("bad percent-encoding in a parameter: 400") {
        RawConn c(t.port());
        c.send(get("/v1/blocks/%zz"));
        check_error_shape(c.read_reply(), 400, "bad_request");
    }
    SUBCASE("answers before an error are still sent, in order") {
        RawConn c(t.port());
        c.send(get("/v1/blocks/1") + "BAD REQUEST\r\n\r\n");
        CHECK(c.read_reply().status == 200);
        check_error_shape(c.read_reply(), 400, "bad_request");
        CHECK(c.closed_by_peer());
    }
    // Each refusal above is counted once as a bad request (a subcase runs on a fresh server).
    CHECK(t.server().stats().bad_requests <= 1);
}

TEST_CASE("http server: a handler that throws gets 500 and the server keeps going") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send(get("/v1/throw"));
    check_error_shape(c.read_reply(), 500, "internal_error");
    c.send(get("/v1/blocks/5"));
    CHECK(c.read_reply().status == 200);
    CHECK(t.server().stats().handler_errors == 1);
    CHECK(t.server().stats().responses_by_class[5] == 1);
}

TEST_CASE("http server: garbage and a flood of bad requests do not stop good ones") {
    TestServer t;
    add_routes(t.server());
    t.start();
    std::mt19937 rng(7);
    auto random_bytes = [&](std::size_t n) {
        std::string s(n, '\0');
        for (auto& ch : s)
            ch = static_cast<char>(rng());
        return s;
    };
    std::vector<std::string> bad = {
        "\r\n\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        std::string("GET /\0 HTTP/1.1\r\n\r\n", 20),
        "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    };
    int done = 0;
    // 500 bad requests, 25 connections at a time.
    for (int round = 0; round < 20; ++round) {
        std::vector<std::unique_ptr<RawConn>> conns;
        for (int i = 0; i < 25; ++i) {
            conns.push_back(std::make_unique<RawConn>(t.port()));
            int k = round * 25 + i;
            std::string payload = k % 3 == 0 ? bad[static_cast<std::size_t>(k) % bad.size()]
                                             : random_bytes(1 + rng() % 3000);
            conns.back()->send(payload);
        }
        for (auto& c : conns) {
            c->shutdown_write();
            // Every one of them ends: answered and closed, or closed.
            CHECK(c->closed_by_peer(3000ms));
            ++done;
        }
    }
    CHECK(done == 500);
    RawConn good(t.port());
    good.send(get("/v1/blocks/9"));
    Reply r = good.read_reply();
    CHECK(r.status == 200);
    auto st = t.server().stats();
    CHECK(st.bad_requests >= 300);
    CHECK(st.connections_accepted == 501);
    // Only the good connection is left open (the others' closes are processed promptly).
    for (int i = 0; i < 100 && t.server().stats().connections_open != 1; ++i)
        std::this_thread::sleep_for(10ms);
    CHECK(t.server().stats().connections_open == 1);
}

TEST_CASE("http server: slow and idle clients are timed out") {
    HttpServerOptions o;
    o.read_timeout = 200ms;
    TestServer t(o);
    add_routes(t.server());
    t.start();
    SUBCASE("part of a request, then silence: 408 and close") {
        RawConn c(t.port());
        c.send("GET /v1/blocks/1 HTTP/1.1\r\nHost: t\r\n");
        auto start = std::chrono::steady_clock::now();
        check_error_shape(c.read_reply(2000ms), 408, "request_timeout");
        CHECK(c.closed_by_peer(2000ms));
        CHECK(std::chrono::steady_clock::now() - start >= 150ms);
        CHECK(t.server().stats().timeouts == 1);
    }
    SUBCASE("a trickle of bytes does not extend the deadline") {
        RawConn c(t.port());
        std::string req = get("/v1/blocks/1");
        bool cut_off = false;
        for (char ch : req) {
            if (!c.send(std::string(1, ch))) {
                cut_off = true;
                break;
            }
            std::this_thread::sleep_for(30ms);
        }
        Reply r = c.read_reply(1000ms);
        CHECK((cut_off || r.status == 408));
        CHECK(c.closed_by_peer(2000ms));
    }
    SUBCASE("an idle keep-alive connection is closed quietly") {
        RawConn c(t.port());
        c.send(get("/v1/blocks/1"));
        CHECK(c.read_reply().status == 200);
        CHECK(c.closed_by_peer(2000ms));
        CHECK(c.buffered().empty());
    }
    SUBCASE("a connection that never sends anything is closed") {
        RawConn c(t.port());
        CHECK(c.closed_by_peer(2000ms));
    }
}

TEST_CASE("http server: deferred handlers answer later, time out, or are caught when dropped") {
    HttpServerOptions o;
    o.handler_timeout = 300ms;
    TestServer t(o);
    add_routes(t.server());
    std::mutex m;
    std::vector<Responder> parked;
    REQUIRE(t.server()
                .route_async("POST", "/v1/txs",
                             [&](const HttpRequest& req, const PathParams&, Responder respond) {
                                 std::lock_guard lock(m);
                                 if (req.body == "drop") return; // respond destroyed unanswered
                                 parked.push_back(respond);
                             })
                .ok());
    REQUIRE(t.server()
                .route_async("GET", "/v1/now",
                             [](const HttpRequest&, const PathParams&, Responder respond) {
                                 respond(HttpResponse::json(200, {{"now", true}}));
                                 respond(HttpResponse::json(500, {})); // ignored
                             })
                .ok());
    t.start();

    SUBCASE("answered later from another thread") {
        RawConn c(t.port());
        c.send("POST /v1/txs HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
        CHECK(c.read_reply(100ms).status == 0); // nothing yet
        {
            std::lock_guard lock(m);
            REQUIRE(parked.size() == 1);
            CHECK(!parked[0].answered());
            std::thread([r = parked[0]] {
                r(HttpResponse::json(202, {{"committed", true}}));
            }).join();
            CHECK(parked[0].answered());
        }
        Reply r = c.read_reply();
        CHECK(r.status == 202);
        CHECK(r.json() == nlohmann::json{{"committed", true}});
        c.send(get("/v1/now"));
        CHECK(c.read_reply().json() == nlohmann::json{{"now", true}});
    }
    SUBCASE("never answered: 504 after handler_timeout, and a late answer is dropped") {
        RawConn c(t.port());
        c.send("POST /v1/txs HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
        check_error_shape(c.read_reply(2000ms), 504, "handler_timeout");
        std::lock_guard lock(m);
        REQUIRE(parked.size() == 1);
        CHECK(parked[0].answered());
        parked[0](HttpResponse::json(200, {})); // no effect, no crash
        c.send(get("/v1/blocks/1"));
        CHECK(c.read_reply().status == 200);
    }
    SUBCASE("dropped without an answer: 500") {
        RawConn c(t.port());
        c.send("POST /v1/txs HTTP/1.1\r\nContent-Length: 4\r\n\r\ndrop");
        check_error_shape(c.read_reply(), 500, "internal_error");
    }
    SUBCASE("an answer after the client left, or after close(), is harmless") {
        {
            RawConn c(t.port());
            c.send("POST /v1/txs HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
            std::this_thread::sleep_for(50ms);
        }
        std::this_thread::sleep_for(50ms);
        std::lock_guard lock(m);
        REQUIRE(parked.size() == 1);
        parked[0](HttpResponse::json(200, {}));
    }
    t.stop();
    std::lock_guard lock(m);
    parked.clear(); // destroyed after the server: must not touch it
}

TEST_CASE("http server: connections over the limit are refused") {
    HttpServerOptions o;
    o.max_connections = 2;
    TestServer t(o);
    add_routes(t.server());
    t.start();
    auto a = std::make_unique<RawConn>(t.port());
    RawConn b(t.port());
    a->send(get("/v1/blocks/1"));
    CHECK(a->read_reply().status == 200);
    b.send(get("/v1/blocks/2"));
    CHECK(b.read_reply().status == 200);
    {
        RawConn c(t.port());
        Reply r = c.read_reply(2000ms);
        if (r.status != 0) check_error_shape(r, 503, "too_many_connections");
        CHECK(c.closed_by_peer());
    }
    CHECK(t.server().stats().connections_refused == 1);
    a.reset(); // frees a place
    for (int i = 0; i < 100 && t.server().stats().connections_open != 1; ++i)
        std::this_thread::sleep_for(10ms);
    RawConn d(t.port());
    d.send(get("/v1/blocks/3"));
    CHECK(d.read_reply().status == 200);
}

TEST_CASE("http server: close() is idempotent and ends open connections") {
    TestServer t;
    add_routes(t.server());
    t.start();
    RawConn c(t.port());
    c.send(get("/v1/blocks/1"));
    CHECK(c.read_reply().status == 200);
    t.on_server_thread([&] {
        t.server().close();
        t.server().close();
    });
    CHECK(c.closed_by_peer());
    CHECK(t.server().stats().connections_open == 0);
    bool restarted = true;
    t.on_server_thread([&] { restarted = t.server().start().ok(); });
    CHECK(!restarted);
}

TEST_CASE("http client: round trip, HEAD, error statuses and refused connections") {
    TestServer t;
    add_routes(t.server());
    t.start();
    auto r = HttpClient::request("POST", "127.0.0.1", t.port(), "/v1/echo", R"({"a":1})",
                                 {{"x-tag", "t1"}}, 2000ms);
    REQUIRE_MESSAGE(r.ok(), r.error().message());
    CHECK(r->status == 200);
    CHECK(r->body == R"({"a":1})");
    CHECK(r->header("X-TAG") == "t1");

    auto g = HttpClient::request("GET", "localhost", t.port(), "/v1/blocks/8?full=1");
    REQUIRE(g.ok());
    CHECK(nlohmann::json::parse(g->body) == nlohmann::json{{"height", "8"}, {"full", "1"}});
    CHECK(g->header("content-type") == "application/json");

    auto h = HttpClient::request("HEAD", "127.0.0.1", t.port(), "/v1/blocks/8");
    REQUIRE(h.ok());
    CHECK(h->status == 200);
    CHECK(h->body.empty());

    auto missing = HttpClient::request("GET", "127.0.0.1", t.port(), "/nope");
    REQUIRE(missing.ok()); // an HTTP error is a response, not a failure
    CHECK(missing->status == 404);

    CHECK(HttpClient::request("get", "127.0.0.1", t.port(), "/").code() == Errc::invalid_argument);
    CHECK(HttpClient::request("GET", "127.0.0.1", t.port(), "no-slash").code() ==
          Errc::invalid_argument);
    CHECK(
        HttpClient::request("GET", "127.0.0.1", t.port(), "/", {}, {{"X-Bad", "a\r\nb"}}).code() ==
        Errc::invalid_argument);

    std::uint16_t port = t.port();
    t.stop();
    auto refused = HttpClient::request("GET", "127.0.0.1", port, "/", {}, {}, 2000ms);
    CHECK(refused.code() == Errc::io_error);
}

TEST_CASE("http client: a server that never answers hits the timeout") {
    // A listening socket nobody serves: connect succeeds (the kernel completes the
    // handshake), the request is sent, no answer ever comes.
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 8) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    auto start = std::chrono::steady_clock::now();
    auto r = HttpClient::request("GET", "127.0.0.1", ntohs(addr.sin_port), "/", {}, {}, 300ms);
    auto took = std::chrono::steady_clock::now() - start;
    ::close(fd);
    REQUIRE(!r.ok());
    CHECK(r.code() == Errc::io_error);
    CHECK(r.error().detail.find("timeout") != std::string::npos);
    CHECK(took >= 290ms);
    CHECK(took < 2000ms);
}
