"""``riversync demo``: start a hub and two offices locally and show them converge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from riversync.cli import EXIT_CRITICAL, CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run a hub and two offices on this machine and show them converge",
        description="Creates a cluster in a temporary directory (or --dir), starts the hub "
        "and two office nodes as separate processes on 127.0.0.1, loads example league "
        "data, imports an Excel roster at one office and registration emails at the "
        "other, edits concurrently, stops the hub for a while, resolves a conflict, "
        "writes an Excel export and shows both offices converged. Every process it started is stopped at the end "
        "unless --keep-running.")
    p.add_argument("--dir", default=None, help="directory for the cluster (new or empty)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the hub and nodes running at the end")
    p.add_argument("--json", action="store_true",
                   help="explanations go to stderr; stdout ends with one JSON summary")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args) -> int:
    from riversync.node import demo

    if args.dir:
        d = Path(args.dir)
        if d.exists() and any(d.iterdir()):
            raise CommandError(f"{d} is not empty", "give a new or empty directory to --dir",
                               EXIT_CRITICAL)
    out = sys.stderr if args.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    summary = demo.run(Path(args.dir) if args.dir else None, keep_running=args.keep_running,
                       say=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"\nconverged: {'true' if summary['converged'] else 'false'} "
              f"({summary['seconds']} s)")
    return 0 if summary["converged"] else 1
