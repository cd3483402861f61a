// A networked node: one pBFT Replica with its SqliteStore (chain.db), SqliteJournal
// (journal.db) and AsioTransport, all driven by one asio::io_context (docs/node.md).
//
// Configuration is a JSON file (NodeConfig below). Unknown fields are refused, so a misspelt
// field is an error rather than a silently ignored default. Relative paths resolve against
// the directory of the config file.
//
//   {
//     "id": 0,
//     "data_dir": "data",                  // chain.db and journal.db live here
//     "genesis": "../genesis.json",
//     "key_file": "replica.key",           // encrypted PKCS#8 PEM (SigningKey::encrypted_pem)
//     "passphrase_file": "../passphrase",  // optional; else env POPCHAIN_PASSPHRASE
//     "listen": "127.0.0.1:7000",          // replicas and clients connect here
//     "accept_clients": true,              // client ids >= net::first_client_id
//     "api": "127.0.0.1:7100",             // optional: serve the HTTP API (docs/api.md)
//     "status_interval_ms": 5000,          // periodic status log line; 0 = none
//     "application": "noop",               // optional: the built-in application to run
//     "fsync": true,                       // false: never wait for the disk (see below)
//     "storage": "sqlite",                 // or "memory" (see below)
//     "replica": { "max_block_txs": 1000, "request_timeout_ms": 1000, ... }
//   }
//
// The passphrase file is for local testnets only: it sits next to the encrypted key, so on
// its own it protects nothing. A production node takes its passphrase from the environment
// (or a secret manager that sets it) and keeps only the encrypted key on disk.
//
// Peers. The transport's directory starts as the genesis replica set (each ReplicaInfo's
// `endpoint` is "host:port"). After every committed block the node compares the ledger's
// replica set and the replica's current voting set with the directory: new or changed
// members are set_peer'd, ids in neither set are removed. A replica leaving the set keeps
// its entry until the replica itself stops counting it (it certifies its last checkpoint).
// The network id of the handshake is the genesis block hash, so nodes of other chains are
// refused.
//
// Threads. Everything (replica, transport, store, timers, signals) runs on the thread that
// calls run(); nothing here takes a lock. Only stop() and store() may be used from other
// threads (store(): SqliteStore is thread-safe). Signature checks run inline on that thread
// today. A verification pool would sit between the transport and the replica: the node
// would hand envelopes and client submits to worker threads for their signature checks and
// post the verified ones back to the io_context, so the replica still sees one ordered
// stream of inputs on one thread.
//
// HTTP API hook. An API object attaches to the node through on_started(): the callback runs
// on the io_context's thread once the node is up, with the node, so it can open its own
// acceptor on io_context() and read status(), replica() and store(), and call submit(), all
// on that thread.
#pragma once

#include <popchain/pbft/config.hpp>
#include <popchain/result.hpp>
#include <popchain/store.hpp>
#include <popchain/transaction.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asio {
class io_context;
}

