"""``riversync demo --json``: converges, and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RIVERSYNC = Path(sys.executable).parent / "riversync"


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
    assert [s["name"] for s in summary["steps"]][-1] == "converged"
    assert summary["running"] is False
    pids = [pid for pid in summary["pids"].values() if pid]
    assert len(pids) == 3
    assert not [pid for pid in pids if alive(pid)]
    # the explanations went to stderr, in plain words
    assert "Stop the hub" in p.stderr and "converged" in p.stderr.lower()


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
