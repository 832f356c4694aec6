"""A restore checks the backup before it changes anything.

Another office's backup, a same-named node's backup of another cluster, a hub backup given
to a node and a node backup (or another cluster's hub backup) given to the hub are refused
with a typed code and exit 2; the live database, its head file and a running node (its
API still answers) are exactly as before.  Before, the node's restore swapped the file in
and only then failed to open it (500 on every call, a node that no longer starts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import apsw
import pytest
from restore_util import RIVERSYNC, add, players, run, running_cluster

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import backup as backups
from riversync.node import head
from riversync.node.client import NodeRefused
from riversync.node.daemon import open_store, schema_path_for
from riversync.node.localcluster import LocalCluster
from riversync.protocol import codec

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RIVERSYNC), *args], capture_output=True, text=True, timeout=120)


def other_cluster(tmp_path: Path) -> LocalCluster:
    """A second cluster made by the same `cluster init`, so it has a node 'north' too."""
    return LocalCluster(tmp_path / "other", ["north", "south"], schema=SCHEMA).create()


def own_write(store, pk: str) -> list:
    return store.commit_local([LocalChange(kind="create", table="players", pk=pk,
                                           values={"full_name": pk})],
                              user="north-clerk", now_ms=int(time.time() * 1000))


def other_north_backup(tmp_path: Path) -> str:
    """A real backup (`riversync backup`, node stopped) of the other cluster's north."""
    o = other_cluster(tmp_path)
    cfg = o.node_config("north")
    store = open_store(cfg, load_schema(schema_path_for(cfg)))
    try:
        own_write(store, "OTHER-1")
    finally:
        store.close()
    return run("backup", "-c", str(o.node_configs["north"]))["path"]


def files_of(db: Path) -> dict[str, bytes]:
    """Every file of the database (itself, -wal, -shm, head file, any pre-restore copy)."""
    return {p.name: p.read_bytes() for p in sorted(db.parent.glob(db.name + "*"))
            if not p.name.endswith(".lock")}


def live(c: LocalCluster, db: Path) -> dict:
    """What a refused restore must leave alone on a running node.  The database file is
    the same file (a swap gives it a new inode), nothing was moved aside, the head file
    and the node's rows and epoch are the same, and the API answers."""
    st = c.status("north")
    return {"inode": os.stat(db).st_ino, "head": head.read(db),
            "names": sorted(p.name for p in db.parent.glob(db.name + "*")),
            "players": players(c, "north"), "epoch": st["epoch"],
            "digests": c.digests("north")["state"]}


def test_a_running_node_refuses_another_nodes_or_clusters_backup(tmp_path):
    foreign = other_north_backup(tmp_path)
    with running_cluster(tmp_path) as c:
        north_cfg = str(c.node_configs["north"])
        add(c, "N-1", "N-2")
        c.wait_for("convergence", c.converged, 30)
        south_backup = run("backup", "-c", str(c.node_configs["south"]))["path"]
        hub_backup = str(tmp_path / "hub-backup.db")
        assert cli("hub", "backup", "-c", str(c.hub_config), hub_backup).returncode == 0
        db = c.node_config("north").db_path
        before = live(c, db)
        assert before["players"] == {"N-1", "N-2"}
        admin = c.client("north", "admin")
        cases = [(south_backup, "RESTORE_WRONG_NODE", "'south'"),
                 (foreign, "RESTORE_WRONG_CLUSTER", "cluster"),
                 (hub_backup, "RESTORE_NOT_NODE_DB", "hub")]
        for backup, code, words in cases:
            p = cli("restore", "-c", north_cfg, backup)
            assert p.returncode == 2, (code, p.stdout, p.stderr)
            assert f"riversync: {code}:" in p.stderr and words in p.stderr
            assert "Traceback" not in p.stderr
            # the node itself refuses too (a caller of the API, not the CLI)
            with pytest.raises(NodeRefused) as refused:
                admin.post("/v1/restore", {"backup": backup})
            assert (refused.value.status, refused.value.code) == (400, code)
            assert live(c, db) == before, code
        # the message names both nodes, the hint names this node's backup folder
        p = cli("restore", "-c", north_cfg, south_backup)
        assert "node 'south', not of node 'north'" in p.stderr
        hint = p.stderr.split("Try:", 1)[1]
        assert str(c.node_config("north").backup_dir) in hint and "'north'" in hint
        # the node goes on as before: healthy, writes, replicates
        st = c.status("north")
        assert st["level"] != "critical" and "DB_UNAVAILABLE" not in json.dumps(st)
        add(c, "N-3")
        c.wait_for("convergence", c.converged, 30)
        assert players(c, "south") >= {"N-1", "N-2", "N-3"}


