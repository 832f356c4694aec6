"""`riversync verify` tells events the hub lost for good from a node that is only behind.

Real hub and three office processes: north writes, south and east pull, then the hub is
restored from an older backup and north from an older backup too.  The events exist only
at south and east; nothing will deliver them to north again, so verify must say so and
exit non-zero instead of "not caught up yet" forever.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import apsw
import pytest

from riversync.commands.verify import beyond_hub
from riversync.node import relay
from riversync.node.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"
WAIT = 30.0


def verify(c: LocalCluster, offices: list[str]) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "riversync.cli", "verify"]
    for office in offices:
        argv += ["-c", str(c.node_configs[office])]
    p = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=120)
    text = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert text.returncode == p.returncode, text.stdout + text.stderr
    return p.returncode, json.loads(p.stdout), text.stdout


def cli(*args: str) -> dict:
    p = subprocess.run([str(RIVERSYNC), *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


def hub_holds(c: LocalCluster) -> dict:
    return json.loads(urllib.request.urlopen(c.hub_url + "/v1/status", timeout=WAIT)
                      .read())["origins"]


def forget_kept_batches(c: LocalCluster, office: str) -> None:
    """As a node of a release that did not keep pulled batches: nothing to relay."""
    conn = apsw.Connection(str(c.node_config(office).db_path))
    conn.execute(f"DELETE FROM {relay.TABLE}")
    conn.close()


def lose_at_hub(c: LocalCluster, tmp_path: Path, *, relaying: bool):
    """North writes B-0 (both backups hold it), then K-0..K-4, which south and east pull.
    The hub is restored from its backup while north is down.  Returns the origin, what
    the backups hold of it, what south holds, north's old backup and a newer one."""
    north_cfg = str(c.node_configs["north"])
    c.start_all()
    clerk = c.client("north", "north-clerk")
    clerk.post("/v1/tables/players/rows", {"pk": "B-0", "values": {"full_name": "B"}})
    c.wait_for("convergence", c.converged, WAIT)
    cli("hub", "backup", "-c", str(c.hub_config), str(tmp_path / "hub.db"))
    c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, WAIT)
    old_backup = cli("backup", "-c", north_cfg)["path"]
    origin = f"north/{c.digests('north')['epoch']}"
    kept = c.digests("north")["events"][origin]
    for i in range(5):
        clerk.post("/v1/tables/players/rows", {"pk": f"K-{i}", "values": {"full_name": "K"}})
        c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, WAIT)
    c.wait_for("convergence", c.converged, WAIT)
    top = c.digests("south")["events"][origin]
    assert top > kept
    newer_backup = cli("backup", "-c", north_cfg)["path"]
    code, res, text = verify(c, c.offices)
    assert code == 0 and res["converged"] and res["lost_at_hub"] is False, text
    c.stop("north")
    # North's disk is lost: its restore has no newer database to carry its events from.
    db = Path(c.node_config("north").db_path)
    for f in db.parent.glob(db.name + "*"):
        f.unlink()
    if not relaying:
        for office in ("south", "east"):
            c.stop(office)
            forget_kept_batches(c, office)
    c.stop("hub")
    cli("hub", "restore", "-c", str(c.hub_config), str(tmp_path / "hub.db"))
    c.start("hub")
    if not relaying:
        c.start("south")
        c.start("east")
    return origin, kept, top, old_backup, newer_backup


