"""Helpers for the POP Market tests: start popmarket against a LocalCluster, and a small
HTTP client that keeps a session cookie and the CSRF token like the web UI does."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional


def find_popmarket() -> str:
    if os.environ.get("POPMARKET_BIN"):
        return os.environ["POPMARKET_BIN"]
    import popchain
    build = Path(popchain.__file__).resolve().parents[3]
    candidate = build / "examples" / "marketplace" / "popmarket"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError("popmarket not found: set POPMARKET_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reply:
    def __init__(self, status: int, body: Any, headers):
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def code(self) -> Optional[str]:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body!r})"


class Client:
    """One browser: a cookie and a CSRF token."""

    def __init__(self, base: str):
        self.base = base
        self.cookie: Optional[str] = None
        self.csrf: Optional[str] = None

    def request(self, method: str, path: str, body: Any = None, csrf: Any = True,
                content_type: str = "application/json", raw: Optional[bytes] = None,
                timeout: float = 60) -> Reply:
        headers = {}
        data = None
        if method != "GET":
            data = raw if raw is not None else json.dumps({} if body is None else body).encode()
            if content_type:
                headers["Content-Type"] = content_type
            token = self.csrf if csrf is True else csrf
            if token:
                headers["X-CSRF-Token"] = token
        if self.cookie:
            headers["Cookie"] = f"pm_session={self.cookie}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text, hdrs = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, text, hdrs = e.code, e.read(), e.headers
        cookie = hdrs.get("Set-Cookie")
        if cookie and cookie.startswith("pm_session="):
            value = cookie.split(";", 1)[0].split("=", 1)[1]
            self.cookie = value or None
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        if isinstance(parsed, dict) and "csrf" in parsed:
            self.csrf = parsed["csrf"]
        return Reply(status, parsed, hdrs)

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> Reply:
        return self.request("POST", path, body, **kw)

    def signup(self, username: str, password: str = "correct horse battery") -> Reply:
        r = self.post("/api/signup", {"username": username, "password": password})
        assert r.status == 201, r
        return r

    def login(self, username: str, password: str) -> Reply:
        return self.post("/api/login", {"username": username, "password": password})


class Market:
    """A popmarket process serving a LocalCluster's chain."""

    ADMIN_PASSWORD = "admin password 1"

    def __init__(self, cluster, workdir: Path, nodes: Optional[List[int]] = None, **options):
        self.cluster = cluster
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "admin-password").write_text(self.ADMIN_PASSWORD + "\n")
        args = [find_popmarket(), "--db", str(workdir / "market.db"),
                "--listen", f"127.0.0.1:{self.port}",
                "--genesis", str(cluster.dir / "genesis.json"),
                "--admin", "admin", "--admin-password-file", str(workdir / "admin-password"),
                "--authority-key", str(cluster.dir / "authority.key"),
                "--authority-passphrase-file", str(cluster.dir / "passphrase")]
        for i in (nodes if nodes is not None else cluster.nodes()):
            args += ["--node", f"127.0.0.1:{cluster.api_port(i)}"]
        for k, v in options.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.log = open(workdir / "popmarket.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"popmarket exited with {self.proc.returncode}: "
                                   f"{(workdir / 'popmarket.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("popmarket did not start")

    def client(self) -> Client:
        return Client(self.base)

    def admin(self) -> Client:
        c = self.client()
        r = c.login("admin", self.ADMIN_PASSWORD)
        assert r.status == 200, r
        return c

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_until(predicate, timeout: float = 30, interval: float = 0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met; last value {last!r}")
