"""Relay retention and the persisted relay-due flag [N-RELAY-1].

A real hub process (``LocalCluster``) with in-process nodes (store and agent wired as the
daemon wires them), so a test can set the agent's relay clock (no waiting for days) and
stop a node between two steps of a sync.  Proves: pruning deletes batches kept longer ago
than ``relay_keep_days`` and keeps younger ones, never leaves a hole, never runs while a
relay pass is due; ``relay_keep_days = 0`` keeps nothing; a kept-batch table of an older
release gains ``kept_ms`` without losing a batch; and a node restarted after it learned of
a hub restore, but before it relayed, still relays.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import apsw
import pytest

from riversync.config import DEFAULT_RELAY_KEEP_DAYS, ConfigError, load_node_config
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import relay
from riversync.node.agent import META_RELAY_DUE, Agent, AgentSettings
from riversync.node.db import DbThread
from riversync.node.health import NodeMetrics
from riversync.node.localcluster import LocalCluster, update_toml
from riversync.node.transport import HubClient
from riversync.protocol.errors import Busy

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"
WAIT = 30.0


class Node:
    def __init__(self, c: LocalCluster, office: str, *, epoch: int,
                 keep_days: int = DEFAULT_RELAY_KEEP_DAYS):
        self.cfg = load_node_config(c.node_configs[office])
        self.db = DbThread()
        self.hub = HubClient(self.cfg.hub_url)
        self.epoch = epoch
        self.keep_days = keep_days
        self.store = None
        self.agent = None

    async def open(self) -> Node:
        self.store = await self.db.run(Store.open, str(self.cfg.db_path), load_schema(SCHEMA),
                                       self.cfg.roster, self.cfg.node_id, epoch=self.epoch)
        settings = AgentSettings(cluster_id=self.cfg.roster.cluster_id,
                                 node_id=self.cfg.node_id, sync_interval_s=1, realtime=False,
                                 relay_keep_days=self.keep_days)
        self.agent = Agent(settings, self.store, self.db, self.cfg.signing_key(),
                           self.cfg.roster, self.hub, NodeMetrics())
        return self

    async def write(self, *pks: str) -> None:
        changes = [LocalChange(kind="create", table="players", pk=pk,
                               values={"full_name": pk}) for pk in pks]
        await self.db.run(self.store.commit_local, changes, user=f"{self.cfg.office}-clerk",
                          now_ms=int(time.time() * 1000))

    async def sql(self, query: str, *args) -> list[tuple]:
        return await self.db.run(lambda: self.store.conn.execute(query, args).fetchall())

    async def kept(self) -> list[tuple]:
        """(node, epoch, n, first, last, kept_ms) of every kept batch, in chain order."""
        return await self.sql(f"SELECT node, epoch, n, first, last, kept_ms FROM {relay.TABLE}"
                              " ORDER BY node, epoch, n")

    async def close(self) -> None:
        await self.hub.close()
        await self.db.run(self.store.close)
        self.db.shutdown()


DAY = relay.DAY_MS
T0 = 1_900_000_000_000  # ms; the relay clock of these tests, far from the real one


@pytest.fixture
def hub(hub_only):
    return hub_only


def run(coro):
    asyncio.run(asyncio.wait_for(coro, WAIT * 2))


def hub_holds(c: LocalCluster) -> dict:
    return json.loads(urllib.request.urlopen(c.hub_url + "/v1/status", timeout=WAIT)
                      .read())["origins"]


def hub_cli(c: LocalCluster, *args: str) -> None:
    subprocess.run([str(RIVERSYNC), "hub", *args], check=True, capture_output=True,
                   timeout=WAIT)


async def north_pushes(north: Node, *pks: str) -> None:
    """One batch per key, so that each one is a batch of its own at the pulling node."""
    for pk in pks:
        await north.write(pk)
        assert await north.agent.push_all() == 1


async def pull_at(node: Node, clock_ms: int) -> None:
    node.agent.relay_clock = lambda: clock_ms
    await node.agent.pull_all(0)


async def envelopes(node: Node) -> list[bytes]:
    return [e for (e,) in await node.sql(f"SELECT envelope FROM {relay.TABLE} ORDER BY n")]


# ---- retention --------------------------------------------------------------------------


def test_pruning_deletes_batches_kept_before_the_window_and_keeps_younger_ones(hub):
    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22, keep_days=30)).open()
        await north.agent.hello()
        await south.agent.hello()
        origin = f"north/{north.store.epoch}"
        await north_pushes(north, "P-1", "P-2")
        await pull_at(south, T0)  # batches 1 and 2 kept on day 0
        await north_pushes(north, "P-3", "P-4")
        await pull_at(south, T0 + 20 * DAY)  # batches 3 and 4 on day 20
        assert [(n, k) for _o, _e, n, _f, _l, k in await south.kept()] == [
            (1, T0), (2, T0), (3, T0 + 20 * DAY), (4, T0 + 20 * DAY)]
        everything = await envelopes(south)

        south.agent.relay_clock = lambda: T0 + 30 * DAY - 1  # day 0 is not 30 days old yet
        assert await south.agent.prune_relay(force=True) == 0
        assert len(await south.kept()) == 4

        south.agent.relay_clock = lambda: T0 + 31 * DAY
        assert await south.agent.prune_relay(force=True) == 2
        assert [n for _o, _e, n, *_ in await south.kept()] == [3, 4]
        assert await envelopes(south) == everything[2:]  # the young ones, byte for byte
        conn = south.store.conn
        assert await south.db.run(relay.kept_ranges, conn) == {origin: [3, 4]}
        # From where the kept run starts the node can still relay; before it, nothing.
        assert await south.db.run(relay.missing_at_hub, conn, {origin: 2}, "south") == \
            everything[2:]
        assert await south.db.run(relay.missing_at_hub, conn, {origin: 1}, "south") == []
        size = sum(len(e) for e in everything[2:])
        assert south.agent.relay_kept == (2, size)
        assert south.agent.metrics.relay_kept_batches._value.get() == 2
        assert south.agent.metrics.relay_kept_bytes._value.get() == size
        assert south.agent.snapshot()["relay_kept_bytes"] == size

        # Not forced: at most once per interval, on the relay clock.
        south.agent.relay_clock = lambda: T0 + 60 * DAY
        assert await south.agent.prune_relay() == 2
        south.agent.relay_clock = lambda: T0 + 60 * DAY + relay.PRUNE_INTERVAL_S * 1000 - 1
        assert await south.agent.prune_relay() is None
        south.agent.relay_clock = lambda: T0 + 60 * DAY + relay.PRUNE_INTERVAL_S * 1000
        assert await south.agent.prune_relay() == 0
        assert await south.kept() == []
        assert await south.db.run(relay.kept_ranges, conn) == {}
        assert south.agent.relay_kept == (0, 0)
        # The events themselves are untouched: only the relay copies went.
        for pk in ("P-1", "P-2", "P-3", "P-4"):
            assert await south.db.run(south.store.get_row, "players", pk) is not None
        await north.close()
        await south.close()

    run(main())


def test_nothing_is_pruned_while_a_relay_pass_is_due_even_after_a_restart(hub):
    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22, keep_days=1)).open()
        await north.agent.hello()
        await south.agent.hello()
        await north_pushes(north, "P-1")
        await pull_at(south, T0)
        await south.db.run(south.store.meta_set, META_RELAY_DUE, "7")  # as hello sets it
        await south.close()

        south = await (Node(hub, "south", epoch=22, keep_days=1)).open()
        south.agent.relay_clock = lambda: T0 + 400 * DAY
        assert await south.agent.prune_relay(force=True) == 0
        assert len(await south.kept()) == 1
        assert south.agent.snapshot()["relay_due"] is True
        # The relay pass completes (the hub holds north's batch): the flag goes, then
        # pruning does its work.
        await south.agent.hello()
        await south.agent.relay_lost()
        assert not await south.db.run(south.store.meta_get, META_RELAY_DUE)
        assert await south.agent.prune_relay(force=True) == 1
        assert await south.kept() == []
        await north.close()
        await south.close()

    run(main())


def test_relay_keep_days_zero_keeps_nothing_and_deletes_what_was_kept(hub):
    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22)).open()
        await north.agent.hello()
        await south.agent.hello()
        await north_pushes(north, "P-1")
        await pull_at(south, T0)
        assert len(await south.kept()) == 1
        await south.close()

        south = await (Node(hub, "south", epoch=22, keep_days=0)).open()
        south.agent.relay_clock = lambda: T0  # not even a day later
        await south.agent.hello()
        await north_pushes(north, "P-2")
        await south.agent.pull_all(0)
        assert await south.db.run(south.store.get_row, "players", "P-2") is not None
        assert len(await south.kept()) == 1  # P-2's batch was not kept
        assert await south.agent.prune_relay(force=True) == 1
        assert await south.kept() == []
        assert await south.db.run(relay.kept_ranges, south.store.conn) == {}
        await north.close()
        await south.close()

    run(main())


def _rows(tmp_path, name: str, rows: list[tuple[str, int, int, int, int, int]]):
    """A real node-side table with (node, epoch, n, first, last, kept_ms) batches."""
    conn = apsw.Connection(str(tmp_path / name))
    relay.ensure(conn)
    conn.executemany(f"INSERT INTO {relay.TABLE} (node, epoch, n, first, last, envelope,"
                     " kept_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [(o, e, n, f, la, f"{o}/{e}#{n}".encode(), k)
                      for o, e, n, f, la, k in rows])
    return conn


def test_pruning_takes_each_origins_oldest_batches_first_and_never_leaves_a_hole(tmp_path):
    """After a hub restore re-delivered batches pruned before, a young batch can precede
    old ones: they stay until it ages too, so the run from the hub's point stays whole."""
    old, young = T0, T0 + 40 * DAY
    conn = _rows(tmp_path, "n.db", [
        ("north", 1, 1, 1, 2, young), ("north", 1, 2, 3, 3, old), ("north", 1, 3, 4, 6, young),
        ("east", 2, 1, 1, 1, old), ("east", 2, 2, 2, 5, old), ("east", 2, 3, 6, 6, young)])
    assert relay.prune(conn, T0 + 45 * DAY, 30) == 2
    left = conn.execute(f"SELECT node, n FROM {relay.TABLE} ORDER BY node, n").fetchall()
    assert left == [("east", 3), ("north", 1), ("north", 2), ("north", 3)]
    assert relay.kept_ranges(conn) == {"north/1": [1, 6], "east/2": [6, 6]}
    assert relay.missing_at_hub(conn, {"north/1": 2}, me="south") == [b"north/1#2",
                                                                      b"north/1#3"]


