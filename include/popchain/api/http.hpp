// HTTP/1.1 messages as plain values, shared by HttpServer, HttpClient and the handlers the
// node's REST API is made of. No sockets here: a handler is a function from HttpRequest to
// HttpResponse, testable without a network.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace popchain::api {

// Header names compare case-insensitively (RFC 9110 section 5.1); a transparent comparator
// so lookups by string_view do not allocate.
struct CaseInsensitiveLess {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const noexcept;
};
using Headers = std::map<std::string, std::string, CaseInsensitiveLess>;

// Query parameters and path parameters, percent-decoded. A repeated query key keeps its last
// value (the API never uses repeated keys).
using QueryParams = std::map<std::string, std::string, std::less<>>;
using PathParams = std::map<std::string, std::string, std::less<>>;

struct HttpRequest {
    std::string method; // upper case, as sent: "GET", "POST", ...
    std::string target; // the raw request target: "/v1/blocks/7?full=1"
    std::string path;   // the target's path, still percent-encoded: "/v1/blocks/7"
    QueryParams query;  // decoded: {"full": "1"}
    Headers headers;    // a header sent twice has its values joined with ", "
    std::string body;

    // The value of header `name`, any case; nullopt when absent.
    std::optional<std::string_view> header(std::string_view name) const;
    std::optional<std::string_view> query_param(std::string_view name) const;
};

struct HttpResponse {
    int status = 200;
    // Content-Length and Connection are set by the server; values set here are replaced.
    Headers headers;
    std::string body;

    std::optional<std::string_view> header(std::string_view name) const;

    // `body` serialised compactly, Content-Type: application/json.
    static HttpResponse json(int status, const nlohmann::json& body);
    // The API's error shape: {"error":{"code":"<code>","message":"<message>"}}. `code` is a
    // stable snake_case identifier clients branch on; `message` is for people: the detail,
    // without the code in front of it (an empty one is replaced by the code).
    static HttpResponse error(int status, std::string_view code, std::string_view message);
    static HttpResponse text(int status, std::string body);
};

// "Not Found" for 404, ...; "Unknown" for a status this library never sends.
const char* reason_phrase(int status) noexcept;

// Percent-decoding of one path segment or query component. `plus_is_space` for query
// strings (application/x-www-form-urlencoded). nullopt for a malformed escape ("%4", "%zz").
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

} // namespace popchain::api
