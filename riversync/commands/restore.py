"""``riversync restore``: put a backup in place and start a new node epoch at once.

If the node daemon runs, it does the restore itself (``POST /v1/restore``): it pauses
replication, closes the database, swaps the files, starts the new epoch and resumes, so
nothing writes over the restored file.  Otherwise the command does the same steps with
the node's lock held.  The old database and any ``-wal``/``-shm`` are moved aside, never
deleted.  Before either, the backup is checked (manifest, integrity, this node id and
this cluster); a refusal prints its code (``RESTORE_WRONG_NODE``...) and exits 2 with
nothing touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError

from ._nodecfg import add_config_arg, call, client_for, load


def register(subparsers) -> None:
    p = subparsers.add_parser("restore", help="restore a node from a backup (new node epoch)")
    add_config_arg(p)
    p.add_argument("backup", metavar="BACKUP.db", help="a file made by `riversync backup`")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_restore)


def cmd_restore(args) -> int:
    from riversync.node import backup as backups
    from riversync.node.daemon import NodeLocked, db_lock, is_locked, schema_path_for
    from riversync.node.restore import restore_into_closed

    cfg = load(args.config)
    backup = Path(args.backup).resolve()
    if not backup.is_file():
        raise CommandError(f"no backup file {backup}", "check the path; `ls` the backup"
                           " folder (backup_dir in the node config)", EXIT_UNAVAILABLE)
    if cfg.db_path.is_dir():
        raise CommandError(f"db_path {cfg.db_path} is a folder, not the node's database",
                           "check db_path in the node config; the backup was not touched",
                           EXIT_CRITICAL)
    if not os.access(cfg.db_path.parent, os.W_OK):
        raise CommandError(f"cannot write in {cfg.db_path.parent}, where the database goes",
                           "run the restore as the user the node runs as, or make the folder "
                           "writable; nothing was changed", EXIT_UNAVAILABLE)
    try:
        # here too, not only in the node: a refused backup must not pause a running node
        backups.check_restorable(backup, cfg.node_id, cfg.roster, cfg.backup_dir)
    except backups.BackupError as e:
        raise CommandError(f"{e.code}: {e}", e.hint, EXIT_CRITICAL) from None
    if is_locked(cfg.db_path):
        client = client_for(cfg, args.token, 120.0, admin=True)
        try:
            res = call(client.post, "/v1/restore", {"backup": str(backup)})
        except CommandError as e:
            if str(e).startswith("the node refused: FORBIDDEN:"):
                e.hint = ("a restore needs a user the roster makes admin (an operator cannot): "
                          "run it with an admin's token (--token or RIVERSYNC_TOKEN)")
            raise
        how = "by the running node"
    else:
        from riversync.engine.schema import load_schema

        schema = load_schema(schema_path_for(cfg))
        try:
            with db_lock(cfg.db_path):
                res = restore_into_closed(cfg, schema, backup, cfg.hub_url)
                res.pop("store").close()
        except backups.BackupError as e:  # the backup changed since the check above
            raise CommandError(f"{e.code}: {e}", e.hint, EXIT_CRITICAL) from None
        except NodeLocked as e:
            raise CommandError(str(e), "stop the node, or retry so the node restores",
                               EXIT_UNAVAILABLE) from None
        how = "with the node stopped"
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"Restored node {cfg.node_id} from {backup.name} {how}.")
        print(f"  new node epoch {res['new_epoch']} (the backup was taken in epoch "
              f"{res['old_epoch']}); {res['unacknowledged_old_events']} event(s) of that epoch "
              "were not yet "
              "acknowledged when the backup was taken: the first sync settles them with the "
              "hub (held there: acknowledged; otherwise pushed)")
        carried = res.get("carried_over", 0)
        print(f"  carried over {carried} event(s) of this node that were written after the "
              "backup and are not in it (kept under their own ids; the hub gets those it "
              "lacks)" + (": " + ", ".join(f"{e}/{s}" for e, s in
                                          res.get("carried_over_events", [])) if carried else ""))
        unreadable = res.get("previous_database_unreadable")
        if unreadable:
            print(f"  WARNING: the previous database could not be read in full, so only what "
                  f"is listed above was carried over from it (no staging record): {unreadable}")
        else:
            print(f"  carried over the staging record as it was ("
                  f"{res['staging_batches_carried_over']} batch(es) staged after the backup)")
        for p in res.get("moved_aside", []):
            print(f"  kept the previous file as {p}")
        print("The node pulls back what the hub holds at its next sync.")
    return 0
