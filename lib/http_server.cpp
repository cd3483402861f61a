#include <popchain/api/http_server.hpp>

#include "http_wire.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <http_parser.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

namespace popchain::api {

namespace http_detail {

using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Segment {
    std::string text; // literal text, or the parameter name
    bool param = false;
};

struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler sync;
    AsyncHandler async;
};

struct AtomicStats {
    std::atomic<std::uint64_t> connections_accepted{0}, connections_refused{0}, connections_open{0},
        requests{0}, bad_requests{0}, timeouts{0}, handler_errors{0};
    std::array<std::atomic<std::uint64_t>, 6> responses_by_class{};
};

// Splits "/a/b/c" into {"a","b","c"}; "/" into {""}. The caller checked the leading '/'.
std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    std::size_t start = 1;
    while (true) {
        std::size_t slash = path.find('/', start);
        if (slash == std::string_view::npos) {
            out.push_back(path.substr(start));
            return out;
        }
        out.push_back(path.substr(start, slash - start));
        start = slash + 1;
    }
}

// The first malformed percent-escape in `text` ("%zz", "%4", "%"), or nullopt if every '%'
// is followed by two hex digits.
std::optional<std::string_view> bad_escape(std::string_view text) {
    auto hex = [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    };
    for (std::size_t i = text.find('%'); i != std::string_view::npos; i = text.find('%', i + 1)) {
        if (i + 2 < text.size() && hex(text[i + 1]) && hex(text[i + 2])) {
            i += 2;
            continue;
        }
        return text.substr(i, 3);
    }
    return std::nullopt;
}

// The 400 message for a malformed escape `bad` in `where` ("path", "query").
std::string bad_escape_message(std::string_view bad, std::string_view where) {
    return "malformed percent-escape \"" + std::string(bad) + "\" in the " + std::string(where) +
           ": '%' must be followed by two hex digits";
}

Result<std::vector<Segment>> parse_pattern(std::string_view pattern) {
    if (pattern.empty() || pattern.front() != '/')
        return make_error(Errc::invalid_argument, "route pattern must start with '/'");
    std::vector<Segment> out;
    std::set<std::string, std::less<>> names;
    for (std::string_view s : split_path(pattern)) {
        if (s.size() >= 2 && s.front() == '{' && s.back() == '}') {
            std::string name(s.substr(1, s.size() - 2));
            if (name.empty() || name.find_first_of("{}") != std::string::npos)
                return make_error(Errc::invalid_argument, "bad parameter in route pattern");
            if (!names.insert(name).second)
                return make_error(Errc::invalid_argument, "parameter {" + name + "} used twice");
            out.push_back({std::move(name), true});
        } else {
            if (s.find_first_of("{}?#") != std::string_view::npos)
                return make_error(Errc::invalid_argument,
                                  "route pattern segment \"" + std::string(s) + "\" is malformed");
            out.push_back({std::string(s), false});
        }
    }
    return out;
}

class Connection;

} // namespace http_detail

struct Responder::State {
    std::weak_ptr<http_detail::Connection> connection;
    std::uint64_t seq = 0;
    asio::io_context::executor_type executor;
    std::atomic<bool> answered{false};

    State(std::weak_ptr<http_detail::Connection> c, std::uint64_t s,
          asio::io_context::executor_type ex)
        : connection(std::move(c)), seq(s), executor(std::move(ex)) {}
    ~State();
    void post(HttpResponse response, bool handler_error);
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
    asio::io_context& io;
    HttpServerOptions options;
    std::vector<http_detail::Route> routes;
    http_detail::tcp::acceptor acceptor;
    asio::steady_timer sweep_timer;
    asio::steady_timer retry_timer;
    std::unordered_map<std::uint64_t, std::shared_ptr<http_detail::Connection>> connections;
    std::uint64_t next_connection_id = 0;
    bool started = false;
    bool closed = false;
    std::uint16_t port = 0;
    http_detail::AtomicStats stats;

    Impl(asio::io_context& ctx, HttpServerOptions opts)
        : io(ctx), options(std::move(opts)), acceptor(ctx), sweep_timer(ctx), retry_timer(ctx) {}

