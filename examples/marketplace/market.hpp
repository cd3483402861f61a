// The POP Market service: members, products, charges, trades and reviews over SQLite and a
// chain reached through its nodes' HTTP API. Market::add_routes() puts the JSON API
// (docs/marketplace.md) and the web UI's files on an HttpServer.
#pragma once

#include "chain_client.hpp"
#include "db.hpp"
#include "passwords.hpp"
#include "verifier.hpp"
#include "worker_pool.hpp"

#include <popchain/api/http_server.hpp>
#include <popchain/crypto.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace popmarket {

struct MarketOptions {
    std::string chain_id;
    std::vector<popchain::ReplicaInfo> replicas; // the genesis set, for verification
    popchain::PublicKey chain_authority; // genesis's; its config transactions change the set
    std::shared_ptr<const popchain::SigningKey> authority; // signs mints; null: no charges
    std::string admin_username;
    std::uint64_t auto_approve_limit = 0; // charges up to this are approved at once; 0: never
    std::uint64_t max_charge = 1'000'000;
    std::uint64_t escrow_blocks = 1000; // the buyer may reclaim this many blocks after paying
    std::size_t key_kdf_msec = 50;      // scrypt work for wallet keys under a password
    PasswordParams passwords;
    std::chrono::seconds session_lifetime{12 * 3600};
    std::filesystem::path static_dir; // index.html, app.js, verify.js, style.css
    // Requests that sign a transaction and wait for its commit (docs/marketplace.md, "When
    // the chain is slow or down"): at most chain_workers at once (the threads of their own
    // pool), at most chain_requests_per_member of one member; each answers within about
    // commit_wait, pending (202) if the chain has not committed by then.
    std::size_t chain_workers = 4;
    std::size_t chain_requests_per_member = 2;
    std::chrono::milliseconds commit_wait{8000};
};

struct Caller;
struct Call;

class Market {
public:
    Market(Db& db, ChainClient& chain, MarketOptions options);

    // Creates the tables and gives the admin role to options.admin_username, creating that
    // member with `admin_password` when it does not exist yet.
    popchain::Result<void> setup(const std::string& admin_password);
    // `pool` runs every request that does not wait for a commit; `chain_pool` (with
    // options.chain_workers threads) the ones that do, admitted by the service's ChainGate.
    popchain::Result<void> add_routes(popchain::api::HttpServer& server, WorkerPool& pool,
                                      WorkerPool& chain_pool);

    // Resends every transaction still pending and applies what became of it; the service
    // calls it periodically so a purchase interrupted by a crash settles without a user.
    void settle_all();

    using Clock = std::chrono::steady_clock;
    using Deadline = Clock::time_point;

private:
    using Handler = std::function<popchain::api::HttpResponse(Call&)>;
    enum class Access { anyone, member, admin };

    // routes
    popchain::api::HttpResponse session(Call& c);
    popchain::api::HttpResponse signup(Call& c);
    popchain::api::HttpResponse login(Call& c);
    popchain::api::HttpResponse logout(Call& c);
    popchain::api::HttpResponse me(Call& c);
    popchain::api::HttpResponse list_products(Call& c);
    popchain::api::HttpResponse create_product(Call& c);
    popchain::api::HttpResponse product(Call& c);
    popchain::api::HttpResponse photo(Call& c);
    popchain::api::HttpResponse buy(Call& c);
    popchain::api::HttpResponse my_trades(Call& c);
    popchain::api::HttpResponse trade(Call& c);
    popchain::api::HttpResponse close_trade(Call& c, const std::string& action);
    popchain::api::HttpResponse review(Call& c);
    popchain::api::HttpResponse request_charge(Call& c);
    popchain::api::HttpResponse my_charges(Call& c);
    popchain::api::HttpResponse admin_charges(Call& c);
    popchain::api::HttpResponse decide_charge(Call& c, bool approve);
    popchain::api::HttpResponse seller_profile(Call& c);
    popchain::api::HttpResponse chain_status(Call& c);
    popchain::api::HttpResponse chain_trust_root(Call& c);
    popchain::api::HttpResponse chain_blocks(Call& c);
    popchain::api::HttpResponse chain_block(Call& c);
    popchain::api::HttpResponse chain_tx(Call& c);
    popchain::api::HttpResponse chain_address(Call& c);

    // sessions and callers
    std::optional<Caller> caller_of(const popchain::api::HttpRequest& r);
    popchain::api::HttpResponse start_session(std::int64_t member_id,
                                              const popchain::SigningKey& key, int status);
    popchain::SigningKey caller_key(const Caller& caller);

    // transactions the service signs
    std::timed_mutex& signer_lock(const std::string& address);
    // The signer's lock, waited for until `deadline`: then 429, nothing done.
    std::unique_lock<std::timed_mutex> lock_signer(const std::string& address, Deadline deadline);
    void settle_signer(const std::string& address, Deadline deadline);
    std::uint64_t next_nonce(const std::string& address);
    void record_tx(const popchain::Tx& tx);
    // A null deadline: send without waiting for the commit (reads and the settle loop).
    std::string push_tx(const std::string& txid, std::optional<Deadline> deadline);
    std::string settle_tx(const std::string& txid, std::optional<Deadline> deadline);
    void tx_final(const std::string& txid, bool committed, const std::string& error);
    std::string approve_charge(std::int64_t charge_id, const std::string& by, Deadline deadline);

    // reading the chain
    std::uint64_t balance_of(const std::string& address);
    std::uint64_t chain_height();
    nlohmann::json trade_json(const DbRow& row);
    nlohmann::json trust_profile(const popchain::Address& seller);

    Db& db_;
    ChainClient& chain_;
    Verifier verifier_;
    MarketOptions options_;
    nlohmann::json trust_root_; // the genesis set, fixed at start (GET /api/chain/trust-root)
    std::map<std::string, std::string> static_files_;
    std::mutex locks_mutex_;
    std::map<std::string, std::unique_ptr<std::timed_mutex>> signer_locks_;
    ChainGate chain_gate_;
    std::string dummy_hash_; // checked when a username is unknown, so timing tells nothing
};

} // namespace popmarket
