"""`riversync verify` on real nodes: a silent node is named and nothing is called
converged; a node parking events of a newer schema is reported as waiting for an upgrade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from riversync.node.localcluster import LocalCluster, update_toml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"


def verify(c: LocalCluster) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "riversync.cli", "verify", "--json"]
    for office in c.offices:
        argv += ["-c", str(c.node_configs[office])]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    text = subprocess.run(argv[:4] + argv[5:], capture_output=True, text=True, timeout=120)
    return p.returncode, json.loads(p.stdout), text.stdout


def test_a_node_that_does_not_answer_is_named_and_nothing_is_converged(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    try:
        c.start_all()
        c.client("north", "north-clerk").post("/v1/tables/players/rows",
                                              {"pk": "P-1", "values": {"full_name": "Kim"}})
        c.wait_for("convergence", c.converged, 30)
        code, res, text = verify(c)
        assert code == 0 and res["converged"] is True
        c.stop("south")
        code, res, text = verify(c)
        assert code == 3
        assert res["converged"] is False and res["consistent"] is None
        assert res["complete"] is False and list(res["unreachable"]) == ["south"]
        assert "south did not answer" in text and "NOT VERIFIED" in text
        assert "converged." not in text
    finally:
        c.stop_all()


def test_events_parked_for_a_newer_schema_are_reported_as_such(tmp_path):
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    newer = tmp_path / "schema-v2.toml"
    newer.write_text(SCHEMA.read_text().replace("version = 1", "version = 2", 1))
    update_toml(c.node_configs["south"], schema_path=str(newer))
    try:
        c.start_all()
        c.client("south", "south-clerk").post("/v1/tables/players/rows",
                                              {"pk": "P-S", "values": {"full_name": "Sam"}})

        def parked_at_north() -> bool:
            return c.status("north")["parked"] >= 1

        c.wait_for("north parks the newer event", parked_at_north, 30)
        code, res, text = verify(c)
        assert code == 0, text
        assert res["converged"] is False and res["consistent"] is True
        lagging = [g for g in res["groups"] if g["newer_schema_parked"]]
        assert lagging and lagging[0]["newer_schema_parked"] == {"north": 1}
        assert "DIFFERENT STATES" not in text and "newer schema" in text
    finally:
        c.stop_all()
