# The simulator through Python: commits under message loss, crash and restart, partitions,
# determinism by seed, and the light-client check on a block a cluster really committed.
import pytest

import popchain


def small_blocks():
    return popchain.ReplicaConfig(
        max_block_txs=8, max_batch_delay_ms=3, checkpoint_interval=4, watermark_window=8
    )


def cluster(seed=1, **kw):
    kw.setdefault("delay", (1, 20))
    kw.setdefault("duplicate", 0.05)
    return popchain.SimCluster(seed=seed, config=small_blocks(), **kw)


def submit_transfers(c, count, gap=2, entry=None):
    ids = []
    for i in range(count):
        tx = c.transfer(i % c.wallets, (i + 1) % c.wallets, 1 + i)
        ids.append(tx.txid)
        c.submit_with_retry(tx, i % c.size if entry is None else entry)
        if gap:
            c.run_for(gap)
    return ids


def commit(c, ids, budget=60_000):
    assert c.run_until_committed(ids, c.now + budget), c.summary()


def chain_hashes(c, replica):
    return [b.hash for b in c.store(replica).blocks()]


def test_commits_100_transfers_with_10_percent_drops():
    c = cluster(seed=17, drop=0.10)
    assert len(c) == 4 and c.replica(0).is_primary
    ids = submit_transfers(c, 100)
    commit(c, ids)
    c.check_safety()
    c.check_converged()
    assert c.network_stats()["dropped_by_fault"] > 0  # the drops really happened
    heights = {c.replica(i).height for i in range(4)}
    assert len(heights) == 1
    for i in range(4):
        assert c.missing(ids, i) == 0
    stored = sum(len(b.txs) for b in c.store(0).blocks()[1:])
    assert stored == 100
    ledger = c.replica(2).ledger()
    ledger.check_invariants()
    assert ledger.total_minted == c.wallets * 1_000_000
    assert sum(ledger.nonce(c.wallet(w).address) for w in range(c.wallets)) == 100
    stats = c.replica(1).stats
    assert stats["executed_txs"] == 100 and "retransmissions" in stats
    c.run_for(600)
    assert c.retrying == 0
    assert c.summary().startswith("r0 up")


def test_crashed_backup_restarts_and_catches_up():
    c = cluster(seed=5)
    commit(c, submit_transfers(c, 20))
    handle = c.replica(2)
    height_at_crash = handle.height
    c.crash(2)
    assert c.replica(2) is None and not c.is_up(2)
    assert not handle.alive
    with pytest.raises(RuntimeError):
        handle.height  # the old incarnation is gone: refused, never dangling
    assert c.store(2).tip_height == height_at_crash  # the store survives
    with pytest.raises(ValueError):
        c.crash(2)
    refused = c.transfer(0, 1, 5)
    with pytest.raises(popchain.Error) as e:
        c.submit(refused, 2)
    assert "replica 2 is down" in str(e.value)
    # The cluster counted wallet 0's nonce for it: send it elsewhere, or wallet 0 is stuck.
    c.submit_with_retry(refused, 0)

    later = [refused.txid] + submit_transfers(c, 30, entry=0)
    commit(c, later)  # three of four replicas carry on
    assert c.missing(later, 2) == len(later)

    c.restart(2)
    assert c.replica(2) is not None and c.replica(2).alive
    assert not handle.alive  # a restart does not revive an old handle
    c.run_for(5_000)
    assert c.missing(later, 2) == 0, c.summary()
    assert c.replica(2).height == c.replica(0).height
    c.check_safety()
    c.check_converged()


def test_partition_heals():
    c = cluster(seed=11)
    commit(c, submit_transfers(c, 10))
    c.partition([[0, 1, 2], [3]])
    assert not c.connected(0, 3) and c.connected(0, 1)
    cut_off = submit_transfers(c, 20, entry=0)
    assert c.run_until_committed(cut_off, c.now + 2_000) is False  # 3 is up but cut off
    for i in range(3):
        assert c.missing(cut_off, i) == 0, c.summary()
    assert c.missing(cut_off, 3) == len(cut_off)
    assert c.network_stats()["dropped_by_partition"] > 0
    c.heal()
    assert c.connected(0, 3)
    commit(c, cut_off)
    c.check_safety()
    c.check_converged()


def test_same_seed_same_chain():
    def run(seed):
        c = cluster(seed=seed, drop=0.05)
        commit(c, submit_transfers(c, 40))
        c.run_for(1_000)
        return chain_hashes(c, 0), c.trace_digest

    a, b = run(23), run(23)
    assert a == b
    assert len(a[0]) > 2
    # Another seed, another run: the comparison above can fail.
    assert run(24)[1] != a[1]


