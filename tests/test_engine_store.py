"""The Store API other parts build on: local commits, outbox, epochs, cursors, backups."""

from __future__ import annotations

import json

import apsw
import pytest
from engine_util import LEAGUES, NOW, Origin, at, open_store, roster

from riversync.engine import db
from riversync.engine.errors import (
    ConflictNotFound,
    EpochRequired,
    SchemaChanged,
    SchemaDowngrade,
    SchemaVersionDiffers,
    WrongNode,
)
from riversync.engine.schema import load_schema, parse_schema
from riversync.engine.store import LocalChange, Store
from riversync.protocol import hlc

SCHEMA = load_schema(LEAGUES)


def _setup(store, user="nora", office="north", now=NOW):
    return store.commit_local([
        LocalChange("create", "offices", office, {"name": office.title()}),
        LocalChange("create", "leagues", "L1", {"office_id": office, "name": "Kids"}),
        LocalChange("create", "teams", "T1", {"league_id": "L1", "name": "Reds"}),
    ], user=user, now_ms=now, source="staging:batch-1")


def test_local_commit_returns_sequenced_events_and_audits_them(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    events = _setup(s)
    assert [(e.node, e.epoch, e.seq) for e in events] == [("north", 5, i) for i in (1, 2, 3)]
    assert [e.hlc for e in events] == sorted({e.hlc for e in events})
    assert s.get_row("leagues", "L1")["active"] is True  # boolean default, read back as bool
    audit = s.audit()
    assert [a["source"] for a in audit] == ["local:staging:batch-1"] * 3
    assert {a["office"] for a in audit} == {"north"} and {a["node"] for a in audit} == {"north"}
    assert s.outbox_size() == 3 and [e.seq for e in s.outbox()] == [1, 2, 3]
    s.mark_acked(5, 2)
    assert [e.seq for e in s.outbox()] == [3]
    s.close()


def test_first_open_needs_an_epoch_and_a_database_keeps_its_node(tmp_path):
    with pytest.raises(EpochRequired):
        Store.open(tmp_path / "n.db", SCHEMA, roster(), "north")
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    s.close()
    with pytest.raises(WrongNode):
        open_store(tmp_path / "n.db", SCHEMA, node="south")
    again = Store.open(tmp_path / "n.db", SCHEMA, roster(), "north")
    assert again.epoch == 5
    again.close()


def test_restart_or_clock_step_back_never_reissues_a_timestamp(tmp_path):
    """Proves [N-HLC-1] for issued HLCs: after a restart the clock starts from the last one."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    first = _setup(s, now=NOW)
    s.close()
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    (later,) = s.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                              user="nora", now_ms=NOW - 3_600_000)  # NTP stepped back an hour
    assert later.hlc > max(e.hlc for e in first)
    s.close()


def test_remote_clock_advances_the_local_one(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    _setup(s, now=NOW)
    o = Origin("south")
    remote = o.create(hlc.make(NOW + 1000, 9), "players", "P1", {"full_name": "A"}, "sam")
    s.apply_remote([remote], now_ms=NOW)
    (mine,) = s.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                             user="nora", now_ms=NOW)
    assert mine.hlc > remote.hlc
    s.close()


def test_cursor_moves_with_its_apply_and_not_without_it(tmp_path):
    """Proves [N-CUR-1]: the cursor moves in the apply's transaction, and not on a refusal."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    o = Origin("south")
    ev = o.create(at("10:00"), "players", "P1", {"full_name": "A"}, "sam")
    s.apply_remote([ev], now_ms=NOW, cursor=("hub", 7, 1))
    assert s.get_cursor("hub") == (7, 1)
    bad = o.create(hlc.make(NOW + 3_600_000), "players", "P2", {"full_name": "B"}, "sam")
    with pytest.raises(Exception):  # noqa: B017 - ClockSkew; the point is the cursor
        s.apply_remote([bad], now_ms=NOW, cursor=("hub", 7, 2))
    assert s.get_cursor("hub") == (7, 1)
    assert s.digests()["events"] == {"south/1": 1}
    s.close()


def test_meta_key_value(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    assert s.meta_get("agent.backoff") is None
    s.meta_set("agent.backoff", 3)
    assert s.meta_get("agent.backoff") == 3
    s.close()


def test_late_transfer_of_a_parent_recomputes_its_children(tmp_path):
    """Proves [M-OWN-5] in a store: the late transfer recomputes the rows from the journal."""
    north = open_store(tmp_path / "n.db", SCHEMA, node="north")
    events = _setup(north)
    o_s = Origin("south")
    edit = o_s.update(hlc.make(NOW + 10_000), "teams", "T1", {"coach": "south coach"}, "sam")
    north.apply_remote([edit], now_ms=NOW + 20_000)
    assert north.get_row("teams", "T1")["coach"] is None
    assert [c["cause"] for c in north.conflicts()] == ["not owner"]
    # The league moved to south before south's edit; the transfer arrives late.
    o_n = Origin("west")  # another north node
    t = o_n.transfer(hlc.make(NOW + 5_000), "leagues", "L1", "south", "nora")
    r = north.apply_remote([t], now_ms=NOW + 20_000)
    assert north.get_row("teams", "T1")["coach"] == "south coach"
    assert north.conflicts() == [] and r.recomputed_rows >= 2
    fresh = open_store(tmp_path / "f.db", SCHEMA, node="east")
    fresh.apply_remote([t, edit, *events], now_ms=NOW + 20_000)
    assert fresh.digests()["tables"] == north.digests()["tables"]
    assert fresh.digests()["conflicts"] == north.digests()["conflicts"]
    north.close()
    fresh.close()


def test_resolve_locally_accept_closes_the_conflict_everywhere(tmp_path):
    """Proves [M-RES-1] for `accept` on two replicas."""
    north = open_store(tmp_path / "n.db", SCHEMA, node="north")
    events = _setup(north)
    edit = Origin("south").update(hlc.make(NOW + 10), "teams", "T1", {"coach": "Kim"}, "sam")
    north.apply_remote([edit], now_ms=NOW + 20)
    (c,) = north.conflicts()
    assert (c["table"], c["pk"], c["values"], c["office"]) == ("teams", "T1", {"coach": "Kim"},
                                                               "south")
    with pytest.raises(ConflictNotFound):
        north.commit_local([LocalChange("resolve", conflict="nope:1:1", decision="keep")],
                           user="nora", now_ms=NOW + 30)
    (res,) = north.commit_local([LocalChange("resolve", conflict=c["id"], decision="accept")],
                                user="nora", now_ms=NOW + 30)
    assert res.values == {"coach": "Kim"}
    assert north.get_row("teams", "T1")["coach"] == "Kim"
    assert north.conflicts() == [] and north.conflict(c["id"])["status"] == "closed"
    south = open_store(tmp_path / "s.db", SCHEMA, node="south")
    south.apply_remote([res, edit, *events], now_ms=NOW + 40)
    assert south.digests()["state"] == north.digests()["state"]
    north.close()
    south.close()


def test_schema_upgrade_unparks_events_for_a_new_table(tmp_path):
    """Proves [M-PARK-1] (retried, not dropped) and [M-PARK-2] (listed with its cause)."""
    doc = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {"id": "text",
                                                                          "x": "text"}}}}
    v1 = parse_schema(doc)
    s = Store.open(tmp_path / "n.db", v1, roster(), "east", epoch=1)
    o = Origin("north")
    ev = o.create(at("10:00"), "b", "k", {"y": 1}, "nora", schema=2)
    s.apply_remote([ev], now_ms=NOW)
    assert [p["cause"] for p in s.parked()] == ["unknown table: b"]
    s.close()
    doc["version"] = 2
    doc["tables"]["b"] = {"primary_key": "id", "columns": {"id": "text", "y": "integer"}}
    v2 = parse_schema(doc)
    s = Store.open(tmp_path / "n.db", v2, roster(), "east")
    assert s.parked() == [] and s.get_row("b", "k") == {"id": "k", "y": 1}
    s.close()


