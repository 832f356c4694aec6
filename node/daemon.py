"""The office node daemon: one store, one agent, one HTTP server, one process.

Start-up order matters.  The store opens first (a new database gets a random node epoch),
then the agent says hello and pulls once, bounded in time, *before* the API opens: a node
restored from a backup gets its own events back from the hub before anyone writes to it.
If the hub is away the node starts anyway, because an office must keep working.  A lock
file next to the database keeps a second daemon (or ``riversync restore``) from opening
the same database behind the first one's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from riversync.config import NodeConfig

from . import backup as backups
from . import errors as E
from . import head, relay
from .agent import Agent, AgentSettings, new_epoch
from .api import CTX_KEY, add_routes, error_middleware
from .auth import Caller
from .db import DbThread
from .health import CRITICAL, NodeMetrics, Thresholds, evaluate, sync_age
from .transport import HubClient

log = logging.getLogger("riversync.node")

DRAIN_TIMEOUT_S = 120.0  # longest a restore waits for the requests under way to finish
STARTUP_SYNC_TIMEOUT_S = 10.0  # longest the API waits for the first reconcile with the hub
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # local API bodies (staging uploads included)


class NodeLocked(Exception):
    """Another process holds this node's database."""


def schema_path_for(cfg: NodeConfig, override: Path | None = None) -> Path:
    """The cluster's schema: ``override``, else the config's ``schema_path``, else
    ``schema.toml`` next to the roster.

    Every node of a cluster must fold events under the same schema, so by default it lives
    with the roster that every daemon already shares.
    """
    if override is not None:
        return override
    configured = getattr(cfg, "schema_path", None)
    return configured if configured is not None else cfg.roster_path.parent / "schema.toml"


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextlib.contextmanager
def db_lock(db_path: Path):
    """Hold the node's exclusive lock for the duration.

    Raises:
        NodeLocked: another process (a running daemon) holds it.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeLocked(f"{db_path} is in use by a running node daemon") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def is_locked(db_path: Path) -> bool:
    try:
        with db_lock(db_path):
            return False
    except NodeLocked:
        return True


def open_store(cfg: NodeConfig, schema: Any, *, epoch: int | None = None,
               adopt_schema: bool = False):
    """Open (or create) the node's store; a new database gets a fresh random epoch.
    ``adopt_schema``: see ``Store.open`` (``riversync node adopt-schema``)."""
    from riversync.engine.store import Store, is_empty_database

    if epoch is None and (not cfg.db_path.exists() or is_empty_database(cfg.db_path)):
        epoch = new_epoch()
    cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
    store = Store.open(str(cfg.db_path), schema, cfg.roster, cfg.node_id, epoch=epoch,
                       adopt_schema=adopt_schema)
    try:
        backups.stamp_cluster(store, cfg.roster.cluster_id)
    except BaseException:
        store.close()
        raise
    return store


def renew_if_behind(store) -> tuple[int, int] | None:
    """Start a new node epoch when the database is behind its head file (db thread).

    A copy put back by hand would otherwise hand out numbers the hub already holds for
    other events; a new epoch makes every new write unique whatever the hub holds, and the
    old epoch is settled with the hub at the first hello (``Agent._align_old_epochs``).
    Returns (old epoch, new epoch) when it renewed.
    """
    from .agent import META_CHAIN, META_PENDING, keep_restored_pending

    if head.behind(store) is None:
        head.record(store)
        return None
    old = store.epoch
    store.begin_epoch(new_epoch())
    keep_restored_pending(store)
    store.meta_set(META_PENDING, "")
    store.meta_set(META_CHAIN, "")
    head.record(store)
    log.warning("database %s is behind its head file: started node epoch %d (was %d)",
                store.path, store.epoch, old)
    return old, store.epoch


@dataclass
class NodeContext:
    """What every handler and the agent share; ``request.app[CTX_KEY]`` in handlers."""

    cfg: NodeConfig
    schema: Any
    store: Any
    db: DbThread
    metrics: NodeMetrics
    thresholds: Thresholds
    agent: Agent | None = None
    started_at: float = field(default_factory=time.time)
    maintenance: str | None = None
    serving: int = 0  # requests being handled now (the API middleware counts them)
    staging_backlog: Any = None  # callable(store) -> dict, set when staging is installed
    schema_path: Path | None = None

    @property
    def roster(self):
        return self.cfg.roster

    @property
    def node_id(self) -> str:
        return self.cfg.node_id

    def table_names(self) -> list[str]:
        return list(self.schema.tables)

    def describe_tables(self) -> list[dict]:
        out = []
        for t in self.schema.tables.values():
            out.append({
                "name": t.name,
                "primary_key": t.primary_key,
                "ownership": t.ownership,
                "columns": [{"name": c.name, "type": c.type, "required": c.required,
                             "references": c.references} for c in t.columns.values()],
            })
        return out

    async def commit(self, changes: list, caller: Caller, *, admin: bool = False,
                     source: str | None = None) -> list:
        """One local transaction for ``changes`` on behalf of ``caller``; wakes the agent."""
        if self.maintenance:
            raise E.Unavailable(f"the node is busy: {self.maintenance}")
        events = await self.db.write("local", self._commit_and_record, changes, user=caller.name,
                                     now_ms=int(time.time() * 1000), admin=admin, source=source)
        if self.agent is not None:
            self.agent.notify_write()
        return events

    def _commit_and_record(self, changes: list, **kw) -> list:
        """Commit, then move the head file on (db thread): see ``node.head``."""
        events = self.store.commit_local(changes, **kw)
        if events:
            head.write(self.store.path, events[-1].epoch, events[-1].seq)
        return events

    async def snapshot(self) -> dict:
        snap: dict = {"node_id": self.cfg.node_id, "office": self.cfg.office,
                      "now": time.time(), "started_at": self.started_at, "db_ok": True}
        agent = self.agent.snapshot() if self.agent else {}
        snap["agent"] = agent
        for k in ("last_push_ok", "last_pull_ok", "inbound_lag", "replay_failures_consecutive"):
            snap[k] = agent.get(k)
        if snap["replay_failures_consecutive"] is None:
            snap["replay_failures_consecutive"] = 0
        if self.maintenance:
            snap["maintenance"] = self.maintenance
        try:
            stats = await self.db.run(self.store.stats)
            snap["epoch"] = self.store.epoch
            snap["outbox"] = int(stats.get("outbox", 0))
            snap["open_conflicts"] = int(stats.get("open_conflicts", stats.get("conflicts", 0)))
            snap["parked"] = int(stats.get("parked", 0))
            snap["stats"] = stats
        except Exception as e:  # noqa: BLE001 - a broken database is exactly what we report
            snap["db_ok"] = False
            snap["db_error"] = f"{type(e).__name__}: {e}"
            snap.setdefault("outbox", 0)
        if self.staging_backlog is not None:
            try:
                snap["staging"] = await self.db.run(self.staging_backlog, self.store)
            except Exception as e:  # noqa: BLE001 - staging trouble must not hide sync health
                snap["staging"] = {"error": str(e)}
        return snap

    async def health(self) -> tuple[str, list[dict]]:
        snap = await self.snapshot()
        level, reasons = evaluate(snap, self.thresholds)
        self.metrics.update(snap, level)
        self._last = (snap, level, reasons)
        return level, reasons

    async def status(self) -> dict:
        snap = await self.snapshot()
        level, reasons = evaluate(snap, self.thresholds)
        self.metrics.update(snap, level)
        return {
            "node_id": snap["node_id"],
            "office": snap["office"],
            "epoch": snap.get("epoch"),
            "level": level,
            "reasons": reasons,
            "db_ok": snap["db_ok"],
            "outbox": snap.get("outbox", 0),
            "open_conflicts": snap.get("open_conflicts", 0),
            "parked": snap.get("parked", 0),
            "sync_age_s": round(sync_age(snap), 3),
            "last_push_ok": snap.get("last_push_ok"),
            "last_pull_ok": snap.get("last_pull_ok"),
            "inbound_lag": snap.get("inbound_lag"),
            "replay_failures_consecutive": snap.get("replay_failures_consecutive", 0),
            "agent": snap.get("agent"),
            "staging": snap.get("staging"),
            "thresholds": vars(self.thresholds),
            "started_at": self.started_at,
            "now": snap["now"],
        }

    async def digests(self) -> dict:
        d = await self.db.run(self.store.digests)
        kept = await self.db.run(relay.kept_ranges, self.store.conn)
        return {"node_id": self.cfg.node_id, "epoch": self.store.epoch, **d,
                "kept_batches": kept}

    async def take_backup(self) -> dict:
        try:
            return await self.db.run(backups.make_backup, self.store, self.cfg.backup_dir,
                                     self.cfg.node_id, backups.retention_for(self.cfg))
        except backups.BackupError as e:
            raise E.Internal(str(e), hint=e.hint) from None

    async def _drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Wait for the requests already past the maintenance check (a write, a staging
        apply, a read) to finish: one that reached the store after it closed answered a 500
        for a write that was committed, and a client retrying it got ROW_EXISTS.

        Raises:
            Unavailable: they did not finish in time; nothing was restored.
        """
        deadline = time.monotonic() + timeout_s
        while self.serving > 1:  # the restore request itself is one
            if time.monotonic() > deadline:
                raise E.Unavailable(f"{self.serving - 1} request(s) did not finish within "
                                    f"{timeout_s:.0f} s; nothing was restored",
                                    hint="retry the restore when the node is quieter")
            await asyncio.sleep(0.02)

    async def restore(self, backup: Path) -> dict:
        """Restore ``backup`` under this running daemon: pause, swap, new epoch, resume."""
        from .restore import restore_into_closed

        if self.maintenance:
            raise E.Unavailable(f"the node is busy: {self.maintenance}")
        try:
            # read only, before replication pauses or a file moves
            backups.check_restorable(backup, self.cfg.node_id, self.cfg.roster,
                                     self.cfg.backup_dir)
        except backups.BackupError as e:
            raise E.restore_refused(e.code, str(e), e.hint) from None
        self.maintenance = f"restoring from {backup.name}"
        agent = self.agent
        failed: E.ApiError | None = None
        try:
            await self._drain()
            if agent is not None:
                await agent.stop()
            await self.db.run(self.store.close)
            try:
                result = await self.db.run(restore_into_closed, self.cfg, self.schema, backup,
                                           agent.hub.base_url if agent else self.cfg.hub_url)
                self.store = result.pop("store")
            except Exception as e:  # noqa: BLE001 - answered below, after reopening
                # Nothing changed on disk (a refusal, or the swap was undone): serve the
                # same database again instead of staying closed (every call would be a 500).
                log.exception("restore from %s failed; reopening the database", backup)
                self.store = await self.db.run(open_store, self.cfg, self.schema)
                failed = (E.restore_refused(e.code, str(e), e.hint)
                          if isinstance(e, backups.BackupError) else E.Internal(str(e)))
        finally:
            self.maintenance = None
        if agent is not None:
            self.agent = make_agent(self)
            await self.agent.sync_now_quietly(STARTUP_SYNC_TIMEOUT_S)
            self.agent.start()
        if failed is not None:
            raise failed
        return result


