"""Test helpers: a real hub process, plain HTTP, and a scripted node that signs requests.

Reusable by any test that needs a hub::

    from hubproc import HubProcess, TestCluster, http_post

    cluster = TestCluster.create(tmp_path, ["north", "south"])
    with HubProcess(cluster.hub_config) as hub:          # `riversync hub serve`, port 0
        south = cluster.origin("south")                    # signs as node "south"
        status, reply = hub.post("/v1/push", south.batch(3))
        assert status == 200

- ``HubProcess`` starts ``riversync hub serve -c HUB_TOML --port 0`` as a
  separate process, reads the URL from its first stdout line, and always stops it
  (SIGTERM, then SIGKILL) on exit.  ``kill()`` is SIGKILL, ``start()`` again restarts it
  on a new free port.  Every wait is bounded.
- ``TestCluster`` runs the real ``riversync cluster init`` into a directory and can tighten
  the hub's limits in ``hub.toml``.
- ``Origin`` is one node's side of the batch chain: consecutive batches, signed with the
  node's real key, plus signed hello/pull/status requests with a fresh ts and nonce.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import tomli_w

from riversync import cluster as cluster_mod
from riversync import config
from riversync.protocol import codec, messages
from riversync.protocol.keys import Roster, SigningKey
from riversync.protocol.version import VERSION

# The `riversync` command of this interpreter's environment.  (Not `python -m riversync.cli`:
# run as __main__, that module's CommandError is another class than the commands raise.)
RIVERSYNC = [sys.executable, "-c", "import sys; from riversync.cli import main; sys.exit(main())"]

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- HTTP --------------------------------------------------------------------------------


def http(method: str, url: str, body: bytes | None = None,
         timeout: float = HTTP_TIMEOUT_S) -> tuple[int, str, bytes]:
    """One HTTP request; returns (status, content type, body) for any status."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/msgpack")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers.get("Content-Type", ""), e.read()


