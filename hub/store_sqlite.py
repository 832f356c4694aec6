"""The embedded hub store: one SQLite file through apsw, WAL mode.

Theory of operation:

- ``hub_batches.seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``.  A plain rowid would hand
  the number of a deleted newest row out again, and a node whose cursor already passed
  it would never see the new batch (case C15b).  AUTOINCREMENT keeps the high-water mark
  in ``sqlite_sequence``, which is also what ``head()`` reports.
- ``synchronous=FULL``: in WAL mode, NORMAL does not fsync the log at each commit, so a
  power cut could lose a batch the hub had already acknowledged.  The hub acknowledges
  only after ``push_many`` returns, so every commit must reach the disk first; group
  commit (many pushes per transaction, see ``hub/writer.py``) pays the fsync once per group.
- ``hub_chain`` keeps (origin, batch number) -> hash for every batch ever stored, even
  after its bytes are pruned, so a late retry is still recognised as a duplicate.
  ``hub_origins`` is each origin's chain head.
- Writes go through one connection guarded by a lock; each reading thread has its own
  connection, so pulls never wait for an fsync.
- Prunes: ``hub_prunes`` has one row per prune that moved the horizon (the highest hub
  sequence deleted), written in the delete's transaction.  It lives in the database, so a
  hub backup carries the prunes its rows reflect and a restored hub knows what it lacks;
  ``read_page`` checks it in the snapshot it reads from (see ``hub/store.py``).
- ``hub_schemas``: per schema version, the first digest a node's hello stated (see
  ``Hub.hello``).  In the database, so it survives a restart and travels in hub backups.
- Epochs: on open, a restore marker (written by ``restore_store``) or a head watermark
  file that is ahead of the database (a copy restored by hand) starts a new hub epoch
  whose restore point is the restored head.  See docs/reference/hub.md, "Hub epochs".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import apsw

from riversync.protocol import chain
from riversync.protocol.errors import CursorAhead, ProtocolError
from riversync.protocol.messages import OriginState

from .epoch import start_for
from .restore_check import check_hub_backup, move_aside, stamp_cluster
from .store import (
    CursorInfo,
    EpochInfo,
    Page,
    PruneHorizon,
    PruneResult,
    PulledBatch,
    PushItem,
    PushResult,
    SchemaRegistration,
    cursor_pruned,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS hub_epochs(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch INTEGER NOT NULL UNIQUE,
    restore_point INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub_batches(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    n INTEGER NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    hash BLOB NOT NULL,
    stored_ms INTEGER NOT NULL,
    envelope BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS hub_chain(
    node TEXT NOT NULL, epoch INTEGER NOT NULL, n INTEGER NOT NULL,
    hash BLOB NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY(node, epoch, n)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hub_origins(
    node TEXT NOT NULL, epoch INTEGER NOT NULL,
    batches INTEGER NOT NULL, last_seq INTEGER NOT NULL, last_hash BLOB NOT NULL,
    last_push_ms INTEGER NOT NULL,
    PRIMARY KEY(node, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hub_cursors(
    node TEXT PRIMARY KEY, hub_epoch INTEGER NOT NULL, cursor INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hub_schemas(
    version INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    node TEXT NOT NULL,
    registered_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hub_prunes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    upto INTEGER NOT NULL,
    hub_epoch INTEGER NOT NULL,
    pruned_ms INTEGER NOT NULL,
    removed INTEGER NOT NULL);
"""

BUSY_TIMEOUT_MS = 10_000  # ms; a backup or prune from another process may hold the lock briefly
RESTORE_MARKER = "restore_pending"


class StoreLockedError(Exception):
    """Another hub process already serves this database."""


