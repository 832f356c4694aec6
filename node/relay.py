"""Relaying other origins' batches the hub lost [N-RELAY-1].

Only the hub hands one office's events to another.  When the hub is restored from an
older backup it forgets batches that other nodes already pulled; the origin pushes them
again if it still holds them, but if the origin was restored from an older backup too,
the only copies are at the nodes that pulled them, and nothing would ever deliver them.

So a node keeps every batch it pulls exactly as signed (the origin's envelope bytes,
written in the same transaction as the apply), and after it learns that the hub started
a new hub epoch it compares what it keeps of each origin with what the hub holds and
pushes the missing batches again, unchanged.  The hub verifies them with the origin's key
and the origin's chain like any push, so a relaying node can neither forge nor reorder.
"""

from __future__ import annotations

import json
import logging

import aiohttp
import apsw

from riversync.protocol.messages import Batch

log = logging.getLogger("riversync.node.relay")

TABLE = "_node_relay_batches"
STATUS_TIMEOUT_S = 15.0


def ensure(conn: apsw.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (node TEXT NOT NULL, epoch INTEGER NOT NULL,"
        " n INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,"
        " envelope BLOB NOT NULL, PRIMARY KEY (node, epoch, n)) WITHOUT ROWID")


def keep(conn: apsw.Connection, batches: list[tuple[Batch, bytes]]) -> None:
    """Keep pulled batches as signed; called inside the apply's transaction."""
    if not batches:
        return
    ensure(conn)
    conn.executemany(
        f"INSERT OR IGNORE INTO {TABLE} (node, epoch, n, first, last, envelope)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(b.o, b.e, b.n, b.first, b.last, raw) for b, raw in batches])


def missing_at_hub(conn: apsw.Connection, held: dict[str, int], me: str) -> list[bytes]:
    """The kept envelopes of other origins that follow what the hub holds of them, in
    chain order; an origin whose kept batches do not continue the hub's exactly is left
    out (relaying from a gap would only be refused)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchall():
        return []
    out: list[bytes] = []
    origins = conn.execute(f"SELECT DISTINCT node, epoch FROM {TABLE} WHERE node != ?",
                           (me,)).fetchall()
    for node, epoch in origins:
        hub = held.get(f"{node}/{epoch}", 0)
        expect = hub + 1
        for first, last, env in conn.execute(
                f"SELECT first, last, envelope FROM {TABLE} WHERE node = ? AND epoch = ?"
                " AND last > ? ORDER BY n", (node, epoch, hub)):
            if first != expect:
                break
            out.append(env)
            expect = last + 1
    return out


def kept_ranges(conn: apsw.Connection) -> dict[str, list[int]]:
    """Per origin ``node/epoch``, the events ``[first, last]`` this node could push again:
    its kept batches, when they run without a gap (``riversync verify`` uses it to tell
    events the hub lost that a node will relay from events nobody can)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchall():
        return {}
    out = {}
    for node, epoch, first, last, held in conn.execute(
            f"SELECT node, epoch, min(first), max(last), sum(last - first + 1) FROM {TABLE}"
            " GROUP BY node, epoch"):
        if held == last - first + 1:
            out[f"{node}/{epoch}"] = [first, last]
    return out


async def hub_holds(hub_url: str) -> dict[str, int] | None:
    """The last sequence the hub holds of each origin (its operator status), or None."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                hub_url.rstrip("/") + "/v1/status",
                timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)) as resp:
            if resp.status != 200:
                return None
            doc = json.loads(await resp.read())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None
    held = doc.get("origins") if isinstance(doc, dict) else None
    if not isinstance(held, dict):
        return None
    return {k: v for k, v in held.items() if isinstance(v, int)}
