#include <popchain/api/http_server.hpp>
#include <popchain/api/node_api.hpp>
#include <popchain/application.hpp>
#include <popchain/genesis.hpp>
#include <popchain/hex.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/net/asio_transport.hpp>
#include <popchain/node.hpp>
#include <popchain/pbft/journal.hpp>
#include <popchain/pbft/replica.hpp>
#include <popchain/sqlite_store.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace popchain {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- Endpoint

std::string Endpoint::to_string() const {
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
    auto bad = [&](const char* why) {
        return make_error(Errc::invalid_argument,
                          "endpoint \"" + std::string(text) + "\": " + why + " (want host:port)");
    };
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    std::string_view host = text.substr(0, colon);
    const std::string_view port = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    else if (host.find(':') != std::string_view::npos)
        return bad("an IPv6 address must be in brackets");
    if (host.empty()) return bad("empty host");
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535)
        return bad("port must be 1..65535");
    return Endpoint{std::string(host), static_cast<std::uint16_t>(value)};
}

// ---------------------------------------------------------------- NodeConfig

namespace {

Error config_error(std::string what) {
    return make_error(Errc::invalid_argument, "config: " + std::move(what));
}

Result<void> only_keys(const json& obj, std::initializer_list<const char*> allowed,
                       const std::string& where) {
    for (const auto& item : obj.items()) {
        const std::string& key = item.key();
        if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; }))
            return config_error("unknown field \"" + key + "\"" + where);
    }
    return {};
}

Result<std::uint64_t> uint_of(const json& obj, const char* name, std::uint64_t max,
                              const std::string& where = {}) {
    const json& v = obj.at(name);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() > max)
        return config_error(std::string(name) + where + " must be an integer in 0.." +
                            std::to_string(max));
    return v.get<std::uint64_t>();
}

Result<std::string> string_of(const json& obj, const char* name) {
    const json& v = obj.at(name);
    if (!v.is_string() || v.get<std::string>().empty())
        return config_error(std::string(name) + " must be a non-empty string");
    return v.get<std::string>();
}

fs::path resolve(const fs::path& base, const std::string& p) {
    const fs::path path(p);
    return path.is_absolute() ? path : (base / path).lexically_normal();
}

Result<void> parse_replica_overrides(const json& obj, pbft::ReplicaConfig& rc) {
    if (!obj.is_object()) return config_error("replica must be an object");
    struct Field {
        const char* name;
        std::uint64_t* millis;
        std::uint32_t* count;
    };
    const Field fields[] = {
        {"max_block_txs", nullptr, &rc.max_block_txs},
        {"max_batch_delay_ms", &rc.max_batch_delay_ms, nullptr},
        {"checkpoint_interval", nullptr, &rc.checkpoint_interval},
        {"watermark_window", nullptr, &rc.watermark_window},
        {"request_timeout_ms", &rc.request_timeout_ms, nullptr},
        {"max_view_change_timeout_ms", &rc.max_view_change_timeout_ms, nullptr},
        {"retransmit_ms", &rc.retransmit_ms, nullptr},
        {"fetch_timeout_ms", &rc.fetch_timeout_ms, nullptr},
    };
    for (const auto& item : obj.items()) {
        const auto* f = std::find_if(std::begin(fields), std::end(fields),
                                     [&](const Field& x) { return item.key() == x.name; });
        if (f == std::end(fields))
            return config_error("unknown field \"" + item.key() + "\" in replica");
        auto v = uint_of(obj, f->name, f->count ? 0xffffffffull : 0xffffffffffffull, " (replica)");
        if (!v) return v.error();
        if (f->count)
            *f->count = static_cast<std::uint32_t>(*v);
        else
            *f->millis = *v;
    }
    // The bounds that do not depend on the cluster size; Replica::create checks again.
    if (auto ok = rc.validate(1); !ok) return config_error("replica: " + ok.error().detail);
    return {};
}

Result<std::string> read_text(const fs::path& file, const char* what) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
        return make_error(Errc::not_found, std::string(what) + " " + file.string() + " not found");
    std::ifstream in(file, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in && !in.eof())
        return make_error(Errc::io_error, std::string("cannot read ") + what + " " + file.string());
    return text.str();
}

} // namespace

