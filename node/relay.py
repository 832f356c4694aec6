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

*Retention.*  Kept batches would otherwise double the database forever, and they are only
worth anything until no hub backup old enough to have lost them would still be restored.
Each batch records when it was kept (``kept_ms``); the agent deletes, every few minutes,
each origin's oldest batches kept longer ago than the node's ``relay_keep_days``, always a
prefix of that origin's chain, so what stays is one run without holes and relaying from
the hub's last batch works exactly as before, only from later on.  Nothing is deleted
while a relay pass is due (the hub's epoch changed and the pass has not completed yet).
"""

from __future__ import annotations

import json
import logging
import time

import aiohttp
import apsw

from riversync.protocol.messages import Batch

log = logging.getLogger("riversync.node.relay")

TABLE = "_node_relay_batches"
KEPT_INDEX = "_node_relay_batches_kept"
STATUS_TIMEOUT_S = 15.0
PRUNE_INTERVAL_S = 300  # s; pruning is housekeeping: every 5 minutes bounds growth well enough
DAY_MS = 24 * 3600 * 1000


def _exists(conn: apsw.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (TABLE,)).fetchall())


def ensure(conn: apsw.Connection, now_ms: int | None = None) -> None:
    """Create the table, or bring one of an older release up to date (idempotent).

    Tables from before retention lack ``kept_ms``: their batches count as kept ``now_ms``
    (the wall clock when not given), so an upgrade never deletes at once what a hub restore
    in progress may still need; they go one retention period after the upgrade.
    """
    with conn:  # a savepoint inside the apply's transaction, else its own transaction
        if not _exists(conn):
            conn.execute(
                f"CREATE TABLE {TABLE} (node TEXT NOT NULL, epoch INTEGER NOT NULL,"
                " n INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,"
                " envelope BLOB NOT NULL, kept_ms INTEGER NOT NULL DEFAULT 0,"
                " PRIMARY KEY (node, epoch, n)) WITHOUT ROWID")
        elif "kept_ms" not in {r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")}:
            now = int(time.time() * 1000) if now_ms is None else int(now_ms)
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN kept_ms INTEGER NOT NULL DEFAULT 0")
            conn.execute(f"UPDATE {TABLE} SET kept_ms = ?", (now,))
            log.info("%s: recorded the batches kept before retention existed as kept now",
                     TABLE)
        conn.execute(f"CREATE INDEX IF NOT EXISTS {KEPT_INDEX} ON {TABLE} (kept_ms)")


def keep(conn: apsw.Connection, batches: list[tuple[Batch, bytes]], now_ms: int) -> None:
    """Keep pulled batches as signed, as kept at ``now_ms``; called inside the apply's
    transaction.  A batch kept already keeps its first time (a hub restore re-delivers
    batches; that must not make old ones young again)."""
    if not batches:
        return
    ensure(conn, now_ms)
    conn.executemany(
        f"INSERT OR IGNORE INTO {TABLE} (node, epoch, n, first, last, envelope, kept_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(b.o, b.e, b.n, b.first, b.last, raw, now_ms) for b, raw in batches])


def prune(conn: apsw.Connection, now_ms: int, keep_days: int) -> int:
    """Delete the batches kept more than ``keep_days`` before ``now_ms``; returns how many.

    Per origin only a prefix goes: the batches up to (not including) the first one still
    young.  Batches are kept in chain order, so that is normally every old one; after a
    hub restore re-delivered batches that were already pruned, an old batch may follow a
    young one, and it stays until they have all aged, so a kept run never has a hole that
    would stop a relay short.  ``keep_days`` 0 deletes everything (relaying is off).
    """
    if not _exists(conn):
        return 0
    ensure(conn, now_ms)
    with conn:
        if keep_days <= 0:
            conn.execute(f"DELETE FROM {TABLE}")
            return conn.changes()
        cutoff = now_ms - keep_days * DAY_MS
        gone = 0
        # The index on kept_ms finds the origins with anything old without a scan.
        origins = conn.execute(f"SELECT DISTINCT node, epoch FROM {TABLE} INDEXED BY "
                               f"{KEPT_INDEX} WHERE kept_ms < ?", (cutoff,)).fetchall()
        for node, epoch in origins:
            upto = None  # the first batch number still young; None: all are old
            for n, kept in conn.execute(f"SELECT n, kept_ms FROM {TABLE} WHERE node = ? AND"
                                        " epoch = ? ORDER BY n", (node, epoch)):
                if kept >= cutoff:
                    upto = n
                    break
            where = "node = ? AND epoch = ?" + ("" if upto is None else " AND n < ?")
            args = (node, epoch) if upto is None else (node, epoch, upto)
            conn.execute(f"DELETE FROM {TABLE} WHERE {where}", args)
            gone += conn.changes()
        return gone


def kept_stats(conn: apsw.Connection) -> tuple[int, int]:
    """How many batches are kept and their signed bytes (for the node's metrics)."""
    if not _exists(conn):
        return 0, 0
    (batches, size), = conn.execute(
        f"SELECT count(*), coalesce(sum(length(envelope)), 0) FROM {TABLE}").fetchall()
    return int(batches), int(size)


def missing_at_hub(conn: apsw.Connection, held: dict[str, int], me: str) -> list[bytes]:
    """The kept envelopes of other origins that follow what the hub holds of them, in
    chain order; an origin whose kept batches do not continue the hub's exactly is left
    out (relaying from a gap would only be refused)."""
    if not _exists(conn):
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
    the run of kept batches without a gap that ends at its newest one (``riversync verify``
    uses it to tell events the hub lost that a node will relay from events nobody can).
    After pruning the run starts where the kept batches start: a hub that lost more than
    that cannot be helped by this node, and ``missing_at_hub`` sends nothing then."""
    if not _exists(conn):
        return {}
    out = {}
    for node, epoch, first, last, held in conn.execute(
            f"SELECT node, epoch, min(first), max(last), sum(last - first + 1) FROM {TABLE}"
            " GROUP BY node, epoch"):
        if held != last - first + 1:
            # A hole (a hub restore re-delivered batches pruned before): the relay could
            # only bridge the hub's point if it falls in the last run.
            first = last + 1
            for f, la in conn.execute(f"SELECT first, last FROM {TABLE} WHERE node = ? AND"
                                      " epoch = ? ORDER BY n DESC", (node, epoch)):
                if la != first - 1:
                    break
                first = f
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
