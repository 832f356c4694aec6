"""The real hub process over HTTP: every push outcome and every refusal.

One hub serves the whole module, checking pushes in a worker process (verify_workers=1);
the fuzz and C15 modules run hubs that check them on the event loop.  Each refusal test shows the typed error code and HTTP
status, and that the store (read through its own connection) is exactly as before.
Spec rules cited: H-PUSH-1, H-PULL-1, H-PULL-2, H-HTTP-1, P-REQ-1..3, P-SIG-*, P-HLC-7.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest
from hubproc import (
    HubProcess,
    TestCluster,
    decode_reply,
    now_ms,
    store_snapshot,
)

from riversync.protocol import codec, messages
from riversync.protocol.keys import SigningKey
from riversync.protocol.messages import (
    Batch,
    Envelope,
    ErrorReply,
    HelloReply,
    PullReply,
    PushReply,
    StatusReply,
)
from riversync.protocol.version import VERSION

pytestmark = pytest.mark.slow

BODY_LIMIT = 256 * 1024  # small, so the oversized test sends little
LONG_POLLS = 6
CONCURRENCY = 8
MAX_EVENTS = 500


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> TestCluster:
    return TestCluster.create(tmp_path_factory.mktemp("hubhttp") / "c", ["north", "south", "east"],
                              max_body_bytes=BODY_LIMIT, max_long_polls=LONG_POLLS,
                              max_concurrent_requests=CONCURRENCY,
                              max_events_per_batch=MAX_EVENTS, verify_workers=1)


@pytest.fixture(scope="module")
def hub(cluster):
    with HubProcess(cluster.hub_config) as h:
        yield h


@pytest.fixture
def db(cluster):
    return cluster.dir / "hub.db"


_epochs = iter(range(100, 10_000))


def fresh_origin(cluster, node: str) -> messages:
    """A new node epoch for ``node``, so each test starts its own chain."""
    return cluster.origin(node, epoch=next(_epochs))


def refused(hub, db, path: str, body: bytes, code: str, status: int) -> ErrorReply:
    """POST ``body``; assert the typed refusal and that the store did not change."""
    before = store_snapshot(db)
    got_status, data = hub.post(path, body)
    err = decode_reply(data, ErrorReply)
    assert (got_status, err.code) == (status, code), err
    assert err.hint and err.action in ("retry", "resync", "stop")
    assert store_snapshot(db) == before
    return err


def push_ok(hub, body: bytes) -> PushReply:
    status, data = hub.post("/v1/push", body)
    assert status == 200, decode_reply(data, ErrorReply)
    return decode_reply(data, PushReply)


def pull(hub, origin, **fields) -> PullReply:
    status, data = hub.post("/v1/pull", origin.request("pull", **fields))
    assert status == 200, decode_reply(data, ErrorReply)
    return decode_reply(data, PullReply)


def hello(hub, origin) -> HelloReply:
    status, data = hub.post("/v1/hello", origin.request("hello"))
    assert status == 200, decode_reply(data, ErrorReply)
    return decode_reply(data, HelloReply)


def pull_all(hub, origin, hub_epoch: int, cursor: int) -> tuple[list[bytes], int]:
    got: list[bytes] = []
    while True:
        r = pull(hub, origin, hub_epoch=hub_epoch, cursor=cursor)
        got += r.batches
        cursor = r.cursor
        if not r.more:
            return got, cursor


# ---- pushes that succeed ----------------------------------------------------------------------


def test_push_is_stored_byte_for_byte_and_pulled_by_others_only(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    b1, b2 = south.batch(3), south.batch(2)
    r1, r2 = push_ok(hub, b1), push_ok(hub, b2)
    assert (r1.status, r2.status) == ("stored", "stored")
    assert r2.hub_seq == r1.hub_seq + 1
    rows = {seq: env for seq, _n, _e, _b, _f, _l, _h, env in store_snapshot(db)["batches"]}
    assert rows[r1.hub_seq] == b1 and rows[r2.hub_seq] == b2

    north = cluster.origin("north")
    got, _ = pull_all(hub, north, r1.hub_epoch, r1.hub_seq - 1)
    assert got[:2] == [b1, b2]  # H-PULL-1: as received, in hub order
    # south does not get its own current origin back
    own, _ = pull_all(hub, south, r1.hub_epoch, r1.hub_seq - 1)
    assert b1 not in own and b2 not in own


def test_duplicate_push_is_acknowledged_and_not_stored_twice(hub, cluster, db):
    east = fresh_origin(cluster, "east")
    b = east.batch(4)
    first = push_ok(hub, b)
    before = store_snapshot(db)
    again = push_ok(hub, b)
    assert again.status == "duplicate" and again.hub_seq == first.hub_seq
    assert store_snapshot(db) == before


def test_hello_reports_what_the_hub_holds_of_each_epoch(hub, cluster):
    old, new = fresh_origin(cluster, "east"), fresh_origin(cluster, "east")
    push_ok(hub, old.batch(2))
    push_ok(hub, old.batch(3))
    push_ok(hub, new.batch(1))
    r = hello(hub, new)
    held = {o.epoch: o for o in r.origins}
    assert held[old.epoch].batches == 2 and held[old.epoch].last_seq == 5
    assert held[old.epoch].last_hash == old.prev
    assert held[new.epoch].batches == 1 and held[new.epoch].last_seq == 1
    assert r.head >= 3 and r.restore_point == 0 and r.v == VERSION


def test_own_batches_of_older_epochs_are_returned(hub, cluster):
    """A node restored from a backup recovers the events it wrote in earlier epochs."""
    old, new = fresh_origin(cluster, "north"), fresh_origin(cluster, "north")
    b_old = old.batch(2)
    r = push_ok(hub, b_old)
    b_new = new.batch(1)
    push_ok(hub, b_new)
    got, _ = pull_all(hub, new, r.hub_epoch, r.hub_seq - 1)
    assert b_old in got and b_new not in got


def test_signed_status_and_json_status_and_metrics(hub, cluster):
    north = cluster.origin("north")
    status, data = hub.post("/v1/status", north.request("status"))
    assert status == 200
    rep = decode_reply(data, StatusReply)
    assert rep.head >= 1 and {n.node for n in rep.nodes} <= {"north", "south", "east"}
    js = hub.status()
    assert js["head"] == rep.head and set(js["nodes"]) == {"north", "south", "east"}
    code, ctype, text = hub.get("/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    for name in ("riversync_hub_batches_stored_total", "riversync_hub_events_stored_total",
                 "riversync_hub_node_cursor_seq", "riversync_hub_node_backlog_batches",
                 "riversync_hub_storage_free_bytes", "riversync_hub_requests_refused_total",
                 "riversync_hub_node_last_push_timestamp_seconds"):
        assert name.encode() in text
    assert hub.get("/healthz")[0] == 200


# ---- refusals: each with its code, and the store unchanged -------------------------------------


def test_gap_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    south.batch(1)  # batch 1 made but never sent
    err = refused(hub, db, "/v1/push", south.batch(1), "SEQUENCE_GAP", 409)
    assert err.action == "resync"


def test_fork_is_refused(hub, cluster, db):
    a = fresh_origin(cluster, "south")
    b = cluster.origin("south", epoch=a.epoch)  # same origin, other history
    push_ok(hub, a.batch(2))
    refused(hub, db, "/v1/push", b.batch(3), "SEQUENCE_FORK", 409)


def test_a_pull_cursor_past_the_head_is_refused_and_changes_nothing(hub, cluster, db):
    """[H-PULL-3] a cursor the hub never served is refused, not recorded: recorded, it would
    skip every batch up to it and let a prune delete them as delivered."""
    south = fresh_origin(cluster, "south")
    r = push_ok(hub, south.batch(1))
    north = fresh_origin(cluster, "north")
    got, cursor = pull_all(hub, north, r.hub_epoch, 0)
    assert got
    seen = hub.status()["nodes"]["north"]
    err = refused(hub, db, "/v1/pull", north.request("pull", hub_epoch=r.hub_epoch,
                                                     cursor=cursor + 10**9),
                  "CURSOR_AHEAD", 409)
    assert err.action == "stop" and "hub restore" in err.hint
    after = hub.status()["nodes"]["north"]
    assert (after["cursor"], after["last_pull_ms"]) == (seen["cursor"], seen["last_pull_ms"])
    push_ok(hub, south.batch(1))  # the next batch still reaches north
    assert len(pull_all(hub, north, r.hub_epoch, cursor)[0]) == 1


def test_wrong_key_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    good = codec.decode(south.batch(1, advance=False), Envelope)
    forged = Envelope(v=good.v, c=good.c, o=good.o, k=good.k, b=good.b,
                      s=cluster.keys["north"].sign(good.b))
    refused(hub, db, "/v1/push", codec.encode(forged), "BAD_SIGNATURE", 401)
    # signed with another node's key, naming that key: not south's key id
    refused(hub, db, "/v1/push", south.batch(1, advance=False, key=cluster.keys["north"]),
            "UNKNOWN_NODE", 401)


def test_unknown_node_is_refused(hub, cluster, db):
    west = cluster.origin("north")
    west.node, west.key = "west", SigningKey(os.urandom(32))
    refused(hub, db, "/v1/push", west.batch(1), "UNKNOWN_NODE", 401)


def test_other_cluster_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    south.cluster = "rs-elsewhere"
    refused(hub, db, "/v1/push", south.batch(1), "WRONG_CLUSTER", 403)


def test_unsupported_version_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    ev = south.events(1)
    body = Batch(v=(2, 0), c=south.cluster, o="south", ts=now_ms(), e=south.epoch, n=1,
                 first=1, last=1, prev=codec.ZERO_HASH, events=ev)
    err = refused(hub, db, "/v1/push", codec.sign(body, south.key), "UNSUPPORTED_VERSION", 426)
    assert "newer" in err.message and "2.0" in err.message


def test_clock_skew_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    ahead = (now_ms() + 10 * 60 * 1000) << 16  # 10 minutes ahead; the bound is 5
    err = refused(hub, db, "/v1/push", south.batch(2, hlc=ahead), "CLOCK_SKEW", 422)
    assert err.action == "retry"


def test_oversized_body_is_refused(hub, cluster, db):
    refused(hub, db, "/v1/push", os.urandom(BODY_LIMIT + 4096), "TOO_LARGE", 413)


def test_oversized_valid_batch_is_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    big = south.batch(BODY_LIMIT // 40, advance=False)  # ~45 bytes an event
    assert len(big) > BODY_LIMIT
    refused(hub, db, "/v1/push", big, "TOO_LARGE", 413)


def test_too_many_events_in_a_batch_are_refused(hub, cluster, db):
    south = fresh_origin(cluster, "south")
    err = refused(hub, db, "/v1/push", south.batch(MAX_EVENTS + 1, advance=False), "TOO_LARGE",
                  413)
    assert str(MAX_EVENTS) in err.message
    assert push_ok(hub, south.batch(MAX_EVENTS)).status == "stored"


def test_replayed_pull_is_refused(hub, cluster, db):
    north = cluster.origin("north")
    req = north.request("pull", cursor=0)
    status, _ = hub.post("/v1/pull", req)
    assert status == 200
    refused(hub, db, "/v1/pull", req, "REPLAYED_REQUEST", 401)


def test_replayed_hello_is_refused(hub, cluster, db):
    req = cluster.origin("east").request("hello")
    assert hub.post("/v1/hello", req)[0] == 200
    refused(hub, db, "/v1/hello", req, "REPLAYED_REQUEST", 401)


@pytest.mark.parametrize("skew_min", [-10, 10])
def test_stale_request_is_refused(hub, cluster, db, skew_min):
    req = cluster.origin("north").request("pull", ts=now_ms() + skew_min * 60_000)
    refused(hub, db, "/v1/pull", req, "STALE_REQUEST", 401)


def test_wrong_message_type_is_refused(hub, cluster, db):
    north = cluster.origin("north")
    refused(hub, db, "/v1/push", north.request("hello"), "UNEXPECTED_MESSAGE", 400)
    refused(hub, db, "/v1/pull", fresh_origin(cluster, "north").batch(1), "UNEXPECTED_MESSAGE",
            400)


def test_unknown_path_and_method_are_typed(hub, db):
    before = store_snapshot(db)
    code, ctype, data = hub.get("/v1/push")
    assert code == 405 and decode_reply(data, ErrorReply).code == "METHOD_NOT_ALLOWED"
    code, ctype, data = hub.get("/v2/anything")
    assert code == 404 and decode_reply(data, ErrorReply).code == "NOT_FOUND"
    assert ctype == "application/msgpack"
    assert store_snapshot(db) == before


# ---- long-poll ------------------------------------------------------------------------------


def test_long_poll_wakes_on_a_new_batch_and_busy_beyond_the_limit(hub, cluster, db):
    """H-PULL-2: waiting pulls answer as soon as a batch arrives; one wait too many is BUSY."""
    r = hello(hub, cluster.origin("north"))
    results: list[PullReply | None] = [None] * LONG_POLLS
    ready = threading.Barrier(LONG_POLLS + 1)

    def wait_pull(i: int) -> None:
        node = cluster.origin("north" if i % 2 else "east")
        req = node.request("pull", hub_epoch=r.hub_epoch, cursor=r.head, wait_ms=25_000)
        ready.wait(10)
        status, data = hub.post("/v1/pull", req, timeout=40)
        results[i] = decode_reply(data, PullReply) if status == 200 else None

    threads = [threading.Thread(target=wait_pull, args=(i,)) for i in range(LONG_POLLS)]
    for t in threads:
        t.start()
    ready.wait(10)
    waiting = f"riversync_hub_long_polls {float(LONG_POLLS)}".encode()
    for _ in range(400):  # bounded: until every pull is waiting inside the hub
        if waiting in hub.get("/metrics")[2]:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the long-polls never all started waiting")
    one_more = cluster.origin("south").request("pull", hub_epoch=r.hub_epoch, cursor=r.head,
                                               wait_ms=1000)
    refused(hub, db, "/v1/pull", one_more, "BUSY", 503)

    south = fresh_origin(cluster, "south")
    b = south.batch(1)
    push_ok(hub, b)  # waiting pulls do not hold the concurrency slots a push needs
    for t in threads:
        t.join(40)
    assert all(res is not None and res.batches == [b] for res in results), results


def _slow_uploads(host: str, port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"POST /v1/push HTTP/1.1\r\nHost: hub\r\nContent-Length: 5000\r\n\r\n"
                  + b"\x85" * 100)
        out.append(s)
    return out


def _wait_inflight(hub, n: int) -> None:
    for _ in range(400):  # bounded: until the hub is working on all of them
        if f"riversync_hub_inflight_requests {float(n + 1)}".encode() in hub.get("/metrics")[2]:
            return
        threading.Event().wait(0.05)
    pytest.fail("the slow uploads never all reached the hub")


def test_slow_uploads_do_not_take_the_slots_of_honest_requests(hub, cluster, db):
    """Bodies still arriving hold no concurrency slot: as many slow uploads as there are
    slots leave an honest hello served; four times as many are BUSY; when they hang up,
    the hub serves again and nothing was stored."""
    host, port = hub.url.removeprefix("http://").split(":")
    before = store_snapshot(db)
    slow = _slow_uploads(host, int(port), CONCURRENCY)
    try:
        _wait_inflight(hub, CONCURRENCY)
        status, data = hub.post("/v1/hello", cluster.origin("south").request("hello"))
        assert status == 200, data  # once every slot was held: BUSY for everyone
        slow += _slow_uploads(host, int(port), 3 * CONCURRENCY)
        _wait_inflight(hub, 4 * CONCURRENCY)
        assert hub.get("/healthz")[0] == 200  # monitoring is never refused
        refused(hub, db, "/v1/hello", cluster.origin("south").request("hello"), "BUSY", 503)
    finally:
        for s in slow:
            s.close()
    for _ in range(400):
        status, data = hub.post("/v1/hello", cluster.origin("south").request("hello"))
        if status == 200:
            break
        threading.Event().wait(0.05)
    assert status == 200
    assert store_snapshot(db) == before
    gone = f"riversync_hub_client_disconnects_total {float(4 * CONCURRENCY)}".encode()
    for _ in range(400):
        if gone in hub.get("/metrics")[2]:
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the hub did not count the hung-up uploads as disconnects")


def test_a_body_that_stops_arriving_is_cut_off_with_request_timeout(hub, db):
    """A client that sends part of a body and then nothing is answered REQUEST_TIMEOUT
    once the grace period has passed, not held for the whole body timeout."""
    host, port = hub.url.removeprefix("http://").split(":")
    before = store_snapshot(db)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /v1/push HTTP/1.1\r\nHost: hub\r\nContent-Length: 5000\r\n\r\n"
                  + b"\x85" * 10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"REQUEST_TIMEOUT" in answer
    assert store_snapshot(db) == before


def test_a_killed_verify_worker_is_replaced_and_no_push_is_refused(hub, cluster, db):
    import signal

    import psutil

    south = fresh_origin(cluster, "south")
    push_ok(hub, south.batch(1))  # the worker is running
    workers = [p for p in psutil.Process(hub.proc.pid).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline())]
    assert workers, "no verify worker process found"
    for w in workers:
        w.send_signal(signal.SIGKILL)
    psutil.wait_procs(workers, timeout=10)
    for _ in range(3):  # checked on the loop while the pool is replaced, then by new workers
        assert push_ok(hub, south.batch(2)).status == "stored"
    refused(hub, db, "/v1/push", south.batch(1, advance=False, key=cluster.keys["east"]),
            "UNKNOWN_NODE", 401)


def test_a_body_that_is_not_the_gzip_it_claims_is_malformed(hub, db):
    """It was an INTERNAL 500 with action retry: a node would have sent it for ever."""
    before = store_snapshot(db)
    host, port = hub.url.removeprefix("http://").split(":")
    body = b"notgzip" * 10
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/push HTTP/1.1\r\nHost: hub\r\nContent-Encoding: gzip\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert decode_reply(payload, ErrorReply).code == "MALFORMED"
    assert store_snapshot(db) == before