@pytest.mark.slow
def test_events_only_south_and_east_hold_are_reported_lost_with_their_range(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south", "east"], schema=SCHEMA,
                     sync_interval_s=1, realtime=True).create()
    north_cfg = str(c.node_configs["north"])
    try:
        origin, kept, top, north_backup, newer_backup = lose_at_hub(c, tmp_path,
                                                                    relaying=False)
        # Without north's word the loss cannot be confirmed: named, not called lost.
        code, res, text = verify(c, ["south", "east"])
        assert code == 0, text
        assert res["lost_at_hub"] is False
        [e] = res["beyond_hub"]["unconfirmed"]
        assert (e["origin"], e["first"], e["last"]) == (origin, kept + 1, top)
        assert e["held_by"] == ["east", "south"] and "north was not asked" in text

        cli("restore", "-c", north_cfg, north_backup)
        c.start("north")
        c.wait_for("north to say hello to the restored hub",
                   lambda: c.status("north")["agent"]["state"] == "running"
                   and c.status("north")["outbox"] == 0, WAIT)
        assert c.digests("north")["events"][origin] == kept
        for office in c.offices:
            assert c.status(office)["level"] == "ok"
        code, res, text = verify(c, c.offices)
        assert code == 1, text
        assert res["lost_at_hub"] is True and res["converged"] is False
        [e] = res["beyond_hub"]["lost"]
        assert (e["origin"], e["first"], e["last"]) == (origin, kept + 1, top)
        assert e["held_by"] == ["east", "south"]
        assert e["hub_holds"] == kept and e["origin_holds"] == kept
        assert f"LOST AT THE HUB: {origin} #{kept + 1}-#{top} is held only by east, south" \
            in text
        assert "not caught up yet" not in text

        # The runbook's step 3: north restored from a backup that holds the range pushes
        # it again as its old epoch's continuation; then nothing is lost.
        c.client("north", "north-clerk").post("/v1/tables/players/rows", {"pk": "N-0", "values": {"full_name": "N"}})
        c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, WAIT)
        cli("restore", "-c", north_cfg, newer_backup)
        c.wait_for("convergence", c.converged, WAIT)
        code, res, text = verify(c, c.offices)
        assert code == 0 and res["converged"] and res["lost_at_hub"] is False, text
        rows = {r["player_id"] for r in
                c.client("north").get("/v1/tables/players/rows?limit=100")["rows"]}
        assert rows == {"B-0", "N-0", *(f"K-{i}" for i in range(5))}
    finally:
        c.stop_all()


@pytest.mark.slow
def test_nodes_push_again_the_batches_the_hub_lost_and_the_origin_gets_them_back(tmp_path):
    """[N-RELAY-1] [H-PUSH-2]: south and east still hold north's signed batches; after
    the hub's restore they push them again (the hub takes them on north's signature and
    chain), so north's restore from an old backup loses nothing."""
    c = LocalCluster(tmp_path / "c", ["north", "south", "east"], schema=SCHEMA,
                     sync_interval_s=1, realtime=True).create()
    try:
        origin, kept, top, north_backup, _ = lose_at_hub(c, tmp_path, relaying=True)
        c.wait_for("south and east to push north's batches again",
                   lambda: hub_holds(c).get(origin) == top, WAIT)
        cli("restore", "-c", str(c.node_configs["north"]), north_backup)
        c.start("north")
        c.wait_for("convergence", c.converged, WAIT)
        assert c.digests("north")["events"][origin] == top
        rows = {r["player_id"] for r in
                c.client("north").get("/v1/tables/players/rows?limit=100")["rows"]}
        assert rows == {"B-0", *(f"K-{i}" for i in range(5))}
        code, res, text = verify(c, c.offices)
        assert code == 0 and res["converged"] and res["lost_at_hub"] is False, text
        assert res["beyond_hub"] == {"lost": [], "repushing": [], "relaying": [],
                                     "unconfirmed": []}
    finally:
        c.stop_all()