Result<NodeConfig> NodeConfig::from_json(std::string_view text, const fs::path& base_dir) {
    const json doc = json::parse(text.begin(), text.end(), nullptr, false);
    if (doc.is_discarded()) return config_error("not valid JSON");
    if (!doc.is_object()) return config_error("must be a JSON object");
    if (auto ok = only_keys(doc,
                            {"id", "data_dir", "genesis", "key_file", "passphrase_file", "listen",
                             "accept_clients", "api", "dev_wallets", "status_interval_ms",
                             "application", "fsync", "storage", "replica"},
                            "");
        !ok)
        return ok.error();
    for (const char* required : {"id", "data_dir", "genesis", "key_file", "listen"})
        if (!doc.contains(required))
            return config_error(std::string("missing field \"") + required + "\"");

    NodeConfig c;
    // Ids from first_client_id up are clients' (net/transport.hpp).
    auto id = uint_of(doc, "id", net::first_client_id - 1);
    if (!id) return id.error();
    c.id = static_cast<std::uint32_t>(*id);
    for (auto [name, target] :
         {std::pair{"data_dir", &c.data_dir}, std::pair{"genesis", &c.genesis_file},
          std::pair{"key_file", &c.key_file}}) {
        auto s = string_of(doc, name);
        if (!s) return s.error();
        *target = resolve(base_dir, *s);
    }
    if (doc.contains("passphrase_file")) {
        auto s = string_of(doc, "passphrase_file");
        if (!s) return s.error();
        c.passphrase_file = resolve(base_dir, *s);
    }
    auto listen = string_of(doc, "listen");
    if (!listen) return listen.error();
    auto ep = Endpoint::parse(*listen);
    if (!ep) return config_error("listen: " + ep.error().detail);
    c.listen = *ep;
    if (doc.contains("accept_clients")) {
        if (!doc["accept_clients"].is_boolean())
            return config_error("accept_clients must be true or false");
        c.accept_clients = doc["accept_clients"].get<bool>();
    }
    if (doc.contains("api")) {
        auto s = string_of(doc, "api");
        if (!s) return s.error();
        auto api = Endpoint::parse(*s);
        if (!api) return config_error("api: " + api.error().detail);
        c.api = *api;
    }
    if (doc.contains("dev_wallets")) {
        if (!doc["dev_wallets"].is_boolean())
            return config_error("dev_wallets must be true or false");
        c.dev_wallets = doc["dev_wallets"].get<bool>();
    }
    if (doc.contains("status_interval_ms")) {
        auto v = uint_of(doc, "status_interval_ms", 86'400'000);
        if (!v) return v.error();
        c.status_interval_ms = *v;
    }
    if (doc.contains("application")) {
        auto s = string_of(doc, "application");
        if (!s) return s.error();
        if (*s != "noop")
            return config_error("application \"" + *s + "\" is not built in (known: \"noop\")");
        c.application = *s;
    }
    if (doc.contains("storage")) {
        auto s = string_of(doc, "storage");
        if (!s) return s.error();
        if (*s != "sqlite" && *s != "memory")
            return config_error("storage must be \"sqlite\" or \"memory\"");
        c.storage = *s;
    }
    if (doc.contains("fsync")) {
        if (!doc["fsync"].is_boolean()) return config_error("fsync must be true or false");
        c.fsync = doc["fsync"].get<bool>();
    }
    if (doc.contains("replica"))
        if (auto ok = parse_replica_overrides(doc["replica"], c.replica); !ok) return ok.error();
    return c;
}

Result<NodeConfig> NodeConfig::load(const fs::path& file) {
    auto text = read_text(file, "config file");
    if (!text) return text.error();
    auto c = from_json(*text, fs::absolute(file).parent_path());
    if (!c) return make_error(c.code(), file.string() + ": " + c.error().detail);
    return c;
}

std::string NodeConfig::to_json() const {
    json doc = {{"id", id},
                {"data_dir", data_dir.string()},
                {"genesis", genesis_file.string()},
                {"key_file", key_file.string()},
                {"listen", listen.to_string()},
                {"accept_clients", accept_clients},
                {"status_interval_ms", status_interval_ms}};
    if (passphrase_file) doc["passphrase_file"] = passphrase_file->string();
    if (api) doc["api"] = api->to_string();
    if (dev_wallets) doc["dev_wallets"] = true;
    if (!application.empty()) doc["application"] = application;
    if (!fsync) doc["fsync"] = false;
    if (storage != "sqlite") doc["storage"] = storage;
    doc["replica"] = {{"max_block_txs", replica.max_block_txs},
                      {"max_batch_delay_ms", replica.max_batch_delay_ms},
                      {"checkpoint_interval", replica.checkpoint_interval},
                      {"watermark_window", replica.watermark_window},
                      {"request_timeout_ms", replica.request_timeout_ms},
                      {"max_view_change_timeout_ms", replica.max_view_change_timeout_ms},
                      {"retransmit_ms", replica.retransmit_ms},
                      {"fetch_timeout_ms", replica.fetch_timeout_ms}};
    return doc.dump(2) + "\n";
}

