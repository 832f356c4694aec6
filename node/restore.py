"""Restore a node from a backup and start a new node epoch at once.

Nothing is moved before the backup passed every check (``backup.check_restorable``): its
manifest, SQLite's integrity check, and that it is a database of this node id and this
cluster.  A refused restore leaves the live database, its head file and a running node
exactly as they were.

The restored copy begins a new node epoch (``Store.begin_epoch``) and takes the writes
made since the backup before it is swapped in (``backup.swap_in``), so nothing can write
to it first: new writes never reuse a number the node handed out after the backup was
taken.  The old epoch's events are left as they are, whether or not the hub can be
reached now.  At the node's first hello the hub says what it holds of the old epoch:
those events are acknowledged (and any the backup lacks come back through the pull), and
the rest are pushed as the old epoch's continuation, chained to the hub's last batch of it
(``Agent._align_old_epochs``).  Nothing is re-numbered, so no event can reach the cluster
twice under two identities, whatever the hub held at the time of the restore (see
docs/how-to/operate.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import apsw

from riversync.config import NodeConfig

from . import head
from .agent import META_CHAIN, META_PENDING, keep_restored_pending
from .backup import BackupError, check_restorable, stage_copy, swap_in
from .staging import carry_staging


def restore_into_closed(cfg: NodeConfig, schema, backup: Path, hub_url: str | None = None) -> dict:
    """Put ``backup`` in place (no connection may be open), in a new epoch; return the store.

    The restored database is made whole beside the live one first (copied, opened, given
    its new epoch and the writes it must carry over) and only then swapped in with one
    rename.  A process killed at any point leaves either the old database, untouched, or
    the new one with everything carried: never the backup without the writes taken since,
    which would lose every one of them the hub had not yet received.

    ``hub_url`` is not used: the hub is asked at the node's next hello, not here, so a
    restore works the same with the hub away.

    Raises:
        BackupError: the backup is damaged, or (``RestoreRefused``) not a database of this
            node of this cluster; raised before any file is touched.  ``RESTORE_FAILED``:
            the store would not open the prepared copy (a safety net behind the checks:
            the live database was never touched).
    """
    from .daemon import new_epoch, open_store

    del hub_url
    manifest = check_restorable(backup, cfg.node_id, cfg.roster, cfg.backup_dir)
    carry, sources, unreadable = _own_events_beyond(cfg, schema, manifest)
    tmp = stage_copy(backup, cfg.db_path)
    store = None
    try:
        store = open_store(replace(cfg, db_path=tmp), schema)
        restored = store.digests()  # what the backup holds, before anything else touches it
        old_epoch = store.epoch
        unacked = store.outbox_size()
        epoch = new_epoch()
        store.begin_epoch(epoch)
        # A batch signed before the backup is rebuilt, if still needed, from what the hub
        # holds; its bytes are kept so that the hub's hashes can prove it held (Agent).
        keep_restored_pending(store)
        store.meta_set(META_PENDING, "")
        store.meta_set(META_CHAIN, "")
        carried = store.carry_own(carry, sources)
        staged = 0
        if cfg.db_path.is_file() and unreadable is None:
            try:
                staged = carry_staging(store.conn, str(cfg.db_path))
            except apsw.Error as e:  # the staging pages are damaged: the events came over
                unreadable = f"its staging record: {type(e).__name__}: {e}"
        top = store.own_seq(epoch) or 0
        store.close()  # the last connection: checkpointed, no -wal left beside the copy
        store = None
        moved = swap_in(tmp, cfg.db_path)
    except Exception as e:
        if store is not None:
            store.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        if isinstance(e, BackupError):
            raise
        code = getattr(e, "code", type(e).__name__)
        raise BackupError(
            f"{backup.name} passed the checks but could not be opened as node "
            f"{cfg.node_id!r}'s database ({code}: {e}); the live database was not touched",
            "choose another backup", code="RESTORE_FAILED") from e
    head.write(cfg.db_path, epoch, top)  # the restored file is behind the old head
    try:
        store = open_store(cfg, schema)
    except Exception as e:
        put_back(cfg.db_path, moved)
        code = getattr(e, "code", type(e).__name__)
        raise BackupError(
            f"{backup.name} was restored but would not open again ({code}: {e}); the "
            "previous database was put back", "choose another backup",
            code="RESTORE_FAILED") from e
    return {
        "store": store,
        "backup": str(backup),
        "db_path": str(cfg.db_path),
        "moved_aside": [str(p) for p in moved],
        "old_epoch": old_epoch,
        "new_epoch": epoch,
        "unacknowledged_old_events": unacked,
        "restored_tables": restored["tables"],
        "restored_events": restored["events"],
        "carried_over": carried,
        "carried_over_events": [[ev.epoch, ev.seq] for ev in carry[:50]],
        "staging_batches_carried_over": staged,
        "previous_database_unreadable": unreadable,
    }


def put_back(db_path: Path, moved: list[Path]) -> None:
    """Undo a swap: drop the restored copy (the backup itself is untouched) and move the
    files ``swap_in`` moved aside back to their names, ``-wal`` with its database."""
    for suffix in ("-wal", "-shm", "-journal", ""):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    for aside in moved:
        suffix = next((s for s in ("-wal", "-shm", "-journal") if aside.name.endswith(s)), "")
        aside.replace(Path(str(db_path) + suffix))


CARRY_SLICE = 1_000  # own events read at once when carrying writes over


def _own_events_beyond(cfg: NodeConfig, schema, manifest: dict
                       ) -> tuple[list, dict, str | None]:
    """This node's own events in the database about to be put aside that the backup lacks.

    Writes taken after the backup (each answered with a 2xx) may not have reached the hub
    yet; they live only in the current file.  They are carried into the restored database
    under their own ids, so they are neither lost nor duplicated: what the hub holds of them
    is recognised by content at the next pull, the rest is pushed as their epoch's
    continuation.  The backup's manifest names how far each own epoch goes in it (without
    a manifest every own event is read; the ones the backup holds are skipped on the way
    in).  Returns (events, their audit sources by (epoch, seq), why the current file could
    not be read or None).
    """
    from .daemon import open_store

    if not cfg.db_path.exists():
        return [], {}, None
    tops: dict[int, int] = {}
    for origin, top in (manifest.get("events") or {}).items():
        node, _, epoch = str(origin).rpartition("/")
        if node == cfg.node_id:
            tops[int(epoch)] = int(top)
    try:
        live = open_store(cfg, schema)
    except Exception as e:  # noqa: BLE001 - a broken file is a reason to restore
        return [], {}, f"{type(e).__name__}: {e}"
    events: list = []
    sources: dict[tuple[int, int], str | None] = {}
    lost: list[str] = []
    try:
        for epoch in sorted(live.own_epochs()):
            top = live.own_seq(epoch) or 0
            for first in range(tops.get(epoch, 0) + 1, top + 1, CARRY_SLICE):
                seqs = range(first, min(first + CARRY_SLICE, top + 1))
                try:
                    found = live.own_events(epoch, seqs)
                    sources.update(((epoch, s), src) for s, src in
                                   live.own_sources(epoch, found).items())
                    events.extend(found[s] for s in sorted(found))
                    continue
                except apsw.Error:  # damaged pages: one event at a time, keep what reads
                    pass
                seq = _carry_until_unreadable(live, epoch, seqs, events)
                if seq is not None:
                    # Carried up to the damage only: an epoch's events reach the hub in an
                    # unbroken run, so later ones would wait behind the gap for ever.
                    lost.append(f"node epoch {epoch} from event {seq} to {top}")
                    break
    except apsw.Error as e:  # not even the list of epochs reads
        lost.append(f"the rest ({type(e).__name__}: {e})")
    finally:
        live.close()
    if lost:
        return events, sources, (f"damaged, so these writes stay only in the file kept "
                                 f"aside: {'; '.join(lost)}")
    return events, sources, None


def _carry_until_unreadable(live, epoch: int, seqs: range, events: list) -> int | None:
    """Append the events of ``seqs`` one by one up to the first that cannot be read;
    returns that one's number, or None when all could."""
    for seq in seqs:
        try:
            events.extend(live.own_events(epoch, [seq]).values())
        except apsw.Error:
            return seq
    return None
