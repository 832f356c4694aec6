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


class BackupError(Exception):
    """A backup or restore cannot go ahead; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


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

    With ``self_contained`` the file is also switched out of WAL mode, so it needs no
    ``-wal`` beside it.

    Raises:
        BackupError: missing, not SQLite, or failing the integrity check.
    """
    if not path.is_file():
        raise BackupError(f"{path} does not exist", "give the path of a backup file")
    if path.stat().st_size == 0:
        raise BackupError(f"{path} is empty", "choose another backup")
    try:
        conn = apsw.Connection(str(path))
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
        BackupError: the copy failed verification (nothing is left behind).
    """
    now = now or dt.datetime.now(dt.UTC)
    backup_dir.mkdir(parents=True, exist_ok=True)
    name = f"{node_id}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
    final = backup_dir / (name + SUFFIX)
    tmp = backup_dir / f".{name}.tmp"
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
        }
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


def verify_backup(backup: Path) -> dict:
    """Check a backup against its manifest (when there is one) and SQLite's own check.

    Raises:
        BackupError: the file changed since it was made, or is not sound.
    """
    manifest_path = backup.with_suffix(MANIFEST)
    manifest: dict = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        actual = sha256_file(backup)
        if manifest.get("sha256") != actual:
            raise BackupError(f"{backup} does not match its manifest (SHA-256 {actual[:12]}…, "
                              f"expected {str(manifest.get('sha256'))[:12]}…)",
                              "the file was changed or damaged; choose another backup")
    check_database(backup)
    return manifest


def restore_file(backup: Path, db_path: Path, stamp: str | None = None) -> list[Path]:
    """Put ``backup`` in place of ``db_path``; no connection to ``db_path`` may be open.

    Returns the paths the old files were moved to.

    Raises:
        BackupError: the backup fails verification (nothing was touched).
    """
    verify_backup(backup)
    stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = db_path.with_name(f".{db_path.name}.restore-tmp")
    shutil.copyfile(backup, tmp)
    _fsync_path(tmp)
    check_database(tmp)
    moved: list[Path] = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        old = Path(str(db_path) + suffix)
        if old.exists():
            aside = db_path.with_name(f"{db_path.name}.pre-restore-{stamp}{suffix}")
            os.replace(old, aside)
            moved.append(aside)
    os.replace(tmp, db_path)
    _fsync_path(db_path.parent)
    return moved
