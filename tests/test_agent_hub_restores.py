"""A node that slept through two hub restores in a row catches up without skipping anything.

The node keeps the cursor of the hub's first epoch.  After the first restore the hub
numbered new batches from the first restore point again; the second restore point is
higher.  Only the hub knows both, so the node sends its old (hub epoch, cursor) unchanged
and the hub starts from the smallest [H-EPOCH-2]; a node that took the minimum of its
cursor and the newest restore point itself would skip the batches in between.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"
WAIT = 30.0


def hub_status(c: LocalCluster) -> dict:
    return json.loads(urllib.request.urlopen(c.hub_url + "/v1/status", timeout=WAIT).read())


def hub_cmd(c: LocalCluster, *args: str) -> None:
    subprocess.run([str(RIVERSYNC), "hub", *args, "-c", str(c.hub_config)], check=True,
                   capture_output=True, timeout=WAIT)


def players(c: LocalCluster, office: str) -> set[str]:
    return {r["player_id"] for r in
            c.client(office).get("/v1/tables/players/rows?limit=1000")["rows"]}


def test_a_node_behind_two_hub_restores_misses_nothing(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    north_clerk = None

    def add(pk: str) -> None:
        north_clerk.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})

    def pushed() -> bool:
        return c.status("north")["outbox"] == 0

    try:
        c.start_all()
        north_clerk = c.client("north", "north-clerk")
        add("B-0")
        c.wait_for("convergence", c.converged, WAIT)
        hub_cmd(c, "backup", str(tmp_path / "hub-1.db"))
        first_point = hub_status(c)["head"]
        for i in range(6):  # one batch each: south's cursor ends well past the first backup
            add(f"A-{i}")
            c.wait_for("north to push", pushed, WAIT)
        c.wait_for("convergence", c.converged, WAIT)
        south_cursor = c.status("south")["agent"]["cursor"][1]
        c.stop("south")

        # First restore: the hub forgets A-*; north pushes them again as one batch, then
        # writes N-1, which the hub numbers below south's old cursor.
        c.stop("hub")
        hub_cmd(c, "restore", str(tmp_path / "hub-1.db"))
        c.start("hub")
        c.wait_for("north to push again", lambda: hub_status(c)["events_held"] == 7, WAIT)
        add("N-1")
        c.wait_for("north to push", lambda: hub_status(c)["events_held"] == 8, WAIT)
        second_point = hub_status(c)["head"]
        assert first_point < second_point <= south_cursor  # the case a local minimum skips

        # Second restore, from a backup that holds everything: nothing is lost this time.
        hub_cmd(c, "backup", str(tmp_path / "hub-2.db"))
        c.stop("hub")
        hub_cmd(c, "restore", str(tmp_path / "hub-2.db"))
        c.start("hub")
        assert len(hub_status(c)["epochs"]) == 3

        c.start("south")
        add("N-2")
        c.wait_for("convergence", c.converged, WAIT)
        want = {"B-0", "N-1", "N-2", *(f"A-{i}" for i in range(6))}
        assert players(c, "south") == players(c, "north") == want
        assert c.client("south").get("/v1/conflicts")["conflicts"] == []
        for office in c.offices:
            assert c.status(office)["agent"]["state"] == "running"
    finally:
        c.stop_all()


def two_offices(tmp_path) -> LocalCluster:
    return LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                        realtime=True).create()


def put_hub_back_by_hand(c: LocalCluster, backup: Path) -> None:
    """Copy ``backup`` over the stopped hub's store, head file and all gone: no restore
    marker, so the hub keeps its hub epoch."""
    from riversync.config import load_hub_config

    db = load_hub_config(c.hub_config).db_path
    for suffix in ("", "-wal", "-shm", ".head"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(backup.read_bytes())


def test_a_hub_store_put_back_by_hand_stops_replication_until_a_hub_restore(tmp_path):
    """[H-PULL-3] seen from the node: a hub store copied back by hand keeps its hub epoch,
    so the nodes' cursors are past its head.  A node used to lower its cursor to the head
    in silence and then skip, for good, the batches the hub took up to its old cursor.  Now
    replication stops (CURSOR_AHEAD) before anything is pushed or pulled, and `riversync
    hub restore` of the same file (a new hub epoch) brings every write back."""
    c = two_offices(tmp_path)
    try:
        c.start_all()
        north, south = c.client("north", "north-clerk"), c.client("south", "south-clerk")
        north.post("/v1/tables/players/rows", {"pk": "B-0", "values": {"full_name": "B"}})
        c.wait_for("convergence", c.converged, WAIT)
        backup = tmp_path / "hub-old.db"
        hub_cmd(c, "backup", str(backup))
        for i in range(3):
            north.post("/v1/tables/players/rows", {"pk": f"A-{i}", "values": {"full_name": "A"}})
            south.post("/v1/tables/players/rows", {"pk": f"S-{i}", "values": {"full_name": "S"}})
        c.wait_for("convergence", c.converged, WAIT)
        c.stop("hub")
        put_hub_back_by_hand(c, backup)
        c.start("hub")
        north.post("/v1/tables/players/rows", {"pk": "N-1", "values": {"full_name": "N"}})
        for office in c.offices:
            c.wait_for(f"{office} to stop", lambda o=office: (c.status(o)["agent"].get("error")
                       or {}).get("code") == "CURSOR_AHEAD", WAIT)
            assert c.status(office)["agent"]["state"] == "stopped"
        assert hub_status(c)["events_held"] == 1  # nothing was pushed to the stale store

        c.stop("hub")
        hub_cmd(c, "restore", str(backup))
        c.start("hub")
        for office in c.offices:
            c.client(office, f"{office}-operator").post("/v1/sync", {})
        c.wait_for("convergence", c.converged, WAIT)
        want = {"B-0", "N-1", *(f"A-{i}" for i in range(3)), *(f"S-{i}" for i in range(3))}
        assert players(c, "north") == players(c, "south") == want
        for office in c.offices:
            assert c.status(office)["agent"]["state"] == "running"
    finally:
        c.stop_all()


def test_verify_names_a_node_that_skipped_batches_of_a_store_put_back_by_hand(tmp_path):
    """The case the node cannot see: north was down while the stale store ran and south
    pushed it past north's old cursor, so north's cursor is not ahead of the head and it
    pulls on from there, past south's batches it never had.  The hub counts north as caught
    up; verify reads the hub first and names the events north will never get."""
    c = two_offices(tmp_path)
    try:
        c.start_all()
        north, south = c.client("north", "north-clerk"), c.client("south", "south-clerk")
        north.post("/v1/tables/players/rows", {"pk": "N-0", "values": {"full_name": "N"}})
        south.post("/v1/tables/players/rows", {"pk": "S-0", "values": {"full_name": "S"}})
        c.wait_for("convergence", c.converged, WAIT)
        backup = tmp_path / "hub-old.db"
        hub_cmd(c, "backup", str(backup))
        c.stop("south")
        for i in range(1, 4):
            north.post("/v1/tables/players/rows", {"pk": f"N-{i}", "values": {"full_name": "N"}})
            c.wait_for("north to push", lambda: c.status("north")["outbox"] == 0, WAIT)
        c.wait_for("north to pull", lambda: c.status("north")["agent"]["cursor"][1]
                   == hub_status(c)["head"], WAIT)
        c.stop("north")
        c.stop("hub")
        put_hub_back_by_hand(c, backup)
        c.start("hub")
        c.start("south")
        south = c.client("south", "south-clerk")
        for i in range(1, 6):
            south.post("/v1/tables/players/rows", {"pk": f"S-{i}", "values": {"full_name": "S"}})
            c.wait_for("south to push", lambda: c.status("south")["outbox"] == 0, WAIT)
        c.start("north")
        c.wait_for("north to pull", lambda: hub_status(c)["nodes"]["north"]["backlog_batches"]
                   == 0 and c.status("north")["agent"]["state"] == "running", WAIT)
        argv = [str(RIVERSYNC), "verify", "-c", str(c.node_configs["north"]), "-c",
                str(c.node_configs["south"])]
        p = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=WAIT)
        assert p.returncode == 1, p.stdout + p.stderr
        got = json.loads(p.stdout)["skipped"]
        assert list(got) == ["north"] and got["north"][0]["origin"].startswith("south/")
        text = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT).stdout
        assert "NODE north SKIPPED EVENTS" in text and "NOT CONSISTENT" in text, text
        # north itself sees it: it holds south's later events past a gap
        st = c.status("north")
        assert st["level"] == "critical", st["reasons"]
        assert "EVENTS_SKIPPED" in [r["code"] for r in st["reasons"]], st["reasons"]
        assert "EVENTS_SKIPPED" not in [r["code"] for r in c.status("south")["reasons"]]
    finally:
        c.stop_all()
