# Genesis, the ledger (blocks apply completely or not at all), Merkle proofs and stores.
import pytest

import popchain


def test_genesis_json_round_trip(chain):
    text = chain.genesis.to_json()
    back = popchain.Genesis.from_json(text)
    assert back == chain.genesis
    assert back.chain_id == "pytest-chain" and len(back.replicas) == 4
    assert back.balances == [(chain.alice.address, 1000)]
    with pytest.raises(popchain.Error):
        popchain.Genesis.from_json("{not json")
    with pytest.raises(popchain.Error):  # unknown fields are refused
        popchain.Genesis.from_json(text.replace('"chain_id"', '"chain_idd"'))


def test_apply_block_built_from_txs(chain):
    ledger = popchain.Ledger(chain.genesis)
    assert ledger.height == 0 and ledger.balance(chain.alice.address) == 1000
    txs = [
        chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 300),
        chain.authority.mint(chain.chain_id, 0, chain.bob.address, 50),
        chain.alice.transfer(chain.chain_id, 1, chain.bob.address, 100),
    ]
    built = ledger.build_block(txs, timestamp_ms=1)
    assert built.rejected == []
    block = built.block
    assert block.height == 1 and block.header.prev_hash == ledger.tip_hash
    assert block.txids() == [t.txid for t in txs]
    assert ledger.height == 0  # building changes nothing
    delta = ledger.apply(block)
    assert delta.height == 1 and delta.block_hash == block.hash
    assert ledger.height == 1 and ledger.tip_hash == block.hash
    assert ledger.balance(chain.alice.address) == 600
    assert ledger.balance(chain.bob.address) == 450
    assert ledger.nonce(chain.alice.address) == 2
    assert ledger.account(chain.bob.address) == ledger.accounts()[chain.bob.address]
    assert ledger.total_minted == 1050
    ledger.check_invariants()
    # The same block again: wrong height, nothing changes.
    digest = ledger.state_digest()
    with pytest.raises(popchain.Error) as e:
        ledger.apply(block)
    assert e.value.code == "wrong_height"
    assert ledger.state_digest() == digest


def test_overdraft_is_refused_and_nothing_changes(chain):
    ledger = popchain.Ledger(chain.genesis)
    good = chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 400)
    overdraft = chain.alice.transfer(chain.chain_id, 1, chain.bob.address, 601)
    with pytest.raises(popchain.Error) as e:
        ledger.check_tx(chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 1001))
    assert e.value.code == "insufficient_funds"

    # The builder leaves it out and says why.
    built = ledger.build_block([good, overdraft])
    assert [t.txid for t in built.block.txs] == [good.txid]
    assert [(r.txid, r.code) for r in built.rejected] == [(overdraft.txid, "insufficient_funds")]

    # A block that includes it anyway (with a correct tx root) is refused as a whole.
    forced = built.block.replace(
        txs=[good, overdraft],
        header=built.block.header.replace(tx_root=popchain.compute_tx_root([good, overdraft])),
    )
    before = (ledger.state_digest(), ledger.height, ledger.state_root)
    with pytest.raises(popchain.Error) as e:
        ledger.apply(forced)
    assert e.value.code == "insufficient_funds"
    assert (ledger.state_digest(), ledger.height, ledger.state_root) == before
    assert ledger.balance(chain.alice.address) == 1000
    assert ledger.balance(chain.bob.address) == 0
    # The honest block still applies afterwards.
    ledger.apply(built.block)
    assert ledger.balance(chain.bob.address) == 400


def test_escrow_open_and_release(chain):
    ledger = popchain.Ledger(chain.genesis)
    trade = popchain.sha256(b"order-17")
    opened = chain.alice.escrow_open(chain.chain_id, 0, chain.bob.address, 200, trade, 10)
    ledger.apply(ledger.build_block([opened]).block)
    esc = ledger.escrow(trade)
    assert esc.status == popchain.EscrowStatus.open and esc.amount == 200
    assert esc.buyer == chain.alice.address and esc.seller == chain.bob.address
    assert ledger.balance(chain.alice.address) == 800
    ledger.check_invariants()
    # Only the buyer may release.
    with pytest.raises(popchain.Error) as e:
        ledger.check_tx(chain.bob.escrow_release(chain.chain_id, 0, trade))
    assert e.value.code == "not_escrow_party"
    ledger.apply(ledger.build_block([chain.alice.escrow_release(chain.chain_id, 1, trade)]).block)
    assert ledger.escrow(trade).status == popchain.EscrowStatus.released
    assert ledger.balance(chain.bob.address) == 200
    assert ledger.escrow(popchain.sha256(b"unknown")) is None
    assert set(ledger.escrows()) == {trade}


