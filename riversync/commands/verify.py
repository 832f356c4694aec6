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

The hub is asked too (its ``GET /v1/status`` lists the last sequence it holds of every
origin), because waiting is not always the answer.  A node that holds events of an origin
beyond what the hub holds got them from the hub, so the hub lost them (a hub restore).  If
the origin's own node still holds them it pushes them again, and a node that kept the
signed batches pulls pushes them again too (node ``relay``): still "not caught up yet".
If neither (the origin was restored from an older backup too, and no node kept the
batches), nothing will ever deliver them to the nodes that lack them: that is reported as
lost at the hub, naming the origin, the sequence range and the nodes that hold the only
copies.

A node whose pulls the hub refuses with ``CURSOR_PRUNED`` (its cursor is before the hub's
prune horizon: restored from a backup taken before ``riversync hub prune``) lacks events
the hub no longer holds.  Waiting will not bring them either, so verify names the node,
the horizon and what to do, and does not call the cluster consistent.  It reads this from
the node's own status (the agent stops on that error), not by guessing from cursors.  A node
whose replication stopped on any other error (a wrong hub or cluster, a schema mismatch, a
fork) will not catch up either until it is fixed: verify names it and its error too.

A node the hub counts as caught up that lacks events the hub holds skipped them (its
cursor moved past them, as after a hub store put back by hand while it was down): no
pull will bring them, so verify names the node and the range (``skipped``).

Exit codes: 0 consistent, 1 nodes with the same events differ, events are lost at the
hub, a node cannot get pruned events from the hub, its replication stopped or it skipped
events, 3 a node or the hub did not answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import urllib.error
import urllib.request

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


def beyond_hub(reports: dict[str, dict], hub_origins: dict[str, int]) -> dict:
    """Events some node holds of an origin beyond what the hub holds of it.

    Only the hub delivers other origins' events, so a node holding more than the hub of
    another origin means the hub lost them.  ``repushing``: the origin's node still holds
    them and pushes them again; ``relaying``: a holder kept the signed batches from the
    hub's last one on (its ``kept_batches``) and pushes them again [N-RELAY-1]; ``lost``:
    neither, so no one will ever deliver them; ``unconfirmed``: no holder can relay and
    the origin's node was not asked, so whether it can cannot be told."""
    origins = sorted({o for r in reports.values() for o in r.get("events", {})})
    out: dict[str, list] = {"lost": [], "repushing": [], "relaying": [], "unconfirmed": []}
    for origin in origins:
        origin_node = origin.rsplit("/", 1)[0]
        hub = hub_origins.get(origin, 0)
        holders = {n: r["events"][origin] for n, r in reports.items()
                   if n != origin_node and r.get("events", {}).get(origin, 0) > hub}
        if not holders:
            continue
        top = max(holders.values())
        own = (reports[origin_node].get("events", {}).get(origin, 0)
               if origin_node in reports else None)
        first = max(hub, own or 0) + 1
        entry = {"origin": origin, "first": first, "last": top, "hub_holds": hub,
                 "origin_holds": own,
                 "held_by": sorted(n for n, c in holders.items() if c >= first)}
        relayers = sorted(n for n in holders if _covers(reports[n], origin, hub + 1, top))
        if own is not None and own >= top:
            kind = "repushing"
        elif relayers:
            kind = "relaying"
            entry["relayed_by"] = relayers
        else:
            kind = "unconfirmed" if own is None else "lost"
        if kind != "lost":
            entry["first"] = hub + 1
            entry["held_by"] = sorted(holders)
        out[kind].append(entry)
    return out


def skipped(reports: dict[str, dict], doc: dict) -> dict[str, list[dict]]:
    """Events of other origins a node lacks though the hub counts it as caught up.

    ``doc`` is the hub's status, read before the nodes' reports: a node the hub then saw
    with no backlog had confirmed everything the hub held, and its report (read later)
    can only hold more.  Lacking some of it, the node skipped them (its cursor moved past
    batches it never applied, as after a hub store put back by hand) and no pull will
    ever bring them."""
    held = doc.get("origins") or {}
    out: dict[str, list[dict]] = {}
    for node, rep in reports.items():
        seen = (doc.get("nodes") or {}).get(node) or {}
        if seen.get("backlog_batches") != 0:
            continue
        gaps = [{"origin": o, "first": rep.get("events", {}).get(o, 0) + 1, "last": top}
                for o, top in sorted(held.items())
                if o.rsplit("/", 1)[0] != node and rep.get("events", {}).get(o, 0) < top]
        if gaps:
            out[node] = gaps
    return out


