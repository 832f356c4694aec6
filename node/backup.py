"""Backups and restores of a node's database.

Theory of operation.  A backup is taken online through SQLite's backup API
(``Store.backup``), never by copying files: a file copy misses commits still in the
``-wal`` and can catch pages mid-write.  The copy is switched to ``journal_mode=DELETE``
so it is one self-contained file, checked with ``PRAGMA integrity_check``, fsynced, and
only then renamed to its final name beside a JSON manifest (SHA-256, node, epoch, state
digest).  Retention keeps the newest ``keep_last`` backups plus the newest of each of the
last ``keep_daily`` days.

A restore never writes over a database in use.  The live file and any ``-wal``/``-shm``
are moved aside (nothing is deleted) so stale WAL frames cannot be replayed over the
restored pages; the backup is copied in via a temp file, fsync and rename.  The caller
then opens the store and starts a new node epoch at once, so the restored node never
reuses a sequence number it handed out after the backup was taken.

Before anything is moved, a restore also reads who the backup belongs to
(``check_identity``, read-only): a sound file of another node (another office's backup),
of another cluster (a same-named node of another ``riversync cluster init``), or no node
database at all (a hub backup) is refused with a typed code.  Once swapped in, such a file
would only be found out when the store opens it, after the live file was already moved
aside.  The node records its cluster id in its database at every open
(``stamp_cluster``), so a backup carries it; for a backup older than that stamp the
cluster is read from the signed batches it keeps (their cluster id is inside the signed
bytes), else every node it names must be in this cluster's roster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import apsw

KEEP_LAST = 24  # newest backups always kept (a day of hourly backups)
KEEP_DAILY = 14  # plus the newest backup of each of this many days (two weeks back)
SUFFIX = ".db"
MANIFEST = ".json"


# The node-level meta key (``Store.meta_set``) of the cluster id the node recorded; the
# engine itself records only the node id.
META_CLUSTER = "node.cluster_id"
RELAY_TABLE = "_node_relay_batches"  # node/relay.py: pulled batches kept as signed
# Signed envelopes the agent keeps in its meta keys (hex), beside the relay table's.
SIGNED_META_KEYS = ("agent.push.pending", "agent.push.restored")
ENVELOPES_READ = 20  # signed batches read for their cluster id: one disagreeing is enough


class BackupError(Exception):
    """A backup or restore cannot go ahead; ``hint`` says what to do.  ``code`` is the
    stable code a refused restore reports (docs/reference/cli.md, "Restore refusals")."""

    code = "RESTORE_DAMAGED"

    def __init__(self, message: str, hint: str = "", code: str | None = None):
        super().__init__(message)
        self.hint = hint
        if code is not None:
            self.code = code


class RestoreRefused(BackupError):
    """A sound backup that is not this node's database: restoring it would put another
    office's (or cluster's) data in place of this one's.  Raised before anything moves."""


@dataclass(frozen=True)
class Retention:
    keep_last: int = KEEP_LAST
    keep_daily: int = KEEP_DAILY


def retention_for(cfg) -> Retention:
    """The node config's retention (``backup_keep_last``, ``backup_keep_daily``)."""
    return Retention(keep_last=getattr(cfg, "backup_keep_last", KEEP_LAST),
                     keep_daily=getattr(cfg, "backup_keep_daily", KEEP_DAILY))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_database(path: Path, *, self_contained: bool = False) -> None:
    """Refuse a file that is not a sound SQLite database.

    With ``self_contained`` the file (a fresh copy of our own) is also switched out of WAL
    mode, so it needs no ``-wal`` beside it; otherwise it is opened read-only, so checking
    a backup never changes it (no journal rollback, no checkpoint into it).

    Raises:
        BackupError: missing, not SQLite, or failing the integrity check.
    """
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise BackupError(f"{path} {what}", "give the path of a backup file")
    if path.stat().st_size == 0:
        raise BackupError(f"{path} is empty", "choose another backup")
    try:
        flags = (apsw.SQLITE_OPEN_READWRITE if self_contained else apsw.SQLITE_OPEN_READONLY)
        conn = apsw.Connection(str(path), flags=flags)
        try:
            if self_contained:
                conn.execute("PRAGMA journal_mode=DELETE").fetchall()
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except apsw.Error as e:
        raise BackupError(f"{path} is not a readable SQLite database: {e}",
                          "choose another backup") from None
    if result != ["ok"]:
        raise BackupError(f"{path} fails the integrity check: {'; '.join(result[:3])}",
                          "choose another backup")


