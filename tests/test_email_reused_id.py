"""Message-ID reuse, body truncation and what `riversync ingest email` says about them.

Real .eml files from tests/data go through the command against a cluster made by
`riversync cluster init`.
"""

from __future__ import annotations

import json
import os
import shutil
from email.message import EmailMessage

import pytest
from cli_cluster import DATA, make_cluster, run

from riversync.engine.db import migrate
from riversync.engine.schema import load_schema
from riversync.engine.store import Store
from riversync.node import email_ingest as M
from riversync.node import staging as S
from riversync.protocol.keys import NodeEntry, Roster, User


@pytest.fixture
def cluster(tmp_path, capsys, monkeypatch):
    return make_cluster(tmp_path, capsys, monkeypatch)


def drop(folder, *names):
    folder.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(os.path.join(DATA, n), folder / n)
    return str(folder)


def ingest(capsys, folder, *extra):
    return run(capsys, "ingest", "email", folder, "-c", "node-north.toml", *extra)


def test_a_different_message_under_a_reused_message_id_is_staged_and_flagged(cluster, capsys):
    folder = drop(cluster / "drop", "reused-id-first.eml", "reused-id-redelivered.eml")
    code, out, err = ingest(capsys, folder, "--json")
    assert code == 0, err
    res = json.loads(out)
    # the redelivery (another Received line, another transfer encoding) is the same message
    assert [s["file"] for s in res["staged"]] == ["reused-id-first.eml"]
    first = res["staged"][0]["batch"]
    assert [(d["file"], d["batch"]) for d in res["duplicates"]] == [
        ("reused-id-redelivered.eml", first)]
    drop(cluster / "drop", "reused-id-second.eml")
    code, out, err = ingest(capsys, folder)
    assert code == 0, err
    assert "1 staged, 0 already staged" in out
    assert "flags reused_message_id" in out
    assert f"a different message under it is batch {first}; review both" in out
    listed = json.loads(run(capsys, "staging", "list", "-c", "node-north.toml", "--json")[1])
    second = max(b["id"] for b in listed["batches"])
    shown = json.loads(run(capsys, "staging", "show", str(second), "-c", "node-north.toml",
                           "--json")[1])
    assert shown["message"]["message_id"] == "staff-list@club.example"
    assert "reused_message_id" in shown["batch"]["flags"]
    assert any(f"batch {first}" in n for n in shown["batch"]["notes"])
    assert [(r["key"], r["status"]) for r in shown["rows"]] == [("S32", "valid")]
    code, out, err = run(capsys, "staging", "apply", str(second), "-c", "node-north.toml")
    assert code == 0, err
    assert sorted(os.listdir(cluster / "drop" / "processed")) == [
        "reused-id-first.eml", "reused-id-redelivered.eml", "reused-id-second.eml"]
    # A third different message under the same Message-ID names both earlier batches.
    third = (cluster / "drop" / "reused-id-third.eml")
    with open(os.path.join(DATA, "reused-id-second.eml"), "rb") as f:
        third.write_bytes(f.read().replace(b"S32", b"S33"))
    code, out, err = ingest(capsys, folder)
    assert code == 0, err
    assert "different messages under it are batches " in out and "review them all" in out



def long_message(path, rows: int) -> str:
    m = EmailMessage()
    m["From"] = "sec@club.example"
    m["Subject"] = "everyone"
    m["Date"] = "Fri, 15 Mar 2024 10:00:00 +0100"
    m["Message-ID"] = "<long@club.example>"
    body = ["table: staff", ""]
    for i in range(rows):
        body += [f"staff_id: L{i:04d}", f"full name: Person {i}", "region: North", ""]
    m.set_content("\n".join(body))
    path.write_bytes(bytes(m))
    return str(path.parent)


def test_ingest_says_when_a_body_was_cut_at_500_rows(cluster, capsys):
    (cluster / "drop").mkdir()
    folder = long_message(cluster / "drop" / "long.eml", 503)
    code, out, err = ingest(capsys, folder)
    assert code == 0, err
    assert "(500 rows) flags rows_truncated" in out
    assert "cut at 500 rows: 3 more rows in the body were not staged" in out
    (cluster / "drop2").mkdir()
    folder = long_message(cluster / "drop2" / "long.eml", 503)
    code, out, err = ingest(capsys, folder, "--json")
    assert code == 0, err
    dup = json.loads(out)["duplicates"][0]  # same message: already staged above
    shown = json.loads(run(capsys, "staging", "show", str(dup["batch"]), "-c",
                           "node-north.toml", "--json")[1])
    assert shown["batch"]["summary"]["rows_left_out"] == 3
    assert "rows_truncated" in shown["batch"]["flags"]


def test_ingest_json_reports_rows_left_out(cluster, capsys):
    (cluster / "drop").mkdir()
    folder = long_message(cluster / "drop" / "long.eml", 501)
    code, out, err = ingest(capsys, folder, "--json")
    assert code == 0, err
    staged = json.loads(out)["staged"][0]
    assert (staged["rows"], staged["rows_left_out"]) == (500, 1)
    assert "rows_truncated" in staged["flags"]


def test_messages_staged_before_the_content_hash_keep_deduplicating(tmp_path):
    """A database whose staging tables predate staging_0002 keeps its messages; the
    migration hashes their stored parts, so a redelivery is still recognised."""
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    roster = Roster("c", nodes, {"alice": User("alice", "north", "operator")})
    schema_path = os.path.join(DATA, "staging_schema.toml")
    schema = load_schema(schema_path)
    store = Store.open(str(tmp_path / "north.db"), schema, roster, "north", epoch=5)
    try:
        conn = S.store_conn(store)
        migrate(conn, S.MIGRATIONS[:1])  # the first layout: one row per Message-ID
        raw = open(os.path.join(DATA, "reused-id-first.eml"), "rb").read()
        msg = M.parse_message(raw)
        conn.execute("INSERT INTO staging_batches(kind, table_name, source, sha256, created_ms,"
                     " created_by) VALUES ('email', 'staff', ?, ?, 1, 'alice')",
                     (f"email:{msg.key}", msg.sha256))
        bid = conn.last_insert_rowid()
        conn.execute("INSERT INTO staging_messages(message_key, batch_id, file_name, sha256,"
                     " raw) VALUES (?,?,?,?,?)", (msg.key, bid, "first.eml", msg.sha256, raw))
        for i, p in enumerate(msg.parts, start=1):
            conn.execute("INSERT INTO staging_parts(batch_id, part_no, content_type, filename,"
                         " raw, text) VALUES (?,?,?,?,?,?)",
                         (bid, i, p["content_type"], p["filename"], p["raw"], p["text"]))
        desk = S.StagingDesk(store, schema, S.load_import_options(schema_path))  # migrates
        folder = drop(tmp_path / "drop", "reused-id-redelivered.eml", "reused-id-second.eml")
        rep = desk.ingest(folder)
        assert [(d["file"], d["batch"]) for d in rep["duplicates"]] == [
            ("reused-id-redelivered.eml", bid)]
        assert [s["file"] for s in rep["staged"]] == ["reused-id-second.eml"]
        assert rep["staged"][0]["message_id_batches"] == [bid]
        assert desk.show(bid)["message"]["file"] == "first.eml"  # the old row survived
    finally:
        store.close()