def test_a_schema_changed_under_the_same_version_is_refused_and_changes_nothing(tmp_path):
    """One schema version names one content: a node whose file changed without a new
    version would judge events by other rules than its peers (one parks what the other
    applies) and the offices would diverge without a word."""
    doc = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {"id": "text",
                                                                          "x": "text"}}}}
    s = Store.open(tmp_path / "n.db", parse_schema(doc), roster(), "east", epoch=1)
    s.apply_remote([Origin("north").create(at("10:00"), "a", "k", {"x": "7"}, "nora")],
                   now_ms=NOW)
    before = s.digests()
    s.close()
    doc["tables"]["a"]["columns"]["x"] = "integer"
    with pytest.raises(SchemaChanged) as e:
        Store.open(tmp_path / "n.db", parse_schema(doc), roster(), "east")
    assert e.value.code == "SCHEMA_CHANGED" and "version 1" in str(e.value)
    doc["tables"]["a"]["columns"]["x"] = "text"  # the file put back: opens as before
    with Store.open(tmp_path / "n.db", parse_schema(doc), roster(), "east") as s:
        assert s.digests() == before
    doc["version"] = 2  # or a new version: the way to change a schema
    doc["tables"]["a"]["columns"]["x"] = {"type": "text", "required": True}
    with Store.open(tmp_path / "n.db", parse_schema(doc), roster(), "east") as s:
        assert s.get_row("a", "k") == {"id": "k", "x": "7"}