def make_backup(store, backup_dir: Path, node_id: str, retention: Retention,
                now: dt.datetime | None = None) -> dict:
    """Take a verified backup of ``store`` into ``backup_dir`` and apply retention.

    Raises:
        BackupError: the copy failed verification (nothing is left behind), or a backup
            of the same name exists (never written over).
    """
    now = now or dt.datetime.now(dt.UTC)
    backup_dir.mkdir(parents=True, exist_ok=True)
    name = f"{node_id}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    final = backup_dir / (name + SUFFIX)
    tmp = backup_dir / f".{name}.tmp"
    taken = BackupError(f"{final} already exists; a backup never writes over another",
                        "take the backup again (names carry the time to the microsecond); "
                        "if it happens again, check this computer's clock")
    if final.exists():
        raise taken
    try:
        store.backup(str(tmp))
        check_database(tmp, self_contained=True)
        _fsync_path(tmp)
        digest = store.digests()
        manifest = {
            "file": final.name,
            "node_id": node_id,
            "epoch": store.epoch,
            "created_at": now.isoformat(),
            "size": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
            "state": digest.get("state"),
            "tables": digest.get("tables"),
            "events": digest.get("events"),
            "cluster_id": store.roster.cluster_id,
        }
        if final.exists():  # made meanwhile: the name is the time, never reused
            raise taken
        os.replace(tmp, final)
    finally:
        for leftover in (tmp, Path(str(tmp) + "-journal")):
            if leftover.exists():
                leftover.unlink()
    mpath = backup_dir / (name + MANIFEST)
    mtmp = backup_dir / f".{name}.json.tmp"
    mtmp.write_text(json.dumps(manifest, indent=2) + "\n")
    _fsync_path(mtmp)
    os.replace(mtmp, mpath)
    _fsync_path(backup_dir)
    manifest["path"] = str(final)
    manifest["removed"] = [str(p) for p in apply_retention(backup_dir, node_id, retention)]
    return manifest


def list_backups(backup_dir: Path, node_id: str) -> list[Path]:
    """This node's backups, oldest first (names sort by time)."""
    if not backup_dir.is_dir():
        return []
    return sorted(p for p in backup_dir.glob(f"{node_id}-*{SUFFIX}") if not p.name.startswith("."))


def _day(p: Path, node_id: str) -> str:
    return p.name[len(node_id) + 1:len(node_id) + 9]


def apply_retention(backup_dir: Path, node_id: str, retention: Retention) -> list[Path]:
    """Delete backups that neither the newest-N rule nor the one-per-day rule keeps."""
    backups = list_backups(backup_dir, node_id)
    keep = set(backups[-retention.keep_last:]) if retention.keep_last > 0 else set()
    days: dict[str, Path] = {}
    for p in backups:
        days[_day(p, node_id)] = p  # the newest of each day wins
    for day in sorted(days)[-retention.keep_daily:] if retention.keep_daily > 0 else []:
        keep.add(days[day])
    removed = []
    for p in backups:
        if p not in keep:
            p.unlink()
            m = p.with_suffix(MANIFEST)
            if m.exists():
                m.unlink()
            removed.append(p)
    return removed


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_manifest(backup: Path) -> dict:
    """The manifest beside ``backup`` (``{}`` without one), checked for the fields a
    restore relies on: a JSON object whose ``sha256`` is 64 hex digits and whose
    ``events`` (optional) maps ``node/epoch`` to an event number.

    Raises:
        BackupError: the manifest cannot be read or is not one ``riversync backup`` writes.
    """
    path = backup.with_suffix(MANIFEST)
    if not path.exists():
        return {}
    hint = (f"the manifest beside the backup is damaged; choose another backup, or move "
            f"{path.name} away to restore the file checked by SQLite alone")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BackupError(f"the manifest {path} cannot be read as JSON: {e}", hint) from None
    if not isinstance(manifest, dict):
        raise BackupError(f"the manifest {path} is not a JSON object "
                          f"(it holds a {type(manifest).__name__})", hint)
    sha = manifest.get("sha256")
    if not (isinstance(sha, str) and len(sha) == 64
            and all(c in "0123456789abcdef" for c in sha)):
        raise BackupError(f"the manifest {path} has no valid sha256 (64 hex digits); "
                          f"it holds {sha!r}"[:300], hint)
    events = manifest.get("events")
    if events is not None:
        if not isinstance(events, dict):
            raise BackupError(f"the manifest {path}: 'events' is not an object", hint)
        for origin, top in events.items():
            _, slash, epoch = str(origin).rpartition("/")
            if (not slash or not _is_int(epoch) or isinstance(top, bool)
                    or not isinstance(top, int) or top < 0):
                raise BackupError(f"the manifest {path}: 'events' entry {origin!r}: {top!r} "
                                  "is not 'node/epoch': event number"[:300], hint)
    return manifest


