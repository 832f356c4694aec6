"""What ``riversync hub restore`` checks before it replaces the hub store.

Theory of operation.  A restore puts the backup in place of ``hub.db``; a wrong file
found out only when the hub next starts leaves a hub with the wrong history (a node's
database has no hub tables; another cluster's hub store holds batches no node of this
cluster can verify).  So the file is read here first, through a read-only connection,
and refused with a stable code before the live store is touched:

- ``RESTORE_DAMAGED``: not a readable SQLite file, or it fails ``PRAGMA integrity_check``.
- ``RESTORE_NOT_HUB_DB``: sound, but no hub store (a node backup, or another database).
- ``RESTORE_WRONG_CLUSTER``: a hub store of another cluster.  ``riversync hub backup``
  records the cluster id in the copy (``stamp_cluster``); a copy without it (taken by
  hand, or by an older release) is judged by the cluster id inside the signed batches it
  holds, and else by the node names of its origins and cursors, which must all be in
  this cluster's roster.
"""

from __future__ import annotations

from pathlib import Path

import apsw

from riversync.protocol import codec
from riversync.protocol.errors import ProtocolError
from riversync.protocol.messages import Envelope

META_CLUSTER = "cluster_id"  # hub_meta key, written into backups by ``stamp_cluster``
HUB_TABLES = ("hub_meta", "hub_epochs", "hub_batches", "hub_origins", "hub_cursors")
ENVELOPES_READ = 20  # stored batches read for their cluster id: one disagreeing is enough


class HubRestoreRefused(Exception):
    """The file is not a sound hub store of this cluster; nothing was touched."""

    def __init__(self, code: str, message: str, hint: str):
        super().__init__(message)
        self.code = code
        self.hint = hint


def stamp_cluster(conn: apsw.Connection, cluster_id: str) -> None:
    """Record ``cluster_id`` in a hub store (a backup copy) unless it records one already."""
    with conn:
        conn.execute("INSERT OR IGNORE INTO hub_meta(key, value) VALUES (?, ?)",
                     (META_CLUSTER, cluster_id))


def check_hub_backup(path: Path, roster) -> dict:
    """Refuse ``path`` unless it is a sound hub store of ``roster``'s cluster.

    Returns ``cluster_checked``: how the cluster was matched (``recorded``, ``signed
    batches`` or ``roster names``).

    Raises:
        HubRestoreRefused: RESTORE_DAMAGED, RESTORE_NOT_HUB_DB or RESTORE_WRONG_CLUSTER.
    """
    path = Path(path)
    pick = "pick a backup made by `riversync hub backup` of this cluster's hub"
    if not path.is_file() or path.stat().st_size == 0:
        raise HubRestoreRefused("RESTORE_DAMAGED", f"{path} is missing or empty",
                                "check the path; " + pick)
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as e:
        raise HubRestoreRefused("RESTORE_DAMAGED", f"{path} cannot be opened: {e}",
                                pick) from None
    try:
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except apsw.Error as e:
            raise HubRestoreRefused("RESTORE_DAMAGED", f"{path} is not a readable SQLite "
                                    f"database: {e}", pick) from None
        if check != ["ok"]:
            raise HubRestoreRefused("RESTORE_DAMAGED", f"{path} fails the integrity check: "
                                    f"{'; '.join(check[:3])}", pick)
        missing = [t for t in HUB_TABLES if t not in tables]
        epochs = 0 if missing else conn.execute("SELECT count(*) FROM hub_epochs").fetchone()[0]
        if missing or not epochs:
            node = _node_of(conn, tables)
            why = (f"it is a database of node {node!r}" if node else
                   f"it has no table {missing[0]}" if missing else "it records no hub epoch")
            raise HubRestoreRefused(
                "RESTORE_NOT_HUB_DB", f"{path.name} is not a hub store backup: {why}",
                ("restore a node backup with `riversync restore -c NODE.toml`; "
                 if node else "") + pick)
        return _check_cluster(conn, path, roster, pick)
    finally:
        conn.close()


def _node_of(conn: apsw.Connection, tables: set[str]) -> str | None:
    if "_rs_meta" not in tables:
        return None
    row = conn.execute("SELECT value FROM _rs_meta WHERE key = 'node_id'").fetchone()
    return str(row[0]) if row else None


def _check_cluster(conn: apsw.Connection, path: Path, roster, pick: str) -> dict:
    cluster = roster.cluster_id
    row = conn.execute("SELECT value FROM hub_meta WHERE key = ?", (META_CLUSTER,)).fetchone()
    recorded = str(row[0]) if row else None
    if recorded is not None and recorded != cluster:
        raise HubRestoreRefused(
            "RESTORE_WRONG_CLUSTER", f"{path.name} is a hub backup of cluster {recorded!r}, "
            f"not of this cluster {cluster!r}", pick)
    signed: set[str] = set()
    for (blob,) in conn.execute("SELECT envelope FROM hub_batches ORDER BY seq DESC LIMIT ?",
                                (ENVELOPES_READ,)):
        try:
            signed.add(codec.decode(bytes(blob), Envelope).c)
        except ProtocolError:
            continue  # the hub stored only what verified; a broken one says nothing here
    if signed - {cluster}:
        other = sorted(signed - {cluster})[0]
        raise HubRestoreRefused(
            "RESTORE_WRONG_CLUSTER", f"{path.name} holds batches signed for cluster "
            f"{other!r}: it is a hub backup of another cluster, not of {cluster!r}", pick)
    names = {r[0] for r in conn.execute(
        "SELECT node FROM hub_origins UNION SELECT node FROM hub_cursors")}
    strangers = sorted(names - set(roster.nodes))
    if strangers:
        raise HubRestoreRefused(
            "RESTORE_WRONG_CLUSTER", f"{path.name} holds node(s) "
            f"{', '.join(map(repr, strangers))} that cluster {cluster!r} does not list: "
            "it is a hub backup of another cluster", pick)
    return {"cluster_checked": "recorded" if recorded else
            "signed batches" if signed else "roster names"}


def move_aside(db_path: Path, stamp: str) -> list[Path]:
    """Move the live store and its ``-wal``/``-shm`` to ``<db>.pre-restore-<stamp>``.

    Kept, never deleted, as a node restore keeps its database: the previous store is the
    way back from a wrong restore.  The ``-wal`` moves with its database (SQLite finds it
    by name), so frames committed before the restore stay with the store they belong to
    and can never be replayed over the restored file (case C21).  A counter is added when
    a restore in the same second already used the name.
    """
    suffixes = ("", "-wal", "-shm")
    n = 0
    while True:
        base = db_path.with_name(f"{db_path.name}.pre-restore-{stamp}" + (f".{n}" if n else ""))
        if not any(Path(str(base) + s).exists() for s in suffixes):
            break
        n += 1
    moved = []
    for s in suffixes:
        old = Path(str(db_path) + s)
        if old.exists():
            new = Path(str(base) + s)
            old.replace(new)
            moved.append(new)
    return moved
