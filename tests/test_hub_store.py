"""The SQLite hub store on its own: sequences, group pushes, paging, nonces."""

from __future__ import annotations

import pytest
from hubproc import TestCluster, now_ms

from riversync.hub.nonces import NonceBook
from riversync.hub.store import BatchHead, CursorInfo, PushItem, PushResult
from riversync.hub.store_sqlite import SqliteHubStore, StoreLockedError
from riversync.protocol import codec
from riversync.protocol.errors import Busy, ReplayedRequest, SequenceGap
from riversync.protocol.messages import Batch, Envelope


@pytest.fixture
def cluster(tmp_path):
    return TestCluster.create(tmp_path / "c", ["north", "south", "east"])


@pytest.fixture
def store(tmp_path):
    s = SqliteHubStore.open(tmp_path / "hub.db", new_epoch=42, now_ms=now_ms())
    yield s
    s.close()


def item(data: bytes) -> PushItem:
    env = codec.decode(data, Envelope)
    batch = codec.decode(env.b, Batch)
    return PushItem(batch=BatchHead.of(batch), batch_hash=codec.body_hash(env.b), envelope=data, now_ms=now_ms())


def test_new_store_has_one_epoch(store):
    assert [(e.epoch, e.restore_point) for e in store.epochs()] == [(42, 0)]
    assert store.head() == 0


def test_group_push_classifies_each_item_in_order(store, cluster):
    south = cluster.origin("south")
    b1, b2 = south.batch(1), south.batch(1)
    south.batch(1)  # batch 3 never sent
    b4 = south.batch(1)
    res = store.push_many([item(b1), item(b2), item(b4), item(b1)])
    assert [r.status for r in res[:2]] == ["stored", "stored"]
    assert isinstance(res[2], SequenceGap)
    assert isinstance(res[3], PushResult) and res[3].status == "duplicate"
    assert res[3].hub_seq == res[0].hub_seq
    assert store.head() == 2


def test_sequence_never_reused_after_newest_rows_are_pruned(store, cluster):
    """C15b at the store: a plain rowid would hand out 1 again here."""
    south, east = cluster.origin("south"), cluster.origin("east")
    store.push_many([item(south.batch(1)) for _ in range(3)])
    store.set_cursors([CursorInfo(n, 42, 3, now_ms()) for n in ("north", "south", "east")])
    pruned = store.prune_delivered(["north", "south", "east"])
    assert (pruned.removed_batches, pruned.upto_seq) == (3, 3)
    assert store.totals() == (0, 0)
    [r] = store.push_many([item(east.batch(1))])
    assert r.hub_seq == 4


def test_prune_keeps_what_a_node_has_not_pulled(store, cluster):
    south = cluster.origin("south")
    store.push_many([item(south.batch(1)) for _ in range(3)])
    store.set_cursors([CursorInfo("north", 42, 3, 0), CursorInfo("east", 42, 1, 0)])
    assert store.prune_delivered(["north", "east"]).removed_batches == 1
    assert store.prune_delivered(["north", "east", "south"]).removed_batches == 0  # no cursor


def test_page_is_bounded_by_bytes_but_always_moves(store, cluster):
    south = cluster.origin("south")
    bodies = [south.batch(5) for _ in range(4)]
    store.push_many([item(b) for b in bodies])
    one = len(bodies[0])
    page = store.read_page("north", 1, 0, 100, max_bytes=1)  # smaller than any batch
    assert [b.envelope for b in page.batches] == bodies[:1] and page.more and page.cursor == 1
    page = store.read_page("north", 1, 1, 100, max_bytes=2 * one + 10)
    assert [b.envelope for b in page.batches] == bodies[1:3] and page.more and page.cursor == 3
    page = store.read_page("north", 1, 3, 100, max_bytes=10**9)
    assert [b.envelope for b in page.batches] == bodies[3:] and not page.more
    assert page.cursor == 4
    own = store.read_page("south", south.epoch, 0, 100, max_bytes=10**9)
    assert own.batches == [] and own.cursor == 4 and not own.more


def test_second_open_is_refused(store, tmp_path):
    with pytest.raises(StoreLockedError):
        SqliteHubStore.open(tmp_path / "hub.db", new_epoch=1, now_ms=0)


def test_nonce_book():
    book = NonceBook(window_ms=1000, max_entries=100)
    book.use("north", b"a" * 16, ts_ms=0, now_ms=0)
    book.use("south", b"a" * 16, ts_ms=0, now_ms=0)  # nonces are per node
    with pytest.raises(ReplayedRequest):
        book.use("north", b"a" * 16, ts_ms=0, now_ms=500)
    for i in range(98):
        book.use("north", i.to_bytes(16, "big"), ts_ms=0, now_ms=0)
    with pytest.raises(Busy):  # full of unexpired nonces: refuse, never forget one early
        book.use("north", b"z" * 16, ts_ms=0, now_ms=10)
    book.use("north", b"z" * 16, ts_ms=5000, now_ms=5000)  # the old ones expired
    assert len(book) == 1


def test_a_full_disk_stores_nothing_of_the_group(store, cluster):
    """The whole group fails together and the store is as before (the hub answers 507)."""
    import apsw

    south = cluster.origin("south")
    store.push_many([item(south.batch(1))])
    pages = store._w.execute("PRAGMA page_count").fetchone()[0]
    store._w.execute(f"PRAGMA max_page_count={pages + 2}")
    group = [item(south.batch(1)), item(south.batch(2000))]
    with pytest.raises(apsw.FullError):
        store.push_many(group)
    assert store.head() == 1 and store.totals() == (1, 1)
    assert [o.batches for o in store.origins_of("south")] == [1]
    store._w.execute("PRAGMA max_page_count=1073741823")
    assert [r.status for r in store.push_many(group)] == ["stored", "stored"]
