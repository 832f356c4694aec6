"""Which rows a remote apply recomputes, and that its shortcuts give the fold's result.

The engine skips work it can prove changes nothing (a row still unknown cannot release what
waits for it) and folds a row at once when its create arrives after events that waited for
it.  These tests pin both decisions through ``ApplyResult.recomputed_rows`` and compare the
state with a replica that received the same events in order.
"""

from __future__ import annotations

from engine_util import NOW, Origin, at, open_store, snapshot

from riversync.engine.schema import parse_schema

# one table no other table points at: its row summaries may stay in memory until a recompute
ITEMS = parse_schema({"version": 1, "tables": {"items": {
    "primary_key": "id", "columns": {"id": "text", "name": "text", "qty": "integer"}}}})
# the same with a child table, so summaries of "items" are asked about by other rows
LINKED = parse_schema({"version": 1, "tables": {
    "items": {"primary_key": "id", "columns": {"id": "text", "name": "text", "qty": "integer"}},
    "notes": {"primary_key": "id", "columns": {"id": "text", "item": {
        "type": "text", "references": "items"}, "body": "text"}}}})


def _events():
    o = Origin("south")
    create = o.create(at("10:00"), "items", "I1", {"name": "a", "qty": 1}, "sam")
    up1 = o.update(at("10:01"), "items", "I1", {"qty": 2}, "sam")
    up2 = o.update(at("10:02"), "items", "I1", {"name": "b"}, "sam")
    return create, up1, up2


def test_updates_of_an_unknown_row_wait_without_recomputing_it(tmp_path):
    create, up1, up2 = _events()
    s = open_store(tmp_path / "a.db", ITEMS)
    r1 = s.apply_remote([up1], now_ms=NOW)
    r2 = s.apply_remote([up2], now_ms=NOW)
    assert (r1.parked, r2.parked) == (1, 1)
    assert r2.recomputed_rows == 0  # the row is still unknown: nothing can be released
    assert [p["cause"] for p in s.parked()] == ["row not known", "row not known"]
    r3 = s.apply_remote([create], now_ms=NOW)
    assert r3.recomputed_rows == 1 and s.parked() == []
    assert s.get_row("items", "I1") == {"id": "I1", "name": "b", "qty": 2}
    s.close()


def test_a_late_create_folds_its_waiting_rows_like_an_in_order_replay(tmp_path):
    create, up1, up2 = _events()
    for schema in (ITEMS, LINKED):
        late = open_store(tmp_path / f"late-{len(schema.tables)}.db", schema)
        late.apply_remote([up2], now_ms=NOW)
        late.apply_remote([up1, create], now_ms=NOW)  # create last, in the same apply
        ordered = open_store(tmp_path / f"ordered-{len(schema.tables)}.db", schema)
        ordered.apply_remote([create, up1, up2], now_ms=NOW)
        assert snapshot(late) == snapshot(ordered)
        assert late.digests()["state"] == ordered.digests()["state"]
        late.close()
        ordered.close()


def test_a_note_waiting_for_its_item_is_released_when_the_item_is_created(tmp_path):
    o = Origin("south")
    create = o.create(at("10:00"), "items", "I1", {"name": "a", "qty": 1}, "sam")
    note = o.create(at("10:01"), "notes", "N1", {"item": "I1", "body": "hi"}, "sam")
    s = open_store(tmp_path / "n.db", LINKED)
    assert s.apply_remote([note], now_ms=NOW).parked == 1
    res = s.apply_remote([create], now_ms=NOW)
    assert res.parked == 0 and s.parked() == []
    assert s.get_row("notes", "N1") == {"id": "N1", "item": "I1", "body": "hi"}
    s.close()
