// A small blocking HTTP/1.1 client for the command-line tool and tests: one request per
// connection, on an io_context of its own, with a hard deadline for the whole exchange.
#pragma once

#include <popchain/api/http.hpp>
#include <popchain/result.hpp>

#include <chrono>
#include <cstdint>
#include <string_view>

namespace popchain::api {

class HttpClient {
public:
    // Larger responses are refused (Errc::too_large) rather than buffered.
    static constexpr std::size_t max_response_bytes = 64 * 1024 * 1024;

    // Sends `method target` to host:port and waits for the whole response, at most `timeout`
    // from the call (resolving, connecting, sending and receiving together). A non-empty
    // body without a Content-Type in `headers` is sent as application/json. Errors:
    // io_error for connection failures and the timeout (the message says which), malformed
    // for a response that is not HTTP, too_large, invalid_argument for a bad method/header.
    // An HTTP error status is not an error here: it is a response like any other.
    // The deadline cannot interrupt the system resolver: a host name whose lookup hangs can
    // make the call outlast `timeout` (numeric addresses never are looked up).
    static Result<HttpResponse>
    request(std::string_view method, std::string_view host, std::uint16_t port,
            std::string_view target, std::string_view body = {}, const Headers& headers = {},
            std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));
};

} // namespace popchain::api