def test_kept_ranges_name_the_last_run_when_kept_batches_have_a_hole(tmp_path):
    conn = _rows(tmp_path, "n.db", [("north", 1, 1, 1, 2, T0), ("north", 1, 3, 6, 8, T0),
                                    ("north", 1, 4, 9, 9, T0)])
    assert relay.kept_ranges(conn) == {"north/1": [6, 9]}
    # What the relay does agrees: from the hub's 5 on it sends all; from 2 on it stops.
    assert relay.missing_at_hub(conn, {"north/1": 5}, me="s") == [b"north/1#3", b"north/1#4"]
    assert relay.missing_at_hub(conn, {"north/1": 2}, me="s") == []


# ---- migration --------------------------------------------------------------------------

OLD_DDL = (f"CREATE TABLE {relay.TABLE} (node TEXT NOT NULL, epoch INTEGER NOT NULL,"
           " n INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,"
           " envelope BLOB NOT NULL, PRIMARY KEY (node, epoch, n)) WITHOUT ROWID")


async def make_table_old(node: Node) -> None:
    """Turn the node's kept-batch table into the shape releases before retention wrote."""
    def rebuild():
        conn = node.store.conn
        with conn:
            conn.execute(f"ALTER TABLE {relay.TABLE} RENAME TO old_copy")
            conn.execute("DROP INDEX IF EXISTS " + relay.KEPT_INDEX)
            conn.execute(OLD_DDL)
            conn.execute(f"INSERT INTO {relay.TABLE} SELECT node, epoch, n, first, last,"
                         " envelope FROM old_copy")
            conn.execute("DROP TABLE old_copy")
    await node.db.run(rebuild)


