"""Hub epochs: a hub restored from a backup starts a new epoch (H-EPOCH-1, H-EPOCH-2).

The real commands do the work: ``riversync hub backup`` while the hub serves,
``riversync hub restore`` while it is stopped, then ``riversync hub serve`` again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hubproc import RIVERSYNC, HubProcess, TestCluster, decode_reply

from riversync.hub.epoch import start_for
from riversync.hub.store import EpochInfo
from riversync.protocol.messages import ErrorReply, HelloReply, PullReply, PushReply

pytestmark = pytest.mark.slow


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RIVERSYNC, *args], capture_output=True,
                          text=True, timeout=60)


def post(hub, path, body, type_):
    status, data = hub.post(path, body)
    assert status == 200, decode_reply(data, ErrorReply)
    return decode_reply(data, type_)


def test_restored_hub_starts_a_new_epoch_and_nodes_repull_and_repush(tmp_path):
    cluster = TestCluster.create(tmp_path / "c", ["north", "south"])
    south, north = cluster.origin("south"), cluster.origin("north")
    backup = tmp_path / "hub-backup.db"
    with HubProcess(cluster.hub_config) as hub:
        for _ in range(3):
            first = post(hub, "/v1/push", south.batch(2), PushReply)
        out = cli("hub", "backup", "-c", str(cluster.hub_config), str(backup), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["head"] == 3
        for _ in range(2):
            post(hub, "/v1/push", south.batch(2), PushReply)
        old_epoch = first.hub_epoch
        got = post(hub, "/v1/pull", north.request("pull", hub_epoch=old_epoch, cursor=0),
                   PullReply)
        assert got.cursor == 5 and len(got.batches) == 5
        # restore refuses while the hub serves (a refusal because of state: exit 2),
        # and changes nothing
        busy = cli("hub", "restore", "-c", str(cluster.hub_config), str(backup))
        assert busy.returncode == 2 and "stop" in busy.stderr
        assert post(hub, "/v1/hello", north.request("hello"), HelloReply).head == 5

    out = cli("hub", "restore", "-c", str(cluster.hub_config), str(backup), "--json")
    assert out.returncode == 0, out.stderr
    with HubProcess(cluster.hub_config) as hub:
        h = post(hub, "/v1/hello", south.request("hello"), HelloReply)
        assert h.hub_epoch != old_epoch and h.restore_point == 3 and h.head == 3
        held = {o.epoch: o for o in h.origins}[south.epoch]
        assert held.batches == 3 and held.last_seq == 6  # south re-pushes batches 4 and 5
        for body in south.sent[3:]:
            r = post(hub, "/v1/push", body, PushReply)
            assert r.status == "stored" and r.hub_epoch == h.hub_epoch
        # north's cursor 5 belongs to the old epoch: served from the restore point
        got = post(hub, "/v1/pull", north.request("pull", hub_epoch=old_epoch, cursor=5),
                   PullReply)
        assert got.hub_epoch == h.hub_epoch
        assert got.batches == south.sent[3:] and got.cursor == 5
        status = hub.status()
        assert [e["restore_point"] for e in status["epochs"]] == [0, 3]
        assert "restored from backup" in status["epochs"][1]["reason"]


def test_a_copy_restored_by_hand_is_detected(tmp_path):
    """No restore command used: the head watermark beside the store shows it went back."""
    cluster = TestCluster.create(tmp_path / "c", ["north", "south"])
    south = cluster.origin("south")
    db = cluster.dir / "hub.db"
    with HubProcess(cluster.hub_config) as hub:
        r = post(hub, "/v1/push", south.batch(1), PushReply)
        assert cli("hub", "backup", "-c", str(cluster.hub_config),
                   str(tmp_path / "b.db")).returncode == 0
        post(hub, "/v1/push", south.batch(1), PushReply)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "b.db", db)
    with HubProcess(cluster.hub_config) as hub:
        h = post(hub, "/v1/hello", south.request("hello"), HelloReply)
        assert h.hub_epoch != r.hub_epoch and h.restore_point == 1
    with HubProcess(cluster.hub_config) as hub:  # a plain restart is not a restore
        again = post(hub, "/v1/hello", south.request("hello"), HelloReply)
        assert again.hub_epoch == h.hub_epoch


def test_second_hub_on_the_same_store_is_refused(tmp_path):
    cluster = TestCluster.create(tmp_path / "c", ["north"])
    with HubProcess(cluster.hub_config):
        out = cli("hub", "serve", "-c", str(cluster.hub_config), "--port", "0")
        assert out.returncode == 3 and "another hub" in out.stderr


E = [EpochInfo(10, 0, 0, "new"), EpochInfo(20, 50, 0, "restored"), EpochInfo(30, 40, 0, "r")]


@pytest.mark.parametrize(
    ("hub_epoch", "cursor", "start"),
    [
        (30, 77, 77),  # current epoch: the cursor as it is
        (20, 45, 40),  # older epoch: no further than the later restore points
        (20, 35, 35),  # ... and never beyond the node's own cursor
        (10, 60, 40),
        (0, 0, 0),  # a new node
        (99, 60, 0),  # an epoch this store never had: from the beginning
    ],
)
def test_start_for(hub_epoch, cursor, start):
    assert start_for(E, hub_epoch, cursor) == start


def test_restore_refuses_a_file_that_is_not_a_hub_backup(tmp_path):
    cluster = TestCluster.create(tmp_path / "c", ["north"])
    with HubProcess(cluster.hub_config) as hub:
        post(hub, "/v1/push", cluster.origin("north").batch(1), PushReply)
    db = cluster.dir / "hub.db"
    before = db.read_bytes()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    out = cli("hub", "restore", "-c", str(cluster.hub_config), str(junk))
    assert out.returncode == 2 and "not" in out.stderr and "Try:" in out.stderr
    # a missing input file is exit 3 (docs/reference/cli.md), as for `riversync restore`
    missing = cli("hub", "restore", "-c", str(cluster.hub_config), str(tmp_path / "nope.db"))
    assert missing.returncode == 3 and "no backup file" in missing.stderr
    assert db.read_bytes() == before
    assert not list(cluster.dir.glob("*.restoring"))
