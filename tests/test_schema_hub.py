"""The hub compares every office's schema: one digest per schema version, registered by
the first node that tells it, against a real hub process.

Two offices ran different schema files under one `version` (south had `players.phone`
retyped text -> integer): each parked the other's events as bad values while both
statuses said OK.  The hub now refuses the second file at hello (SCHEMA_MISMATCH), before
the node pushes or pulls anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import tomllib

import apsw
import pytest
from hubproc import RIVERSYNC, HubProcess, TestCluster, decode_reply, now_ms, store_snapshot

from riversync.protocol import codec, messages
from riversync.protocol.errors import SchemaMismatch
from riversync.protocol.version import VERSION

RIGHT = hashlib.sha256(b"the cluster's schema file").hexdigest()
WRONG = hashlib.sha256(b"south's file, phone retyped").hexdigest()
TIMEOUT = 30


@pytest.fixture
def cluster(tmp_path):
    return TestCluster.create(tmp_path / "c", ["north", "south", "east"])


@pytest.fixture
def hub(cluster):
    with HubProcess(cluster.hub_config) as h:
        yield h


def hub_db(cluster):
    cfg = tomllib.loads(cluster.hub_config.read_text())
    return cluster.hub_config.parent / cfg["db_path"]


def hello(hub, cluster, node: str, version: int = 1, digest: str = RIGHT):
    """A signed hello stating ``version`` and ``digest``; (HTTP status, decoded reply)."""
    body = cluster.origin(node).request("hello", schema=version, schema_digest=digest)
    status, data = hub.post("/v1/hello", body)
    return status, decode_reply(data, messages.HelloReply if status == 200
                                else messages.ErrorReply)


def schemas(cluster, *args: str) -> tuple[int, dict]:
    """``riversync hub schemas -c HUB_TOML --json [args]``: (exit code, JSON)."""
    p = subprocess.run([*RIVERSYNC, "hub", "schemas", "-c", str(cluster.hub_config),
                        "--json", *args], capture_output=True, text=True, timeout=TIMEOUT)
    return p.returncode, json.loads(p.stdout) if p.returncode == 0 else {"stderr": p.stderr}


def registered(cluster) -> dict[int, tuple[str, str]]:
    code, out = schemas(cluster)
    assert code == 0, out
    return {r["version"]: (r["digest"], r["node"]) for r in out["schemas"]}


def hub_state(cluster) -> dict:
    """Everything the hub holds, the schema registrations included."""
    snap = store_snapshot(hub_db(cluster))
    conn = apsw.Connection(str(hub_db(cluster)), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        snap["schemas"] = conn.execute("SELECT * FROM hub_schemas ORDER BY version").fetchall()
    finally:
        conn.close()
    return snap


def test_the_same_digest_passes_and_the_first_node_registers_it(hub, cluster):
    """[H-SCHEMA-1] the first digest told for a version is registered, with its node."""
    assert registered(cluster) == {}
    status, reply = hello(hub, cluster, "north")
    assert status == 200 and reply.v == VERSION
    assert registered(cluster) == {1: (RIGHT, "north")}
    status, _ = hello(hub, cluster, "south")  # the same file: passes
    assert status == 200
    assert registered(cluster) == {1: (RIGHT, "north")}  # still north's registration
    [reg] = hub.status()["schemas"]
    assert (reg["version"], reg["digest"], reg["node"]) == (1, RIGHT, "north")


def test_another_digest_under_the_same_version_is_refused_and_changes_nothing(hub, cluster):
    """[H-SCHEMA-1] SCHEMA_MISMATCH (409, stop) names both digests, the version and the
    node that registered the other one; the hub's store is exactly as before."""
    north = cluster.origin("north")
    assert hello(hub, cluster, "north")[0] == 200
    assert hub.post("/v1/push", north.batch(2))[0] == 200
    south = cluster.origin("south", epoch=5)
    assert hub.post("/v1/push", south.batch(1))[0] == 200  # pushes are not hello's business
    pull = south.request("pull")
    assert hub.post("/v1/pull", pull)[0] == 200
    before = hub_state(cluster)

    status, err = hello(hub, cluster, "south", digest=WRONG)
    assert status == 409 == SchemaMismatch.http_status
    assert (err.code, err.action) == ("SCHEMA_MISMATCH", "stop")
    for words in (RIGHT[:12], WRONG[:12], "version 1", "node north", "node south"):
        assert words in err.message, words
    assert RIGHT not in err.message  # short forms, not the whole digests
    assert "schema file" in err.hint and "version" in err.hint and "north" in err.hint
    assert hub_state(cluster) == before  # no registration change, no cursor, no batch
    assert registered(cluster) == {1: (RIGHT, "north")}
    metrics = hub.get("/metrics")[2].decode()
    assert 'code="SCHEMA_MISMATCH"' in metrics


def test_another_version_registers_separately(hub, cluster):
    """[H-SCHEMA-1] the registration is per schema version: a raised version is a new file."""
    assert hello(hub, cluster, "north", 1, RIGHT)[0] == 200
    assert hello(hub, cluster, "south", 2, WRONG)[0] == 200
    assert registered(cluster) == {1: (RIGHT, "north"), 2: (WRONG, "south")}
    assert hello(hub, cluster, "east", 2, RIGHT)[0] == 409  # version 2 is south's now
    assert hello(hub, cluster, "east", 1, WRONG)[0] == 409
    assert hello(hub, cluster, "east", 2, WRONG)[0] == 200


