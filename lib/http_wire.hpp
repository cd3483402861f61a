// Private to lib/: what the HTTP server and client share about the wire format. The parsing
// itself is http_parser's (libhttp-parser-dev); this is only the glue around it.
#pragma once

#include <popchain/api/http.hpp>

#include <string>
#include <string_view>

namespace popchain::api::wire {

// A header name or value a handler set that would break the message framing (CR, LF, NUL, or
// a name that is not an HTTP token) is dropped rather than written: response splitting.
bool valid_header_name(std::string_view name);
bool valid_header_value(std::string_view value);
// Method names are HTTP tokens of upper-case letters ("GET", "POST", "M-SEARCH" is not ours).
bool valid_method(std::string_view method);

// Appends header lines for `headers`, skipping those the caller frames itself
// (Content-Length, Transfer-Encoding, Connection, and for requests Host) and invalid ones.
void append_headers(std::string& out, const Headers& headers);

} // namespace popchain::api::wire
