# Shared fixtures for the Python binding tests. The module comes from PYTHONPATH (scripts/test
# points it at the build's bindings/python directory).
import pytest

import popchain


def key_from_label(label: str) -> popchain.SigningKey:
    """A deterministic key: the secret is SHA-256 of the label."""
    return popchain.SigningKey.from_secret(bytes(popchain.sha256(label.encode())))


def wallet_from_label(label: str) -> popchain.Wallet:
    return popchain.Wallet.from_secret(label, bytes(popchain.sha256(label.encode())))


@pytest.fixture
def chain():
    """A small chain: an authority, alice (1000) and bob (0), four replicas."""
    authority = wallet_from_label("authority")
    alice = wallet_from_label("alice")
    bob = wallet_from_label("bob")
    replicas = [popchain.ReplicaInfo(i, key_from_label(f"replica/{i}").public_key) for i in range(4)]
    genesis = popchain.Genesis(
        "pytest-chain",
        authority.public_key,
        replicas=replicas,
        balances=[(alice.address, 1000)],
        timestamp_ms=1_700_000_000_000,
    )

    class Chain:
        pass

    c = Chain()
    c.authority, c.alice, c.bob, c.genesis = authority, alice, bob, genesis
    c.chain_id = genesis.chain_id
    return c
