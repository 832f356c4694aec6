"""The store: one node's SQLite database, folding events into replicated tables.

Theory of operation.  Every event a node holds is appended to the journal
(``engine/tables.py``).  The replicated tables are a cache of ``merge.fold_row`` over the
journal, kept current in two ways:

* **Fast path.**  An event newer than anything judged for its row (compared with the
  row's greatest order key in ``_rs_rows``) can be judged from that row summary alone with
  ``merge.judge``; its effect is gathered per row and written set-based (``executemany``
  per statement shape).  Updates are always ``UPDATE``, never ``INSERT OR REPLACE``, so
  unlisted columns and rows that reference this one are never disturbed.
* **Recompute.**  Anything else (an older event, a transfer, a resolve) marks its row; the
  row is then recomputed from its journal with ``merge.fold_row`` and written back, and if
  its owner history changed, so are the rows that follow it as parent.

After each apply, parked events waiting on a row that was touched and is known are retried
(their row is recomputed) until nothing more becomes known.  A whole apply, journal, statuses, row
writes, version vector, clock and cursor, is one SQLite transaction: it happens wholly or
not at all.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import operator
import os
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import apsw
import msgspec

from riversync.protocol import hlc as _hlc
from riversync.protocol import limits
from riversync.protocol.keys import Roster
from riversync.protocol.messages import (
    CREATE,
    DECISIONS,
    DELETE,
    KEEP,
    MERGE,
    RESOLVE,
    TRANSFER,
    UPDATE,
    AnyEvent,
    Create,
    Delete,
    Resolve,
    Transfer,
    Update,
)

from . import db, merge
from .errors import (
    BadKey,
    BadValue,
    ConflictNotFound,
    DatabaseUnreadable,
    EpochRequired,
    MissingReference,
    NotNodeDatabase,
    NotOwner,
    RowExists,
    RowNotFound,
    RowTooLarge,
    SchemaChanged,
    SchemaDowngrade,
    SchemaVersionDiffers,
    UnknownColumn,
    UnknownTable,
    WrongNode,
)
from .schema import INT64, Schema, Table, create_table_sql, q
from .tables import MIGRATIONS

_enc = msgspec.msgpack.Encoder()
_ev_dec = msgspec.msgpack.Decoder(AnyEvent)
ZERO = bytes(32)
RESEQUENCED = "resequenced"
VALUED = frozenset((CREATE, UPDATE, RESOLVE))
LOCAL = "local"
REFOLD_SLICE = 2_000  # rows folded per step when a schema is adopted: bounds memory
REMOTE = None  # the journal's source for replicated events


@dataclass
class LocalChange:
    """One change a local user asks for; ``commit_local`` turns it into an event."""

    kind: str
    table: str = ""
    pk: str = ""
    values: dict | None = None
    owner: str | None = None
    conflict: str | None = None
    decision: str | None = None


@dataclass
class ApplyResult:
    """What one remote apply did, counted over the events it was given."""

    received: int = 0
    duplicates: int = 0
    applied: int = 0
    conflicts: int = 0
    parked: int = 0
    rejected: int = 0
    recomputed_rows: int = 0
    conflict_ids: list[str] = field(default_factory=list)


class _Row:
    """In-memory copy of one ``_rs_rows`` entry while an apply runs."""

    __slots__ = ("known", "live", "created", "owner0", "transfers", "ppk", "key", "jids",
                 "dirty")

    def __init__(self, known, live, created, owner0, transfers, ppk, key, jids):
        self.known = known
        self.live = live
        self.created = created
        self.owner0 = owner0
        self.transfers = transfers
        self.ppk = ppk
        self.key = key
        self.jids = jids
        self.dirty = False

    @property
    def owner(self):
        return self.transfers[-1][1] if self.transfers else self.owner0


def _new_row() -> _Row:
    return _Row(False, False, False, None, [], None, None, array("q"))


def _pack_transfers(transfers) -> bytes | None:
    if not transfers:
        return None
    return _enc.encode([[k[0], k[1], k[2], o] for k, o in transfers])


def _unpack_transfers(blob) -> list:
    if not blob:
        return []
    return [((h, n, e), o) for h, n, e, o in msgspec.msgpack.decode(blob)]


_INT_MIN, _INT_MAX = INT64
_MAX_TEXT = limits.MAX_TEXT_CHARS


def _fast_types(schema: Schema) -> dict[str, dict[str, tuple]]:
    """Per table, per column: the value types the replay loop may accept without calling
    ``Table.check_values`` (never None, never a column that needs a closer look)."""
    return {name: {c.name: c.py_types for c in t.columns.values() if not c.slow_check}
            for name, t in schema.tables.items()}


@contextlib.contextmanager
def _gc_paused():
    """Hold off Python's cycle collector while one apply runs.

    An apply allocates tens of thousands of small objects (journal rows, row summaries)
    and makes no reference cycles; without this the collector walks them over and over
    (measured: a sixth of the apply's time).  The collector is switched back on only after
    the apply's objects are freed (the caller returns from a nested call first): freed
    objects leave the young generation's count, so re-enabling then costs no collection
    over them (measured: 5% of the apply's time before).  Whatever cycles other code makes
    meanwhile are collected as usual once the apply ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _row_getter(t: Table):
    cols = list(t.columns)
    if not cols:
        return lambda d: ()
    if len(cols) == 1:
        one = operator.itemgetter(cols[0])
        return lambda d: (one(d),)
    return operator.itemgetter(*cols)


def _check_event_size(ev) -> None:
    """Refuse an event too long for any batch [N-LIMIT-1]: taken, it could never be
    pushed and would hold back every later event of this node.  Encoded only when its
    values could come near the limit (a character is at most 4 bytes of UTF-8).

    Raises:
        RowTooLarge: naming the row and its size.
    """
    values = getattr(ev, "values", None)
    if not values:
        return
    bound = sum(4 * len(v) if type(v) is str else len(v)
                for v in values.values() if type(v) in (str, bytes))
    if bound < limits.MAX_EVENT_BYTES - 65536:
        return
    size = len(_enc.encode(ev))
    if size > limits.MAX_EVENT_BYTES:
        raise RowTooLarge(f"{ev.table} {ev.pk!r}: this change is {size:,} bytes encoded; one "
                          f"change may be at most {limits.MAX_EVENT_BYTES:,} bytes")


def _link(prev: bytes, segment: bytes) -> bytes:
    return hashlib.sha256(prev + segment).digest()


class Store:
    """One node's database.  Not thread-safe: one Store per writer thread."""

    def __init__(self, conn: apsw.Connection, path: str, schema: Schema, roster: Roster,
                 node_id: str, epoch: int, max_drift_ms: int):
        self.conn = conn
        self.path = path
        self.schema = schema
        self.roster = roster
        self.node_id = node_id
        self.office = roster.office_of_node(node_id)
        self.epoch = epoch
        self.max_drift_ms = max_drift_ms
        self.rules = merge.Rules(schema, roster)
        self.fast_types = _fast_types(schema)
        # tables no merge decision asks about (no column references them, no table follows
        # their owner): their row summaries may wait in memory until a recompute
        asked = {t.parent_table for t in schema.tables.values()}
        asked.update(r for t in schema.tables.values() for r in t.references.values())
        self.unasked_tables = frozenset(schema.tables) - asked
        # a whole row's values in the table's column order, from a dict (one C call)
        self.row_getters = {n: _row_getter(t) for n, t in schema.tables.items()}
        self._fault = None  # test hook: called with a phase name inside transactions
        self.refolded_rows: int | None = None  # rows folded again if this open adopted a schema

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, schema: Schema, roster: Roster, node_id: str, *,
             epoch: int | None = None, max_drift_ms: int = _hlc.DEFAULT_MAX_DRIFT_MS,
             trace: bool = False, adopt_schema: bool = False) -> Store:
        """Open (creating on first use) the database of node ``node_id``.

        ``adopt_schema``: take ``schema`` even though its content differs from the one this
        database recorded under the same version (the node ran a wrong file; the operator
        put the cluster's file in place): the replicated tables are rebuilt and every row
        is folded again from the journal under ``schema``, in one transaction, so the
        state is exactly what any node with the cluster's file holds for these events.
        ``refolded_rows`` says how many rows that was.

        Raises:
            WrongNode: the node is not in the roster, or the file belongs to another node.
            EpochRequired: first open without an epoch.
            SchemaChanged: the schema's content differs from what this database ran under
                the same version (and ``adopt_schema`` was not given).
            SchemaDowngrade: the schema is older than a version this database ran.
            SchemaVersionDiffers: ``adopt_schema`` with a version other than the one this
                database runs.
        """
        if roster.office_of_node(node_id) is None:
            raise WrongNode(f"node {node_id!r} is not in the cluster roster")
        conn = db.connect(str(path), trace=trace)
        try:
            db.migrate(conn, MIGRATIONS)
            with db.transaction(conn):
                stored_node = _meta(conn, "node_id")
                if stored_node is not None and stored_node != node_id:
                    raise WrongNode(f"database {path} belongs to node {stored_node!r}, not {node_id!r}")
                stored_epoch = _meta(conn, "epoch")
                if stored_epoch is None:
                    if epoch is None:
                        raise EpochRequired(f"database {path} is new: give a node epoch")
                    _meta_set(conn, "node_id", node_id)
                    _meta_set(conn, "epoch", int(epoch))
                    stored_epoch = int(epoch)
                old_version = _meta(conn, "schema_version")
                old_digest = _meta(conn, "schema_digest")
                digest = schema.digest()
                # Every version this database ran, with its digest: one start under another
                # version must not make it forget what an older version's content was.
                ran = {int(v): d for v, d in json.loads(_meta(conn, "schema_digests") or "{}").items()}
                if old_version is not None and old_digest is not None:
                    ran.setdefault(old_version, old_digest)
                newest = max(ran, default=None)
                if newest is not None and schema.version < newest:
                    raise SchemaDowngrade(
                        f"the schema file is version {schema.version}; this database already "
                        f"ran version {newest}")
                if adopt_schema and old_version is not None and schema.version != old_version:
                    raise SchemaVersionDiffers(
                        f"the schema file is version {schema.version}; this database runs "
                        f"version {old_version}")
                adopting = ran.get(schema.version, digest) != digest
                if adopting and not adopt_schema:
                    raise SchemaChanged(
                        f"the schema file's content differs from the schema version "
                        f"{schema.version} this database was opened with before; nodes "
                        "judging events by different rules under one version would diverge")
                if adopting:  # a cache of the journal, folded again below (types may differ)
                    for name in schema.tables:
                        conn.execute(f"DROP TABLE IF EXISTS {q(name)}")
                _ensure_tables(conn, schema)
                _meta_set(conn, "schema_version", schema.version)
                _meta_set(conn, "schema_digest", digest)
                ran[schema.version] = digest
                _meta_set(conn, "schema_digests", json.dumps(
                    {str(v): d for v, d in sorted(ran.items())}))
                store = cls(conn, str(path), schema, roster, node_id, int(stored_epoch),
                            max_drift_ms)
                if adopting:
                    store.refolded_rows = store._refold_all()
            if not adopting and old_version is not None and old_version != schema.version:
                store._retry_static_parked()
            return store
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refold_all(self) -> int:
        """Fold every row again from the journal into the (emptied) replicated tables, a
        slice of rows at a time; returns how many rows."""
        self.conn.execute("UPDATE _rs_rows SET live=0")  # nothing is in the tables now
        keys = [(tbl, pk) for tbl, pk in self.conn.execute("SELECT tbl, pk FROM _rs_rows")]
        for i in range(0, len(keys), REFOLD_SLICE):
            ctx = _Apply(self, REMOTE)
            ctx.slow.update(keys[i:i + REFOLD_SLICE])
            ctx.finish()
        return len(keys)

    def _retry_static_parked(self) -> None:
        """A schema upgrade may make parked events (unknown table, newer version) valid."""
        with db.transaction(self.conn):
            rows = list(self.conn.execute(
                "SELECT DISTINCT tbl, pk FROM _rs_status WHERE status='parked' AND wtbl IS NULL"))
            ctx = _Apply(self, REMOTE)
            for tbl, pk in rows:
                if tbl in self.schema.tables:
                    ctx.slow.add((tbl, pk))
            ctx.finish()

    # ------------------------------------------------------------------ meta

    def meta_get(self, key: str):
        return _meta(self.conn, "x:" + key)

    def meta_set(self, key: str, value) -> None:
        with db.transaction(self.conn):
            _meta_set(self.conn, "x:" + key, value)

    def get_cursor(self, name: str) -> tuple[int, int] | None:
        for e, s in self.conn.execute("SELECT epoch, seq FROM _rs_cursors WHERE name=?", (name,)):
            return (e, s)
        return None

    # ------------------------------------------------------------------ local commit

    def commit_local(self, changes: list[LocalChange], *, user: str, now_ms: int,
                     admin: bool = False, source: str | None = None) -> list[AnyEvent]:
        """Turn changes into events and apply them in one durable transaction.

        Raises:
            UnknownTable, UnknownColumn, BadValue, BadKey, MissingReference, NotOwner,
            RowNotFound, RowExists, ConflictNotFound, RowTooLarge: nothing is changed.
        """
        if not changes:
            return []
        src = f"{LOCAL}:{source}" if source else LOCAL
        u = self.roster.users.get(user)
        role = u.role if u else "unknown"
        if admin and not self.roster.is_admin(user):
            raise NotOwner(f"user {user!r} is not an admin and cannot override ownership")
        with db.transaction(self.conn, durable=True):
            last = _meta(self.conn, "last_hlc") or 0
            seq = _meta(self.conn, f"seq:{self.epoch}") or 0
            live: dict[tuple[str, str], bool] = {}
            events = []
            for i, ch in enumerate(changes):
                ev_fields = self._check_local(ch, live, i)
                last = _hlc.send(last, now_ms)
                seq += 1
                common = dict(node=self.node_id, epoch=self.epoch, seq=seq, hlc=last,
                              schema=self.schema.version, table=ev_fields["table"],
                              pk=ev_fields["pk"], user=user, role=role, admin=admin)
                kind = ch.kind
                if kind == CREATE:
                    ev = Create(**common, values=ev_fields["values"])
                elif kind == UPDATE:
                    ev = Update(**common, values=ev_fields["values"])
                elif kind == DELETE:
                    ev = Delete(**common)
                elif kind == TRANSFER:
                    ev = Transfer(**common, owner=ch.owner)
                else:
                    ev = Resolve(**common, conflict=ch.conflict, decision=ch.decision,
                                 values=ev_fields["values"])
                _check_event_size(ev)
                events.append(ev)
            _meta_set(self.conn, "last_hlc", last)
            _meta_set(self.conn, f"seq:{self.epoch}", seq)
            ctx = _Apply(self, src)
            ctx.ingest(events)
            ctx.finish()
            self._raise_unaccepted(events, ctx.jid_range)
            if self._fault:
                self._fault("local-before-commit")
        return events

    def _check_local(self, ch: LocalChange, live: dict, i: int) -> dict:
        where = f"change {i}"
        kind = ch.kind
        if kind not in (CREATE, UPDATE, DELETE, TRANSFER, RESOLVE):
            raise BadValue(f"{where}: unknown kind {kind!r}")
        table_name, pk = ch.table, ch.pk
        target = None
        if kind == RESOLVE:
            if ch.decision not in DECISIONS:
                raise BadValue(f"{where}: decision must be one of {', '.join(DECISIONS)}")
            c = self.conflict(ch.conflict or "")
            if c is None or c["status"] != "open":
                raise ConflictNotFound(f"{where}: no open conflict {ch.conflict!r}")
            table_name, pk = c["table"], c["pk"]
            target = c
        table = self.schema.tables.get(table_name)
        if table is None:
            raise UnknownTable(f"{where}: table {table_name!r} is not in the schema")
        why = table.check_pk(pk)
        if why:
            raise BadKey(f"{where}: {table_name}: {why}")
        values = dict(ch.values or {})
        if kind == RESOLVE and ch.decision == "accept" and not values:
            values = dict(target.get("values") or {})
        if kind == RESOLVE and ch.decision == MERGE and not values:
            raise BadValue(f"{where}: a merge resolution carries the merged values")
        if kind == RESOLVE and ch.decision == KEEP:
            values = {}
        if table.primary_key in values:
            if values.pop(table.primary_key) != pk:
                raise BadKey(f"{where}: values name a different primary key")
        for col in values:
            if col not in table.columns:
                raise UnknownColumn(f"{where}: table {table_name!r} has no column {col!r}")
        if kind in (CREATE, UPDATE, RESOLVE):
            why = table.check_values(values, creating=kind == CREATE)
            if why:
                raise BadValue(f"{where}: {table_name} {pk!r}: {why}")
            if kind == UPDATE and not values:
                raise BadValue(f"{where}: an update must change at least one column")
        if kind == TRANSFER:
            if table.parent_column:
                raise BadValue(f"{where}: rows of {table_name!r} follow their parent's owner",
                               hint=f"transfer its {table.parent_table} row (named in "
                                    f"{table.parent_column}) instead: the {table_name} follow")
            if ch.owner not in self.roster.offices:
                raise BadValue(f"{where}: {ch.owner!r} is not an office of the cluster")
        if kind != RESOLVE:
            row = (table_name, pk)
            is_live = live.get(row)
            if is_live is None:
                is_live = bool(_one(self.conn, "SELECT live FROM _rs_rows WHERE tbl=? AND pk=?", row))
            if kind == CREATE and is_live:
                raise RowExists(f"{where}: {table_name} {pk!r} already exists")
            if kind != CREATE and not is_live:
                raise RowNotFound(f"{where}: {table_name} {pk!r} does not exist")
            live[row] = kind != DELETE
        return {"table": table_name, "pk": pk, "values": values}

    def _raise_unaccepted(self, events: list, jid_range) -> None:
        lo, hi = jid_range
        if lo is None:
            return
        refused = dict(((jid, (status, cause)) for jid, status, cause in self.conn.execute(
            "SELECT jid, status, cause FROM _rs_status WHERE jid BETWEEN ? AND ?", (lo, hi))))
        for jid, ev in enumerate(events, start=lo):
            r = refused.get(jid)
            if r is None:
                continue
            status, cause = r
            what = f"{ev.kind} of {ev.table} {ev.pk!r}"
            if cause.startswith(merge.MISSING_REF):
                raise MissingReference(f"{what}: {cause}")
            if cause in (merge.NOT_OWNER, merge.FOLLOWS_PARENT):
                office = self.rules.acting_office(ev)
                raise NotOwner(f"{what}: office {office!r} does not own this row")
            if cause in (merge.ROW_DELETED, merge.ROW_NOT_CREATED, merge.ROW_NOT_KNOWN):
                raise RowNotFound(f"{what}: {cause}")
            if cause == merge.NOT_A_CONFLICT or cause == merge.CONFLICT_NOT_KNOWN:
                raise ConflictNotFound(f"{what}: {cause}")
            raise BadValue(f"{what}: {status}: {cause}")

    # ------------------------------------------------------------------ remote apply

    def apply_remote(self, events: Iterable[AnyEvent], *, now_ms: int,
                     cursor: tuple[str, int, int] | None = None) -> ApplyResult:
        """Apply other nodes' events (one or several batches) in one transaction.

        Duplicates are ignored; conflicts and parked events are recorded, never dropped;
        ``cursor`` (name, epoch, seq) moves in the same transaction.

        Raises:
            ClockSkew: an event is stamped more than ``max_drift_ms`` ahead of ``now_ms``;
                nothing is applied.
        """
        with _gc_paused():  # re-enabled only once the apply's objects are freed
            return self._apply_remote(list(events), now_ms, cursor)

    def _apply_remote(self, events: list, now_ms: int, cursor) -> ApplyResult:
        with db.transaction(self.conn):
            if events:
                top = max(ev.hlc for ev in events)
                last = _meta(self.conn, "last_hlc") or 0
                last = _hlc.receive(last, top, now_ms, self.max_drift_ms)
                _meta_set(self.conn, "last_hlc", last)
            ctx = _Apply(self, REMOTE)
            ctx.ingest(events)
            if self._fault:
                self._fault("remote-mid-apply")
            ctx.finish()
            self._held_upstream(events)
            if cursor is not None:
                self.conn.execute(
                    "INSERT INTO _rs_cursors(name, epoch, seq) VALUES (?,?,?) ON CONFLICT(name)"
                    " DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq", cursor)
            return ctx.result

    def _held_upstream(self, events: list) -> None:
        """This node's own events of older epochs that arrive from upstream are held there.

        A restored node gets its old epoch's events back through the pull; the hub holds an
        origin's events as an unbroken run from 1, so everything up to the highest one
        received is acknowledged.  Without this they would count as queued for ever.
        """
        me, current = self.node_id, self.epoch
        marks: dict[int, int] = {}
        for ev in events:
            if ev.node == me and ev.epoch != current and ev.seq > marks.get(ev.epoch, 0):
                marks[ev.epoch] = ev.seq
        for epoch, seq in marks.items():
            self.conn.execute(
                "INSERT INTO _rs_origins(node, epoch, acked) VALUES (?,?,?) ON CONFLICT"
                " DO UPDATE SET acked=max(acked, excluded.acked)", (me, epoch, seq))

    # ------------------------------------------------------------------ outbox

    def outbox(self, limit: int = 1000, epoch: int | None = None) -> list[AnyEvent]:
        """Own events the hub has not acknowledged, in sequence order, current epoch first;
        only those of ``epoch`` when it is given (a batch holds one origin's events)."""
        rows = self.conn.execute(
            "SELECT j.body FROM _rs_ids i JOIN _rs_origins o"
            " ON o.node=i.node AND o.epoch=i.epoch JOIN _rs_journal j ON j.jid=i.jid"
            " WHERE i.node=?1 AND i.seq > o.acked AND (?2 IS NULL OR i.epoch=?2) AND NOT EXISTS"
            " (SELECT 1 FROM _rs_status s WHERE s.jid=i.jid AND s.status=?3)"
            " ORDER BY i.epoch != ?4, i.epoch, i.seq LIMIT ?5",
            (self.node_id, epoch, RESEQUENCED, self.epoch, limit))
        return [_ev_dec.decode(r[0]) for r in rows]

    def own_epochs(self) -> dict[int, int]:
        """Every epoch of this node that events are held for, with the hub's acknowledged
        mark: what a hello checks against the hub's own record."""
        return dict(self.conn.execute(
            "SELECT epoch, acked FROM _rs_origins WHERE node=?", (self.node_id,)))

    def begin_epoch(self, new_epoch: int) -> None:
        """Start a new node epoch for new writes at once (after a restore), leaving the old
        epochs' events as they are.

        What the hub holds of an old epoch is known only once it answers a hello, possibly
        much later; the replication agent then acknowledges what it holds and pushes the
        rest as that epoch's continuation.  Nothing is re-numbered, so an event never gets
        a second identity.

        Raises:
            BadValue: ``new_epoch`` was used before by this node.
        """
        with db.transaction(self.conn, durable=True):
            if _meta(self.conn, f"seq:{new_epoch}") is not None or _one(
                    self.conn, "SELECT 1 FROM _rs_origins WHERE node=? AND epoch=?",
                    (self.node_id, new_epoch)):
                raise BadValue(f"node epoch {new_epoch} was used before by {self.node_id}")
            _meta_set(self.conn, "epoch", new_epoch)
            _meta_set(self.conn, f"seq:{new_epoch}", 0)
            self.epoch = new_epoch

    def outbox_size(self) -> int:
        return _one(self.conn,
                    "SELECT count(*) FROM _rs_ids i JOIN _rs_origins o"
                    " ON o.node=i.node AND o.epoch=i.epoch WHERE i.node=? AND i.seq > o.acked"
                    " AND NOT EXISTS (SELECT 1 FROM _rs_status s WHERE s.jid=i.jid AND s.status=?)",
                    (self.node_id, RESEQUENCED))

    def mark_acked(self, epoch: int, last_seq: int) -> None:
        with db.transaction(self.conn):
            self.conn.execute(
                "INSERT INTO _rs_origins(node, epoch, acked) VALUES (?,?,?) ON CONFLICT"
                " DO UPDATE SET acked=max(acked, excluded.acked)",
                (self.node_id, epoch, last_seq))

    def requeue_after(self, epoch: int, last_seq: int) -> None:
        """The hub lost this node's events of ``epoch`` after ``last_seq`` (it was restored
        from an older backup): they count as queued again, so they are pushed again.

        ``mark_acked`` only moves forward, as acknowledgements do; this is the one way back.
        """
        with db.transaction(self.conn):
            self.conn.execute(
                "UPDATE _rs_origins SET acked=? WHERE node=? AND epoch=? AND acked>?",
                (last_seq, self.node_id, epoch, last_seq))

    def own_seq(self, epoch: int) -> int | None:
        """The highest sequence number this database handed out in ``epoch`` (None: never
        began it): what a node compares with its head file to notice a copied-back file."""
        return _meta(self.conn, f"seq:{epoch}")

    def own_events(self, epoch: int, seqs: Iterable[int]) -> dict[int, AnyEvent]:
        """This node's own journal events of ``epoch`` with these numbers (seq -> event)."""
        return {s: _ev_dec.decode(b) for s, b in self.conn.execute(
            "SELECT i.seq, j.body FROM _rs_ids i JOIN _rs_journal j USING (jid)"
            " WHERE i.node=? AND i.epoch=? AND i.seq IN (SELECT value FROM json_each(?))",
            (self.node_id, epoch, json.dumps(sorted(set(seqs)))))}

    def yield_own(self, epoch: int, seqs: Iterable[int], *, now_ms: int) -> list[AnyEvent]:
        """The hub holds other events than this database under these own ids of an older
        ``epoch`` (the file was put back from a copy after they were pushed): the hub's
        events are the truth for those ids, and this node's accepted writes are kept by
        re-issuing each as a new event of the current epoch (same table, key, values, user,
        a new HLC), pushed like any local write.

        The journal is the audit trail and is not touched (no trigger is dropped, no row
        changed): the local copies stay, bytes unchanged, so the audit chain still
        verifies.  Their ids are released from ``_rs_ids``, through which every lookup by
        event id goes, and they are listed in ``_rs_superseded`` with the cause and marked
        "resequenced" (out of every fold and digest); the origin's contiguous mark is
        lowered, so the hub's events are taken under those ids when they are pulled.  One
        durable transaction; returns the re-issued events.
        """
        seqs = sorted(set(seqs))
        if not seqs or epoch == self.epoch:
            return []
        with db.transaction(self.conn, durable=True):
            rows = list(self.conn.execute(
                "SELECT i.jid, j.body FROM _rs_ids i JOIN _rs_journal j USING (jid)"
                " WHERE i.node=? AND i.epoch=? AND i.seq IN (SELECT value FROM json_each(?))"
                " ORDER BY i.seq",
                (self.node_id, epoch, json.dumps(seqs))))
            if not rows:
                return []
            olds = [(jid, _ev_dec.decode(b)) for jid, b in rows]
            last = _meta(self.conn, "last_hlc") or 0
            seq = _meta(self.conn, f"seq:{self.epoch}") or 0
            ctx = _Apply(self, f"{LOCAL}:re-issued from epoch {epoch}")
            ctx._load({(ev.table, ev.pk) for _, ev in olds})
            new_events = []
            marks = []
            for jid, ev in olds:
                r = ctx.rows.get((ev.table, ev.pk))
                if r is not None and jid in r.jids:
                    r.jids.remove(jid)
                    r.dirty = True
                last = _hlc.send(last, now_ms)
                seq += 1
                cause = (f"the hub holds another event as {self.node_id}/{epoch}/{ev.seq}; "
                         f"re-issued as epoch {self.epoch} seq {seq}")
                marks.append((jid, ev.table, ev.pk, RESEQUENCED, cause))
                new_events.append(msgspec.structs.replace(
                    ev, epoch=self.epoch, seq=seq, hlc=last))
                ctx.slow.add((ev.table, ev.pk))
            self.conn.executemany("DELETE FROM _rs_ids WHERE node=? AND epoch=? AND seq=?",
                                  [(self.node_id, epoch, ev.seq) for _, ev in olds])
            self.conn.executemany("INSERT INTO _rs_superseded(jid, cause) VALUES (?,?)",
                                  [(m[0], m[4]) for m in marks])
            self.conn.executemany(
                "INSERT OR REPLACE INTO _rs_status(jid, tbl, pk, status, cause)"
                " VALUES (?,?,?,?,?)", marks)
            self.conn.execute(
                "UPDATE _rs_origins SET contiguous=min(contiguous, ?) WHERE node=? AND epoch=?",
                (seqs[0] - 1, self.node_id, epoch))
            _meta_set(self.conn, "last_hlc", last)
            _meta_set(self.conn, f"seq:{self.epoch}", seq)
            ctx.ingest(new_events)
            ctx.finish()
        return new_events

    def own_sources(self, epoch: int, seqs: Iterable[int]) -> dict[int, str | None]:
        """Where each of these own events of ``epoch`` came from (its audit source)."""
        return dict(self.conn.execute(
            "SELECT i.seq, j.source FROM _rs_ids i JOIN _rs_journal j USING (jid)"
            " WHERE i.node=? AND i.epoch=? AND i.seq IN (SELECT value FROM json_each(?))",
            (self.node_id, epoch, json.dumps(sorted(set(seqs))))))

    def carry_own(self, events: list[AnyEvent],
                  sources: dict[tuple[int, int], str | None] | None = None) -> int:
        """Take this node's own events from another copy of its database (the file a restore
        put aside) under their own ids, as local writes the hub may not hold yet.

        Ids this database holds already are skipped.  ``sources`` ((epoch, seq) -> audit
        source in that copy) keeps what the audit said of each, such as the staging batch
        it came from; an event without one is marked carried over.  The events then settle
        with the hub like any own event of an older epoch: compared with what the hub sends
        back, and the rest pushed as their epoch's continuation.  Returns how many were taken.
        """
        events = [ev for ev in events if ev.node == self.node_id]
        if not events:
            return 0
        sources = sources or {}
        taken = 0
        with db.transaction(self.conn, durable=True):
            last = _meta(self.conn, "last_hlc") or 0
            _meta_set(self.conn, "last_hlc", max(last, max(ev.hlc for ev in events)))
            tops: dict[int, int] = {}
            for ev in events:
                tops[ev.epoch] = max(tops.get(ev.epoch, 0), ev.seq)
            for epoch, top in tops.items():
                if (_meta(self.conn, f"seq:{epoch}") or 0) < top:
                    _meta_set(self.conn, f"seq:{epoch}", top)
            # One apply per run of events with the same source, in their order.
            for source, run in itertools.groupby(
                    events, lambda ev: sources.get((ev.epoch, ev.seq)) or f"{LOCAL}:carried over"):
                ctx = _Apply(self, source)
                ctx.ingest(list(run))
                ctx.finish()
                taken += ctx.result.received - ctx.result.duplicates
        return taken

    # ------------------------------------------------------------------ reading

    def _row_dict(self, table: Table, row) -> dict:
        out = {table.primary_key: row[0]}
        for (name, col), v in zip(table.columns.items(), row[1:], strict=True):
            out[name] = bool(v) if col.type == "boolean" and v is not None else v
        return out

    def _table(self, name: str) -> Table:
        t = self.schema.tables.get(name)
        if t is None:
            raise UnknownTable(f"table {name!r} is not in the schema")
        return t

    def _select(self, t: Table) -> str:
        cols = ", ".join(q(c) for c in [t.primary_key, *t.columns])
        return f"SELECT {cols} FROM {q(t.name)}"

    def get_row(self, table: str, pk: str) -> dict | None:
        t = self._table(table)
        for row in self.conn.execute(f"{self._select(t)} WHERE {q(t.primary_key)}=?", (pk,)):
            return self._row_dict(t, row)
        return None

    def list_rows(self, table: str, limit: int = 100, offset: int = 0) -> list[dict]:
        t = self._table(table)
        rows = self.conn.execute(
            f"{self._select(t)} ORDER BY {q(t.primary_key)} LIMIT ? OFFSET ?", (limit, offset))
        return [self._row_dict(t, r) for r in rows]

    def owner_of(self, table: str, pk: str) -> str | None:
        """The office owning a live row now; None when the row is not live.

        Raises:
            UnknownTable: ``table`` is not in the schema.
        """
        return self.owners_of(table, [pk]).get(pk)

    def owners_of(self, table: str, pks: Iterable[str]) -> dict[str, str]:
        """The office owning each live row among ``pks`` (rows not live are left out): its
        last transfer, else its creator; a row that follows a parent has its parent's.

        Callers outside the engine (staging judges a change before it commits it) ask here
        instead of reading the engine's own tables, whose layout is the engine's business.

        Raises:
            UnknownTable: ``table`` is not in the schema.
        """
        t = self._table(table)
        keys = list(dict.fromkeys(pks))
        out: dict[str, str] = {}
        if not keys:
            return out
        follow: dict[str, str] = {}
        for pk, owner0, tr, ppk in self.conn.execute(
                "SELECT pk, owner0, transfers, ppk FROM _rs_rows WHERE tbl=? AND live"
                " AND pk IN (SELECT value FROM json_each(?))", (table, json.dumps(keys))):
            if t.parent_table and ppk is not None:
                follow[pk] = ppk
                continue
            transfers = _unpack_transfers(tr)
            owner = transfers[-1][1] if transfers else owner0
            if owner is not None:
                out[pk] = owner
        if follow:
            parents = self.owners_of(t.parent_table, follow.values())
            for pk, ppk in follow.items():
                if ppk in parents:
                    out[pk] = parents[ppk]
        return out

    def newest_hlc(self) -> int:
        """The greatest HLC of any event held (0: none): where a snapshot stands in time."""
        return _one(self.conn, "SELECT coalesce(max(hlc), 0) FROM _rs_journal") or 0

    def count_rows(self, table: str) -> int:
        t = self._table(table)
        return _one(self.conn, f"SELECT count(*) FROM {q(t.name)}")

    def _status_rows(self, where: str, args=()) -> list[dict]:
        out = []
        for (jid, node, epoch, seq, hlc, kind, tbl, pk, source, body,
             status, cause, wtbl, wpk, closed_by, decision) in self.conn.execute(
                "SELECT j.jid, j.node, j.epoch, j.seq, j.hlc, j.kind, j.tbl, j.pk,"
                " j.source, j.body, s.status, s.cause, s.wtbl, s.wpk, s.closed_by,"
                " s.decision FROM _rs_status s JOIN _rs_journal j USING (jid) WHERE " + where +
                " ORDER BY j.node, j.epoch, j.seq", args):
            ev = _ev_dec.decode(body)
            d = {
                "id": merge.conflict_id((node, epoch, seq)), "event": [node, epoch, seq],
                "hlc": hlc, "kind": kind, "table": tbl, "pk": pk, "user": ev.user,
                "role": ev.role, "admin": ev.admin, "node": node, "office": self.rules.acting_office(ev),
                "cause": cause, "values": dict(getattr(ev, "values", {}) or {}),
                "jid": jid, "source": source or "replicated",
            }
            if kind == TRANSFER:
                d["owner"] = ev.owner
            if status == "conflict":
                d["status"] = "closed" if closed_by else "open"
                d["open"] = not closed_by
                d["resolved_by"] = closed_by
                d["decision"] = decision
            else:
                d["status"] = status
                d["waiting_for"] = [wtbl, wpk] if wtbl else None
            out.append(d)
        return out

    def conflicts(self, open_only: bool = True) -> list[dict]:
        where = "s.status='conflict'" + (" AND s.closed_by IS NULL" if open_only else "")
        return self._status_rows(where)

    def conflict(self, cid: str) -> dict | None:
        eid = merge.parse_conflict_id(cid)
        if eid is None:
            return None
        rows = self._status_rows("s.status='conflict' AND j.jid=(SELECT jid FROM _rs_ids"
                                 " WHERE node=? AND epoch=? AND seq=?)", eid)
        return rows[0] if rows else None

    def parked(self) -> list[dict]:
        return self._status_rows("s.status='parked'")

    def rejected(self) -> list[dict]:
        return self._status_rows("s.status='rejected'")

    def audit(self, limit: int = 100, offset: int = 0) -> list[dict]:
        """Accepted changes, newest first: who (user, role, office, node), what, from where."""
        out = []
        for jid, body, source in self.conn.execute(
                "SELECT j.jid, j.body, j.source FROM _rs_journal j WHERE NOT EXISTS"
                " (SELECT 1 FROM _rs_status s WHERE s.jid=j.jid) ORDER BY j.jid DESC"
                " LIMIT ? OFFSET ?", (limit, offset)):
            ev = _ev_dec.decode(body)
            d = {"jid": jid, "event": list(ev.event_id), "hlc": ev.hlc, "kind": ev.kind,
                 "table": ev.table, "pk": ev.pk, "user": ev.user, "role": ev.role,
                 "admin": ev.admin, "node": ev.node, "office": self.rules.acting_office(ev),
                 "source": source or "replicated"}
            if ev.kind in (CREATE, UPDATE, RESOLVE):
                d["values"] = dict(ev.values)
            if ev.kind == TRANSFER:
                d["owner"] = ev.owner
            if ev.kind == RESOLVE:
                d["conflict"] = ev.conflict
                d["decision"] = ev.decision
            out.append(d)
        return out

    def audit_count(self) -> int:
        return _one(self.conn, "SELECT count(*) FROM _rs_journal j WHERE NOT EXISTS"
                               " (SELECT 1 FROM _rs_status s WHERE s.jid=j.jid)")

    def verify_audit(self) -> bool:
        """Recompute the journal's hash chain; False if any row was altered or removed.

        Each apply's last journal row holds ``sha256(previous link + sha256(the apply's
        event bytes and sources))``; rows in between hold NULL.
        """
        prev = ZERO
        seg = hashlib.sha256()
        expect_jid = None
        open_segment = False
        for jid, body, source, chain in self.conn.execute(
                "SELECT jid, body, source, chain FROM _rs_journal ORDER BY jid"):
            if expect_jid is not None and jid != expect_jid:
                return False
            seg.update(body + (source or "").encode())
            open_segment = True
            if chain is not None:
                if _link(prev, seg.digest()) != chain:
                    return False
                prev = chain
                seg = hashlib.sha256()
                open_segment = False
            expect_jid = jid + 1
        return not open_segment

    def digests(self) -> dict:
        """Deterministic digests: equal on two replicas that hold the same events."""
        from .digest import digests

        return digests(self)

    def origin_gaps(self) -> list[dict]:
        """Other nodes' origins this database holds events of past a gap.

        The hub delivers each origin's events in their order, so a node that has pulled all
        there is cannot hold an origin's later events without the earlier ones unless its
        cursor skipped some (a hub store put back by hand while it was down): those will
        never come.  Each gap: ``origin``, ``first`` missing and ``holds_up_to``.
        """
        out = []
        for node, epoch, contiguous in self.conn.execute(
                "SELECT node, epoch, contiguous FROM _rs_origins WHERE node != ?",
                (self.node_id,)).fetchall():
            top = _one(self.conn, "SELECT max(seq) FROM _rs_ids WHERE node=? AND epoch=?",
                       (node, epoch))
            if top is not None and top > contiguous:
                out.append({"origin": f"{node}/{epoch}", "first": contiguous + 1,
                            "holds_up_to": top})
        return out

    def stats(self) -> dict:
        c = self.conn
        by_status = dict(c.execute("SELECT status, count(*) FROM _rs_status GROUP BY status"))
        return {
            "events": _one(c, "SELECT count(*) FROM _rs_journal"),
            "outbox": self.outbox_size(),
            "parked": by_status.get("parked", 0),
            "open_conflicts": _one(c, "SELECT count(*) FROM _rs_status WHERE status='conflict'"
                                      " AND closed_by IS NULL"),
            "conflicts": by_status.get("conflict", 0),
            "rejected": by_status.get("rejected", 0),
            "last_hlc": _meta(c, "last_hlc") or 0,
            "epoch": self.epoch,
        }

    def backup(self, dest_path) -> None:
        """Online, WAL-safe copy into one self-contained file, verified before it is kept.

        Raises:
            BadValue: the copy failed its integrity check (the partial file is removed).
        """
        dest_path = str(dest_path)
        tmp = dest_path + ".partial"
        for p in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            if os.path.exists(p):
                os.remove(p)
        dest = apsw.Connection(tmp)
        try:
            with dest.backup("main", self.conn, "main") as b:
                while not b.done:
                    b.step(1024)
            dest.execute("PRAGMA journal_mode=DELETE")
            ok = db.integrity_ok(dest)
        finally:
            dest.close()
        if not ok:
            os.remove(tmp)
            raise BadValue(f"backup {dest_path} failed its integrity check")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest_path)


