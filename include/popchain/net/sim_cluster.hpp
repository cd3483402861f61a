// A whole pBFT cluster in one SimNetwork: replicas, their stores, funded wallets and a
// retransmitting client, with the checks every simulation ends with.
//
// What it owns. A SimNetwork seeded with `seed`; n replica identity keys, an authority key
// and W wallet keys, all fixed (derived from constant labels, not from the seed, so every
// seed runs the same chain identities); a Genesis (chain "popchain-sim", the n replicas with
// ids 0..n-1, every wallet funded with `balance`); one MemoryStore per replica; the Replica
// objects. Each replica is attached through a receiver shim, so its Transport exists before
// the Replica does, and the same shim takes the node's messages again after a restart.
// When `wrap` is set, the replica talks through the Transport it returns (a Byzantine
// decorator, say); it is called at creation and at every restart, and the cluster keeps
// every wrapper it was given alive until the cluster itself goes.
//
// Crash and restart. crash(id) crashes the node in the SimNetwork and destroys its Replica;
// its store and journal survive, as a disk would. restart(id) restarts the node and builds a
// new Replica over the same store and journal, so it reopens from what it had stored and
// keeps every promise it made. Do not crash or restart a
// replica from inside one of its own callbacks (its Replica is destroyed under it); call
// them between runs of the network, as the scenario runner does.
//
// The client. transfer() signs a transfer with the wallet's next nonce (nonces are counted
// by the cluster, so sign transactions in the order they are meant to execute). submit()
// hands a transaction to one replica, once. submit_with_retry() does the same and then keeps
// the transaction until it is in the store of some honest replica: every `client_retry_ms`
// a timer owned by the client node (`client_node`, attached to the SimNetwork) resubmits
// each such transaction to the next replica that is up, round-robin, so a lost forward or a
// crashed or cut-off entry replica does not lose it. Refusals of a resubmission (the
// mempool knows it already, the nonce was used meanwhile) are expected and ignored. The
// timer is armed only while something is pending, so an idle network runs out of events.
// The client reaches replicas by calling Replica::submit directly, not over the network:
// partitions never cut it off.
//
// The checks. Byzantine replicas (mark_byzantine) are left out of all of them.
//   - check_safety(): for every pair of honest replicas, up or crashed (their stores
//     survive), the same block hash at every height both stores hold. Blocks are append-only,
//     so the hashes read are cached and a check costs only the new blocks.
//   - check_converged(): every up honest replica has the same height, ledger state_digest
//     and (with noop_application) application digest, its ledger passes check_invariants() (which
//     includes conservation: the balances plus the open escrows add up to the total minted), and
//     its store holds exactly the state of its ledger.
// Failures name the replicas and the height involved.
//
// Misuse (a replica id out of range, a wallet index out of range, crashing a crashed
// replica or restarting an up one) throws std::logic_error. Construction and restart throw
// std::runtime_error carrying Replica::create's message if a replica cannot be built.
#pragma once

#include <popchain/application.hpp>
#include <popchain/crypto.hpp>
#include <popchain/genesis.hpp>
#include <popchain/memory_store.hpp>
#include <popchain/net/sim_network.hpp>
#include <popchain/net/transport.hpp>
#include <popchain/pbft/client.hpp>
#include <popchain/pbft/config.hpp>
#include <popchain/pbft/journal.hpp>
#include <popchain/pbft/replica.hpp>
#include <popchain/result.hpp>
#include <popchain/transaction.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace popchain::net {

struct SimClusterOptions {
    using WrapFn = std::function<std::unique_ptr<Transport>(
        pbft::ReplicaId, const SigningKey&, const std::vector<ReplicaInfo>&, Transport& inner)>;

    std::uint32_t replicas = 4;
    std::uint64_t seed = 1; // the SimNetwork's seed
    LinkFaults faults{};    // the SimNetwork's default link faults
    pbft::ReplicaConfig config{};
    std::size_t wallets = 8;
    std::uint64_t balance = 1'000'000; // per wallet, at genesis
    Millis client_retry_ms = 500;      // > 0
    bool trace = false;                // keep the SimNetwork's text trace from the start
    WrapFn wrap;                       // optional
    // Consensus-only mode: the genesis takes unsigned 8-byte commands (noop_command_rules)
    // and every replica runs a NoopApplication, made afresh at each (re)start so that a
    // restarted replica replays its stored blocks to it.
    bool noop_application = false;
};

class SimCluster {
public:
    // The node id of the simulated client (it owns the retransmission timer).
    static constexpr NodeId client_node = first_client_id;

    explicit SimCluster(SimClusterOptions options);
    ~SimCluster();
    SimCluster(const SimCluster&) = delete;
    SimCluster& operator=(const SimCluster&) = delete;

    SimNetwork& network() { return net_; }
    const SimNetwork& network() const { return net_; }
    const SimClusterOptions& options() const { return options_; }
    std::uint32_t size() const { return options_.replicas; }
    const Genesis& genesis() const { return genesis_; }

