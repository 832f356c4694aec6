"""What the engine offers the node so that no node module reads the engine's own tables:
row owners, the newest HLC held, putting lost events back in the queue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from engine_util import LEAGUES, NOW, open_store

from riversync.engine.errors import UnknownTable
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange

SCHEMA = load_schema(LEAGUES)
NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def _setup(s):
    s.commit_local([
        LocalChange("create", "offices", "north", {"name": "North"}),
        LocalChange("create", "leagues", "L1", {"office_id": "north", "name": "Kids"}),
        LocalChange("create", "leagues", "L2", {"office_id": "north", "name": "Adults"}),
        LocalChange("create", "teams", "T1", {"league_id": "L1", "name": "Reds"}),
        LocalChange("create", "teams", "T2", {"league_id": "L2", "name": "Blues"}),
    ], user="nora", now_ms=NOW)


def test_owners_follow_creator_transfer_and_parent(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    _setup(s)
    s.commit_local([LocalChange("transfer", "leagues", "L2", owner="south"),
                    LocalChange("delete", "teams", "T1")], user="nora", now_ms=NOW + 1)
    assert s.owner_of("leagues", "L1") == "north"
    assert s.owner_of("leagues", "L2") == "south"  # its last transfer
    assert s.owner_of("teams", "T2") == "south"  # follows its league
    assert s.owner_of("teams", "T1") is None  # deleted: not live
    assert s.owner_of("teams", "T9") is None  # never existed
    assert s.owners_of("teams", ["T1", "T2", "T9", "T2"]) == {"T2": "south"}
    assert s.owners_of("leagues", []) == {}
    with pytest.raises(UnknownTable):
        s.owner_of("nope", "x")
    s.close()


def test_newest_hlc_is_the_greatest_event_clock(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    assert s.newest_hlc() == 0
    _setup(s)
    (last,) = s.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                             user="nora", now_ms=NOW + 5)
    assert s.newest_hlc() == last.hlc
    s.close()


def test_requeue_after_puts_lost_events_back_and_only_those(tmp_path):
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    _setup(s)
    s.mark_acked(5, 5)
    assert s.outbox_size() == 0
    s.requeue_after(5, 3)  # the hub came back from a backup holding 1..3
    assert [e.seq for e in s.outbox()] == [4, 5] and s.outbox_size() == 2
    s.requeue_after(5, 4)  # never raises the mark: that is an acknowledgement's job
    assert [e.seq for e in s.outbox()] == [4, 5]
    s.mark_acked(5, 5)
    assert s.outbox_size() == 0
    s.close()


def test_no_node_module_reads_the_engine_tables():
    """The engine's ``_rs_`` tables are its own; the node goes through the Store API."""
    offenders = [f"{p.name}:{i}" for p in sorted(NODE_DIR.glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\b_rs_\w+", line)]
    assert offenders == []


def test_own_older_epoch_events_from_upstream_are_not_queued(tmp_path):
    """A restored node's old events come back from the hub: held there, so not queued.

    Proves [N-EPOCH-2]: events the hub holds are acknowledged, never re-sent."""
    from engine_util import Origin, at

    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=6)
    old = Origin("north", epoch=5)
    returned = [old.create(at("10:00"), "offices", "north", {"name": "North"}, "nora"),
                old.create(at("10:01"), "leagues", "L1", {"office_id": "north", "name": "K"},
                           "nora"),
                old.update(at("10:02"), "leagues", "L1", {"name": "Kids"}, "nora")]
    s.apply_remote(returned[:2], now_ms=NOW)
    assert s.outbox_size() == 0 and s.outbox() == []
    s.apply_remote(returned, now_ms=NOW)  # one duplicate, one new
    assert s.outbox_size() == 0 and s.stats()["outbox"] == 0
    (mine,) = s.commit_local([LocalChange("update", "leagues", "L1", {"name": "Kids 2"})],
                             user="nora", now_ms=NOW + 1)
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(6, 1)]  # only the new epoch's write
    s.close()


def test_begin_epoch_leaves_old_events_alone_and_never_reuses_an_epoch(tmp_path):
    """Proves [N-EPOCH-1] (an epoch is never reused) and [N-EPOCH-2] (old events keep
    their numbers)."""
    from riversync.engine.errors import BadValue

    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    _setup(s)
    s.mark_acked(5, 3)
    s.begin_epoch(6)
    assert s.epoch == 6 and s.own_epochs() == {5: 3}
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(5, 4), (5, 5)]  # as they were
    (w,) = s.commit_local([LocalChange("update", "teams", "T1", {"coach": "x"})],
                          user="nora", now_ms=NOW + 1)
    assert (w.epoch, w.seq) == (6, 1)
    assert [(e.epoch, e.seq) for e in s.outbox(epoch=5)] == [(5, 4), (5, 5)]
    assert [(e.epoch, e.seq) for e in s.outbox(epoch=6)] == [(6, 1)]
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(6, 1), (5, 4), (5, 5)]
    before = s.digests()
    for used in (5, 6):
        with pytest.raises(BadValue):
            s.begin_epoch(used)
        assert s.epoch == 6 and s.digests() == before
    s.close()
    again = open_store(tmp_path / "n.db", SCHEMA, node="north")
    assert again.epoch == 6
    again.close()