Result<std::string> read_passphrase(const NodeConfig& config) {
    std::string pass;
    if (config.passphrase_file) {
        auto text = read_text(*config.passphrase_file, "passphrase file");
        if (!text) return text.error();
        pass = text->substr(0, text->find('\n'));
        if (!pass.empty() && pass.back() == '\r') pass.pop_back();
    } else if (const char* env = std::getenv("POPCHAIN_PASSPHRASE")) {
        pass = env;
    } else {
        return make_error(
            Errc::invalid_argument,
            "no passphrase: set passphrase_file in the config or POPCHAIN_PASSPHRASE");
    }
    if (pass.empty()) return make_error(Errc::invalid_argument, "the passphrase is empty");
    return pass;
}

// ---------------------------------------------------------------- Node

// Widens the replica's group commit (Replica::begin_batch) from one message to every message
// the io_context delivers in one pass: the first message opens a batch and posts its end
// behind the handlers already queued. Each input otherwise costs its own journal sync before
// its votes may leave, and with many blocks in flight the syncs (an fsync each) bound the
// block rate; grouped, one sync covers all the messages that arrived together. Messages wait
// at most for the handlers that were ready anyway.
class GroupingReceiver final : public net::Receiver {
public:
    GroupingReceiver(asio::io_context& io, pbft::Replica& replica) : io_(io), replica_(replica) {}
    void on_message(net::NodeId from, ByteView message) override {
        if (!open_) {
            open_ = true;
            replica_.begin_batch();
            // Not run if the node stops first: the replica is then released with the batch
            // open, so what it held is dropped unsent, as in a crash before the sync.
            asio::post(io_, [this] {
                open_ = false;
                replica_.end_batch();
            });
        }
        replica_.on_message(from, message);
    }

private:
    asio::io_context& io_;
    pbft::Replica& replica_;
    bool open_ = false;
};

// Waits for the disk on a thread of its own (SqliteStore::Durability::at_flush), so the
// replica goes on handling messages while a batch's commit reaches the disk; the batch's
// messages and callbacks (the replica's releases) then run on the io_context, in order. One
// fsync covers every release that arrived while the previous one ran, so the syncs group
// themselves under load. A failed fsync drops every release from then on and reports the
// error once, on the io_context.
class DiskSyncer {
public:
    using FailFn = std::function<void(const Error&)>;
    DiskSyncer(asio::io_context& io, SqliteStore& store, FailFn on_failure)
        : io_(io), store_(store), on_failure_(std::move(on_failure)), thread_([this] { loop(); }) {}
    DiskSyncer(const DiskSyncer&) = delete;
    DiskSyncer& operator=(const DiskSyncer&) = delete;
    // Pending releases are dropped, as in a crash before their fsync.
    ~DiskSyncer() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
        thread_.join();
    }

    void submit(pbft::Replica::ReleaseFn release) {
        {
            std::lock_guard lock(mutex_);
            if (failed_) return;
            pending_.push_back(std::move(release));
        }
        wake_.notify_one();
    }

private:
    void loop() {
        for (;;) {
            std::vector<pbft::Replica::ReleaseFn> batch;
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stopping_ || !pending_.empty(); });
                if (stopping_) return;
                batch.swap(pending_);
            }
            // Every release in the batch was submitted after its commit returned, so this
            // fsync, which starts later, covers all of them.
            auto flushed = store_.flush_to_disk();
            if (!flushed) {
                {
                    std::lock_guard lock(mutex_);
                    failed_ = true;
                    pending_.clear();
                }
                asio::post(io_, [fail = on_failure_, error = flushed.error()] { fail(error); });
                return;
            }
            asio::post(io_, [batch = std::move(batch)] {
                for (const auto& release : batch)
                    release();
            });
        }
    }

    asio::io_context& io_;
    SqliteStore& store_;
    FailFn on_failure_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::vector<pbft::Replica::ReleaseFn> pending_;
    bool stopping_ = false;
    bool failed_ = false;
    std::thread thread_; // last: started once the members it uses exist
};

