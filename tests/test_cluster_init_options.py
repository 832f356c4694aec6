"""`riversync cluster init`: the hub listens where --hub-url says, and the cluster gets
its schema.toml (the example by default, or --schema), checked before anything is written."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "leagues" / "schema.toml"


def init(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "riversync.cli", "cluster", "init", *argv],
                          capture_output=True, text=True, timeout=60)


def test_the_hub_listens_on_the_port_of_hub_url(tmp_path):
    p = init(str(tmp_path / "c"), "--offices", "north,south",
             "--hub-url", "http://127.0.0.1:18700")
    assert p.returncode == 0, p.stderr
    hub = tomllib.loads((tmp_path / "c" / "hub.toml").read_text())
    node = tomllib.loads((tmp_path / "c" / "node-north.toml").read_text())
    assert hub["listen_port"] == 18700
    assert node["hub_url"] == "http://127.0.0.1:18700"


def test_the_example_schema_is_copied_by_default_and_schema_names_another(tmp_path):
    p = init(str(tmp_path / "a"), "--offices", "north")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a" / "schema.toml").read_bytes() == EXAMPLE.read_bytes()
    assert "schema:" in p.stdout
    mine = tmp_path / "mine.toml"
    mine.write_text('version = 3\n[tables.things]\nprimary_key = "id"\n'
                    '[tables.things.columns]\nid = "text"\n')
    p = init(str(tmp_path / "b"), "--offices", "north", "--schema", str(mine))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b" / "schema.toml").read_text() == mine.read_text()


def test_a_bad_or_missing_schema_creates_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n")
    p = init(str(tmp_path / "c"), "--offices", "north", "--schema", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr and "Try:" in p.stderr
    assert not (tmp_path / "c").exists()
    p = init(str(tmp_path / "c"), "--offices", "north", "--schema", str(tmp_path / "no.toml"))
    assert p.returncode == 3 and "no schema file" in p.stderr
    assert not (tmp_path / "c").exists()
