"""``riversync cluster init``: make a new cluster's keys, roster and configs."""

from __future__ import annotations

import json
import os

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError
from riversync.cluster import DEFAULT_SCHEMA, ClusterInitError, init_cluster, parse_offices


def register(subparsers) -> None:
    p = subparsers.add_parser("cluster", help="create a cluster (keys, roster, configs)")
    sub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="create keys, roster.toml, hub.toml and node-<office>.toml in DIR",
        description="Create a new cluster in DIR. Prints each user's token once; the tokens "
        "are also written to DIR/tokens.txt (mode 0600).",
    )
    init.add_argument("dir", metavar="DIR", help="directory to create the cluster in")
    init.add_argument("--offices", required=True, metavar="A,B[,...]",
                      help="comma-separated office names; each office gets one node")
    init.add_argument("--hub-url", default=None, metavar="URL",
                      help="URL the nodes use to reach the hub (default http://127.0.0.1:8700)")
    init.add_argument("--schema", default=None, metavar="PATH",
                      help="the cluster's schema, copied to DIR/schema.toml (default: the "
                           "example leagues schema)")
    init.add_argument("--json", action="store_true", help="print a JSON summary (with tokens)")
    init.set_defaults(handler=cmd_init)


def cmd_init(args) -> int:
    if args.schema is not None and not os.path.isfile(args.schema):
        raise CommandError(f"no schema file {args.schema}", "check the --schema path",
                           exit_code=EXIT_UNAVAILABLE)
    try:
        files = init_cluster(args.dir, parse_offices(args.offices), hub_url=args.hub_url,
                             schema=args.schema or DEFAULT_SCHEMA)
    except ClusterInitError as e:
        raise CommandError(str(e), e.hint, exit_code=EXIT_CRITICAL) from None
    except OSError as e:
        raise CommandError(f"cannot write the cluster files: {e}", "check the directory",
                           exit_code=EXIT_CRITICAL) from None
    if args.json:
        print(json.dumps(files.to_json(), indent=2))
        return 0
    print(f"Created cluster {files.cluster_id} in {files.dir} "
          f"with offices {', '.join(files.offices)}.")
    print(f"  roster:  {files.roster}")
    print(f"  schema:  {files.schema}  (copied from {args.schema or DEFAULT_SCHEMA})")
    print(f"  hub:     {files.hub_config}  (riversync hub serve -c {files.hub_config})")
    for office, path in files.node_configs.items():
        print(f"  node {office}: {path}  key {files.key_files[office]} (mode 600)")
    print("User tokens (shown once; also in tokens.txt, mode 600; hand out, then delete it):")
    for name, (office, role) in files.users.items():
        print(f"  {name:<20} {role:<9} home {office:<12} {files.tokens[name]}")
    return 0
