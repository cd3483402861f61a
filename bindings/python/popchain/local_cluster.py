"""LocalCluster: N `popchain node` processes on loopback, driven from Python.

It uses the `popchain` tool for what the tool does (testnet init/up/down) and each node's
HTTP API (docs/api.md) for the chain: submitting signed transactions, waiting for commits,
reading blocks, accounts and status. Faults are made with signals: kill() is SIGKILL (the
node restarts from its store and journal and catches up), pause()/resume() freeze a node
(SIGSTOP/SIGCONT: to its peers it is cut off, as by a partition). add_node() makes a new
replica through a `config` transaction signed by the authority key, then starts it.

The tool is found from $POPCHAIN_CLI, then next to a build tree, then on PATH.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import _popchain as _pc


class NodeError(Exception):
    """A node answered with an HTTP error (status, code, message), or could not be reached."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _find_cli() -> str:
    if os.environ.get("POPCHAIN_CLI"):
        return os.environ["POPCHAIN_CLI"]
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent.parent / "apps" / "popchain" / "popchain",):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("popchain")
    if not found:
        raise FileNotFoundError("the popchain tool was not found: set POPCHAIN_CLI")
    return found


def _free_base_port(count: int) -> int:
    """A port P with P..P+count-1 and P+100..P+100+count-1 free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + 200 + count > 65535:
            continue
        ok = True
        for port in list(range(base, base + count)) + list(range(base + 100, base + 100 + count)):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


class LocalCluster:
    """N replica processes on 127.0.0.1 with SQLite stores, started by `popchain testnet`.

    with LocalCluster(nodes=4) as c:
        c.transfer("w0", c.address("w1"), 5)          # waits for the commit
        c.kill(3); c.transfer("w0", c.address("w1"), 1); c.restart(3)
        c.wait_converged()

    Wallets w0..w{wallets-1} are funded at genesis; their keys live in dir/wallets,
    encrypted under the testnet passphrase (a local-testing arrangement, docs/node.md).
    """

    def __init__(self, nodes: int = 4, dir: Optional[str] = None, wallets: int = 4,
                 balance: int = 1_000_000, cli: Optional[str] = None):
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        self.cli = cli or _find_cli()
        self._tmp = None if dir else tempfile.TemporaryDirectory(prefix="popchain-cluster-")
        self.dir = Path(dir) if dir else Path(self._tmp.name) / "net"
        self.base_port = _free_base_port(nodes + 8)
        self._run("testnet", "init", "--nodes", str(nodes), "--dir", str(self.dir),
                  "--base-port", str(self.base_port), "--wallets", str(wallets),
                  "--balance", str(balance), "--force")
        self.genesis = _pc.Genesis.load(str(self.dir / "genesis.json"))
        self.chain_id = self.genesis.chain_id
        self._passphrase = (self.dir / "passphrase").read_text().splitlines()[0]
        self._keystore = _pc.Keystore(str(self.dir / "wallets"))
        self._wallets: Dict[str, Any] = {}
        self._nonce_lock = threading.Lock()
        self._nonces: Dict[str, int] = {}
        self.started = False

    # ---- lifetime ----
    def start(self) -> "LocalCluster":
        """Starts every node that is not running and waits until each listens."""
        self._run("testnet", "up", "--dir", str(self.dir))
        self.started = True
        return self

    def stop(self) -> None:
        """SIGTERM to every node (clean shutdown), SIGCONT first to paused ones."""
        for i in self.nodes():
            pid = self.pid(i)
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        subprocess.run([self.cli, "testnet", "down", "--dir", str(self.dir)],
                       capture_output=True, text=True)
        self.started = False

    def close(self) -> None:
        self.stop()
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- nodes ----
    def nodes(self) -> List[int]:
        """The node numbers with a config in the testnet directory."""
        return sorted(int(p.name[4:]) for p in self.dir.glob("node*") if (p / "config.json").exists())

    def pid(self, i: int) -> Optional[int]:
        """The pid of node i if it is running."""
        try:
            pid = int((self.dir / f"node{i}" / "node.pid").read_text().strip())
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":
                    return None
            return pid
        except (OSError, ValueError):
            return None

    def api_port(self, i: int) -> int:
        config = json.loads((self.dir / f"node{i}" / "config.json").read_text())
        return int(config["api"].rsplit(":", 1)[1])

    def replica_port(self, i: int) -> int:
        config = json.loads((self.dir / f"node{i}" / "config.json").read_text())
        return int(config["listen"].rsplit(":", 1)[1])

    def kill(self, i: int) -> None:
        """SIGKILL: the process dies at once; its store and journal stay on disk."""
        pid = self.pid(i)
        if pid:
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if self.pid(i) is None:
                    break
                time.sleep(0.02)

    def restart(self, i: Optional[int] = None) -> None:
        """Starts node i (which must not be running), or every node that is not running."""
        if i is None:
            self._run("testnet", "up", "--dir", str(self.dir))
            return
        if self.pid(i):
            raise ValueError(f"node {i} is running")
        self._run("testnet", "up", "--dir", str(self.dir), "--node", str(i))

    def pause(self, i: int) -> None:
        """SIGSTOP: the node stops answering; to its peers it is cut off."""
        os.kill(self._require_pid(i), signal.SIGSTOP)

    def resume(self, i: int) -> None:
        os.kill(self._require_pid(i), signal.SIGCONT)

    # ---- wallets and transactions ----
    def wallet(self, alias: str):
        """The testnet wallet `alias` (a popchain.Wallet), loaded once."""
        if alias not in self._wallets:
            self._wallets[alias] = self._keystore.load(alias, self._passphrase)
        return self._wallets[alias]

    def address(self, alias: str):
        return self.wallet(alias).address

    def next_nonce(self, alias: str, via: int = 0) -> int:
        """The wallet's next nonce: counted locally once read from a node, so many
        transactions can be signed ahead of their commits."""
        with self._nonce_lock:
            if alias not in self._nonces:
                self._nonces[alias] = self.account(self.address(alias), via)["nonce"]
            n = self._nonces[alias]
            self._nonces[alias] = n + 1
            return n

    def transfer_tx(self, alias: str, to, amount: int, via: int = 0):
        return self.wallet(alias).transfer(self.chain_id, self.next_nonce(alias, via), to, amount)

    def submit(self, tx, via: int = 0, wait: bool = False, timeout: float = 30) -> Dict[str, Any]:
        """POST /v1/txs on node `via`; with wait, returns once it committed there."""
        target = "/v1/txs?wait=1" if wait else "/v1/txs"
        return self._http(via, "POST", target, tx.to_json(), timeout=timeout)

    def transfer(self, alias: str, to, amount: int, via: int = 0, wait: bool = True):
        return self.submit(self.transfer_tx(alias, to, amount, via), via=via, wait=wait)

    def mint(self, to, amount: int, via: int = 0, wait: bool = True):
        """A top-up signed by the chain authority (the seed's admin-approved "charge")."""
        return self.submit(self._authority_tx(lambda a, n: a.mint(self.chain_id, n, to, amount), via),
                           via=via, wait=wait)

    # ---- reading the chain ----
    def status(self, i: int) -> Dict[str, Any]:
        return self._http(i, "GET", "/v1/status")

    def account(self, address, i: int = 0) -> Dict[str, Any]:
        return self._http(i, "GET", f"/v1/accounts/{address}")

    def tx(self, txid: str, i: int = 0) -> Dict[str, Any]:
        return self._http(i, "GET", f"/v1/txs/{txid}")

    def block(self, height, i: int = 0) -> Dict[str, Any]:
        return self._http(i, "GET", f"/v1/blocks/{height}")

    def height(self, i: int) -> int:
        return self.status(i)["height"]

    def chain(self, i: int, upto: Optional[int] = None) -> List[str]:
        """Block hashes of node i from height 1 up to `upto` (default: its height)."""
        top = self.height(i) if upto is None else upto
        return [self.block(h, i)["block"]["hash"] for h in range(1, top + 1)]

    def metrics(self, i: int) -> str:
        return self._http(i, "GET", "/metrics", raw=True)

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.05) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if predicate():
                    return True
            except (NodeError, OSError):
                pass
            time.sleep(interval)
        return False

    def wait_converged(self, nodes: Optional[List[int]] = None, timeout: float = 30) -> int:
        """Waits until the running nodes (or `nodes`) have one height and one tip hash."""
        def same():
            ids = nodes if nodes is not None else [i for i in self.nodes() if self.pid(i)]
            tips = {(self.height(i), self.block("latest", i)["block"]["hash"]) for i in ids}
            return len(tips) == 1
        if not self.wait_for(same, timeout):
            raise TimeoutError("nodes did not converge: " +
                               ", ".join(f"{i}:{self._safe_height(i)}" for i in self.nodes()))
        ids = nodes if nodes is not None else [i for i in self.nodes() if self.pid(i)]
        return self.height(ids[0])

    # ---- membership ----
    def add_node(self, via: int = 0) -> int:
        """Creates node N (a new key, config and data dir), commits a `config` transaction
        adding it (signed by the authority key), and starts it: it catches up by state
        transfer and votes once the change takes effect. Returns its number. `via`: the
        running node that takes the transaction."""
        new = max(self.nodes()) + 1
        node_dir = self.dir / f"node{new}"
        node_dir.mkdir()
        key = _pc.SigningKey.generate()
        (node_dir / "replica.key").write_text(key.encrypted_pem(self._passphrase, 5))
        template = json.loads((self.dir / "node0" / "config.json").read_text())
        port = self.base_port + new
        template.update({"id": new, "listen": f"127.0.0.1:{port}",
                         "api": f"127.0.0.1:{self.base_port + 100 + new}"})
        (node_dir / "config.json").write_text(json.dumps(template, indent=2))
        change = _pc.ConfigChange(_pc.ConfigChange.Action.add_replica,
                                  _pc.ReplicaInfo(new, key.public_key, f"127.0.0.1:{port}"))
        self.submit(self._authority_tx(lambda a, n: a.config(self.chain_id, n, change), via),
                    via=via, wait=True)
        self.restart(new)
        return new

    # ---- internals ----
    def _authority_tx(self, build, via: int):
        if not hasattr(self, "_authority"):
            pem = (self.dir / "authority.key").read_text()
            self._authority = _pc.Wallet.from_encrypted_pem("authority", pem, self._passphrase)
        nonce = self.account(self._authority.address, via)["nonce"]
        return build(self._authority, nonce)

    def _require_pid(self, i: int) -> int:
        pid = self.pid(i)
        if not pid:
            raise ValueError(f"node {i} is not running")
        return pid

    def _safe_height(self, i: int):
        try:
            return self.height(i)
        except (NodeError, OSError):
            return "-"

    def _run(self, *args: str) -> str:
        r = subprocess.run([self.cli, *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"popchain {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def _http(self, i: int, method: str, target: str, body: Optional[str] = None,
              timeout: float = 30, raw: bool = False):
        url = f"http://127.0.0.1:{self.api_port(i)}{target}"
        data = body.encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            try:
                err = json.loads(text)["error"]
                raise NodeError(e.code, err["code"], err["message"]) from None
            except (ValueError, KeyError):
                raise NodeError(e.code, "http_error", text) from None
        return text if raw else json.loads(text)
