"""``riversync demo``: a hub and two offices on this machine, shown converging.

The demo is a list of named steps (``STEPS``); each explains itself in plain words, does
real work against real processes through the same API an operator's commands use, and
returns facts for the ``--json`` summary.  Its data comes from real files under
``examples/leagues``: JSON rows typed in through the API, an Excel roster staged,
validated and applied at north, registration emails dropped in south's mail folder and
ingested there, and at the end an Excel export written beside the cluster.  New steps
slot in by adding a ``Step`` to the list.  Whatever happens, including Ctrl-C and a failing step,
every process the demo started is stopped unless ``--keep-running`` asks otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
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
ROSTER = "north-roster.xlsx"  # north's Excel roster: a players and a registrations sheet
ROSTER_SHEETS = ("players", "registrations")  # sheet = table, applied in this order
EXPORT_SCOPE = "league=L-N1"  # what north exports at the end
EXPORT_FILE = "north-league-L-N1.xlsx"  # written in the demo directory


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


def _pks(client, table: str) -> set[str]:
    key = _key_of(client, table)
    return {r[key] for r in client.get(f"/v1/tables/{table}/rows?limit=1000")["rows"]}


def _key_of(client, table: str) -> str:
    for t in client.get("/v1/tables")["tables"]:
        if t["name"] == table:
            return t["primary_key"]
    raise KeyError(f"the node has no table {table}")


def step_excel(d: Demo) -> dict:
    clerk, ops = d.clerk("north"), d.operator("north")
    path = examples_dir() / ROSTER
    content = base64.b64encode(path.read_bytes()).decode()
    d.say(f"North's clerk uploads examples/leagues/{ROSTER} to north's node, one sheet at a "
          "time (as `riversync import xlsx FILE --table players -c node-north.toml` does). "
          "An import only stages rows; nothing reaches the tables before an operator "
          "applies it.")
    batches = []
    for sheet in ROSTER_SHEETS:
        before = d.c.digests("north")["state"]
        staged = clerk.post("/v1/staging/xlsx", {"table": sheet, "sheet": sheet,
                                                 "file_name": ROSTER, "content_b64": content})
        bid, s = staged["batch"]["id"], staged["summary"]
        d.say(f"  sheet {sheet!r} -> staging batch {bid}: {s['rows_read']} rows read, "
              f"{s['valid']} valid, {s['invalid']} invalid")
        for reason, n in s["invalid_by_reason"].items():
            d.say(f"    invalid, {n} row(s): {reason}")
        invalid = clerk.get(f"/v1/staging/{bid}?status=invalid")["rows"]
        for r in invalid:
            why = "; ".join(f"{e['column']}: {e['message']}" if e.get("column")
                            else e["message"] for e in r["errors"])
            d.say(f"    row {r['row']} ({r['key']}): {why}")
        unchanged = d.c.digests("north")["state"] == before
        if not unchanged:
            raise RuntimeError(f"staging batch {bid} changed north's state before any apply")
        applied = ops.post(f"/v1/staging/{bid}/apply", {})["batch"]
        d.say(f"    north's state digest did not move while the batch waited; north's "
              f"operator applied it (riversync staging apply {bid}): {applied['events']} "
              f"events" + (", the invalid row stays in staging for the record"
                           if invalid else ""))
        batches.append({"batch": bid, "sheet": sheet, "table": sheet,
                        "sha256": s["sha256"], "rows_read": s["rows_read"],
                        "valid": s["valid"], "invalid": s["invalid"],
                        "invalid_by_reason": s["invalid_by_reason"],
                        "invalid_keys": [r["key"] for r in invalid],
                        "applied_keys": sorted({r["key"] for r in clerk.get(
                            f"/v1/staging/{bid}?status=valid")["rows"]}),
                        "state": applied["state"], "events": applied["events"],
                        "unchanged_before_apply": unchanged})
    facts = {"file": ROSTER, "office": "north", "batches": batches}
    d.facts["excel_import"] = facts
    return facts


def _drop(files: list[Path], folder: Path) -> None:
    """Copy under a temporary name, then rename: the node's watcher never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        tmp = folder / (f.name + ".part")
        shutil.copyfile(f, tmp)
        os.replace(tmp, folder / f.name)


def _row_text(r: dict) -> str:
    what = r["values"].get("full_name") or ", ".join(
        f"{k} {v}" for k, v in r["values"].items() if v is not None and k != "player_id")
    text = f"{r['key']} {what} ({r['status']}"
    if r["status"] == "invalid":
        text += ": " + "; ".join(e["message"] for e in r["errors"])
    return text + ")"


