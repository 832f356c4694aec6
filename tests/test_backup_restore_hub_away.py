"""A node restored while the hub is away: every event keeps its one identity.

The restore starts a new node epoch for new writes at once, but settles the old epoch's
unacknowledged events only when the hub answers a hello: events the hub holds are
acknowledged (those the backup lacks come back through the pull), the rest are pushed as
the old epoch's continuation.  Re-numbering them blindly into the new epoch would send an
event the hub already holds a second time, and a duplicated creation is a conflict.
"""

from __future__ import annotations

from collections import Counter

import pytest
from restore_util import SCHEMA, add, run

from riversync.node.localcluster import LocalCluster

pytestmark = pytest.mark.slow

WAIT = 30.0






def audit(c: LocalCluster, office: str) -> list[dict]:
    return c.client(office).get("/v1/audit?limit=1000")["audit"]


def identities(c: LocalCluster, office: str) -> dict[str, list[tuple]]:
    """Each player's creation events as (node, epoch, seq): exactly one per player."""
    out: dict[str, list[tuple]] = {}
    for a in audit(c, office):
        if a["table"] == "players" and a["kind"] == "create":
            out.setdefault(a["pk"], []).append(tuple(a["event"]))
    return out


def check_clean(c: LocalCluster) -> dict[str, tuple]:
    """No conflict, parked or refused event anywhere; no event under two identities; every
    origin's numbers a gapless run from 1, the same at both offices."""
    seen = None
    for office in c.offices:
        listed = c.client(office).get("/v1/conflicts?all=true")
        assert listed["conflicts"] == [] and listed["parked"] == []
        st = c.status(office)
        assert st["open_conflicts"] == 0 and st["parked"] == 0
        ids = identities(c, office)
        assert all(len(v) == 1 for v in ids.values()), ids
        events = [tuple(a["event"]) for a in audit(c, office)]
        assert len(events) == len(set(events))  # no (node, epoch, seq) twice
        per_origin = Counter((n, e) for n, e, _ in events)
        for (n, e), count in per_origin.items():
            assert sorted(s for n2, e2, s in events if (n2, e2) == (n, e)) == list(
                range(1, count + 1))
        flat = {pk: v[0] for pk, v in ids.items()}
        if seen is not None:
            assert flat == seen
        seen = flat
    return seen


def test_restore_with_the_hub_away_keeps_every_event_once(tmp_path):
    """Proves [N-EPOCH-2] (no event re-numbered, the rest pushed as the old epoch's
    continuation) and [N-EPOCH-1] (new writes go to the new epoch at once)."""
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    cfg = str(c.node_configs["north"])
    try:
        c.start_all()
        first = add(c, "P-0", "P-1", "P-2")
        c.wait_for("convergence", c.converged, WAIT)
        old_epoch = first[0][0]

        # P-3 is in the backup but not yet acknowledged; the hub gets it (and P-4) later.
        c.stop("hub")
        add(c, "P-3")
        backup = run("backup", "-c", cfg)
        add(c, "P-4")
        c.start("hub")
        c.wait_for("convergence", c.converged, WAIT)

        # Restore while the hub is away; the node takes writes in the new epoch at once.
        c.stop("hub")
        res = run("restore", "-c", cfg, backup["path"])
        assert res["old_epoch"] == old_epoch and res["unacknowledged_old_events"] == 1
        new = add(c, "W-0", "W-1")
        assert new == [(res["new_epoch"], 1), (res["new_epoch"], 2)]
        c.start("hub")
        c.wait_for("convergence", c.converged, WAIT)
        ids = check_clean(c)
        assert {pk: (e, s) for pk, (_n, e, s) in ids.items()} == {
            "P-0": (old_epoch, 1), "P-1": (old_epoch, 2), "P-2": (old_epoch, 3),
            "P-3": (old_epoch, 4), "P-4": (old_epoch, 5),  # P-4 came back from the hub
            "W-0": (res["new_epoch"], 1), "W-1": (res["new_epoch"], 2)}

        # Q-0 is in the next backup and never reached the hub: after a restore with the hub
        # still away it is pushed as the continuation of its own epoch, number unchanged.
        c.stop("hub")
        (q0,) = add(c, "Q-0")
        second = run("backup", "-c", cfg)
        res2 = run("restore", "-c", cfg, second["path"])
        assert res2["old_epoch"] == res["new_epoch"] and res2["unacknowledged_old_events"] == 1
        (x0,) = add(c, "X-0")
        assert x0 == (res2["new_epoch"], 1)
        c.start("hub")
        c.wait_for("convergence", c.converged, WAIT)
        ids = check_clean(c)
        assert ids["Q-0"][1:] == q0 == (res["new_epoch"], 3)
        assert ids["W-1"][1:] == (res["new_epoch"], 2) and ids["X-0"][1:] == x0
        for office in c.offices:
            assert c.status(office)["agent"]["error"] is None
    finally:
        c.stop_all()
