// A small HTTP/1.1 server on the caller's Asio io_context, for the node's REST API and the
// example services.
//
// Threading: everything the server does runs on the io_context it was given, so handlers
// run there too and may touch state owned by that thread (the replica, the ledger) without
// locks. Construct, route(), start(), close() and destroy the server on that thread, or
// while the io_context is not running. stats() may be read from any thread. A deferred
// answer (route_async) may be given from any thread: Responder posts it to the io_context.
//
// What it accepts (docs/http.md): HTTP/1.1 and 1.0, keep-alive, pipelined requests (answered
// in order), bodies with Content-Length only. Requests are parsed by the http_parser library
// (libhttp-parser-dev), never by hand. Every limit below is enforced before memory is spent,
// and every refusal is the JSON error shape of HttpResponse::error.
#pragma once

#include <popchain/api/http.hpp>
#include <popchain/result.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace asio {
class io_context;
}

namespace popchain::api {

struct HttpServerOptions {
    std::string host = "127.0.0.1"; // bind address; "0.0.0.0" or "::" for all interfaces
    std::uint16_t port = 0;         // 0: an ephemeral port, see local_port()
    // Request line plus header lines; more gets 431 and the connection is closed.
    std::size_t max_header_bytes = 16 * 1024;
    // A Content-Length above this gets 413 before any of the body is read.
    std::size_t max_body_bytes = 1024 * 1024;
    // A request must arrive completely within this time of its first byte, and an idle
    // keep-alive connection is closed after it. Also bounds each response write, so a client
    // that stops reading cannot pin a connection. 408 when part of a request had come.
    std::chrono::milliseconds read_timeout{10'000};
    // A deferred handler that has not answered by then is answered 504 for it, so a lost
    // Responder cannot hang a client (and every request behind it) forever.
    std::chrono::milliseconds handler_timeout{60'000};
    // Connections beyond this are answered 503 and closed at once.
    std::size_t max_connections = 256;
    // Requests parsed but not yet answered, per connection. Beyond it the server stops
    // reading that socket (TCP backpressure) rather than buffering without bound.
    std::size_t max_pipelined = 32;
};

// Counters since start(); readable from any thread.
struct HttpServerStats {
    std::uint64_t connections_accepted = 0;
    std::uint64_t connections_refused = 0; // over max_connections
    std::uint64_t connections_open = 0;
    std::uint64_t requests = 0;       // complete, well-formed requests handed to routing
    std::uint64_t bad_requests = 0;   // malformed or over a limit (400, 408, 411, 413, 431, 501)
    std::uint64_t timeouts = 0;       // connections closed by read_timeout / write timeouts
    std::uint64_t handler_errors = 0; // handlers that threw, or deferred ones that never answered
    std::array<std::uint64_t, 6> responses_by_class{}; // [1] 1xx ... [5] 5xx; [0] unused
};

// Hands a deferred handler's answer back to its connection. Copyable; the first call wins
// and later ones are ignored. Safe to call from any thread, and after the connection or the
// server has gone (the answer is then dropped). If every copy is destroyed without a call,
// the client gets 500, so a forgotten request does not stall the connection. The io_context
// must outlive every Responder.
class Responder {
public:
    void operator()(HttpResponse response) const;
    // True once an answer was given (by a call, or by the server: timeout or close).
    bool answered() const;

    struct State;
    explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}

private:
    std::shared_ptr<State> state_;
};

using Handler = std::function<HttpResponse(const HttpRequest&, const PathParams&)>;
using AsyncHandler = std::function<void(const HttpRequest&, const PathParams&, Responder)>;

class HttpServer {
public:
    HttpServer(asio::io_context& io, HttpServerOptions options = {});
    ~HttpServer(); // close()
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // `pattern` is a path of literal segments and {name} segments: "/v1/blocks/{height}".
    // Each segment of a request's path is percent-decoded before it is matched (a literal
    // segment matches "%73tatus" as "status"; "%2F" is data, not a separator); a malformed
    // escape anywhere in the target is 400 before any route is tried. A {name} segment
    // matches one non-empty path segment, handed to the handler decoded as params["name"].
    // When several patterns match, the one with a
    // literal segment earliest wins ("/v1/blocks/latest" over "/v1/blocks/{height}").
    // A HEAD request is served by the GET route when no HEAD route exists (body dropped).
    // Fails for a malformed pattern or method, or a (method, pattern) already routed.
    Result<void> route(std::string method, std::string pattern, Handler handler);
    // The handler answers through `respond`, now or later (for example once a transaction
    // commits). Requests behind it on the same connection wait: answers go out in order.
    Result<void> route_async(std::string method, std::string pattern, AsyncHandler handler);

    // Binds, listens and starts accepting.
    Result<void> start();
    // The bound port (useful with port 0); 0 before start().
    std::uint16_t local_port() const;
    // Stops accepting and closes every connection, answered or not. Idempotent.
    void close();

    HttpServerStats stats() const;

    struct Impl;

private:
    std::shared_ptr<Impl> impl_;
};

} // namespace popchain::api