def make_agent(ctx: NodeContext) -> Agent:
    cfg = ctx.cfg
    settings = AgentSettings(cluster_id=cfg.roster.cluster_id, node_id=cfg.node_id,
                             sync_interval_s=cfg.sync_interval_s, realtime=cfg.realtime,
                             replay_retry_threshold=cfg.replay_retry_threshold,
                             relay_keep_days=cfg.relay_keep_days)
    return Agent(settings, ctx.store, ctx.db, cfg.signing_key(), cfg.roster,
                 HubClient(cfg.hub_url), ctx.metrics)


def thresholds_from(cfg: NodeConfig) -> Thresholds:
    a = cfg.alerts
    return Thresholds(warn_no_sync_s=a.warn_no_sync_s, critical_no_sync_s=a.critical_no_sync_s,
                      warn_queued_events=a.warn_queued_events,
                      replay_retry_threshold=cfg.replay_retry_threshold)


def _staging_backlog(ctx: NodeContext, api_staging: Any):
    """The staging backlog reader, counting the email drop folder's waiting files too."""
    try:
        from .staging import backlog
    except ImportError:
        return getattr(api_staging, "backlog", None)
    email_dir = str(ctx.cfg.staging_email_dir)
    return lambda store: backlog(store, email_dir=email_dir)


