"""Python bindings of libpopchain, a permissioned pBFT blockchain library.

The compiled module (keys, transactions, blocks, the ledger, stores, the light-client check
and the deterministic simulator) is re-exported here; LocalCluster drives real node
processes on loopback through the `popchain` tool and the nodes' HTTP API.
"""
from . import _popchain
from ._popchain import *  # noqa: F401,F403
from ._popchain import __doc__ as _compiled_doc  # noqa: F401
from .local_cluster import LocalCluster, NodeError, NodeUnreachable  # noqa: F401

# Everything public, so help(popchain) documents the compiled classes too (their home
# module is popchain._popchain, which pydoc would otherwise leave out).
__all__ = sorted(name for name in dir(_popchain) if not name.startswith("_")) + [
    "LocalCluster", "NodeError", "NodeUnreachable"]
