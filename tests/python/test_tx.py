# Transactions: builders, signing, checks, the canonical encoding and refusal of garbage.
import pytest

import popchain
from conftest import wallet_from_label

CHAIN = "pytest-chain"


def test_transfer_signs_and_verifies():
    alice, bob = wallet_from_label("alice"), wallet_from_label("bob")
    tx = alice.transfer(CHAIN, 0, bob.address, 250, memo=b"rent")
    assert tx.kind == popchain.TxKind.transfer
    assert tx.from_ == alice.address and tx.to == bob.address
    assert (tx.amount, tx.nonce, tx.payload, tx.chain_id) == (250, 0, b"rent", CHAIN)
    assert tx.public_key == alice.public_key
    assert tx.txid == popchain.sha256(tx.signing_bytes())
    assert tx.verify() and tx.verify(CHAIN)
    tx.check(CHAIN)
    assert not tx.verify("another-chain")
    with pytest.raises(popchain.Error) as e:
        tx.check("another-chain")
    assert e.value.code == "wrong_chain_id"


def test_tampering_breaks_the_signature():
    alice, bob = wallet_from_label("alice"), wallet_from_label("bob")
    tx = alice.transfer(CHAIN, 0, bob.address, 250)
    more = tx.replace(amount=251)
    assert more.amount == 251 and tx.amount == 250  # tx itself is unchanged
    assert more.txid != tx.txid
    assert not more.verify()
    with pytest.raises(popchain.Error) as e:
        more.check()
    assert e.value.code == "bad_signature"
    # Re-signed by someone else, the sender changes with the key.
    resigned = more.sign(bob.signing_key)
    assert resigned.verify() and resigned.from_ == bob.address
    # Claiming another sender than the key is refused.
    with pytest.raises(popchain.Error) as e:
        resigned.replace(from_=alice.address).check()
    assert e.value.code in ("sender_mismatch", "bad_signature")
    with pytest.raises(TypeError):
        tx.replace(colour="red")


def test_every_builder():
    alice, bob, auth = wallet_from_label("alice"), wallet_from_label("bob"), wallet_from_label("a")
    trade = popchain.sha256(b"trade-1")
    txs = [
        alice.transfer(CHAIN, 0, bob.address, 1),
        auth.mint(CHAIN, 0, alice.address, 10),
        alice.escrow_open(CHAIN, 1, bob.address, 5, trade, 100),
        alice.escrow_release(CHAIN, 2, trade),
        bob.escrow_refund(CHAIN, 0, trade),
        auth.config(
            CHAIN,
            1,
            popchain.ConfigChange(
                popchain.ConfigChange.Action.add_replica,
                popchain.ReplicaInfo(7, bob.public_key, "127.0.0.1:7007"),
            ),
        ),
        popchain.Tx(popchain.TxKind.transfer, CHAIN, to=bob.address, amount=3, nonce=4).sign(
            alice.signing_key
        ),
    ]
    kinds = [t.kind.name for t in txs]
    assert kinds == [
        "transfer", "mint", "escrow_open", "escrow_release", "escrow_refund", "config", "transfer"
    ]
    for t in txs:
        assert t.verify(CHAIN), t
        assert popchain.Tx.decode(t.encode()) == t
    assert txs[2].trade_id == trade and txs[2].deadline == 100
    change = txs[5].config_change()
    assert change.replica.id == 7 and change.replica.endpoint == "127.0.0.1:7007"
    assert popchain.ConfigChange.decode(change.encode()) == change


def test_encode_decode_round_trip():
    alice, bob = wallet_from_label("alice"), wallet_from_label("bob")
    tx = alice.transfer(CHAIN, 3, bob.address, 42, memo=bytes(range(256)))
    data = tx.encode()
    assert isinstance(data, bytes)
    back = popchain.Tx.decode(data)
    assert back == tx and back.txid == tx.txid and back.encode() == data
    assert popchain.Tx.decode(bytearray(data)) == tx
    assert {tx: "x"}[back] == "x"


@pytest.mark.parametrize(
    "mutate, code",
    [
        (lambda d: b"", "truncated"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "trailing_bytes"),
        (lambda d: b"\x63" + d[1:], "unknown_kind"),
        (lambda d: bytes(200), None),
        (lambda d: b"\xff" * 100, None),
    ],
)
def test_decode_refuses_garbage(mutate, code):
    tx = wallet_from_label("alice").transfer(CHAIN, 0, wallet_from_label("bob").address, 1)
    with pytest.raises(popchain.Error) as e:
        popchain.Tx.decode(mutate(tx.encode()))
    if code is not None:
        assert e.value.code == code
    assert e.value.code and str(e.value)
