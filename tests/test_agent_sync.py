"""The replication agent against a real hub process.

C16: a lost acknowledgement must not cause a fork: the exact signed bytes are persisted
before the first send and resent unchanged, also after a crash.  C14: a pulled reply
that does not verify changes nothing and stops replication.  A hub restored from an older
backup gets back what it lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from riversync.config import load_node_config
from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node.agent import META_PENDING, Agent, AgentSettings, SyncStopped
from riversync.node.db import DbThread
from riversync.node.health import NodeMetrics
from riversync.node.localcluster import LocalCluster
from riversync.node.transport import HubClient, HubUnreachable
from riversync.protocol.errors import ProtocolError, SequenceFork
from riversync.protocol.keys import NodeEntry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"
WAIT = 30.0


class LosesAcks(HubClient):
    """The network drops the hub's answer to the next ``lose`` pushes (after the hub stored them)."""

    def __init__(self, url: str, lose: int):
        super().__init__(url)
        self.lose = lose
        self.sent: list[bytes] = []

    async def push(self, signed: bytes):
        self.sent.append(signed)
        reply = await super().push(signed)
        if self.lose:
            self.lose -= 1
            raise HubUnreachable("the acknowledgement was lost on the way back")
        return reply


class Node:
    """An in-process node's store and agent, as the daemon wires them."""

    def __init__(self, c: LocalCluster, office: str, hub: HubClient | None = None,
                 roster=None, epoch: int = 11):
        self.cfg = load_node_config(c.node_configs[office])
        self.roster = roster or self.cfg.roster
        self.db = DbThread()
        self.hub = hub or HubClient(self.cfg.hub_url)
        self.epoch = epoch
        self.store = None
        self.agent = None

    async def open(self) -> Node:
        self.store = await self.db.run(Store.open, str(self.cfg.db_path), load_schema(SCHEMA),
                                       self.roster, self.cfg.node_id, epoch=self.epoch)
        settings = AgentSettings(cluster_id=self.roster.cluster_id, node_id=self.cfg.node_id,
                                 sync_interval_s=1, realtime=False)
        self.agent = Agent(settings, self.store, self.db, self.cfg.signing_key(), self.roster,
                           self.hub, NodeMetrics())
        return self

    async def write(self, *pks: str) -> None:
        changes = [LocalChange(kind="create", table="players", pk=pk,
                               values={"full_name": pk}) for pk in pks]
        await self.db.run(self.store.commit_local, changes, user=f"{self.cfg.office}-clerk",
                          now_ms=int(__import__("time").time() * 1000))

    async def close(self) -> None:
        await self.hub.close()
        await self.db.run(self.store.close)
        self.db.shutdown()


def test_c16_lost_ack_resends_the_same_bytes_and_never_forks(hub_only):
    async def main():
        lossy = LosesAcks(load_node_config(hub_only.node_configs["north"]).hub_url, lose=1)
        north = await Node(hub_only, "north", hub=lossy).open()
        await north.write("P-1", "P-2", "P-3")
        await north.agent.hello()
        with pytest.raises(HubUnreachable):
            await north.agent.push_all()
        first = lossy.sent[0]
        assert bytes.fromhex(await north.db.run(north.store.meta_get, META_PENDING)) == first
        assert await north.db.run(north.store.outbox_size) == 3
        await north.close()  # the node "crashes" before it learns of the ack

        again = LosesAcks(lossy.base_url, lose=0)
        north = await Node(hub_only, "north", hub=again).open()
        await north.write("P-4")  # a new write must not slip into the batch in flight
        pushed = await north.agent.push_all()  # no hello: the hub sees a duplicate
        assert again.sent[0] == first
        assert pushed == 4
        assert await north.db.run(north.store.outbox_size) == 0
        assert not await north.db.run(north.store.meta_get, META_PENDING)
        reply = await north.agent.hello()
        held = {o.epoch: o for o in reply.origins}[north.store.epoch]
        assert (held.batches, held.last_seq) == (2, 4)  # one batch of 3, one of 1: no fork
        assert north.agent.state != "stopped"
        await north.close()

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_c16_ack_lost_then_hello_completes_it_without_resending(hub_only):
    async def main():
        lossy = LosesAcks(load_node_config(hub_only.node_configs["north"]).hub_url, lose=1)
        north = await Node(hub_only, "north", hub=lossy).open()
        await north.write("P-1")
        await north.agent.hello()
        with pytest.raises(HubUnreachable):
            await north.agent.push_all()
        await north.agent.hello()  # the hub holds batch 1 with these very bytes: acked
        assert await north.db.run(north.store.outbox_size) == 0
        assert await north.agent.push_all() == 0
        assert len(lossy.sent) == 1
        await north.close()

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_c14_a_batch_that_does_not_verify_changes_nothing_and_stops(hub_only):
    """Proves [N-REPLY-1] and [N-CUR-1]: only a batch that verifies can change the node."""
    async def main():
        south = await Node(hub_only, "south").open()
        await south.write("S-1", "S-2")
        await south.agent.sync_now()
        await south.close()
        # north's roster holds another key for south: south's batch cannot be trusted
        cfg = load_node_config(hub_only.node_configs["north"])
        nodes = dict(cfg.roster.nodes)
        nodes["south"] = NodeEntry("south", "south", os.urandom(32))
        north = await Node(hub_only, "north", roster=replace(cfg.roster, nodes=nodes)).open()
        before = await north.db.run(north.store.digests)
        with pytest.raises(SyncStopped) as e:
            await north.agent.sync_now()
        # the key id in the envelope is not the one north's roster has for south
        assert e.value.code == "UNKNOWN_NODE"
        assert north.agent.state == "stopped"
        assert north.agent.error["code"] == "UNKNOWN_NODE" and north.agent.error["hint"]
        assert await north.db.run(north.store.digests) == before
        assert await north.db.run(north.store.get_cursor, "hub") is None
        assert await north.db.run(north.store.get_row, "players", "S-1") is None
        await north.close()

    asyncio.run(asyncio.wait_for(main(), WAIT))


