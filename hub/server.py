"""Running the hub: open the store, serve until SIGTERM or SIGINT, close cleanly.

The first line on stdout is ``riversync hub listening on http://HOST:PORT ...``; with
port 0 the OS picks a free port and that line is how a supervisor (or a test) learns it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from riversync.config import HubConfig

from .app import build_app, now_ms
from .store_sqlite import SqliteHubStore

SHUTDOWN_TIMEOUT_S = 5.0  # s; in-flight requests get this long after SIGTERM


def random_epoch() -> int:
    """A fresh hub epoch: 63 random bits (SQLite INTEGER), never 0 (0 means "none yet")."""
    return (int.from_bytes(os.urandom(8), "big") & ((1 << 63) - 1)) or 1


def serve(cfg: HubConfig, *, host: str | None = None, port: int | None = None) -> int:
    """Serve until told to stop.  Returns an exit code."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(cfg, host or cfg.listen_host,
                              cfg.listen_port if port is None else port))


async def _serve(cfg: HubConfig, host: str, port: int) -> int:
    # The port first: a hub that cannot listen (port taken) must leave no store behind
    # and start no hub epoch.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    try:
        store = SqliteHubStore.open(cfg.db_path, new_epoch=random_epoch(), now_ms=now_ms())
    except BaseException:
        sock.close()
        raise
    app = build_app(cfg, store)
    hub = app["hub"]
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    try:
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        bound = sock.getsockname()[1]
        cur = store.current_epoch()
        print(f"riversync hub listening on http://{host}:{bound} "
              f"(cluster {cfg.roster.cluster_id}, hub epoch {cur.epoch}, "
              f"head {store.head()})", flush=True)
        if cur.restore_point and cur.started_ms >= now_ms() - 60_000:
            print(f"riversync hub: new hub epoch: {cur.reason}; restore point "
                  f"{cur.restore_point}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("riversync hub stopping", flush=True)
    finally:
        hub.close()
        await runner.cleanup()
        hub.shutdown()
    return 0