    Result<void> add_route(std::string method, std::string pattern, Handler sync,
                           AsyncHandler async);
    void accept();
    void on_accept(const std::error_code& ec, http_detail::tcp::socket socket);
    void refuse(http_detail::tcp::socket socket);
    void schedule_sweep();
    void close();
    void forget(std::uint64_t id);

    struct Match {
        const http_detail::Route* route = nullptr;
        PathParams params;
        std::optional<HttpResponse> answer; // routing already decided (404, 405, 400)
    };
    Match match(const HttpRequest& request) const;
};

namespace http_detail {

std::string serialize(HttpResponse& r, bool head, bool close) {
    if (r.status < 200 || r.status > 599) // informational answers are not ours to send
        r = HttpResponse::error(500, "internal_error", "handler returned an invalid status");
    bool no_body = r.status == 204 || r.status == 304;
    std::string out;
    out.reserve(128 + r.body.size());
    out += "HTTP/1.1 ";
    out += std::to_string(r.status);
    out += ' ';
    out += reason_phrase(r.status);
    out += "\r\n";
    wire::append_headers(out, r.headers);
    if (!no_body) out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    out += close ? "Connection: close\r\n" : "Connection: keep-alive\r\n";
    out += "\r\n";
    if (!head && !no_body) out += r.body;
    return out;
}

// One client connection. Lives in the server's table and in its own pending operations;
// touched only on the io_context thread.
class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(std::shared_ptr<HttpServer::Impl> server, tcp::socket socket, std::uint64_t id)
        : server_(std::move(server)), socket_(std::move(socket)), id_(id) {
        http_parser_init(&parser_, HTTP_REQUEST);
        parser_.data = this;
    }

    // Reads, parses, routes and writes as far as it can without blocking; called after
    // every event (accepted, bytes read, write done, a deferred answer arrived).
    void pump();

    // Called by the server's sweep timer.
    void check_deadlines(Clock::time_point now);
    // Immediate close: the socket, every unanswered request. Idempotent.
    void close();
    // An answer for request `seq` (from a deferred handler, or the server itself).
    void deliver(std::uint64_t seq, HttpResponse response, bool handler_error);

private:
    struct Slot {
        std::uint64_t seq = 0;
        std::optional<HttpResponse> response;
        bool head = false;
        bool close_after = false;
        Clock::time_point deadline;
        // Weak: the Responder's copies alone keep its state alive, so dropping them all
        // is noticed (and answered 500).
        std::weak_ptr<Responder::State> responder;
        void mark_answered() const {
            if (auto st = responder.lock()) st->answered = true;
        }
    };

    const HttpServerOptions& options() const { return server_->options; }
    AtomicStats& stats() { return server_->stats; }

    void consume();
    void read();
    void on_read(const std::error_code& ec, std::size_t n);
    void flush();
    void on_write(const std::error_code& ec);
    void linger();
    void dispatch(HttpRequest request);
    // Answers `response` after everything before it, then closes. Counted as a bad request
    // unless it is a timeout (counted as such by the caller).
    void fail(HttpResponse response, bool bad_request = true);
    Slot* find(std::uint64_t seq);

    // http_parser callbacks. A non-zero return stops the parser with an error; the reason is
    // left in failure_ so the client hears which limit it hit.
    static Connection& self(http_parser* p) { return *static_cast<Connection*>(p->data); }
    static int on_message_begin(http_parser* p);
    static int on_url(http_parser* p, const char* at, std::size_t n);
    static int on_header_field(http_parser* p, const char* at, std::size_t n);
    static int on_header_value(http_parser* p, const char* at, std::size_t n);
    static int on_headers_complete(http_parser* p);
    static int on_body(http_parser* p, const char* at, std::size_t n);
    static int on_message_complete(http_parser* p);
    static const http_parser_settings& settings();
    int count_header_bytes(std::size_t n);
    void end_header();

    std::shared_ptr<HttpServer::Impl> server_;
    tcp::socket socket_;
    std::uint64_t id_;

