"""The engine's own tables (prefix ``_rs_``) and the migrations that create them.

* ``_rs_journal``: every event held, in arrival order (``source`` NULL: replicated).
  Append-only, enforced by triggers that raise on UPDATE and DELETE (no engine code drops
  them or writes around them), and hash-chained (the last row of each apply holds
  ``chain``: SHA-256 of the previous link and of the apply's event bytes and sources;
  rows in between hold NULL), so it doubles as the audit trail: an accepted change is a
  journal row with no ``_rs_status`` row.
* ``_rs_ids``: which journal row holds each event id ``(node, epoch, seq)`` now; its
  primary key is what makes an id unique (re-delivery is a no-op).  It is the journal's
  id index, kept apart from the journal because it may change: every lookup by event id
  goes through it.  An apply fills it with one set-based statement after its journal rows.
* ``_rs_superseded``: journal rows that no longer hold their event id, with the cause: the
  hub holds another event under that id (``Store.yield_own``).  Their ``_rs_ids`` entry
  is removed, so the hub's event is taken under the id like any other, while the row
  stays in the journal, bytes unchanged.  Only ever grows; a superseded row is also
  "resequenced" in ``_rs_status``.  Rows an older release moved off their id by negating
  ``seq`` are listed here too (migration ``0002_superseded``).
* ``_rs_status``: the verdict of every event that is *not* an accepted change (conflict,
  parked, rejected, resequenced), with its cause.  Derived data: a row's recompute rewrites
  the statuses of its events (a superseded event is no longer one of its row's events).
* ``_rs_rows``: per row that any held event names: whether it is known (has a create),
  live, created, the owner history, the parent key, the greatest order key of its judged
  events, and the journal ids of all its events (``jids``, packed int64: the row's own
  index into the journal, cheaper than a second journal index).
* ``_rs_origins``: per origin (node, epoch): highest contiguous sequence held (the version
  vector) and, for this node's own origins, the highest sequence the hub acknowledged.
* ``_rs_cursors``: named delivery cursors, moved in the same transaction as their apply.
* ``_rs_meta``: small durable key-value (last HLC, node id, epoch, next sequence...).
"""

from __future__ import annotations

import apsw

from .db import Migration

APPEND_ONLY = "the journal is append-only (it is the audit trail)"
SUPERSEDED_BEFORE = "moved off its id by negating seq (before migration 0002_superseded)"


def _m0001_engine(conn: apsw.Connection) -> None:
    conn.execute(
        f"""
        CREATE TABLE _rs_meta (key TEXT PRIMARY KEY, value) ;
        CREATE TABLE _rs_journal (
            jid INTEGER PRIMARY KEY,
            node TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
            hlc INTEGER NOT NULL, kind TEXT NOT NULL, tbl TEXT NOT NULL, pk TEXT NOT NULL,
            source TEXT, body BLOB NOT NULL, chain BLOB);
        CREATE UNIQUE INDEX _rs_journal_id ON _rs_journal(node, epoch, seq);
        CREATE TRIGGER _rs_journal_no_update BEFORE UPDATE ON _rs_journal
            BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
        CREATE TRIGGER _rs_journal_no_delete BEFORE DELETE ON _rs_journal
            BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END;
        CREATE TABLE _rs_status (
            jid INTEGER PRIMARY KEY, tbl TEXT NOT NULL, pk TEXT NOT NULL,
            status TEXT NOT NULL, cause TEXT NOT NULL, wtbl TEXT, wpk TEXT,
            closed_by TEXT, decision TEXT);
        CREATE INDEX _rs_status_row ON _rs_status(tbl, pk);
        CREATE INDEX _rs_status_wait ON _rs_status(wtbl, wpk) WHERE wtbl IS NOT NULL;
        CREATE INDEX _rs_status_kind ON _rs_status(status);
        CREATE TABLE _rs_rows (
            tbl TEXT NOT NULL, pk TEXT NOT NULL, known INTEGER NOT NULL, live INTEGER NOT NULL,
            created INTEGER NOT NULL, owner0 TEXT, transfers BLOB, ppk TEXT,
            mh INTEGER, mn TEXT, me INTEGER, jids BLOB NOT NULL,
            PRIMARY KEY (tbl, pk)) WITHOUT ROWID;
        CREATE INDEX _rs_rows_parent ON _rs_rows(ppk, tbl) WHERE ppk IS NOT NULL;
        CREATE TABLE _rs_origins (
            node TEXT NOT NULL, epoch INTEGER NOT NULL,
            contiguous INTEGER NOT NULL DEFAULT 0, acked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (node, epoch)) WITHOUT ROWID;
        CREATE TABLE _rs_cursors (name TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
            seq INTEGER NOT NULL);
        """
    )


def _m0002_superseded(conn: apsw.Connection) -> None:
    """Move the event id's uniqueness off the journal into ``_rs_ids``, so that handing an
    id to the hub's event never needs the journal changed.

    ``_rs_ids`` takes the place of the journal's unique index (one B-tree entry per event,
    as before).  Rows an older release superseded by negating ``seq`` (with the update
    trigger dropped for the moment) keep their bytes and their negative ``seq``; they are
    listed as superseded with the cause their status gave, and hold no id.
    """
    conn.execute(
        f"""
        CREATE TABLE _rs_superseded (jid INTEGER PRIMARY KEY, cause TEXT NOT NULL);
        INSERT INTO _rs_superseded(jid, cause)
            SELECT j.jid, coalesce(s.cause, '{SUPERSEDED_BEFORE}')
            FROM _rs_journal j LEFT JOIN _rs_status s USING (jid) WHERE j.seq < 0;
        CREATE TABLE _rs_ids (
            node TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
            jid INTEGER NOT NULL, PRIMARY KEY (node, epoch, seq)) WITHOUT ROWID;
        INSERT INTO _rs_ids(node, epoch, seq, jid)
            SELECT node, epoch, seq, jid FROM _rs_journal j
            WHERE NOT EXISTS (SELECT 1 FROM _rs_superseded x WHERE x.jid=j.jid)
            ORDER BY node, epoch, seq;
        DROP INDEX _rs_journal_id;
        """
    )


MIGRATIONS: list[Migration] = [("0001_engine", _m0001_engine),
                               ("0002_superseded", _m0002_superseded)]
