"""`riversync hub serve` as a process: what it leaves behind when it cannot start."""

from __future__ import annotations

import socket
import subprocess

from hubproc import RIVERSYNC, TestCluster

from riversync.config import load_hub_config


def test_a_hub_that_cannot_listen_leaves_no_store_behind(tmp_path):
    cluster = TestCluster.create(tmp_path, ["north", "south"])
    db = load_hub_config(cluster.hub_config).db_path
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        p = subprocess.run([*RIVERSYNC, "hub", "serve", "-c", str(cluster.hub_config),
                            "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "cannot serve" in p.stderr and "Traceback" not in p.stderr
    assert not db.exists()  # no store created, no hub epoch started