    http_parser parser_{};
    bool in_message_ = false;
    std::size_t header_bytes_ = 0;
    std::string url_, field_, value_;
    bool in_value_ = false;
    bool upgrade_ = false;
    HttpRequest current_;
    std::optional<HttpRequest> ready_;
    bool ready_keep_alive_ = true;
    std::optional<HttpResponse> failure_;

    std::string inbuf_; // received, [inpos_, end) not parsed yet
    std::size_t inpos_ = 0;
    std::array<char, 8192> readbuf_{};
    std::string outbuf_;
    std::size_t writing_count_ = 0;
    bool writing_close_ = false;

    bool reading_ = false;
    bool writing_ = false;
    bool read_closed_ = false; // no further requests will be read (EOF, error, Connection: close)
    bool lingering_ = false;   // final answer sent; draining the client's leftovers
    bool closed_ = false;
    std::optional<Clock::time_point> read_deadline_, write_deadline_;

    std::deque<Slot> slots_; // requests in arrival order, answered or not
    std::uint64_t next_seq_ = 0;
};

const http_parser_settings& Connection::settings() {
    static const http_parser_settings s = [] {
        http_parser_settings x{};
        x.on_message_begin = &Connection::on_message_begin;
        x.on_url = &Connection::on_url;
        x.on_header_field = &Connection::on_header_field;
        x.on_header_value = &Connection::on_header_value;
        x.on_headers_complete = &Connection::on_headers_complete;
        x.on_body = &Connection::on_body;
        x.on_message_complete = &Connection::on_message_complete;
        return x;
    }();
    return s;
}

int Connection::count_header_bytes(std::size_t n) {
    header_bytes_ += n;
    if (header_bytes_ <= options().max_header_bytes) return 0;
    failure_ = HttpResponse::error(431, "headers_too_large",
                                   "request line and headers exceed " +
                                       std::to_string(options().max_header_bytes) + " bytes");
    return 1;
}

int Connection::on_message_begin(http_parser* p) {
    Connection& c = self(p);
    c.in_message_ = true;
    c.current_ = HttpRequest{};
    c.url_.clear();
    c.field_.clear();
    c.value_.clear();
    c.in_value_ = false;
    c.upgrade_ = false;
    // The request line's fixed parts ("GET " ... " HTTP/1.1\r\n"), roughly.
    c.header_bytes_ = 16;
    c.read_deadline_ = Clock::now() + c.options().read_timeout;
    return 0;
}

int Connection::on_url(http_parser* p, const char* at, std::size_t n) {
    Connection& c = self(p);
    if (c.count_header_bytes(n)) return 1;
    c.url_.append(at, n);
    return 0;
}

void Connection::end_header() {
    if (!in_value_) return;
    auto [it, inserted] = current_.headers.emplace(field_, value_);
    if (!inserted) it->second += ", " + value_; // RFC 9110 5.3: repeats combine
    field_.clear();
    value_.clear();
    in_value_ = false;
}

int Connection::on_header_field(http_parser* p, const char* at, std::size_t n) {
    Connection& c = self(p);
    c.end_header();
    if (c.count_header_bytes(n + (c.field_.empty() ? 4 : 0))) return 1; // ": " and CRLF
    c.field_.append(at, n);
    return 0;
}

int Connection::on_header_value(http_parser* p, const char* at, std::size_t n) {
    Connection& c = self(p);
    if (c.count_header_bytes(n)) return 1;
    c.in_value_ = true;
    c.value_.append(at, n);
    return 0;
}

int Connection::on_headers_complete(http_parser* p) {
    Connection& c = self(p);
    c.end_header();
    if (p->http_major != 1) {
        c.failure_ = HttpResponse::error(505, "http_version_not_supported", "only HTTP/1.x");
        return -1;
    }
    if (p->flags & F_CHUNKED) {
        c.failure_ = HttpResponse::error(
            411, "length_required",
            "chunked request bodies are not supported: send the body with Content-Length");
        return -1;
    }
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c.options().max_body_bytes) {
        c.failure_ = HttpResponse::error(413, "body_too_large",
                                         "request body exceeds " +
                                             std::to_string(c.options().max_body_bytes) + " bytes");
        return -1;
    }
    c.current_.method = http_method_str(static_cast<http_method>(p->method));
    c.upgrade_ = p->upgrade != 0;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > 0)
        c.current_.body.reserve(static_cast<std::size_t>(p->content_length));
    return 0;
}