def test_an_older_releases_kept_batches_gain_kept_ms_as_of_the_upgrade(hub):
    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22, keep_days=30)).open()
        await north.agent.hello()
        await south.agent.hello()
        origin = f"north/{north.store.epoch}"
        await north_pushes(north, "P-1", "P-2")
        await pull_at(south, T0)
        before = await envelopes(south)
        await make_table_old(south)
        cols = [r[1] for r in await south.sql(f"PRAGMA table_info({relay.TABLE})")]
        assert "kept_ms" not in cols
        await south.close()

        # The upgraded node's first pull migrates inside its apply.
        south = await (Node(hub, "south", epoch=22, keep_days=30)).open()
        await south.agent.hello()
        await north_pushes(north, "P-3")
        await pull_at(south, T0 + 100 * DAY)
        assert [(n, k) for _o, _e, n, _f, _l, k in await south.kept()] == [
            (1, T0 + 100 * DAY), (2, T0 + 100 * DAY), (3, T0 + 100 * DAY)]
        assert (await envelopes(south))[:2] == before
        idx = await south.sql("SELECT name FROM sqlite_master WHERE type = 'index' AND"
                              " tbl_name = ?", relay.TABLE)
        assert (relay.KEPT_INDEX,) in idx
        assert await south.db.run(relay.missing_at_hub, south.store.conn, {}, "south") == \
            await envelopes(south)
        assert await south.db.run(relay.kept_ranges, south.store.conn) == {origin: [1, 3]}
        # An upgrade deletes nothing at once; one window later the old batches go.
        south.agent.relay_clock = lambda: T0 + 129 * DAY
        assert await south.agent.prune_relay(force=True) == 0
        south.agent.relay_clock = lambda: T0 + 131 * DAY
        assert await south.agent.prune_relay(force=True) == 3
        await north.close()
        await south.close()

    run(main())


