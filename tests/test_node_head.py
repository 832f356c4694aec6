"""The head file beside a node's database: what start-up compares to notice a copy put back
by hand (node/head.py)."""

from pathlib import Path

import pytest

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node import head
from riversync.protocol.keys import NodeEntry, Roster, User

ROOT = Path(__file__).resolve().parent.parent
ROSTER = Roster("c", {"north": NodeEntry("north", "north", bytes(32))},
                {"nora": User("nora", "north", "clerk")})


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "north.db", load_schema(ROOT / "examples/leagues/schema.toml"),
                   ROSTER, "north", epoch=5)
    yield s
    s.close()


def test_a_node_that_never_wrote_is_not_behind_its_head(store):
    """An idle node's head says epoch 5, number 0; restarting it must not start a new epoch."""
    head.record(store)
    assert head.read(store.path) == (5, 0)
    assert head.behind(store) is None


def test_a_database_older_than_its_head_is_behind(store):
    store.commit_local([LocalChange("create", "offices", "north", {"name": "North"})],
                       user="nora", now_ms=1_700_000_000_000)
    head.record(store)
    assert head.behind(store) is None
    head.write(store.path, 5, 7)  # the head saw more numbers than this file holds
    assert head.behind(store) == (5, 7)
