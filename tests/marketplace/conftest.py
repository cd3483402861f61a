# Fixtures for the POP Market API tests: one 4-node LocalCluster for the module and a
# popmarket serving it. The popchain module comes from PYTHONPATH (scripts/test sets it).
import itertools
import sys
from pathlib import Path

import pytest

import popchain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from market_client import Market  # noqa: E402

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster():
    c = popchain.LocalCluster(nodes=4, wallets=1)
    c.start()
    yield c
    c.close()


@pytest.fixture(scope="module")
def market(cluster, tmp_path_factory):
    m = Market(cluster, tmp_path_factory.mktemp("market"))
    yield m
    m.close()


@pytest.fixture
def name():
    """A fresh username per call: tests share one market."""
    return lambda prefix="user": f"{prefix}{next(_names)}"
