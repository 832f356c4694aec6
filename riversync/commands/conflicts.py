"""``riversync conflicts list|show|resolve``: the conflict queue of a node."""

from __future__ import annotations

import json

from riversync.cli import EXIT_CRITICAL, CommandError

from ._nodecfg import add_config_arg, call, client_for, load


def register(subparsers) -> None:
    p = subparsers.add_parser("conflicts", help="list, show and resolve a node's conflicts")
    sub = p.add_subparsers(dest="conflicts_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="open conflicts and parked events")
    add_config_arg(ls)
    ls.add_argument("--all", action="store_true", help="include resolved conflicts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    sh = sub.add_parser("show", help="one conflict in full")
    add_config_arg(sh)
    sh.add_argument("id", metavar="CONFLICT_ID")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=cmd_show)
    rs = sub.add_parser("resolve", help="decide a conflict: accept, keep or merge")
    add_config_arg(rs)
    rs.add_argument("id", metavar="CONFLICT_ID")
    g = rs.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept", action="store_true", help="take the incoming change")
    g.add_argument("--keep", action="store_true", help="keep the local (owner's) state")
    g.add_argument("--merge", metavar="JSON", help='merged values, e.g. \'{"name": "X"}\'')
    rs.add_argument("--admin", action="store_true", help="as an admin override")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(handler=cmd_resolve)


def _line(c: dict) -> str:
    cid = c.get("id") or c.get("conflict_id") or c.get("cid")
    state = "open" if c.get("open", c.get("status", "open") == "open") else "closed"
    return (f"  {cid}  {c.get('table')}/{c.get('pk')}  {state}  cause: {c.get('cause', '?')}"
            f"  from {c.get('node', c.get('origin', '?'))} by {c.get('user', '?')}")


def cmd_list(args) -> int:
    cfg = load(args.config)
    client = client_for(cfg, args.token)
    res = call(client.get, "/v1/conflicts" + ("?all=true" if args.all else ""))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    conflicts, parked = res["conflicts"], res["parked"]
    print(f"node {cfg.node_id}: {len(conflicts)} conflict(s), {len(parked)} parked event(s)")
    for c in conflicts:
        print(_line(c))
    for p in parked:
        print(f"  parked {p.get('table')}/{p.get('pk')}  cause: {p.get('cause', '?')}")
    if any(c.get("status", "open") == "open" for c in conflicts):
        print("Resolve with: riversync conflicts resolve -c CONFIG ID --accept|--keep|--merge JSON")
    return 0


def cmd_show(args) -> int:
    cfg = load(args.config)
    client = client_for(cfg, args.token)
    res = call(client.get, f"/v1/conflicts/{args.id}")
    print(json.dumps(res["conflict"] if not args.json else res, indent=2))
    return 0


def cmd_resolve(args) -> int:
    cfg = load(args.config)
    client = client_for(cfg, args.token)
    body: dict = {"decision": "accept" if args.accept else "keep" if args.keep else "merge"}
    if args.merge is not None:
        try:
            values = json.loads(args.merge)
        except json.JSONDecodeError as e:
            raise CommandError(f"--merge is not valid JSON: {e}",
                               '--merge \'{"column": "value"}\'', EXIT_CRITICAL) from None
        if not isinstance(values, dict):
            raise CommandError("--merge must be a JSON object of column: value",
                               '--merge \'{"column": "value"}\'', EXIT_CRITICAL)
        body["values"] = values
    if args.admin:
        body["admin"] = True
    res = call(client.post, f"/v1/conflicts/{args.id}/resolve", body)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        ev = res["events"][0] if res.get("events") else {}
        print(f"conflict {args.id} resolved ({body['decision']}) on node {cfg.node_id} as event "
              f"{ev.get('node')}/{ev.get('seq')}; it replicates with the next sync")
    return 0