int Connection::on_body(http_parser* p, const char* at, std::size_t n) {
    Connection& c = self(p);
    if (c.current_.body.size() + n > c.options().max_body_bytes) { // belt and braces
        c.failure_ = HttpResponse::error(413, "body_too_large", "request body too large");
        return 1;
    }
    c.current_.body.append(at, n);
    return 0;
}

int Connection::on_message_complete(http_parser* p) {
    Connection& c = self(p);
    c.ready_keep_alive_ = http_should_keep_alive(p) != 0 && !c.upgrade_;
    c.current_.target = std::move(c.url_);
    c.url_.clear();
    c.ready_ = std::move(c.current_);
    c.current_ = HttpRequest{};
    // One request at a time: the parser stops here, the request is routed, and parsing
    // resumes only while fewer than max_pipelined requests wait for answers.
    http_parser_pause(p, 1);
    return 0;
}

// Splits the target into path and query. nullopt for a target we cannot route.
std::optional<std::string> split_target(HttpRequest& r) {
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(r.target.data(), r.target.size(), 0, &u) != 0)
        return "malformed request target";
    if (u.field_set & (1 << UF_PATH))
        r.path = r.target.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
    else
        r.path = "/";
    if (r.path.empty() || r.path.front() != '/') return "request target must be a path";
    // Every escape of the target is checked here, before routing, so a malformed one is 400
    // wherever it is (a literal segment, a parameter, an unknown path, the query).
    if (auto bad = bad_escape(r.path)) return bad_escape_message(*bad, "path");
    if (u.field_set & (1 << UF_QUERY)) {
        std::string_view q(r.target.data() + u.field_data[UF_QUERY].off,
                           u.field_data[UF_QUERY].len);
        while (!q.empty()) {
            std::size_t amp = q.find('&');
            std::string_view pair = q.substr(0, amp);
            q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
            if (pair.empty()) continue;
            if (auto bad = bad_escape(pair)) return bad_escape_message(*bad, "query");
            std::size_t eq = pair.find('=');
            auto key = percent_decode(pair.substr(0, eq), true);
            auto value = percent_decode(
                eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
            if (!key || !value) return "malformed percent-escape in the query";
            r.query[*key] = *value;
        }
    }
    return std::nullopt;
}

void Connection::pump() {
    if (closed_ || lingering_) return;
    consume();
    flush();
    if (closed_ || lingering_) return;
    if (read_closed_ && slots_.empty() && !writing_) {
        close();
        return;
    }
    // Idle keep-alive connections are closed after read_timeout too.
    if (slots_.empty() && !in_message_ && !read_closed_ && !read_deadline_)
        read_deadline_ = Clock::now() + options().read_timeout;
    read();
}

void Connection::consume() {
    while (!closed_ && !read_closed_ && inpos_ < inbuf_.size() &&
           slots_.size() < options().max_pipelined) {
        std::size_t available = inbuf_.size() - inpos_;
        std::size_t n =
            http_parser_execute(&parser_, &settings(), inbuf_.data() + inpos_, available);
        inpos_ += std::min(n, available);
        auto err = HTTP_PARSER_ERRNO(&parser_);
        if (err == HPE_PAUSED) {
            http_parser_pause(&parser_, 0);
            if (ready_) {
                HttpRequest request = std::move(*ready_);
                ready_.reset();
                dispatch(std::move(request));
            }
            continue;
        }
        if (err != HPE_OK) {
            if (failure_) {
                fail(std::move(*failure_));
            } else if (err == HPE_HEADER_OVERFLOW) {
                fail(HttpResponse::error(431, "headers_too_large", "request headers too large"));
            } else {
                fail(HttpResponse::error(400, "bad_request",
                                         std::string("malformed HTTP request: ") +
                                             http_errno_description(err)));
            }
            break;
        }
        if (n < available) { // stopped without an error: only after an upgrade request
            read_closed_ = true;
            break;
        }
    }
    if (inpos_ == inbuf_.size()) {
        inbuf_.clear();
        inpos_ = 0;
    }
}

