// POP Market's connection to the chain: the HTTP API of one or more nodes (docs/api.md),
// tried in turn, so a crashed node costs one timeout rather than the purchase.
#pragma once

#include <popchain/api/http.hpp>
#include <popchain/result.hpp>
#include <popchain/transaction.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace popmarket {

using nlohmann::json;

struct NodeEndpoint {
    std::string host;
    std::uint16_t port = 0;
    static popchain::Result<NodeEndpoint> parse(std::string_view text); // "host:port"
    std::string to_string() const { return host + ":" + std::to_string(port); }
};

struct NodeReply {
    int status = 0;
    json body;
};

// What became of a submitted transaction.
enum class SubmitState {
    committed,   // in a block executed by the node that answered
    pending,     // admitted, not committed within the wait
    refused,     // a node said no (4xx): bad nonce, overdraft, closed escrow...
    unreachable, // no node answered
};

struct SubmitOutcome {
    SubmitState state = SubmitState::unreachable;
    std::uint64_t height = 0;
    std::string block_hash;
    std::string error_code; // for refused
    std::string message;
};

class ChainClient {
public:
    // `timeout` bounds each read; `submit_timeout` each wait for a commit on one node, after
    // which the next node is asked (the same signed transaction, so it cannot pay twice).
    ChainClient(std::vector<NodeEndpoint> nodes, std::chrono::milliseconds timeout,
                std::chrono::milliseconds submit_timeout);

    // GET on the nodes in turn until one answers without a transport error or a 5xx.
    popchain::Result<NodeReply> get(const std::string& target);
    // The same on node `i` only (the explorer compares nodes).
    popchain::Result<NodeReply> get_from(std::size_t i, const std::string& target);
    using Clock = std::chrono::steady_clock;
    // POST /v1/txs?wait=1, moving on to the next node when one cannot be reached. Resending
    // the same signed transaction is safe: a node answers "committed" for one it has. Waits
    // for one node at most `submit_timeout`, and asks no further node once `deadline` passed
    // (the first is always asked, for at least min_attempt); a wait cut short is "unreachable",
    // and the transaction, stored by the caller, stays pending.
    SubmitOutcome submit(const popchain::Tx& tx, Clock::time_point deadline);
    // POST /v1/txs without waiting (each node at most the read timeout): admitted (pending),
    // committed already, or refused.
    SubmitOutcome send(const popchain::Tx& tx);
    static constexpr std::chrono::milliseconds min_attempt{250};
    // A node that did not answer a read in time is a suspect for suspect_for: asked after
    // the others, and for at most probe_timeout, so a hung node (one that takes connections
    // but never answers) costs a request that short wait instead of the full read timeout.
    // Its first answer clears it.
    static constexpr std::chrono::milliseconds probe_timeout{300};
    static constexpr std::chrono::milliseconds suspect_for{10'000};
    bool suspect(std::size_t i) const;

    std::size_t node_count() const { return nodes_.size(); }
    const NodeEndpoint& node(std::size_t i) const { return nodes_.at(i); }

private:
    // `deadline` null: no wait for the commit.
    SubmitOutcome post_tx(const popchain::Tx& tx, const Clock::time_point* deadline);
    // `judge`: a transport error makes the node a suspect and an answer clears it. Not for
    // waits for a commit, which a healthy node may outlast.
    popchain::Result<NodeReply> request(std::size_t i, std::string_view method,
                                        const std::string& target, const std::string& body,
                                        std::chrono::milliseconds timeout, bool judge = true);
    // The nodes from `start` on, cyclically, those that are not suspects first.
    std::vector<std::size_t> order(std::size_t start) const;
    std::vector<NodeEndpoint> nodes_;
    std::chrono::milliseconds timeout_;
    std::chrono::milliseconds submit_timeout_;
    std::atomic<std::size_t> preferred_{0}; // the node that last answered
    // Per node: until when (steady clock, ms) it is a suspect; 0 when it is not.
    std::unique_ptr<std::atomic<std::int64_t>[]> suspect_until_;
};

} // namespace popmarket