def verify_backup(backup: Path) -> dict:
    """Check a backup against its manifest (when there is one) and SQLite's own check.

    Raises:
        BackupError: the file changed since it was made, is not sound, or its manifest is
            damaged (RESTORE_DAMAGED, never an unhandled error).
    """
    if not backup.is_file():
        what = "is a folder, not a file" if backup.is_dir() else "does not exist"
        raise BackupError(f"{backup} {what}", "give the path of a backup file")
    manifest = read_manifest(backup)
    if manifest:
        actual = sha256_file(backup)
        if manifest["sha256"] != actual:
            raise BackupError(f"{backup} does not match its manifest (SHA-256 {actual[:12]}…, "
                              f"expected {manifest['sha256'][:12]}…)",
                              "the file was changed or damaged; choose another backup")
    check_database(backup)
    return manifest


def stamp_cluster(store, cluster_id: str) -> None:
    """Record the cluster id in the node's database once, so its backups carry it; a
    database stamped by another cluster (a file copied in by hand) is not opened for this
    one: its events and numbers mean nothing here.

    Raises:
        WrongCluster: the database belongs to another cluster.
    """
    from riversync.engine.errors import WrongCluster

    stored = store.meta_get(META_CLUSTER)
    if stored is None:
        store.meta_set(META_CLUSTER, cluster_id)
    elif stored != cluster_id:
        raise WrongCluster(f"database {store.path} belongs to cluster {stored!r}; this node's "
                           f"roster is cluster {cluster_id!r}")