def _covers(report: dict, origin: str, first: int, last: int) -> bool:
    kept = (report.get("kept_batches") or {}).get(origin)
    return (isinstance(kept, list) and len(kept) == 2
            and kept[0] <= first and kept[1] >= last)


def hub_status(hub_url: str, timeout_s: float = 15.0) -> tuple[dict | None, str]:
    """The hub's operator status (``GET /v1/status``); None and why if it did not answer."""
    url = hub_url.rstrip("/") + "/v1/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, f"{url}: {getattr(e, 'reason', e)}"
    if not isinstance(doc, dict):
        return None, f"{url} answered, but not with the hub's status"
    return doc, ""


def hub_origins(hub_url: str, timeout_s: float = 15.0,
                doc: dict | None = None) -> tuple[dict[str, int] | None, str]:
    """What the hub holds of each origin, from its operator status; None and why if the
    hub cannot tell us."""
    why = ""
    if doc is None:
        doc, why = hub_status(hub_url, timeout_s)
        if doc is None:
            return None, why
    held = doc.get("origins")
    if not isinstance(held, dict) or not all(isinstance(v, int) for v in held.values()):
        return None, (f"{hub_url.rstrip('/')}/v1/status answered, but without the origins "
                      "it holds (an older hub?)")
    return held, ""


CURSOR_PRUNED = "CURSOR_PRUNED"


def stopped_error(client) -> dict | None:
    """The node's replication error if its agent stopped on one (``code``, ``message``,
    ``hint``): CURSOR_PRUNED, WRONG_CLUSTER, SCHEMA_MISMATCH...; None otherwise or if it
    cannot tell."""
    try:
        st = client.get("/v1/status")
    except (NodeUnreachable, NodeRefused):
        return None
    agent = (st.get("agent") or {}) if isinstance(st, dict) else {}
    err = agent.get("error") or {}
    if not isinstance(err, dict) or not (agent.get("state") == "stopped"
                                         or err.get("code") == CURSOR_PRUNED):
        return None
    return {"code": str(err.get("code", "")), "message": str(err.get("message", "")),
            "hint": str(err.get("hint", ""))}