namespace {

// An open file descriptor, closed with the object.
class FileLock {
public:
    FileLock() = default;
    explicit FileLock(int fd) : fd_(fd) {}
    FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    FileLock& operator=(FileLock&& other) noexcept {
        if (this != &other) {
            if (fd_ >= 0) ::close(fd_);
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~FileLock() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool valid() const { return fd_ >= 0; }
    int fd() const { return fd_; }

private:
    int fd_ = -1;
};

} // namespace

struct Node::Impl {
    FileLock data_dir_lock; // first in, last out: held while anything below uses data_dir
    asio::io_context io{1};
    LogFn log;
    std::uint32_t id = 0;
    Hash256 genesis_hash;
    std::optional<SigningKey> key; // the replica keeps a reference: declared before it
    std::unique_ptr<BlockStore> store;
    SqliteStore* sqlite = nullptr; // the store, when it is chain.db (storage "sqlite")
    std::unique_ptr<pbft::Journal> journal;
    std::unique_ptr<DiskSyncer> syncer; // uses the store: released before it
    std::unique_ptr<net::AsioTransport> transport;
    std::unique_ptr<Application> application; // the replica borrows it
    std::unique_ptr<pbft::Replica> replica;
    std::unique_ptr<GroupingReceiver> receiver; // feeds the replica
    // After the replica: the API borrows it, so it goes first.
    std::unique_ptr<api::HttpServer> http;
    std::unique_ptr<api::NodeApi> api;
    std::map<net::NodeId, net::PeerAddress> directory; // what the transport was told
    std::vector<ReplicaInfo> seen_voting, seen_ledger; // the sets it was derived from
    std::vector<StartedFn> started;
    std::unique_ptr<asio::signal_set> signals;
    std::unique_ptr<asio::steady_timer> monitor;
    std::uint64_t status_interval_ms = 0;
    bool stopping = false, ran = false;
    std::optional<Error> failure; // why run() ended, when it was not asked to

    // What the monitor last saw, to log changes once.
    std::uint64_t seen_view = 0, seen_view_changes = 0, seen_transfers = 0, seen_transferred = 0,
                  seen_membership = 0;
    bool seen_active = true;
    std::chrono::steady_clock::time_point last_status;