def test_a_database_never_forgets_an_older_versions_content_nor_goes_back(tmp_path):
    """One start under version 2 must not let a changed version 1 file in afterwards, nor
    any version 1 file: a database that ran version 2 never judges by version 1 again."""
    v1 = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {"id": "text",
                                                                         "x": "text"}}}}
    v1_changed = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {
        "id": "text", "x": "integer"}}}}
    v2 = {"version": 2, "tables": {"a": {"primary_key": "id", "columns": {
        "id": "text", "x": "text", "y": "text"}}}}
    with Store.open(tmp_path / "n.db", parse_schema(v1), roster(), "east", epoch=1) as s:
        s.apply_remote([Origin("north").create(at("10:00"), "a", "k", {"x": "7"}, "nora")],
                       now_ms=NOW)
    with Store.open(tmp_path / "n.db", parse_schema(v2), roster(), "east") as s:
        before = s.digests()
    for doc, error in ((v1_changed, SchemaDowngrade), (v1, SchemaDowngrade)):
        with pytest.raises(error) as e:
            Store.open(tmp_path / "n.db", parse_schema(doc), roster(), "east")
        assert e.value.code == "SCHEMA_DOWNGRADE" and "already ran version 2" in str(e.value)
    with pytest.raises(SchemaDowngrade):
        Store.open(tmp_path / "n.db", parse_schema(v1), roster(), "east", adopt_schema=True)
    v3 = dict(v2, version=3)
    with pytest.raises(SchemaVersionDiffers):  # adopt-schema only replaces a file of v2
        Store.open(tmp_path / "n.db", parse_schema(v3), roster(), "east", adopt_schema=True)
    with Store.open(tmp_path / "n.db", parse_schema(v2), roster(), "east") as s:
        assert s.digests() == before
        (ran,) = s.conn.execute("SELECT value FROM _rs_meta WHERE key = 'schema_digests'").fetchone()
        assert json.loads(ran) == {
            "1": parse_schema(v1).digest(), "2": parse_schema(v2).digest()}