def test_a_stopped_node_refuses_another_nodes_or_clusters_backup(tmp_path):
    foreign = other_north_backup(tmp_path)
    with running_cluster(tmp_path) as c:
        add(c, "N-1")
        c.wait_for("convergence", c.converged, 30)
        south_backup = run("backup", "-c", str(c.node_configs["south"]))["path"]
        own_backup = run("backup", "-c", str(c.node_configs["north"]))["path"]
        c.stop("north")
        north_cfg = str(c.node_configs["north"])
        db = c.node_config("north").db_path
        before = files_of(db)
        assert db.name in before and db.name + ".head" in before
        for backup, code in [(south_backup, "RESTORE_WRONG_NODE"),
                             (foreign, "RESTORE_WRONG_CLUSTER")]:
            p = cli("restore", "-c", north_cfg, backup)
            assert p.returncode == 2, (code, p.stdout, p.stderr)
            assert f"riversync: {code}:" in p.stderr and "Try:" in p.stderr
            assert "Traceback" not in p.stderr
            assert files_of(db) == before, code  # byte for byte, nothing moved aside
        # this node's own backup still restores (the check refuses only what it must)
        res = run("restore", "-c", north_cfg, own_backup)
        assert res["old_epoch"] != res["new_epoch"]
        c.start("north")
        assert "N-1" in players(c, "north")


def test_cluster_of_a_backup_older_than_the_cluster_stamp(tmp_path):
    """A database written before nodes recorded their cluster: the cluster is read from the
    signed batch the agent kept, else from the node names it holds."""
    mine = LocalCluster(tmp_path / "mine", ["north", "south"], schema=SCHEMA).create()
    other = other_cluster(tmp_path)
    roster = mine.node_config("north").roster

    def legacy_db(cl: LocalCluster, name: str, signed: bool) -> Path:
        cfg = cl.node_config("north")
        path = tmp_path / name
        store = Store.open(str(path), load_schema(schema_path_for(cfg)), cfg.roster, "north",
                           epoch=7)  # the engine alone: no cluster stamp, as before
        try:
            evs = own_write(store, "P-1")
            if signed:  # the batch awaiting an ack, as the agent keeps it
                batch = codec.make_batch(cluster=cfg.roster.cluster_id, node="north", epoch=7,
                                         n=1, prev=codec.ZERO_HASH, events=evs,
                                         now_ms=int(time.time() * 1000))
                store.meta_set("agent.push.pending", codec.sign(batch, cfg.signing_key()).hex())
            assert store.meta_get(backups.META_CLUSTER) is None
        finally:
            store.close()
        return path

    foreign = legacy_db(other, "foreign.db", signed=True)
    with pytest.raises(backups.RestoreRefused) as refused:
        backups.check_identity(foreign, "north", roster)
    assert refused.value.code == "RESTORE_WRONG_CLUSTER"
    assert other.node_config("north").roster.cluster_id in str(refused.value)
    assert backups.check_identity(legacy_db(mine, "signed.db", True), "north",
                                  roster)["cluster_checked"] == "signed batches"
    assert backups.check_identity(legacy_db(mine, "plain.db", False), "north",
                                  roster)["cluster_checked"] == "roster names"