void Connection::read() {
    if (reading_ || closed_ || read_closed_) return;
    if (!lingering_ && (slots_.size() >= options().max_pipelined || inpos_ < inbuf_.size()))
        return; // backpressure: answer what we have before reading more
    reading_ = true;
    socket_.async_read_some(asio::buffer(readbuf_),
                            [self = shared_from_this()](const std::error_code& ec, std::size_t n) {
                                self->on_read(ec, n);
                            });
}

void Connection::on_read(const std::error_code& ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (lingering_) { // discarding; the client's EOF (or an error) ends it
        if (ec) {
            close();
        } else {
            read();
        }
        return;
    }
    if (ec) {
        if (ec != asio::error::eof) {
            close();
            return;
        }
        // The client finished sending; answer what it asked (it may have half-closed after
        // pipelining), then close. A partial request is simply dropped.
        read_closed_ = true;
        in_message_ = false;
        read_deadline_.reset();
        pump();
        return;
    }
    inbuf_.append(readbuf_.data(), n);
    pump();
}

Connection::Slot* Connection::find(std::uint64_t seq) {
    for (auto& s : slots_)
        if (s.seq == seq) return &s;
    return nullptr;
}

void Connection::dispatch(HttpRequest request) {
    in_message_ = false;
    read_deadline_.reset();
    stats().requests++;
    Slot slot;
    slot.seq = next_seq_++;
    slot.head = request.method == "HEAD";
    slot.close_after = !ready_keep_alive_;
    slot.deadline = Clock::now() + options().handler_timeout;
    if (slot.close_after) read_closed_ = true;
    std::uint64_t seq = slot.seq;
    slots_.push_back(std::move(slot));

    if (auto bad = split_target(request)) {
        stats().bad_requests++;
        deliver(seq, HttpResponse::error(400, "bad_request", *bad), false);
        return;
    }
    HttpServer::Impl::Match m = server_->match(request);
    if (m.answer) {
        deliver(seq, std::move(*m.answer), false);
        return;
    }
    // Handlers may do anything, including closing the server: hold no references into
    // slots_ across the call, only `seq`, and keep this connection alive.
    auto keep = shared_from_this();
    if (m.route->sync) {
        HttpResponse response;
        bool threw = false;
        try {
            response = m.route->sync(request, m.params);
        } catch (...) {
            threw = true;
        }
        if (threw)
            response = HttpResponse::error(500, "internal_error", "the request handler failed");
        deliver(seq, std::move(response), threw);
        return;
    }
    auto state =
        std::make_shared<Responder::State>(weak_from_this(), seq, server_->io.get_executor());
    if (Slot* s = find(seq)) s->responder = state;
    try {
        m.route->async(request, m.params, Responder(state));
    } catch (...) {
        if (!state->answered.exchange(true))
            deliver(seq, HttpResponse::error(500, "internal_error", "the request handler failed"),
                    true);
    }
}

void Connection::deliver(std::uint64_t seq, HttpResponse response, bool handler_error) {
    if (closed_) return;
    Slot* s = find(seq);
    if (!s || s->response) return; // already answered (say, by the handler timeout)
    if (handler_error) stats().handler_errors++;
    s->mark_answered();
    s->response = std::move(response);
}

void Connection::fail(HttpResponse response, bool bad_request) {
    if (bad_request) stats().bad_requests++;
    Slot slot;
    slot.seq = next_seq_++;
    slot.close_after = true;
    slot.response = std::move(response);
    slots_.push_back(std::move(slot));
    read_closed_ = true;
    in_message_ = false;
    read_deadline_.reset();
    failure_.reset();
}

void Connection::flush() {
    if (writing_ || closed_) return;
    outbuf_.clear();
    std::size_t count = 0;
    bool close_after = false;
    for (auto& s : slots_) {
        if (!s.response) break;
        ++count;
        outbuf_ += serialize(*s.response, s.head, s.close_after);
        // After serialize(), which replaces a status outside 200..599 with 500.
        stats().responses_by_class[static_cast<std::size_t>(s.response->status / 100)]++;
        if (s.close_after) {
            close_after = true;
            break;
        }
    }
    if (count == 0) return;
    writing_ = true;
    writing_count_ = count;
    writing_close_ = close_after;
    write_deadline_ = Clock::now() + options().read_timeout;
    asio::async_write(socket_, asio::buffer(outbuf_),
                      [self = shared_from_this()](const std::error_code& ec, std::size_t) {
                          self->on_write(ec);
                      });
}

