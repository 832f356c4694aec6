"""A node restored from a backup older than `riversync hub prune`, end to end: real hub,
real nodes, the real commands.

Before the prune horizon existed, north came back from such a backup short of south's rows
written before the prune, for good, while status said OK (apart from a queue warning) and
verify said "not caught up yet" (exit 0).  Now the hub refuses north's pulls with
CURSOR_PRUNED: north's status is critical with that code, verify names north and exits 1,
and a backup of north taken after the prune completes it.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from restore_util import RIVERSYNC, add, players, run, running_cluster

from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

WAIT = 30.0


def add_at_south(c: LocalCluster, *pks: str) -> None:
    cl = c.client("south", "south-clerk")
    for pk in pks:
        cl.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RIVERSYNC), *args], capture_output=True, text=True, timeout=120)


def prune_everything(c: LocalCluster) -> dict:
    """Prune until every batch the hub holds is gone (each node confirms its cursor at its
    next pull, so a sync of both first)."""
    def pruned_to_head():
        for office in c.offices:
            c.client(office).post("/v1/sync", {})
        res = run("hub", "prune", "-c", str(c.hub_config))
        head = c.client("north").get("/v1/status")["agent"]["hub_head"]
        return res if res["upto_seq"] >= head else None
    return c.wait_for("a prune up to the hub's head", pruned_to_head, WAIT, interval=0.5)


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path) as c:
        yield c


def test_node_restored_from_before_a_prune_is_critical_and_verify_fails(cluster):
    """[H-PRUNE-1] end to end: the restored node stops on CURSOR_PRUNED instead of
    converging short of the pruned events; verify reports it (exit 1); a backup taken
    after the prune completes the node."""
    c = cluster
    north_cfg, south_cfg = str(c.node_configs["north"]), str(c.node_configs["south"])
    add(c, "N0")
    c.wait_for("convergence", c.converged, WAIT)
    old = run("backup", "-c", north_cfg)  # before the prune

    south_rows = {f"S{i}" for i in range(4)}
    add_at_south(c, *sorted(south_rows))
    c.wait_for("south's rows at north", lambda: south_rows <= players(c, "north"), WAIT)
    res = prune_everything(c)
    assert res["removed_batches"] >= 1
    pruned_at = res["horizon"]["pruned_at"]  # what the operator is told, and the node
    fresh = run("backup", "-c", north_cfg)  # after the prune

    run("restore", "-c", north_cfg, old["path"])

    def stopped_on_cursor_pruned():
        st = c.status("north")
        err = st["agent"]["error"] or {}
        return st if err.get("code") == "CURSOR_PRUNED" else None
    st = c.wait_for("north to stop on CURSOR_PRUNED", stopped_on_cursor_pruned, WAIT)
    assert st["level"] == "critical" and st["agent"]["state"] == "stopped"
    assert "prune horizon" in st["agent"]["error"]["message"]
    assert pruned_at in st["agent"]["error"]["hint"]
    assert not south_rows & players(c, "north")  # nothing was applied around the hole
    status = cli("status", "-c", north_cfg)
    assert status.returncode == 2 and "CURSOR_PRUNED" in status.stdout

    out = cli("verify", "-c", north_cfg, "-c", south_cfg)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "NODE north CANNOT GET EVENTS FROM THE HUB" in out.stdout
    assert "not caught up yet" not in out.stdout
    out = cli("verify", "-c", north_cfg, "-c", south_cfg, "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert set(doc["cursor_pruned"]) == {"north"} and not doc["converged"]
    assert doc["hub_pruned"]["upto_seq"] == res["horizon"]["upto_seq"]

    # the hint's first way out: a backup of north taken after the prune
    run("restore", "-c", north_cfg, fresh["path"])
    c.wait_for("convergence", c.converged, WAIT)
    assert south_rows | {"N0"} <= players(c, "north")
    assert c.status("north")["agent"]["error"] is None
    out = cli("verify", "-c", north_cfg, "-c", south_cfg)
    assert out.returncode == 0, out.stdout + out.stderr