def test_hub_restore_refuses_a_node_backup_or_another_clusters_hub(tmp_path):
    other = other_cluster(tmp_path)
    other_backup = tmp_path / "other-hub.db"  # made by `hub backup`: records its cluster
    with other:
        other.start("hub")
        other.start("north")
        add(other, "O-1")
        other.wait_for("the other north to push",
                       lambda: other.status("north")["outbox"] == 0, 30)
        assert cli("hub", "backup", "-c", str(other.hub_config), str(other_backup)
                   ).returncode == 0
    # a copy by hand of the other cluster's hub store records no cluster; the cluster id
    # inside the batches it holds gives it away
    other_db = other.hub_config.parent / "hub.db"
    copied = tmp_path / "copied-hub.db"
    for suffix in ("", "-wal"):
        if Path(str(other_db) + suffix).exists():
            shutil.copyfile(str(other_db) + suffix, str(copied) + suffix)
    with running_cluster(tmp_path) as c:
        add(c, "N-1")
        c.wait_for("convergence", c.converged, 30)
        node_backup = run("backup", "-c", str(c.node_configs["north"]))["path"]
        own = tmp_path / "own-hub.db"
        assert cli("hub", "backup", "-c", str(c.hub_config), str(own)).returncode == 0
        c.stop("hub")

    hub_db = Path(c.hub_config).parent / "hub.db"
    before = files_of(hub_db)
    for backup, code in [(str(other_backup), "RESTORE_WRONG_CLUSTER"),
                         (str(copied), "RESTORE_WRONG_CLUSTER"),
                         (node_backup, "RESTORE_NOT_HUB_DB")]:
        p = cli("hub", "restore", "-c", str(c.hub_config), backup)
        assert p.returncode == 2, (code, p.stdout, p.stderr)
        assert f"riversync: {code}:" in p.stderr and "Try:" in p.stderr
        assert files_of(hub_db) == before, code
        assert not list(hub_db.parent.glob("*.restoring"))
    # this cluster's own backup restores, and the previous store is kept beside it
    p = cli("hub", "restore", "-c", str(c.hub_config), str(own), "--json")
    assert p.returncode == 0, p.stderr
    moved = [Path(m) for m in json.loads(p.stdout)["moved_aside"]]
    assert moved and moved[0].name.startswith("hub.db.pre-restore-")
    assert moved[0].read_bytes() == before["hub.db"]


def unopenable_copy(backup: str, tmp_path: Path) -> Path:
    """This node's backup, as if taken under a schema file whose content differed under the
    same version: every check before the swap passes, the store refuses it at open
    (SCHEMA_CHANGED).  No manifest, as for a backup copied by hand."""
    bad = tmp_path / "north-edited-schema.db"
    shutil.copyfile(backup, bad)
    conn = apsw.Connection(str(bad))
    with conn:  # the digest of the version it runs, and of every version it ran
        conn.execute("UPDATE _rs_meta SET value = 'another digest' WHERE key = 'schema_digest'")
        (ran,) = conn.execute("SELECT value FROM _rs_meta WHERE key = 'schema_digests'"
                              ).fetchone()
        conn.execute("UPDATE _rs_meta SET value = ? WHERE key = 'schema_digests'",
                     (json.dumps({v: "another digest" for v in json.loads(ran)}),))
    conn.close()
    return bad


def test_a_swapped_in_file_the_store_will_not_open_is_put_back(tmp_path):
    """The safety net behind the checks: if the store still refuses the file after the
    swap, the previous files go back and a running node serves them again."""
    with running_cluster(tmp_path) as c:
        north_cfg = str(c.node_configs["north"])
        add(c, "N-1")
        c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, 30)
        bad = unopenable_copy(run("backup", "-c", north_cfg)["path"], tmp_path)
        db = c.node_config("north").db_path
        before = live(c, db)
        p = cli("restore", "-c", north_cfg, str(bad))
        assert p.returncode == 2, (p.stdout, p.stderr)
        assert "RESTORE_FAILED" in p.stderr and "SCHEMA_CHANGED" in p.stderr
        assert live(c, db) == before  # the same file again, nothing left aside
        add(c, "N-2")  # the node writes and replicates as before
        c.wait_for("convergence", c.converged, 30)
        c.stop("north")
        files = files_of(db)
        p = cli("restore", "-c", north_cfg, str(bad))
        assert p.returncode == 2 and "RESTORE_FAILED" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert files_of(db) == files
        c.start("north")
        assert players(c, "north") == {"N-1", "N-2"}


def test_two_restores_in_one_second_keep_both_previous_files(tmp_path):
    db = tmp_path / "north.db"
    backup = tmp_path / "north-backup.db"
    for path, value in ((db, "live"), (backup, "backup")):
        conn = apsw.Connection(str(path))
        conn.execute("CREATE TABLE t(v); INSERT INTO t VALUES (?)", (value,))
        conn.close()
    live_bytes = db.read_bytes()
    first = backups.restore_file(backup, db, stamp="20270301T100000Z")
    second = backups.restore_file(backup, db, stamp="20270301T100000Z")
    assert first != second
    assert first[0].read_bytes() == live_bytes  # the first restore's copy of the live file
    assert second[0].read_bytes() == backup.read_bytes()