void Connection::on_write(const std::error_code& ec) {
    writing_ = false;
    write_deadline_.reset();
    if (closed_) return;
    if (ec) {
        close();
        return;
    }
    for (std::size_t i = 0; i < writing_count_ && !slots_.empty(); ++i)
        slots_.pop_front();
    if (writing_close_) {
        linger();
        return;
    }
    pump();
}

// After the last answer: stop sending, and read (discarding) until the client closes, for a
// short while. Closing at once with unread request bytes in the kernel makes it send a
// reset, which can destroy the answer (say, a 413) before the client reads it.
void Connection::linger() {
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    lingering_ = true;
    read_closed_ = false;
    for (auto& s : slots_)
        s.mark_answered();
    slots_.clear();
    read_deadline_ = Clock::now() + std::min<std::chrono::milliseconds>(
                                        options().read_timeout, std::chrono::milliseconds(2000));
    read();
}

void Connection::check_deadlines(Clock::time_point now) {
    if (closed_) return;
    auto keep = shared_from_this();
    if (write_deadline_ && now >= *write_deadline_) {
        stats().timeouts++;
        close();
        return;
    }
    if (read_deadline_ && now >= *read_deadline_) {
        read_deadline_.reset();
        if (lingering_) {
            close();
            return;
        }
        stats().timeouts++;
        if (in_message_) { // tell a slow client why
            fail(HttpResponse::error(408, "request_timeout",
                                     "the request did not arrive within " +
                                         std::to_string(options().read_timeout.count()) + " ms"),
                 /*bad_request=*/false);
            pump();
        } else {
            close();
        }
        return;
    }
    bool changed = false;
    for (auto& s : slots_) {
        if (s.response || now < s.deadline) continue;
        s.mark_answered();
        s.response =
            HttpResponse::error(504, "handler_timeout", "the request was not answered in time");
        stats().handler_errors++;
        changed = true;
    }
    if (changed) pump();
}

void Connection::close() {
    if (closed_) return;
    closed_ = true;
    auto keep = shared_from_this();
    std::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    for (auto& s : slots_)
        s.mark_answered();
    slots_.clear();
    server_->forget(id_);
}

} // namespace http_detail

// ---- Responder ----

Responder::State::~State() {
    if (!answered.exchange(true))
        post(HttpResponse::error(500, "internal_error", "the request was dropped unanswered"),
             true);
}

void Responder::State::post(HttpResponse response, bool handler_error) {
    asio::post(executor,
               [c = connection, seq = seq, r = std::move(response), handler_error]() mutable {
                   if (auto conn = c.lock()) {
                       conn->deliver(seq, std::move(r), handler_error);
                       conn->pump(); // writes it if it is next in line
                   }
               });
}

void Responder::operator()(HttpResponse response) const {
    if (!state_ || state_->answered.exchange(true)) return;
    state_->post(std::move(response), false);
}

bool Responder::answered() const {
    return !state_ || state_->answered.load();
}

// ---- server ----

Result<void> HttpServer::Impl::add_route(std::string method, std::string pattern, Handler sync,
                                         AsyncHandler async) {
    if (!wire::valid_method(method))
        return make_error(Errc::invalid_argument, "bad HTTP method \"" + method + "\"");
    auto segments = http_detail::parse_pattern(pattern);
    if (!segments) return segments.error();
    for (const auto& r : routes) {
        if (r.method != method || r.segments.size() != segments->size()) continue;
        bool same = true; // same shape: literals equal, parameters in the same places
        for (std::size_t i = 0; i < r.segments.size() && same; ++i) {
            const auto& a = r.segments[i];
            const auto& b = (*segments)[i];
            same = a.param == b.param && (a.param || a.text == b.text);
        }
        if (same)
            return make_error(Errc::invalid_argument,
                              method + " " + pattern + " is already routed (" + r.pattern + ")");
    }
    routes.push_back({std::move(method), std::move(pattern), std::move(*segments), std::move(sync),
                      std::move(async)});
    return {};
}

