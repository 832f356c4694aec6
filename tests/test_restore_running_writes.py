"""Restoring a running node while it takes writes: no write that got a 2xx is lost.

Writes taken after the backup live only in the file the restore puts aside until they
reach the hub.  The restore carries the node's own events that the backup lacks into the
restored database under their own ids; the hub gets those it lacks as their epoch's
continuation, and those it has are recognised by content.
"""

from __future__ import annotations

import threading
import time

import pytest
from restore_util import players, run, running_cluster

from riversync.node.client import NodeRefused, NodeUnreachable
from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

WAIT = 60.0






def done(c: LocalCluster, want: set[str]) -> bool:
    return c.converged() and all(want <= players(c, o) for o in c.offices)


class Writer(threading.Thread):
    """Creates players RR0, RR1, … at north one request at a time; keeps those that got 2xx."""

    def __init__(self, c: LocalCluster, count: int):
        super().__init__(daemon=True)
        self.cl = c.client("north", "north-clerk", timeout_s=10.0)
        self.count = count
        self.accepted: list[str] = []
        self.refused = 0

    def run(self) -> None:
        for i in range(self.count):
            pk = f"RR{i}"
            try:
                self.cl.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})
                self.accepted.append(pk)
            except (NodeRefused, NodeUnreachable):
                self.refused += 1  # 503 while the node restores: not accepted, not expected


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path) as c:
        yield c


def test_restore_during_a_write_loop_keeps_every_accepted_write(cluster):
    c = cluster
    cfg = str(c.node_configs["north"])
    backup = run("backup", "-c", cfg)
    w = Writer(c, 400)
    w.start()
    time.sleep(1.5)
    res = run("restore", "-c", cfg, backup["path"])
    w.join(timeout=120)
    assert not w.is_alive()
    assert w.accepted
    c.wait_for("every accepted write everywhere", lambda: done(c, set(w.accepted)), WAIT)
    assert res["new_epoch"] != res["old_epoch"]


def test_writes_after_the_backup_with_the_hub_away_are_carried_over(cluster):
    """Deterministic: the hub is away, so the writes after the backup exist only in the
    running node's file when it is restored."""
    c = cluster
    cfg = str(c.node_configs["north"])
    cl = c.client("north", "north-clerk")
    cl.post("/v1/tables/players/rows", {"pk": "B-0", "values": {"full_name": "B-0"}})
    c.wait_for("convergence", c.converged, WAIT)
    backup = run("backup", "-c", cfg)
    c.stop("hub")
    after = [cl.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})
             for pk in ("A-0", "A-1", "A-2")]
    ids = [[e["epoch"], e["seq"]] for r in after for e in r["events"]]
    res = run("restore", "-c", cfg, backup["path"])
    assert res["carried_over"] == 3 and res["carried_over_events"] == ids
    assert {"A-0", "A-1", "A-2"} <= players(c, "north")
    cl.post("/v1/tables/players/rows", {"pk": "N-0", "values": {"full_name": "N-0"}})
    c.start("hub")
    want = {"B-0", "A-0", "A-1", "A-2", "N-0"}
    c.wait_for("every write everywhere", lambda: done(c, want), WAIT)
    for office in c.offices:
        audit = c.client(office).get("/v1/audit?limit=1000")["audit"]
        got = sorted(a["event"][1:] for a in audit if a["pk"].startswith("A-"))
        assert got == ids  # each under its one original id, once
