"""The journal stays append-only when the hub's events take over own ids (``yield_own``):
superseded rows are recorded beside it, never changed, and a database from the layout
before migration ``0002_superseded`` (whose ``yield_own`` negated ``seq``) converts."""

from __future__ import annotations

import re

import apsw
import pytest
from engine_util import DATA, LEAGUES, NOW, Origin, at, open_store, roster

from riversync.engine import db
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.engine.tables import MIGRATIONS

SCHEMA = load_schema(LEAGUES)
OLD_DUMP = DATA / "engine-0001-negated-seq.sql"
FORBIDDEN = re.compile(r"\b(DROP\s+TRIGGER|UPDATE\s+_rs_journal|DELETE\s+FROM\s+_rs_journal)\b",
                       re.IGNORECASE)


def player(s, pk: str, t: int = 0):
    return s.commit_local([LocalChange("create", "players", pk, {"full_name": pk})],
                          user="nora", now_ms=NOW + t)


def pks(s) -> set[str]:
    return {r["player_id"] for r in s.list_rows("players", limit=100)}


def triggers(conn) -> list[tuple[str, str]]:
    return list(conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='trigger' ORDER BY name"))


def journal(conn) -> list[tuple]:
    return list(conn.execute("SELECT * FROM _rs_journal ORDER BY jid"))


def ids_cover_the_journal(conn) -> bool:
    """Every journal row holds its id in ``_rs_ids`` unless it is superseded, and no
    superseded row does."""
    return not list(conn.execute(
        "SELECT j.jid FROM _rs_journal j LEFT JOIN _rs_ids i ON i.jid=j.jid"
        " LEFT JOIN _rs_superseded x ON x.jid=j.jid"
        " WHERE (i.jid IS NULL) = (x.jid IS NULL)"))


def hub_events() -> list:
    """The hub's own events of north/5 from seq 2: what another copy of north pushed."""
    hub = Origin("north", epoch=5)
    hub.seq = 1
    return [hub.create(at("10:00"), "players", "HF0", {"full_name": "HF0"}, "nora"),
            hub.create(at("10:01"), "players", "HF1", {"full_name": "HF1"}, "nora"),
            hub.create(at("10:02"), "players", "HF2", {"full_name": "HF2"}, "nora")]


def diverged(path) -> Store:
    """north/5 seq 2 and 3 were written here after the copy the hub's events came from."""
    s = open_store(path, SCHEMA, node="north", epoch=5)
    player(s, "P-0")
    s.mark_acked(5, 1)
    player(s, "HG0", 1)
    player(s, "HG1", 2)
    s.begin_epoch(6)
    return s


def test_yield_own_never_drops_a_trigger_nor_writes_to_the_journal(tmp_path):
    s = diverged(tmp_path / "n.db")
    trig = triggers(s.conn)
    assert {name for name, _ in trig} == {"_rs_journal_no_update", "_rs_journal_no_delete"}
    before = journal(s.conn)
    statements: list[str] = []

    def trace(_cursor, sql, _bindings):
        statements.append(sql)
        return True

    s.conn.exec_trace = trace
    try:
        new = s.yield_own(5, [2, 3], now_ms=NOW + 10)
    finally:
        s.conn.exec_trace = None
    assert [(e.epoch, e.seq) for e in new] == [(6, 1), (6, 2)]
    assert statements and not [sql for sql in statements if FORBIDDEN.search(sql)]
    assert triggers(s.conn) == trig
    assert journal(s.conn)[:len(before)] == before  # same rows, same bytes, same ids
    for sql in ("UPDATE _rs_journal SET seq=-seq WHERE jid=2", "DELETE FROM _rs_journal"):
        with pytest.raises(apsw.ConstraintError, match="append-only"):
            s.conn.execute(sql)
    assert dict(s.conn.execute("SELECT jid, cause FROM _rs_superseded")) == {
        2: "the hub holds another event as north/5/2; re-issued as epoch 6 seq 1",
        3: "the hub holds another event as north/5/3; re-issued as epoch 6 seq 2"}
    assert dict(s.conn.execute("SELECT jid, status FROM _rs_status")) == {
        2: "resequenced", 3: "resequenced"}
    assert s.verify_audit()
    s.close()


def test_superseded_rows_hold_no_id_in_any_lookup(tmp_path):
    """Dedup, the version vector, own_events, the outbox and a second yield all skip the
    superseded rows, so the hub's events are taken under those ids, once."""
    s = diverged(tmp_path / "n.db")
    s.yield_own(5, [2, 3], now_ms=NOW + 10)
    assert s.yield_own(5, [2, 3], now_ms=NOW + 11) == []  # yielded once only
    assert s.own_events(5, [2, 3]) == {}
    assert s.digests()["events"] == {"north/5": 1, "north/6": 2}
    theirs = hub_events()
    first = s.apply_remote(theirs[:1], now_ms=NOW + 20)
    assert (first.applied, first.duplicates) == (1, 0)
    again = s.apply_remote(theirs, now_ms=NOW + 30)
    assert (again.applied, again.duplicates) == (2, 1)
    assert {k: v.pk for k, v in s.own_events(5, [2, 3, 4]).items()} == {
        2: "HF0", 3: "HF1", 4: "HF2"}
    assert s.digests()["events"] == {"north/5": 4, "north/6": 2}
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(6, 1), (6, 2)]
    assert pks(s) == {"P-0", "HG0", "HG1", "HF0", "HF1", "HF2"}
    assert s.verify_audit() and ids_cover_the_journal(s.conn)
    s.close()


