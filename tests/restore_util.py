"""Shared helpers for the restore tests that run a real hub and real nodes
(node/localcluster.py): the CLI with --json, writes at north, and what an office holds."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from riversync.node.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "examples" / "leagues" / "schema.toml"
RIVERSYNC = Path(sys.executable).parent / "riversync"


def run(*args: str) -> dict:
    """Run a riversync command with --json; it must succeed."""
    p = subprocess.run([str(RIVERSYNC), *args, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def add(c: LocalCluster, *pks: str) -> list[tuple[int, int]]:
    """Create players at north, one request each; returns their (epoch, seq)."""
    cl = c.client("north", "north-clerk")
    out = []
    for pk in pks:
        ev = cl.post("/v1/tables/players/rows", {"pk": pk, "values": {"full_name": pk}})
        out.extend((e["epoch"], e["seq"]) for e in ev["events"])
    return out


def players(c: LocalCluster, office: str) -> set[str]:
    """The player ids an office holds."""
    rows = c.client(office).get("/v1/tables/players/rows?limit=1000")["rows"]
    return {r["player_id"] for r in rows}


@contextlib.contextmanager
def running_cluster(tmp_path):
    """A hub and the nodes north and south as processes (realtime, 1 s sync), always
    stopped at the end."""
    c = LocalCluster(tmp_path / "c", ["north", "south"], schema=SCHEMA, sync_interval_s=1,
                     realtime=True).create()
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()