def read_identity(backup: Path) -> dict:
    """Who a database file belongs to, read without changing it (a read-only connection).

    Returns ``node_id`` (None: not a riversync node database), ``cluster_id`` as recorded
    (None: not recorded), ``signed_clusters`` (cluster ids inside the signed batches it
    keeps), ``nodes`` (every node it holds events of), and ``hub`` (it is a hub store).

    Raises:
        BackupError: the file cannot be read as SQLite.
    """
    from riversync.engine.store import read_identity as engine_identity
    from riversync.protocol import codec
    from riversync.protocol.errors import ProtocolError
    from riversync.protocol.messages import Envelope

    try:
        conn = apsw.Connection(str(backup), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as e:
        raise BackupError(f"{backup} is not a readable SQLite database: {e}",
                          "choose another backup") from None
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        out: dict = {"node_id": None, "cluster_id": None, "signed_clusters": set(),
                     "nodes": set(), "hub": "hub_epochs" in tables and "hub_batches" in tables}
        found = engine_identity(conn, (META_CLUSTER, *SIGNED_META_KEYS))
        if found is None:
            return out
        meta = found["meta"]
        out["node_id"] = found["node_id"]
        out["cluster_id"] = meta[META_CLUSTER]
        out["nodes"] = found["nodes"]
        blobs = [bytes.fromhex(str(meta[k])) for k in SIGNED_META_KEYS if meta[k]]
        if RELAY_TABLE in tables:
            blobs += [r[0] for r in conn.execute(
                f"SELECT envelope FROM {RELAY_TABLE} LIMIT ?", (ENVELOPES_READ,))]
        for blob in blobs:
            try:
                out["signed_clusters"].add(codec.decode(bytes(blob), Envelope).c)
            except ProtocolError:
                continue  # an envelope the agent would refuse says nothing about the cluster
        return out
    except (apsw.Error, ValueError) as e:
        raise BackupError(f"{backup} cannot be read: {e}", "choose another backup") from None
    finally:
        conn.close()


def check_identity(backup: Path, node_id: str, roster, backup_dir: Path | None = None) -> dict:
    """Refuse a backup that is not a database of node ``node_id`` of ``roster``'s cluster.

    Returns what ``read_identity`` found, with ``cluster_checked``: how the cluster was
    matched (``recorded``, ``signed batches`` or ``roster names``).

    Raises:
        RestoreRefused: RESTORE_NOT_NODE_DB, RESTORE_WRONG_NODE or RESTORE_WRONG_CLUSTER.
        BackupError: the file cannot be read.
    """
    where = f"{backup_dir}/" if backup_dir is not None else "this node's backup_dir"
    pick = f"pick a backup of node {node_id!r} from {where}"
    ident = read_identity(backup)
    found = ident["node_id"]
    if found is None:
        what = "a hub store backup" if ident["hub"] else "not a riversync node database"
        raise RestoreRefused(
            f"{backup.name} is {what} (it records no node id); this is node {node_id!r}",
            ("restore a hub backup with `riversync hub restore`; " if ident["hub"] else "")
            + pick, code="RESTORE_NOT_NODE_DB")
    if found != node_id:
        raise RestoreRefused(
            f"{backup.name} is a backup of node {found!r}, not of node {node_id!r} "
            "(this node); restoring it would replace this office's data with another's",
            pick, code="RESTORE_WRONG_NODE")
    cluster = roster.cluster_id
    recorded = ident["cluster_id"]
    others = sorted(ident["signed_clusters"] - {cluster})
    strangers = sorted(ident["nodes"] - set(roster.nodes))
    if recorded is not None and recorded != cluster:
        raise RestoreRefused(
            f"{backup.name} is a backup of node {found!r} of cluster {recorded!r}, not of "
            f"this cluster {cluster!r}", pick, code="RESTORE_WRONG_CLUSTER")
    if others:
        raise RestoreRefused(
            f"{backup.name} holds batches signed for cluster {others[0]!r}: it is a backup "
            f"of node {found!r} of another cluster, not of this cluster {cluster!r}",
            pick, code="RESTORE_WRONG_CLUSTER")
    if strangers:
        raise RestoreRefused(
            f"{backup.name} holds events of node(s) {', '.join(map(repr, strangers))} that "
            f"cluster {cluster!r} does not list: it is a backup of node {found!r} of "
            "another cluster", pick, code="RESTORE_WRONG_CLUSTER")
    ident["cluster_checked"] = ("recorded" if recorded is not None else
                                "signed batches" if ident["signed_clusters"] else
                                "roster names")
    return ident


def check_restorable(backup: Path, node_id: str, roster, backup_dir: Path | None = None) -> dict:
    """Everything a node restore checks before it moves a file: the manifest, SQLite's
    integrity check, and that the backup is this node's of this cluster.  Returns the
    manifest (``{}`` without one).

    Raises:
        BackupError: damaged (RESTORE_DAMAGED); RestoreRefused: not this node's.
    """
    manifest = verify_backup(backup)
    check_identity(backup, node_id, roster, backup_dir)
    return manifest


def aside_path(db_path: Path, stamp: str) -> Path:
    """``<db>.pre-restore-<stamp>``, with a counter when a restore in the same second
    already used that name (a second restore must never overwrite the first's file)."""
    n = 0
    while True:
        base = db_path.with_name(f"{db_path.name}.pre-restore-{stamp}" + (f".{n}" if n else ""))
        if not any(Path(str(base) + s).exists() for s in ("", "-wal", "-shm", "-journal")):
            return base
        n += 1


def restore_file(backup: Path, db_path: Path, stamp: str | None = None) -> list[Path]:
    """Put ``backup`` in place of ``db_path``; no connection to ``db_path`` may be open.

    Returns the paths the old files were moved to.

    Raises:
        BackupError: the backup fails verification (nothing was touched).
    """
    return swap_in(stage_copy(backup, db_path), db_path, stamp)


def stage_copy(backup: Path, db_path: Path) -> Path:
    """A verified copy of ``backup`` beside ``db_path`` (``.<db>.restore-tmp``), durable on
    disk, for the caller to prepare before ``swap_in``; ``db_path`` is not touched.

    Raises:
        BackupError: the backup fails verification.
    """
    verify_backup(backup)
    tmp = db_path.with_name(f".{db_path.name}.restore-tmp")
    for suffix in ("-wal", "-shm", "-journal"):  # a restore killed earlier left these
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    shutil.copyfile(backup, tmp)
    _fsync_path(tmp)
    check_database(tmp)
    return tmp


def swap_in(tmp: Path, db_path: Path, stamp: str | None = None) -> list[Path]:
    """Make ``tmp`` the database at ``db_path`` in one rename; the old files are kept aside.

    The old database gets its ``.pre-restore-<stamp>`` name as a second link before the
    rename, so at every instant ``db_path`` is either the whole old database or the whole
    new one: a process killed here never leaves the node without a database (which it
    would start as a new, empty one).  Its ``-wal`` and ``-shm`` go aside first; a cleanly
    closed database has none.  Returns the paths the old files were moved to.
    """
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(str(tmp) + suffix).exists():
            raise BackupError(f"{tmp.name} was not closed cleanly ({suffix} left beside it)",
                              "retry the restore", code="RESTORE_FAILED")
    stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = aside_path(db_path, stamp)
    moved: list[Path] = []
    if db_path.exists():
        try:
            os.link(db_path, base)
        except OSError:  # a file system without hard links: a durable copy instead
            shutil.copyfile(db_path, base)
            _fsync_path(base)
        moved.append(base)
    for suffix in ("-wal", "-shm", "-journal"):
        old = Path(str(db_path) + suffix)
        if old.exists():
            os.replace(old, Path(str(base) + suffix))
            moved.append(Path(str(base) + suffix))
    os.replace(tmp, db_path)
    _fsync_path(db_path.parent)
    return moved
