"""Staging end to end with real processes: a hub and two office nodes on loopback.

An Excel roster is imported, reviewed and applied at north with the `riversync` commands
(which go through the running node's API), registration emails are ingested at south,
both offices converge, and an export is written at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from riversync.node.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "leagues"
WAIT = 60

pytestmark = pytest.mark.slow


def cli(*argv, token=None):
    env = dict(os.environ)
    env.pop("RIVERSYNC_TOKEN", None)
    if token:
        env["RIVERSYNC_TOKEN"] = token
    p = subprocess.run([sys.executable, "-m", "riversync.cli", *argv], capture_output=True,
                       text=True, timeout=WAIT, env=env)
    return p.returncode, p.stdout, p.stderr


def test_excel_at_north_email_at_south_converge(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=EXAMPLES / "schema.toml",
                     sync_interval_s=1, realtime=True).create()
    try:
        c.start_all()
        north_cfg, south_cfg = str(c.node_configs["north"]), str(c.node_configs["south"])
        op = c.client("north")
        for row in json.loads((EXAMPLES / "north.json").read_text())["rows"]:
            op.post(f"/v1/tables/{row['table']}/rows", {"pk": row["pk"], "values": row["values"]})
        before = c.digests("north")["state"]
        # a refused file changes nothing, through the running node
        code, out, err = cli("import", "xlsx", str(ROOT / "tests" / "data" / "C27-legacy.xls"),
                             "--table", "players", "-c", north_cfg)
        assert code == 2 and "XLSX_LEGACY" in err
        code, out, err = cli("import", "xlsx", str(EXAMPLES / "north-roster.xlsx"), "--table",
                             "players", "-c", north_cfg, "--json")
        assert code == 0, err
        batch = json.loads(out)["batch"]["id"]
        assert c.digests("north")["state"] == before  # staged, nothing applied yet
        clerk = c.tokens["north-clerk"]
        code, out, err = cli("staging", "apply", str(batch), "-c", north_cfg, token=clerk)
        assert code != 0 and "FORBIDDEN" in err
        code, out, err = cli("staging", "apply", str(batch), "-c", north_cfg)
        assert code == 0 and "6 change(s)" in out, err
        # the head file follows the staged commit: a copy put back would be noticed
        head = Path(str(c.node_config("north").db_path) + ".head").read_text().split(":")
        assert int(head[0]) == c.status("north")["epoch"] and int(head[1]) >= 6

        mail = Path(c.node_config("south").staging_email_dir)
        mail.mkdir(parents=True, exist_ok=True)
        for f in sorted((EXAMPLES / "mail").iterdir()):
            shutil.copy(f, mail / f.name)
        code, out, err = cli("ingest", "email", "-c", south_cfg, "--json")
        assert code == 0, err
        staged = json.loads(out)["staged"]
        assert len(staged) == 3
        for s in staged:
            code, out, err = cli("staging", "apply", str(s["batch"]), "-c", south_cfg)
            assert code == 0, err

        c.wait_for("convergence", c.converged, WAIT)
        south_players = {r["player_id"] for r in c.client("south").get(
            "/v1/tables/players/rows?limit=500")["rows"]}
        assert {"P-N101", "P-N107", "P-S101", "P-S104"} <= south_players
        assert "P-N106" not in south_players  # the invalid row never left staging
        audit = c.client("north").get("/v1/audit?limit=500")["audit"]
        assert sum(1 for e in audit if e["source"] == f"local:staging:{batch}") == 6

        out_file = tmp_path / "north-league.xlsx"
        code, out, err = cli("export", "xlsx", str(out_file), "--scope", "league=L-N1",
                             "-c", north_cfg)
        assert code == 0, err
        wb = openpyxl.load_workbook(out_file)
        assert "_riversync" in wb.sheetnames and wb["leagues"]["A2"].value == "L-N1"
    finally:
        c.stop_all()