def commit_proof(c, replica, height):
    """The headers from `height` up to the replica's last stable checkpoint, and its
    certificate: what a light client needs besides the block."""
    cert = c.replica(replica).last_stable_certificate
    assert len(cert) > 0 and cert.seq >= height
    store = c.store(replica)
    headers = [store.block_at(h).header for h in range(height + 1, cert.seq + 1)]
    return popchain.CommitProof(headers, cert)


def test_verify_block_on_a_committed_block():
    c = cluster(seed=3)
    commit(c, submit_transfers(c, 25))
    c.run_for(1_000)  # idle: the tip gets checkpointed and certified
    replicas = c.genesis.replicas
    cert = c.replica(1).last_stable_certificate
    popchain.verify_checkpoint_certificate(cert, replicas)
    assert cert.seq >= 2
    for height in (1, cert.seq):
        block = c.store(1).block_at(height)
        popchain.verify_block(block, commit_proof(c, 1, height), replicas)

    block = c.store(1).block_at(1)
    proof = commit_proof(c, 1, 1)
    # A transaction changed after the fact.
    edited = block.replace(txs=[block.txs[0].replace(amount=block.txs[0].amount + 1)] + block.txs[1:])
    with pytest.raises(popchain.Error) as e:
        popchain.verify_block(edited, proof, replicas)
    assert e.value.code == "bad_tx_root"
    # A header of the proof that no longer chains.
    if proof.headers:
        headers = list(proof.headers)
        headers[-1] = headers[-1].replace(prev_hash=popchain.sha256(b"elsewhere"))
        with pytest.raises(popchain.Error):
            popchain.verify_block(block, popchain.CommitProof(headers, proof.certificate), replicas)
    # Too few signers, and signers the client does not know.
    short = popchain.CheckpointCertificate(proof.certificate.checkpoints[:1])
    with pytest.raises(popchain.Error):
        popchain.verify_block(block, popchain.CommitProof(proof.headers, short), replicas)
    strangers = [popchain.ReplicaInfo(r.id, popchain.SigningKey.generate().public_key) for r in replicas]
    with pytest.raises(popchain.Error):
        popchain.verify_block(block, proof, strangers)


def test_misuse_and_lifetimes():
    c = popchain.SimCluster(replicas=4, seed=2)
    with pytest.raises(IndexError):
        c.replica(4)
    with pytest.raises(IndexError):
        c.crash(7)
    with pytest.raises(IndexError):
        c.wallet(100)
    with pytest.raises(ValueError):
        c.restart(1)  # it is up
    with pytest.raises(ValueError):
        popchain.SimCluster(drop=1.5)
    store, key, replica = c.store(0), c.wallet(0), c.replica(0)
    del c  # the handles keep the cluster alive
    assert store.tip_height == 0 and replica.height == 0 and key.address


def test_run_scenario():
    result = popchain.run_scenario(1, "today")
    assert result.ok, result.failure
    assert bool(result) and result.height >= 1
    again = popchain.run_scenario(1, "today")
    assert again.trace_digest == result.trace_digest
    assert "seed" in popchain.describe_scenario(1, "today")
    with pytest.raises(ValueError):
        popchain.run_scenario(1, "nonsense")


def test_consensus_only_commands_reach_every_application():
    c = cluster(seed=23, drop=0.05, noop_application=True)
    ids = []
    for i in range(60):
        tx = c.command(i % 3, i)
        assert tx.kind == popchain.TxKind.command and len(tx.payload) == 8
        ids.append(tx.txid)
        c.submit_with_retry(tx, i % c.size)
        c.run_for(2)
    commit(c, ids)
    c.check_safety()
    c.check_converged()  # includes equal application digests
    digests = {c.app_digest(i) for i in range(4)}
    assert len(digests) == 1
    height, digest = digests.pop()
    assert height == c.replica(0).height and digest != popchain.Hash256()
    # A restarted replica's application is rebuilt from its store.
    c.crash(3)
    assert c.app_digest(3) is None
    c.restart(3)
    assert c.app_digest(3) == (height, digest)
    with pytest.raises(ValueError):
        cluster(seed=1).command(0, 1)


@pytest.mark.parametrize("how", ["run_for", "run_until", "run_until_committed"])
def test_a_signal_stops_a_long_run(how):
    # An idle cluster always has timers due, so a run to the far future would take hours;
    # a signal handler that raises must stop it, with the clock where it stopped.
    import signal
    import time

    c = cluster(seed=5)
    ids = submit_transfers(c, 4)
    commit(c, ids)
    never = [popchain.sha256(b"never submitted")]

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(Alarm):
            if how == "run_for":
                c.run_for(2**62)
            elif how == "run_until":
                c.run_until(2**62)
            else:
                c.run_until_committed(never, 2**62)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 5
    assert 0 < c.now < 2**62
    # The cluster is usable after the interruption.
    more = submit_transfers(c, 2)
    commit(c, more)
    c.check_safety()