HttpServer::Impl::Match HttpServer::Impl::match(const HttpRequest& request) const {
    Match out;
    // Each segment is decoded before it is compared, so a well-formed escape stands for its
    // character in literal segments as in parameters ("/v1/%73tatus" is "/v1/status"). An
    // escaped '/' ("%2F") is data inside its segment, not a separator.
    std::vector<std::string> parts;
    for (std::string_view raw : http_detail::split_path(request.path)) {
        auto decoded = percent_decode(raw, false);
        if (!decoded) { // split_target refused these already
            out.answer =
                HttpResponse::error(400, "bad_request",
                                    http_detail::bad_escape_message(
                                        http_detail::bad_escape(raw).value_or(raw), "path"));
            return out;
        }
        parts.push_back(std::move(*decoded));
    }
    std::set<std::string> allowed;
    auto find_for = [&](std::string_view method) -> Match {
        Match best;
        std::vector<bool> best_key;
        for (const auto& r : routes) {
            if (r.segments.size() != parts.size()) continue;
            std::vector<bool> key; // literal segments, left to right: the more specific wins
            PathParams params;
            bool ok = true;
            for (std::size_t i = 0; i < parts.size() && ok; ++i) {
                const auto& seg = r.segments[i];
                if (seg.param) {
                    ok = !parts[i].empty();
                    params[seg.text] = parts[i];
                    key.push_back(false);
                } else {
                    ok = seg.text == parts[i];
                    key.push_back(true);
                }
            }
            if (!ok) continue;
            allowed.insert(r.method);
            if (r.method != method) continue;
            if (!best.route || key > best_key) {
                best.route = &r;
                best.params = std::move(params);
                best_key = std::move(key);
            }
        }
        return best;
    };
    out = find_for(request.method);
    if (out.route) return out;
    if (request.method == "HEAD") {
        out = find_for("GET");
        if (out.route) return out;
    }
    if (allowed.empty()) {
        out.answer = HttpResponse::error(404, "not_found", "no such resource: " + request.path);
        return out;
    }
    if (allowed.count("GET")) allowed.insert("HEAD");
    std::string allow;
    for (const auto& m : allowed)
        allow += (allow.empty() ? "" : ", ") + m;
    out.answer = HttpResponse::error(405, "method_not_allowed",
                                     request.method + " is not allowed here; allowed: " + allow);
    out.answer->headers["Allow"] = allow;
    return out;
}

void HttpServer::Impl::accept() {
    if (closed) return;
    acceptor.async_accept(
        [self = shared_from_this()](const std::error_code& ec, http_detail::tcp::socket socket) {
            self->on_accept(ec, std::move(socket));
        });
}

void HttpServer::Impl::on_accept(const std::error_code& ec, http_detail::tcp::socket socket) {
    if (closed) return;
    if (ec) {
        // Out of file descriptors and the like: try again shortly rather than spin.
        retry_timer.expires_after(std::chrono::milliseconds(50));
        retry_timer.async_wait([self = shared_from_this()](const std::error_code& e) {
            if (!e) self->accept();
        });
        return;
    }
    if (connections.size() >= options.max_connections) {
        refuse(std::move(socket));
    } else {
        std::uint64_t id = next_connection_id++;
        auto c =
            std::make_shared<http_detail::Connection>(shared_from_this(), std::move(socket), id);
        connections.emplace(id, c);
        stats.connections_accepted++;
        stats.connections_open++;
        c->pump();
    }
    accept();
}

