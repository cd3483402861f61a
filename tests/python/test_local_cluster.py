"""Real node processes on loopback, driven through popchain.LocalCluster: load from several
client threads, kill -9 of a backup and of the primary, a node added by a config
transaction, garbage on the replica and API ports."""
import os
import socket
import threading
import time

import pytest

import popchain

# The number of transfers of the load test: the seed's 10,000 by default (POPCHAIN_PY_LOAD).
LOAD = int(os.environ.get("POPCHAIN_PY_LOAD", "10000"))
WALLETS = 8


def run_load(cluster, count, wallets=WALLETS, threads=4, window=32, via=(0, 1, 2, 3)):
    """`count` transfers from `wallets` wallets spread over `threads` client threads, each
    wallet keeping at most `window` uncommitted (the mempool bounds pending txs per sender),
    sent to the nodes `via`. Returns the number each wallet sent."""
    per_wallet = [count // wallets + (1 if w < count % wallets else 0) for w in range(wallets)]
    errors = []

    def client(mine):
        try:
            sent = {w: 0 for w in mine}
            while any(sent[w] < per_wallet[w] for w in mine):
                for w in mine:
                    alias = f"w{w}"
                    home = via[w % len(via)]
                    committed = cluster.account(cluster.address(alias), home)["nonce"]
                    while sent[w] < per_wallet[w] and sent[w] - committed < window:
                        tx = cluster.transfer_tx(alias, cluster.address(f"w{(w + 1) % wallets}"), 1,
                                                 via=home)
                        cluster.submit(tx, via=via[(w + sent[w]) % len(via)])
                        sent[w] += 1
                time.sleep(0.005)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    workers = [threading.Thread(target=client, args=(list(range(t, wallets, threads)),))
               for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors
    return per_wallet


def all_committed(cluster, per_wallet, nodes):
    return all(cluster.account(cluster.address(f"w{w}"), i)["nonce"] >= n
               for i in nodes for w, n in enumerate(per_wallet))


@pytest.fixture
def cluster():
    c = popchain.LocalCluster(nodes=4, wallets=WALLETS)
    c.start()
    yield c
    c.close()


def test_load_from_several_threads_every_node_same_chain_and_state(cluster):
    start = time.monotonic()
    per_wallet = run_load(cluster, LOAD)
    assert cluster.wait_for(lambda: all_committed(cluster, per_wallet, range(4)), 120)
    elapsed = time.monotonic() - start
    height = cluster.wait_converged()
    print(f"{LOAD} transfers from 4 threads committed in {elapsed:.1f} s "
          f"({LOAD / elapsed:.0f} tx/s, {height} blocks)")
    # One chain: every node holds the same block at every height (sampled, plus the tip).
    for h in sorted({1, height // 2, height}):
        assert len({cluster.block(h, i)["block"]["hash"] for i in range(4)}) == 1
    # One state: every balance agrees, and the total is what genesis minted.
    balances = [[cluster.account(cluster.address(f"w{w}"), i)["balance"] for w in range(WALLETS)]
                for i in range(4)]
    assert all(b == balances[0] for b in balances)
    assert sum(balances[0]) == WALLETS * 1_000_000
    metrics = cluster.metrics(0)
    assert f"popchain_height {height}" in metrics


def test_kill_a_backup_mid_load_then_the_primary(cluster):
    primary = cluster.status(0)["primary"]
    backup = (primary + 3) % 4
    alive = [i for i in range(4) if i != backup]
    sent = []

    def load():  # the clients talk to the nodes that stay up
        sent.append(run_load(cluster, 400, threads=2, via=alive))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(0.3)
    cluster.kill(backup)
    t.join()
    assert sent, "the load failed"
    assert cluster.wait_for(lambda: all_committed(cluster, sent[0], alive), 60)
    cluster.restart(backup)
    cluster.wait_converged(timeout=60)  # the backup caught up from its store and its peers

    # Now the primary: a view change replaces it and the chain goes on; nothing committed
    # before is lost.
    before = cluster.height(backup)
    tip = cluster.block(before, backup)["block"]["hash"]
    cluster.kill(primary)
    survivors = [i for i in range(4) if i != primary]
    via = survivors[0]
    result = cluster.transfer("w0", cluster.address("w1"), 3, via=via)
    assert result["status"] == "committed"
    assert cluster.status(via)["view"] > 0
    assert cluster.block(before, via)["block"]["hash"] == tip
    cluster.restart(primary)
    cluster.wait_converged(timeout=60)

    # Both restarted nodes prove every block. The blocks the old primary executed itself,
    # however old, by the nearest checkpoint at or above them (it keeps each stable
    # certificate in its store, across the restart): never an interval of headers or more.
    # A node that skipped checkpoints by state transfer proves those blocks by a later one.
    interval = cluster.status(primary)["checkpoint_interval"]
    top = cluster.height(primary)
    own = (before // interval - 1) * interval  # stable at the primary before it was killed
    assert own >= interval
    assert cluster.wait_for(lambda: cluster.block(top, primary)["certified"], 30)
    for node in (backup, primary):
        for h in range(1, top + 1):
            answer = cluster.block(h, node)
            assert answer["certified"], (node, h)
            if node == primary and h <= own:
                assert len(answer["commit_proof"]["headers"]) < interval, h


def test_a_node_joins_through_a_config_transaction(cluster):
    cluster.transfer("w0", cluster.address("w1"), 1)
    new = cluster.add_node()
    assert new == 4
    # Not a member yet: the node refuses a transaction it could not get proposed.
    with pytest.raises(popchain.NodeError) as learner:
        cluster.transfer("w3", cluster.address("w4"), 1, via=new)
    assert learner.value.status == 503 and learner.value.code == "not_member"
    # Blocks past the next checkpoint boundary (a multiple of checkpoint_interval, 32 here)
    # make the change take effect; the newcomer catches up by state transfer and then has
    # the same chain.
    while cluster.height(0) <= 40:
        cluster.transfer("w1", cluster.address("w2"), 1, via=cluster.height(0) % 4)
    cluster.wait_converged(timeout=60)
    assert cluster.status(new)["replicas"] == 5
    assert cluster.status(0)["replicas"] == 5
    # A member now, it takes transactions; the refused one gave its nonce back.
    assert cluster.transfer("w3", cluster.address("w4"), 1, via=new)["status"] == "committed"
    assert cluster.account(cluster.address("w3"), new)["nonce"] == 1
    cluster.wait_converged(timeout=60)
    h = cluster.height(0)
    assert cluster.block(h, new)["block"]["hash"] == cluster.block(h, 0)["block"]["hash"]


def test_garbage_on_the_replica_and_api_ports_changes_nothing(cluster):
    cluster.transfer("w0", cluster.address("w1"), 1)
    height = cluster.height(1)
    for port in (cluster.replica_port(1), cluster.api_port(1)):
        for payload in (b"\x00" * 64, b"\xff\xff\xff\xff" + b"x" * 100,
                        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
                        os.urandom(4096)):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(payload)
                    s.settimeout(1)
                    s.recv(1024)
                except OSError:
                    pass
    # An impostor: a well-formed handshake is impossible without a member's key, so the
    # node's counters show refusals and its chain is unchanged.
    assert cluster.height(1) == height
    balance = cluster.account(cluster.address("w1"), 1)["balance"]
    with pytest.raises(popchain.NodeError) as refused:
        cluster._http(1, "POST", "/v1/txs", '{"kind": "transfer"}')
    assert refused.value.status == 400
    assert cluster.account(cluster.address("w1"), 1)["balance"] == balance
    # The node still works.
    assert cluster.transfer("w1", cluster.address("w2"), 1, via=1)["status"] == "committed"


def test_a_refused_transfer_gives_its_nonce_back_and_misuse_is_named(cluster):
    w1 = cluster.address("w1")
    assert cluster.transfer("w0", w1, 5)["status"] == "committed"
    with pytest.raises(popchain.NodeError) as overdraft:
        cluster.transfer("w0", w1, 10**12)
    assert overdraft.value.status == 400 and overdraft.value.code == "insufficient_funds"
    with pytest.raises(TypeError):
        cluster.transfer("w0", "not an address", 1)  # refused before it is signed
    # Neither refusal left a gap: the next transfer takes the next nonce and commits.
    answer = cluster.transfer("w0", w1, 1)
    assert answer["status"] == "committed"
    assert cluster.account(cluster.address("w0"))["nonce"] == 2
    # Node numbers the cluster lacks, and nodes that are not running, are named as such.
    with pytest.raises(IndexError):
        cluster.kill(9)
    with pytest.raises(IndexError):
        cluster.status(9)
    with pytest.raises(IndexError):
        cluster.restart(-1)
    cluster.kill(3)
    with pytest.raises(ValueError):
        cluster.kill(3)
    # A node that does not answer raises NodeUnreachable, a NodeError (and an OSError).
    with pytest.raises(popchain.NodeUnreachable) as down:
        cluster.status(3)
    assert down.value.status == 0 and down.value.code == "unreachable"
    assert isinstance(down.value, popchain.NodeError) and isinstance(down.value, OSError)
    # add_node through a node that is down: refused before anything is made.
    nodes = cluster.nodes()
    with pytest.raises(ValueError):
        cluster.add_node(via=3)
    assert cluster.nodes() == nodes
    cluster.restart(3)
    cluster.wait_converged()


def test_bad_cluster_arguments_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="1..64"):
        popchain.LocalCluster(nodes=2000)
    with pytest.raises(TypeError):
        popchain.LocalCluster(nodes="4")


def test_nodes_stop_when_a_cluster_is_dropped_without_close_or_fails_to_start():
    c = popchain.LocalCluster(nodes=4)
    c.start()
    pids = [c.pid(i) for i in c.nodes()]
    assert all(pids)
    del c  # no close(): the finalizer stops the nodes
    import gc
    gc.collect()

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.1)
    assert all(gone(p) for p in pids)

    # A start() that fails (node 2's API port is taken) stops the nodes it started.
    c = popchain.LocalCluster(nodes=4)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", c.api_port(2)))
        blocker.listen()
        with pytest.raises(RuntimeError):
            with c:
                pass
    assert [i for i in c.nodes() if c.pid(i)] == []
    c.close()


def test_help_documents_the_compiled_classes_and_the_cluster():
    import pydoc
    text = pydoc.render_doc(popchain, renderer=pydoc.plaintext)
    for name in ("class Wallet", "class Tx", "class Block", "class Ledger", "class SimCluster",
                 "class LocalCluster", "class NodeError"):
        assert name in text, name
    for method in ("transfer", "submit", "status", "block", "tx", "close", "resume"):
        assert getattr(popchain.LocalCluster, method).__doc__, method
