"""`riversync node serve` refuses a start it cannot make, before it does anything.

Its db_path names something other than the node's database
(a hub store, another program's database, a folder, a damaged file) refuses before it
writes anything: one `riversync:` line, a `Try:` line, no traceback, the file unchanged.
(Opening migrates: it once wrote the engine's tables into a hub store, then refused.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(north_dir):
    return north_dir


def hub_store(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE hub_epochs(x); CREATE TABLE hub_batches(y);"
                 "INSERT INTO hub_batches VALUES (1)")
    conn.close()


def other_database(path: Path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total); "
                 "INSERT INTO invoices VALUES (1, 99)")
    conn.close()


def damaged(path: Path) -> None:
    path.write_bytes(b"not sqlite at all, just bytes" * 400)


def folder(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("make,code,words,exit_code", [
    (hub_store, "NOT_NODE_DB", "is a hub store", 2),
    (other_database, "NOT_NODE_DB", "a database of something else", 2),
    (damaged, "DB_UNREADABLE", "not a readable SQLite database", 3),
    (folder, "DB_UNREADABLE", "not a file", 3),
])
def test_a_db_path_that_is_not_a_node_database_is_refused_untouched(cluster, make, code,
                                                                      words, exit_code):
    db = cluster / "north.db"
    make(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest() if db.is_file() else None
    p = subprocess.run([sys.executable, "-m", "riversync.cli", "node", "serve", "-c",
                        "node-north.toml"], cwd=cluster, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == exit_code, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("riversync:", "Try:"))]
    assert len(lines) == 2 and code in lines[0] and words in lines[0], p.stderr
    if before is not None:
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not Path(str(db) + "-wal").exists()


def test_an_empty_file_at_db_path_becomes_a_new_node_database(cluster):
    """An empty file (touch north.db) is a new database, as a missing one is."""
    from riversync.config import load_node_config
    from riversync.engine.schema import load_schema
    from riversync.node import daemon

    (cluster / "north.db").touch()
    cfg = load_node_config(cluster / "node-north.toml")
    store = daemon.open_store(cfg, load_schema(cluster / "schema.toml"))
    try:
        assert store.epoch > 0
    finally:
        store.close()


def test_a_listen_port_in_use_is_refused_before_the_node_says_hello(cluster):
    """The socket is bound first: no hello to the hub, no half-started agent, no database."""
    import socket
    import tomllib

    port = tomllib.loads((cluster / "node-north.toml").read_text())["listen_port"]
    with socket.create_server(("127.0.0.1", port)):
        p = subprocess.run([sys.executable, "-m", "riversync.cli", "node", "serve", "-c",
                            "node-north.toml"], cwd=cluster, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and "HUB_UNREACHABLE" not in p.stderr
    assert "Unclosed" not in p.stderr, p.stderr
    assert f"is port {port} already in use?" in p.stderr
    assert not (cluster / "north.db").exists()