def _range(e: dict) -> str:
    return f"#{e['first']}" if e["first"] == e["last"] else f"#{e['first']}-#{e['last']}"


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
    configs = [load(path) for path in args.config]
    hub_url = configs[0].hub_url if configs else None
    # The hub first: what it counted as delivered must be older than what nodes report.
    doc, hub_why = hub_status(hub_url) if hub_url else (None, "no hub_url")
    for cfg in configs:
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
    held = None
    if doc is not None:
        held, hub_why = hub_origins(hub_url, doc=doc)
    result["hub_unreachable"] = hub_why or None
    result["beyond_hub"] = beyond_hub(reports, held) if held is not None else None
    if result["beyond_hub"] and result["beyond_hub"]["lost"]:
        # The origin was asked before the holders, and it may have written since: ask it
        # again, so a write newer than its report is not taken for one it lost.
        for e in result["beyond_hub"]["lost"]:
            origin_node = e["origin"].rsplit("/", 1)[0]
            if origin_node in clients:
                with contextlib.suppress(NodeUnreachable, NodeRefused):
                    reports[origin_node] = clients[origin_node].get("/v1/digests")
        result["beyond_hub"] = beyond_hub(reports, held)
    lost = result["beyond_hub"]["lost"] if held is not None else []
    result["lost_at_hub"] = bool(lost)
    stops = {n: e for n, cl in clients.items() if (e := stopped_error(cl)) is not None}
    pruned = {n: e for n, e in stops.items() if e["code"] == CURSOR_PRUNED}
    stopped = {n: e for n, e in stops.items() if e["code"] != CURSOR_PRUNED}
    result["hub_pruned"] = (doc or {}).get("pruned")
    result["cursor_pruned"] = pruned
    result["replication_stopped"] = stopped
    gaps = {n: g for n, g in skipped(reports, doc).items() if n not in stops} if held else {}
    result["skipped"] = gaps
    if stops or gaps or len(reports) < 2:
        result["converged"] = False
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
        if hub_why:
            print(f"the hub did not answer: {hub_why}; events it lost cannot be told from "
                  "events not delivered yet")
        for e in (result["beyond_hub"] or {}).get("repushing", []):
            print(f"the hub lost {e['origin']} {_range(e)}; {e['origin'].rsplit('/', 1)[0]} "
                  "still holds them and pushes them again")
        for e in (result["beyond_hub"] or {}).get("relaying", []):
            print(f"the hub lost {e['origin']} {_range(e)}; {', '.join(e['relayed_by'])} "
                  "kept the signed batches and push(es) them again")
        for e in (result["beyond_hub"] or {}).get("unconfirmed", []):
            print(f"the hub lost {e['origin']} {_range(e)} (held by {', '.join(e['held_by'])}); "
                  f"{e['origin'].rsplit('/', 1)[0]} was not asked: add its config to tell "
                  "whether it can push them again")
        for e in lost:
            print(f"LOST AT THE HUB: {e['origin']} {_range(e)} is held only by "
                  f"{', '.join(e['held_by'])}; the hub holds {e['origin']} up to "
                  f"#{e['hub_holds']} and {e['origin'].rsplit('/', 1)[0]} itself up to "
                  f"#{e['origin_holds']}. Nothing will deliver these events to the other "
                  "nodes: see 'Events lost at the hub' in docs/how-to/operate.md.")
        for n, e in pruned.items():
            print(f"NODE {n} CANNOT GET EVENTS FROM THE HUB: {e['message']}. Try: {e['hint']}")
        for n, e in stopped.items():
            print(f"REPLICATION STOPPED AT NODE {n}: {e['code']}: {e['message']}. "
                  f"Try: {e['hint']}")
        for n, g in gaps.items():
            what = ", ".join(f"{e['origin']} {_range(e)}" for e in g[:5])
            print(f"NODE {n} SKIPPED EVENTS: it lacks {what}, which the hub holds, though the "
                  "hub counts it as caught up; no pull will bring them (its cursor moved past "
                  "them, as after a hub store put back by hand). Try: restore that node from "
                  "a backup taken before (it pulls again from there); see 'A hub store put "
                  "back by hand' in docs/how-to/operate.md.")
        if failed:
            print(f"NOT VERIFIED: {', '.join(failed)} did not answer, so nothing can be said "
                  "about convergence.")
        elif pruned:
            print(f"NOT CONSISTENT: {', '.join(pruned)} lack(s) events the hub pruned "
                  "(above); waiting will not help. See 'Restoring after a hub prune' in "
                  "docs/how-to/operate.md.")
        elif lost:
            print("NOT CONSISTENT: events are lost at the hub (above); waiting will not "
                  "help.")
        elif stopped:
            print(f"NOT CONVERGING: replication is stopped at {', '.join(stopped)} (above); "
                  "waiting will not help until that is fixed.")
        elif gaps:
            print(f"NOT CONSISTENT: {', '.join(gaps)} skipped events (above); waiting will "
                  "not help.")
        elif hub_why:
            print("NOT VERIFIED: the hub did not answer.")
        elif len(reports) < 2:
            print("Only one node was asked: nothing to compare it with (give every node's "
                  "config with -c).")
        elif result["converged"]:
            print("All nodes hold the same events and the same state: converged.")
        elif result["consistent"]:
            print("Consistent: nodes with the same events agree; some are not caught up yet.")
    if failed or hub_why:
        return EXIT_UNAVAILABLE
    return (0 if result["consistent"] and not lost and not pruned and not stopped and not gaps
            else 1)
