"""`riversync node serve` with a bad key file: one `riversync:` line, a `Try:` line, exit 2,
no traceback, and nothing created (the key is checked before anything starts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(north_dir):
    return north_dir


def spoil_wrong_node(d: Path) -> None:
    shutil.copy(d / "keys" / "south.key", d / "keys" / "north.key")


def spoil_mode(d: Path) -> None:
    os.chmod(d / "keys" / "north.key", 0o644)


def spoil_missing(d: Path) -> None:
    os.unlink(d / "keys" / "north.key")


def spoil_hex(d: Path) -> None:
    (d / "keys" / "north.key").write_text("zz" * 32)
    os.chmod(d / "keys" / "north.key", 0o600)


@pytest.mark.parametrize("spoil,words", [
    (spoil_wrong_node, "not the key the roster lists"),
    (spoil_mode, "readable by others"),
    (spoil_missing, "key file not found"),
    (spoil_hex, "64 hex digits"),
])
def test_a_bad_key_file_is_one_line_a_hint_and_exit_2(cluster, spoil, words):
    spoil(cluster)
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "node", "serve", "-c",
                        "node-north.toml"], cwd=cluster, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("riversync:", "Try:"))]
    assert len(lines) == 2 and lines[0].startswith("riversync: ") and words in lines[0]
    assert lines[1].startswith("Try: ")
    assert not (cluster / "north.db").exists()
