"""The seed's membership scenario and impostors, over TCP with real node processes: 7 nodes,
2 killed mid-stream, 2 new nodes joining through `config` transactions while the cluster
keeps committing; processes that claim a member's id with another key, or an id that is no
member's, get no message accepted."""
import json
import os
import subprocess
import time

import pytest

import popchain


def submit_batch(cluster, count, senders, via):
    """`count` transfers spread over `senders`, submitted without waiting to the nodes in
    `via` in turn; returns {alias: nonce after the batch}."""
    nonces = {}
    for k in range(count):
        alias = senders[k % len(senders)]
        tx = cluster.transfer_tx(alias, cluster.address(senders[(k + 1) % len(senders)]), 1,
                                 via=via[0])
        cluster.submit(tx, via=via[k % len(via)])
        nonces[alias] = tx.nonce + 1
    return nonces


def committed_everywhere(cluster, nonces, nodes):
    return all(cluster.account(cluster.address(a), i)["nonce"] >= n
               for i in nodes for a, n in nonces.items())


def grow_past(cluster, height, senders, via, timeout=120):
    """Commits transfers until node via[0] is above `height`."""
    deadline = time.monotonic() + timeout
    while cluster.height(via[0]) <= height:
        assert time.monotonic() < deadline, f"stuck at {cluster.height(via[0])}"
        nonces = submit_batch(cluster, 8, senders, via)
        assert cluster.wait_for(lambda: committed_everywhere(cluster, nonces, via[:1]), 60)


def test_seed_scenario_seven_nodes_two_crash_two_join():
    senders = [f"w{i}" for i in range(6)]
    with popchain.LocalCluster(nodes=7, wallets=len(senders)) as cluster:
        all_nodes = list(range(7))
        nonces = submit_batch(cluster, 60, senders, all_nodes)
        assert cluster.wait_for(lambda: committed_everywhere(cluster, nonces, all_nodes), 60)

        # Two nodes go down mid-stream, the primary and a backup, with a batch in flight
        # (sent to nodes that stay up: a request held only by a dead node dies with it).
        primary = cluster.status(0)["primary"]
        down = [primary, (primary + 3) % 7]
        live = [i for i in all_nodes if i not in down]
        nonces = submit_batch(cluster, 40, senders, live)
        for i in down:
            cluster.kill(i)
        nonces.update(submit_batch(cluster, 40, senders, live))
        assert cluster.wait_for(lambda: committed_everywhere(cluster, nonces, live), 90)
        assert cluster.status(live[0])["view"] > 0  # the dead primary was replaced

        # Two new nodes join through config transactions, each taking effect at the next
        # checkpoint boundary; they catch up by state transfer and then vote.
        joined = []
        for _ in range(2):
            joined.append(cluster.add_node(via=live[0]))
            grow_past(cluster, cluster.height(live[0]) + 40, senders, live)
        members = live + joined
        height = cluster.wait_converged(nodes=members, timeout=90)
        for i in members:
            status = cluster.status(i)
            assert status["replicas"] == 9, status
            assert status["voting"], status
        assert cluster.block(height, joined[0])["block"]["hash"] == \
            cluster.block(height, live[0])["block"]["hash"]

        # The newcomers really vote: with a third original node down, 6 of 9 are left, a
        # quorum only together with both of them.
        third = next(i for i in live if i != cluster.status(live[0])["primary"])
        cluster.kill(third)
        remaining = [i for i in members if i != third]
        nonces = submit_batch(cluster, 30, senders, remaining)
        assert cluster.wait_for(lambda: committed_everywhere(cluster, nonces, remaining), 90)
        height = cluster.wait_converged(nodes=remaining, timeout=60)
        # One chain and one state on every live node.
        for h in sorted({1, height // 2, height}):
            assert len({cluster.block(h, i)["block"]["hash"] for i in remaining}) == 1
        balances = [[cluster.account(cluster.address(a), i)["balance"] for a in senders]
                    for i in remaining]
        assert all(b == balances[0] for b in balances)
        assert sum(balances[0]) == len(senders) * 1_000_000


def metric(text, name, label):
    for line in text.splitlines():
        if line.startswith(f'{name}{{reason="{label}"}}'):
            return int(line.split()[-1])
    raise AssertionError(f"{name}{{reason={label}}} not in metrics")


def test_impostor_processes_get_nothing_accepted():
    with popchain.LocalCluster(nodes=4) as cluster:
        cluster.transfer("w0", cluster.address("w1"), 1)
        before = {i: cluster.metrics(i) for i in range(4)}
        height = cluster.height(0)
        impostors = []
        # Impostor A claims member 1's id with a key of its own; impostor B an id that is no
        # member's. Both are real node processes with the testnet's genesis and peer list,
        # dialling every member and trying to take part.
        for name, claimed in (("impostor_a", 1), ("impostor_b", 9)):
            d = cluster.dir / name
            d.mkdir()
            key = popchain.SigningKey.generate()
            (d / "replica.key").write_text(key.encrypted_pem(cluster._passphrase, 5))
            config = json.loads((cluster.dir / "node1" / "config.json").read_text())
            config.update({"id": claimed, "key_file": str(d / "replica.key"),
                           # a port the cluster reserved beyond its nodes
                           "listen": f"127.0.0.1:{cluster.base_port + 6 + len(impostors)}",
                           "data_dir": str(d / "data")})
            config.pop("api", None)
            for k in ("genesis", "passphrase_file"):
                if k in config:
                    config[k] = str((cluster.dir / "node1" / config[k]).resolve())
            (d / "config.json").write_text(json.dumps(config))
            log = open(d / "node.log", "w")
            impostors.append(subprocess.Popen([cluster.cli, "node", "--config", str(d / "config.json")],
                                              stdout=log, stderr=subprocess.STDOUT))
        try:
            time.sleep(3)  # several dial and handshake rounds
            # The cluster still works, with the same chain on every member.
            for k in range(5):
                assert cluster.transfer("w1", cluster.address("w2"), 1, via=k % 4)["status"] == \
                    "committed"
            cluster.wait_converged(nodes=list(range(4)))
            assert cluster.block(height, 0)["block"]["hash"] == cluster.block(height, 3)["block"]["hash"]
            after = {i: cluster.metrics(i) for i in range(4)}
            refused = sum(metric(after[i], "popchain_handshake_refused_total", reason) -
                          metric(before[i], "popchain_handshake_refused_total", reason)
                          for i in range(4) for reason in ("bad_signature", "unknown_peer"))
            assert refused >= 2, ([p.poll() for p in impostors],
                                  [(cluster.dir / n / "node.log").read_text()[-2000:]
                                   for n in ("impostor_a", "impostor_b")], after)
            # Nothing got through the handshake into the replicas: no message was even
            # counted as dropped for a bad sender or MAC.
            for i in range(4):
                for reason in ("unknown_peer", "forged_sender", "bad_mac"):
                    assert metric(after[i], "popchain_dropped_messages_total", reason) == \
                        metric(before[i], "popchain_dropped_messages_total", reason)
            # And node 1, whose id impostor A claims, is still a connected, working member.
            assert cluster.status(0)["peers_connected"] == 3
        finally:
            for p in impostors:
                p.kill()
                p.wait()
