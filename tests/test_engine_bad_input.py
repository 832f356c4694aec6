"""Bad input: each case gets its typed outcome, and nothing else changes.

Local writes raise a typed engine error and leave the database exactly as it was.  Remote
events cannot be refused (the hub already holds them), so they are parked or queued as a
conflict with their cause, and no row changes.
"""

from __future__ import annotations

import pytest
from engine_util import LEAGUES, NOW, Origin, at, open_store

from riversync.engine import merge
from riversync.engine.errors import (
    BadKey,
    BadValue,
    MissingReference,
    NotOwner,
    RowExists,
    RowNotFound,
    RowTooLarge,
    UnknownColumn,
    UnknownTable,
)
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange
from riversync.protocol import codec, hlc, limits
from riversync.protocol.errors import Malformed
from riversync.protocol.messages import AnyEvent

SCHEMA = load_schema(LEAGUES)


@pytest.fixture
def north(tmp_path):
    s = open_store(tmp_path / "north.db", SCHEMA, node="north")
    s.commit_local([
        LocalChange("create", "offices", "north", {"name": "North office"}),
        LocalChange("create", "leagues", "L1", {"office_id": "north", "name": "Kids"}),
        LocalChange("create", "teams", "T1", {"league_id": "L1", "name": "Reds"}),
    ], user="nora", now_ms=NOW)
    yield s
    s.close()


def _state(store):
    d = store.digests()
    return d, store.audit_count(), store.stats()


@pytest.mark.parametrize(("change", "error"), [
    (LocalChange("create", "nowhere", "x", {"name": "x"}), UnknownTable),
    (LocalChange("update", "teams", "T1", {"colour": "red"}), UnknownColumn),
    (LocalChange("update", "leagues", "L1", {"fee": "12.50"}), BadValue),
    (LocalChange("update", "leagues", "L1", {"active": 1}), BadValue),
    (LocalChange("create", "sessions", "S1", {"league_id": "L1", "name": "Spring",
                                              "starts_on": "2024-02-30"}), BadValue),
    (LocalChange("create", "teams", "T2", {"league_id": "L1"}), BadValue),  # name required
    (LocalChange("update", "teams", "T1", {"name": None}), BadValue),
    (LocalChange("create", "teams", "", {"league_id": "L1", "name": "x"}), BadKey),
    (LocalChange("create", "teams", "T" * 257, {"league_id": "L1", "name": "x"}), BadKey),
    (LocalChange("create", "teams", "T3", {"league_id": "L9", "name": "x"}), MissingReference),
    (LocalChange("create", "teams", "T1", {"league_id": "L1", "name": "x"}), RowExists),
    (LocalChange("update", "teams", "T9", {"name": "x"}), RowNotFound),
    (LocalChange("transfer", "teams", "T1", owner="south"), BadValue),
    (LocalChange("transfer", "leagues", "L1", owner="atlantis"), BadValue),
])
def test_bad_local_change_raises_and_changes_nothing(north, change, error):
    before = _state(north)
    with pytest.raises(error) as info:
        north.commit_local([LocalChange("update", "teams", "T1", {"coach": "first"}), change],
                           user="nora", now_ms=NOW + 1000)
    assert info.value.code and info.value.hint
    assert _state(north) == before  # the good first change rolled back with the bad one
    assert north.get_row("teams", "T1")["coach"] is None


def test_non_owner_local_change_raises_not_owner_and_changes_nothing(north):
    before = _state(north)
    with pytest.raises(NotOwner):
        north.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                           user="sam", now_ms=NOW + 1000)
    with pytest.raises(NotOwner):  # claiming an override without being an admin
        north.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                           user="nora", admin=True, now_ms=NOW + 1000)
    assert _state(north) == before