def _connect(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.setbusytimeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextlib.contextmanager
def _txn(conn: apsw.Connection):
    """One write transaction.  Unlike ``with conn``, this survives SQLite having already
    rolled back by itself (it does on SQLITE_FULL), so the caller sees the real error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise


def watermark_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".head")


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


class SqliteHubStore:
    """The default ``HubStore``.  Open with ``SqliteHubStore.open(path, new_epoch, now_ms)``."""

    def __init__(self, path: Path, conn: apsw.Connection):
        self.path = path
        self._w = conn
        self._wlock = threading.Lock()
        self._local = threading.local()
        self._readers: list[apsw.Connection] = []
        self._rlock = threading.Lock()
        self._lock_fd: int | None = None
        self._epoch_cache: list[EpochInfo] | None = None
        self._wm_fd: int | None = None

    # ---- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path | str, *, new_epoch: int, now_ms: int, exclusive: bool = True
    ) -> SqliteHubStore:
        """Open (or create) the store and settle its hub epoch.

        ``new_epoch`` is the random epoch to use if this open starts one (first open,
        restore marker, or a watermark ahead of the database).  ``exclusive`` takes the
        lock file that says "a hub serves this database".

        Raises:
            StoreLockedError: another hub process holds the lock.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = None
        if exclusive:
            lock_fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise StoreLockedError(f"another hub is serving {path}") from None
        conn = _connect(path)
        store = cls(path, conn)
        store._lock_fd = lock_fd
        with conn:
            conn.execute(SCHEMA)
        if exclusive:
            store._settle_epoch(new_epoch, now_ms)
        return store

    def _settle_epoch(self, new_epoch: int, now_ms: int) -> None:
        conn = self._w
        head = self.head()
        with conn:
            epochs = self.epochs()
            marker = self._meta(RESTORE_MARKER)
            reason = None
            if not epochs:
                reason = "new store"
                head = 0
            elif marker is not None:
                reason = f"restored from backup ({marker})"
            else:
                wm = _read_watermark(watermark_path(self.path))
                if wm and wm[0] == epochs[-1].epoch and wm[1] > head:
                    reason = (f"database head {head} is behind the recorded head {wm[1]}: "
                              "restored by hand")
            if reason is not None:
                conn.execute(
                    "INSERT INTO hub_epochs(epoch, restore_point, started_ms, reason) "
                    "VALUES (?, ?, ?, ?)", (new_epoch, head, now_ms, reason))
                conn.execute("DELETE FROM hub_meta WHERE key = ?", (RESTORE_MARKER,))
        self._epoch_cache = None
        self._write_watermark()

    def _meta(self, key: str):
        row = self._w.execute("SELECT value FROM hub_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _write_watermark(self) -> None:
        """Record (epoch, head) beside the database, after each commit.

        Overwritten in place at a fixed width (no rename, no truncate: on ext4 either would
        force a data flush and cost as much as the commit itself), and not fsynced.  A
        stale (lower) watermark only weakens detection; it can never make a healthy store
        look restored, because it is written after the commit it describes.
        """
        if self._wm_fd is None:
            self._wm_fd = os.open(watermark_path(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(self._wm_fd, f"{self.current_epoch().epoch:020d} {self.head():020d}\n"
                  .encode(), 0)

    def close(self) -> None:
        with self._rlock:
            for r in self._readers:
                r.close()
            self._readers.clear()
        self._w.close()
        if self._wm_fd is not None:
            os.close(self._wm_fd)
            self._wm_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- reading ---------------------------------------------------------------------

    def _r(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._rlock:
                self._readers.append(conn)
        return conn

    def epochs(self) -> list[EpochInfo]:
        if self._epoch_cache is None:
            rows = self._w.execute(
                "SELECT epoch, restore_point, started_ms, reason FROM hub_epochs ORDER BY id"
            ).fetchall()
            self._epoch_cache = [EpochInfo(*r) for r in rows]
        return list(self._epoch_cache)

    def current_epoch(self) -> EpochInfo:
        return self.epochs()[-1]

    def head(self) -> int:
        return _head(self._r())

    def origins_of(self, node: str) -> list[OriginState]:
        rows = self._r().execute(
            "SELECT epoch, batches, last_seq, last_hash FROM hub_origins WHERE node = ? "
            "ORDER BY last_push_ms, epoch", (node,)).fetchall()
        return [OriginState(epoch=e, batches=b, last_seq=s, last_hash=h) for e, b, s, h in rows]

    def read_page(self, node: str, node_epoch: int, after: int, limit: int,
                  max_bytes: int) -> Page:
        conn = self._r()
        with conn:  # one read transaction: horizon, head and rows from the same snapshot
            _check_not_pruned(conn, node, node_epoch, after)
            head = _head(conn)
            if after > head:  # [H-PULL-3]
                raise CursorAhead(f"the pull's cursor {after} is past the hub's head {head}: "
                                  "the hub never served it")
            out: list[PulledBatch] = []
            used = 0
            more = False
            cur = conn.execute(
                "SELECT seq, node, envelope, last - first + 1 FROM hub_batches "
                "WHERE seq > ? AND seq <= ? AND NOT (node = ? AND epoch = ?) ORDER BY seq",
                (after, head, node, node_epoch))
            for seq, origin, env, n_events in cur:
                if len(out) >= limit or (out and used + len(env) > max_bytes):
                    more = True
                    break
                out.append(PulledBatch(seq=seq, node=origin, envelope=env, events=n_events))
                used += len(env)
            cur.close()
        # Not more: every row up to head was returned or is the node's own, so the node
        # may jump to head.  More: resume right after the last row returned.
        cursor = out[-1].seq if more else max(after, head)
        return Page(batches=out, cursor=cursor, head=head, more=more)

    def cursors(self) -> dict[str, CursorInfo]:
        rows = self._r().execute(
            "SELECT node, hub_epoch, cursor, updated_ms FROM hub_cursors").fetchall()
        return {r[0]: CursorInfo(*r) for r in rows}

    def backlog(self, node: str, node_epoch: int, after: int) -> tuple[int, int]:
        n, ev = self._r().execute(
            "SELECT count(*), total(last - first + 1) FROM hub_batches "
            "WHERE seq > ? AND NOT (node = ? AND epoch = ?)", (after, node, node_epoch)).fetchone()
        return int(n), int(ev)

    def totals(self) -> tuple[int, int]:
        n, ev = self._r().execute(
            "SELECT count(*), total(last - first + 1) FROM hub_batches").fetchone()
        return int(n), int(ev)

    def storage_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(str(self.path) + suffix)
            except OSError:
                pass
        return total

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0

    # ---- writing ---------------------------------------------------------------------

    def push_many(self, items: list[PushItem]) -> list[PushResult | ProtocolError]:
        results: list[PushResult | ProtocolError] = []
        conn = self._w
        with self._wlock:
            with _txn(conn):
                for item in items:
                    try:
                        results.append(self._push_one(conn, item))
                    except ProtocolError as e:
                        results.append(e)
            if any(isinstance(r, PushResult) and r.status == "stored" for r in results):
                self._write_watermark()
        return results

    def _push_one(self, conn: apsw.Connection, item: PushItem) -> PushResult:
        b = item.batch
        row = conn.execute(
            "SELECT batches, last_seq, last_hash FROM hub_origins WHERE node = ? AND epoch = ?",
            (b.o, b.e)).fetchone()
        held = OriginState(epoch=b.e, batches=row[0], last_seq=row[1], last_hash=row[2]) if row else None
        hash_at_n = None
        dup_seq = 0
        if held is not None and b.n <= held.batches:
            r = conn.execute(
                "SELECT hash, seq FROM hub_chain WHERE node = ? AND epoch = ? AND n = ?",
                (b.o, b.e, b.n)).fetchone()
            if r:
                hash_at_n, dup_seq = r
        kind = chain.classify(b, item.batch_hash, held, hash_at_n)
        n_events = b.last - b.first + 1
        if kind == chain.DUPLICATE:
            return PushResult(status="duplicate", hub_seq=dup_seq, events=n_events)
        conn.execute(
            "INSERT INTO hub_batches(node, epoch, n, first, last, hash, stored_ms, envelope) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (b.o, b.e, b.n, b.first, b.last, item.batch_hash, item.now_ms, item.envelope))
        seq = conn.last_insert_rowid()
        conn.execute("INSERT INTO hub_chain(node, epoch, n, hash, seq) VALUES (?, ?, ?, ?, ?)",
                     (b.o, b.e, b.n, item.batch_hash, seq))
        conn.execute(
            "INSERT INTO hub_origins(node, epoch, batches, last_seq, last_hash, last_push_ms) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(node, epoch) DO UPDATE SET "
            "batches = excluded.batches, last_seq = excluded.last_seq, "
            "last_hash = excluded.last_hash, last_push_ms = excluded.last_push_ms",
            (b.o, b.e, b.n, b.last, item.batch_hash, item.now_ms))
        return PushResult(status="stored", hub_seq=seq, events=n_events)

    def set_cursors(self, updates: list[CursorInfo]) -> None:
        with self._wlock, _txn(self._w):
            self._w.executemany(
                "INSERT INTO hub_cursors(node, hub_epoch, cursor, updated_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(node) DO UPDATE SET hub_epoch = excluded.hub_epoch, "
                "cursor = excluded.cursor, updated_ms = excluded.updated_ms",
                [(u.node, u.hub_epoch, u.cursor, u.updated_ms) for u in updates])

    def last_pushes(self) -> dict[str, int]:
        rows = self._r().execute(
            "SELECT node, max(last_push_ms) FROM hub_origins GROUP BY node").fetchall()
        return {n: int(ms) for n, ms in rows}

    def prune_delivered(self, nodes: list[str], now_ms: int | None = None) -> PruneResult:
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        conn = self._w
        with self._wlock, _txn(conn):
            # Cursors are read inside the write transaction, so none moves under the
            # prune; a pull that reads after the commit meets the new horizon instead.
            epochs = [EpochInfo(*r) for r in conn.execute(
                "SELECT epoch, restore_point, started_ms, reason FROM hub_epochs ORDER BY id")]
            cursors = {n: (e, c) for n, e, c in conn.execute(
                "SELECT node, hub_epoch, cursor FROM hub_cursors")}
            # Where the hub would serve each node from now: a cursor of an older hub epoch
            # counts only up to the restore points since, an unknown epoch or no cursor at
            # all counts as 0 (the node has pulled nothing the hub can vouch for).
            position = {n: start_for(epochs, *cursors[n]) if n in cursors else 0
                        for n in nodes}
            upto = min(position.values(), default=0)
            held_back = tuple(sorted(n for n, p in position.items() if p == upto))
            before = _horizon(conn)
            removed = 0
            if upto > (before.upto_seq if before else 0):
                conn.execute("DELETE FROM hub_batches WHERE seq <= ?", (upto,))
                removed = conn.changes()
                conn.execute("INSERT INTO hub_prunes(upto, hub_epoch, pruned_ms, removed) "
                             "VALUES (?, ?, ?, ?)", (upto, epochs[-1].epoch, now_ms, removed))
            horizon = _horizon(conn)
        return PruneResult(removed_batches=removed, upto_seq=upto, horizon=horizon,
                           held_back_by=held_back, advanced=horizon != before)

    def prune_horizon(self) -> PruneHorizon | None:
        return _horizon(self._r())

    # ---- schema registrations ----------------------------------------------------------

    def schema_registration(self, version: int) -> SchemaRegistration | None:
        """The registration of ``version`` as a reader sees it (no write lock): a hello
        whose digest matches needs nothing more, so the common case costs one lookup."""
        return _registration(self._r(), version)

    def schema_registrations(self) -> list[SchemaRegistration]:
        rows = self._r().execute("SELECT version, digest, node, registered_ms FROM hub_schemas "
                                 "ORDER BY version").fetchall()
        return [SchemaRegistration(*r) for r in rows]

    def register_schema(self, version: int, digest: str, node: str,
                        now_ms: int) -> SchemaRegistration:
        with self._wlock, _txn(self._w):
            self._w.execute("INSERT OR IGNORE INTO hub_schemas(version, digest, node, "
                            "registered_ms) VALUES (?, ?, ?, ?)", (version, digest, node, now_ms))
            reg = _registration(self._w, version)
        assert reg is not None
        return reg

    def forget_schema(self, version: int) -> SchemaRegistration | None:
        with self._wlock, _txn(self._w):
            reg = _registration(self._w, version)
            self._w.execute("DELETE FROM hub_schemas WHERE version = ?", (version,))
        return reg


def _registration(conn: apsw.Connection, version: int) -> SchemaRegistration | None:
    row = conn.execute("SELECT version, digest, node, registered_ms FROM hub_schemas "
                       "WHERE version = ?", (version,)).fetchone()
    return SchemaRegistration(*row) if row else None


def _horizon(conn: apsw.Connection) -> PruneHorizon | None:
    row = conn.execute("SELECT upto, hub_epoch, pruned_ms FROM hub_prunes "
                       "ORDER BY upto DESC, id DESC LIMIT 1").fetchone()
    return PruneHorizon(*row) if row else None


def _check_not_pruned(conn: apsw.Connection, node: str, node_epoch: int, after: int) -> None:
    """Refuse a read from ``after`` when batches of other origins after it were pruned.

    ``hub_chain`` outlives pruning, so it still says whose batches the deleted numbers
    were: a node whose only missing batches are its own (same node epoch) lacks nothing.
    Its own batches of an older node epoch do count: a node restored from a backup needs
    them back to prove which of its old events the hub holds (N-EPOCH-4), and to get
    those the backup lacks.
    """
    horizon = _horizon(conn)
    if horizon is None or after >= horizon.upto_seq:
        return
    missing, first = conn.execute(
        "SELECT count(*), min(seq) FROM hub_chain WHERE seq > ? AND seq <= ? "
        "AND NOT (node = ? AND epoch = ?)", (after, horizon.upto_seq, node, node_epoch)
    ).fetchone()
    if missing:
        raise cursor_pruned(after, horizon, missing, first)


def _head(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hub_batches'").fetchone()
    return int(row[0]) if row else 0


def _read_watermark(p: Path) -> tuple[int, int] | None:
    try:
        epoch, head = p.read_text().split()
        return int(epoch), int(head)
    except (OSError, ValueError):
        return None


# ---- backup and restore -------------------------------------------------------------------


def backup_store(db_path: Path | str, out_path: Path | str, cluster_id: str | None = None) -> int:
    """Copy a live hub database to ``out_path`` (apsw backup API: WAL-safe, consistent).

    Returns the head of the copy.  The copy is a single file (journal_mode=DELETE), so it
    cannot be separated from a ``-wal``.  ``cluster_id`` is recorded in the copy, so a
    restore can refuse another cluster's backup (hub/restore_check.py).  An existing
    ``out_path`` is never written over: it may be the very backup a runbook restores from.

    Raises:
        FileExistsError: ``out_path`` exists (nothing was written).
    """
    db_path, out_path = Path(db_path), Path(out_path)
    if out_path.exists() or out_path.is_symlink():
        raise FileExistsError(f"{out_path} already exists")
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    src = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    src.setbusytimeout(BUSY_TIMEOUT_MS)
    dst = apsw.Connection(str(tmp))
    try:
        with dst.backup("main", src, "main") as b:
            while not b.done:
                b.step(1024)
        dst.execute("PRAGMA journal_mode=DELETE")
        if cluster_id:
            stamp_cluster(dst, cluster_id)
        head = _head(dst)
    except BaseException:
        dst.close()
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)  # nothing of a failed backup stays behind
        raise
    finally:
        dst.close()
        src.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if out_path.exists() or out_path.is_symlink():  # made meanwhile by someone else
        tmp.unlink(missing_ok=True)
        raise FileExistsError(f"{out_path} already exists")
    os.replace(tmp, out_path)
    return head


def restore_store(backup_path: Path | str, db_path: Path | str, note: str,
                  roster=None) -> tuple[int, list[Path]]:
    """Put a backup in place of the hub database and mark it so the next start is a new epoch.

    Refuses while a hub holds the database lock.  With ``roster``, first refuses a file
    that is not a sound hub store of its cluster (``check_hub_backup``).  The old store and
    its ``-wal``/``-shm`` are moved to ``<db>.pre-restore-<time>`` (never deleted), so the
    ``-wal`` cannot be replayed over the restored file (case C21).  Returns the restored
    head and the paths the old files were moved to.

    Raises:
        StoreLockedError: a hub is serving the database.
        HubRestoreRefused: damaged, not a hub store, or another cluster's (nothing touched).
        apsw.Error: the backup is not a readable hub database.
    """
    backup_path, db_path = Path(backup_path), Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLockedError(f"a hub is serving {db_path}; stop it first") from None
        if roster is not None:
            check_hub_backup(backup_path, roster)
        tmp = db_path.with_name(db_path.name + ".restoring")
        tmp.unlink(missing_ok=True)
        shutil.copyfile(backup_path, tmp)
        try:
            conn = apsw.Connection(str(tmp))
            try:
                conn.execute("PRAGMA journal_mode=DELETE")
                n = conn.execute("SELECT count(*) FROM hub_epochs").fetchone()[0]
                if not n:
                    raise apsw.SQLError(f"{backup_path} holds no hub epoch: not a hub database")
                with conn:
                    conn.execute("INSERT OR REPLACE INTO hub_meta(key, value) VALUES (?, ?)",
                                 (RESTORE_MARKER, note))
                head = _head(conn)
            finally:
                conn.close()
        except BaseException:
            tmp.unlink(missing_ok=True)  # nothing of a failed restore stays behind
            raise
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        moved = move_aside(db_path, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        os.replace(tmp, db_path)
        dfd = os.open(db_path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return head, moved
    finally:
        os.close(fd)
