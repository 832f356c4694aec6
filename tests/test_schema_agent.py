"""A node whose schema file differs from the cluster's under the same version is refused at
hello and stops, against a real hub process: in-process agents for the details, and the
tester's case end to end with node processes (south's `players.phone` retyped text ->
integer under `version = 1`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from riversync.config import load_node_config
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node.agent import Agent, AgentSettings
from riversync.node.db import DbThread
from riversync.node.health import CRITICAL, NodeMetrics, Thresholds, evaluate
from riversync.node.localcluster import LocalCluster, update_toml
from riversync.node.transport import HubClient
from riversync.protocol.errors import SchemaMismatch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = [sys.executable, "-c", "import sys; from riversync.cli import main; sys.exit(main())"]
WAIT = 30.0


def wrong_schema(directory: Path) -> Path:
    """The cluster's file with `players.phone` retyped, still saying `version = 1`."""
    text = SCHEMA.read_text()
    marker = 'full_name = { type = "text", required = true }\nborn_on = "date"\nphone = "text"'
    assert marker in text
    path = directory / "schema-south.toml"
    path.write_text(text.replace(marker, marker.replace('phone = "text"', 'phone = "integer"')))
    assert load_schema(path).version == load_schema(SCHEMA).version
    assert load_schema(path).digest() != load_schema(SCHEMA).digest()
    return path


