"""`riversync hub prune` and the prune horizon, against a real hub process.

A pull from before the horizon would be served the batches the hub still holds and never
the pruned ones: the node would lack them for good, with every check saying "not caught up
yet".  The hub refuses such a pull instead, and the refusal changes nothing it holds.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from hubproc import RIVERSYNC, HubProcess, TestCluster, decode_reply, now_ms, store_snapshot

from riversync.hub.store import BatchHead, CursorInfo, PushItem
from riversync.hub.store_sqlite import SqliteHubStore, backup_store, restore_store
from riversync.protocol import codec
from riversync.protocol.errors import CursorPruned
from riversync.protocol.messages import Batch, Envelope, ErrorReply, PullReply


def prune(cluster: TestCluster) -> dict:
    out = subprocess.run([*RIVERSYNC, "hub", "prune", "-c", str(cluster.hub_config), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def hub_cmd(cluster: TestCluster, *args: str) -> None:
    out = subprocess.run([*RIVERSYNC, "hub", *args, "-c", str(cluster.hub_config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def pull(hub: HubProcess, origin, hub_epoch: int, cursor: int):
    status, data = hub.post("/v1/pull", origin.request("pull", hub_epoch=hub_epoch,
                                                       cursor=cursor))
    if status == 200:
        return status, decode_reply(data, PullReply)
    return status, decode_reply(data, ErrorReply)


@pytest.fixture
def cluster(tmp_path):
    return TestCluster.create(tmp_path / "c", ["north", "south", "east"])


def test_pull_before_the_prune_horizon_is_refused_and_changes_nothing(cluster, tmp_path):
    """Proves [H-PRUNE-1]: north asks from cursor 2 after batches 1..5 of south were
    pruned; the hub answers CURSOR_PRUNED (HTTP 410, action stop) naming the cursor, the
    horizon and the prune, and records nothing, also after a restart of the hub."""
    north, south, east = (cluster.origin(n) for n in ("north", "south", "east"))
    with HubProcess(cluster.hub_config) as hub:
        for _ in range(5):
            assert hub.post("/v1/push", south.batch(2))[0] == 200
        epoch = hub.status()["hub_epoch"]
        out = subprocess.run([*RIVERSYNC, "hub", "prune", "-c", str(cluster.hub_config)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "Nothing pruned" in out.stdout
        assert "east, north, south" in out.stdout  # nobody has pulled: all hold it back
        for node in (north, south, east):
            status, page = pull(hub, node, epoch, 0)
            assert status == 200 and page.cursor == 5
            assert pull(hub, node, epoch, 5)[0] == 200  # confirms it holds them
        res = prune(cluster)
        assert res["removed_batches"] == 5 and res["horizon"]["upto_seq"] == 5
        assert hub.status()["pruned"]["upto_seq"] == 5

        before = store_snapshot(cluster.dir / "hub.db")
        status, err = pull(hub, north, epoch, 2)
        assert status == 410
        assert (err.code, err.action) == ("CURSOR_PRUNED", "stop")
        assert "cursor 2" in err.message and "prune horizon 5" in err.message
        assert res["horizon"]["pruned_at"] in err.message
        assert "riversync restore" in err.hint and res["horizon"]["pruned_at"] in err.hint
        assert store_snapshot(cluster.dir / "hub.db") == before  # cursors included

        # a cursor of a hub epoch this hub never had stands at 0: refused too
        status, err = pull(hub, north, epoch + 1, 5)
        assert status == 410 and err.code == "CURSOR_PRUNED"
        assert f"cursor 5 of hub epoch {epoch + 1}" in err.message
        assert store_snapshot(cluster.dir / "hub.db") == before

        # south lacks nothing below the horizon: every pruned batch is its own
        status, page = pull(hub, south, epoch, 2)
        assert status == 200 and page.batches == [] and page.cursor == 5

        hub.stop()
        hub.start()  # the horizon is in the store: a restart does not forget it
        status, err = pull(hub, north, epoch, 2)
        assert status == 410 and err.code == "CURSOR_PRUNED"
        status, page = pull(hub, north, epoch, 5)  # at the horizon: served as usual
        assert status == 200 and page.cursor == 5


def test_a_hub_backup_from_before_the_prune_lets_the_node_catch_up(cluster, tmp_path):
    """[H-PRUNE-2] the horizon travels with the store: a hub restored from a backup taken
    before the prune holds the batches again and serves the refused cursor (the hint's
    second way out), while a backup taken after the prune keeps refusing it."""
    north, south, east = (cluster.origin(n) for n in ("north", "south", "east"))
    before_prune = tmp_path / "hub-before.db"
    after_prune = tmp_path / "hub-after.db"
    with HubProcess(cluster.hub_config) as hub:
        for _ in range(4):
            assert hub.post("/v1/push", south.batch(1))[0] == 200
        epoch = hub.status()["hub_epoch"]
        for node in (north, south, east):
            assert pull(hub, node, epoch, 4)[0] == 200
        hub_cmd(cluster, "backup", str(before_prune))
        assert prune(cluster)["removed_batches"] == 4
        hub_cmd(cluster, "backup", str(after_prune))
        assert pull(hub, north, epoch, 1)[1].code == "CURSOR_PRUNED"
        hub.stop()

        hub_cmd(cluster, "restore", str(after_prune))
        hub.start()
        status, err = pull(hub, north, epoch, 1)
        assert status == 410 and err.code == "CURSOR_PRUNED"
        hub.stop()

        hub_cmd(cluster, "restore", str(before_prune))
        hub.start()
        assert hub.status()["pruned"] is None
        status, page = pull(hub, north, epoch, 1)
        assert status == 200
        got = [codec.decode(codec.decode(b, Envelope).b, Batch).n for b in page.batches]
        assert got == [2, 3, 4]


def item(data: bytes) -> PushItem:
    env = codec.decode(data, Envelope)
    return PushItem(batch=BatchHead.of(codec.decode(env.b, Batch)),
                    batch_hash=codec.body_hash(env.b), envelope=data, now_ms=now_ms())


def test_prune_counts_every_node_where_the_hub_would_serve_it(cluster, tmp_path):
    """Proves [H-PRUNE-2]: a node without a cursor, or with a cursor of a hub epoch the
    hub does not know, holds everything back; a cursor of an older hub epoch counts up to
    the restore points since; the horizon never goes down and survives reopening."""
    db = tmp_path / "hub.db"
    south = cluster.origin("south")
    store = SqliteHubStore.open(db, new_epoch=1, now_ms=now_ms())
    store.push_many([item(south.batch(1)) for _ in range(6)])
    store.close()
    backup_store(db, tmp_path / "b.db")
    restore_store(tmp_path / "b.db", db, "test")
    store = SqliteHubStore.open(db, new_epoch=2, now_ms=now_ms())  # epoch 2, restore point 6
    try:
        assert [(e.epoch, e.restore_point) for e in store.epochs()] == [(1, 0), (2, 6)]
        store.push_many([item(south.batch(1)) for _ in range(2)])  # 7, 8
        store.set_cursors([CursorInfo("south", 2, 8, 0), CursorInfo("north", 1, 4, 0)])
        res = store.prune_delivered(["north", "south", "east"], now_ms=1_000)
        assert (res.removed_batches, res.upto_seq, res.held_back_by) == (0, 0, ("east",))
        assert not res.advanced
        assert store.prune_horizon() is None and store.totals()[0] == 8

        store.set_cursors([CursorInfo("east", 99, 8, 0)])  # a hub epoch this hub never had
        assert store.prune_delivered(["north", "south", "east"]).removed_batches == 0

        store.set_cursors([CursorInfo("east", 1, 8, 0)])  # older epoch: counts up to 6
        res = store.prune_delivered(["north", "south", "east"], now_ms=2_000)
        assert (res.removed_batches, res.upto_seq, res.held_back_by) == (4, 4, ("north",))
        assert res.advanced
        assert (res.horizon.upto_seq, res.horizon.hub_epoch, res.horizon.pruned_ms) == (4, 2,
                                                                                         2_000)
        store.set_cursors([CursorInfo("north", 2, 2, 0)])  # went back: the horizon does not
        res = store.prune_delivered(["north", "south", "east"], now_ms=3_000)
        assert res.removed_batches == 0 and res.horizon.upto_seq == 4 and not res.advanced
        with pytest.raises(CursorPruned):
            store.read_page("north", 1, 2, 100, 1 << 20)
    finally:
        store.close()
    store = SqliteHubStore.open(db, new_epoch=3, now_ms=now_ms())
    try:
        assert store.prune_horizon().upto_seq == 4 and store.prune_horizon().pruned_ms == 2_000
    finally:
        store.close()
