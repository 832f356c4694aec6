"""``riversync node serve``: run an office's node daemon."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError
from riversync.config import ConfigError

from ._nodecfg import load


def register(subparsers) -> None:
    p = subparsers.add_parser("node", help="run an office node")
    sub = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "serve",
        help="run the node daemon: local API and UI, replication agent, health",
        description="Run the office's node until SIGTERM or Ctrl-C. The schema is "
        "schema.toml beside the roster unless --schema says otherwise.",
    )
    s.add_argument("-c", "--config", required=True, metavar="NODE.toml")
    s.add_argument("--schema", default=None, metavar="SCHEMA.toml",
                   help="the cluster's schema (default: the config's schema_path, else schema.toml "
                   "beside roster.toml)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(handler=cmd_serve)
    a = sub.add_parser(
        "adopt-schema",
        help="take the cluster's schema file after this node ran another one (node stopped)",
        description="For a node refused with SCHEMA_MISMATCH (its schema file differed from "
        "the cluster's under the same version) once the cluster's file is in place: rebuild "
        "the office tables and fold every row again from the journal under that file, in one "
        "transaction. Events that do not fit it are parked, as at every other office. Run "
        "it with the node stopped.",
    )
    a.add_argument("-c", "--config", required=True, metavar="NODE.toml")
    a.add_argument("--schema", default=None, metavar="SCHEMA.toml",
                   help="the cluster's schema (default: the config's schema_path, else schema.toml "
                   "beside roster.toml)")
    a.add_argument("--json", action="store_true", help="print the result as JSON")
    a.set_defaults(handler=cmd_adopt_schema)


def cmd_serve(args) -> int:
    from riversync.engine.errors import DatabaseUnreadable, EngineError
    from riversync.node.daemon import NodeLocked, schema_path_for, serve

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    cfg = load(args.config)
    schema = Path(args.schema) if args.schema else None
    if not schema_path_for(cfg, schema).exists():
        raise CommandError(f"no schema at {schema_path_for(cfg, schema)}",
                           "copy the cluster's schema.toml beside roster.toml, or pass --schema",
                           exit_code=EXIT_CRITICAL)
    try:
        return asyncio.run(serve(cfg, schema))
    except NodeLocked as e:
        raise CommandError(str(e), "stop the other daemon first", EXIT_UNAVAILABLE) from None
    except ConfigError as e:  # the key file it names: missing, wrong node, mode, not hex
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None
    except DatabaseUnreadable as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_UNAVAILABLE) from None
    except EngineError as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None
    except OSError as e:
        raise CommandError(f"cannot start the node: {e}",
                           f"is port {cfg.listen_port} already in use?", EXIT_UNAVAILABLE) \
            from None


def cmd_adopt_schema(args) -> int:
    from riversync.engine.errors import EngineError
    from riversync.engine.schema import load_schema
    from riversync.node import daemon

    cfg = load(args.config)
    if not cfg.db_path.exists():
        raise CommandError(f"no database at {cfg.db_path} (db_path in {args.config})",
                           "check db_path", EXIT_UNAVAILABLE)
    schema_path = daemon.schema_path_for(cfg, Path(args.schema) if args.schema else None)
    if not schema_path.is_file():
        raise CommandError(f"no schema file at {schema_path}", "give the cluster's schema file "
                           "with --schema", EXIT_UNAVAILABLE)
    try:
        schema = load_schema(schema_path)
        with daemon.db_lock(cfg.db_path):
            store = daemon.open_store(cfg, schema, adopt_schema=True)
            try:
                res = {"node_id": cfg.node_id, "schema": str(schema_path),
                       "version": schema.version, "digest": schema.digest(),
                       "refolded_rows": store.refolded_rows,
                       "parked": store.stats()["parked"]}
            finally:
                store.close()
    except daemon.NodeLocked as e:
        raise CommandError(str(e), "stop the node first (adopt-schema runs offline)",
                           EXIT_UNAVAILABLE) from None
    except EngineError as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None
    if args.json:
        print(json.dumps(res, indent=2))
    elif res["refolded_rows"] is not None:
        print(f"node {cfg.node_id} now runs schema version {schema.version} "
              f"({res['digest'][:12]}) from {schema_path}: {res['refolded_rows']} row(s) "
              f"folded again from the journal; {res['parked']} event(s) parked (they do not "
              "fit this schema, as at every other office). Start the node.")
    else:
        print(f"node {cfg.node_id} already runs schema version {schema.version} with this "
              f"content ({res['digest'][:12]}); nothing was changed.")
    return 0
