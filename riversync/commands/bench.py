"""``riversync bench replay``: the engine's replay speed against raw SQLite, in one run.

The workload is fixed (see docs/explanation/merge.md, "Replay benchmark"): N events on
one 6-column table, 70% creates and 30% updates, signed into batches of 1,000.  Prints
raw upsert rows/s, in-order and shuffled replay events/s, their ratios to raw, and the
process's peak memory.  Exit code 1 if the two replays disagree on the final state.
"""

from __future__ import annotations

import json
import os

from riversync.cli import EXIT_CRITICAL, EXIT_UNAVAILABLE, CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure the engine (replay benchmark)")
    sub = p.add_subparsers(dest="bench_what", metavar="WHAT")
    r = sub.add_parser("replay", help="replay N signed events, in order and shuffled")
    r.add_argument("--events", type=int, default=200_000, help="number of events (default 200000)")
    r.add_argument("--seed", type=int, default=1, help="shuffle seed (default 1)")
    r.add_argument("--workdir", default=None,
                   help="directory for the scratch databases (default: system temp)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(handler=cmd_replay)
    p.set_defaults(handler=lambda args: _usage(p))


def _usage(parser) -> int:
    parser.print_help()
    return EXIT_CRITICAL


def cmd_replay(args) -> int:
    from riversync.engine import replay_bench

    if args.events < 1_000:
        raise CommandError(f"--events {args.events} is too small to measure",
                           hint="riversync bench replay --events 200000", exit_code=EXIT_CRITICAL)
    if args.workdir is not None and not os.path.isdir(args.workdir):
        raise CommandError(f"--workdir {args.workdir} is not a folder",
                           hint="create it, or leave --workdir out to use the system temp",
                           exit_code=EXIT_UNAVAILABLE)
    try:
        out = replay_bench.run(args.events, seed=args.seed, workdir=args.workdir)
    except AssertionError as e:
        raise CommandError(str(e), hint="this is a bug in the engine; please report it") from None
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"replay benchmark, {out['events']:,} events (batches of 1,000, signed)")
    print(f"  raw apsw upsert     {out['raw_rows_per_s']:>10,} rows/s")
    print(f"  in-order replay     {out['inorder_events_per_s']:>10,} events/s"
          f"  ({out['inorder_ratio']:.2f}x raw)")
    print(f"  shuffled replay     {out['shuffled_events_per_s']:>10,} events/s"
          f"  ({out['shuffled_ratio']:.2f}x raw)")
    print(f"  peak memory         {out['peak_rss_mb']:>10,.1f} MB")
    print("  both replays reached the same state" if out["same_state"] else "  STATES DIFFER")
    return 0