def test_merkle_proofs(chain):
    ledger = popchain.Ledger(chain.genesis)
    txs = [chain.alice.transfer(chain.chain_id, n, chain.bob.address, 1 + n) for n in range(5)]
    block = ledger.build_block(txs).block
    root = block.header.tx_root
    assert root == popchain.merkle_root(block.txids())
    for i, tx in enumerate(block.txs):
        proof = block.prove_tx(i)
        assert proof.index == i and proof.leaf_count == 5
        assert proof.verify(root, tx.txid)
        assert popchain.merkle_verify(root, tx.txid, proof)
    proof = block.prove_tx(2)
    # Another leaf, another root, a flipped sibling, another index: all refused.
    assert not proof.verify(root, block.txs[3].txid)
    assert not proof.verify(popchain.sha256(b"other root"), block.txs[2].txid)
    sib = bytearray(bytes(proof.siblings[0]))
    sib[0] ^= 1
    tampered = popchain.MerkleProof(
        proof.index, proof.leaf_count, [popchain.Hash256(bytes(sib))] + proof.siblings[1:]
    )
    assert not tampered.verify(root, block.txs[2].txid)
    moved = popchain.MerkleProof(3, proof.leaf_count, proof.siblings)
    assert not moved.verify(root, block.txs[2].txid)
    with pytest.raises(IndexError):
        block.prove_tx(5)


def test_block_encoding(chain):
    ledger = popchain.Ledger(chain.genesis)
    block = ledger.build_block([chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 9)]).block
    assert popchain.Block.decode(block.encode()) == block
    with pytest.raises(popchain.Error):
        popchain.Block.decode(block.encode()[:-3])
    with pytest.raises(popchain.Error):
        popchain.Block.decode(b"garbage")


def test_stores_memory_and_sqlite(chain, tmp_path):
    for store in (popchain.MemoryStore(), popchain.SqliteStore.open(tmp_path / "chain.db")):
        assert store.tip_height is None and len(store) == 0
        g = chain.genesis.build()
        store.append(g.block, g.delta)
        ledger = popchain.Ledger.from_store(chain.genesis, store)
        tx = chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 10)
        block = ledger.build_block([tx]).block
        delta = ledger.apply(block)
        store.append(block, delta)
        assert store.tip_height == 1 and store.block_at(1) == block
        assert store.block_by_hash(block.hash) == block
        rec = store.tx(tx.txid)
        assert (rec.height, rec.index, rec.tx) == (1, 0, tx)
        assert [r.tx for r in store.txs_of(chain.bob.address)] == [tx]
        assert store.state_digest() == ledger.state_digest()
        with pytest.raises(popchain.Error) as e:
            store.block_at(5)
        assert e.value.code == "not_found"
        with pytest.raises(popchain.Error) as e:  # the same block again
            store.append(block, delta)
        assert e.value.code == "wrong_height"
        assert len(store) == 2
    # Reopened, the SQLite store gives the same ledger.
    again = popchain.SqliteStore.open(tmp_path / "chain.db")
    assert popchain.Ledger.from_store(chain.genesis, again).balance(chain.bob.address) == 10


def test_misuse_is_named(chain):
    tx = chain.alice.transfer(chain.chain_id, 0, chain.bob.address, 5)
    for field, value in (("amount", -1), ("amount", None), ("nonce", 2**64)):
        with pytest.raises(TypeError, match=field):
            tx.replace(**{field: value})
    with pytest.raises(ValueError, match="not a config transaction"):
        tx.config_change()
    ledger = popchain.Ledger(chain.genesis)
    built = ledger.build_block([tx], timestamp_ms=1)
    delta = ledger.execute(built.block)
    ledger.commit(delta)
    with pytest.raises(ValueError, match="takes only a delta for height 2"):
        ledger.commit(delta)  # the same delta again: stale
    assert ledger.height == 1


def test_sim_submit_refuses_an_overdraft_and_bad_sizes():
    with pytest.raises(ValueError, match="replicas must be"):
        popchain.SimCluster(replicas=2000)
    c = popchain.SimCluster(seed=3)
    overdraft = c.transfer(0, 1, 10**12)
    with pytest.raises(popchain.Error, match="insufficient_funds|balance"):
        c.submit(overdraft, 0)
    c.run_for(1_000)
    assert c.replica(0).stats["refused_submits"] == 1
    assert c.replica(0).pending == 0