def test_hub_restored_from_an_older_backup_gets_back_what_it_lost(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    try:
        c.start_all()
        north = c.client("north", "north-clerk")
        for i in range(3):
            north.post("/v1/tables/players/rows", {"pk": f"B-{i}", "values": {"full_name": "b"}})
        c.wait_for("convergence", c.converged, WAIT)
        backup = tmp_path / "hub-backup.db"
        subprocess.run([str(RIVERSYNC), "hub", "backup", "-c", str(c.hub_config), str(backup)],
                       check=True, capture_output=True, timeout=WAIT)
        for i in range(4):
            north.post("/v1/tables/players/rows", {"pk": f"A-{i}", "values": {"full_name": "a"}})
        c.wait_for("convergence", c.converged, WAIT)
        epoch_before = json.loads(urllib.request.urlopen(c.hub_url + "/v1/status",
                                                         timeout=WAIT).read())["hub_epoch"]
        c.stop("hub")
        subprocess.run([str(RIVERSYNC), "hub", "restore", "-c", str(c.hub_config), str(backup)],
                       check=True, capture_output=True, timeout=WAIT)
        c.start("hub")
        south = c.client("south", "south-clerk")
        south.post("/v1/tables/players/rows", {"pk": "S-0", "values": {"full_name": "s"}})

        def hub_has_all() -> bool:
            st = c.status("north")
            return st["outbox"] == 0 and st["agent"]["hub_head"] is not None

        c.wait_for("north to re-push", hub_has_all, WAIT)
        c.wait_for("convergence", c.converged, WAIT)
        hub = json.loads(urllib.request.urlopen(c.hub_url + "/v1/status", timeout=WAIT).read())
        assert hub["hub_epoch"] != epoch_before and len(hub["epochs"]) == 2
        assert hub["events_held"] == 3 + 4 + 1  # the 4 events the backup lacked came back
        rows = {r["player_id"] for r in
                c.client("south").get("/v1/tables/players/rows?limit=100")["rows"]}
        assert {"B-0", "A-3", "S-0"} <= rows
        for o in ("north", "south"):
            assert c.status(o)["agent"]["state"] == "running"
    finally:
        c.stop_all()


def test_a_relay_that_beats_the_origins_rebuilt_batch_is_adopted_not_a_fork(hub_only):
    """The race behind a restored hub [N-RELAY-1], in a fixed order: north learns that the
    hub lost its last batch and plans to push those events again in a rebuilt batch; south
    relays north's original batch first; north's rebuilt batch then forks from the hub's
    chain.  North must adopt the hub's chain (the events are the ones it signed), not stop."""
    c = hub_only

    async def main():
        north = await Node(c, "north").open()
        south = await Node(c, "south", epoch=12).open()
        try:
            await north.write("B-0", "B-1")
            await north.agent.hello()
            assert await north.agent.push_all() == 2
            subprocess.run([str(RIVERSYNC), "hub", "backup", "-c", str(c.hub_config),
                            str(c.dir / "hub-backup.db")],
                           check=True, capture_output=True, timeout=WAIT)
            await north.write("A-0", "A-1", "A-2")
            assert await north.agent.push_all() == 3
            await south.agent.hello()
            assert await south.agent.pull_all(0) == 5  # south keeps north's batches as signed
            c.stop("hub")
            subprocess.run([str(RIVERSYNC), "hub", "restore", "-c", str(c.hub_config),
                            str(c.dir / "hub-backup.db")],
                           check=True, capture_output=True, timeout=WAIT)
            c.start("hub")
            for node in (north, south):  # the first request after a hub restart may meet
                try:  # a kept-alive connection the old process closed
                    await node.agent.hello()
                except HubUnreachable:
                    pass
            await north.agent.hello()
            assert north.agent._hub_lost_own  # north will push A-0..A-2 again, rebuilt
            await south.agent.hello()
            assert await south.agent.relay_lost() == 1  # north's original batch, first
            with pytest.raises(SequenceFork) as fork:  # the rebuilt batch, after the relay
                await north.agent.push_all()
            north.agent._protocol_error(fork.value)  # what the agent's loop does with it
            assert north.agent.state != "stopped", north.agent.error
            assert await north.agent.sync_now_quietly(WAIT)  # hello adopts the hub's chain
            assert await north.db.run(north.store.outbox_size) == 0
            held = {o.epoch: o for o in (await north.agent.hello()).origins}
            assert held[north.store.epoch].last_seq == 5
            assert await north.agent.push_all() == 0  # nothing pushed twice
        finally:
            await north.close()
            await south.close()

    asyncio.run(asyncio.wait_for(main(), 3 * WAIT))


def test_a_batch_the_hub_finds_too_large_is_rebuilt_smaller(tmp_path, caplog):
    from riversync.node.localcluster import update_toml

    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    update_toml(c.hub_config, limits={"max_events_per_batch": 4})
    try:
        c.start("hub")

        async def main():
            north = await Node(c, "north").open()
            await north.write(*[f"P-{i}" for i in range(10)])
            await north.agent.hello()
            assert await north.agent.push_all() == 10
            assert north.agent.batch_max <= 4
            reply = await north.agent.hello()
            held = {o.epoch: o for o in reply.origins}[north.store.epoch]
            assert held.last_seq == 10 and held.batches >= 3
            # The hub's events-per-batch limit is kept from now on: no refused batch again.
            caplog.clear()
            await north.write(*[f"Q-{i}" for i in range(12)])
            assert await north.agent.push_all() == 12
            assert north.agent.batch_max == 4
            assert "refused a batch as too large" not in caplog.text
            await north.close()

        asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        c.stop_all()


def test_batches_shrunk_by_large_rows_grow_back_once_they_are_through(tmp_path):
    """A few large rows make the hub refuse a batch by its bytes; the small writes after
    them travel in full batches again, not in the shrunk size until a restart."""
    from riversync.node.localcluster import update_toml

    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    update_toml(c.hub_config, limits={"max_body_bytes": 64 * 1024})
    try:
        c.start("hub")

        async def main():
            north = await Node(c, "north").open()
            await north.agent.hello()
            await north.db.run(north.store.commit_local, [
                LocalChange(kind="create", table="players", pk=f"BIG-{i}",
                            values={"full_name": "x" * 20_000}) for i in range(8)],
                user="north-clerk", now_ms=int(time.time() * 1000))
            assert await north.agent.push_all() == 8
            assert north.agent.batch_max == 1000  # the large rows are through
            await north.write(*[f"P-{i}" for i in range(300)])
            before = {o.epoch: o for o in (await north.agent.hello()).origins}[north.store.epoch]
            assert await north.agent.push_all() == 300
            after = {o.epoch: o for o in (await north.agent.hello()).origins}[north.store.epoch]
            assert after.batches - before.batches == 1, "small rows still sent in tiny batches"
            await north.close()

        asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        c.stop_all()


def test_without_realtime_changes_travel_with_the_periodic_sync(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=False).create()
    try:
        c.start_all()
        c.client("north", "north-clerk").post("/v1/tables/players/rows",
                                              {"pk": "P-1", "values": {"full_name": "Kim"}})
        assert c.status("north")["agent"]["realtime"] is False
        c.wait_for("P-1 at south", lambda: c.client("south").get(
            "/v1/tables/players/rows")["rows"], WAIT)
        c.wait_for("convergence", c.converged, WAIT)
    finally:
        c.stop_all()


def test_after_a_sequence_gap_the_node_keeps_its_events_says_hello_and_pushes_them(hub_only):
    """Proves [N-KEEP-1] for `SEQUENCE_GAP`: the hub came back from a backup that lacks
    north's batch 1, so north's batch 2 is refused.  North drops nothing, says hello, learns
    the hub holds none of its epoch, and pushes both events again under their own numbers."""
    c = hub_only
    backup = c.dir / "hub-empty.db"
    subprocess.run([str(RIVERSYNC), "hub", "backup", "-c", str(c.hub_config), str(backup)],
                   check=True, capture_output=True, timeout=WAIT)

    async def main():
        north = await Node(c, "north").open()
        await north.write("P-1")
        await north.agent.hello()
        assert await north.agent.push_all() == 1
        c.stop("hub")
        subprocess.run([str(RIVERSYNC), "hub", "restore", "-c", str(c.hub_config), str(backup)],
                       check=True, capture_output=True, timeout=WAIT)
        c.start("hub")
        await north.write("P-2")
        with pytest.raises(ProtocolError) as e:
            await north.agent.push_all()  # no hello since the hub's restore
        assert e.value.code == "SEQUENCE_GAP"
        assert await north.db.run(north.store.outbox_size) == 1  # P-2 kept, still queued
        north.agent.start()  # the sync loop acts on the refusal
        try:
            for _ in range(int(WAIT * 10)):
                if await north.db.run(north.store.outbox_size) == 0:
                    break
                await asyncio.sleep(0.1)
        finally:
            await north.agent.stop()
        north.hub = HubClient(north.cfg.hub_url)
        north.agent.hub = north.hub
        reply = await north.agent.hello()
        held = {o.epoch: o for o in reply.origins}[north.store.epoch]
        assert held.last_seq == 2  # P-1 and P-2, numbers unchanged: 1 and 2
        for pk in ("P-1", "P-2"):
            assert await north.db.run(north.store.get_row, "players", pk) is not None
        assert north.agent.state != "stopped"
        await north.close()

    asyncio.run(asyncio.wait_for(main(), WAIT * 2))


def test_after_clock_skew_the_node_keeps_its_events_and_pushes_them_once_in_bounds(tmp_path):
    """Proves [N-KEEP-1] for `CLOCK_SKEW`: the hub (max drift 1 s) refuses an event stamped
    4 s ahead; the node keeps it queued, says hello, and the same event is stored once the
    hub's clock has caught up."""
    from riversync.node.localcluster import update_toml

    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA).create()
    update_toml(c.hub_config, limits={"max_drift_ms": 1000})
    try:
        c.start("hub")

        async def main():
            import time

            north = await Node(c, "north").open()
            ahead = int(time.time() * 1000) + 4000
            (ev,) = await north.db.run(
                north.store.commit_local,
                [LocalChange(kind="create", table="players", pk="P-1",
                             values={"full_name": "early"})],
                user="north-clerk", now_ms=ahead)
            with pytest.raises(ProtocolError) as e:
                await north.agent.sync_now()
            assert e.value.code == "CLOCK_SKEW" and north.agent.state == "backoff"
            assert [x.event_id for x in await north.db.run(north.store.outbox)] == [ev.event_id]
            await asyncio.sleep(max(0.0, (ahead - 1000) / 1000 - time.time()) + 0.5)
            assert (await north.agent.sync_now())["pushed"] == 1
            reply = await north.agent.hello()
            held = {o.epoch: o for o in reply.origins}[north.store.epoch]
            assert (held.batches, held.last_seq) == (1, ev.seq)
            await north.close()

        asyncio.run(asyncio.wait_for(main(), WAIT))
    finally:
        c.stop_all()


def test_stop_ends_a_loop_that_absorbed_its_cancel(hub_only):
    """On Python 3.11 a cancel that races what a loop awaits can be absorbed (asyncio.wait_for
    swallows it when the awaited event is set at that moment); stop() must still end."""

    async def stubborn():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # the lost cancel
        await asyncio.sleep(3600)

    async def main():
        north = await Node(hub_only, "north").open()
        try:
            task = asyncio.ensure_future(stubborn())
            await asyncio.sleep(0)
            north.agent._tasks = [task]
            await asyncio.wait_for(north.agent.stop(), WAIT)
            assert task.cancelled()
        finally:
            await north.db.run(north.store.close)
            north.db.shutdown()

    asyncio.run(asyncio.wait_for(main(), 2 * WAIT))
