"""``riversync node serve``: run an office's node daemon."""

from __future__ import annotations

import asyncio
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
                   help="the cluster's schema (default: schema.toml beside roster.toml)")
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    s.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    from riversync.engine.errors import EngineError
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
    except EngineError as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None
    except OSError as e:
        raise CommandError(f"cannot start the node: {e}",
                           f"is port {cfg.listen_port} already in use?", EXIT_UNAVAILABLE) \
            from None