def registrations(c: LocalCluster, *args: str) -> dict:
    p = subprocess.run([*RIVERSYNC, "hub", "schemas", "-c", str(c.hub_config), "--json", *args],
                       capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def hub_status(c: LocalCluster) -> dict:
    import urllib.request

    with urllib.request.urlopen(c.hub_url + "/v1/status", timeout=WAIT) as r:
        return json.loads(r.read())


class Node:
    """An in-process node's store and agent, as the daemon wires them, on ``schema``."""

    def __init__(self, c: LocalCluster, office: str, schema: Path):
        self.cfg = load_node_config(c.node_configs[office])
        self.schema = schema
        self.db = DbThread()
        self.hub = HubClient(self.cfg.hub_url)
        self.store = None
        self.agent = None

    async def open(self) -> Node:
        self.store = await self.db.run(Store.open, str(self.cfg.db_path),
                                       load_schema(self.schema), self.cfg.roster,
                                       self.cfg.node_id, epoch=21)
        settings = AgentSettings(cluster_id=self.cfg.roster.cluster_id,
                                 node_id=self.cfg.node_id, sync_interval_s=1, realtime=False)
        self.agent = Agent(settings, self.store, self.db, self.cfg.signing_key(),
                           self.cfg.roster, self.hub, NodeMetrics())
        return self

    async def write(self, pk: str, **values) -> None:
        await self.db.run(self.store.commit_local,
                          [LocalChange(kind="create", table="players", pk=pk,
                                       values={"full_name": pk, **values})],
                          user=f"{self.cfg.office}-clerk", now_ms=int(time.time() * 1000))

    async def close(self) -> None:
        await self.hub.close()
        await self.db.run(self.store.close)
        self.db.shutdown()


def test_a_node_with_another_file_under_the_same_version_stops_and_sends_nothing(hub_only,
                                                                                   tmp_path):
    """[N-SCHEMA-1] the hello carries the schema's version and digest; SCHEMA_MISMATCH
    stops the agent (critical, with the hint) before it pushes or pulls anything."""
    c = hub_only

    async def main():
        north = await Node(c, "north", SCHEMA).open()
        await north.write("N-1", phone="555-0100")
        await north.agent.sync_now()
        right = load_schema(SCHEMA).digest()
        assert [(r["version"], r["digest"], r["node"]) for r in
                registrations(c)["schemas"]] == [(1, right, "north")]

        south = await Node(c, "south", wrong_schema(tmp_path)).open()
        await south.write("S-1", phone=5550111)  # an integer: fine by south's file only
        with pytest.raises(SchemaMismatch):
            await south.agent.sync_now()
        assert south.agent.state == "stopped"
        err = south.agent.error
        assert err["action"] == "stop" and right[:12] in err["message"]
        assert "node north" in err["message"] and "schema file" in err["hint"]
        level, reasons = evaluate({"agent": south.agent.snapshot(), "now": time.time(),
                                   "started_at": time.time()}, Thresholds())
        assert level == CRITICAL
        assert any(r["code"] == "SYNC_STOPPED" and "SCHEMA_MISMATCH" in r["message"]
                   for r in reasons)
        # nothing left south, nothing arrived: the write waits, the hub holds none of it
        assert await south.db.run(south.store.outbox_size) == 1
        assert await south.db.run(south.store.get_cursor, "hub") is None
        assert await south.db.run(south.store.get_row, "players", "N-1") is None
        assert not [o for o in hub_status(c)["origins"] if o.startswith("south/")]
        await north.close()
        await south.close()

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_forget_lets_the_office_with_the_right_file_register_and_sync(hub_only, tmp_path):
    """[H-SCHEMA-2] the wrong-first case: south's wrong file registered first; north (the
    cluster's file) is refused; after `hub schemas --forget 1` north syncs, and south is
    refused in turn."""
    c = hub_only

    async def main():
        south = await Node(c, "south", wrong_schema(tmp_path)).open()
        await south.agent.sync_now()
        north = await Node(c, "north", SCHEMA).open()
        await north.write("N-1")
        with pytest.raises(SchemaMismatch) as e:
            await north.agent.sync_now()
        assert north.agent.state == "stopped" and "node south" in e.value.message
        assert "riversync hub schemas -c hub.toml --forget 1" in north.agent.error["hint"]

        gone = registrations(c, "--forget", "1")["forgot"]
        assert gone["node"] == "south"
        await north.agent.sync_now()  # restarts the stopped agent: hello registers north
        assert north.agent.state == "running"
        assert await north.db.run(north.store.outbox_size) == 0
        assert registrations(c)["schemas"][0]["node"] == "north"
        with pytest.raises(SchemaMismatch):
            await south.agent.sync_now()
        assert south.agent.error["code"] == "SCHEMA_MISMATCH"
        await north.close()
        await south.close()

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_the_testers_case_end_to_end_with_node_processes(tmp_path):
    """South is created from a file with `players.phone` retyped under `version = 1`: its
    status is critical with SCHEMA_MISMATCH and a 'what to do' line, north is untouched;
    the runbook's fix (the cluster's file, then `riversync node adopt-schema`) converges and
    keeps the write south took meanwhile."""
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    wrong = wrong_schema(c.dir)
    update_toml(c.node_configs["south"], schema_path=str(wrong))
    try:
        c.start("hub")
        c.start("north")
        c.wait_for("north's registration", lambda: registrations(c)["schemas"], WAIT)
        c.client("north", "north-clerk").post(
            "/v1/tables/players/rows", {"pk": "N-1", "values": {"full_name": "n",
                                                                 "phone": "555-0100"}})
        c.start("south")

        def south_stopped():
            st = c.status("south")
            return st if (st["agent"].get("error") or {}).get("code") == "SCHEMA_MISMATCH" \
                else None

        st = c.wait_for("south refused", south_stopped, WAIT)
        assert st["level"] == "critical" and st["agent"]["state"] == "stopped"
        p = subprocess.run([*RIVERSYNC, "status", "-c", str(c.node_configs["south"])],
                           capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 2
        assert "SCHEMA_MISMATCH" in p.stdout and "what to do: copy the cluster's schema" \
            in p.stdout and "node north" in p.stdout
        assert c.status("north")["level"] == "ok"
        assert not [o for o in hub_status(c)["origins"] if o.startswith("south/")]
        p = subprocess.run([*RIVERSYNC, "verify", "-c", str(c.node_configs["north"]), "-c",
                            str(c.node_configs["south"])],
                           capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 1, p.stdout + p.stderr  # waiting will not help
        assert "REPLICATION STOPPED AT NODE south: SCHEMA_MISMATCH" in p.stdout
        assert "NOT CONVERGING" in p.stdout

        # South keeps taking local writes while replication is stopped.
        c.client("south", "south-clerk").post(
            "/v1/tables/players/rows", {"pk": "S-1", "values": {"full_name": "s"}})
        # The fix: the cluster's file, then (the database having recorded the other file
        # under version 1) adopt it, which folds every row again under it.
        c.stop("south")
        shutil.copyfile(SCHEMA, wrong)
        with pytest.raises(RuntimeError, match="SCHEMA_CHANGED"):
            c.start("south")  # the database holds the other file's digest for version 1
        p = subprocess.run([*RIVERSYNC, "node", "adopt-schema", "-c",
                            str(c.node_configs["south"]), "--json"],
                           capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["refolded_rows"] >= 1
        p = subprocess.run([*RIVERSYNC, "node", "adopt-schema", "-c",
                            str(c.node_configs["south"])], capture_output=True, text=True,
                           timeout=WAIT)
        assert p.returncode == 0 and "nothing was changed" in p.stdout, p.stderr
        p = subprocess.run([*RIVERSYNC, "node", "adopt-schema", "-c",
                            str(c.node_configs["south"]), "--schema", str(wrong) + ".missing"],
                           capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 3 and "no schema file" in p.stderr
        c.start("south")
        c.wait_for("convergence", c.converged, WAIT)
        assert c.client("south", "south-clerk").get("/v1/tables/players/rows/N-1")
        assert c.client("north", "north-clerk").get("/v1/tables/players/rows/S-1")
        assert c.status("south")["level"] == "ok"
        p = subprocess.run([*RIVERSYNC, "verify", "-c", str(c.node_configs["south"])],
                           capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 0 and "Only one node was asked" in p.stdout, p.stdout
    finally:
        c.stop_all()