@pytest.mark.parametrize(("make", "status", "cause"), [
    (lambda o: o.create(at("11:00"), "nowhere", "x", {"a": 1}, "sam"),
     merge.PARKED, merge.UNKNOWN_TABLE),
    (lambda o: o.update(at("11:00"), "teams", "T1", {"colour": "red"}, "admin", admin=True),
     merge.PARKED, merge.BAD_VALUE),
    (lambda o: o.update(at("11:00"), "leagues", "L1", {"fee": 12.5}, "admin", admin=True),
     merge.PARKED, merge.BAD_VALUE),
    (lambda o: o.update(at("11:00"), "teams", "T1", {"coach": "x"}, "admin", admin=True,
                        schema=7), merge.PARKED, merge.NEWER_SCHEMA),
    (lambda o: o.create(at("11:00"), "teams", "T5", {"league_id": "L404", "name": "x"}, "sam"),
     merge.PARKED, merge.MISSING_REF),
    (lambda o: o.update(at("11:00"), "teams", "T404", {"coach": "x"}, "sam"),
     merge.PARKED, merge.ROW_NOT_KNOWN),
    (lambda o: o.update(at("11:00"), "teams", "T1", {"coach": "x"}, "sam"),
     merge.CONFLICT, merge.NOT_OWNER),
    (lambda o: o.delete(at("11:00"), "leagues", "L1", "sam"), merge.CONFLICT, merge.NOT_OWNER),
])
def test_bad_remote_event_is_parked_or_queued_and_no_row_changes(north, make, status, cause):
    """Proves [M-PARK-1], [M-PARK-2] and [M-OWN-4]: held, listed with the cause, not applied."""
    before_tables = north.digests()["tables"]
    before_audit = north.audit_count()
    ev = make(Origin("south"))
    north.apply_remote([ev], now_ms=NOW)
    listing = north.parked() if status == merge.PARKED else north.conflicts()
    assert [x["event"] for x in listing] == [list(ev.event_id)]
    assert listing[0]["cause"].startswith(cause)
    assert north.digests()["tables"] == before_tables
    assert north.audit_count() == before_audit
    assert north.stats()["events"] == 4  # held (the journal keeps it), never applied


def test_remote_primary_key_empty_or_too_long_is_refused_at_the_edge(north):
    ok = Origin("south").update(at("11:00"), "teams", "T1", {"coach": "x"}, "sam")
    raw = codec.encode(ok)
    for bad_pk in ("", "T" * 257):
        forged = raw.replace(b"\xa2T1", codec.encode(bad_pk))
        with pytest.raises(Malformed):
            codec.decode(forged, AnyEvent)


def test_remote_primary_key_longer_than_the_schema_allows_is_parked(tmp_path):
    from engine_util import load

    schema = load("engine_cases_schema.toml")  # customers: max_pk_chars = 16
    s = open_store(tmp_path / "c.db", schema)
    ev = Origin("north").create(at("10:00"), "customers", "K" * 17, {"name": "x"}, "nora")
    s.apply_remote([ev], now_ms=NOW)
    (p,) = s.parked()
    assert p["cause"].startswith(merge.BAD_VALUE) and "primary key" in p["cause"]
    assert s.count_rows("customers") == 0 and s.audit_count() == 0
    s.close()


def test_far_future_clock_is_refused_whole(north):
    """Proves [N-CUR-1]: a batch applies whole or not at all."""
    from riversync.protocol.errors import ClockSkew

    before = _state(north)
    o = Origin("south")
    fine = o.create(at("11:00"), "players", "P1", {"full_name": "A"}, "sam")
    ten_minutes_ahead = hlc.make(NOW + 10 * 60 * 1000)
    ahead = o.create(ten_minutes_ahead, "players", "P2", {"full_name": "B"}, "sam")
    with pytest.raises(ClockSkew):
        north.apply_remote([fine, ahead], now_ms=NOW)
    assert _state(north) == before


def test_a_change_too_large_for_any_batch_is_refused_and_changes_nothing(north):
    """Proves [N-LIMIT-1] in the engine: every value is within its own limit, the change
    is not; three of the four columns fit."""
    huge = "\U0001F600" * 1_000_000  # 4 MB of UTF-8
    before = _state(north)
    with pytest.raises(RowTooLarge) as info:
        north.commit_local([LocalChange("update", "teams", "T1", dict.fromkeys(
            ("name", "coach", "phone", "note"), huge))], user="nora", now_ms=NOW + 1000)
    assert info.value.code == "ROW_TOO_LARGE" and "teams 'T1'" in str(info.value)
    assert _state(north) == before
    (ev,) = north.commit_local([LocalChange("update", "teams", "T1", dict.fromkeys(
        ("coach", "phone", "note"), huge))], user="nora", now_ms=NOW + 1000)
    assert len(codec.encode(ev)) <= limits.MAX_EVENT_BYTES
    assert north.get_row("teams", "T1")["coach"] == huge
