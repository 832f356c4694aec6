"""The engine's side of settling a node's own events with another copy of its history:
``yield_own`` (the hub holds other events under own ids) and ``carry_own`` (a restore
takes the writes the backup lacks from the file it puts aside)."""

from __future__ import annotations

from engine_util import LEAGUES, NOW, Origin, at, open_store

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange

SCHEMA = load_schema(LEAGUES)


def player(s, pk: str, t: int = 0):
    return s.commit_local([LocalChange("create", "players", pk, {"full_name": pk})],
                          user="nora", now_ms=NOW + t)


def pks(s) -> set[str]:
    return {r["player_id"] for r in s.list_rows("players", limit=100)}


def test_yield_own_adopts_the_hubs_events_and_reissues_the_local_writes(tmp_path):
    """Proves [N-EPOCH-4] at the store: the hub's events take the ids, the local writes
    live on as new events of the current epoch, nothing is lost, the audit chain holds."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    player(s, "P-0")
    s.mark_acked(5, 1)  # the hub has P-0
    player(s, "HG0", 1)
    player(s, "HG1", 2)  # (5, 2) and (5, 3): the hub holds other events under these ids
    s.begin_epoch(6)
    hub = Origin("north", epoch=5)
    hub.seq = 1
    theirs = [hub.create(at("10:00"), "players", "HF0", {"full_name": "HF0"}, "nora"),
              hub.create(at("10:01"), "players", "HF1", {"full_name": "HF1"}, "nora"),
              hub.create(at("10:02"), "players", "HF2", {"full_name": "HF2"}, "nora")]
    local = s.own_events(5, [2, 3, 4])
    assert sorted(local) == [2, 3] and local[2] != theirs[0]

    new = s.yield_own(5, [2, 3], now_ms=NOW + 10)
    assert [(e.epoch, e.seq, e.pk) for e in new] == [(6, 1, "HG0"), (6, 2, "HG1")]
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(6, 1), (6, 2)]
    s.apply_remote(theirs, now_ms=NOW + 20)
    assert pks(s) == {"P-0", "HG0", "HG1", "HF0", "HF1", "HF2"}
    assert {k: v.pk for k, v in s.own_events(5, [2, 3, 4]).items()} == {
        2: "HF0", 3: "HF1", 4: "HF2"}
    assert s.digests()["events"]["north/5"] == 4 and s.digests()["events"]["north/6"] == 2
    assert s.verify_audit()
    assert s.yield_own(5, [9], now_ms=NOW) == [] and s.yield_own(6, [1], now_ms=NOW) == []
    s.close()


def test_carry_own_takes_missing_own_events_under_their_ids_once(tmp_path):
    live = open_store(tmp_path / "live.db", SCHEMA, node="north", epoch=5)
    for i in range(3):
        player(live, f"A-{i}", i)
    carried = list(live.own_events(5, [1, 2, 3]).values())
    live.close()

    s = open_store(tmp_path / "restored.db", SCHEMA, node="north", epoch=5)
    player(s, "A-0")  # the backup holds the first one already
    s.begin_epoch(6)
    assert s.carry_own(carried) == 2
    assert s.carry_own(carried) == 0  # again: nothing new
    assert pks(s) == {"A-0", "A-1", "A-2"}
    assert [(e.epoch, e.seq) for e in s.outbox()] == [(5, 1), (5, 2), (5, 3)]
    (mine,) = player(s, "N-0", 10)
    assert (mine.epoch, mine.seq) == (6, 1) and mine.hlc > max(e.hlc for e in carried)
    assert s.verify_audit()
    s.close()


def test_a_restored_pending_batch_is_acknowledged_only_when_the_hubs_hash_proves_it(tmp_path):
    """The batch a backup still awaited an ack for may sit before the restored cursor, so
    its events might never come back to be compared; the hub's batch hash settles it, and
    a hash that differs settles nothing."""
    from engine_util import roster, signing_key

    from riversync.node.agent import META_RESTORED_PENDING, Agent, AgentSettings
    from riversync.protocol.codec import ZERO_HASH, body_hash, decode, make_batch, sign
    from riversync.protocol.messages import Envelope

    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    player(s, "P-0")
    player(s, "P-1", 1)
    key = signing_key("north")
    data = sign(make_batch(cluster=s.roster.cluster_id, node="north", epoch=5, n=1,
                           prev=ZERO_HASH, events=s.outbox(), now_ms=NOW), key)
    h = body_hash(decode(data, Envelope).b)
    s.meta_set(META_RESTORED_PENDING, data.hex())
    s.begin_epoch(6)
    agent = Agent(AgentSettings(cluster_id=s.roster.cluster_id, node_id="north",
                                sync_interval_s=1, realtime=False),
                  s, None, key, roster(), None, None)
    agent._settle_restored_pending(5, 1, b"\x01" * 32)  # another batch 1: not these bytes
    agent._settle_restored_pending(5, 2, h)  # another number
    assert s.own_epochs()[5] == 0 and s.meta_get(META_RESTORED_PENDING)
    agent._settle_restored_pending(5, 1, h)
    assert s.own_epochs()[5] == 2 and not s.meta_get(META_RESTORED_PENDING)
    s.close()


def test_origin_gaps_names_another_origin_held_past_a_gap(tmp_path):
    """An origin's later events held without the earlier ones: what EVENTS_SKIPPED reports
    after a full pull. The node's own origin is never reported."""
    s = open_store(tmp_path / "n.db", SCHEMA, node="north", epoch=5)
    player(s, "N-0")
    south = Origin("south", epoch=9)
    evs = [south.create(at(f"10:0{i}"), "offices", f"o{i}", {"name": "S"}, "sam")
           for i in range(6)]
    s.apply_remote(evs[:2], now_ms=NOW)
    assert s.origin_gaps() == []
    s.apply_remote(evs[4:], now_ms=NOW)  # #3 and #4 never came
    assert s.origin_gaps() == [{"origin": "south/9", "first": 3, "holds_up_to": 6}]
    s.apply_remote(evs[2:4], now_ms=NOW)
    assert s.origin_gaps() == []
    s.close()