    // nullptr while the replica is crashed.
    pbft::Replica* replica(pbft::ReplicaId id);
    const pbft::Replica* replica(pbft::ReplicaId id) const;
    MemoryStore& store(pbft::ReplicaId id);
    const MemoryStore& store(pbft::ReplicaId id) const;
    const SigningKey& key(pbft::ReplicaId id) const;
    const SigningKey& wallet(std::size_t w) const;
    bool is_up(pbft::ReplicaId id) const;

    void crash(pbft::ReplicaId id);
    void restart(pbft::ReplicaId id);

    void mark_byzantine(pbft::ReplicaId id);
    bool is_byzantine(pbft::ReplicaId id) const;

    // ---- the client ----
    Tx transfer(std::size_t from_wallet, std::size_t to_wallet, std::uint64_t amount);
    // An unsigned command (needs noop_application) from client id `client` (any number; the
    // cluster counts each client's nonces), its payload the 8 bytes of `value`.
    Tx command(std::uint64_t client, std::uint64_t value);
    // Replica `id`'s application (nullptr without noop_application or while crashed).
    const NoopApplication* application(pbft::ReplicaId id) const;
    // Fails without trying if `via` is down; a replica that is not a member refuses with
    // not_member.
    Result<void> submit(const Tx& tx, pbft::ReplicaId via);
    // Submits to `via`, or to the next up member after it if `via` is down or not a
    // member, and retries
    // until the transaction is committed (see the header comment).
    void submit_with_retry(const Tx& tx, pbft::ReplicaId via);
    // The pBFT client of node `client_node`, made on first use with `config` (later calls
    // ignore it). Unlike submit() and submit_with_retry(), its requests and the replicas'
    // replies travel through the network, with its faults, and it trusts a result only on
    // f+1 matching replies from the genesis replica set.
    pbft::Client& network_client(pbft::ClientConfig config = {});
    // Transactions submit_with_retry still retries.
    std::size_t retrying() const { return pending_.size(); }

    // Runs the network until every listed transaction is in the store of every up honest
    // replica, or no event is left at or before the absolute virtual time `deadline`.
    // Returns whether they all are.
    // `stop`, when given, is asked after every event too and ends the run early when it says
    // so (a Python caller's Ctrl-C); the clock then stays where the run stopped.
    bool run_until_committed(const std::vector<Hash256>& txids, Millis deadline,
                             const std::function<bool()>& stop = {});
    // How many of `txids` replica `id`'s store does not hold (up or not).
    std::size_t missing(const std::vector<Hash256>& txids, pbft::ReplicaId id) const;

    // ---- checks ----
    Result<void> check_safety() const;
    Result<void> check_converged() const;
    // Highest height of any honest store.
    std::uint64_t max_honest_height() const;
    // One line per replica (up/down/byzantine, height, view, low watermark, pending, log
    // size, a few drop and recovery counters) and the client's backlog, for failure reports.
    std::string summary() const;

private:
    struct Shim;
    struct ClientReceiver;
    struct Pending {
        Tx tx;
        Hash256 txid;
        pbft::ReplicaId next_via = 0;
    };

    void check_id(pbft::ReplicaId id) const;
    void build_replica(pbft::ReplicaId id, Transport& inner);
    // The first up member at or after `from`, cyclically; size() if none is up.
    pbft::ReplicaId next_up(pbft::ReplicaId from) const;
    bool committed_somewhere(const Hash256& txid) const;
    void arm_retry();
    void retry();

    // Declaration order is destruction order reversed: replicas go first (their destructors
    // cancel timers through the wrappers and the network), the network last.
    SimClusterOptions options_;
    SimNetwork net_;
    std::vector<SigningKey> keys_;
    std::vector<SigningKey> wallets_;
    std::vector<std::uint64_t> nonces_;
    std::map<std::uint64_t, std::uint64_t> command_nonces_; // per client id
    Genesis genesis_;
    std::vector<std::unique_ptr<MemoryStore>> stores_;
    // Each replica's promises (views, votes, prepared certificates), kept across restarts as
    // its store is: a replica that forgot them could vote twice differently for a slot.
    std::vector<std::unique_ptr<pbft::MemoryJournal>> journals_;
    std::vector<std::unique_ptr<Shim>> shims_;
    std::unique_ptr<ClientReceiver> client_receiver_;
    Transport* client_ = nullptr;
    std::unique_ptr<pbft::Client> network_client_; // before the network goes: it cancels timers
    std::vector<bool> byzantine_;
    std::vector<std::unique_ptr<Transport>> wrappers_;   // every one ever made
    std::vector<std::unique_ptr<NoopApplication>> apps_; // before the replicas: they use them
    std::vector<std::unique_ptr<pbft::Replica>> replicas_;

    std::vector<Pending> pending_; // submission order
    TimerId retry_timer_ = 0;
    // Block hashes read from each store so far (stores are append-only).
    mutable std::vector<std::vector<Hash256>> chains_;
};

} // namespace popchain::net
