"""A backup whose manifest is damaged is refused as RESTORE_DAMAGED (exit 2, HTTP 400),
never a traceback or a 500; a hub backup never writes over an existing file; `hub
restore` exits by the same rules as `restore` (missing file 3, hub running 2).  All on
real files made by `riversync backup` / `riversync hub backup`, and real daemons."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import apsw
import pytest
from restore_util import RIVERSYNC, add, run, running_cluster
from test_restore_refusals import files_of, live

from riversync.node import backup as backups
from riversync.node.client import NodeRefused

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RIVERSYNC), *args], capture_output=True, text=True, timeout=120)


def odd_manifests(good: dict) -> list[tuple[bytes, str]]:
    """(manifest bytes, words the refusal names) for manifests `riversync backup` never
    writes: broken JSON, not an object, a sha256 that is no digest, odd events."""
    right_sha_bad_events = dict(good, events=[1, 2])
    right_sha_bad_top = dict(good, events={"north/1": "many"})
    return [(b"{broken", "cannot be read as JSON"),
            (b"[1,2]", "not a JSON object"),
            (b'{"sha256": 5}', "no valid sha256"),
            (b"\xff\xfe{", "cannot be read as JSON"),  # not UTF-8
            (json.dumps(right_sha_bad_events).encode(), "'events'"),
            (json.dumps(right_sha_bad_top).encode(), "'events'")]


def copy_with_manifest(backup: Path, dest: Path, content: bytes) -> Path:
    shutil.copyfile(backup, dest)
    dest.with_suffix(".json").write_bytes(content)
    return dest


def test_verify_backup_refuses_odd_manifests_as_damaged(tmp_path):
    backup = tmp_path / "b.db"
    conn = apsw.Connection(str(backup))
    conn.execute("CREATE TABLE t(v); INSERT INTO t VALUES (1)")
    conn.close()
    sha = backups.sha256_file(backup)
    good = {"sha256": sha, "events": {"north/7": 3}}
    backup.with_suffix(".json").write_text(json.dumps(good))
    assert backups.verify_backup(backup) == good
    for i, (text, words) in enumerate(odd_manifests(good)):
        copy = copy_with_manifest(backup, tmp_path / f"odd-{i}.db", text)
        with pytest.raises(backups.BackupError) as refused:
            backups.verify_backup(copy)
        assert refused.value.code == "RESTORE_DAMAGED"
        assert words in str(refused.value), (text, str(refused.value))
        assert "manifest" in refused.value.hint
    # a manifest that is a folder cannot be read either
    (tmp_path / "dir.db").write_bytes(backup.read_bytes())
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(backups.BackupError, match="cannot be read"):
        backups.verify_backup(tmp_path / "dir.db")


def test_restore_refuses_a_backup_with_a_damaged_manifest(tmp_path):
    with running_cluster(tmp_path) as c:
        north_cfg = str(c.node_configs["north"])
        add(c, "N-1")
        c.wait_for("north to drain", lambda: c.status("north")["outbox"] == 0, 30)
        made = Path(run("backup", "-c", north_cfg)["path"])
        good = json.loads(made.with_suffix(".json").read_text())
        odd = [(copy_with_manifest(made, tmp_path / f"north-odd-{i}.db", text), words)
               for i, (text, words) in enumerate(odd_manifests(good))]
        db = c.node_config("north").db_path
        before = live(c, db)
        admin = c.client("north", "admin")
        for backup, words in odd:  # the node runs: the CLI's check and the node's own
            p = cli("restore", "-c", north_cfg, str(backup))
            assert p.returncode == 2, (backup, p.stdout, p.stderr)
            assert "riversync: RESTORE_DAMAGED:" in p.stderr and words in p.stderr
            assert "Traceback" not in p.stderr and "Try:" in p.stderr
            with pytest.raises(NodeRefused) as refused:
                admin.post("/v1/restore", {"backup": str(backup)})
            assert (refused.value.status, refused.value.code) == (400, "RESTORE_DAMAGED")
            assert words in refused.value.message
            assert live(c, db) == before
        # an operator cannot restore: the hint says who can
        p = cli("restore", "-c", north_cfg, str(made), f"--token={c.tokens['north-operator']}")
        assert p.returncode == 2 and "FORBIDDEN" in p.stderr, p.stderr
        hint = p.stderr.split("Try:", 1)[1]
        assert "admin" in hint and "operator or admin" not in hint
        assert live(c, db) == before
        c.stop("north")
        files = files_of(db)
        for backup, words in odd:  # the node stopped: the command checks alone
            p = cli("restore", "-c", north_cfg, str(backup))
            assert p.returncode == 2, (backup, p.stdout, p.stderr)
            assert "riversync: RESTORE_DAMAGED:" in p.stderr and words in p.stderr
            assert "Traceback" not in p.stderr
            assert files_of(db) == files
        # the backup with its own manifest still restores
        res = run("restore", "-c", north_cfg, str(made))
        assert res["old_epoch"] != res["new_epoch"]


def test_hub_backup_never_writes_over_a_file_and_hub_restore_exits_by_the_rules(tmp_path):
    with running_cluster(tmp_path) as c:
        add(c, "N-1")
        c.wait_for("convergence", c.converged, 30)
        hub = str(c.hub_config)
        first = tmp_path / "hub-before-prune.db"
        assert cli("hub", "backup", "-c", hub, str(first)).returncode == 0
        kept = first.read_bytes()
        add(c, "N-2")
        c.wait_for("convergence", c.converged, 30)
        names = sorted(p.name for p in tmp_path.iterdir())
        p = cli("hub", "backup", "-c", hub, str(first))
        assert p.returncode == 2, (p.stdout, p.stderr)
        assert "already exists" in p.stderr and "Try:" in p.stderr and "Traceback" not in p.stderr
        assert first.read_bytes() == kept  # the earlier backup is untouched
        assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing else written
        p = cli("hub", "backup", "-c", hub, str(tmp_path), "--json")  # a folder: same rule
        assert p.returncode == 2 and "already exists" in p.stderr and p.stdout == ""
        p = cli("hub", "backup", "-c", hub, str(tmp_path / "nodir" / "hub.db"))
        assert p.returncode == 2 and "nodir does not exist" in p.stderr, p.stderr
        assert not (tmp_path / "nodir").exists()
        # a node backup's name is its time: a second backup is a second file
        north_cfg = str(c.node_configs["north"])
        one, two = run("backup", "-c", north_cfg)["path"], run("backup", "-c", north_cfg)["path"]
        assert one != two and Path(one).exists() and Path(two).exists()

        # the hub runs: a restore is refused because of state, exit 2
        p = cli("hub", "restore", "-c", hub, str(first))
        assert p.returncode == 2 and "stop" in p.stderr.split("Try:", 1)[1], p.stderr
        # a missing backup file is a missing input: exit 3, as for `riversync restore`
        for argv in (["hub", "restore", "-c", hub, str(tmp_path / "nope.db")],
                     ["restore", "-c", north_cfg, str(tmp_path / "nope.db")]):
            p = cli(*argv)
            assert p.returncode == 3 and "no backup file" in p.stderr, (argv, p.stderr)
        c.stop("hub")
    hub_db = Path(c.hub_config).parent / "hub.db"
    before = files_of(hub_db)
    plain = tmp_path / "plain.db"
    conn = apsw.Connection(str(plain))
    conn.execute("CREATE TABLE t(v)")
    conn.close()
    p = cli("hub", "restore", "-c", hub, str(plain))
    assert p.returncode == 2, p.stderr
    first_line = p.stderr.splitlines()[0]
    assert first_line == ("riversync: RESTORE_NOT_HUB_DB: plain.db is not a hub store "
                          "backup: it has no table hub_meta"), first_line
    p = cli("hub", "restore", "-c", hub, str(tmp_path / "nope.db"))
    assert p.returncode == 3
    assert files_of(hub_db) == before
    p = cli("hub", "restore", "-c", hub, str(first))
    assert p.returncode == 0, p.stderr
