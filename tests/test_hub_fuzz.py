"""Arbitrary bytes on every endpoint: a typed error every time, and the hub keeps serving.

One hub process serves the whole property test (H-HTTP-1, P-ERR-3, P-SIG-8).  Inputs are
random bytes, and valid signed requests with a few bytes changed, which must never be
accepted with another meaning.
"""

from __future__ import annotations

import pytest
from hubproc import HubProcess, TestCluster, decode_reply, store_snapshot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from riversync.protocol.errors import BY_CODE
from riversync.protocol.messages import ErrorReply

pytestmark = pytest.mark.slow

ENDPOINTS = ["/v1/push", "/v1/pull", "/v1/hello", "/v1/status"]
HTTP_CODES = {"NOT_FOUND", "METHOD_NOT_ALLOWED"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cluster = TestCluster.create(tmp_path_factory.mktemp("hubfuzz") / "c", ["north", "south"])
    with HubProcess(cluster.hub_config) as hub:
        yield cluster, hub


def assert_typed_error(status: int, data: bytes) -> ErrorReply:
    err = decode_reply(data, ErrorReply)
    assert err.code in BY_CODE or err.code in HTTP_CODES, err
    assert status == (BY_CODE[err.code].http_status if err.code in BY_CODE else status)
    assert 400 <= status < 500 or status == 503, (status, err)
    return err


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ENDPOINTS + ["/v1/nope", "/metrics"]), body=st.binary(max_size=4096))
def test_random_bytes_get_a_typed_error(env, path, body):
    cluster, hub = env
    status, data = hub.post(path, body)
    assert_typed_error(status, data)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["batch", "hello", "pull", "status"]),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                   min_size=1, max_size=3),
)
def test_changed_bytes_of_a_signed_request_are_refused(env, kind, flips):
    cluster, hub = env
    south = cluster.origin("south", epoch=7)
    original = south.batch(2, advance=False) if kind == "batch" else south.request(kind)
    body = bytearray(original)
    for pos, x in flips:
        body[pos % len(body)] ^= x
    assume(bytes(body) != original)
    path = {"batch": "/v1/push", "hello": "/v1/hello", "pull": "/v1/pull",
            "status": "/v1/status"}[kind]
    before = store_snapshot(cluster.dir / "hub.db")
    status, data = hub.post(path, bytes(body))
    assert_typed_error(status, data)
    assert store_snapshot(cluster.dir / "hub.db") == before


def test_hub_still_serves_after_the_fuzzing(env):
    cluster, hub = env
    status, data = hub.post("/v1/push", cluster.origin("north", epoch=99).batch(1))
    assert status == 200
    assert hub.get("/healthz")[0] == 200
