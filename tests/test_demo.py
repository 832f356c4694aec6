"""``riversync demo --json``: converges, takes its data from the example files, and leaves
no process behind.

What the demo claims about its imports is checked here against the files it leaves: each
office's SQLite database (opened read-only after every process stopped) and the export
workbook, read back with openpyxl.
"""

from __future__ import annotations

import email
import json
import os
import sqlite3
import subprocess
import sys
from email import policy
from pathlib import Path

import openpyxl
import pytest

pytestmark = pytest.mark.slow

RIVERSYNC = Path(sys.executable).parent / "riversync"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "leagues"
STEPS = ["cluster", "start", "load", "excel", "email", "replicated", "edits", "outage",
         "return", "conflict", "export", "converged"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; /proc says so on Linux
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_demo_converges_and_stops_everything(tmp_path):
    d = tmp_path / "demo"
    p = subprocess.run([str(RIVERSYNC), "demo", "--dir", str(d), "--json"],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert summary["converged"] is True
    offices = summary["offices"]
    assert set(offices) == {"north", "south"}
    assert offices["north"]["digests"]["state"] == offices["south"]["digests"]["state"]
    assert offices["north"]["digests"]["events"] == offices["south"]["digests"]["events"]
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert summary["running"] is False
    pids = [pid for pid in summary["pids"].values() if pid]
    assert len(pids) == 3
    assert not [pid for pid in pids if alive(pid)]
    # the explanations went to stderr, in plain words
    assert "Stop the hub" in p.stderr and "converged" in p.stderr.lower()
    check_excel_import(summary, d)
    check_email_ingest(summary, d)
    check_export(summary, d)


def roster_keys(sheet: str) -> set[str]:
    wb = openpyxl.load_workbook(EXAMPLES / "north-roster.xlsx", read_only=True)
    try:
        return {r[0] for r in wb[sheet].iter_rows(min_row=2, values_only=True) if r[0]}
    finally:
        wb.close()


def email_player_keys(folder: str) -> set[str]:
    """The player ids the example messages name, read with the standard email package."""
    keys = set()
    for f in (EXAMPLES / folder).glob("*.eml"):
        msg = email.message_from_bytes(f.read_bytes(), policy=policy.default)
        text = msg.get_body(preferencelist=("plain", "html")).get_content()
        for line in text.replace("<br>", "\n").replace("<p>", "\n").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "player_id":
                keys.add(value.strip().split("<")[0])
    return keys


def rows(db: Path, table: str, key: str) -> dict[str, dict]:
    """Live rows of a replicated table, read straight from the office's SQLite file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return {r[key]: dict(r) for r in con.execute(f'SELECT * FROM "{table}"')}
    finally:
        con.close()


def check_excel_import(summary, d: Path) -> None:
    imp = summary["excel_import"]
    players, regs = imp["batches"]
    assert (players["table"], regs["table"]) == ("players", "registrations")
    # validation did its job: the roster's impossible date (31/02) is the one invalid row
    assert players["rows_read"] == len(roster_keys("players")) == 7
    assert (players["valid"], players["invalid"]) == (6, 1)
    assert players["invalid_keys"] == ["P-N106"]
    assert list(players["invalid_by_reason"]) == [
        "born_on: … is not a real date (no such day in that month, or no such month)"]
    assert players["unchanged_before_apply"] is True
    assert players["state"] == "applied" and players["events"] == 6
    assert regs["valid"] == regs["events"] == len(roster_keys("registrations")) == 6
    # the applied rows are in south's own database, the invalid one nowhere
    south_players = rows(d / "south.db", "players", "player_id")
    north_players = rows(d / "north.db", "players", "player_id")
    applied = roster_keys("players") - {"P-N106"}
    assert applied <= set(south_players) and "P-N106" not in south_players
    assert "P-N106" not in north_players
    assert south_players["P-N102"]["born_on"] == "2012-09-17"  # text date 17/09/2012
    assert south_players["P-N101"]["phone"] == "0555 1101"
    south_regs = rows(d / "south.db", "registrations", "registration_id")
    assert roster_keys("registrations") <= set(south_regs)
    assert south_regs["R-N106"]["player_id"] == "P-N107"
    replicated = next(s for s in summary["steps"] if s["name"] == "replicated")
    assert set(replicated["excel_rows_at_south"]["players"]) == applied
    assert replicated["digests_equal"] is True


def check_email_ingest(summary, d: Path) -> None:
    ing = summary["email_ingest"]
    expected = email_player_keys("mail")
    assert expected == {"P-S101", "P-S102", "P-S103", "P-S104"}
    assert email_player_keys("mail-demo") == {"P-N001"}
    assert ing["messages"] == 4 and len(ing["batches"]) == 4
    assert set(ing["applied_keys"]) == expected
    assert sum(b["events"] for b in ing["batches"]) == 4
    north_players = rows(d / "north.db", "players", "player_id")
    assert expected <= set(north_players)
    assert north_players["P-S104"]["full_name"] == "Zöe Weiß"  # quoted-printable UTF-8
    assert north_players["P-S103"]["born_on"] == "2012-07-19"  # from the HTML-only message
    # south may not change north's player: staged invalid, rejected, nowhere applied
    assert ing["rejected_keys"] == ["P-N001"]
    (wrong,) = [b for b in ing["batches"] if b["invalid_keys"]]
    assert wrong["state"] == "rejected" and wrong["events"] == 0
    for db in ("north.db", "south.db"):
        assert rows(d / db, "players", "player_id")["P-N001"]["phone"] == "555-1001"
    drop = Path(ing["folder"])
    assert sorted(p.name for p in (drop / "processed").iterdir()) == sorted(
        p.name for p in [*(EXAMPLES / "mail").glob("*.eml"),
                         *(EXAMPLES / "mail-demo").glob("*.eml")])
    assert not list(drop.glob("*.eml"))  # nothing left waiting, nothing deleted


def check_export(summary, d: Path) -> None:
    exp = summary["export"]
    out = Path(exp["file"])
    assert out.parent == d and out.exists() and out.stat().st_size == exp["bytes"]
    wb = openpyxl.load_workbook(out)
    assert {"leagues", "sessions", "teams", "registrations", "_riversync"} <= set(wb.sheetnames)
    assert wb["_riversync"]["A1"].value == "riversync export: do not re-import"
    meta = {r[0]: r[1] for r in wb["_riversync"].iter_rows(min_row=2, values_only=True)}
    assert (meta["node"], meta["scope"]) == ("north", "league=L-N1")
    assert str(meta["snapshot_hlc"]) == str(exp["snapshot_hlc"])
    assert wb["leagues"]["A2"].value == "L-N1"
    exported_regs = {r[0] for r in wb["registrations"].iter_rows(min_row=2, values_only=True)}
    assert roster_keys("registrations") <= exported_regs  # the Excel rows are in the snapshot
    # uploading the export back was caught and kept on record, not applied
    assert exp["reimport_confirm_required"] is True and exp["reimport_flags"]
    assert exp["reimport_state"] == "rejected"


def test_demo_refuses_a_directory_that_holds_files(tmp_path):
    (tmp_path / "x").write_text("keep me")
    p = subprocess.run([str(RIVERSYNC), "demo", "--dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "not empty" in p.stderr
    assert (tmp_path / "x").read_text() == "keep me"


def test_a_failing_step_still_stops_every_process(tmp_path):
    from riversync.node import demo

    def boom(d):
        raise RuntimeError("a step failed on purpose")

    said: list[str] = []
    steps = [demo.STEPS[0], demo.STEPS[1], demo.Step("boom", "Fail", boom)]
    summary = demo.run(tmp_path / "d", keep_running=False, say=said.append, steps=steps)
    assert summary["converged"] is False
    assert "a step failed on purpose" in summary["error"]
    pids = [pid for pid in summary["pids"].values() if pid]
    assert len(pids) == 3 and not [pid for pid in pids if alive(pid)]
    assert any("failed" in line for line in said)


def test_ctrl_c_stops_every_process(tmp_path):
    from riversync.node import demo

    def interrupt(d):
        raise KeyboardInterrupt

    steps = [demo.STEPS[0], demo.STEPS[1], demo.Step("interrupt", "Ctrl-C", interrupt)]
    seen = {}

    def say(line: str) -> None:
        if "pid" in line:
            seen[line.split()[0]] = int(line.split()[2])

    with pytest.raises(KeyboardInterrupt):
        demo.run(tmp_path / "d", keep_running=False, say=say, steps=steps)
    assert len(seen) == 3 and not [pid for pid in seen.values() if alive(pid)]