def http_post(url: str, body: bytes, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    status, _ctype, data = http("POST", url, body, timeout)
    return status, data


def decode_reply(data: bytes, type_):
    """Decode a hub reply as ``type_`` (PushReply, PullReply, HelloReply, ErrorReply, dict)."""
    return msgspec.msgpack.decode(data, type=type_)


# ---- the hub process -------------------------------------------------------------------------


class HubProcess:
    """``riversync hub serve`` in its own process on a free 127.0.0.1 port."""

    def __init__(self, config_path: Path | str, *, extra_args: list[str] | None = None):
        self.config_path = Path(config_path)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.lines: list[str] = []
        self._stderr = None

    def start(self, timeout: float = START_TIMEOUT_S) -> HubProcess:
        assert self.proc is None or self.proc.poll() is not None, "hub already running"
        self.lines = []
        self._stderr = open(self.config_path.parent / "hub-stderr.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*RIVERSYNC, "hub", "serve", "-c", str(self.config_path),
             "--port", "0", *self.extra_args],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or not self.url or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"hub did not start: {self.lines} (see hub-stderr.log)")
        return self

    def post(self, path: str, body: bytes, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
        return http_post(self.url + path, body, timeout)

    def get(self, path: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, str, bytes]:
        return http("GET", self.url + path, None, timeout)

    def status(self) -> dict:
        """The hub's GET /v1/status JSON."""
        import json

        code, _ct, data = self.get("/v1/status")
        assert code == 200, data
        return json.loads(data)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown at all."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        return self.proc.returncode

    def __enter__(self) -> HubProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- a scripted cluster and node -------------------------------------------------------------


@dataclass
class TestCluster:
    """A cluster made by the real ``cluster init``, with its keys loaded."""

    __test__ = False  # not a pytest class
    dir: Path
    hub_config: Path
    roster: Roster
    keys: dict[str, SigningKey]

    @classmethod
    def create(cls, directory: Path, offices: list[str], **limits: int) -> TestCluster:
        files = cluster_mod.init_cluster(directory, offices)
        if limits:
            set_hub_limits(files.hub_config, **limits)
        roster = config.load_roster(files.roster)
        keys = {o: config.load_signing_key(files.key_files[o]) for o in offices}
        return cls(dir=Path(directory), hub_config=files.hub_config, roster=roster, keys=keys)

    def origin(self, node: str, epoch: int = 1) -> Origin:
        return Origin(cluster=self.roster.cluster_id, node=node, key=self.keys[node], epoch=epoch)


def set_hub_limits(hub_toml: Path, **limits: int) -> None:
    data = tomllib.loads(Path(hub_toml).read_text())
    data.setdefault("limits", {}).update(limits)
    Path(hub_toml).write_text(tomli_w.dumps(data))


@dataclass
class Origin:
    """One node epoch's side of the chain: makes the next batch, or a signed request."""

    cluster: str
    node: str
    key: SigningKey
    epoch: int = 1
    n: int = 0
    seq: int = 0
    prev: bytes = codec.ZERO_HASH
    sent: list[bytes] = field(default_factory=list)

    def events(self, count: int, *, hlc: int | None = None, first: int | None = None,
               table: str = "t") -> list[messages.Create]:
        first = self.seq + 1 if first is None else first
        h = hlc if hlc is not None else (now_ms() << 16)
        return [
            messages.Create(node=self.node, epoch=self.epoch, seq=s, hlc=h, schema=1,
                            table=table, pk=f"{self.node}-{self.epoch}-{s}", user="u",
                            role="clerk", admin=False, values={"v": s})
            for s in range(first, first + count)
        ]

    def batch(self, count: int = 1, *, hlc: int | None = None, advance: bool = True,
              key: SigningKey | None = None, ts: int | None = None) -> bytes:
        """The next batch of ``count`` events, signed; ``advance=False`` leaves the chain as is."""
        evs = self.events(count, hlc=hlc)
        body = codec.make_batch(cluster=self.cluster, node=self.node, epoch=self.epoch,
                                n=self.n + 1, prev=self.prev, events=evs,
                                now_ms=ts if ts is not None else now_ms())
        data = codec.sign(body, key or self.key)
        if advance:
            self.n += 1
            self.seq += count
            self.prev = codec.body_hash(codec.decode(data, messages.Envelope).b)
            self.sent.append(data)
        return data

    def request(self, kind: str, *, ts: int | None = None, nonce: bytes | None = None,
                **fields) -> bytes:
        """A signed hello, pull or status request with a fresh timestamp and nonce."""
        cls = {"hello": messages.Hello, "pull": messages.Pull,
               "status": messages.StatusRequest}[kind]
        if kind in ("hello", "pull"):
            fields.setdefault("e", self.epoch)
        if kind == "pull":
            fields.setdefault("hub_epoch", 0)
            fields.setdefault("cursor", 0)
        body = cls(v=VERSION, c=self.cluster, o=self.node,
                   ts=now_ms() if ts is None else ts,
                   nonce=os.urandom(16) if nonce is None else nonce, **fields)
        return codec.sign(body, self.key)


# ---- looking at the hub's store from outside -------------------------------------------------


def store_snapshot(db_path: Path | str, *, cursors: bool = True) -> dict:
    """Everything the hub holds, read through a separate read-only connection.

    WAL lets this run while the hub serves.  Compare two snapshots to show that a refused
    request changed nothing.
    """
    import apsw

    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    conn.setbusytimeout(5000)
    try:
        with conn:
            snap = {
                "batches": conn.execute("SELECT seq, node, epoch, n, first, last, hash, "
                                        "envelope FROM hub_batches ORDER BY seq").fetchall(),
                "origins": conn.execute("SELECT node, epoch, batches, last_seq, last_hash "
                                        "FROM hub_origins ORDER BY node, epoch").fetchall(),
                "chain": conn.execute("SELECT * FROM hub_chain ORDER BY seq").fetchall(),
                "head": conn.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence "
                                     "WHERE name = 'hub_batches'").fetchone()[0],
            }
            if cursors:
                snap["cursors"] = conn.execute(
                    "SELECT node, hub_epoch, cursor FROM hub_cursors ORDER BY node").fetchall()
    finally:
        conn.close()
    return snap
