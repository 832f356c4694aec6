"""SIGKILL in the middle of a stream of pushes.

Three nodes push chains of batches at once.  The hub is killed with SIGKILL after some
acknowledgements, then restarted.  Every batch acknowledged before the kill is there,
nothing is half-stored (each row is a whole verified envelope, chains are contiguous),
and the pushers' retries of the same bytes complete the rest (as stored, or as duplicate
when the hub had committed a batch it could not acknowledge).
"""

from __future__ import annotations

import threading
import time

import pytest
from hubproc import HubProcess, TestCluster, decode_reply, store_snapshot

from riversync.protocol import codec
from riversync.protocol.messages import Batch, PushReply

pytestmark = pytest.mark.slow

NODES = ("north", "south", "east")
BATCHES = 40
EVENTS = 25
KILL_AFTER_ACKS = 30
DEADLINE_S = 90


def test_sigkill_mid_stream_loses_no_acknowledged_batch(tmp_path):
    cluster = TestCluster.create(tmp_path / "c", list(NODES))
    origins = {n: cluster.origin(n) for n in NODES}
    streams = {n: [o.batch(EVENTS) for _ in range(BATCHES)] for n, o in origins.items()}
    hub = HubProcess(cluster.hub_config)
    acked: dict[str, list[PushReply]] = {n: [] for n in NODES}
    lock = threading.Lock()
    url = {"now": ""}
    errors: list[str] = []
    deadline = time.monotonic() + DEADLINE_S

    def pusher(node: str) -> None:
        from hubproc import http_post

        for body in streams[node]:
            while True:  # retry the same bytes until acknowledged
                if time.monotonic() > deadline:
                    errors.append(f"{node}: gave up")
                    return
                try:
                    status, data = http_post(url["now"] + "/v1/push", body, timeout=10)
                except OSError:
                    time.sleep(0.05)
                    continue
                if status == 200:
                    with lock:
                        acked[node].append(decode_reply(data, PushReply))
                    break
                errors.append(f"{node}: HTTP {status} {data!r}")
                return

    try:
        hub.start()
        url["now"] = hub.url
        threads = [threading.Thread(target=pusher, args=(n,)) for n in NODES]
        for t in threads:
            t.start()
        while sum(map(len, acked.values())) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(0.005)
        hub.kill()
        with lock:
            acked_before = {n: len(v) for n, v in acked.items()}
        assert 0 < sum(acked_before.values()) < len(NODES) * BATCHES, "kill was not mid-stream"

        hub.start()
        url["now"] = hub.url
        snap = store_snapshot(cluster.dir / "hub.db")
        held = {(node, n): env for _s, node, _e, n, _f, _l, _h, env in snap["batches"]}
        for node, count in acked_before.items():  # every acknowledged batch survived
            for i in range(count):
                assert held[(node, i + 1)] == streams[node][i]

        for t in threads:
            t.join(DEADLINE_S)
        assert not errors, errors
    finally:
        hub.stop()

    snap = store_snapshot(cluster.dir / "hub.db")
    seqs = [row[0] for row in snap["batches"]]
    assert len(seqs) == len(set(seqs)) == len(NODES) * BATCHES
    for node in NODES:
        rows = [r for r in snap["batches"] if r[1] == node]
        assert [r[3] for r in rows] == list(range(1, BATCHES + 1))
        assert [r[7] for r in rows] == streams[node]  # whole, byte for byte
        prev = codec.ZERO_HASH
        for r in rows:  # each stored envelope verifies and chains to the one before
            _env, body = codec.open_envelope(r[7], cluster.roster)
            assert isinstance(body, Batch) and body.prev == prev
            prev = r[6]
        assert len(acked[node]) == BATCHES
    origins_state = {o[0]: o for o in snap["origins"]}
    for node in NODES:
        assert origins_state[node][2:4] == (BATCHES, BATCHES * EVENTS)