def build_app(ctx: NodeContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES)
    app[CTX_KEY] = ctx
    add_routes(app)
    try:
        from . import api_staging  # the staging part, when installed
    except ImportError:
        api_staging = None
    if api_staging is not None:
        api_staging.add_routes(app.router, lambda request: request.app[CTX_KEY])
        ctx.staging_backlog = _staging_backlog(ctx, api_staging)
        watcher = getattr(api_staging, "email_watcher", None)
        if watcher is not None and getattr(ctx.cfg, "staging_watch_email", False):
            tasks: list[asyncio.Task] = []
            interval = float(ctx.cfg.staging_email_poll_s)

            async def start_watcher(app: web.Application) -> None:
                tasks.append(asyncio.create_task(watcher(ctx, interval), name="riversync-email"))

            async def stop_watcher(app: web.Application) -> None:
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

            app.on_startup.append(start_watcher)
            app.on_cleanup.append(stop_watcher)
    return app


async def serve(cfg: NodeConfig, schema_path: Path | None = None, *,
                stop: asyncio.Event | None = None) -> int:
    """Run the node until SIGTERM/SIGINT (or ``stop`` is set); returns an exit code."""
    from riversync.engine.schema import load_schema

    schema_path = schema_path_for(cfg, schema_path)
    schema = load_schema(schema_path)
    key = cfg.signing_key()  # fail before anything starts if the key is wrong
    del key
    metrics = NodeMetrics()
    db = DbThread(on_write=lambda kind, s: metrics.write_latency.labels(kind=kind).observe(s))
    with db_lock(cfg.db_path), _listening(cfg) as sock:
        store = await db.run(open_store, cfg, schema)
        renewed = await db.run(renew_if_behind, store)
        if renewed:
            print(f"riversync node {cfg.node_id}: this database is older than its head file "
                  f"(it was put back from a copy): started node epoch {renewed[1]} "
                  f"(was {renewed[0]}); the old epoch is settled with the hub", flush=True)
        ctx = NodeContext(cfg=cfg, schema=schema, store=store, db=db, metrics=metrics,
                          thresholds=thresholds_from(cfg), schema_path=schema_path)
        ctx.agent = make_agent(ctx)
        await ctx.agent.sync_now_quietly(STARTUP_SYNC_TIMEOUT_S)
        app = build_app(ctx)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        ctx.agent.start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        print(f"riversync node {cfg.node_id} (office {cfg.office}, epoch {store.epoch}) "
              f"listening on http://{cfg.listen_host}:{cfg.listen_port}; hub {cfg.hub_url}",
              flush=True)
        try:
            await stop.wait()
        finally:
            if ctx.agent is not None:
                await ctx.agent.stop()
            await runner.cleanup()
            await db.run(ctx.store.close)
            db.shutdown()
    print(f"riversync node {cfg.node_id} stopped", flush=True)
    return 0


@contextlib.contextmanager
def _listening(cfg: NodeConfig):
    """The API's socket, bound before the database opens or the agent says hello: a port in
    use is one clear refusal, not a hello to the hub and a half-started node. Connections
    made during the first sync wait in the backlog until the API serves."""
    family = socket.AF_INET6 if ":" in cfg.listen_host else socket.AF_INET
    sock = socket.create_server((cfg.listen_host, cfg.listen_port), family=family)
    try:
        yield sock
    finally:
        sock.close()


def level_is_critical(level: str) -> bool:
    return level == CRITICAL
