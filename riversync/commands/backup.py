"""``riversync backup``: a verified online backup of a node's database, with retention.

When the node daemon runs, it takes the backup (``POST /v1/backup``) so nothing competes
with its writes; otherwise the command opens the database itself.  Either way SQLite's
backup API makes the copy, never a file copy.
"""

from __future__ import annotations

import json

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError

from ._nodecfg import add_config_arg, call, client_for, load


def register(subparsers) -> None:
    p = subparsers.add_parser("backup", help="take a verified backup of a node's database")
    add_config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_backup)


def cmd_backup(args) -> int:
    from riversync.node import backup as backups
    from riversync.node.daemon import NodeLocked, db_lock, is_locked, open_store, schema_path_for

    cfg = load(args.config)
    if not cfg.db_path.exists():  # before the lock, which would leave a lock file behind
        raise CommandError(f"no database at {cfg.db_path} (db_path in {args.config})",
                           "check db_path; start the node once if it is new",
                           EXIT_UNAVAILABLE)
    if is_locked(cfg.db_path):
        res = call(client_for(cfg, args.token, 300.0).post, "/v1/backup", {})
        how = "by the running node"
    else:
        from riversync.engine.errors import EngineError
        from riversync.engine.schema import load_schema

        try:
            with db_lock(cfg.db_path):
                store = open_store(cfg, load_schema(schema_path_for(cfg)))
                try:
                    res = backups.make_backup(store, cfg.backup_dir, cfg.node_id,
                                              backups.retention_for(cfg))
                finally:
                    store.close()
        except NodeLocked as e:
            raise CommandError(str(e), "retry: the node just started") from None
        except backups.BackupError as e:
            raise CommandError(str(e), e.hint) from None
        except EngineError as e:  # the database is not this node's (WRONG_NODE, WRONG_CLUSTER)
            raise CommandError(str(e), e.hint, EXIT_CRITICAL) from None
        how = "from the database file (node not running)"
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"Backup of node {cfg.node_id} written {how}: {res['path']}")
        print(f"  {res['size']} bytes, sha256 {res['sha256'][:16]}…, integrity check ok")
        for p in res.get("removed", []):
            print(f"  retention removed {p}")
    return 0