    void say(const std::string& line) const {
        if (log) log(line);
    }
    // Directory peers with an authenticated outbound connection.
    std::size_t peers_connected() const {
        std::size_t n = 0;
        for (const auto& [rid, addr] : directory)
            if (transport->connected(rid)) ++n;
        return n;
    }
    void sync_directory();
    void watch();
    void arm_monitor();
    void shutdown(const std::string& why);
};

void Node::Impl::sync_directory() {
    // Union of the ledger's set (may already list newcomers) and the voting set (may still
    // list a replica that is leaving); the ledger's entry wins for the address.
    std::map<net::NodeId, const ReplicaInfo*> wanted;
    for (const auto& r : replica->replica_set())
        wanted[r.id] = &r;
    for (const auto& r : replica->ledger().state().replicas)
        wanted[r.id] = &r;
    for (const auto& [rid, info] : wanted) {
        if (rid == id) continue;
        auto ep = Endpoint::parse(info->endpoint);
        if (!ep) {
            say("replica " + std::to_string(rid) + " has no usable endpoint (" + ep.error().detail +
                "); not dialled");
            continue;
        }
        net::PeerAddress addr{ep->host, ep->port, info->key};
        const auto it = directory.find(rid);
        if (it != directory.end() && it->second.host == addr.host && it->second.port == addr.port &&
            it->second.key == addr.key)
            continue;
        if (auto ok = transport->set_peer(rid, addr); !ok) {
            say("replica " + std::to_string(rid) + ": " + ok.error().message());
            continue;
        }
        if (it != directory.end())
            say("peer " + std::to_string(rid) + " now at " + ep->to_string());
        directory[rid] = addr;
    }
    seen_voting = replica->replica_set();
    seen_ledger = replica->ledger().state().replicas;
    for (auto it = directory.begin(); it != directory.end();) {
        if (wanted.count(it->first)) {
            ++it;
            continue;
        }
        say("peer " + std::to_string(it->first) + " left the replica set");
        transport->remove_peer(it->first);
        it = directory.erase(it);
    }
}

// Logs what changed since the last look: view changes, new views, state transfers, and a
// status line every status_interval_ms.
void Node::Impl::watch() {
    const auto& st = replica->stats();
    // Polled, so a view change and the new view may both have happened since the last look.
    if (st.view_changes != seen_view_changes)
        say("view change: this node left view " + std::to_string(seen_view) + " (" +
            std::to_string(st.view_changes - seen_view_changes) + " view change(s) started)");
    if (replica->view() != seen_view || (replica->view_active() && !seen_active))
        if (replica->view_active())
            say("view " + std::to_string(replica->view()) + " installed, primary " +
                std::to_string(replica->primary()));
    if (st.transferred_blocks != seen_transferred)
        say("state transfer: executed " + std::to_string(st.transferred_blocks - seen_transferred) +
            " fetched blocks, now at height " + std::to_string(replica->height()) +
            (st.state_transfers != seen_transfers ? " (certified checkpoint reached)" : ""));
    if (st.membership_changes != seen_membership)
        say("replica set switched: " + std::to_string(replica->replica_set().size()) +
            " members, this node " + (replica->voting() ? "votes" : "does not vote"));
    seen_transferred = st.transferred_blocks;
    seen_membership = st.membership_changes;
    seen_view_changes = st.view_changes;
    seen_view = replica->view();
    seen_active = replica->view_active();
    seen_transfers = st.state_transfers;
    if (st.store_errors + st.journal_errors > 0) {
        // The replica stopped executing (or sending) to keep its promises; a process that
        // carried on would only look alive. Restarting reopens both files.
        failure = make_error(Errc::io_error, std::string("the replica halted after a ") +
                                                 (st.store_errors ? "store" : "journal") +
                                                 " write failed; restart the node");
        say(failure->message());
        shutdown("replica halted");
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (status_interval_ms > 0 &&
        now - last_status >= std::chrono::milliseconds(status_interval_ms)) {
        last_status = now;
        const std::size_t connected = peers_connected();
        say("status: height " + std::to_string(replica->height()) + " view " +
            std::to_string(replica->view()) + " primary " + std::to_string(replica->primary()) +
            " peers " + std::to_string(connected) + "/" + std::to_string(directory.size()) +
            " mempool " + std::to_string(replica->pending()));
    }
}

void Node::Impl::arm_monitor() {
    monitor->expires_after(std::chrono::milliseconds(250));
    monitor->async_wait([this](const std::error_code& ec) {
        if (ec || stopping) return;
        watch();
        arm_monitor();
    });
}

void Node::Impl::shutdown(const std::string& why) {
    if (stopping) return;
    stopping = true;
    say("stopping (" + why + ") at height " + std::to_string(replica->height()));
    if (signals) {
        std::error_code ignored;
        signals->cancel(ignored);
    }
    monitor->cancel();
    if (http) http->close();
    transport->close(); // cancels the replica's timers too
    // Whatever is left in the queue is cancelled handlers; nothing needs to run any more.
    io.stop();
}

Node::Node(NodeConfig config, std::unique_ptr<Impl> impl)
    : config_(std::move(config)), impl_(std::move(impl)) {}

Node::~Node() {
    if (!impl_) return;
    // Replica before its transport, store and journal (it borrows them).
    impl_->syncer.reset();
    impl_->replica.reset();
    if (impl_->transport) impl_->transport->close();
    impl_->transport.reset();
    impl_->journal.reset();
    impl_->store.reset();
}

namespace {

// An exclusive lock on <data_dir>/LOCK, held while the returned descriptor is open (the
// kernel drops it when the process dies, so a killed node leaves no stale lock).
Result<FileLock> lock_data_dir(const fs::path& data_dir) {
    const fs::path file = data_dir / "LOCK";
    FileLock lock(::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock.valid())
        return make_error(Errc::io_error, file.string() + ": " + std::strerror(errno));
    if (::flock(lock.fd(), LOCK_EX | LOCK_NB) != 0)
        return make_error(Errc::io_error,
                          file.string() + ": " +
                              (errno == EWOULDBLOCK ? std::string("another node is running on "
                                                                  "this data_dir")
                                                    : std::string(std::strerror(errno))));
    return lock;
}

// Nodes before the journal moved into chain.db kept it in journal.db. Its promises must
// survive the upgrade (a replica that forgot a vote could vote differently for the same
// slot), so they are copied into the new journal, made durable, and only then is the old
// file removed. A crash in between leaves both with the same state, which is accepted on the
// next start; two different non-empty states are refused.
Result<void> adopt_old_journal(const fs::path& old_file, pbft::Journal& journal,
                               SqliteStore& store) {
    std::error_code ec;
    if (!fs::exists(old_file, ec)) return {};
    auto fail = [&](const Error& e) {
        return make_error(e.code,
                          old_file.string() + " (journal of an earlier version): " + e.message());
    };
    pbft::JournalState old;
    {
        auto opened = pbft::SqliteJournal::open(old_file);
        if (!opened) return fail(opened.error());
        auto state = (*opened)->load();
        if (!state) return fail(state.error());
        old = std::move(*state);
    }
    auto current = journal.load();
    if (!current) return current.error();
    if (*current != old) {
        if (*current != pbft::JournalState{})
            return make_error(Errc::storage_corrupt, old_file.string() +
                                                         " and the journal in chain.db disagree; "
                                                         "refusing to pick one");
        pbft::write_state(old, journal);
        if (auto r = journal.sync(); !r) return fail(r.error());
        // The store commits without waiting for the disk (Durability::at_flush): the copy
        // must be on disk before the original goes.
        if (auto r = store.flush_to_disk(); !r) return fail(r.error());
    }
    for (const char* suffix : {"", "-wal", "-shm"}) {
        fs::remove(old_file.string() + suffix, ec);
        if (ec)
            return make_error(Errc::io_error,
                              "removing " + old_file.string() + suffix + ": " + ec.message());
    }
    return {};
}

// chain.db in data_dir, with the journal in it (storage "sqlite").
struct SqliteFiles {
    std::unique_ptr<SqliteStore> store;
    std::unique_ptr<pbft::SqliteJournal> journal;
};
Result<SqliteFiles> open_sqlite(const NodeConfig& config, const Hash256& genesis_hash) {
    SqliteFiles files;
    const fs::path chain_db = config.data_dir / "chain.db";
    // Group commit: the replica syncs the store once per batch of events, before anything
    // about the blocks it executed leaves (docs/node.md, "Group commit").
    auto store = SqliteStore::open(chain_db, SqliteStore::Durability::at_flush);
    if (!store) return make_error(store.code(), chain_db.string() + ": " + store.error().message());
    files.store = std::move(store).value();
    if (files.store->tip_height()) {
        auto first = files.store->block_at(0);
        if (!first || first->hash() != genesis_hash)
            return make_error(Errc::invalid_argument,
                              chain_db.string() +
                                  " holds another chain (its genesis block is "
                                  "not the one " +
                                  config.genesis_file.string() + " builds)");
    }
    // The journal shares chain.db and its commits: one fsync per batch of events.
    auto journal = pbft::SqliteJournal::open_in(*files.store);
    if (!journal)
        return make_error(journal.code(), chain_db.string() + ": " + journal.error().message());
    files.journal = std::move(journal).value();
    if (auto r = adopt_old_journal(config.data_dir / "journal.db", *files.journal, *files.store);
        !r)
        return r.error();
    return files;
}

} // namespace

Result<std::unique_ptr<Node>> Node::open(NodeConfig config, LogFn log,
                                         std::unique_ptr<Application> application) {
    auto impl = std::make_unique<Impl>();
    impl->log = std::move(log);
    impl->id = config.id;
    impl->status_interval_ms = config.status_interval_ms;

    auto genesis_text = read_text(config.genesis_file, "genesis file");
    if (!genesis_text) return genesis_text.error();
    auto genesis = Genesis::from_json(*genesis_text);
    if (!genesis)
        return make_error(genesis.code(), "genesis " + config.genesis_file.string() + ": " +
                                              genesis.error().message());
    auto built = genesis->build();
    if (!built) return make_error(built.code(), "genesis: " + built.error().message());
    impl->genesis_hash = built->block.hash();

    auto pem = read_text(config.key_file, "key file");
    if (!pem) return pem.error();
    auto pass = read_passphrase(config);
    if (!pass) return pass.error();
    auto key = SigningKey::from_encrypted_pem(*pem, *pass);
    if (!key) {
        if (key.code() == Errc::wrong_passphrase)
            return make_error(Errc::wrong_passphrase, "key file " + config.key_file.string() +
                                                          ": wrong passphrase (or a damaged file)");
        return make_error(key.code(),
                          "key file " + config.key_file.string() + ": " + key.error().message());
    }
    impl->key.emplace(std::move(key).value());
    for (const auto& r : genesis->replicas)
        if (r.id == config.id && r.key != impl->key->public_key())
            return make_error(Errc::invalid_argument,
                              "key file " + config.key_file.string() +
                                  " does not hold the key genesis lists for replica " +
                                  std::to_string(config.id));

    std::error_code ec;
    fs::create_directories(config.data_dir, ec);
    if (ec)
        return make_error(Errc::io_error,
                          "data_dir " + config.data_dir.string() + ": " + ec.message());
    // One node per data_dir: the journal in chain.db cannot lock itself against a second
    // writer (other processes may read the store while the node runs), so the node does.
    auto owner = lock_data_dir(config.data_dir);
    if (!owner) return owner.error();
    impl->data_dir_lock = std::move(*owner);
    if (config.storage == "memory") {
        // No journal: one in memory would die with the process, the only event it exists
        // for, so it would cost a copy of every block and promise and keep nothing.
        impl->store = std::make_unique<MemoryStore>();
    } else {
        auto files = open_sqlite(config, impl->genesis_hash);
        if (!files) return files.error();
        impl->sqlite = files->store.get();
        impl->store = std::move(files->store);
        impl->journal = std::move(files->journal);
    }

    net::AsioOptions options;
    options.self = config.id;
    options.key = &*impl->key;
    options.network_id = impl->genesis_hash;
    options.listen = true;
    options.listen_host = config.listen.host;
    options.listen_port = config.listen.port;
    options.accept_clients = config.accept_clients;
    auto transport = net::AsioTransport::create(impl->io, std::move(options));
    if (!transport)
        return make_error(transport.code(), "listen " + config.listen.to_string() + ": " +
                                                transport.error().message());
    impl->transport = std::move(transport).value();

    auto replica = pbft::Replica::create(config.id, *impl->key, *genesis, config.replica,
                                         *impl->transport, *impl->store, impl->journal.get());
    if (!replica) return make_error(replica.code(), "replica: " + replica.error().message());
    impl->replica = std::move(replica).value();
    if (!application && config.application == "noop")
        application = std::make_unique<NoopApplication>();
    if (application) {
        if (!genesis->params.commands.enabled())
            return make_error(Errc::invalid_argument,
                              "application: the genesis takes no commands (no \"commands\" rules)");
        if (auto ok = impl->replica->set_application(application.get()); !ok)
            return make_error(ok.code(), "application: " + ok.error().message());
        impl->application = std::move(application);
    }
    impl->receiver = std::make_unique<GroupingReceiver>(impl->io, *impl->replica);
    impl->transport->set_receiver(impl->receiver.get());
    Impl* raw = impl.get();
    if (impl->sqlite && config.fsync) {
        impl->syncer = std::make_unique<DiskSyncer>(impl->io, *impl->sqlite, [raw](const Error& e) {
            raw->failure = make_error(Errc::io_error, "the disk refused a commit (" + e.message() +
                                                          "); restart the node");
            raw->say(raw->failure->message());
            raw->shutdown("disk failure");
        });
        impl->replica->set_durability_gate(
            [syncer = impl->syncer.get()](pbft::Replica::ReleaseFn release) {
                syncer->submit(std::move(release));
            });
    } else if (impl->sqlite) {
        impl->say("fsync off: commits reach the page cache only (a power failure can lose "
                  "the last blocks and votes)");
    } else {
        impl->say("storage memory: nothing is kept across a restart");
    }
    if (config.api) {
        api::HttpServerOptions http_options;
        http_options.host = config.api->host;
        http_options.port = config.api->port;
        impl->http = std::make_unique<api::HttpServer>(impl->io, http_options);
        api::NodeApiOptions api_options;
        api_options.dev_wallets = config.dev_wallets;
        api_options.peers_connected = [raw] { return raw->peers_connected(); };
        api_options.handshake_refusals = [raw] {
            const auto& t = raw->transport->stats();
            return std::vector<std::pair<std::string, std::uint64_t>>{
                {"unknown_peer", t.handshake_unknown_peer},
                {"bad_signature", t.handshake_bad_signature},
                {"wrong_network", t.handshake_wrong_network},
                {"timeout", t.handshake_timeout},
                {"malformed", t.handshake_malformed},
                {"busy", t.refused_busy}};
        };
        auto attached = api::NodeApi::attach(*impl->http, *impl->replica, *impl->store,
                                             *impl->transport, std::move(api_options));
        if (!attached) return make_error(attached.code(), "api: " + attached.error().message());
        impl->api = std::move(attached).value();
        if (auto ok = impl->http->start(); !ok)
            return make_error(ok.code(),
                              "api " + config.api->to_string() + ": " + ok.error().message());
    }
    impl->replica->on_commit([raw](const pbft::CommittedBlock& block) {
        if (raw->api) raw->api->block_committed(block.height, block.hash, block.txids);
        // Membership changes are rare: compare the two sets with what was last applied and
        // touch the directory only when one of them moved.
        if (raw->replica->replica_set() != raw->seen_voting ||
            raw->replica->ledger().state().replicas != raw->seen_ledger)
            raw->sync_directory();
    });
    impl->sync_directory();
    impl->seen_view = impl->replica->view();
    impl->seen_view_changes = impl->replica->stats().view_changes;
    impl->monitor = std::make_unique<asio::steady_timer>(impl->io);
    return std::unique_ptr<Node>(new Node(std::move(config), std::move(impl)));
}

Result<void> Node::run(bool handle_signals) {
    Impl& m = *impl_;
    if (m.ran) return make_error(Errc::invalid_argument, "Node::run called twice");
    m.ran = true;
    if (handle_signals) {
        m.signals = std::make_unique<asio::signal_set>(m.io, SIGTERM, SIGINT);
        m.signals->async_wait([this](const std::error_code& ec, int signo) {
            if (ec) return;
            impl_->shutdown(signo == SIGTERM ? "SIGTERM" : "SIGINT");
        });
    }
    asio::post(m.io, [this] {
        Impl& s = *impl_;
        s.say("node " + std::to_string(s.id) + " started: height " +
              std::to_string(s.replica->height()) + " view " + std::to_string(s.replica->view()) +
              ", network " + to_hex(s.genesis_hash).substr(0, 16));
        s.say("listening on " + config_.listen.host + ":" +
              std::to_string(s.transport->local_port()) +
              (config_.accept_clients ? " (replicas and clients)" : " (replicas)"));
        if (s.http)
            s.say("HTTP API on " + config_.api->host + ":" + std::to_string(s.http->local_port()));
        s.last_status = std::chrono::steady_clock::now();
        s.arm_monitor();
        for (auto& fn : s.started)
            fn(*this);
    });
    m.io.run();
    if (!m.stopping) m.shutdown("io_context stopped");
    m.say("stopped");
    // Release in dependency order: the API borrows the replica, which borrows the others; the
    // syncer's releases use the replica, and the syncer uses the store.
    m.api.reset();
    m.http.reset();
    m.syncer.reset();
    m.replica.reset();
    m.transport.reset();
    m.journal.reset();
    m.store.reset();
    if (m.failure) return *m.failure;
    return {};
}

void Node::stop() {
    asio::post(impl_->io, [this] { impl_->shutdown("stop requested"); });
}

void Node::on_started(StartedFn fn) {
    impl_->started.push_back(std::move(fn));
}

asio::io_context& Node::io_context() {
    return impl_->io;
}

const pbft::Replica& Node::replica() const {
    return *impl_->replica;
}

const BlockStore& Node::store() const {
    return *impl_->store;
}

Result<void> Node::submit(const Tx& tx) {
    if (impl_->stopping || !impl_->replica)
        return make_error(Errc::invalid_argument, "the node is stopping");
    return impl_->replica->submit(tx);
}

NodeStatus Node::status() const {
    const Impl& m = *impl_;
    NodeStatus s;
    s.id = m.id;
    if (!m.replica) return s;
    s.height = m.replica->height();
    s.view = m.replica->view();
    s.view_active = m.replica->view_active();
    s.primary = m.replica->primary();
    s.peers = m.directory.size();
    s.peers_connected = m.peers_connected();
    s.mempool = m.replica->pending();
    s.stable_seq = m.replica->stable_seq();
    return s;
}

std::uint16_t Node::listen_port() const {
    return impl_->transport ? impl_->transport->local_port() : 0;
}

std::uint16_t Node::api_port() const {
    return impl_->http ? impl_->http->local_port() : 0;
}

} // namespace popchain
