"""The staging commands on a real cluster directory (made by `riversync cluster init`)."""

from __future__ import annotations

import json
import os
import shutil

import openpyxl
import pytest
from cli_cluster import DATA, make_cluster, run


@pytest.fixture
def cluster(tmp_path, capsys, monkeypatch):
    return make_cluster(tmp_path, capsys, monkeypatch)


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_import_review_apply_export_and_reimport(cluster, capsys, tmp_path):
    cfg = "node-north.toml"
    code, out, err = run(capsys, "import", "xlsx", os.path.join(DATA, "C28-apply-atomicity.xlsx"),
                         "--table", "customers", "-c", cfg)
    assert code == 0, err
    assert "staged batch 1" in out and "4 valid, 1 invalid" in out
    assert "Next: riversync staging show 1" in out
    listed = run_json(capsys, "staging", "list", "-c", cfg)
    assert [b["state"] for b in listed["batches"]] == ["pending"]
    shown = run_json(capsys, "staging", "show", "1", "--invalid", "-c", cfg)
    assert [r["row"] for r in shown["rows"]] == [5]
    applied = run_json(capsys, "staging", "apply", "1", "--exclude", "4", "-c", cfg)
    assert applied["batch"]["events"] == 3
    code, out, err = run(capsys, "staging", "apply", "1", "-c", cfg)
    assert code != 0 and "STAGING_BATCH_CLOSED" in err
    out_file = tmp_path / "snap.xlsx"
    exported = run_json(capsys, "export", "xlsx", str(out_file), "--scope", "office=north",
                        "-c", cfg)
    assert exported["tables"] == {"customers": 3} and exported["snapshot_hlc"] > 0
    wb = openpyxl.load_workbook(out_file)
    meta = {r[0]: r[1] for r in wb["_riversync"].iter_rows(min_row=2, values_only=True)}
    assert meta["node"] == "north" and meta["scope"] == "office=north"
    assert int(meta["snapshot_hlc"]) == exported["snapshot_hlc"]
    code, out, err = run(capsys, "import", "xlsx", str(out_file), "--table", "customers",
                         "-c", cfg)
    assert code == 0 and "--confirm-reimport" in out
    code, out, err = run(capsys, "staging", "apply", "2", "-c", cfg)
    assert code != 0 and "STAGING_CONFIRM_REQUIRED" in err
    rejected = run_json(capsys, "staging", "reject", "2", "--reason", "snapshot", "-c", cfg)
    assert rejected["batch"]["state"] == "rejected"


def test_refused_file_exits_2_and_stages_nothing(cluster, capsys):
    code, out, err = run(capsys, "import", "xlsx", os.path.join(DATA, "C27-encrypted.xlsx"),
                         "--table", "customers", "-c", "node-north.toml")
    assert code == 2
    assert "XLSX_ENCRYPTED" in err and "Try:" in err and "Traceback" not in err
    assert run_json(capsys, "staging", "list", "-c", "node-north.toml")["batches"] == []
    code, out, err = run(capsys, "import", "xlsx", "missing.xlsx", "--table", "customers",
                         "-c", "node-north.toml")
    assert code == 3 and "no such file" in err
    code, out, err = run(capsys, "import", "xlsx", ".", "--table", "customers",
                         "-c", "node-north.toml")
    assert code == 2 and "is a folder, not a file" in err
    code, out, err = run(capsys, "import", "xlsx", os.path.join(DATA, "C25-phantom-rows.xlsx"),
                         "--table", "nope", "-c", "node-north.toml")
    assert code == 2 and "STAGING_UNKNOWN_TABLE" in err


def test_ingest_email_from_a_drop_folder(cluster, capsys):
    drop = cluster / "drop"
    drop.mkdir()
    for n in ("C30-charset-mislabel.eml", "C32-no-date.eml"):
        shutil.copy(os.path.join(DATA, n), drop / n)
    res = run_json(capsys, "ingest", "email", str(drop), "-c", "node-north.toml")
    assert len(res["staged"]) == 2
    shutil.copy(os.path.join(DATA, "C32-no-date.eml"), drop / "again.eml")
    code, out, err = run(capsys, "ingest", "email", str(drop), "-c", "node-north.toml")
    assert code == 0 and "0 staged, 1 already staged" in out
    assert sorted(os.listdir(drop / "processed")) == ["C30-charset-mislabel.eml",
                                                      "C32-no-date.eml", "again.eml"]


def test_offline_apply_over_a_copy_put_back_writes_in_a_new_epoch(cluster, capsys):
    """Proves [N-EPOCH-3] for writes made with the node stopped: a database behind its head
    file starts a new node epoch before the command writes anything, and the command's
    writes become the head."""
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.node import daemon, head

    cfg = load_node_config(cluster / "node-north.toml")
    store = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    old_epoch = store.epoch
    store.close()
    head.write(cfg.db_path, old_epoch, 7)  # the hub holds 7 numbers this copy never handed out
    code, out, err = run(capsys, "import", "xlsx", os.path.join(DATA, "C28-apply-atomicity.xlsx"),
                         "--table", "customers", "-c", "node-north.toml")
    assert code == 0, err
    assert "behind its head file" in err
    applied = run_json(capsys, "staging", "apply", "1", "--exclude", "4", "-c", "node-north.toml")
    assert applied["batch"]["events"] == 3
    store = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    try:
        new_epoch = store.epoch
        assert new_epoch != old_epoch
        assert store.own_seq(old_epoch) in (None, 0)  # nothing under the old numbers
        assert store.own_seq(new_epoch) == 3
    finally:
        store.close()
    assert head.read(cfg.db_path) == (new_epoch, 3)


def test_a_database_of_another_cluster_is_not_opened(cluster, capsys):
    """A node database copied in from another cluster: its events and numbers mean nothing
    here, so offline commands (and the daemon) refuse it, naming both clusters."""
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.node import backup, daemon

    cfg = load_node_config(cluster / "node-north.toml")
    store = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    store.meta_set(backup.META_CLUSTER, "another-cluster")
    store.close()
    before = cfg.db_path.read_bytes()
    for argv in (("staging", "list"), ("backup",)):
        code, out, err = run(capsys, *argv, "-c", "node-north.toml")
        assert code == 2, (argv, err)
        assert "WRONG_CLUSTER" in err and "another-cluster" in err and "Traceback" not in err
    assert cfg.db_path.read_bytes() == before
