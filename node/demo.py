"""``riversync demo``: a hub and two offices on this machine, shown converging.

The demo is a list of named steps (``STEPS``); each explains itself in plain words, does
real work against real processes through the same API and commands an operator uses, and
returns facts for the ``--json`` summary.  New steps (Excel or email imports, say) slot in
by adding a ``Step`` to the list.  Whatever happens, including Ctrl-C and a failing step,
every process the demo started is stopped unless ``--keep-running`` asks otherwise.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import NodeRefused
from .localcluster import LocalCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "leagues"
OFFICES = ["north", "south"]
WAIT_S = 30.0  # longest any one wait in the demo may take
OUTAGE_WRITES = 8  # rows each office writes while the hub is away


def examples_dir() -> Path:
    """The example files: beside the source tree, or installed under share/ by a wheel."""
    for cand in (EXAMPLES, Path.cwd() / "examples" / "leagues"):
        if (cand / "schema.toml").exists():
            return cand
    raise FileNotFoundError("examples/leagues/schema.toml not found; run the demo from the "
                            "riversync source tree")


@dataclass
class Demo:
    dir: Path
    say: Callable[[str], None]
    cluster: LocalCluster | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def c(self) -> LocalCluster:
        assert self.cluster is not None
        return self.cluster

    def clerk(self, office: str):
        return self.c.client(office, f"{office}-clerk")

    def operator(self, office: str):
        return self.c.client(office, f"{office}-operator")

    def counts(self, office: str) -> dict[str, int]:
        client = self.clerk(office)
        out = {}
        for t in client.get("/v1/tables")["tables"]:
            rows = client.get(f"/v1/tables/{t['name']}/rows?limit=1000")["rows"]
            out[t["name"]] = len(rows)
        return out

    def wait_converged(self, what: str) -> float:
        t0 = time.monotonic()
        self.c.wait_for(what, self.c.converged, WAIT_S, interval=0.1)
        return round(time.monotonic() - t0, 2)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[Demo], dict | None]


# ---- the steps --------------------------------------------------------------------------


def step_cluster(d: Demo) -> dict:
    ex = examples_dir()
    d.cluster = LocalCluster(d.dir, OFFICES, schema=ex / "schema.toml", sync_interval_s=1,
                             realtime=True).create()
    d.say(f"Made cluster files in {d.dir}: an Ed25519 key per office, roster.toml (offices, "
          "node keys, users with hashed tokens), hub.toml, node-north.toml, node-south.toml, "
          "and the league schema. The nodes sync every second and push on every write.")
    return {"dir": str(d.dir)}


def step_start(d: Demo) -> dict:
    d.c.start_all()
    for name, proc in d.c.procs.items():
        url = d.c.hub_url if name == "hub" else d.c.node_url(name)
        d.say(f"  {name:<6} pid {proc.pid:<7} {url}   log {proc.log.name}")
    d.say("Three separate processes on 127.0.0.1. Open a node's URL in a browser for its "
          "web UI (tokens are in tokens.txt).")
    return {"pids": d.c.pids()}


def _load(d: Demo, office: str, errors: list) -> None:
    try:
        client = d.clerk(office)
        rows = json.loads((examples_dir() / f"{office}.json").read_text())["rows"]
        for r in rows:
            client.post(f"/v1/tables/{r['table']}/rows", {"pk": r["pk"], "values": r["values"]})
    except Exception as e:  # noqa: BLE001 - reported by the step
        errors.append(f"{office}: {e}")


def step_load(d: Demo) -> dict:
    errors: list[str] = []
    threads = [threading.Thread(target=_load, args=(d, o, errors)) for o in OFFICES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    if errors:
        raise RuntimeError("loading example data failed: " + "; ".join(errors))
    took = d.wait_converged("both offices to hold both offices' data")
    counts = {o: d.counts(o) for o in OFFICES}
    d.say("Each office's clerk entered its own leagues, teams, players, registrations and "
          "payments (examples/leagues/north.json and south.json) at the same time, through "
          "its own node's API. Each row belongs to the office that created it.")
    for o in OFFICES:
        listing = ", ".join(f"{n} {t}" for t, n in counts[o].items() if n)
        d.say(f"  {o} now holds {sum(counts[o].values())} rows: {listing}")
    d.say(f"Both offices held everything {took} s after the last write.")
    return {"counts": counts, "replicated_in_s": took}


def step_edits(d: Demo) -> dict:
    north, south = d.clerk("north"), d.clerk("south")
    results: dict[str, Any] = {}

    def edit_north() -> None:
        results["north"] = north.request("PATCH", "/v1/tables/teams/rows/L-N1-T1",
                                         {"values": {"coach": "A. Berg-Lind"}})

    def edit_south() -> None:
        results["south"] = south.request("PATCH", "/v1/tables/players/rows/P-S002",
                                         {"values": {"phone": "555-2222"}})

    threads = [threading.Thread(target=edit_north), threading.Thread(target=edit_south)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    refused = None
    try:
        south.request("PATCH", "/v1/tables/teams/rows/L-N1-T1", {"values": {"coach": "Nobody"}})
    except NodeRefused as e:
        refused = {"code": e.code, "message": e.message}
    took = d.wait_converged("the edits to reach both offices")
    coach_south = south.get("/v1/tables/teams/rows/L-N1-T1")["row"]["coach"]
    d.say("At the same moment north changed a team's coach and south a player's phone; both "
          f"reached the other office within {took} s (south now sees coach {coach_south!r}).")
    if refused:
        d.say(f"South's clerk then tried to change north's team directly: the node refused "
              f"at once ({refused['code']}: {refused['message']}) and nothing changed.")
    return {"refused": refused, "replicated_in_s": took}


def _outbox(d: Demo, office: str) -> int:
    return d.c.status(office)["outbox"]


def step_outage(d: Demo) -> dict:
    d.c.stop("hub")
    d.say("The hub is stopped. Both offices keep working on their own:")
    north, south = d.clerk("north"), d.clerk("south")
    for i in range(1, OUTAGE_WRITES + 1):
        north.post("/v1/tables/players/rows",
                   {"pk": f"P-N1{i:02d}", "values": {"full_name": f"Late North {i}"}})
        south.post("/v1/tables/players/rows",
                   {"pk": f"P-S1{i:02d}", "values": {"full_name": f"Late South {i}"}})
    # A race that only replication can reveal: north's admin takes over south's player
    # P-S001 while south, not yet knowing, edits it.
    admin = d.c.client("north", "admin")
    admin.post("/v1/tables/players/rows/P-S001/transfer", {"owner": "north", "admin": True})
    time.sleep(0.01)
    south.request("PATCH", "/v1/tables/players/rows/P-S001", {"values": {"phone": "555-9999"}})
    queued = {o: _outbox(d, o) for o in OFFICES}
    d.say(f"  each office added {OUTAGE_WRITES} players; their outbound queues hold "
          f"north {queued['north']} and south {queued['south']} events.")
    d.say("  Meanwhile north's admin took player P-S001 over from south, and south's clerk, "
          "who cannot know yet, changed that player's phone.")
    statuses = {o: d.c.status(o) for o in OFFICES}
    for o, st in statuses.items():
        d.say(f"  {o}: status {st['level']}, agent {st['agent']['state']} "
              f"({(st['agent'].get('error') or {}).get('code', '-')})")
    return {"queued": queued}


def step_return(d: Demo) -> dict:
    t0 = time.monotonic()
    d.c.start("hub")
    d.c.wait_for("both queues to drain",
                 lambda: all(_outbox(d, o) == 0 for o in OFFICES), WAIT_S)
    drained = round(time.monotonic() - t0, 2)
    took = d.wait_converged("both offices to converge after the outage")
    d.say(f"The hub is back. Both queues drained to zero {drained} s after it started, "
          f"and the offices hold the same data {took} s later.")
    return {"drained_in_s": drained}


def step_conflict(d: Demo) -> dict:
    ops = d.operator("north")
    listing = ops.get("/v1/conflicts")["conflicts"]
    if not listing:
        raise RuntimeError("expected south's edit of P-S001 in north's conflict queue")
    c = listing[0]
    d.say(f"North's conflict queue holds {len(listing)} entry: {c['kind']} of {c['table']} "
          f"{c['pk']} by {c['user']} (office {c['office']}), cause: {c['cause']}. "
          f"South's queue shows the same conflict: "
          f"{len(d.operator('south').get('/v1/conflicts')['conflicts'])} open.")
    res = ops.post(f"/v1/conflicts/{c['id']}/resolve", {"decision": "accept"})
    d.say(f"North's operator, as the owner now, accepts south's change "
          f"(riversync conflicts resolve {c['id']} --accept).")
    d.c.wait_for("the resolution to reach south",
                 lambda: not d.operator("south").get("/v1/conflicts")["conflicts"], WAIT_S)
    d.wait_converged("convergence after the resolution")
    phones = {o: d.clerk(o).get("/v1/tables/players/rows/P-S001")["row"]["phone"]
              for o in OFFICES}
    d.say(f"The resolution replicated: the conflict is closed at both offices and P-S001's "
          f"phone is {phones['north']} at north and {phones['south']} at south.")
    return {"conflict": c["id"], "cause": c["cause"], "decision": "accept", "phone": phones,
            "resolution_event": res["events"][0]}


def step_converged(d: Demo) -> dict:
    digests = {o: d.c.digests(o) for o in OFFICES}
    statuses = {o: d.c.status(o) for o in OFFICES}
    same_events = digests["north"]["events"] == digests["south"]["events"]
    same_state = digests["north"]["state"] == digests["south"]["state"]
    converged = same_events and same_state and all(s["outbox"] == 0 for s in statuses.values())
    for o in OFFICES:
        st = statuses[o]
        d.say(f"  {o}: state {digests[o]['state'][:16]}…  events {len(digests[o]['events'])} "
              f"origins  queue {st['outbox']}  conflicts {st['open_conflicts']}  "
              f"status {st['level']}")
    d.say("Converged: both offices hold the same events and the same state."
          if converged else "NOT converged: the digests differ (see the logs).")
    d.facts["converged"] = converged
    d.facts["offices"] = {o: {"digests": digests[o], "status": statuses[o]} for o in OFFICES}
    return {"converged": converged}


STEPS: list[Step] = [
    Step("cluster", "Create a cluster", step_cluster),
    Step("start", "Start the hub and both offices", step_start),
    Step("load", "Load each office's league data", step_load),
    Step("edits", "Concurrent edits, and an edit the owner's rules refuse", step_edits),
    Step("outage", "Stop the hub: offices keep writing", step_outage),
    Step("return", "Start the hub again: queues drain", step_return),
    Step("conflict", "Resolve the conflict the outage produced", step_conflict),
    Step("converged", "Both offices converged", step_converged),
]


def run(directory: Path | None, *, keep_running: bool, say: Callable[[str], None],
        steps: list[Step] | None = None) -> dict:
    """Run the steps; returns the summary (``converged``, per-office digests, steps)."""
    d = Demo(dir=Path(directory) if directory else Path(tempfile.mkdtemp(prefix="riversync-demo-")),
             say=say)
    summary: dict[str, Any] = {"converged": False, "dir": str(d.dir), "steps": []}
    t_all = time.monotonic()
    try:
        for i, step in enumerate(steps or STEPS, 1):
            say(f"\n[{i}] {step.title}")
            t0 = time.monotonic()
            facts = step.run(d) or {}
            summary["steps"].append({"name": step.name, "ok": True,
                                     "seconds": round(time.monotonic() - t0, 2), **facts})
    except Exception as e:  # noqa: BLE001 - reported in the summary; processes still stop
        summary["error"] = f"{type(e).__name__}: {e}"
        say(f"\nThe demo failed: {summary['error']}")
    except BaseException as e:  # Ctrl-C: stop everything, then let it end the program
        summary["error"] = f"{type(e).__name__}"
        raise
    finally:
        summary["converged"] = bool(d.facts.get("converged", False))
        summary["offices"] = d.facts.get("offices", {})
        summary["seconds"] = round(time.monotonic() - t_all, 2)
        if d.cluster is not None:
            summary["pids"] = d.cluster.pids()
            if keep_running and "error" not in summary:
                summary["running"] = True
                say(f"\nStill running (--keep-running). Stop with: kill "
                    f"{' '.join(str(p) for p in d.cluster.pids().values() if p)}")
            else:
                d.cluster.stop_all()
                summary["running"] = False
                say(f"\nStopped the hub and both offices. Files and logs stay in {d.dir}.")
    return summary