# ---------------------------------------------------------------------- helpers


def is_empty_database(path: os.PathLike) -> bool:
    """Whether an existing file is an empty database (a new node's); anything but that or
    a node's database is refused here, before ``Store.open``, since opening migrates.

    Raises:
        DatabaseUnreadable: a folder, or a file SQLite cannot read.
        NotNodeDatabase: a database with tables but no node engine's (a hub store...).
    """
    if not os.path.isfile(path):
        raise DatabaseUnreadable(f"{path} is not a file (a folder?)")
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                                 "type = 'table'")}
        finally:
            conn.close()
    except apsw.Error as e:
        raise DatabaseUnreadable(f"{path} is not a readable SQLite database "
                                 f"({type(e).__name__}: {e}); it was not changed") from None
    if tables and "_rs_meta" not in tables:
        what = ("a hub store" if {"hub_epochs", "hub_batches"} <= tables
                else "a database of something else")
        raise NotNodeDatabase(f"{path} is {what}, not a riversync node database "
                              f"(tables {', '.join(sorted(tables)[:5])}...); it was not "
                              "changed")
    return not tables


def read_identity(conn: apsw.Connection, keys: Iterable[str] = ()) -> dict | None:
    """Who a node database belongs to, for a file opened read-only (a backup being checked
    before a restore; ``Store.open`` would migrate and write).

    Returns ``node_id``, ``meta`` (the node-level keys ``keys`` as ``Store.meta_get`` names
    them; None where unset) and ``nodes`` (every origin it holds events of), or None when
    the file is not a riversync node database.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "_rs_meta" not in tables:
        return None
    keys = list(keys)
    wanted = ["node_id", *("x:" + k for k in keys)]
    meta = dict(conn.execute(
        f"SELECT key, value FROM _rs_meta WHERE key IN ({','.join('?' * len(wanted))})",
        wanted))
    nodes = ({r[0] for r in conn.execute("SELECT DISTINCT node FROM _rs_origins")}
             if "_rs_origins" in tables else set())
    return {"node_id": meta.get("node_id"), "meta": {k: meta.get("x:" + k) for k in keys},
            "nodes": nodes}


def _meta(conn, key):
    for (v,) in conn.execute("SELECT value FROM _rs_meta WHERE key=?", (key,)):
        return v
    return None


def _meta_set(conn, key, value) -> None:
    conn.execute("INSERT INTO _rs_meta(key, value) VALUES (?,?) ON CONFLICT(key)"
                 " DO UPDATE SET value=excluded.value", (key, value))


def _one(conn, sql, args=()):
    for row in conn.execute(sql, args):
        return row[0]
    return None


def _first(conn, sql, args=()):
    for row in conn.execute(sql, args):
        return row
    return None


def _ensure_tables(conn, schema: Schema) -> None:
    for t in schema.tables.values():
        conn.execute(create_table_sql(t))
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({q(t.name)})")}
        for c in t.columns.values():
            if c.name not in have:
                from .schema import SQL_TYPES

                conn.execute(f"ALTER TABLE {q(t.name)} ADD COLUMN {q(c.name)} {SQL_TYPES[c.type]}")


class _Apply:
    """One apply inside an open transaction: ``ingest`` events, then ``finish``."""

    def __init__(self, store: Store, source: str | None):
        self.s = store
        self.conn = store.conn
        self.schema = store.schema
        self.rules = store.rules
        self.source = source
        self.result = ApplyResult()
        self.rows: dict[tuple[str, str], _Row | None] = {}
        self.slow: set[tuple[str, str]] = set()
        self.touched: set[tuple[str, str]] = set()
        self.new_origins: set[tuple[str, int]] = set()
        self.jid_range: tuple[int | None, int] = (None, 0)
        self.pend: dict[tuple[str, str], list] = {}  # row -> [in_table, live, full, changes]

    # -- row summaries

    def _load(self, keys) -> None:
        want: dict[str, list[str]] = {}
        rows = self.rows
        for k in keys:
            if k not in rows:
                want.setdefault(k[0], []).append(k[1])
        tables = self.schema.tables
        while want:
            nxt: dict[str, list[str]] = {}
            for tbl, pks in want.items():
                for pk in pks:
                    rows[(tbl, pk)] = None
                t = tables.get(tbl)
                ptbl = t.parent_table if t is not None else None
                for pk, known, live, created, owner0, tr, ppk, mh, mn, me, jids in self.conn.execute(
                        "SELECT pk, known, live, created, owner0, transfers, ppk, mh, mn, me, jids"
                        " FROM _rs_rows WHERE tbl=? AND pk IN (SELECT value FROM json_each(?))",
                        (tbl, json.dumps(pks))):
                    a = array("q")
                    a.frombytes(jids)
                    rows[(tbl, pk)] = _Row(bool(known), bool(live), bool(created), owner0,
                                           _unpack_transfers(tr), ppk,
                                           (mh, mn, me) if mh is not None else None, a)
                    if ppk is not None and ptbl and (ptbl, ppk) not in rows:
                        nxt.setdefault(ptbl, []).append(ppk)
            want = nxt

    def owner_at(self, tbl: str, pk: str, k) -> str | None:
        key = (tbl, pk)
        if key not in self.rows:
            self._load((key,))
        r = self.rows[key]
        if r is None or not r.known:
            return None
        t = self.schema.tables[tbl]
        if t.parent_table:
            return self.owner_at(t.parent_table, r.ppk, k)
        return merge.owner_at(r.owner0, r.transfers, k)

    # -- ingest: journal + fast path

    def ingest(self, events: list) -> None:
        res = self.result
        res.received += len(events)
        if not events:
            return
        conn = self.conn
        fresh = self._dedup(events)
        res.duplicates += len(events) - len(fresh)
        if not fresh:
            return
        schema = self.schema
        tables = schema.tables
        need = set()
        for ev in fresh:
            need.add((ev.table, ev.pk))
            self.new_origins.add((ev.node, ev.epoch))
            t = tables.get(ev.table)
            if t is not None and t.references and ev.kind != DELETE and ev.kind != TRANSFER:
                need.update(merge.ref_waits(ev, t))
        self._load(need)
        top = _first(conn, "SELECT jid, chain FROM _rs_journal ORDER BY jid DESC LIMIT 1")
        jid, prev = top if top else (0, ZERO)  # the last row of every apply holds its link
        first_jid = jid + 1
        src = self.source
        src_b = (src or "").encode()
        seg = hashlib.sha256()
        enc = _enc.encode
        static = merge.static_verdict
        version = schema.version
        rules = self.rules
        rows = self.rows
        slow = self.slow
        touched = self.touched
        pend = self.pend
        judge = merge.judge
        actors: dict = {}  # (user, node, admin flag) -> (acting office, is an override)
        journal = []
        statuses = []
        journal_add = journal.append
        seg_update = seg.update
        rows_get = rows.get
        tables_get = tables.get
        fast_types = self.s.fast_types
        for ev in fresh:
            jid += 1
            body = enc(ev)
            seg_update(body + src_b if src_b else body)
            kind = ev.kind
            tbl = ev.table
            pk = ev.pk
            key = (tbl, pk)
            journal_add((jid, ev.node, ev.epoch, ev.seq, ev.hlc, kind, tbl, pk, src, body, None))
            touched.add(key)  # a parked resolve may wait for this very event
            r = rows_get(key)
            if r is None:
                r = rows[key] = _Row(False, False, False, None, [], None, None, array("q"))
            r.jids.append(jid)
            r.dirty = True
            t = tables_get(tbl)
            # The common checks inline (every value's type is one its column takes without
            # a closer look); check_values() decides whenever anything is unusual.
            bad = t is None or ev.schema > version or len(pk) > t.max_pk_chars
            if not bad and kind in VALUED:
                ok_types = fast_types[tbl]
                for name, value in ev.values.items():
                    tp = type(value)
                    ok = ok_types.get(name)
                    if ok is None or tp not in ok or (
                            tp is int and not _INT_MIN <= value <= _INT_MAX) or (
                            tp is str and len(value) > _MAX_TEXT):
                        bad = True
                        break
                if bad or (kind == CREATE and t.required_columns):
                    bad = t.check_values(ev.values, creating=kind == CREATE) is not None
            if bad:
                v = static(ev, schema)
                statuses.append((jid, tbl, pk, v.status, v.cause, None, None))
                continue
            if key in slow:
                continue
            if kind == TRANSFER or kind == RESOLVE:
                slow.add(key)
                continue
            if t.references and kind != DELETE:
                missing = None
                for ref in merge.ref_waits(ev, t):
                    rr = rows_get(ref)
                    if rr is None or not rr.known:
                        missing = ref
                        break
                if missing is not None:
                    statuses.append((jid, tbl, pk, merge.PARKED,
                                     f"{merge.MISSING_REF}: {missing[0]} {missing[1]!r}",
                                     missing[0], missing[1]))
                    continue
            k = (ev.hlc, ev.node, ev.epoch)
            pcol = t.parent_column
            akey = (ev.user, ev.node, ev.admin)
            actor = actors.get(akey)
            if actor is None:
                actor = actors[akey] = (rules.acting_office(ev), rules.overrides(ev))
            if not r.known:
                if kind != CREATE:
                    statuses.append((jid, tbl, pk, merge.PARKED, merge.ROW_NOT_KNOWN, tbl, pk))
                    continue
                if len(r.jids) > 1:  # events of this row wait for it: fold them all at once
                    slow.add(key)
                    continue
                r.known = True
                if pcol:
                    r.ppk = ev.values[pcol]
                    owner = self.owner_at(t.parent_table, r.ppk, k)
                else:
                    owner = r.owner0 = actor[0]
                p = pend.get(key)
                if p is None:
                    p = pend[key] = [False, False, False, {}]
            else:
                if k <= r.key:
                    slow.add(key)
                    continue
                owner = self.owner_at(t.parent_table, r.ppk, k) if pcol else r.owner
                p = pend.get(key)
                if p is None:
                    p = pend[key] = [r.live, r.live, False, {}]
            pok = kind == DELETE or pcol is None or merge.parent_ok(t, ev.values, r.ppk)
            auth = actor[1] or (owner is not None and actor[0] == owner)
            r.key = k
            # judge() inline for the common case; it names the cause otherwise.
            if not (auth and pok and (r.live if kind == UPDATE else
                                      r.created if kind == DELETE else True)):
                v = judge(kind, authorised=auth, live=r.live, created_before=r.created,
                          parent_ok=pok)
                statuses.append((jid, tbl, pk, v.status, v.cause, None, None))
                continue
            if kind == CREATE:
                r.live = r.created = True
                p[1] = p[2] = True
                row = t.defaults.copy()
                row.update(ev.values)
                p[3] = row
            elif kind == UPDATE:
                p[3].update(ev.values)
            else:
                r.live = False
                p[1] = p[2] = False
                p[3] = {}
        # One chain link per apply: the hash of the previous link and of this apply's events.
        journal[-1] = (*journal[-1][:-1], _link(prev, seg.digest()))
        self.jid_range = (self.jid_range[0] or first_jid, jid)
        conn.executemany("INSERT INTO _rs_journal VALUES (?,?,?,?,?,?,?,?,?,?,?)", journal)
        conn.execute("INSERT INTO _rs_ids SELECT node, epoch, seq, jid FROM _rs_journal"
                     " WHERE jid >= ?", (first_jid,))
        if statuses:
            conn.executemany(
                "INSERT OR REPLACE INTO _rs_status(jid, tbl, pk, status, cause, wtbl, wpk)"
                " VALUES (?,?,?,?,?,?,?)", statuses)

    def _dedup(self, events: list) -> list:
        conn = self.conn
        by_origin: dict[tuple[str, int], list] = {}
        for ev in events:
            by_origin.setdefault((ev.node, ev.epoch), []).append(ev)
        fresh = []
        for (node, epoch), evs in by_origin.items():
            contig = _one(conn, "SELECT contiguous FROM _rs_origins WHERE node=? AND epoch=?",
                          (node, epoch)) or 0
            above = [e.seq for e in evs if e.seq > contig]
            held = set()
            if above:
                held = {r[0] for r in conn.execute(
                    "SELECT seq FROM _rs_ids WHERE node=? AND epoch=? AND seq BETWEEN ? AND ?",
                    (node, epoch, min(above), max(above)))}
            for e in evs:
                if e.seq <= contig or e.seq in held:
                    continue
                held.add(e.seq)
                fresh.append(e)
        if len(by_origin) > 1:
            order = {id(e): i for i, e in enumerate(events)}
            fresh.sort(key=lambda e: order[id(e)])
        return fresh

    def _flush(self) -> None:
        """Write the fast path's gathered row effects and the dirty row summaries."""
        pend = self.pend
        if pend:
            self._write_pending(pend)
            self.pend = {}
        params = []
        add = params.append
        none3 = (None, None, None)
        slow = self.slow
        unasked = self.s.unasked_tables
        for (tbl, pk), r in self.rows.items():
            if r is not None and r.dirty:
                if tbl in unasked and (tbl, pk) in slow:
                    continue  # recomputed next from this copy, and written then
                tr = r.transfers
                add((tbl, pk, r.known, r.live, r.created, r.owner0,
                     _pack_transfers(tr) if tr else None, r.ppk, *(r.key or none3),
                     r.jids.tobytes()))
                r.dirty = False
        if params:
            self.conn.executemany(
                "INSERT OR REPLACE INTO _rs_rows(tbl, pk, known, live, created, owner0,"
                " transfers, ppk, mh, mn, me, jids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", params)

    def _write_pending(self, pend: dict) -> None:
        conn = self.conn
        tables = self.schema.tables
        inserts: dict[str, list] = {}
        deletes: dict[str, list] = {}
        updates: dict[tuple[str, tuple], list] = {}
        getters = self.s.row_getters
        for (tbl, pk), (in_table, live, full, changes) in pend.items():
            if live:
                if not in_table:
                    ins = inserts.get(tbl)
                    if ins is None:
                        ins = inserts[tbl] = []
                    ins.append((pk, *getters[tbl](changes)))
                elif changes:
                    if full:
                        cols = tuple(tables[tbl].columns)
                        vals = getters[tbl](changes)
                    else:
                        cols = tuple(sorted(changes))
                        vals = [changes[c] for c in cols]
                    updates.setdefault((tbl, cols), []).append((*vals, pk))
            elif in_table:
                deletes.setdefault(tbl, []).append((pk,))
        for tbl, params in deletes.items():
            t = tables[tbl]
            conn.executemany(f"DELETE FROM {q(tbl)} WHERE {q(t.primary_key)}=?", params)
        for tbl, params in inserts.items():
            t = tables[tbl]
            marks = ",".join("?" * (len(t.columns) + 1))
            conn.executemany(f"INSERT INTO {q(tbl)} VALUES ({marks})", params)
        for (tbl, cols), params in updates.items():
            t = tables[tbl]
            sets = ", ".join(f"{q(c)}=?" for c in cols)
            conn.executemany(f"UPDATE {q(tbl)} SET {sets} WHERE {q(t.primary_key)}=?", params)

    # -- finish: recompute, retry parked, version vector

    def finish(self) -> None:
        self._flush()
        conn = self.conn
        done: set[tuple[str, str]] = set()
        newly_known: set[tuple[str, str]] = set()
        self._run(list(self.slow), done, newly_known)
        # Only a known row can release what waits for it (a missing reference, "row not
        # known", a resolve whose conflict was not held): a row still unknown releases
        # nothing, so its waiting events are not folded again for nothing.
        rows = self.rows
        pending = None  # built only when some event waits at all (the common case: none)
        while _one(conn, "SELECT EXISTS(SELECT 1 FROM _rs_status WHERE wtbl IS NOT NULL)"):
            if pending is None:
                pending = {k for k in self.touched | done
                           if (r := rows.get(k)) is not None and r.known}
            if not pending:
                break
            retry = [tuple(r) for r in conn.execute(
                "SELECT DISTINCT tbl, pk FROM _rs_status WHERE wtbl IS NOT NULL AND"
                " (wtbl, wpk) IN (SELECT value->>0, value->>1 FROM json_each(?))",
                (json.dumps([list(p) for p in pending]),))]
            if not retry:
                break
            newly_known = set()
            self._run(retry, set(), newly_known)
            pending = newly_known
        self._advance_origins()
        self._count()

    def _count(self) -> None:
        """Final verdicts of this apply's new events (after recomputes and retries)."""
        res = self.result
        lo, hi = self.jid_range
        if lo is None:
            return
        counts = dict(self.conn.execute(
            "SELECT status, count(*) FROM _rs_status WHERE jid BETWEEN ? AND ? GROUP BY status",
            (lo, hi)))
        res.conflicts = counts.get(merge.CONFLICT, 0)
        res.parked = counts.get(merge.PARKED, 0)
        res.rejected = counts.get(merge.REJECTED, 0)
        res.applied = (hi - lo + 1) - sum(counts.values())
        res.conflict_ids = [merge.conflict_id(tuple(r)) for r in self.conn.execute(
            "SELECT j.node, j.epoch, j.seq FROM _rs_status s JOIN _rs_journal j USING (jid)"
            " WHERE s.jid BETWEEN ? AND ? AND s.status='conflict' ORDER BY s.jid", (lo, hi))]

    def _run(self, queue: list, done: set, newly_known: set) -> None:
        """Recompute the queued rows, a set at a time, then the children of any row whose
        owner history changed."""
        while queue:
            batch = [k for k in dict.fromkeys(queue) if k not in done]
            queue = []
            done.update(batch)
            self.result.recomputed_rows += len(batch)
            for key, was_known, now_known, owners_changed in self._recompute_many(batch):
                if now_known and not was_known:
                    newly_known.add(key)
                if owners_changed:
                    for child in self.schema.children_of(key[0]):
                        for (cpk,) in self.conn.execute(
                                "SELECT pk FROM _rs_rows WHERE ppk=? AND tbl=? AND known",
                                (key[1], child.name)):
                            done.discard((child.name, cpk))
                            queue.append((child.name, cpk))

    def _recompute_many(self, keys: list) -> list:
        """Fold each row from its journal (``merge.fold_row``) and write the results."""
        conn = self.conn
        tables = self.schema.tables
        by_table: dict[str, list[str]] = {}
        for tbl, pk in keys:
            if tbl in tables:
                by_table.setdefault(tbl, []).append(pk)
        olds = {}
        all_jids: list[int] = []
        rows = self.rows
        for tbl, pks in list(by_table.items()):
            # A row kept back by _flush: its summary is here, not yet in the database.
            rest = []
            for pk in pks:
                r = rows.get((tbl, pk))
                if r is not None and r.dirty:
                    olds[(tbl, pk)] = (r.known, r.live, r.owner0, _pack_transfers(r.transfers),
                                       r.jids)
                    all_jids.extend(r.jids)
                else:
                    rest.append(pk)
            by_table[tbl] = rest
        for tbl, pks in by_table.items():
            if not pks:
                continue
            for pk, known, live, owner0, tr, blob in conn.execute(
                    "SELECT pk, known, live, owner0, transfers, jids FROM _rs_rows WHERE tbl=?"
                    " AND pk IN (SELECT value FROM json_each(?))", (tbl, json.dumps(pks))):
                jids = array("q")
                jids.frombytes(blob)
                olds[(tbl, pk)] = (bool(known), bool(live), owner0, tr, jids)
                all_jids.extend(jids)
        if not olds:
            return []
        bodies = dict(conn.execute(
            "SELECT jid, body FROM _rs_journal WHERE jid IN (SELECT value FROM json_each(?))",
            (json.dumps(all_jids),)))
        decode = _ev_dec.decode
        out_rows = []
        status_del = []
        status_ins = []
        row_params = []
        inserts: dict[str, list] = {}
        updates: dict[str, list] = {}
        deletes: dict[str, list] = {}
        results = []
        for key, (was_known, was_live, owner0, tr, jids) in olds.items():
            tbl, pk = key
            t = tables[tbl]
            events = []
            by_id = {}
            for jid in jids:
                ev = decode(bodies[jid])
                events.append(ev)
                by_id[ev.event_id] = jid
            out = merge.fold_row(t, pk, events, self.rules, self._known_db, self._owner_db)
            status_del.append((tbl, pk, RESEQUENCED))
            for eid, v in out.verdicts.items():
                if v.accepted:
                    continue
                closed = out.closed.get(eid)
                status_ins.append((by_id[eid], tbl, pk, v.status, v.cause,
                                   v.wait[0] if v.wait else None, v.wait[1] if v.wait else None,
                                   merge.conflict_id(closed[0]) if closed else None,
                                   closed[1] if closed else None))
            if out.live:
                vals = [out.values[c] for c in t.columns]
                if was_live:
                    updates.setdefault(tbl, []).append((*vals, pk))
                else:
                    inserts.setdefault(tbl, []).append((pk, *vals))
            elif was_live:
                deletes.setdefault(tbl, []).append((pk,))
            created = out.created
            transfers = _pack_transfers(out.transfers)
            row_params.append((tbl, pk, out.known, out.live, created, out.owner0, transfers,
                               out.ppk, *(out.max_key or (None, None, None)), jids.tobytes()))
            r = _Row(out.known, out.live, created, out.owner0, out.transfers, out.ppk,
                     out.max_key, jids)
            self.rows[key] = r
            out_rows.append(key)
            changed = (owner0, tr) != (out.owner0, transfers)
            results.append((key, was_known, out.known, out.known and (changed or not was_known)))
        conn.executemany("DELETE FROM _rs_status WHERE tbl=? AND pk=? AND status != ?",
                         status_del)
        if status_ins:
            conn.executemany(
                "INSERT OR REPLACE INTO _rs_status(jid, tbl, pk, status, cause, wtbl, wpk,"
                " closed_by, decision) VALUES (?,?,?,?,?,?,?,?,?)", status_ins)
        for tbl, params in deletes.items():
            conn.executemany(f"DELETE FROM {q(tbl)} WHERE {q(tables[tbl].primary_key)}=?",
                             params)
        for tbl, params in inserts.items():
            marks = ",".join("?" * (len(tables[tbl].columns) + 1))
            conn.executemany(f"INSERT INTO {q(tbl)} VALUES ({marks})", params)
        for tbl, params in updates.items():
            t = tables[tbl]
            sets = ", ".join(f"{q(c)}=?" for c in t.columns)
            conn.executemany(f"UPDATE {q(tbl)} SET {sets} WHERE {q(t.primary_key)}=?", params)
        conn.executemany(
            "INSERT OR REPLACE INTO _rs_rows(tbl, pk, known, live, created, owner0, transfers,"
            " ppk, mh, mn, me, jids) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row_params)
        return results

    def _known_db(self, tbl: str, pk: str) -> bool:
        return bool(_one(self.conn, "SELECT known FROM _rs_rows WHERE tbl=? AND pk=?", (tbl, pk)))

    def _owner_db(self, tbl: str, pk: str, k) -> str | None:
        r = _first(self.conn, "SELECT owner0, transfers, ppk FROM _rs_rows WHERE tbl=? AND pk=?"
                              " AND known", (tbl, pk))
        if r is None:
            return None
        t = self.schema.tables[tbl]
        if t.parent_table:
            return self._owner_db(t.parent_table, r[2], k)
        return merge.owner_at(r[0], _unpack_transfers(r[1]), k)

    def _advance_origins(self) -> None:
        conn = self.conn
        for node, epoch in self.new_origins:
            contig = _one(conn, "SELECT contiguous FROM _rs_origins WHERE node=? AND epoch=?",
                          (node, epoch))
            if contig is None:
                contig = 0
                conn.execute("INSERT INTO _rs_origins(node, epoch) VALUES (?,?)", (node, epoch))
            start = contig
            for (seq,) in conn.execute(
                    "SELECT seq FROM _rs_ids WHERE node=? AND epoch=? AND seq>? ORDER BY seq",
                    (node, epoch, contig)):
                if seq != contig + 1:
                    break
                contig = seq
            if contig != start:
                conn.execute("UPDATE _rs_origins SET contiguous=? WHERE node=? AND epoch=?",
                             (contig, node, epoch))
