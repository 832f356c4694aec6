"""The runbook's four scenarios, with a real hub and real office nodes as processes.

A: hub outage.  B: office outage.  C: a growing backlog shows in metrics and alerts, then
clears.  D: an event that fails replay (a conflict, and a parked event) is visible to the
operator, resolved with the command, and the resolution replicates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from riversync.node.client import NodeRefused
from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

SCHEMA = Path(__file__).resolve().parent.parent / "examples" / "leagues" / "schema.toml"
WAIT = 30.0


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True, alerts={"warn_queued_events": 5}).create()
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def seed(c: LocalCluster) -> None:
    """Each office creates its office row and one league; both replicate."""
    for o in ("north", "south"):
        cl = c.client(o, f"{o}-clerk")
        cl.post("/v1/tables/offices/rows", {"pk": o, "values": {"name": f"{o} office"}})
        cl.post("/v1/tables/leagues/rows",
                {"pk": f"L-{o}", "values": {"office_id": o, "name": f"{o} league"}})
    c.wait_for("seed to converge", c.converged, WAIT)


def add_players(c: LocalCluster, office: str, prefix: str, n: int) -> None:
    cl = c.client(office, f"{office}-clerk")
    for i in range(n):
        cl.post("/v1/tables/players/rows",
                {"pk": f"{prefix}{i:03d}", "values": {"full_name": f"Player {prefix}{i}"}})


def players(c: LocalCluster, office: str) -> set[str]:
    rows = c.client(office).get("/v1/tables/players/rows?limit=1000")["rows"]
    return {r["player_id"] for r in rows}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


def status_cmd(c: LocalCluster, office: str) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "status", "-c",
                        str(c.node_configs[office]), "--json"],
                       capture_output=True, text=True, timeout=WAIT)
    return p.returncode, json.loads(p.stdout)


def verify(c: LocalCluster) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "verify",
                        "-c", str(c.node_configs["north"]), "-c", str(c.node_configs["south"]),
                        "--json"], capture_output=True, text=True, timeout=WAIT)
    return p.returncode, json.loads(p.stdout)


def test_a_hub_outage_offices_keep_writing_then_drain_and_converge(cluster):
    c = cluster
    seed(c)
    c.stop("hub")
    add_players(c, "north", "PN", 4)
    add_players(c, "south", "PS", 3)
    assert c.status("north")["outbox"] == 4
    assert c.status("south")["outbox"] == 3
    add_players(c, "north", "PX", 2)  # queues keep growing while the hub is away
    assert c.status("north")["outbox"] == 6
    assert "PS000" not in players(c, "north")
    c.wait_for("north to notice the hub is away",
               lambda: c.status("north")["agent"]["state"] == "backoff", WAIT)
    c.start("hub")
    c.wait_for("queues to drain", lambda: c.status("north")["outbox"] == 0
               and c.status("south")["outbox"] == 0, WAIT)
    c.wait_for("convergence", c.converged, WAIT)
    assert {"PN000", "PN003", "PX001", "PS002"} <= players(c, "north") == players(c, "south")
    for o in ("north", "south"):
        assert c.status(o)["level"] == "ok"
        assert c.status(o)["agent"]["state"] == "running"


def test_b_office_outage_returning_office_pulls_what_it_missed(cluster):
    c = cluster
    seed(c)
    c.stop("south")
    add_players(c, "north", "PN", 5)  # north carries on alone
    c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, WAIT)
    before = c.digests("north")
    code, out = verify(c)
    assert code == 3 and list(out["unreachable"]) == ["south"]
    c.start("south")
    c.wait_for("south to catch up", c.converged, WAIT)
    code, out = verify(c)
    assert code == 0 and out["consistent"] and out["converged"]
    assert len(out["groups"]) == 1 and out["groups"][0]["nodes"] == ["north", "south"]
    assert players(c, "south") == players(c, "north")
    assert c.digests("south")["state"] == before["state"]
    assert c.status("south")["inbound_lag"] == 0


def test_c_growing_backlog_shows_in_metrics_and_alerts_then_clears(cluster):
    c = cluster
    seed(c)
    code, st = status_cmd(c, "north")
    assert code == 0 and st["level"] == "ok"
    c.stop("hub")
    add_players(c, "north", "PN", 8)  # the test config warns above 5 queued events
    text = c.client("north").get("/metrics")
    assert metric(text, "riversync_node_outbound_queue_events") == 8
    assert metric(text, "riversync_node_alert_level") == 1
    code, st = status_cmd(c, "north")
    assert code == 1 and st["level"] == "warning"
    assert "QUEUE_GROWING" in [r["code"] for r in st["reasons"]]
    c.start("hub")
    c.wait_for("the backlog to clear", lambda: c.status("north")["outbox"] == 0, WAIT)
    text = c.client("north").get("/metrics")
    assert metric(text, "riversync_node_outbound_queue_events") == 0
    assert metric(text, "riversync_node_alert_level") == 0
    assert metric(text, "riversync_node_last_push_success_timestamp_seconds") > 0
    code, st = status_cmd(c, "north")
    assert code == 0 and st["level"] == "ok"


def test_d_failed_replay_is_visible_resolved_by_command_and_replicates(cluster):
    c = cluster
    seed(c)
    south = c.client("south", "south-clerk")
    south.post("/v1/tables/players/rows", {"pk": "P-1", "values": {"full_name": "Kim"}})
    c.wait_for("P-1 at north", lambda: "P-1" in players(c, "north"), WAIT)
    c.stop("hub")
    # north's admin takes P-1 over while south, not knowing yet, edits it: after sync the
    # edit is a non-owner change everywhere and waits in the conflict queue.
    c.client("north", "admin").post("/v1/tables/players/rows/P-1/transfer",
                                    {"owner": "north", "admin": True})
    south.request("PATCH", "/v1/tables/players/rows/P-1", {"values": {"phone": "555-0001"}})
    c.start("hub")
    c.wait_for("the conflict at both offices", lambda: all(
        c.status(o)["open_conflicts"] == 1 for o in ("north", "south")), WAIT)
    # visible to the operator: status, metrics and the conflicts command
    st = c.status("north")
    assert st["open_conflicts"] == 1
    assert metric(c.client("north").get("/metrics"), "riversync_node_open_conflicts") == 1
    cfg = str(c.node_configs["north"])
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "conflicts", "list", "-c", cfg,
                        "--json"], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    listing = json.loads(p.stdout)["conflicts"]
    assert len(listing) == 1 and listing[0]["pk"] == "P-1" and listing[0]["cause"]
    cid = listing[0]["id"]
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "conflicts", "show", "-c", cfg,
                        cid], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0 and json.loads(p.stdout)["values"] == {"phone": "555-0001"}
    # the conflict itself is part of the state both offices agree on
    code, out = verify(c)
    assert code == 0 and out["converged"]
    # the value did not take effect anywhere
    for o in ("north", "south"):
        assert c.client(o).get("/v1/tables/players/rows/P-1")["row"]["phone"] is None
    # a clerk may not resolve; the refusal changes nothing
    with pytest.raises(NodeRefused) as e:
        c.client("north", "north-clerk").post(f"/v1/conflicts/{cid}/resolve",
                                              {"decision": "accept"})
    assert e.value.status == 403 and e.value.code == "FORBIDDEN"
    assert c.status("north")["open_conflicts"] == 1
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "conflicts", "resolve", "-c", cfg,
                        cid, "--accept"], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    assert "resolved" in p.stdout
    c.wait_for("the resolution at south", lambda: c.status("south")["open_conflicts"] == 0,
               WAIT)
    c.wait_for("convergence", c.converged, WAIT)
    for o in ("north", "south"):
        assert c.client(o).get("/v1/tables/players/rows/P-1")["row"]["phone"] == "555-0001"
        closed = c.client(o).get("/v1/conflicts?all=true")["conflicts"]
        assert [x["status"] for x in closed] == ["closed"]


def test_d_parked_event_is_visible_and_applies_once_the_schema_is_upgraded(tmp_path):
    """South runs a newer schema (a venues table); north parks south's events until its
    operator installs that schema, then applies them and the offices converge.

    Proves [M-PARK-2]: the parked event is in the conflict listing with its cause and in
    the metrics; and [M-PARK-1]: it is kept and applied on a later retry."""
    v1 = SCHEMA.read_text()
    v2 = tmp_path / "schema-v2.toml"
    v2.write_text(v1.replace("version = 1", "version = 2", 1) + (
        '\n[tables.venues]\nprimary_key = "venue_id"\nownership = "creator"\n'
        '[tables.venues.columns]\nvenue_id = "text"\nname = { type = "text", required = true }\n'))
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    c.procs["south"].argv += ["--schema", str(v2)]
    try:
        c.start_all()
        c.client("south", "south-clerk").post("/v1/tables/venues/rows",
                                              {"pk": "V-1", "values": {"name": "Riverside Hall"}})
        c.wait_for("north to park the venue", lambda: c.status("north")["parked"] == 1, WAIT)
        listing = c.client("north").get("/v1/conflicts")
        assert [(p["table"], p["pk"]) for p in listing["parked"]] == [("venues", "V-1")]
        assert listing["parked"][0]["cause"]
        assert metric(c.client("north").get("/metrics"), "riversync_node_parked_events") == 1
        assert not c.converged()
        c.stop("north")
        (c.dir / "schema.toml").write_text(v2.read_text())  # the operator upgrades north
        c.start("north")
        c.wait_for("the parked event to apply", lambda: c.status("north")["parked"] == 0, WAIT)
        row = c.client("north").get("/v1/tables/venues/rows/V-1")["row"]
        assert row["name"] == "Riverside Hall"
        c.wait_for("convergence", c.converged, WAIT)
    finally:
        c.stop_all()
