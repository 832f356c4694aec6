"""A restore killed with SIGKILL at any moment loses nothing: the node's database is then
either the old one, untouched, or the restored one with every write taken since the backup
carried over. (The swap used to come before the carry-over, so a kill in between left the
bare backup in place and the writes the hub had not yet received only in the file aside.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
from cli_cluster import DATA, create_node_databases

from riversync.cli import main
from riversync.config import load_node_config
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange
from riversync.node import daemon

RIVERSYNC = Path(sys.executable).parent / "riversync"
T0 = 1_790_000_000_000


def _write(d: Path, keys: range) -> None:
    cfg = load_node_config(d / "node-north.toml")
    store = daemon.open_store(cfg, load_schema(d / "schema.toml"))
    try:
        user = next(u.name for u in cfg.roster.users.values() if u.home_office == "north")
        for k in keys:
            store.commit_local([LocalChange("create", "customers", f"C-{k}", {"name": f"n{k}"})],
                               user=user, now_ms=T0 + k)
    finally:
        store.close()


def _keys(db: Path) -> set[str]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {pk for (pk,) in conn.execute("SELECT customer_id FROM customers")}
    finally:
        conn.close()


def test_a_restore_killed_at_any_moment_keeps_every_write(tmp_path, monkeypatch):
    monkeypatch.delenv("RIVERSYNC_TOKEN", raising=False)
    pristine = tmp_path / "c"
    assert main(["cluster", "init", "--offices", "north,south", str(pristine)]) == 0
    shutil.copy(os.path.join(DATA, "staging_schema.toml"), pristine / "schema.toml")
    create_node_databases(pristine, ("north",))
    _write(pristine, range(0, 50))
    monkeypatch.chdir(pristine)
    assert main(["backup", "-c", "node-north.toml"]) == 0
    cfg = load_node_config(pristine / "node-north.toml")
    [backup] = [p for p in Path(cfg.backup_dir).iterdir() if p.suffix == ".db"]
    _write(pristine, range(50, 3000))  # taken after the backup, never pushed anywhere
    every = {f"C-{k}" for k in range(3000)}
    db_name = cfg.db_path.name

    def restore(work: Path, kill_after: float | None) -> float:
        started = time.monotonic()
        p = subprocess.Popen([str(RIVERSYNC), "restore", "-c", "node-north.toml", str(backup)],
                             cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kill_after is None:
            assert p.wait(60) == 0, p.stderr.read()
        else:
            time.sleep(kill_after)
            p.send_signal(signal.SIGKILL)
            p.wait(60)
        p.stderr.close()
        return time.monotonic() - started

    whole = tmp_path / "whole"
    shutil.copytree(pristine, whole)
    took = restore(whole, None)
    assert _keys(whole / db_name) == every  # carried over
    # The restore's own work (open, carry over, swap) is its last half: interpreter start-up
    # comes first.  Kills at twelve points over that half land before, in and after it.
    for i in range(12):
        work = tmp_path / f"k{i}"
        shutil.copytree(pristine, work)
        restore(work, took * (0.5 + 0.045 * i))
        assert (work / db_name).exists(), i
        assert _keys(work / db_name) == every, f"kill {i}: writes after the backup lost"
        if i % 4 == 0:
            restore(work, None)  # and the restore, run again, completes
            assert _keys(work / db_name) == every
