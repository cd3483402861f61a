# Keys, signatures, addresses, fixed-size values and the encrypted keystore.
import os
import stat

import pytest

import popchain
from conftest import key_from_label


def test_sign_and_verify():
    key = popchain.SigningKey.generate()
    digest = popchain.sha256(b"hello")
    sig = key.sign(digest)
    assert len(bytes(sig)) == 64
    assert popchain.verify(key.public_key, digest, sig)
    assert key.public_key.verify(digest, sig)
    # Another digest, another key, or one flipped bit: refused.
    assert not popchain.verify(key.public_key, popchain.sha256(b"hellO"), sig)
    assert not popchain.verify(popchain.SigningKey.generate().public_key, digest, sig)
    raw = bytearray(bytes(sig))
    raw[10] ^= 1
    assert not popchain.verify(key.public_key, digest, popchain.Signature(bytes(raw)))


def test_deterministic_keys_and_signatures():
    a, b = key_from_label("x"), key_from_label("x")
    assert a.public_key == b.public_key and a.address == b.address
    d = popchain.sha256(b"m")
    assert a.sign(d) == b.sign(d)  # RFC 6979
    with pytest.raises(popchain.Error) as e:
        popchain.SigningKey.from_secret(bytes(32))
    assert e.value.code == "invalid_argument"


def test_ecdh_agrees():
    a, b = popchain.SigningKey.generate(), popchain.SigningKey.generate()
    assert a.agree(b.public_key) == b.agree(a.public_key)


def test_fixed_values_hex_bytes_equality_hash():
    h = popchain.sha256(b"abc")
    assert h.hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert popchain.Hash256.from_hex(h.hex()) == h
    assert popchain.Hash256(bytes(h)) == h
    assert popchain.Hash256().is_zero() and not h.is_zero()
    assert len({h, popchain.Hash256(bytes(h)), popchain.Hash256()}) == 2
    assert h != popchain.Hash256()
    assert (h == "not a hash") is False
    with pytest.raises(popchain.Error) as e:
        popchain.Hash256.from_hex("abcd")
    assert e.value.code == "malformed"
    with pytest.raises(popchain.Error):
        popchain.Hash256(b"short")
    with pytest.raises(popchain.Error) as e:
        popchain.Hash256.from_hex("zz" * 32)
    assert e.value.code == "malformed"
    assert isinstance(e.value, Exception)
    assert str(e.value).startswith("malformed")


def test_address_text_form():
    key = key_from_label("alice")
    addr = key.address
    assert addr == popchain.Address.of(key.public_key) == key.public_key.address
    text = str(addr)
    assert text.startswith("pop") and len(text) == 51
    assert popchain.Address.parse(text) == addr
    assert popchain.Address.parse(text.upper().replace("POP", "pop")) == addr
    typo = text[:10] + ("0" if text[10] != "0" else "1") + text[11:]
    with pytest.raises(popchain.Error) as e:
        popchain.Address.parse(typo)
    assert e.value.code == "bad_address"
    assert {addr: 1}[popchain.Address.parse(text)] == 1


def test_public_key_must_be_on_curve():
    pk = key_from_label("k").public_key
    assert popchain.PublicKey(bytes(pk)) == pk
    with pytest.raises(popchain.Error) as e:
        popchain.PublicKey(b"\x02" + b"\xff" * 32)
    assert e.value.code == "bad_public_key"


def test_encrypted_pem_round_trip():
    key = popchain.SigningKey.generate()
    pem = key.encrypted_pem("correct horse", kdf_msec=1)
    assert "ENCRYPTED PRIVATE KEY" in pem
    assert popchain.SigningKey.from_encrypted_pem(pem, "correct horse").public_key == key.public_key
    with pytest.raises(popchain.Error) as e:
        popchain.SigningKey.from_encrypted_pem(pem, "wrong")
    assert e.value.code == "wrong_passphrase"


def test_keystore_save_and_load(tmp_path):
    ks = popchain.Keystore(tmp_path / "keys", kdf_msec=1)
    created = ks.create("alice", "pw-a")
    bob = popchain.Wallet.generate("bob")
    ks.save(bob, "pw-b")
    assert "alice" in ks and ks.contains("bob") and "carol" not in ks
    assert [(e.alias, e.address) for e in ks.list()] == [
        ("alice", created.address),
        ("bob", bob.address),
    ]
    path = ks.path_of("bob")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in path.read_bytes()

    loaded = ks.load("bob", "pw-b")
    assert loaded.address == bob.address and loaded.alias == "bob"
    digest = popchain.sha256(b"x")
    assert loaded.signing_key.sign(digest) == bob.signing_key.sign(digest)

    with pytest.raises(popchain.Error) as e:
        ks.load("bob", "pw-a")
    assert e.value.code == "wrong_passphrase"
    with pytest.raises(popchain.Error) as e:
        ks.load("nobody", "pw")
    assert e.value.code == "not_found"
    with pytest.raises(popchain.Error) as e:
        ks.save(bob, "again")  # an existing key is never replaced
    assert e.value.code == "invalid_argument"
    with pytest.raises(popchain.Error):
        ks.create("../escape", "pw")


def test_help_is_documented():
    for cls in (popchain.Tx, popchain.Ledger, popchain.SimCluster, popchain.Block):
        assert cls.__doc__ and len(cls.__doc__) > 20
    assert "deadline" in popchain.SimCluster.run_until_committed.__doc__
    assert "popchain.Error" in popchain.verify_block.__doc__
