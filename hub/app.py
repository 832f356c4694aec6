"""The hub's HTTP endpoints (aiohttp).

Theory of operation: every POST body is a signed envelope.  A handler reads the body
within the size limit, opens the envelope against the roster (version, cluster, node,
key, signature, body shape: ``protocol.codec.open_envelope``), narrows it to the one
message type the endpoint takes, then applies the endpoint's own checks: the clock bound
for a batch; freshness and a single-use nonce for hello, pull and status.  Any
``ProtocolError`` becomes an ``ErrorReply`` with that error's HTTP status; only a fault of
the hub itself is a 5xx.  Replies are protocol reply structs, msgpack-encoded.

Pushes go to the group-commit writer and are acknowledged after the commit.  A stored
batch wakes every long-polling pull, which then re-reads the store.

Routes are in one table, ``ROUTES``, at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import apsw
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from riversync.config import HubConfig
from riversync.protocol import codec
from riversync.protocol import version as pversion
from riversync.protocol.errors import (
    Busy,
    CursorPruned,
    Malformed,
    ProtocolError,
    TooLarge,
)
from riversync.protocol.messages import (
    ErrorReply,
    Hello,
    HelloReply,
    NodeStatus,
    Pull,
    PullReply,
    PushReply,
    StatusReply,
    StatusRequest,
)

from . import epoch as epochs_mod
from .metrics import HubMetrics
from .nonces import NonceBook
from .store import (
    CursorInfo,
    HubStore,
    PruneHorizon,
    PushItem,
    PushResult,
    schema_mismatch,
    utc_text,
)
from .verify import Verifier
from .writer import Writer

log = logging.getLogger("riversync.hub")

MSGPACK = "application/msgpack"
READ_CHUNK = 64 * 1024
DRAIN_FACTOR = 4  # an oversized body is read and dropped up to this many times the limit,
# so the client sees the TOO_LARGE reply instead of a reset connection
READER_THREADS = 4  # store reads (pulls, status) run here, beside the writer thread
BODY_TIMEOUT_S = 300.0  # s; a request body must arrive within this (16 MiB at ~0.5 Mbit/s),
# so a stalled or deliberately slow client cannot hold a concurrency slot for ever
BODY_GRACE_S = 10.0  # s; after this a body must average MIN_BODY_RATE, and no pause in it
MIN_BODY_RATE = 8 * 1024  # bytes/s may last longer, so a slow-body client is cut off soon
BODY_READERS_FACTOR = 4  # bodies being received at once: this many times the request limit
UNLIMITED_PATHS = frozenset({"/metrics", "/healthz"})  # monitoring works when the hub is busy


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    """One hub: the store, the writer, the limits and the metrics, shared by the handlers."""

    def __init__(self, cfg: HubConfig, store: HubStore):
        self.cfg = cfg
        self.lim = cfg.limits
        self.roster = cfg.roster
        self.store = store
        self.verifier = Verifier(cfg.roster, cfg.limits)
        self.writer = Writer(store)
        self.readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="hub-read")
        self.nonces = NonceBook(self.lim.fresh_window_ms, self.lim.max_nonces)
        self.metrics = HubMetrics(self.status_snapshot, lambda: self.writer.commits)
        self.inflight = 0  # requests being worked on (the middleware counts them)
        self.receiving = 0  # requests whose body is arriving (they hold no slot meanwhile)
        self.waiting = 0  # pulls waiting for a batch
        self._changed = asyncio.Event()
        self._closing = False
        self._last_pull_ms: dict[str, int] = {}
        self._node_epoch: dict[str, int] = {}

    # ---- helpers -------------------------------------------------------------------

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.readers, fn, *args)

    def _notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def read_body(self, request: web.Request) -> bytes:
        """The request's body; while it arrives the request gives its concurrency slot back.

        Clients that send their bodies slowly (a bad link, or on purpose: 64 of them used to
        hold every slot for minutes, without a key) count against a separate, larger bound
        and are cut off once they fall below ``MIN_BODY_RATE``; honest requests, whose small
        bodies arrive at once, still find a slot.
        """
        readers = BODY_READERS_FACTOR * self.lim.max_concurrent_requests
        if self.receiving >= readers:
            raise Busy(f"{self.receiving} request bodies are arriving; the limit is {readers}")
        self.receiving += 1
        self.inflight -= 1
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                return await self._read_body(request)
        except web.RequestPayloadError as e:  # not the gzip/deflate it says, or cut short
            raise Malformed(f"the request body cannot be read as sent (Content-Encoding "
                            f"{request.headers.get('Content-Encoding', 'none')}): "
                            f"{str(e).strip()}") from None
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s, or arrived "
                f"slower than {MIN_BODY_RATE} bytes/s after {BODY_GRACE_S:.0f} s") from None
        finally:
            self.receiving -= 1
            self.inflight += 1

    async def _chunks(self, request: web.Request):
        """The body's chunks; TimeoutError once it pauses past the grace period or its
        average rate falls below the minimum after it."""
        started = time.monotonic()
        got = 0
        while True:
            async with asyncio.timeout(BODY_GRACE_S):
                chunk = await request.content.readany()
            if not chunk:
                return
            got += len(chunk)
            elapsed = time.monotonic() - started
            if elapsed > BODY_GRACE_S and got < MIN_BODY_RATE * elapsed:
                raise TimeoutError
            yield chunk

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.lim.max_body_bytes
        declared = request.content_length
        data = bytearray()
        drained = 0
        too_large = declared is not None and declared > limit
        async for chunk in self._chunks(request):
            if too_large:
                drained += len(chunk)  # read and dropped, not kept
                if drained > DRAIN_FACTOR * limit:
                    break
                continue
            data += chunk
            if len(data) > limit:
                too_large = True
        self.metrics.bytes_received.inc(len(data) + drained)
        if too_large:
            if declared is not None and declared <= limit:  # compressed: larger once inflated
                encoding = request.headers.get("Content-Encoding", "encoded")
                raise TooLarge(f"request body of {declared} bytes ({encoding}) inflates past "
                               f"the hub's limit of {limit}")
            size = declared if declared is not None else f"more than {limit}"
            raise TooLarge(f"request body of {size} bytes exceeds the hub's limit of {limit}")
        return bytes(data)

    def open(self, data: bytes, type_):
        _env, body = codec.open_envelope(data, self.roster)
        return _env, codec.expect(body, type_)

    def fresh_once(self, body, now: int) -> None:
        codec.check_fresh(body, now, self.lim.fresh_window_ms)
        self.nonces.use(body.o, body.nonce, body.ts, now)

    # ---- endpoints -----------------------------------------------------------------

    async def push(self, request: web.Request) -> web.Response:
        data = await self.read_body(request)
        now = now_ms()
        head, batch_hash = await self.verifier.check(data, now)
        result = await self.writer.push(PushItem(batch=head, batch_hash=batch_hash,
                                                 envelope=data, now_ms=now))
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, PushResult)
        if result.status == "stored":
            self.metrics.batches_stored.inc()
            self.metrics.events_stored.inc(result.events)
            self._notify()
        else:
            self.metrics.duplicate_batches.inc()
        return reply(PushReply(status=result.status, hub_seq=result.hub_seq,
                               hub_epoch=self.store.current_epoch().epoch))

    async def hello(self, request: web.Request) -> web.Response:
        data = await self.read_body(request)
        now = now_ms()
        _env, hello = self.open(data, Hello)
        self.fresh_once(hello, now)
        origins, head, reg = await self._read(self._hello_view, hello)
        if hello.schema_digest:
            if reg is None:  # the first node to tell this version registers it
                reg = await self._read(self.store.register_schema, hello.schema,
                                       hello.schema_digest, hello.o, now)
            if reg.digest != hello.schema_digest:
                # [H-SCHEMA-1] refused before anything is recorded of this hello
                raise schema_mismatch(hello.o, hello.schema, hello.schema_digest, reg)
        self._node_epoch[hello.o] = hello.e
        cur = self.store.current_epoch()
        return reply(HelloReply(v=pversion.VERSION, hub_epoch=cur.epoch,
                                restore_point=cur.restore_point, hub_time_ms=now, head=head,
                                origins=origins))

    def _hello_view(self, hello: Hello):
        """What a hello reply needs, with the registration of the hello's schema version,
        in one trip to a reader thread: checking the schema costs a hello one lookup."""
        reg = self.store.schema_registration(hello.schema) if hello.schema_digest else None
        return self.store.origins_of(hello.o), self.store.head(), reg

    async def pull(self, request: web.Request) -> web.Response:
        data = await self.read_body(request)
        now = now_ms()
        _env, pull = self.open(data, Pull)
        node = pull.o
        try:
            self.fresh_once(pull, now)
            return await self._serve_pull(pull, now)
        except ProtocolError:
            self.metrics.failed_deliveries.labels(node).inc()
            raise

    async def _serve_pull(self, pull: Pull, now: int) -> web.Response:
        node = pull.o
        wait_s = min(pull.wait_ms, self.lim.max_wait_ms) / 1000
        if wait_s > 0 and self.waiting >= self.lim.max_long_polls:
            raise Busy(f"{self.waiting} pulls are already waiting; the limit is "
                       f"{self.lim.max_long_polls}")
        cur = self.store.current_epoch()
        start = epochs_mod.start_for(self.store.epochs(), pull.hub_epoch, pull.cursor)
        limit = min(pull.limit, self.lim.pull_max_batches)
        deadline = time.monotonic() + wait_s
        changed = self._changed
        # Read first: a cursor before the prune horizon [H-PRUNE-1] or past the head
        # [H-PULL-3] is refused before the hub records anything of the pull (its cursor, its
        # time, the node's epoch), so a refused pull changes nothing.
        page = await self._read(self._page, pull, start, limit)
        self._node_epoch[node] = pull.e
        self._last_pull_ms[node] = now
        await self.writer.set_cursor(CursorInfo(node=node, hub_epoch=cur.epoch, cursor=start,
                                                updated_ms=now))
        if not page.batches and wait_s > 0:
            # A waiting pull does no work, so it gives its concurrency slot back while it
            # waits; max_long_polls bounds how many may wait.
            self.waiting += 1
            self.inflight -= 1
            self.metrics.long_polls.inc()
            try:
                while not page.batches and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        await asyncio.wait_for(changed.wait(), remaining)
                    except TimeoutError:
                        break
                    changed = self._changed
                    page = await self._read(self._page, pull, start, limit)
            finally:
                self.metrics.long_polls.dec()
                self.inflight += 1
                self.waiting -= 1
        self.metrics.batches_served.inc(len(page.batches))
        self.metrics.events_served.inc(sum(b.events for b in page.batches))
        return reply(PullReply(hub_epoch=cur.epoch, cursor=page.cursor, head=page.head,
                               batches=[b.envelope for b in page.batches], more=page.more))

    def _page(self, pull: Pull, start: int, limit: int):
        try:
            return self.store.read_page(pull.o, pull.e, start, limit, self.lim.pull_max_bytes)
        except CursorPruned as e:
            if start == pull.cursor:
                raise
            raise CursorPruned(f"the pull's cursor {pull.cursor} of hub epoch {pull.hub_epoch} "
                               f"stands at {start} in this hub epoch; {e.message}",
                               hint=e.hint) from None

    async def status_signed(self, request: web.Request) -> web.Response:
        data = await self.read_body(request)
        now = now_ms()
        _env, req = self.open(data, StatusRequest)
        self.fresh_once(req, now)
        return reply(await self._read(self.status_reply, now))

    async def status_json(self, request: web.Request) -> web.Response:
        snap = await self._read(self.status_snapshot)
        return web.Response(text=json.dumps(snap, indent=2), content_type="application/json")

    async def metrics_text(self, request: web.Request) -> web.Response:
        body = await self._read(generate_latest, self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        cur = self.store.current_epoch()
        return web.Response(text=json.dumps({"ok": True, "hub_epoch": cur.epoch}),
                            content_type="application/json")

    # ---- status --------------------------------------------------------------------

    def status_reply(self, now: int) -> StatusReply:
        """The signed-request view (protocol StatusReply): every node the hub has heard from."""
        st = self.store
        cursors = st.cursors()
        cur = st.current_epoch()
        nodes = []
        for node_id in sorted(self.roster.nodes):
            held = st.origins_of(node_id)
            c = cursors.get(node_id)
            if not held and not c:
                continue
            latest = held[-1] if held else None
            seen = max(self._last_pull_ms.get(node_id, 0), c.updated_ms if c else 0,
                       st.last_pushes().get(node_id, 0))
            nodes.append(NodeStatus(
                node=node_id, epoch=latest.epoch if latest else 0,
                batches=latest.batches if latest else 0,
                last_seq=latest.last_seq if latest else 0,
                cursor=c.cursor if c and c.hub_epoch == cur.epoch else 0, last_seen_ms=seen))
        return StatusReply(v=pversion.VERSION, hub_epoch=cur.epoch, hub_time_ms=now,
                           head=st.head(), nodes=nodes)

    def status_snapshot(self) -> dict:
        """The hub's view of the cluster: /v1/status and the store gauges of /metrics."""
        st = self.store
        # What the hub holds first, the nodes' backlogs after: a batch stored in between
        # then counts in a backlog, never as held by a node with none (verify reads a node
        # with no backlog that lacks held events as one that skipped them).
        origins = self.origins_held()
        cur = st.current_epoch()
        head = st.head()
        batches, events = st.totals()
        cursors = st.cursors()
        pushes = st.last_pushes()
        free = st.free_bytes()
        nodes = {}
        for node_id, entry in sorted(self.roster.nodes.items()):
            c = cursors.get(node_id)
            cursor = c.cursor if c and c.hub_epoch == cur.epoch else 0
            node_epoch = self._node_epoch.get(node_id)
            if node_epoch is None:
                held = st.origins_of(node_id)
                node_epoch = held[-1].epoch if held else 0
            bb, be = st.backlog(node_id, node_epoch, cursor)
            nodes[node_id] = {
                "office": entry.office,
                "cursor": cursor,
                "cursor_hub_epoch": c.hub_epoch if c else 0,
                "backlog_batches": bb,
                "backlog_events": be,
                "last_pull_ms": self._last_pull_ms.get(node_id) or (c.updated_ms if c else 0),
                "last_push_ms": pushes.get(node_id, 0),
            }
        return {
            "cluster_id": self.roster.cluster_id,
            "hub_epoch": cur.epoch,
            "restore_point": cur.restore_point,
            "epochs": [{"epoch": e.epoch, "restore_point": e.restore_point,
                        "started_ms": e.started_ms, "reason": e.reason} for e in st.epochs()],
            "head": head,
            "pruned": _horizon_json(st.prune_horizon()),
            "batches_held": batches,
            "events_held": events,
            "storage_bytes_used": st.storage_bytes(),
            "storage_bytes_free": free,
            "nodes": nodes,
            "origins": origins,
            "schemas": [{"version": r.version, "digest": r.digest, "node": r.node,
                         "registered_ms": r.registered_ms}
                        for r in st.schema_registrations()],
        }

    def origins_held(self) -> dict[str, int]:
        """Last event sequence held of every origin ``node/epoch``: what ``riversync verify``
        compares with the nodes' holdings to tell events the hub lost (a node holds more of
        an origin than the hub, and the origin itself no longer does) from a node that is
        only behind."""
        return {f"{node}/{o.epoch}": o.last_seq
                for node in sorted(self.roster.nodes) for o in self.store.origins_of(node)}

    # ---- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._closing = True
        self._notify()

    def shutdown(self) -> None:
        self.verifier.close()
        self.writer.stop()
        self.readers.shutdown(wait=True)
        self.store.close()


