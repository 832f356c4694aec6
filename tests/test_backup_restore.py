"""Backups and restores: case C21 (a: backup of a live WAL database, b: restore over a live
database) and C19 (a restored node never reuses a sequence number and gets its events back)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from restore_util import running_cluster

from riversync import cluster as cluster_mod
from riversync.config import load_roster
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import backup as backups
from riversync.node.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"
WAIT = 30.0


def players(n: int, prefix: str = "K-") -> list[LocalChange]:
    return [LocalChange(kind="create", table="players", pk=f"{prefix}{i}",
                        values={"full_name": f"Customer {i}"}) for i in range(n)]


def test_c21a_backup_of_a_live_wal_database_is_whole_without_its_wal(tmp_path):
    files = cluster_mod.init_cluster(tmp_path / "c", ["north"])
    roster = load_roster(files.roster)
    db = tmp_path / "north.db"
    store = Store.open(str(db), load_schema(SCHEMA), roster, "north", epoch=7)
    store.conn.execute("PRAGMA wal_autocheckpoint=0")
    reader = apsw.Connection(str(db))  # a long-lived reader pins the WAL
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM players").fetchall()
    try:
        store.commit_local(players(10), user="north-clerk", now_ms=1_700_000_000_000)
        naive = tmp_path / "naive"
        naive.mkdir()
        shutil.copyfile(db, naive / "copy.db")  # what a plain file copy would keep
        made = backups.make_backup(store, tmp_path / "backups", "north", backups.Retention())
    finally:
        reader.execute("COMMIT")
        reader.close()
        store.close()
    # the failure this guards against: the main file alone lacks what is in the -wal
    conn = apsw.Connection(str(naive / "copy.db"))
    try:
        naive_rows = conn.execute("SELECT count(*) FROM players").fetchall()[0][0]
    except apsw.SQLError:
        naive_rows = 0  # not even the table
    conn.close()
    assert naive_rows < 10
    empty = tmp_path / "restored"
    empty.mkdir()
    shutil.copyfile(made["path"], empty / "north.db")
    assert sorted(p.name for p in empty.iterdir()) == ["north.db"]
    conn = apsw.Connection(str(empty / "north.db"), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM players").fetchall()[0][0] == 10
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    manifest = json.loads(Path(made["path"]).with_suffix(".json").read_text())
    assert manifest["sha256"] == backups.sha256_file(Path(made["path"]))


def test_retention_keeps_the_newest_and_one_per_day(tmp_path):
    import datetime as dt

    d = tmp_path / "b"
    d.mkdir()
    start = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    for day in range(5):
        for hour in range(4):
            t = start + dt.timedelta(days=day, hours=hour)
            (d / f"north-{t.strftime('%Y%m%dT%H%M%S%fZ')}.db").write_bytes(b"x")
    removed = backups.apply_retention(d, "north", backups.Retention(keep_last=3, keep_daily=2))
    kept = [p.name[6:17] for p in backups.list_backups(d, "north")]
    # newest three of day 5, plus the newest of day 4
    assert kept == ["20270304T03", "20270305T01", "20270305T02", "20270305T03"]
    assert len(removed) == 16


def test_a_damaged_backup_is_refused_and_nothing_is_touched(tmp_path):
    db = tmp_path / "north.db"
    db.write_bytes(b"live")
    bad = tmp_path / "north-x.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    with pytest.raises(backups.BackupError):
        backups.restore_file(bad, db)
    assert db.read_bytes() == b"live"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["north-x.db", "north.db"]


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(tmp_path) as c:
        yield c


def add(c: LocalCluster, office: str, prefix: str, n: int) -> list[dict]:
    cl = c.client(office, f"{office}-clerk")
    return [cl.post("/v1/tables/players/rows", {"pk": f"{prefix}{i}",
                                                "values": {"full_name": f"P {prefix}{i}"}})
            for i in range(n)]


def ids(c: LocalCluster, office: str) -> set[str]:
    return {r["player_id"] for r in
            c.client(office).get("/v1/tables/players/rows?limit=1000")["rows"]}


def run(*args: str) -> dict:
    p = subprocess.run([str(RIVERSYNC), *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def drained(c: LocalCluster, office: str) -> bool:
    return c.status(office)["outbox"] == 0


def test_c21b_c19_restore_under_a_running_node(cluster):
    """Proves [N-EPOCH-1]: a restored node writes under a new epoch from sequence 1."""
    c = cluster
    cfg = str(c.node_configs["north"])
    add(c, "north", "B-", 3)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    backup = run("backup", "-c", cfg)
    manifest = json.loads(Path(backup["path"]).with_suffix(".json").read_text())
    old_epoch = manifest["epoch"]
    after = add(c, "north", "A-", 4)  # newer than the backup, acknowledged by the hub
    assert {e["seq"] for r in after for e in r["events"]} == {4, 5, 6, 7}
    c.wait_for("convergence", c.converged, WAIT)
    res = run("restore", "-c", cfg, backup["path"])
    # right after the swap the database held exactly the backup
    assert res["restored_tables"] == manifest["tables"]
    assert res["restored_events"] == manifest["events"]
    assert res["old_epoch"] == old_epoch and res["new_epoch"] != old_epoch
    assert res["unacknowledged_old_events"] == 0  # the backup was taken once drained
    assert any(p.endswith("-wal") or ".pre-restore-" in p for p in res["moved_aside"])
    # C19: the node gets its own acknowledged events back from the hub ...
    c.wait_for("north to get its events back", lambda: {"A-0", "A-3"} <= ids(c, "north"), WAIT)
    # ... and new writes go to the new epoch, from sequence 1: nothing is reused
    new = add(c, "north", "N-", 2)
    evs = [e for r in new for e in r["events"]]
    assert {e["epoch"] for e in evs} == {res["new_epoch"]}
    assert [e["seq"] for e in evs] == [1, 2]
    c.wait_for("convergence", c.converged, WAIT)
    assert ids(c, "south") == ids(c, "north") >= {"B-0", "A-3", "N-1"}
    st = c.status("north")
    assert st["level"] == "ok" and st["agent"]["error"] is None


def test_c21b_restore_after_a_crash_left_wal_and_shm(cluster):
    c = cluster
    cfg = str(c.node_configs["north"])
    add(c, "north", "B-", 2)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    backup = run("backup", "-c", cfg)
    manifest = json.loads(Path(backup["path"]).with_suffix(".json").read_text())
    add(c, "north", "A-", 3)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    c.kill("north")  # SIGKILL: -wal and -shm stay behind
    db = c.node_config("north").db_path
    assert Path(str(db) + "-wal").exists()
    res = run("restore", "-c", cfg, backup["path"])
    assert res["restored_tables"] == manifest["tables"]
    # the writes after the backup, read from the crashed file with its -wal, are carried over
    assert res["carried_over"] == 3
    # the restored file, opened on its own, holds the backup's rows (and those) and is sound
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    assert {r[0] for r in conn.execute("SELECT player_id FROM players")} == {
        "B-0", "B-1", "A-0", "A-1", "A-2"}
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    c.start("north")
    c.wait_for("convergence", c.converged, WAIT)
    assert {"B-0", "A-2"} <= ids(c, "north") == ids(c, "south")


def test_c19_backup_and_restore_with_the_node_stopped_and_the_hub_away(cluster):
    c = cluster
    cfg = str(c.node_configs["north"])
    add(c, "north", "B-", 2)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    c.stop("north")
    backup = run("backup", "-c", cfg)  # the node is stopped: the command opens the file
    assert Path(backup["path"]).exists() and backup["events"]
    c.start("north")
    add(c, "north", "A-", 2)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    c.stop("north")
    c.stop("hub")
    res = run("restore", "-c", cfg, backup["path"])
    assert res["unacknowledged_old_events"] == 0
    c.start("hub")
    c.start("north")
    new = add(c, "north", "N-", 1)
    assert new[0]["events"][0]["epoch"] == res["new_epoch"]
    assert new[0]["events"][0]["seq"] == 1
    c.wait_for("convergence", c.converged, WAIT)
    assert {"B-1", "A-1", "N-0"} <= ids(c, "north") == ids(c, "south")


def test_a_database_put_back_by_hand_starts_a_new_epoch_before_any_write(cluster):
    """Not `riversync restore` but a file copied back: the hub holds more of the node's
    epoch than the file does.  At start, before the API takes a write, the node starts a
    new epoch itself and pulls its own events back, instead of forking.

    Proves [N-EPOCH-1]: the new epoch starts before the node signs anything."""
    c = cluster
    cfg = str(c.node_configs["north"])
    add(c, "north", "B-", 2)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    old_epoch = c.status("north")["epoch"]
    c.stop("north")
    copy = Path(run("backup", "-c", cfg)["path"])
    c.start("north")
    add(c, "north", "A-", 3)
    c.wait_for("north to drain", lambda: drained(c, "north"), WAIT)
    c.stop("north")
    db = c.node_config("north").db_path
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(copy, db)
    c.start("north")
    st = c.status("north")
    assert st["epoch"] != old_epoch and st["agent"]["error"] is None
    c.wait_for("north's own events back", lambda: {"A-0", "A-2"} <= ids(c, "north"), WAIT)
    new = add(c, "north", "N-", 1)
    assert new[0]["events"][0]["epoch"] == st["epoch"] and new[0]["events"][0]["seq"] == 1
    c.wait_for("convergence", c.converged, WAIT)
    assert ids(c, "north") == ids(c, "south")
    assert c.status("north")["level"] == "ok"