def _load_old(path) -> list[tuple]:
    conn = apsw.Connection(str(path))
    conn.execute(OLD_DUMP.read_text(encoding="utf-8"))
    rows = journal(conn)
    assert [r[0] for r in conn.execute("SELECT name FROM _rs_migrations")] == ["0001_engine"]
    conn.close()
    return rows


def test_migration_converts_a_database_whose_yield_negated_seq(tmp_path):
    old_rows = _load_old(tmp_path / "old.db")
    assert [r[3] for r in old_rows] == [1, -2, -3, 1, 2, 2]  # what the old yield_own left
    s = Store.open(tmp_path / "old.db", SCHEMA, roster(), "north")
    assert journal(s.conn) == old_rows
    assert {name for name, _ in triggers(s.conn)} == {"_rs_journal_no_update",
                                                      "_rs_journal_no_delete"}
    assert dict(s.conn.execute("SELECT jid, cause FROM _rs_superseded")) == {
        2: "the hub holds another event as north/5/2; re-issued as epoch 6 seq 1",
        3: "the hub holds another event as north/5/3; re-issued as epoch 6 seq 2"}
    assert list(s.conn.execute("SELECT node, epoch, seq, jid FROM _rs_ids")) == [
        ("north", 5, 1, 1), ("north", 5, 2, 6), ("north", 6, 1, 4), ("north", 6, 2, 5)]
    assert not list(s.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='index' AND tbl_name='_rs_journal'"))
    assert s.verify_audit()
    assert {k: v.pk for k, v in s.own_events(5, [2, 3]).items()} == {2: "HF0"}
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(6, 1), (6, 2)]
    # The rest of the hub's events arrive: north/5/2 is held, 3 and 4 are taken.
    res = s.apply_remote(hub_events(), now_ms=NOW + 30)
    assert (res.applied, res.duplicates) == (2, 1)
    assert s.digests()["events"] == {"north/5": 4, "north/6": 2}
    assert pks(s) == {"P-0", "HG0", "HG1", "HF0", "HF1", "HF2"}
    assert s.verify_audit() and ids_cover_the_journal(s.conn)
    migrated = s.digests()
    s.close()
    # Same state as a database that lived through the same history with this release.
    fresh = diverged(tmp_path / "new.db")
    fresh.yield_own(5, [2, 3], now_ms=NOW + 10)
    fresh.apply_remote(hub_events()[:1], now_ms=NOW + 20)
    fresh.apply_remote(hub_events(), now_ms=NOW + 30)
    assert fresh.digests() == migrated
    fresh.close()


def test_migration_is_applied_once(tmp_path):
    _load_old(tmp_path / "old.db")
    Store.open(tmp_path / "old.db", SCHEMA, roster(), "north").close()
    conn = db.connect(str(tmp_path / "old.db"))
    try:
        assert [r[0] for r in conn.execute("SELECT name FROM _rs_migrations ORDER BY name")] == [
            "0001_engine", "0002_superseded"]
        assert db.migrate(conn, MIGRATIONS) == []
        assert conn.execute("SELECT count(*) FROM _rs_superseded").fetchall() == [(2,)]
    finally:
        conn.close()


def test_an_id_is_held_by_one_journal_row(tmp_path):
    """The uniqueness the journal's unique index gave now lives in ``_rs_ids``: a second
    holder of an id is refused by SQLite itself, whatever the caller checked before."""
    s = diverged(tmp_path / "n.db")
    with pytest.raises(apsw.ConstraintError):
        s.conn.execute("INSERT INTO _rs_ids(node, epoch, seq, jid) VALUES ('north', 5, 2, 99)")
    s.close()
