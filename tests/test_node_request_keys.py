"""The node API stores per-request state under typed keys, so strict warnings never turn a
request into a 500.

aiohttp warns once per process about each string key put on a request; a daemon run with
``-W error`` (or a test suite with warnings as errors) would then fail the first
authenticated request.  The check runs in a fresh interpreter so that no earlier request in
this process has already used up aiohttp's one warning.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

SCRIPT = textwrap.dedent("""
    import asyncio, hashlib, sys
    from types import SimpleNamespace
    from aiohttp.test_utils import TestClient, TestServer
    from riversync.engine.schema import load_schema
    from riversync.engine.store import Store
    from riversync.node.daemon import NodeContext, build_app
    from riversync.node.db import DbThread
    from riversync.node.health import NodeMetrics, Thresholds
    from riversync.protocol.keys import NodeEntry, Roster, User

    schema_path, db_path = sys.argv[1], sys.argv[2]
    nodes = {"north": NodeEntry("north", "north", bytes([1]) * 32)}
    users = {"nclerk": User("nclerk", "north", "clerk", hashlib.sha256(b"tok").hexdigest())}
    roster = Roster("c", nodes, users)
    schema = load_schema(schema_path)
    store = Store.open(db_path, schema, roster, "north", epoch=7)
    cfg = SimpleNamespace(node_id="north", office="north", roster=roster,
                          roster_path=None, staging_email_dir=db_path + ".mail",
                          staging_email_watch=False)
    db = DbThread()
    ctx = NodeContext(cfg=cfg, schema=schema, store=store, db=db, metrics=NodeMetrics(),
                      thresholds=Thresholds())

    async def main():
        client = TestClient(TestServer(build_app(ctx), host="127.0.0.1", port=0))
        await client.start_server()
        try:
            for _ in range(2):
                r = await client.get("/v1/tables", headers={"Authorization": "Bearer tok"})
                print(r.status, (await r.text())[:200])
        finally:
            await client.close()

    try:
        asyncio.run(main())
    finally:
        db.shutdown()
        store.close()
""")


def test_authenticated_requests_succeed_with_warnings_as_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, str(DATA / "staging_schema.toml"),
         str(tmp_path / "north.db")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert statuses == ["200", "200"], proc.stdout