def step_email(d: Demo) -> dict:
    ops = d.operator("south")
    ex = examples_dir()
    registrations = sorted((ex / "mail").glob("*.eml"))
    others = sorted((ex / "mail-demo").glob("*.eml"))
    drop = Path(d.c.node_config("south").staging_email_dir)
    _drop(registrations + others, drop)
    d.say(f"{len(registrations)} registration emails (examples/leagues/mail/*.eml: plain "
          f"text, HTML-only, encoded headers) and {len(others)} request about a player "
          f"(examples/leagues/mail-demo/) land in south's drop folder {drop}. South's "
          "operator runs the ingestion now (riversync ingest email -c node-south.toml) "
          "instead of waiting for the node's watcher.")
    res = ops.post("/v1/staging/email/ingest", {})
    if res["failed"]:
        raise RuntimeError("email ingestion failed: " + "; ".join(
            f"{f['file']}: {f['code']}" for f in res["failed"]))
    # The node's own watcher may have taken some files first: what counts is what waits.
    pending = sorted((b for b in ops.get("/v1/staging?state=pending")["batches"]
                      if b["kind"] == "email"), key=lambda b: b["id"])
    if not pending:
        raise RuntimeError(f"no email was staged from {drop}")
    staged = []
    for b in pending:
        shown = ops.get(f"/v1/staging/{b['id']}")
        msg = shown.get("message") or {}
        rows = shown["rows"]
        d.say(f"  {msg.get('file', b['source'])}: from {msg.get('from', '?')}, subject "
              f"{msg.get('subject', '')!r}")
        d.say(f"    -> batch {b['id']}, {b['table']}: " + ", ".join(map(_row_text, rows)))
        staged.append({"batch": b["id"], "file": msg.get("file"), "table": b["table"],
                       "keys": [r["key"] for r in rows if r["status"] == "valid"],
                       "invalid_keys": [r["key"] for r in rows if r["status"] != "valid"],
                       "events": 0})
    for s in staged:
        if s["keys"]:
            done = ops.post(f"/v1/staging/{s['batch']}/apply", {})["batch"]
        else:  # nothing south may apply: kept on record, and the office is told why
            done = ops.post(f"/v1/staging/{s['batch']}/reject",
                            {"reason": "not south's row; forwarded to its office"})["batch"]
        s["state"], s["events"] = done["state"], done["events"]
    processed = sorted(p.name for p in (drop / "processed").iterdir()) \
        if (drop / "processed").is_dir() else []
    applied = [s for s in staged if s["state"] == "applied"]
    rejected = [s for s in staged if s["state"] == "rejected"]
    d.say(f"South's operator applied {len(applied)} batches "
          f"({sum(s['events'] for s in applied)} events)"
          + (f" and rejected {len(rejected)} (batch "
             f"{', '.join(str(s['batch']) for s in rejected)}: a row south does not own "
             "never becomes an event)" if rejected else "")
          + f". The messages moved to {drop / 'processed'} ({len(processed)} files); "
          "none was deleted.")
    facts = {"office": "south", "folder": str(drop),
             "messages": len(registrations) + len(others), "batches": staged,
             "processed": processed,
             "applied_keys": sorted(k for s in applied for k in s["keys"]),
             "rejected_keys": sorted(k for s in rejected for k in s["invalid_keys"])}
    d.facts["email_ingest"] = facts
    return facts


