"""Shared test setup: Hypothesis profiles, and the fixtures several modules share.

``fast`` runs under ``make test``; ``soak`` (``make soak``) runs many more examples.  A
failure either profile finds is pinned with ``@example`` in the test that found it.
"""

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from riversync.cli import main
from riversync.node.localcluster import LocalCluster, free_port, update_toml

LEAGUES = Path(__file__).resolve().parent.parent / "examples" / "leagues" / "schema.toml"

settings.register_profile(
    "fast", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture
def hub_only(tmp_path):
    """A cluster of north and south (the leagues schema) with only the hub running, as a
    process; tests open in-process nodes against it.  Always stopped."""
    with LocalCluster(tmp_path / "c", ["north", "south"], schema=LEAGUES).create() as c:
        c.start("hub")
        yield c


@pytest.fixture
def north_dir(tmp_path, capsys):
    """A cluster directory from `riversync cluster init` (leagues schema) whose north node
    listens on a free port; nothing runs, no database exists yet."""
    d = tmp_path / "c"
    assert main(["cluster", "init", "--offices", "north,south", str(d)]) == 0
    shutil.copy(LEAGUES, d / "schema.toml")
    update_toml(d / "node-north.toml", listen_port=free_port())
    capsys.readouterr()
    return d
