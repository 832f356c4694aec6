"""``riversync status``: a node's sync health, as words or JSON, and as the exit code.

Exit codes: 0 ok, 1 warning, 2 critical (also when the node does not answer: an office
whose node is down is the most critical state there is).
"""

from __future__ import annotations

import json
import time

from riversync.node.client import NodeRefused, NodeUnreachable

from ._nodecfg import add_config_arg, client_for, load, not_a_node, refusal

EXIT = {"ok": 0, "warning": 1, "critical": 2}


def register(subparsers) -> None:
    p = subparsers.add_parser("status", help="a node's sync health (exit 0 ok, 1 warning, "
                              "2 critical)")
    add_config_arg(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=cmd_status)


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    s = max(0, now - ts)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def _lag(lag) -> str:
    return "unknown (no pull yet)" if lag is None else f"{lag} hub sequence numbers"


def render(st: dict) -> str:
    now = st.get("now", time.time())
    agent = st.get("agent") or {}
    lines = [
        f"node {st['node_id']} (office {st['office']}, epoch {st.get('epoch')}): "
        f"{st['level'].upper()}",
        f"  sync:      {agent.get('state', '?')}; last push {_ago(st.get('last_push_ok'), now)},"
        f" last pull {_ago(st.get('last_pull_ok'), now)}",
        f"  queue:     {st.get('outbox', 0)} events wait for the hub",
        f"  inbound:   lag {_lag(st.get('inbound_lag'))}; "
        f"{st.get('replay_failures_consecutive', 0)} failed replays in a row",
        f"  conflicts: {st.get('open_conflicts', 0)} open; {st.get('parked', 0)} parked events",
    ]
    if agent.get("error"):
        e = agent["error"]
        lines.append(f"  last error: {e.get('code')}: {e.get('message')}")
        if e.get("hint"):
            lines.append(f"  what to do: {e['hint']}")
    for r in st.get("reasons", []):
        lines.append(f"  {r['level'].upper()}: {r['message']} [{r['code']}]")
    return "\n".join(lines)


def cmd_status(args) -> int:
    cfg = load(args.config)
    client = client_for(cfg, args.token, timeout_s=10.0)
    try:
        st = client.get("/v1/status")
    except NodeUnreachable as e:
        if args.json:
            print(json.dumps({"node_id": cfg.node_id, "level": "critical",
                              "reasons": [{"level": "critical", "code": "NODE_DOWN",
                                           "message": str(e)}]}))
        else:
            print(f"node {cfg.node_id}: CRITICAL\n  the node does not answer: {e}")
        return EXIT["critical"]
    except NodeRefused as e:
        # A refusal (a bad token: exit 2) must never read as "warning" (1) to monitoring.
        raise refusal(e, client.base_url) from None
    if not isinstance(st, dict) or "node_id" not in st or "level" not in st:
        raise not_a_node(client.base_url)
    print(json.dumps(st, indent=2) if args.json else render(st))
    return EXIT.get(st.get("level"), 2)
