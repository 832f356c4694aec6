"""A restore keeps the staging record: batches staged after the backup stay (an email
moved to processed/ is never staged twice, so one dropped would be lost for good), batches
applied since stay applied (left pending, they could be applied a second time), and batch
ids are never handed out again (an audit source names one batch)."""

from __future__ import annotations

import json
import os
import shutil

import openpyxl
import pytest
from cli_cluster import make_cluster, run


@pytest.fixture
def cluster(tmp_path, capsys, monkeypatch):
    return make_cluster(tmp_path, capsys, monkeypatch)


def workbook(path, rows):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "customers"
    ws.append(["customer_id", "name"])
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return str(path)


def cli_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def batches(capsys) -> dict[int, str]:
    got = cli_json(capsys, "staging", "list", "-c", "node-north.toml")["batches"]
    return {b["id"]: b["state"] for b in got}


def test_restore_keeps_batches_staged_and_decided_after_the_backup(cluster, capsys, tmp_path):
    cfg = "node-north.toml"
    run(capsys, "import", "xlsx", workbook(tmp_path / "a.xlsx", [("C-1", "Ann")]),
        "--table", "customers", "-c", cfg)
    backup = cli_json(capsys, "backup", "-c", cfg)["path"]
    run(capsys, "import", "xlsx", workbook(tmp_path / "b.xlsx", [("C-2", "Bob")]),
        "--table", "customers", "-c", cfg)
    assert run(capsys, "staging", "apply", "1", "-c", cfg)[0] == 0  # staged before, applied after
    drop = cluster / "drop"
    drop.mkdir()
    (drop / "m.eml").write_bytes(
        b"From: sec@club.example\r\nSubject: new customer\r\nMessage-ID: <m1@x>\r\n\r\n"
        b"table: customers\r\ncustomer_id: C-3\r\nname: Cy\r\n")
    assert run(capsys, "ingest", "email", str(drop), "-c", cfg)[0] == 0
    before = batches(capsys)
    assert before == {1: "applied", 2: "pending", 3: "pending"}

    res = cli_json(capsys, "restore", "-c", cfg, backup)
    assert res["staging_batches_carried_over"] == 2
    assert batches(capsys) == before
    shown = cli_json(capsys, "staging", "show", "3", "-c", cfg)
    assert shown["message"]["message_id"] == "m1@x"
    # the message is known: the same file dropped again is a redelivery, not a new batch
    shutil.copy(drop / "processed" / "m.eml", drop / "m.eml")
    again = cli_json(capsys, "ingest", "email", str(drop), "-c", cfg)
    assert again["duplicates"] and not again["staged"]
    # a new upload gets a new id, never one the record already names
    code, out, err = run(capsys, "import", "xlsx", workbook(tmp_path / "c.xlsx", [("C-4", "Di")]),
                         "--table", "customers", "-c", cfg)
    assert code == 0 and "staged batch 4" in out, (out, err)
    # applied once, not twice: batch 1 stays applied and C-1 is one create in the journal
    assert run(capsys, "staging", "apply", "1", "-c", cfg)[0] != 0
    # the carried write still names the batch it came from in the audit
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.node import daemon

    store = daemon.open_store(load_node_config(cluster / cfg), load_schema(cluster / "schema.toml"))
    try:
        sources = {a["pk"]: a["source"] for a in store.audit(limit=10)}
    finally:
        store.close()
    assert sources["C-1"].endswith("staging:1"), sources
    assert os.path.exists(backup)


def test_a_live_database_damaged_past_its_header_is_restored_with_a_warning(cluster, capsys):
    """A damaged file is the commonest reason to restore: what can be read is carried, the
    rest is named in a warning, never a traceback."""
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.engine.store import LocalChange
    from riversync.node import daemon

    cfg = load_node_config(cluster / "node-north.toml")
    backup = cli_json(capsys, "backup", "-c", "node-north.toml")["path"]
    store = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    user = next(u.name for u in cfg.roster.users.values() if u.home_office == "north")
    for i in range(300):
        store.commit_local([LocalChange("create", "customers", f"C-{i}", {"name": "x" * 200})],
                           user=user, now_ms=1_790_000_000_000 + i)
    store.close()
    pages = os.path.getsize(cfg.db_path) // 4096
    with open(cfg.db_path, "r+b") as f:  # pages near the end overwritten
        f.seek(4096 * (pages - 8))
        f.write(os.urandom(4096 * 5))
    code, out, err = run(capsys, "restore", "-c", "node-north.toml", backup)
    assert code == 0, err
    assert "Traceback" not in err and "could not be read in full" in out, out
    assert "stay only in the file kept aside: node epoch" in out, out
    res_db = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    try:
        assert res_db.epoch != 0 and res_db.verify_audit()
        carried = {pk for pk in (f"C-{i}" for i in range(300))
                   if res_db.get_row("customers", pk) is not None}
        assert "C-0" in carried  # what reads before the damage is carried, in one run
        assert carried == {f"C-{i}" for i in range(len(carried))}
    finally:
        res_db.close()


def test_a_db_path_that_is_a_folder_is_named_not_the_backup(cluster, capsys):
    from riversync.config import load_node_config

    cfg = load_node_config(cluster / "node-north.toml")
    backup = cli_json(capsys, "backup", "-c", "node-north.toml")["path"]
    for suffix in ("", "-wal", "-shm"):
        p = str(cfg.db_path) + suffix
        if os.path.exists(p):
            os.unlink(p)
    cfg.db_path.mkdir()
    code, out, err = run(capsys, "restore", "-c", "node-north.toml", backup)
    assert code == 2 and "is a folder" in err and "choose another backup" not in err, err
    assert cfg.db_path.is_dir() and os.path.exists(backup)