def test_backup_is_one_verified_self_contained_file(tmp_path):
    """Case C21(a): WAL, no autocheckpoint, a long-lived reader; the copy alone is whole."""
    schema = load_schema(LEAGUES)
    s = open_store(tmp_path / "n.db", schema, node="north")
    s.conn.execute("PRAGMA wal_autocheckpoint=0")
    reader = db.connect(str(tmp_path / "n.db"))
    reader.execute("BEGIN")
    list(reader.execute("SELECT count(*) FROM players"))
    s.commit_local([LocalChange("create", "players", f"P{i}", {"full_name": f"Player {i}"})
                    for i in range(10)], user="nora", now_ms=NOW)
    assert (tmp_path / "n.db-wal").stat().st_size > 0
    dest = tmp_path / "restore" / "copy.db"
    dest.parent.mkdir()
    s.backup(dest)
    reader.execute("COMMIT")
    reader.close()
    s.close()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.db"]
    c = apsw.Connection(str(dest), flags=apsw.SQLITE_OPEN_READONLY)
    assert list(c.execute("PRAGMA integrity_check")) == [("ok",)]
    assert list(c.execute("SELECT count(*) FROM players")) == [(10,)]
    assert list(c.execute("PRAGMA journal_mode")) == [("delete",)]
    c.close()


def test_nested_transactions_are_savepoints(tmp_path):
    conn = db.connect(str(tmp_path / "t.db"))
    conn.execute("CREATE TABLE t (x)")
    with db.transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(ZeroDivisionError):
            with db.transaction(conn):
                conn.execute("INSERT INTO t VALUES (2)")
                1 / 0  # noqa: B018
        conn.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in conn.execute("SELECT x FROM t ORDER BY x")] == [1, 3]
    assert db.migrate(conn, [("m1", lambda c: c.execute("CREATE TABLE m (y)"))]) == ["m1"]
    assert db.migrate(conn, [("m1", lambda c: c.execute("CREATE TABLE m (y)"))]) == []
    conn.close()


def test_adopting_the_clusters_schema_folds_every_row_again_under_it(tmp_path):
    """A node that ran a wrong file (same version, other rules) takes the cluster's file:
    its state becomes exactly what a node with the cluster's file holds for its events."""
    wrong = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {
        "id": "text", "x": "integer", "y": "text"}}}}
    right = {"version": 1, "tables": {"a": {"primary_key": "id", "columns": {
        "id": "text", "x": "text", "y": "text"}}}}
    s = Store.open(tmp_path / "n.db", parse_schema(wrong), roster(), "north", epoch=1)
    s.commit_local([LocalChange("create", "a", "k1", {"x": 5, "y": "a"}),
                    LocalChange("create", "a", "k2", {"y": "b"})], user="nora", now_ms=NOW)
    s.commit_local([LocalChange("update", "a", "k2", {"x": 7})], user="nora", now_ms=NOW + 1)
    events = s.outbox()
    s.close()
    with pytest.raises(SchemaChanged):
        Store.open(tmp_path / "n.db", parse_schema(right), roster(), "north")
    s = Store.open(tmp_path / "n.db", parse_schema(right), roster(), "north", adopt_schema=True)
    try:
        assert s.refolded_rows == 2
        types = {r[1]: r[2] for r in s.conn.execute("PRAGMA table_info(a)")}
        assert types["x"] == "TEXT"  # the table itself follows the adopted file
        replica = Store.open(tmp_path / "r.db", parse_schema(right), roster(), "east", epoch=2)
        replica.apply_remote(events, now_ms=NOW + 10)
        assert s.digests()["tables"] == replica.digests()["tables"]
        assert s.get_row("a", "k2") == {"id": "k2", "x": None, "y": "b"}  # x=7 fails text
        assert {p["pk"] for p in s.parked()} == {"k1", "k2"}  # integers where text belongs
        replica.close()
    finally:
        s.close()
    with Store.open(tmp_path / "n.db", parse_schema(right), roster(), "north") as s:
        assert s.refolded_rows is None  # adopted once; opens as usual from now on