@pytest.mark.slow
def test_a_hub_that_does_not_answer_is_named_and_exits_3(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    try:
        c.start_all()
        c.stop("hub")
        code, res, text = verify(c, c.offices)
        assert code == 3, text
        assert res["hub_unreachable"] and res["beyond_hub"] is None
        assert "the hub did not answer" in text and "NOT VERIFIED" in text
    finally:
        c.stop_all()


def rep(**events: int) -> dict:
    return {"events": events, "state": "s"}


def test_a_node_behind_the_hub_is_nothing_beyond_it():
    reports = {"north": rep(**{"north/1": 5}), "south": rep(**{"north/1": 3})}
    assert beyond_hub(reports, {"north/1": 5}) == {
        "lost": [], "repushing": [], "relaying": [], "unconfirmed": []}


def test_the_origin_ahead_of_the_hub_alone_is_only_unpushed():
    reports = {"north": rep(**{"north/1": 9}), "south": rep(**{"north/1": 5})}
    assert beyond_hub(reports, {"north/1": 5})["repushing"] == []


def test_the_hub_lost_what_the_origin_still_holds_is_pushed_again():
    reports = {"north": rep(**{"north/1": 9}), "south": rep(**{"north/1": 7})}
    out = beyond_hub(reports, {"north/1": 4})
    assert out["lost"] == [] and out["unconfirmed"] == []
    assert out["repushing"] == [{"origin": "north/1", "first": 5, "last": 7, "hub_holds": 4,
                                 "origin_holds": 9, "held_by": ["south"]}]


def test_the_range_starts_after_what_the_hub_or_the_origin_still_holds():
    reports = {"north": rep(**{"north/1": 3, "north/2": 1}), "south": rep(**{"north/1": 8}),
               "east": rep(**{"north/1": 6})}
    [e] = beyond_hub(reports, {"north/1": 2, "north/2": 1})["lost"]
    assert (e["first"], e["last"], e["held_by"]) == (4, 8, ["east", "south"])
    [e] = beyond_hub(reports, {"north/1": 6})["lost"]
    assert (e["first"], e["last"], e["held_by"]) == (7, 8, ["south"])


def test_a_holder_that_kept_the_signed_batches_relays_them():
    """[N-RELAY-1] kept batches from the hub's last one on: not lost, relayed."""
    reports = {"north": rep(**{"north/1": 2}), "south": rep(**{"north/1": 8}),
               "east": rep(**{"north/1": 8})}
    reports["south"]["kept_batches"] = {"north/1": [1, 8]}
    reports["east"]["kept_batches"] = {"north/1": [5, 8]}  # kept from 5 on only
    out = beyond_hub(reports, {"north/1": 3})
    assert out["lost"] == [] and out["unconfirmed"] == []
    [e] = out["relaying"]
    assert (e["first"], e["last"], e["relayed_by"]) == (4, 8, ["south"])
    reports["south"]["kept_batches"] = {"north/1": [1, 7]}  # short of the last event
    [e] = beyond_hub(reports, {"north/1": 3})["lost"]
    assert (e["first"], e["last"], e["held_by"]) == (4, 8, ["east", "south"])


def test_an_origin_the_hub_never_held_counts_from_zero():
    reports = {"south": rep(**{"west/3": 2}), "east": rep()}
    [e] = beyond_hub(reports, {})["unconfirmed"]
    assert (e["origin"], e["first"], e["last"], e["hub_holds"]) == ("west/3", 1, 2, 0)


def _kept_store(tmp_path, batches: list[tuple[str, int, int, int, int]]):
    conn = apsw.Connection(str(tmp_path / "n.db"))
    relay.ensure(conn)
    conn.executemany(f"INSERT INTO {relay.TABLE} (node, epoch, n, first, last, envelope)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     [(*b, f"{b[0]}/{b[1]}#{b[2]}".encode()) for b in batches])
    return conn


def test_relay_sends_what_follows_the_hub_in_chain_order_and_never_its_own(tmp_path):
    """[N-RELAY-1] the batches after the hub's last_seq, from the one that continues it."""
    conn = _kept_store(tmp_path, [("north", 1, 3, 6, 8), ("north", 1, 1, 1, 2),
                                  ("north", 1, 2, 3, 5), ("south", 4, 1, 1, 1),
                                  ("east", 2, 1, 1, 4)])
    out = relay.missing_at_hub(conn, {"north/1": 2, "east/2": 4}, me="south")
    assert out == [b"north/1#2", b"north/1#3"]
    assert relay.missing_at_hub(conn, {"north/1": 8, "east/2": 4}, me="south") == []


def test_relay_stops_at_a_gap_it_cannot_bridge(tmp_path):
    conn = _kept_store(tmp_path, [("north", 1, 2, 3, 5), ("north", 1, 4, 9, 9)])
    # the hub holds up to 2: batch 2 continues it; batch 3 (6..8) is not kept, so 4 waits
    assert relay.missing_at_hub(conn, {"north/1": 2}, me="east") == [b"north/1#2"]
    # the hub holds up to 1: nothing kept starts at 2, so nothing is sent (a gap)
    assert relay.missing_at_hub(conn, {"north/1": 1}, me="east") == []


def test_a_database_without_kept_batches_relays_nothing(tmp_path):
    conn = apsw.Connection(str(tmp_path / "old.db"))
    assert relay.missing_at_hub(conn, {}, me="east") == []
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchall() == [(0,)]
