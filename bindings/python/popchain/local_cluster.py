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
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import _popchain as _pc


class NodeError(Exception):
    """A node answered with an HTTP error (status, code, message), or could not be reached
    (NodeUnreachable, status 0). From submit() and transfer(), tx_refused says whether the
    node did not take the transaction (so its nonce is free again)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        # Set by submit(): the node answered the transaction itself with an error (4xx, or
        # 5xx such as not_member or mempool_full), or refused the connection, so it did not
        # take it. False for errors on the way to a commit after the node had taken it.
        self.tx_refused = False


class NodeUnreachable(NodeError, ConnectionError):
    """No answer from a node's API: it is not running, paused, refusing, or too slow for the
    timeout. Also a ConnectionError, so `except OSError` catches it as before."""

    def __init__(self, node: int, reason: str, refused: bool = False):
        super().__init__(0, "unreachable", f"node {node}: {reason}")
        self.node = node
        # The connection was refused: nothing of the request reached the node.
        self.refused = refused


# The most nodes `popchain testnet init` makes.
MAX_NODES = 64


def _stop_nodes(cli: str, directory: str) -> None:
    """`testnet down` for a cluster whose LocalCluster was never closed (at interpreter exit
    or when it is garbage-collected), after waking paused nodes so they can shut down."""
    for pid_file in Path(directory).glob("node*/node.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGCONT)
        except (OSError, ValueError):
            pass
    subprocess.run([cli, "testnet", "down", "--dir", directory], capture_output=True, text=True)


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


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return range(low, high + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _free_base_port(count: int) -> int:
    """A port P with P..P+count-1 and P+100..P+100+count-1 free right now, below the
    ephemeral range: after a busy test thousands of closed client connections sit there in
    TIME_WAIT. The nodes listen with SO_REUSEADDR, so the check does too."""
    import random
    ephemeral = _ephemeral_ports()
    top = min(ephemeral.start, 65536) - 100 - count
    if top <= 10000:
        top = 65536 - 100 - count
    for _ in range(200):
        base = random.randrange(10000, top)
        ports = list(range(base, base + count)) + list(range(base + 100, base + 100 + count))
        if any(p in ephemeral for p in ports):
            continue
        ok = True
        for port in ports:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {count} free ports (and {count} more 100 above them) below the "
                       f"ephemeral range {ephemeral.start}..{ephemeral.stop - 1}")


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
        """Writes a testnet of `nodes` replicas (1..64) and `wallets` funded wallets w0, w1, ...
        (each with `balance`) into `dir`, or into a temporary directory removed by close().
        Nothing runs until start(). `cli`: the popchain tool (default: $POPCHAIN_CLI, the
        build tree's, or PATH)."""
        for name, value in (("nodes", nodes), ("wallets", wallets), ("balance", balance)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1..{MAX_NODES}, not {nodes}")
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
        # Stops the nodes if this object is dropped or the interpreter exits without close().
        # Created after the temporary directory, so it runs before that directory's cleanup.
        self._finalizer = weakref.finalize(self, _stop_nodes, self.cli, str(self.dir))

    # ---- lifetime ----
    def start(self) -> "LocalCluster":
        """Starts every node that is not running and waits until each listens. If one fails
        to start, the others are stopped again and the error is raised."""
        try:
            self._run("testnet", "up", "--dir", str(self.dir))
        except BaseException:
            self.stop()
            raise
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
        """stop(), then removes the temporary directory (if the cluster made one)."""
        self.stop()
        self._finalizer.detach()
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
        """The pid of node i if it is running (IndexError for a node the cluster lacks)."""
        self._require_node(i)
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
        config = json.loads((self._require_node(i) / "config.json").read_text())
        return int(config["api"].rsplit(":", 1)[1])

    def replica_port(self, i: int) -> int:
        config = json.loads((self._require_node(i) / "config.json").read_text())
        return int(config["listen"].rsplit(":", 1)[1])

    def kill(self, i: int) -> None:
        """SIGKILL: the process dies at once; its store and journal stay on disk. ValueError
        if node i is not running."""
        os.kill(self._require_pid(i), signal.SIGKILL)
        for _ in range(100):
            if self.pid(i) is None:
                break
            time.sleep(0.02)

    def restart(self, i: Optional[int] = None) -> None:
        """Starts node i (which must not be running), or every node that is not running."""
        if i is None:
            self._run("testnet", "up", "--dir", str(self.dir))
            return
        if self.pid(i):  # also IndexError for a node the cluster lacks
            raise ValueError(f"node {i} is running")
        self._run("testnet", "up", "--dir", str(self.dir), "--node", str(i))

    def pause(self, i: int) -> None:
        """SIGSTOP: the node stops answering; to its peers it is cut off."""
        os.kill(self._require_pid(i), signal.SIGSTOP)

    def resume(self, i: int) -> None:
        """SIGCONT: a paused node goes on; its peers bring it up to date."""
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
        transactions can be signed ahead of their commits. A transaction that is not sent
        after all should give its nonce back with release_nonce()."""
        with self._nonce_lock:
            if alias not in self._nonces:
                self._nonces[alias] = self.account(self.address(alias), via)["nonce"]
            n = self._nonces[alias]
            self._nonces[alias] = n + 1
            return n

    def release_nonce(self, alias: str, nonce: int) -> None:
        """Gives back a nonce from next_nonce() whose transaction the chain will never see
        (it could not be signed, or a node refused it). The next transaction reuses it if it
        was the last one taken; otherwise the count is read from a node again, since the
        later ones now wait behind a gap."""
        with self._nonce_lock:
            if self._nonces.get(alias) == nonce + 1:
                self._nonces[alias] = nonce
            else:
                self._nonces.pop(alias, None)

    def transfer_tx(self, alias: str, to, amount: int, via: int = 0):
        """A transfer of `amount` from wallet `alias` to address `to`, signed with the
        wallet's next nonce (next_nonce()); not sent."""
        nonce = self.next_nonce(alias, via)
        try:
            return self.wallet(alias).transfer(self.chain_id, nonce, to, amount)
        except BaseException:
            self.release_nonce(alias, nonce)
            raise

    def submit(self, tx, via: int = 0, wait: bool = False, timeout: float = 30) -> Dict[str, Any]:
        """POST /v1/txs on node `via`: the node's answer ({"id", "status", ...}). With wait,
        returns only once the transaction committed there ("status": "committed"), and
        raises TimeoutError if it has not within `timeout` seconds. A refusal raises
        NodeError (status 4xx/5xx, the node's error code; tx_refused tells whether the node
        did not take the transaction)."""
        end = time.monotonic() + timeout
        try:
            answer = self._http(via, "POST", "/v1/txs?wait=1" if wait else "/v1/txs",
                                tx.to_json(), timeout=timeout)
        except NodeError as e:
            e.tx_refused = e.status >= 400 or (isinstance(e, NodeUnreachable) and e.refused)
            raise
        if not wait:
            return answer
        while answer.get("status") != "committed":
            if time.monotonic() >= end:
                raise TimeoutError(f"transaction {answer.get('id')} not committed on node "
                                   f"{via} within {timeout} s (status {answer.get('status')})")
            time.sleep(0.05)
            answer = self._http(via, "GET", f"/v1/txs/{answer['id']}", timeout=timeout)
            if answer.get("status") == "committed":
                answer = {"id": answer["tx"]["id"], "status": "committed",
                          "height": answer["height"], "block_hash": answer["block_hash"]}
        return answer

    def transfer(self, alias: str, to, amount: int, via: int = 0, wait: bool = True):
        """Signs a transfer from wallet `alias` (transfer_tx()) and submit()s it on node
        `via`, by default waiting for its commit. If the node does not take it (NodeError
        with tx_refused: an overdraft, a zero amount, a node that is not a member, a full
        mempool, a refused connection), its nonce is given back, so the wallet's next
        transaction is not held behind a gap."""
        tx = self.transfer_tx(alias, to, amount, via)
        try:
            return self.submit(tx, via=via, wait=wait)
        except NodeError as e:
            if e.tx_refused:
                self.release_nonce(alias, tx.nonce)
            raise

    def mint(self, to, amount: int, via: int = 0, wait: bool = True):
        """A top-up signed by the chain authority (the seed's admin-approved "charge")."""
        return self.submit(self._authority_tx(lambda a, n: a.mint(self.chain_id, n, to, amount), via),
                           via=via, wait=wait)

    # ---- reading the chain ----
    def status(self, i: int) -> Dict[str, Any]:
        """GET /v1/status of node i: height, view, primary, peers, mempool, ..."""
        return self._http(i, "GET", "/v1/status")

    def account(self, address, i: int = 0) -> Dict[str, Any]:
        return self._http(i, "GET", f"/v1/accounts/{address}")

    def tx(self, txid: str, i: int = 0) -> Dict[str, Any]:
        """GET /v1/txs/{txid} on node i: the committed transaction with its block and Merkle
        proof, or {"status": "pending"}; NodeError 404 if the node does not know it."""
        return self._http(i, "GET", f"/v1/txs/{txid}")

    def block(self, height, i: int = 0) -> Dict[str, Any]:
        """GET /v1/blocks/{height} (or "latest") on node i: the block, whether it is
        certified yet, and its commit proof."""
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
        transfer and votes once the change takes effect: after the first block at a
        multiple of the checkpoint interval (status()["checkpoint_interval"], 32 by default)
        above the config transaction, so a cluster that commits nothing more keeps the old
        set. Returns its number. `via`: the running node that takes the transaction. If the
        transaction is refused or cannot be sent, the new node's directory is removed again
        and the error raised (after a timeout it stays: the change may still commit)."""
        self._require_pid(via)
        new = max(self.nodes()) + 1
        node_dir = self.dir / f"node{new}"
        node_dir.mkdir()
        try:
            return self._add_node(new, node_dir, via)
        except BaseException as e:
            refused = isinstance(e, NodeError) and e.tx_refused
            if refused or not (node_dir / "config.json").exists():
                shutil.rmtree(node_dir, ignore_errors=True)
            raise

    def _add_node(self, new: int, node_dir: Path, via: int) -> int:
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

    def _require_node(self, i: int) -> Path:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"a node number is an int, not {type(i).__name__}")
        node_dir = self.dir / f"node{i}"
        if i < 0 or not (node_dir / "config.json").exists():
            raise IndexError(f"no node {i} in this cluster (nodes {self.nodes()})")
        return node_dir

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
        except urllib.error.URLError as e:
            refused = isinstance(e.reason, ConnectionRefusedError)
            raise NodeUnreachable(i, str(e.reason), refused) from None
        except (OSError, TimeoutError) as e:  # reset, refused mid-answer, timed out reading
            raise NodeUnreachable(i, str(e) or type(e).__name__) from None
        return text if raw else json.loads(text)
