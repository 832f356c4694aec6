"""``riversync verify``: do nodes that hold the same events hold the same state?

Each node reports its event-set digest (the highest contiguous sequence it holds of each
origin) and its state digest (tables and conflict set).  Nodes are grouped by event set;
inside a group every state must be equal, since state is a function of the events held.
A difference there is a bug or a damaged database, never a matter of waiting.  Nodes in
different groups are simply not caught up yet.

Two honest exceptions: a node that did not answer is named and the cluster is never
called converged (nothing is known of it), and nodes whose states differ only because one
parks events of a newer schema version (it has not been upgraded yet) are reported as
such, not as damage: the parked events apply once its schema is upgraded.

Exit codes: 0 consistent, 1 nodes with the same events differ, 3 a node did not answer.
"""

from __future__ import annotations

import hashlib
import json

from riversync.cli import EXIT_UNAVAILABLE
from riversync.engine.merge import NEWER_SCHEMA
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


def compare(reports: dict[str, dict], unreachable: dict[str, str] | None = None,
            newer_schema_parked: dict[str, int] | None = None) -> dict:
    """Group node reports by event set and check state equality inside each group.

    ``unreachable`` names nodes that did not answer: then nothing is converged and
    consistency is unknown (None).  ``newer_schema_parked`` counts, per node, events it
    parks for a newer schema version: a group whose states differ while one of its nodes
    parks such events is waiting for an upgrade, not inconsistent."""
    unreachable = unreachable or {}
    parked = {n: c for n, c in (newer_schema_parked or {}).items() if c}
    groups: dict[str, list[str]] = {}
    for node, d in reports.items():
        groups.setdefault(events_digest(d.get("events", {})), []).append(node)
    out_groups = []
    consistent = True
    waiting = False
    for ev, nodes in groups.items():
        states = {reports[n].get("state") for n in nodes}
        same = len(states) == 1
        lagging = {n: parked[n] for n in sorted(nodes) if n in parked}
        if not same and lagging:
            waiting = True
        else:
            consistent &= same
        out_groups.append({"events_digest": ev, "nodes": sorted(nodes), "same_state": same,
                           "newer_schema_parked": lagging,
                           "states": {n: reports[n].get("state") for n in sorted(nodes)}})
    return {
        "consistent": consistent if not unreachable else (False if not consistent else None),
        "converged": consistent and not waiting and not unreachable and len(groups) == 1,
        "complete": not unreachable,
        "groups": out_groups,
    }


def newer_schema_parked(client) -> int | None:
    """How many events the node parks for a newer schema version (None: cannot tell)."""
    try:
        res = client.get("/v1/conflicts")
    except (NodeUnreachable, NodeRefused):
        return None
    if not isinstance(res, dict):
        return None
    return sum(1 for p in res.get("parked", [])
               if str(p.get("cause", "")).startswith(NEWER_SCHEMA))


def cmd_verify(args) -> int:
    reports: dict[str, dict] = {}
    failed: dict[str, str] = {}
    clients = {}
    for path in args.config:
        cfg = load(path)
        client = client_for(cfg, args.token, 15.0)
        try:
            rep = client.get("/v1/digests")
        except (NodeUnreachable, NodeRefused) as e:
            failed[cfg.node_id] = str(e)
            continue
        if not isinstance(rep, dict) or "state" not in rep:
            failed[cfg.node_id] = f"{client.base_url} answered, but not as a riversync node"
            continue
        reports[cfg.node_id] = rep
        clients[cfg.node_id] = client
    first = compare(reports, failed)
    lag: dict[str, int] = {}
    for g in first["groups"]:
        if not g["same_state"]:
            for n in g["nodes"]:
                lag[n] = newer_schema_parked(clients[n]) or 0
    result = compare(reports, failed, lag)
    result["unreachable"] = failed
    if args.json:
        result["nodes"] = {n: {"events": d.get("events"), "state": d.get("state"),
                               "events_digest": events_digest(d.get("events", {}))}
                           for n, d in reports.items()}
        print(json.dumps(result, indent=2))
    else:
        for g in result["groups"]:
            if g["same_state"]:
                verdict = "same state"
            elif g["newer_schema_parked"]:
                who = ", ".join(f"{n} ({c})" for n, c in g["newer_schema_parked"].items())
                verdict = (f"states differ while {who} park(s) events of a newer schema "
                           "version: upgrade schema.toml there, then verify again")
            else:
                verdict = "DIFFERENT STATES (investigate)"
            print(f"nodes {', '.join(g['nodes'])} hold the same events "
                  f"({g['events_digest'][:12]}…): {verdict}")
        for n, why in failed.items():
            print(f"node {n} did not answer: {why}")
        if failed:
            print(f"NOT VERIFIED: {', '.join(failed)} did not answer, so nothing can be said "
                  "about convergence.")
        elif result["converged"]:
            print("All nodes hold the same events and the same state: converged.")
        elif result["consistent"]:
            print("Consistent: nodes with the same events agree; some are not caught up yet.")
    if failed:
        return EXIT_UNAVAILABLE
    return 0 if result["consistent"] else 1
