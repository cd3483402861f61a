#include "chain_client.hpp"

#include <popchain/api/http_client.hpp>
#include <popchain/api/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace popmarket {

using popchain::Errc;
using popchain::make_error;
using popchain::Result;

Result<NodeEndpoint> NodeEndpoint::parse(std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0)
        return make_error(Errc::invalid_argument, "expected host:port, got " + std::string(text));
    unsigned port = 0;
    const auto digits = text.substr(colon + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535)
        return make_error(Errc::invalid_argument, "bad port in " + std::string(text));
    return NodeEndpoint{std::string(text.substr(0, colon)), static_cast<std::uint16_t>(port)};
}

ChainClient::ChainClient(std::vector<NodeEndpoint> nodes, std::chrono::milliseconds timeout,
                         std::chrono::milliseconds submit_timeout)
    : nodes_(std::move(nodes)), timeout_(timeout), submit_timeout_(submit_timeout),
      suspect_until_(new std::atomic<std::int64_t>[nodes_.size()]) {
    for (std::size_t i = 0; i < nodes_.size(); ++i)
        suspect_until_[i] = 0;
}

namespace {
std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               ChainClient::Clock::now().time_since_epoch())
        .count();
}
} // namespace

bool ChainClient::suspect(std::size_t i) const {
    return now_ms() < suspect_until_[i].load();
}

std::vector<std::size_t> ChainClient::order(std::size_t start) const {
    std::vector<std::size_t> healthy, suspects;
    for (std::size_t k = 0; k < nodes_.size(); ++k) {
        const std::size_t i = (start + k) % nodes_.size();
        (suspect(i) ? suspects : healthy).push_back(i);
    }
    healthy.insert(healthy.end(), suspects.begin(), suspects.end());
    return healthy;
}

Result<NodeReply> ChainClient::request(std::size_t i, std::string_view method,
                                       const std::string& target, const std::string& body,
                                       std::chrono::milliseconds timeout, bool judge) {
    const auto& n = nodes_.at(i);
    if (judge && suspect(i)) timeout = std::min(timeout, probe_timeout);
    auto r = popchain::api::HttpClient::request(method, n.host, n.port, target, body, {}, timeout);
    if (judge) suspect_until_[i] = r ? 0 : now_ms() + suspect_for.count();
    if (!r) return r.error();
    NodeReply reply;
    reply.status = r->status;
    reply.body = json::parse(r->body, nullptr, false);
    if (reply.body.is_discarded())
        return make_error(Errc::malformed, n.to_string() + " answered something not JSON");
    return reply;
}

Result<NodeReply> ChainClient::get_from(std::size_t i, const std::string& target) {
    return request(i, "GET", target, {}, timeout_);
}

Result<NodeReply> ChainClient::get(const std::string& target) {
    popchain::Error last = make_error(Errc::io_error, "no node configured");
    for (const std::size_t i : order(preferred_.load())) {
        auto r = request(i, "GET", target, {}, timeout_);
        if (r && r->status < 500) {
            preferred_ = i;
            return r;
        }
        last = r ? make_error(Errc::io_error,
                              nodes_[i].to_string() + " answered " + std::to_string(r->status))
                 : r.error();
    }
    return last;
}

SubmitOutcome ChainClient::submit(const popchain::Tx& tx, Clock::time_point deadline) {
    return post_tx(tx, &deadline);
}

SubmitOutcome ChainClient::send(const popchain::Tx& tx) {
    return post_tx(tx, nullptr);
}

SubmitOutcome ChainClient::post_tx(const popchain::Tx& tx, const Clock::time_point* deadline) {
    using std::chrono::milliseconds;
    const std::string body = popchain::api::to_json(tx).dump();
    const std::string target = deadline ? "/v1/txs?wait=1" : "/v1/txs";
    SubmitOutcome outcome;
    outcome.message = "no node could be reached";
    const std::vector<std::size_t> nodes = order(preferred_.load());
    for (std::size_t k = 0; k < nodes.size(); ++k) {
        const std::size_t i = nodes[k];
        milliseconds wait = timeout_;
        if (deadline) {
            // The node's own wait (10 s by default) is not shortened with ?wait_ms: a node
            // configured with a shorter maximum would refuse the request. The connection is
            // cut instead; the transaction is stored by the caller and resent later.
            const auto left = std::chrono::duration_cast<milliseconds>(*deadline - Clock::now());
            if (k > 0 && left < min_attempt) {
                outcome.message = "no commit within the wait; " + outcome.message;
                break;
            }
            wait = std::clamp(left, min_attempt, std::max(submit_timeout_, min_attempt));
        }
        auto r = request(i, "POST", target, body, wait, deadline == nullptr);
        if (!r || r->status >= 500) {
            outcome.message = r ? nodes_[i].to_string() + " answered " + std::to_string(r->status)
                                : r.error().message();
            std::fprintf(stderr, "popmarket: submit to %s failed (%s); trying the next node\n",
                         nodes_[i].to_string().c_str(), outcome.message.c_str());
            continue;
        }
        preferred_ = i;
        if (r->status == 200 && r->body.value("status", "") == "committed") {
            outcome.state = SubmitState::committed;
            outcome.height = r->body.value("height", std::uint64_t{0});
            outcome.block_hash = r->body.value("block_hash", "");
            return outcome;
        }
        if (r->status == 202) {
            outcome.state = SubmitState::pending;
            outcome.message = "admitted, not committed yet";
            return outcome;
        }
        outcome.state = SubmitState::refused;
        if (r->body.contains("error") && r->body["error"].is_object()) {
            outcome.error_code = r->body["error"].value("code", "refused");
            outcome.message = r->body["error"].value("message", "");
        } else {
            outcome.error_code = "refused";
        }
        return outcome;
    }
    outcome.state = SubmitState::unreachable;
    return outcome;
}

} // namespace popmarket
