"""A whole cluster on one machine: a hub and office nodes as separate local processes.

The demo runs on it, and so do the integration tests, so what the tests prove is what a
user sees.  Every process is started with its own session (Ctrl-C in the terminal reaches
only the demo, which then stops them in order), logs to a file in the cluster directory,
and is stopped with SIGTERM, then SIGKILL if it does not exit in time.  Every wait has a
timeout.  Ports are chosen free on 127.0.0.1 and written into the configs before start,
so the hub keeps its address across a restart and the operator commands find each node.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import tomli_w

from riversync import cluster as cluster_mod
from riversync.config import load_node_config

from .client import NodeClient, read_tokens

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def update_toml(path: Path, **fields: Any) -> None:
    """Set top-level fields (a dict value updates that table) of a TOML file."""
    data = tomllib.loads(path.read_text())
    for k, v in fields.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    path.write_text(tomli_w.dumps(data))


def _get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


class Proc:
    """One daemon process with a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, ready_url: str):
        self.name = name
        self.argv = argv
        self.log = log
        self.ready_url = ready_url
        self.popen: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        if self.running:
            return
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode} at start; "
                                   f"log: {self.log}\n{self.tail()}")
            if _get(self.ready_url, 1.0) == 200:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout:.0f} s; log: {self.log}"
                           f"\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT_S)


class LocalCluster:
    """A hub and office nodes in one directory, each run as its own process."""

    def __init__(self, directory: Path, offices: list[str], *, schema: Path,
                 sync_interval_s: int = 1, realtime: bool = True,
                 alerts: dict | None = None):
        self.dir = Path(directory)
        self.offices = list(offices)
        self.schema = Path(schema)
        self.sync_interval_s = sync_interval_s
        self.realtime = realtime
        self.alerts = alerts or {}
        self.procs: dict[str, Proc] = {}
        self.tokens: dict[str, str] = {}
        self.hub_url = ""
        self.node_configs: dict[str, Path] = {}
        self.hub_config = self.dir / "hub.toml"

    # ---- making the cluster -------------------------------------------------------------

    def create(self) -> LocalCluster:
        hub_port = free_port()
        self.hub_url = f"http://127.0.0.1:{hub_port}"
        files = cluster_mod.init_cluster(self.dir, self.offices, hub_url=self.hub_url,
                                         hub_port=hub_port)
        shutil.copyfile(self.schema, self.dir / "schema.toml")
        self.tokens = read_tokens(files.tokens_file)
        self.hub_config = files.hub_config
        for office, path in files.node_configs.items():
            fields: dict[str, Any] = {"listen_port": free_port(),
                                      "sync_interval_s": self.sync_interval_s,
                                      "realtime": self.realtime}
            if self.alerts:
                fields["alerts"] = dict(self.alerts)
            update_toml(path, **fields)
            self.node_configs[office] = path
        self._make_procs()
        return self

    @classmethod
    def open(cls, directory: Path) -> LocalCluster:
        """An existing cluster directory (made by ``create``)."""
        d = Path(directory)
        roster = tomllib.loads((d / "roster.toml").read_text())
        c = cls(d, roster["offices"], schema=d / "schema.toml")
        c.tokens = read_tokens(d / "tokens.txt")
        c.node_configs = {o: d / f"node-{o}.toml" for o in c.offices}
        hub = tomllib.loads((d / "hub.toml").read_text())
        c.hub_url = f"http://127.0.0.1:{hub['listen_port']}"
        c._make_procs()
        return c

    def _make_procs(self) -> None:
        py = [sys.executable, "-m", "riversync.cli"]
        self.procs["hub"] = Proc("hub", [*py, "hub", "serve", "-c", str(self.hub_config)],
                                 self.dir / "hub.log", self.hub_url + "/metrics")
        for office, path in self.node_configs.items():
            url = self.node_url(office)
            self.procs[office] = Proc(f"node {office}",
                                      [*py, "node", "serve", "-c", str(path)],
                                      self.dir / f"node-{office}.log", url + "/healthz")

    # ---- processes ----------------------------------------------------------------------

    def node_config(self, office: str):
        return load_node_config(self.node_configs[office])

    def node_url(self, office: str) -> str:
        data = tomllib.loads(self.node_configs[office].read_text())
        return f"http://127.0.0.1:{data['listen_port']}"

    def start(self, name: str) -> None:
        self.procs[name].start()

    def start_all(self) -> None:
        """Start the hub and every node at once (nodes retry until the hub answers)."""
        names = ["hub", *self.offices]
        try:
            for name in names:
                self.procs[name].spawn()
            for name in names:
                self.procs[name].wait_ready()
        except BaseException:
            self.stop_all()
            raise

    def stop(self, name: str) -> None:
        self.procs[name].stop()

    def kill(self, name: str) -> None:
        self.procs[name].kill()

    def stop_all(self) -> None:
        """Stop every process this cluster started: nodes first, then the hub."""
        errors = []
        for name in [*self.offices, "hub"]:
            try:
                self.procs[name].stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                errors.append(f"{name}: {e}")
        if errors:
            raise RuntimeError("could not stop: " + "; ".join(errors))

    def pids(self) -> dict[str, int | None]:
        return {name: p.pid for name, p in self.procs.items()}

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # ---- talking to nodes -----------------------------------------------------------------

    def client(self, office: str, user: str | None = None, timeout_s: float = 30.0) -> NodeClient:
        name = user or f"{office}-operator"
        return NodeClient(self.node_url(office), self.tokens[name], timeout_s)

    def status(self, office: str) -> dict:
        return self.client(office).get("/v1/status")

    def digests(self, office: str) -> dict:
        return self.client(office).get("/v1/digests")

    def wait_for(self, what: str, check, timeout: float, interval: float = 0.1):
        """Poll ``check()`` until it returns a truthy value; raise TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except Exception as e:  # noqa: BLE001 - a node restarting answers nothing yet
                last = e
            if last and not isinstance(last, Exception):
                return last
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")

    def converged(self) -> bool:
        """Every node holds the same events and the same state, and has nothing queued."""
        ds = [self.digests(o) for o in self.offices]
        same = all(json.dumps(d["events"], sort_keys=True) == json.dumps(ds[0]["events"],
                   sort_keys=True) and d["state"] == ds[0]["state"] for d in ds)
        return same and all(self.status(o)["outbox"] == 0 for o in self.offices)
