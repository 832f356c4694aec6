"""Node rules of the protocol that the engine's store carries: the clock survives a restart
with what the node received, a batch already held changes nothing, and parked events are
retried after every later apply (spec/PROTOCOL.md sections 7, 10 and 12)."""

from __future__ import annotations

import pytest
from engine_util import LEAGUES, NOW, Origin, at, open_store

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange
from riversync.protocol import hlc
from riversync.protocol.errors import ClockSkew

SCHEMA = load_schema(LEAGUES)


def _touch(store, now_ms):
    (ev,) = store.commit_local([LocalChange("create", "players", f"L-{now_ms}",
                                            {"full_name": "x"})], user="nora", now_ms=now_ms)
    return ev.hlc


def test_a_received_clock_is_kept_with_its_events_and_survives_a_restart(tmp_path):
    """Proves [N-HLC-1] for received HLCs: a batch that is refused leaves the clock where it
    was (the HLC is stored in the events' transaction), one that applies moves it, and the
    node starts from it after a restart even though its own wall clock is behind."""
    path = tmp_path / "n.db"
    s = open_store(path, SCHEMA, node="north")
    o = Origin("south")
    ahead = hlc.make(NOW + 60_000, 3)  # a minute ahead: within the drift bound
    fine = o.create(ahead, "players", "P1", {"full_name": "A"}, "sam")
    too_far = o.create(hlc.make(NOW + 3_600_000), "players", "P2", {"full_name": "B"}, "sam")
    with pytest.raises(ClockSkew):
        s.apply_remote([fine, too_far], now_ms=NOW)
    s.close()
    s = open_store(path, SCHEMA, node="north")
    assert hlc.wall(_touch(s, NOW)) < NOW + 60_000  # the refused batch did not move it
    s.apply_remote([fine], now_ms=NOW)
    s.close()
    s = open_store(path, SCHEMA, node="north")
    assert _touch(s, NOW + 1) > ahead
    s.close()


def test_applying_held_events_again_changes_nothing(tmp_path):
    """Proves [N-CUR-2]: a batch the node holds, re-delivered whole, split, reordered or
    mixed into a later batch, changes no row, conflict, parked event, audit or journal."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="north")
    s.commit_local([LocalChange("create", "offices", "north", {"name": "North"}),
                    LocalChange("create", "leagues", "L1", {"office_id": "north", "name": "K"})],
                   user="nora", now_ms=NOW)
    o = Origin("south")
    batch = [o.create(at("10:00"), "players", "P1", {"full_name": "A"}, "sam"),
             o.update(at("10:01"), "leagues", "L1", {"name": "theirs"}, "sam"),  # a conflict
             o.update(at("10:02"), "players", "P9", {"full_name": "B"}, "sam")]  # parked
    first = s.apply_remote(batch, now_ms=NOW, cursor=("hub", 1, 1))
    assert first.applied == 1 and len(s.conflicts()) == 1 and len(s.parked()) == 1
    before = (s.digests(), s.audit_count(), s.stats()["events"], s.conflicts(), s.parked())
    for again in (batch, list(reversed(batch)), batch[:1], batch[1:]):
        res = s.apply_remote(again, now_ms=NOW, cursor=("hub", 1, 1))
        assert res.duplicates == len(again) and res.applied == 0
        assert (s.digests(), s.audit_count(), s.stats()["events"], s.conflicts(),
                s.parked()) == before
    s.close()


def test_parked_events_are_retried_after_a_later_apply(tmp_path):
    """Proves [M-PARK-1]: an update of a row not yet known and a row whose referenced row is
    missing wait (listed, not dropped) and apply once a later batch brings what they need."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="east")
    o = Origin("north")
    office = o.create(at("10:00"), "offices", "north", {"name": "North"}, "nora")
    league = o.create(at("10:01"), "leagues", "L1", {"office_id": "north", "name": "K"}, "nora")
    team = o.create(at("10:02"), "teams", "T1", {"league_id": "L1", "name": "Reds"}, "nora")
    rename = o.update(at("10:03"), "leagues", "L1", {"name": "Kids"}, "nora")
    s.apply_remote([office], now_ms=NOW)
    s.apply_remote([team, rename], now_ms=NOW)  # the league has not arrived
    assert sorted(p["pk"] for p in s.parked()) == ["L1", "T1"]
    assert s.get_row("teams", "T1") is None and s.get_row("leagues", "L1") is None
    s.apply_remote([league], now_ms=NOW)
    assert s.parked() == []
    assert s.get_row("leagues", "L1")["name"] == "Kids"
    assert s.get_row("teams", "T1")["name"] == "Reds"
    fresh = open_store(tmp_path / "f.db", SCHEMA, node="south")
    fresh.apply_remote([office, league, team, rename], now_ms=NOW)
    assert fresh.digests()["state"] == s.digests()["state"]
    s.close()
    fresh.close()