// Over the connection limit: one best-effort non-blocking write of a 503, then close. No
// buffering, no timers: a flood of connections costs nothing beyond the accept.
void HttpServer::Impl::refuse(http_detail::tcp::socket socket) {
    stats.connections_refused++;
    stats.responses_by_class[5]++;
    HttpResponse r =
        HttpResponse::error(503, "too_many_connections", "the server is at its connection limit");
    std::string bytes = http_detail::serialize(r, false, true);
    std::error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(asio::buffer(bytes), ignored);
    socket.shutdown(http_detail::tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
}

void HttpServer::Impl::schedule_sweep() {
    if (closed) return;
    auto shortest = std::min(options.read_timeout, options.handler_timeout);
    auto period =
        std::clamp(shortest / 4, std::chrono::milliseconds(5), std::chrono::milliseconds(250));
    sweep_timer.expires_after(period);
    sweep_timer.async_wait([self = shared_from_this()](const std::error_code& ec) {
        if (ec || self->closed) return;
        auto now = http_detail::Clock::now();
        std::vector<std::shared_ptr<http_detail::Connection>> all;
        all.reserve(self->connections.size());
        for (auto& [id, c] : self->connections)
            all.push_back(c);
        for (auto& c : all)
            c->check_deadlines(now);
        self->schedule_sweep();
    });
}

void HttpServer::Impl::forget(std::uint64_t id) {
    if (connections.erase(id)) stats.connections_open--;
}

void HttpServer::Impl::close() {
    if (closed) return;
    closed = true;
    std::error_code ignored;
    acceptor.close(ignored);
    sweep_timer.cancel();
    retry_timer.cancel();
    std::vector<std::shared_ptr<http_detail::Connection>> all;
    for (auto& [id, c] : connections)
        all.push_back(c);
    for (auto& c : all)
        c->close();
    connections.clear();
}

HttpServer::HttpServer(asio::io_context& io, HttpServerOptions options)
    : impl_(std::make_shared<Impl>(io, std::move(options))) {}

HttpServer::~HttpServer() {
    close();
}

Result<void> HttpServer::route(std::string method, std::string pattern, Handler handler) {
    if (!handler) return make_error(Errc::invalid_argument, "empty handler");
    return impl_->add_route(std::move(method), std::move(pattern), std::move(handler), {});
}

Result<void> HttpServer::route_async(std::string method, std::string pattern,
                                     AsyncHandler handler) {
    if (!handler) return make_error(Errc::invalid_argument, "empty handler");
    return impl_->add_route(std::move(method), std::move(pattern), {}, std::move(handler));
}

Result<void> HttpServer::start() {
    Impl& s = *impl_;
    if (s.closed) return make_error(Errc::invalid_argument, "server is closed");
    if (s.started) return make_error(Errc::invalid_argument, "server already started");
    using tcp = http_detail::tcp;
    std::error_code ec;
    tcp::resolver resolver(s.io);
    auto endpoints = resolver.resolve(s.options.host, std::to_string(s.options.port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || endpoints.empty())
        return make_error(Errc::io_error, "cannot resolve " + s.options.host + ": " + ec.message());
    tcp::endpoint endpoint = endpoints.begin()->endpoint();
    auto failed = [&](const char* what) {
        std::error_code ignored;
        s.acceptor.close(ignored);
        return make_error(Errc::io_error, std::string(what) + " " + s.options.host + ":" +
                                              std::to_string(s.options.port) + ": " + ec.message());
    };
    s.acceptor.open(endpoint.protocol(), ec);
    if (ec) return failed("cannot open a socket for");
    s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec) return failed("cannot set SO_REUSEADDR for");
    s.acceptor.bind(endpoint, ec);
    if (ec) return failed("cannot bind");
    s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return failed("cannot listen on");
    s.port = s.acceptor.local_endpoint(ec).port();
    s.started = true;
    s.accept();
    s.schedule_sweep();
    return {};
}

std::uint16_t HttpServer::local_port() const {
    return impl_->port;
}

void HttpServer::close() {
    impl_->close();
}

HttpServerStats HttpServer::stats() const {
    const auto& a = impl_->stats;
    HttpServerStats s;
    s.connections_accepted = a.connections_accepted;
    s.connections_refused = a.connections_refused;
    s.connections_open = a.connections_open;
    s.requests = a.requests;
    s.bad_requests = a.bad_requests;
    s.timeouts = a.timeouts;
    s.handler_errors = a.handler_errors;
    for (std::size_t i = 0; i < s.responses_by_class.size(); ++i)
        s.responses_by_class[i] = a.responses_by_class[i];
    return s;
}

} // namespace popchain::api
