"""``riversync verify``: do nodes that hold the same events hold the same state?

Each node reports its event-set digest (the highest contiguous sequence it holds of each
origin) and its state digest (tables and conflict set).  Nodes are grouped by event set;
inside a group every state must be equal, since state is a function of the events held.
A difference there is a bug or a damaged database, never a matter of waiting.  Nodes in
different groups are simply not caught up yet.

Exit codes: 0 consistent, 1 nodes with the same events differ, 3 a node did not answer.
"""

from __future__ import annotations

import hashlib
import json

from riversync.cli import EXIT_UNAVAILABLE
from riversync.node.client import NodeRefused, NodeUnreachable

from ._nodecfg import add_config_arg, client_for, load


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="compare nodes' event-set and state digests")
    add_config_arg(p, multiple=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_verify)


def events_digest(events: dict) -> str:
    canon = json.dumps(events, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def compare(reports: dict[str, dict]) -> dict:
    """Group node reports by event set and check state equality inside each group."""
    groups: dict[str, list[str]] = {}
    for node, d in reports.items():
        groups.setdefault(events_digest(d.get("events", {})), []).append(node)
    out_groups = []
    consistent = True
    for ev, nodes in groups.items():
        states = {reports[n].get("state") for n in nodes}
        same = len(states) == 1
        consistent &= same
        out_groups.append({"events_digest": ev, "nodes": sorted(nodes), "same_state": same,
                           "states": {n: reports[n].get("state") for n in sorted(nodes)}})
    return {
        "consistent": consistent,
        "converged": consistent and len(groups) == 1,
        "groups": out_groups,
    }


def cmd_verify(args) -> int:
    reports: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for path in args.config:
        cfg = load(path)
        try:
            reports[cfg.node_id] = client_for(cfg, args.token, 15.0).get("/v1/digests")
        except (NodeUnreachable, NodeRefused) as e:
            failed[cfg.node_id] = str(e)
    result = compare(reports)
    result["unreachable"] = failed
    if args.json:
        result["nodes"] = {n: {"events": d.get("events"), "state": d.get("state"),
                               "events_digest": events_digest(d.get("events", {}))}
                           for n, d in reports.items()}
        print(json.dumps(result, indent=2))
    else:
        for g in result["groups"]:
            verdict = "same state" if g["same_state"] else "DIFFERENT STATES (investigate)"
            print(f"nodes {', '.join(g['nodes'])} hold the same events "
                  f"({g['events_digest'][:12]}…): {verdict}")
        for n, why in failed.items():
            print(f"node {n} did not answer: {why}")
        if result["converged"]:
            print("All nodes hold the same events and the same state: converged.")
        elif result["consistent"]:
            print("Consistent: nodes with the same events agree; some are not caught up yet.")
    if failed:
        return EXIT_UNAVAILABLE
    return 0 if result["consistent"] else 1