def test_registrations_survive_a_restart_and_travel_in_hub_backups(hub, cluster, tmp_path):
    """[H-SCHEMA-2] registrations are kept in the hub's store."""
    assert hello(hub, cluster, "north")[0] == 200
    hub.stop()
    hub.start()
    assert hello(hub, cluster, "south", digest=WRONG)[0] == 409
    backup = tmp_path / "hub-backup.db"
    subprocess.run([*RIVERSYNC, "hub", "backup", "-c", str(cluster.hub_config), str(backup)],
                   check=True, capture_output=True, timeout=TIMEOUT)
    conn = apsw.Connection(str(backup), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT version, digest, node FROM hub_schemas").fetchall()
    finally:
        conn.close()
    assert rows == [(1, RIGHT, "north")]


def test_forget_lets_the_right_file_register(hub, cluster):
    """[H-SCHEMA-2] the wrong-first case: south registered the wrong file; an operator
    forgets version 1 while the hub runs, and north's right file registers."""
    assert hello(hub, cluster, "south", digest=WRONG)[0] == 200
    status, err = hello(hub, cluster, "north", digest=RIGHT)
    assert status == 409 and "node south" in err.message
    assert "riversync hub schemas -c hub.toml --forget 1" in err.hint
    code, out = schemas(cluster, "--forget", "1")
    assert code == 0 and out["forgot"]["digest"] == WRONG and out["forgot"]["node"] == "south"
    assert out["schemas"] == []
    assert hello(hub, cluster, "north", digest=RIGHT)[0] == 200
    assert registered(cluster) == {1: (RIGHT, "north")}
    assert hello(hub, cluster, "south", digest=WRONG)[0] == 409


def test_forget_of_a_version_not_registered_is_an_error_and_changes_nothing(hub, cluster):
    assert hello(hub, cluster, "north")[0] == 200
    before = hub_state(cluster)
    p = subprocess.run([*RIVERSYNC, "hub", "schemas", "-c", str(cluster.hub_config),
                        "--forget", "7"], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 2, p.stderr  # an unknown id is a refusal, as everywhere else
    assert "no registration of schema version 7" in p.stderr and "1" in p.stderr
    assert hub_state(cluster) == before


def test_the_plain_listing_names_version_digest_and_node(hub, cluster):
    p = subprocess.run([*RIVERSYNC, "hub", "schemas", "-c", str(cluster.hub_config)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0 and "No schema registered yet" in p.stdout
    assert hello(hub, cluster, "north", 3, RIGHT)[0] == 200
    p = subprocess.run([*RIVERSYNC, "hub", "schemas", "-c", str(cluster.hub_config)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0
    assert f"version 3: digest {RIGHT[:12]}" in p.stdout and "node north" in p.stdout


def test_an_older_hello_without_a_digest_still_works_and_registers_nothing(hub, cluster):
    """[H-SCHEMA-1] a 1.0 hello (no schema fields) is not checked; [P-ENC-5]."""
    old = messages.Hello(v=(1, 0), c=cluster.roster.cluster_id, o="south",
                         ts=now_ms(), e=3,
                         nonce=os.urandom(16))
    raw = codec.encode(old)
    assert b"schema" not in raw  # exactly what a 1.0 node sends
    status, data = hub.post("/v1/hello", codec.sign(old, cluster.keys["south"]))
    assert status == 200
    assert registered(cluster) == {}
    assert hello(hub, cluster, "north")[0] == 200
    old2 = messages.Hello(v=(1, 0), c=cluster.roster.cluster_id, o="south",
                          ts=now_ms(), e=3,
                          nonce=os.urandom(16))
    assert hub.post("/v1/hello", codec.sign(old2, cluster.keys["south"]))[0] == 200
    assert registered(cluster) == {1: (RIGHT, "north")}


def test_two_first_hellos_at_once_register_exactly_one_file(hub, cluster):
    """[H-SCHEMA-1] check and insert are one transaction: of two new files told at once,
    one registers and the other is refused, never both accepted."""
    results: dict[str, int] = {}
    bodies = {n: cluster.origin(n).request("hello", schema=9, schema_digest=d)
              for n, d in (("north", RIGHT), ("south", WRONG))}
    go = threading.Barrier(2)

    def send(node: str) -> None:
        go.wait(TIMEOUT)
        results[node] = hub.post("/v1/hello", bodies[node])[0]

    threads = [threading.Thread(target=send, args=(n,)) for n in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert sorted(results.values()) == [200, 409]
    winner = next(n for n, s in results.items() if s == 200)
    assert registered(cluster) == {9: ({"north": RIGHT, "south": WRONG}[winner], winner)}


def test_a_digest_with_schema_version_0_is_malformed_and_registers_nothing(hub, cluster):
    """Version 0 means 'not stated': a digest of it would register a version no node runs
    and refuse every later hello that leaves the version out but sends another digest."""
    status, err = hello(hub, cluster, "north", version=0, digest=RIGHT)
    assert status == 400 and err.code == "MALFORMED" and "schema" in err.message
    assert registered(cluster) == {}