def test_a_prune_before_any_pull_migrates_an_old_table_too(tmp_path):
    conn = apsw.Connection(str(tmp_path / "old.db"))
    conn.execute(OLD_DDL)
    conn.execute(f"INSERT INTO {relay.TABLE} VALUES ('north', 1, 1, 1, 3, x'00')")
    assert relay.prune(conn, T0, 30) == 0
    assert conn.execute(f"SELECT n, kept_ms FROM {relay.TABLE}").fetchall() == [(1, T0)]
    relay.ensure(conn, T0 + DAY)  # idempotent: an upgraded table is left as it is
    assert conn.execute(f"SELECT n, kept_ms FROM {relay.TABLE}").fetchall() == [(1, T0)]
    assert relay.prune(conn, T0 + 30 * DAY, 30) == 0  # more than 30 days: not yet
    assert relay.prune(conn, T0 + 30 * DAY + 1, 30) == 1


# ---- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "words"), [(-1, "between"), (3651, "between"),
                                              (True, "integer"), ("30", "integer")])
def test_a_bad_relay_keep_days_is_refused_naming_the_field(tmp_path, value, words):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    path = c.node_configs["north"]
    assert tomllib.loads(path.read_text())["relay_keep_days"] == 30  # cluster init writes it
    assert load_node_config(path).relay_keep_days == DEFAULT_RELAY_KEEP_DAYS == 30
    update_toml(path, relay_keep_days=0)
    assert load_node_config(path).relay_keep_days == 0
    update_toml(path, relay_keep_days=value)
    text = path.read_text()
    with pytest.raises(ConfigError) as e:
        load_node_config(path)
    assert e.value.field == "relay_keep_days" and words in str(e.value)
    assert path.read_text() == text  # refusing changes nothing


