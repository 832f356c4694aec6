"""The operator commands are documented, and fail with a clear line and exit code."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from riversync.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
MINE = ("node", "status", "conflicts", "verify", "backup", "restore", "demo")


def _walk(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prefix} {name}")
        elif action.option_strings and "--help" not in action.option_strings:
            yield prefix, action.option_strings


def test_every_node_command_and_option_is_in_the_cli_reference():
    doc = (ROOT / "docs" / "reference" / "cli.md").read_text()
    parser = build_parser()
    seen = 0
    for prefix, options in _walk(parser, "riversync"):
        words = prefix.split()
        if len(words) < 2 or words[1] not in MINE:
            continue
        assert prefix in doc, prefix
        assert any(f"{o} " in doc or f"{o}]" in doc or f"{o}`" in doc for o in options), \
            (prefix, options)
        seen += 1
    assert seen > 10


def test_status_of_a_node_that_does_not_answer_is_critical(tmp_path):
    from riversync import cluster
    from riversync.node.localcluster import free_port, update_toml

    files = cluster.init_cluster(tmp_path / "c", ["north"])
    update_toml(files.node_configs["north"], listen_port=free_port())
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "status", "-c",
                        str(files.node_configs["north"])], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2
    assert "CRITICAL" in p.stdout and "does not answer" in p.stdout


def test_a_bad_config_is_one_line_and_a_hint(tmp_path):
    bad = tmp_path / "node.toml"
    bad.write_text("node_id = 3\n")
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "conflicts", "list", "-c",
                        str(bad)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.startswith("riversync: ") and "Try: " in p.stderr
    assert "Traceback" not in p.stderr


def test_status_text_says_what_to_do_about_the_last_error():
    from riversync.commands.status import render

    st = {"node_id": "north", "office": "north", "epoch": 7, "level": "critical", "now": 100.0,
          "agent": {"state": "stopped", "error": {"code": "CURSOR_PRUNED", "message": "gone",
                                                  "hint": "restore a newer backup"}},
          "reasons": [{"level": "critical", "message": "replication stopped",
                       "code": "SYNC_STOPPED"}]}
    text = render(st)
    assert "last error: CURSOR_PRUNED: gone" in text
    assert "what to do: restore a newer backup" in text
