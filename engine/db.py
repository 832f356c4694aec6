"""The one place that opens SQLite connections and decides how they behave.

Pragmas, chosen once here:

* ``journal_mode=WAL``: readers never block the writer, and a crash leaves the last
  committed transaction intact.
* ``foreign_keys=ON``: local tables that point at replicated rows keep their meaning.
* ``synchronous``: NORMAL by default, switched to FULL around a local commit
  (``durable=True``).  A local write the caller saw succeed must survive a power cut; it
  exists nowhere else yet.  Replay runs at NORMAL: after a power cut the database is
  still consistent and at worst rolls back the last few remote applies *together with
  their cursor*, so the node simply pulls them again.  That keeps catch-up fast.
* ``busy_timeout``: other processes (backup, CLI) may hold the lock briefly.
* ``cache_size``: 32 MiB instead of SQLite's 2 MiB, so catching up on a large table does
  not thrash (measured with ``riversync bench replay``).
* ``wal_autocheckpoint``: 8192 pages (~32 MiB).  Each checkpoint costs two fsyncs; during
  catch-up SQLite's default (1000 pages) checkpoints after nearly every apply.

Transactions: ``transaction(conn)`` is the only way engine code writes.  The outermost
call is ``BEGIN IMMEDIATE`` (take the write lock up front, so a transaction never fails
half-way on lock upgrade); nested calls become savepoints, so a helper can be atomic on
its own and still join its caller's transaction.

Migrations are named, recorded in ``_rs_migrations`` and applied once, in order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import apsw

CACHE_KIB = 32 * 1024  # page cache per connection: replay of a large table stays in memory
WAL_CHECKPOINT_PAGES = 8192  # checkpoint (two fsyncs) per ~32 MiB of WAL, not per 4 MiB
BUSY_TIMEOUT_MS = 5_000  # long enough for a backup step or a CLI read, short enough to surface a stuck lock


def connect(path: str, *, trace: bool = False) -> apsw.Connection:
    """Open (creating if needed) a database with riversync's pragmas.

    ``trace=True`` prints every statement: the debug SQL tracer.
    """
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    if trace:
        conn.exec_trace = _print_trace
    return conn


def _print_trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
    print(f"SQL: {sql.strip()} {bindings!r}")
    return True


_depth: dict[int, int] = {}


@contextlib.contextmanager
def transaction(conn: apsw.Connection, *, durable: bool = False) -> Iterator[apsw.Connection]:
    """Run the block atomically; nested calls are savepoints.

    ``durable=True`` (outermost only) commits with ``synchronous=FULL``.
    """
    key = id(conn)
    depth = _depth.get(key, 0)
    if depth == 0:
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        _depth[key] = 1
        try:
            yield conn
        except BaseException:
            _depth.pop(key, None)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            raise
        _depth.pop(key, None)
        conn.execute("COMMIT")
        if durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        return
    name = f"rs_sp{depth}"
    conn.execute(f"SAVEPOINT {name}")
    _depth[key] = depth + 1
    try:
        yield conn
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    finally:
        _depth[key] = depth
    conn.execute(f"RELEASE {name}")


Migration = tuple[str, Callable[[apsw.Connection], None]]


def migrate(conn: apsw.Connection, migrations: list[Migration]) -> list[str]:
    """Apply the named migrations not yet recorded; returns the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _rs_migrations (name TEXT PRIMARY KEY, applied INTEGER)"
    )
    done = {r[0] for r in conn.execute("SELECT name FROM _rs_migrations")}
    applied = []
    for name, step in migrations:
        if name in done:
            continue
        with transaction(conn):
            step(conn)
            conn.execute(
                "INSERT INTO _rs_migrations(name, applied) VALUES (?, strftime('%s','now'))",
                (name,),
            )
        applied.append(name)
    return applied


def integrity_ok(conn: apsw.Connection) -> bool:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    return rows == ["ok"]