def _horizon_json(h: PruneHorizon | None) -> dict | None:
    """The prune horizon for operators and ``riversync verify``: a node whose cursor is
    below ``upto_seq`` cannot get the batches pruned after it."""
    if h is None:
        return None
    return {"upto_seq": h.upto_seq, "hub_epoch": h.hub_epoch, "pruned_ms": h.pruned_ms,
            "pruned_at": utc_text(h.pruned_ms)}


def reply(msg, status: int = 200) -> web.Response:
    return web.Response(body=codec.encode(msg), status=status, content_type=MSGPACK)


def error_reply(e: ProtocolError) -> web.Response:
    return reply(ErrorReply(code=e.code, message=str(e), hint=e.hint, action=e.action),
                 status=e.http_status)


# HTTP-level refusals that are not protocol messages at all (wrong path or method).
HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class RequestTimeout(Exception):
    """The body did not arrive in time: the client's or the network's fault, not a protocol one."""

    code = "REQUEST_TIMEOUT"
    http_status = 408


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route.resource
    return route.canonical if route is not None else "other"


def build_app(cfg: HubConfig, store: HubStore) -> web.Application:
    hub = Hub(cfg, store)

    @web.middleware
    async def guard(request: web.Request, handler):
        endpoint = _endpoint(request)
        limited = request.path not in UNLIMITED_PATHS
        if limited and hub.inflight >= hub.lim.max_concurrent_requests:
            e = Busy(f"{hub.inflight} requests in flight; the limit is "
                     f"{hub.lim.max_concurrent_requests}")
            hub.metrics.refused.labels(e.code).inc()
            return error_reply(e)
        if limited:
            hub.inflight += 1
        hub.metrics.inflight.inc()
        try:
            resp = await handler(request)
            hub.metrics.requests.labels(endpoint).inc()
            return resp
        except ProtocolError as e:
            hub.metrics.refused.labels(e.code).inc()
            hub.metrics.requests.labels(endpoint).inc()
            return error_reply(e)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = HTTP_CODES.get(e.status, f"HTTP_{e.status}")
            hub.metrics.refused.labels(code).inc()
            return reply(ErrorReply(code=code, message=f"{request.method} {request.path}: "
                                    f"{e.reason}", hint="see docs/reference/hub.md for the "
                                    "endpoints", action="stop"), status=e.status)
        except RequestTimeout as e:
            hub.metrics.refused.labels(e.code).inc()
            return reply(ErrorReply(code=e.code, message=str(e), hint="check the network "
                                    "between node and hub; retry", action="retry"),
                         status=e.http_status)
        except ConnectionResetError:
            # The client went away mid-request: nobody to answer, nothing was stored.
            hub.metrics.disconnects.inc()
            return web.Response(status=400)
        except apsw.FullError:
            hub.metrics.api_errors.labels(endpoint).inc()
            log.error("the hub's disk is full; refusing %s", request.path)
            return reply(ErrorReply(code="STORAGE_FULL", message="the hub's disk is full",
                                    hint="free space on the hub, then retry", action="retry"),
                         status=507)
        except asyncio.CancelledError:
            raise
        except Exception:
            hub.metrics.api_errors.labels(endpoint).inc()
            log.exception("internal error on %s", request.path)
            return reply(ErrorReply(code="INTERNAL", message="the hub failed to handle the "
                                    "request", hint="see the hub's log; retry later",
                                    action="retry"), status=500)
        finally:
            hub.metrics.inflight.dec()
            if limited:
                hub.inflight -= 1

    app = web.Application(middlewares=[guard], client_max_size=cfg.limits.max_body_bytes + 1)
    app["hub"] = hub
    for method, path, name in ROUTES:
        app.router.add_route(method, path, getattr(hub, name))

    async def on_shutdown(app: web.Application) -> None:
        hub.close()

    app.on_shutdown.append(on_shutdown)
    return app


ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/v1/hello", "hello"),
    ("POST", "/v1/push", "push"),
    ("POST", "/v1/pull", "pull"),
    ("POST", "/v1/status", "status_signed"),
    ("GET", "/v1/status", "status_json"),
    ("GET", "/metrics", "metrics_text"),
    ("GET", "/healthz", "healthz"),
]

__all__ = ["ROUTES", "Hub", "build_app"]