# ---- the relay-due flag survives a restart ----------------------------------------------


def test_a_node_restarted_before_it_relayed_still_relays_after_the_restart(hub):
    """South learns of the hub's restore at hello and pulls (its cursor moves into the new
    hub epoch, where no later hello would notice the restore again), then stops before
    its relay pass.  After the restart it must still push north's lost batches."""
    backup = hub.dir / "hub-empty.db"
    hub_cli(hub, "backup", "-c", str(hub.hub_config), str(backup))

    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22)).open()
        await north.agent.hello()
        await south.agent.hello()
        origin = f"north/{north.store.epoch}"
        await north_pushes(north, "K-0", "K-1", "K-2")
        await north.close()  # north's disk is lost: only south holds K-0..K-2 now
        await south.agent.pull_all(0)
        assert hub_holds(hub)[origin] == 3

        hub.stop("hub")
        hub_cli(hub, "restore", "-c", str(hub.hub_config), str(backup))
        hub.start("hub")
        south.hub = south.agent.hub = HubClient(south.cfg.hub_url)
        await south.agent.hello()
        assert south.agent.snapshot()["relay_due"] is True
        assert await south.db.run(south.store.meta_get, META_RELAY_DUE)
        await south.agent.pull_all(0)
        cursor = await south.db.run(south.store.get_cursor, "hub")
        assert cursor[0] == south.agent.hub_epoch  # the cursor is in the new hub epoch
        await south.close()  # stopped before relay_lost ran
        assert origin not in hub_holds(hub)

        south = await (Node(hub, "south", epoch=22)).open()
        await south.agent.sync_now()  # what the daemon does at start
        assert hub_holds(hub)[origin] == 3
        assert not await south.db.run(south.store.meta_get, META_RELAY_DUE)
        assert south.agent.snapshot()["relay_due"] is False
        await south.close()

        # The flag stays cleared: another restart does not relay again.
        south = await (Node(hub, "south", epoch=22)).open()
        await south.agent.hello()
        assert south.agent.snapshot()["relay_due"] is False
        await south.close()

    run(main())


class BusyForRelays(HubClient):
    """The hub answers BUSY to the next ``busy`` pushes (it did not judge them)."""

    def __init__(self, url: str, busy: int):
        super().__init__(url)
        self.busy = busy

    async def push(self, signed: bytes):
        if self.busy:
            self.busy -= 1
            raise Busy("the hub is at its concurrency limit")
        return await super().push(signed)


def test_a_relay_pass_the_hub_was_too_busy_for_stays_due(hub):
    backup = hub.dir / "hub-empty.db"
    hub_cli(hub, "backup", "-c", str(hub.hub_config), str(backup))

    async def main():
        north = await (Node(hub, "north", epoch=11)).open()
        south = await (Node(hub, "south", epoch=22)).open()
        await north.agent.hello()
        await south.agent.hello()
        origin = f"north/{north.store.epoch}"
        await north_pushes(north, "K-0", "K-1")
        await north.close()
        await south.agent.pull_all(0)
        await south.close()
        hub.stop("hub")
        hub_cli(hub, "restore", "-c", str(hub.hub_config), str(backup))
        hub.start("hub")

        south = Node(hub, "south", epoch=22)
        south.hub = BusyForRelays(south.cfg.hub_url, busy=1)
        await south.open()
        await south.agent.sync_now()  # hello, relay pass refused with BUSY, pull
        assert origin not in hub_holds(hub)
        assert south.agent.snapshot()["relay_due"] is True
        assert await south.db.run(south.store.meta_get, META_RELAY_DUE)
        await south.agent.sync_now()  # the hub has room now
        assert hub_holds(hub)[origin] == 2
        assert not await south.db.run(south.store.meta_get, META_RELAY_DUE)
        await south.close()

    run(main())