namespace popchain {

class Application;
namespace pbft {
class Replica;
}

// "host:port". The host is a name or a numeric address; an IPv6 address is written in
// brackets ("[::1]:7000"). The port must be 1..65535.
struct Endpoint {
    std::string host;
    std::uint16_t port = 0;
    std::string to_string() const;
    static Result<Endpoint> parse(std::string_view text);
    friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct NodeConfig {
    std::uint32_t id = 0;
    std::filesystem::path data_dir;
    std::filesystem::path genesis_file;
    std::filesystem::path key_file;
    // Where the key's passphrase comes from: this file (its first line) when set, otherwise
    // the environment variable POPCHAIN_PASSPHRASE.
    std::optional<std::filesystem::path> passphrase_file;
    Endpoint listen;
    bool accept_clients = true;
    std::optional<Endpoint> api; // serve the HTTP API (docs/api.md) here; none if absent
    bool dev_wallets = false;    // POST /makeWallet on the API (local/dev chains only)
    std::uint64_t status_interval_ms = 5000;
    // The application that executes `command` transactions (application.hpp): "" for none
    // (commands are ordered only) or "noop" (NoopApplication). Node::open may be given an
    // application object instead.
    std::string application;
    // False: blocks and promises are committed to SQLite's write-ahead log (so in the
    // kernel's page cache) and said at once, with no fdatasync. A killed node process loses
    // nothing; a power failure or OS crash can lose this node's last blocks and votes, and a
    // replica that lost votes may vote again differently (pBFT then holds only while at most
    // f replicas lost theirs). For benchmarks and throwaway testnets (docs/node.md).
    bool fsync = true;
    // "sqlite": chain.db in data_dir holds the blocks, the state and the journal.
    // "memory": nothing is written to disk, and a restarted node starts from genesis with no
    // promises kept (it catches up by state transfer and may vote again differently, so
    // pBFT holds only while at most f replicas restarted so). For measurements that leave
    // the disk out ("disk off"), and tests.
    std::string storage = "sqlite";
    pbft::ReplicaConfig replica;

    // Parses the JSON text; relative paths are resolved against `base_dir`. Errors are
    // Errc::invalid_argument naming the field ("config: unknown field \"x\"").
    static Result<NodeConfig> from_json(std::string_view text,
                                        const std::filesystem::path& base_dir);
    // Reads and parses `file` (relative paths against its directory).
    static Result<NodeConfig> load(const std::filesystem::path& file);
    // The JSON form, paths as given (absolute after from_json()).
    std::string to_json() const;
};

// The passphrase for `config`: the first line of passphrase_file, or POPCHAIN_PASSPHRASE.
Result<std::string> read_passphrase(const NodeConfig& config);

struct NodeStatus {
    std::uint32_t id = 0;
    std::uint64_t height = 0;
    std::uint64_t view = 0;
    bool view_active = true;
    std::uint32_t primary = 0;
    std::size_t peers = 0;           // other replicas in the directory
    std::size_t peers_connected = 0; // ... with an authenticated outbound connection
    std::size_t mempool = 0;
    std::uint64_t stable_seq = 0;
};

class Node {
public:
    // One event per call, without a trailing newline, on the node's thread (docs/node.md
    // lists the events). The node never writes to stderr itself: the caller chooses.
    using LogFn = std::function<void(std::string_view line)>;
    using StartedFn = std::function<void(Node&)>;

    // Loads the genesis and the key, opens the store and journal in data_dir (created if
    // missing), binds the listening port and builds the replica. Nothing runs until run().
    // Errors name what failed: a missing file, a wrong passphrase, a key that is not this
    // replica's, a store of another chain, a data_dir another node holds, a port in use.
    // `application`, when given, executes the chain's commands in place of the one named by
    // config.application (an embedding program's own).
    static Result<std::unique_ptr<Node>> open(NodeConfig config, LogFn log = {},
                                              std::unique_ptr<Application> application = {});
    ~Node();
    Node(const Node&) = delete;
    Node& operator=(const Node&) = delete;

    // Runs the io_context on the calling thread until stop() or, with handle_signals,
    // SIGTERM or SIGINT; then closes the transport and releases the replica, the journal
    // and the store (later calls to replica() or store() are invalid). Call once.
    // Fails (io_error) when the node stopped by itself because the replica halted after a
    // failed store or journal write.
    Result<void> run(bool handle_signals = true);
    // Thread-safe; the node shuts down as soon as its thread gets to it.
    void stop();

    // Call before run(): `fn` runs on the io_context's thread as the first thing run() does,
    // after the node logged that it started and before it handles messages.
    void on_started(StartedFn fn);

    // ---- for the HTTP API (and tests); on the io_context's thread unless noted ----
    asio::io_context& io_context();
    const NodeConfig& config() const { return config_; }
    const pbft::Replica& replica() const;
    const BlockStore& store() const; // thread-safe
    // Admits a transaction as a client request would (mempool, forwarded to the primary).
    Result<void> submit(const Tx& tx);
    NodeStatus status() const;
    // The bound replica/client port (useful when listen.port was 0).
    std::uint16_t listen_port() const;
    // The bound HTTP API port (the ephemeral one if the config said port 0); 0 without API.
    std::uint16_t api_port() const;

private:
    struct Impl;
    Node(NodeConfig config, std::unique_ptr<Impl> impl);
    NodeConfig config_;
    std::unique_ptr<Impl> impl_;
};

} // namespace popchain
