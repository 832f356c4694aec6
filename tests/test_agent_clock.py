"""A node whose clock ran ahead of the hub's: the alarm, the honest hint and the write guard.

A real hub process (``LocalCluster``) and an in-process node wired as the daemon wires it
(store, agent, local API on its configured port, ``riversync status`` against it), so a
test sets the agent's wall clock (``Agent.wall_ms``) instead of running under faketime.
The agent's loops are not started: each test drives the exchanges itself, so nothing
depends on timing.  The pure parts (reading the hub's refusals, the guard's reading, the
alert rules) are tested without a hub.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from riversync.engine.store import LocalChange
from riversync.node import hubclock
from riversync.node.daemon import (
    NodeContext,
    build_app,
    make_agent,
    open_store,
    schema_path_for,
    thresholds_from,
)
from riversync.node.db import DbThread
from riversync.node.health import CRITICAL, OK, WARNING, NodeMetrics, Thresholds, evaluate
from riversync.node.localcluster import LocalCluster
from riversync.protocol import codec, hlc
from riversync.protocol.errors import ClockSkew, ProtocolError, StaleRequest, from_wire
from riversync.protocol.messages import Create, Hello

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
WAIT = 30.0
DAY_MS = 24 * 3600 * 1000


def real_ms() -> int:
    return int(time.time() * 1000)


# ---- pure: what the hub's replies say of the clocks ----------------------------------------


def _over_the_wire(err: ProtocolError) -> ProtocolError:
    """The error as the node's transport rebuilds it from the hub's error reply."""
    wire = err.to_wire()
    return from_wire({"code": wire["code"], "message": wire["message"]})


def test_a_clock_skew_refusal_names_the_hubs_time_and_the_max_drift():
    hub_now = 1_800_000_000_000
    ev = Create(node="south", epoch=1, seq=1, hlc=hlc.make(hub_now + DAY_MS, 3), schema=1,
                table="players", pk="P-1", user="u", role="clerk", admin=False, values={})
    batch = codec.make_batch(cluster="c", node="south", epoch=1, n=1, prev=codec.ZERO_HASH,
                             events=[ev], now_ms=hub_now)
    with pytest.raises(ClockSkew) as e:
        codec.check_batch_clock(batch, hub_now, 120_000)
    fact = hubclock.read_refusal(_over_the_wire(e.value), sent_local_ms=hub_now + 5)
    assert fact == hubclock.Refusal(hub_ms=hub_now, local_ms=hub_now + 5, max_drift_ms=120_000,
                                    event_hlc=hlc.make(hub_now + DAY_MS))


def test_a_stale_request_refusal_names_the_hubs_time_and_the_signing_time():
    hub_now = 1_800_000_000_000
    body = Hello(v=(1, 0), c="c", o="south", ts=hub_now + DAY_MS, e=1, nonce=b"n" * 16)
    with pytest.raises(StaleRequest) as e:
        codec.check_fresh(body, hub_now, 300_000)
    fact = hubclock.read_refusal(_over_the_wire(e.value), sent_local_ms=0)
    assert (fact.hub_ms, fact.local_ms, fact.max_drift_ms) == (hub_now, hub_now + DAY_MS, None)
    assert hubclock.read_refusal(ClockSkew("some other words"), 0) is None


class FakeClocks:
    def __init__(self, wall: int):
        self.wall = wall
        self.mono = 100.0


def test_the_guard_follows_the_clock_forgets_and_expires():
    t = FakeClocks(wall=1_800_000_000_000 + DAY_MS)
    clock = hubclock.HubClock(lambda: t.wall, lambda: t.mono, ttl_s=600)
    clock.observe(hub_ms=1_800_000_000_000, local_ms=t.wall, source="STALE_REQUEST")
    got = clock.ahead()
    assert got["offset_ms"] == DAY_MS and got["source"] == "STALE_REQUEST"
    t.mono += 60
    t.wall += 60_000
    assert clock.ahead()["offset_ms"] == DAY_MS  # still ahead a minute later
    t.wall -= DAY_MS  # the operator fixed the clock: lifted before any new reading
    assert clock.ahead() is None
    t.wall += DAY_MS
    assert clock.ahead() is None  # and forgotten, not re-armed by the old reading

    clock.observe(hub_ms=1_800_000_000_000, local_ms=t.wall, source="STALE_REQUEST")
    assert clock.ahead() is not None
    clock.forget()
    assert clock.ahead() is None

    clock.observe(hub_ms=1_800_000_000_000, local_ms=t.wall, source="STALE_REQUEST")
    t.mono += 601
    t.wall += 601_000
    assert clock.ahead() is None  # nobody renewed the reading: it no longer counts

    clock.observe(hub_ms=t.wall - 1000, local_ms=t.wall, source="hello")
    assert clock.ahead() is None  # a sane reading never arms it
    assert clock.snapshot()["offset_ms"] == 1000
    # a hello whose round trip could explain the excess does not arm it either
    clock.observe(hub_ms=t.wall - 301_000, local_ms=t.wall, source="hello", error_ms=2_000)
    assert clock.ahead() is None
    clock.observe(hub_ms=t.wall - 303_000, local_ms=t.wall, source="hello", error_ms=2_000)
    assert clock.ahead()["offset_ms"] == 303_000
    # a request signed 2 s before its refusal came back: the offset is the one at signing
    clock.observe(hub_ms=t.wall - 2_000 - DAY_MS, local_ms=t.wall - 2_000, source="STALE_REQUEST")
    assert clock.ahead()["offset_ms"] == DAY_MS


def _snap(**agent) -> dict:
    now = 1_000_000.0
    return {"now": now, "started_at": now - 5, "last_push_ok": None, "last_pull_ok": now - 1,
            "outbox": 3, "db_ok": True, "replay_failures_consecutive": 0,
            "agent": {"state": "backoff", **agent}}


def test_alert_rules_for_a_refusing_hub_and_a_clock_ahead():
    refused = {"code": "CLOCK_SKEW", "request": "push", "message": "m", "hint": "the words",
               "at": 0}
    level, reasons = evaluate(_snap(refused=refused), Thresholds())
    assert level == WARNING and [r["code"] for r in reasons] == ["HUB_REFUSING"]
    assert "the words" in reasons[0]["message"] and "3 event(s) wait" in reasons[0]["message"]
    clock = {"offset_ms": DAY_MS, "max_drift_ms": 300_000, "ahead": True}
    level, reasons = evaluate(_snap(refused=refused, clock=clock), Thresholds())
    assert level == CRITICAL and [r["code"] for r in reasons] == ["CLOCK_AHEAD", "HUB_REFUSING"]
    assert "24.0 hours ahead" in reasons[0]["message"]
    assert "3 event(s) wait" in reasons[1]["message"]
    assert evaluate(_snap(clock={**clock, "ahead": False}), Thresholds())[0] == OK


def test_held_back_events_are_described_with_the_queue_as_it_is_now():
    """The refusal was seen with 2 events queued; a write since makes 3: the status counts
    3, and says when the hub takes them by the time of the status, not of the refusal."""
    s = _snap()
    newest = hlc.make(int(s["now"] * 1000) + DAY_MS)
    refused = {"code": "CLOCK_SKEW", "request": "push", "message": "m", "hint": "2 queued",
               "at": 0, "held": {"newest_hlc": newest, "max_drift_ms": 300_000}}
    level, reasons = evaluate(_snap(refused=refused), Thresholds())
    msg = reasons[0]["message"]
    accept = hlc.wall(newest) - 300_000
    assert level == WARNING and "3 queued event(s) are stamped up to" in msg
    assert f"accepts them from about {hubclock.utc(accept)}, in about 23.9 hours" in msg
    assert "kept, not lost" in msg and "fix it" not in msg and "fix the clock" not in msg


def test_new_codes_and_metrics_are_documented():
    runbook = (ROOT / "docs" / "how-to" / "operate.md").read_text()
    api = (ROOT / "docs" / "reference" / "node-api.md").read_text()
    for code in ("CLOCK_AHEAD", "HUB_REFUSING"):
        assert f"`{code}`" in runbook, code
    for name in ("riversync_node_clock_offset_seconds", "riversync_node_hub_refusing"):
        assert f"`{name}`" in runbook, name
    assert "`CLOCK_AHEAD` | 503" in api
    names = {m.name for m in NodeMetrics().registry.collect()}
    assert {"riversync_node_clock_offset_seconds", "riversync_node_hub_refusing"} <= names


# ---- a node against a real hub -------------------------------------------------------------


@pytest.fixture
def cluster(hub_only):
    return hub_only


class ApiNode:
    """An office node in this process: store, agent and local API as the daemon builds
    them, on the port its config names; the agent's loops stay off."""

    def __init__(self, c: LocalCluster, office: str):
        self.c = c
        self.office = office
        self.cfg = c.node_config(office)
        self.db = DbThread()
        self.ctx: NodeContext | None = None
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = c.node_url(office)

    async def open(self) -> ApiNode:
        from riversync.engine.schema import load_schema

        schema = load_schema(schema_path_for(self.cfg))
        store = await self.db.run(open_store, self.cfg, schema)
        self.ctx = NodeContext(cfg=self.cfg, schema=schema, store=store, db=self.db,
                               metrics=NodeMetrics(), thresholds=thresholds_from(self.cfg))
        self.ctx.agent = make_agent(self.ctx)
        self.runner = web.AppRunner(build_app(self.ctx), access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.cfg.listen_port).start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT))
        return self

    @property
    def agent(self):
        return self.ctx.agent

    @property
    def store(self):
        return self.ctx.store

    async def call(self, method: str, path: str, body: dict | None = None,
                   user: str | None = None) -> tuple[int, dict | str]:
        token = self.c.tokens[user or f"{self.office}-operator"]
        async with self.http.request(method, self.url + path, json=body,
                                     headers={"Authorization": f"Bearer {token}"}) as r:
            if "json" in r.headers.get("Content-Type", ""):
                return r.status, await r.json()
            return r.status, await r.text()

    async def create(self, pk: str) -> tuple[int, dict]:
        return await self.call("POST", "/v1/tables/players/rows",
                               {"pk": pk, "values": {"full_name": pk}},
                               user=f"{self.office}-clerk")

    async def riversync_status(self) -> tuple[int, str]:
        """``riversync status`` as an operator runs it, against this node's port."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "riversync.cli", "status", "-c",
            str(self.c.node_configs[self.office]),
            f"--token={self.c.tokens[f'{self.office}-operator']}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        return proc.returncode, out.decode()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.ctx is not None:
            await self.ctx.agent.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.ctx is not None:
            await self.db.run(self.ctx.store.close)
        self.db.shutdown()


def run(coro_fn, c: LocalCluster, office: str = "south") -> None:
    async def main():
        node = await ApiNode(c, office).open()
        try:
            await coro_fn(node)
        finally:
            await node.close()

    asyncio.run(asyncio.wait_for(main(), 3 * WAIT))


@pytest.mark.slow
def test_a_clock_ahead_alarms_and_refuses_writes_until_it_agrees_with_the_hub(cluster):
    """While the hub's replies show the clock a day ahead: critical status, 503 CLOCK_AHEAD
    on writes (nothing written); the hub away: writes go on (offline first); the clock
    fixed: writes are taken at once, and a sync clears the alarm."""

    async def steps(south: ApiNode):
        south.agent.wall_ms = lambda: real_ms() + DAY_MS
        assert not await south.agent.sync_now_quietly(WAIT)
        err = south.agent.error
        assert err["code"] == "STALE_REQUEST"
        assert "ahead of the hub's" in err["hint"] and "fix it (NTP)" in err["hint"]

        status, body = await south.call("GET", "/healthz")
        assert (status, body["status"]) == (200, "critical")
        _, st = await south.call("GET", "/v1/status")
        codes = [r["code"] for r in st["reasons"]]
        assert codes[0] == "CLOCK_AHEAD" and "HUB_REFUSING" in codes
        offset = st["agent"]["clock"]["offset_ms"]
        assert DAY_MS - 60_000 < offset < DAY_MS + 60_000
        _, metrics = await south.call("GET", "/metrics")
        assert "riversync_node_hub_refusing 1.0" in metrics
        assert "riversync_node_alert_level 2.0" in metrics
        exit_code, words = await south.riversync_status()
        assert exit_code == 2 and "CLOCK_AHEAD" in words, words

        before = await south.db.run(south.store.digests)
        status, body = await south.create("P-AHEAD")
        assert status == 503 and body["error"]["code"] == "CLOCK_AHEAD", body
        assert "ahead of the hub's" in body["error"]["message"]
        assert "NTP" in body["error"]["hint"]
        assert await south.db.run(south.store.get_row, "players", "P-AHEAD") is None
        assert await south.db.run(south.store.outbox_size) == 0
        assert await south.db.run(south.store.digests) == before
        status, body = await south.call("POST", "/v1/staging/1/apply", {})
        assert status == 503 and body["error"]["code"] == "CLOCK_AHEAD", body  # staging too

        cluster.stop("hub")  # nothing can be known now: the office keeps working
        assert not await south.agent.sync_now_quietly(WAIT)
        assert south.agent.error["code"] == "HUB_UNREACHABLE"
        status, body = await south.create("P-OFFLINE")
        assert status == 201, body
        cluster.start("hub")
        assert not await south.agent.sync_now_quietly(WAIT)  # refused again: guard again
        assert (await south.create("P-AHEAD"))[0] == 503

        south.agent.wall_ms = real_ms  # the operator fixes the clock
        status, body = await south.create("P-FIXED")  # taken before any new hub reply
        assert status == 201, body
        assert (await south.agent.sync_now())["pushed"] == 2
        _, st = await south.call("GET", "/v1/status")
        assert st["level"] == OK and st["agent"]["refused"] is None, st["reasons"]
        assert abs(st["agent"]["clock"]["offset_ms"]) < 60_000

    run(steps, cluster)


@pytest.mark.slow
def test_events_stamped_ahead_by_a_clock_fixed_since_warn_with_an_honest_hint(cluster):
    """Writes taken while the clock ran a day ahead; the clock is right again.  The hub
    refuses the push: the status warns (it said OK before), the hint says when the hub
    takes them and that they are kept, not "fix the clock"; the pull still runs; writes
    are still taken; and "last push never" trips NO_SYNC once ``warn_no_sync_s`` has
    passed since the start."""

    async def steps(south: ApiNode):
        north = await ApiNode(cluster, "north").open()
        try:
            assert (await north.create("N-1"))[0] == 201
            assert (await north.agent.sync_now())["pushed"] == 1
        finally:
            await north.close()
        ahead = real_ms() + DAY_MS
        events = await south.db.run(
            south.store.commit_local,
            [LocalChange(kind="create", table="players", pk=f"F-{i}", values={"full_name": "f"})
             for i in range(2)], user="south-clerk", now_ms=ahead)
        with pytest.raises(ProtocolError) as e:
            await south.agent.sync_now()
        assert e.value.code == "CLOCK_SKEW"
        hint = south.agent.error["hint"]
        newest = hlc.wall(events[-1].hlc)
        assert f"2 queued event(s) are stamped up to {hubclock.utc(newest)}" in hint, hint
        assert f"accepts them from about {hubclock.utc(newest - 300_000)}" in hint, hint
        assert "kept, not lost" in hint and "fix the clock" not in hint
        assert south.agent.clock_ahead() is None
        # the refused push does not stop the office from receiving the others' changes
        assert await south.db.run(south.store.get_row, "players", "N-1") is not None

        status, body = await south.create("P-LATER")  # the clock is fine: writes go on
        assert status == 201, body
        assert body["events"][0]["hlc"] > events[-1].hlc  # the HLC stays monotonic

        _, st = await south.call("GET", "/v1/status")
        assert st["level"] == WARNING, st["reasons"]
        assert [r["code"] for r in st["reasons"]] == ["HUB_REFUSING"]
        words = st["reasons"][0]["message"]
        assert f"3 queued event(s) are stamped up to {hubclock.utc(newest)}" in words, words
        assert "kept, not lost" in words
        assert st["outbox"] == 3 and st["last_push_ok"] is None
        assert (await south.call("GET", "/healthz"))[1]["status"] == WARNING
        exit_code, words = await south.riversync_status()
        assert exit_code == 1 and "HUB_REFUSING" in words, words

        south.ctx.started_at -= south.cfg.alerts.warn_no_sync_s  # as if started long ago
        _, st = await south.call("GET", "/v1/status")
        assert "NO_SYNC" in [r["code"] for r in st["reasons"]], st["reasons"]
        # nothing was dropped: every event still waits, in order
        queued = await south.db.run(south.store.outbox)
        assert [ev.pk for ev in queued] == ["F-0", "F-1", "P-LATER"]

    run(steps, cluster)
