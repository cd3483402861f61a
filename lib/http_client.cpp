#include <popchain/api/http_client.hpp>

#include "http_wire.hpp"

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>
#include <http_parser.h>

#include <array>
#include <optional>

namespace popchain::api {

namespace {

using tcp = asio::ip::tcp;

// One exchange. Everything runs on the local io_context, on the calling thread.
struct Exchange {
    asio::io_context io;
    tcp::resolver resolver{io};
    tcp::socket socket{io};
    std::string request;
    bool head = false;

    http_parser parser{};
    HttpResponse response;
    std::string field, value;
    bool in_value = false;
    bool complete = false;
    std::optional<Error> error;
    std::array<char, 16384> buffer{};

    void fail(Errc code, std::string message) {
        if (!error && !complete) error = make_error(code, std::move(message));
    }
    bool finished() const { return complete || error.has_value(); }

    static Exchange& self(http_parser* p) { return *static_cast<Exchange*>(p->data); }
    void end_header() {
        if (!in_value) return;
        auto [it, inserted] = response.headers.emplace(field, value);
        if (!inserted) it->second += ", " + value;
        field.clear();
        value.clear();
        in_value = false;
    }
    static const http_parser_settings& settings() {
        static const http_parser_settings s = [] {
            http_parser_settings x{};
            x.on_header_field = [](http_parser* p, const char* at, std::size_t n) {
                Exchange& e = self(p);
                e.end_header();
                e.field.append(at, n);
                return 0;
            };
            x.on_header_value = [](http_parser* p, const char* at, std::size_t n) {
                Exchange& e = self(p);
                e.in_value = true;
                e.value.append(at, n);
                return 0;
            };
            x.on_headers_complete = [](http_parser* p) {
                Exchange& e = self(p);
                e.end_header();
                e.response.status = static_cast<int>(p->status_code);
                return e.head ? 1 : 0; // 1: a HEAD response has no body, whatever it says
            };
            x.on_body = [](http_parser* p, const char* at, std::size_t n) {
                Exchange& e = self(p);
                if (e.response.body.size() + n > HttpClient::max_response_bytes) return 1;
                e.response.body.append(at, n);
                return 0;
            };
            x.on_message_complete = [](http_parser* p) {
                self(p).complete = true;
                return 0;
            };
            return x;
        }();
        return s;
    }

    void feed(const char* data, std::size_t n) {
        std::size_t used = http_parser_execute(&parser, &settings(), data, n);
        auto err = HTTP_PARSER_ERRNO(&parser);
        if (complete) return;
        if (err == HPE_CB_body)
            fail(Errc::too_large, "response body exceeds " +
                                      std::to_string(HttpClient::max_response_bytes) + " bytes");
        else if (err != HPE_OK || used != n)
            fail(Errc::malformed,
                 std::string("malformed HTTP response: ") + http_errno_description(err));
    }

    void read() {
        socket.async_read_some(asio::buffer(buffer), [this](std::error_code ec, std::size_t n) {
            if (finished()) return;
            if (ec == asio::error::eof) {
                feed(nullptr, 0); // tells the parser: a body delimited by close has ended
                if (!complete)
                    fail(Errc::io_error, "connection closed before the response was complete");
                return;
            }
            if (ec) return fail(Errc::io_error, "read failed: " + ec.message());
            feed(buffer.data(), n);
            if (!finished()) read();
        });
    }
};

} // namespace

Result<HttpResponse> HttpClient::request(std::string_view method, std::string_view host,
                                         std::uint16_t port, std::string_view target,
                                         std::string_view body, const Headers& headers,
                                         std::chrono::milliseconds timeout) {
    if (!wire::valid_method(method))
        return make_error(Errc::invalid_argument,
                          "bad HTTP method \"" + std::string(method) + "\"");
    if (target.empty() || target.front() != '/' || !wire::valid_header_value(target) ||
        target.find(' ') != std::string_view::npos)
        return make_error(Errc::invalid_argument, "request target must be a path without spaces");
    for (const auto& [name, value] : headers)
        if (!wire::valid_header_name(name) || !wire::valid_header_value(value))
            return make_error(Errc::invalid_argument, "bad header \"" + name + "\"");

    auto deadline = std::chrono::steady_clock::now() + timeout;
    Exchange x;
    x.head = method == "HEAD";
    http_parser_init(&x.parser, HTTP_RESPONSE);
    x.parser.data = &x;

    std::string& out = x.request;
    out.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
    bool ipv6 = host.find(':') != std::string_view::npos;
    out.append("Host: ")
        .append(ipv6 ? "[" : "")
        .append(host)
        .append(ipv6 ? "]" : "")
        .append(":" + std::to_string(port) + "\r\n");
    wire::append_headers(out, headers);
    if (!body.empty() && headers.find("Content-Type") == headers.end())
        out += "Content-Type: application/json\r\n";
    if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH")
        out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    out += "Connection: close\r\n\r\n";
    out.append(body);

    std::string where = std::string(host) + ":" + std::to_string(port);
    x.resolver.async_resolve(
        std::string(host), std::to_string(port), tcp::resolver::numeric_service,
        [&x, where](std::error_code ec, tcp::resolver::results_type results) {
            if (ec) return x.fail(Errc::io_error, "cannot resolve " + where + ": " + ec.message());
            asio::async_connect(x.socket, results, [&x, where](std::error_code ec, tcp::endpoint) {
                if (ec)
                    return x.fail(Errc::io_error,
                                  "cannot connect to " + where + ": " + ec.message());
                asio::async_write(x.socket, asio::buffer(x.request),
                                  [&x](std::error_code ec, std::size_t) {
                                      if (ec && !x.finished())
                                          x.fail(Errc::io_error, "write failed: " + ec.message());
                                  });
                // Read at once: a server may answer (say, 413) before taking the whole body.
                x.read();
            });
        });

    // One handler at a time, so the exchange ends as soon as the response is complete (a
    // body write still in flight is abandoned then).
    while (!x.finished() && x.io.run_one_until(deadline) > 0) {
    }
    if (!x.finished())
        x.fail(Errc::io_error, "no complete response from " + where + " within " +
                                   std::to_string(timeout.count()) + " ms (timeout)");
    // Abort whatever is still in flight; the handlers run (and do nothing) before x goes.
    std::error_code ignored;
    x.resolver.cancel();
    x.socket.close(ignored);
    x.io.restart();
    x.io.run();
    if (x.error && !x.complete) return *x.error;
    return std::move(x.response);
}

} // namespace popchain::api