def step_staged_replicated(d: Demo) -> dict:
    took = d.wait_converged("the imported rows to reach the other office")
    excel, email = d.facts["excel_import"], d.facts["email_ingest"]
    at_south = {t: _pks(d.clerk("south"), t) for t in ROSTER_SHEETS}
    at_north = _pks(d.clerk("north"), "players")
    excel_arrived = {b["table"]: sorted(set(b["applied_keys"]) & at_south[b["table"]])
                     for b in excel["batches"]}
    invalid_leaked = sorted(k for b in excel["batches"] for k in b["invalid_keys"]
                            if k in at_south[b["table"]])
    email_arrived = sorted(set(email["applied_keys"]) & at_north)
    digests = {o: d.c.digests(o)["state"] for o in OFFICES}
    same = digests["north"] == digests["south"]
    d.say(f"Within {took} s each office held the other's imports:")
    for table, keys in excel_arrived.items():
        d.say(f"  at south, from north's workbook: {len(keys)} {table} ({keys[0]} … "
              f"{keys[-1]})" if keys else f"  at south: no {table} from north's workbook")
    d.say(f"  at north, from south's emails: {len(email_arrived)} players "
          f"({', '.join(email_arrived)})")
    if invalid_leaked:
        raise RuntimeError(f"invalid staged rows reached south: {invalid_leaked}")
    d.say("  the invalid roster row never left north's staging; state digests: north "
          f"{digests['north'][:16]}…  south {digests['south'][:16]}…  "
          + ("equal." if same else "DIFFERENT."))
    if not same:
        raise RuntimeError("the offices did not converge after the imports")
    return {"replicated_in_s": took, "excel_rows_at_south": excel_arrived,
            "email_rows_at_north": email_arrived, "digests_equal": same}


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
                   {"pk": f"P-N2{i:02d}", "values": {"full_name": f"Late North {i}"}})
        south.post("/v1/tables/players/rows",
                   {"pk": f"P-S2{i:02d}", "values": {"full_name": f"Late South {i}"}})
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


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def step_export(d: Demo) -> dict:
    from openpyxl import load_workbook

    from .xlsx_import import META_SHEET

    clerk, ops = d.clerk("north"), d.operator("north")
    res = clerk.post("/v1/export/xlsx", {"scope": EXPORT_SCOPE})
    data = base64.b64decode(res["content_b64"])
    out = d.dir / EXPORT_FILE
    _write_file(out, data)
    wb = load_workbook(out, read_only=True)
    try:
        sheets = list(wb.sheetnames)
        meta = [tuple(c for c in row if c is not None)
                for row in wb[META_SHEET].iter_rows(values_only=True)] \
            if META_SHEET in sheets else []
    finally:
        wb.close()
    listing = ", ".join(f"{t} {n}" for t, n in res["tables"].items())
    d.say(f"North's clerk exported {EXPORT_SCOPE} (riversync export xlsx OUT --scope "
          f"{EXPORT_SCOPE} -c node-north.toml): a read-only snapshot at HLC "
          f"{res['snapshot_hlc']}, one sheet per table ({listing} rows) and a {META_SHEET} "
          f"sheet naming node, scope, snapshot and the marker {meta[0][0] if meta else '?'!r}.")
    # The runbook: an export must not be re-imported without validation.  Show it caught.
    again = clerk.post("/v1/staging/xlsx", {"table": "registrations", "sheet": "registrations",
                                            "file_name": EXPORT_FILE,
                                            "content_b64": res["content_b64"]})["batch"]
    rejected = ops.post(f"/v1/staging/{again['id']}/reject",
                        {"reason": "a snapshot export, not new data"})["batch"]
    d.say(f"Uploading that export back is caught: staging batch {again['id']} is flagged "
          f"({', '.join(again['flags']) or 'no flag'}) and "
          + ("needs explicit confirmation; " if again["confirm_required"] else "")
          + "north's operator rejects it, and it stays on record.")
    d.say(f"The export workbook is at {out}")
    facts = {"file": str(out), "scope": EXPORT_SCOPE, "bytes": len(data),
             "snapshot_hlc": res["snapshot_hlc"], "tables": res["tables"], "sheets": sheets,
             "metadata": [[c if isinstance(c, int | float | str) else str(c) for c in r]
                          for r in meta], "reimport_batch": again["id"],
             "reimport_flags": again["flags"],
             "reimport_confirm_required": again["confirm_required"],
             "reimport_state": rejected["state"]}
    d.facts["export"] = facts
    return facts


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
    Step("excel", "Import north's Excel roster: staged, validated, applied", step_excel),
    Step("email", "Ingest registration emails at south", step_email),
    Step("replicated", "The imports reach the other office", step_staged_replicated),
    Step("edits", "Concurrent edits, and an edit the owner's rules refuse", step_edits),
    Step("outage", "Stop the hub: offices keep writing", step_outage),
    Step("return", "Start the hub again: queues drain", step_return),
    Step("conflict", "Resolve the conflict the outage produced", step_conflict),
    Step("export", "Export north's league to a workbook", step_export),
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
        for key in ("excel_import", "email_ingest", "export"):
            summary[key] = d.facts.get(key)
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
        if d.facts.get("export"):
            say(f"The export workbook: {d.facts['export']['file']}")
    return summary
