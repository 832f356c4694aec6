"""Case C15: cursors over shared timestamps, and sequence numbers after the newest row goes.

(a) south pushes 250 events, all with the same HLC (same millisecond), one batch each, so
    pages are counted in events too; north pulls with page size 100: 250 distinct events
    over 3 pages, none skipped, none repeated.
(b) every node has pulled to 250; ``riversync hub prune`` (the hub's cleanup path) removes
    every delivered row, the newest (seq 250) included.  east then pushes 1 event: it gets
    a sequence above 250, never handed out before, and north at cursor 250 receives it.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from hubproc import RIVERSYNC, HubProcess, TestCluster, decode_reply, now_ms, store_snapshot

from riversync.protocol import codec
from riversync.protocol.messages import Batch, Envelope, ErrorReply, PullReply, PushReply

pytestmark = pytest.mark.slow


def pull(hub, origin, hub_epoch, cursor, limit=100) -> PullReply:
    status, data = hub.post("/v1/pull", origin.request("pull", hub_epoch=hub_epoch,
                                                       cursor=cursor, limit=limit))
    assert status == 200, decode_reply(data, ErrorReply)
    return decode_reply(data, PullReply)


def events_of(envelopes: list[bytes]) -> list[tuple[str, int, int]]:
    out = []
    for env in envelopes:
        body = codec.decode(codec.decode(env, Envelope).b, Batch)
        out += [ev.event_id for ev in body.events]
    return out


def test_c15_shared_timestamps_and_no_reused_sequence(tmp_path):
    cluster = TestCluster.create(tmp_path / "c", ["north", "south", "east"])
    south, north, east = (cluster.origin(n) for n in ("south", "north", "east"))
    same_ms = now_ms() << 16  # every event carries the same HLC
    with HubProcess(cluster.hub_config) as hub:
        epoch = 0
        for _ in range(250):
            status, data = hub.post("/v1/push", south.batch(1, hlc=same_ms))
            assert status == 200
            r = decode_reply(data, PushReply)
            epoch = r.hub_epoch
        assert r.hub_seq == 250

        # (a) three pages of at most 100
        pages, cursor = [], 0
        for _ in range(10):
            page = pull(hub, north, epoch, cursor)
            pages.append(page)
            cursor = page.cursor
            if not page.more:
                break
        assert [len(p.batches) for p in pages] == [100, 100, 50]
        assert [p.more for p in pages] == [True, True, False]
        got = events_of([b for p in pages for b in p.batches])
        assert len(got) == 250 and len(set(got)) == 250
        assert sorted(s for _n, _e, s in got) == list(range(1, 251))
        assert cursor == 250

        # (b) every node reports cursor 250, then the cleanup path removes rows 1..250
        for node in (north, south, east):
            assert pull(hub, node, epoch, 250).batches == []
        out = subprocess.run(
            [*RIVERSYNC, "hub", "prune", "-c",
             str(cluster.hub_config), "--json"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        res = json.loads(out.stdout)
        assert (res["removed_batches"], res["upto_seq"]) == (250, 250)
        assert res["horizon"]["upto_seq"] == 250
        snap = store_snapshot(cluster.dir / "hub.db")
        assert snap["batches"] == [] and snap["head"] == 250

        status, data = hub.post("/v1/push", east.batch(1))
        assert status == 200
        r = decode_reply(data, PushReply)
        assert r.status == "stored" and r.hub_seq == 251  # above 250, never handed out before
        page = pull(hub, north, epoch, 250)
        assert events_of(page.batches) == [("east", 1, 1)]
        assert page.cursor == 251 and not page.more

        # a retry of a pruned batch is still known: duplicate, not a fork
        status, data = hub.post("/v1/push", south.sent[-1])
        assert status == 200 and decode_reply(data, PushReply).status == "duplicate"
