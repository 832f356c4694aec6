"""A cluster directory made by `riversync cluster init`, for tests that drive the CLI
in-process against node databases (no daemons)."""

from __future__ import annotations

import os
import shutil

from riversync.cli import main

DATA = os.path.join(os.path.dirname(__file__), "data")


def make_cluster(tmp_path, capsys, monkeypatch):
    """Create the cluster with the staging test schema and both offices' databases; chdir in."""
    monkeypatch.delenv("RIVERSYNC_TOKEN", raising=False)
    d = tmp_path / "c"
    assert main(["cluster", "init", "--offices", "north,south", str(d)]) == 0
    shutil.copy(os.path.join(DATA, "staging_schema.toml"), d / "schema.toml")
    create_node_databases(d, ("north", "south"))
    capsys.readouterr()
    monkeypatch.chdir(d)
    return d


def create_node_databases(d, offices) -> None:
    """What `riversync node serve` does first: offline commands never create a database."""
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.node import daemon

    schema = load_schema(d / "schema.toml")
    for office in offices:
        daemon.open_store(load_node_config(d / f"node-{office}.toml"), schema).close()


def run(capsys, *argv):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
