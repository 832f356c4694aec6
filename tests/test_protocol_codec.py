"""The signed-blob codec: order of checks, typed errors with paths, batch invariants.

Rule ids in docstrings are those of spec/PROTOCOL.md.
"""

from __future__ import annotations

import msgpack
import pytest

from riversync.protocol import codec, errors, hlc, keys, limits, messages, version
from riversync.protocol.messages import Batch, Create, Delete, Hello, Pull, StatusRequest, Update

T0 = 1_767_258_000_000
NORTH = keys.SigningKey(b"\x11" * 32)
SOUTH = keys.SigningKey(b"\x22" * 32)
OTHER = keys.SigningKey(b"\x33" * 32)
ROSTER = keys.Roster(
    "c1",
    {
        "north": keys.NodeEntry("north", "North", NORTH.public_key),
        "south": keys.NodeEntry("south", "South", SOUTH.public_key),
    },
)
NONCE = b"n" * 16


def ev(seq: int, node: str = "north", epoch: int = 1, cls=Update, **kw):
    fields = dict(node=node, epoch=epoch, seq=seq, hlc=hlc.make(T0, seq), schema=1, table="t",
                  pk="k", user="ana", role="clerk", admin=False)
    if cls in (Create, Update) and "values" not in kw:
        kw["values"] = {"a": seq}
    return cls(**fields, **kw)


def batch(events, n: int = 1, prev: bytes = codec.ZERO_HASH, node: str = "north", **kw) -> Batch:
    return Batch(v=(1, 0), c="c1", o=node, ts=T0, e=1, n=n, first=events[0].seq,
                 last=events[-1].seq, prev=prev, events=list(events), **kw)


def hello(**kw) -> Hello:
    base = dict(v=(1, 0), c="c1", o="north", ts=T0, e=1, nonce=NONCE)
    return Hello(**{**base, **kw})


def env_bytes(body_bytes: bytes, *, key=NORTH, o="north", c="c1", v=(1, 0), k=None, s=None):
    return msgpack.packb({"v": list(v), "c": c, "o": o, "k": k or key.key_id, "b": body_bytes,
                          "s": key.sign(body_bytes) if s is None else s})


def code_of(data: bytes, **kw) -> str:
    with pytest.raises(errors.ProtocolError) as e:
        codec.open_envelope(data, ROSTER, **kw)
    return e.value.code


def test_signed_batch_opens_to_the_same_body():
    """[P-SIG-1] the receiver verifies exactly the bytes sent and gets the body back."""
    b = batch([ev(1, cls=Create), ev(2), ev(3, cls=Delete)])
    env, body = codec.open_envelope(codec.sign(b, NORTH), ROSTER)
    assert body == b
    assert env.b == codec.encode(b)
    assert env.k == NORTH.key_id and env.o == "north"


def test_bodies_are_maps_and_events_are_tagged_arrays():
    """[P-ENC-1] bodies and envelopes are string-keyed maps; events arrays tagged at 0."""
    b = batch([ev(1, cls=Create)])
    raw_env = msgpack.unpackb(codec.sign(b, NORTH))
    assert set(raw_env) == {"v", "c", "o", "k", "b", "s"}
    raw = msgpack.unpackb(raw_env["b"])
    assert raw["t"] == "batch"
    assert list(raw) == ["t", "v", "c", "o", "ts", "e", "n", "first", "last", "prev", "events"]
    assert raw["events"][0][:3] == ["create", "north", 1]
    assert isinstance(raw["events"][0], list)


# Pinned wire layout: appending is allowed, anything else needs a new major.
WIRE_FIELDS = {
    "Create": ["node", "epoch", "seq", "hlc", "schema", "table", "pk", "user", "role", "admin",
               "values"],
    "Update": ["node", "epoch", "seq", "hlc", "schema", "table", "pk", "user", "role", "admin",
               "values"],
    "Delete": ["node", "epoch", "seq", "hlc", "schema", "table", "pk", "user", "role", "admin"],
    "Transfer": ["node", "epoch", "seq", "hlc", "schema", "table", "pk", "user", "role", "admin",
                 "owner"],
    "Resolve": ["node", "epoch", "seq", "hlc", "schema", "table", "pk", "user", "role", "admin",
                "conflict", "decision", "values"],
    "Batch": ["v", "c", "o", "ts", "e", "n", "first", "last", "prev", "events"],
    "Hello": ["v", "c", "o", "ts", "e", "nonce"],
    "Pull": ["v", "c", "o", "ts", "e", "nonce", "hub_epoch", "cursor", "limit", "wait_ms"],
    "StatusRequest": ["v", "c", "o", "ts", "nonce"],
    "Envelope": ["v", "c", "o", "k", "b", "s"],
    "OriginState": ["epoch", "batches", "last_seq", "last_hash"],
    "HelloReply": ["v", "hub_epoch", "restore_point", "hub_time_ms", "head", "origins"],
    "PushReply": ["status", "hub_seq", "hub_epoch"],
    "PullReply": ["hub_epoch", "cursor", "head", "batches", "more"],
    "ErrorReply": ["code", "message", "hint", "action"],
}


@pytest.mark.parametrize("name", sorted(WIRE_FIELDS))
def test_wire_fields_are_only_ever_appended(name):
    """[P-VER-3] fields are never renamed, reordered or removed under major 1.

    A new field may only be appended with a default: extend the pinned list then.
    """
    cls = getattr(messages, name)
    fields = list(cls.__struct_fields__)
    pinned = WIRE_FIELDS[name]
    assert fields[: len(pinned)] == pinned
    required = len(fields) - len(cls.__struct_defaults__)
    assert required <= len(pinned), f"{name}: a field added after v1.0 must have a default"


def test_checks_run_in_the_documented_order():
    """[P-SIG-3] with several faults at once, the first check in section 4.2 decides."""
    bad_body = b"\xc1 not msgpack"
    # oversized AND unknown cluster: size first
    big = env_bytes(codec.encode(hello(c="zz")), c="zz")
    assert code_of(big, max_bytes=50) == "TOO_LARGE"
    # newer major AND wrong cluster: version first
    assert code_of(env_bytes(bad_body, v=(2, 0), c="zz")) == "UNSUPPORTED_VERSION"
    # wrong cluster AND unknown node: cluster first
    assert code_of(env_bytes(bad_body, c="zz", o="east")) == "WRONG_CLUSTER"
    # unknown node AND bad signature
    assert code_of(env_bytes(bad_body, o="east", s=b"\0" * 64)) == "UNKNOWN_NODE"
    # wrong key id AND bad signature: key id first
    assert code_of(env_bytes(bad_body, k=OTHER.key_id, s=b"\0" * 64)) == "UNKNOWN_NODE"
    # bad signature AND undecodable body: signature first
    assert code_of(env_bytes(bad_body, s=b"\0" * 64)) == "BAD_SIGNATURE"
    # good signature, undecodable body
    assert code_of(env_bytes(bad_body)) == "MALFORMED"


def test_signature_is_verified_before_the_body_is_decoded():
    """[P-SIG-2] a body that fails verification is BAD_SIGNATURE, never MALFORMED."""
    for body in (b"\xc1", b"\x91" * 5000, codec.encode(hello())):
        assert code_of(env_bytes(body, s=OTHER.sign(body))) == "BAD_SIGNATURE"


def test_body_must_agree_with_envelope():
    """[P-SIG-4] the signed v, c and o count; an envelope that differs is refused."""
    body = codec.encode(hello(o="south"))
    with pytest.raises(errors.Malformed) as e:
        codec.open_envelope(env_bytes(body), ROSTER)
    assert e.value.path == "$.b"
    body = codec.encode(hello(v=(1, 3)))
    assert code_of(env_bytes(body, v=(1, 0))) == "MALFORMED"


def test_key_of_another_node_is_unknown():
    """[P-SIG-5] south's key id under north's name is refused, naming the key."""
    with pytest.raises(errors.UnknownNode) as e:
        codec.open_envelope(env_bytes(codec.encode(hello()), key=SOUTH), ROSTER)
    assert e.value.path == "$.k" and SOUTH.key_id in str(e.value)


def test_blob_of_another_cluster_is_refused():
    """[P-SIG-6] the cluster id is inside the signed bytes and checked first."""
    blob = codec.sign(hello(c="c2"), NORTH)
    with pytest.raises(errors.WrongCluster) as e:
        codec.open_envelope(blob, ROSTER)
    assert "c2" in str(e.value) and "c1" in str(e.value)


def test_batch_with_an_event_of_another_origin_is_refused_whole():
    """[P-SIG-7] north may not carry south's event, nor one of another epoch of its own."""
    for spoof in (ev(2, node="south"), ev(2, epoch=9)):
        body = msgpack.packb({**msgpack.unpackb(codec.encode(batch([ev(1)]))), "last": 2,
                              "events": [msgpack.unpackb(codec.encode(e)) for e in
                                         (ev(1), spoof)]})
        with pytest.raises(errors.OriginMismatch) as e:
            codec.open_envelope(env_bytes(body), ROSTER)
        assert e.value.path == "$.events[1].node"
    with pytest.raises(errors.OriginMismatch):
        codec.make_batch(cluster="c1", node="north", epoch=1, n=1, prev=codec.ZERO_HASH,
                         events=[ev(1, node="south")], now_ms=T0)


def test_batch_sequence_invariants():
    """[P-BATCH-1] last = first + len - 1 and contiguous seqs; [P-BATCH-2] zero prev at n=1."""
    raw = msgpack.unpackb(codec.encode(batch([ev(1), ev(2)])))
    cases = {
        "$.last": {**raw, "last": 3},
        "$.events[1].seq": {**raw, "events": [raw["events"][0],
                                              [*raw["events"][1][:3], 5, *raw["events"][1][4:]]]},
        "$.prev": {**raw, "prev": b"\x01" * 32},
    }
    for path, body in cases.items():
        with pytest.raises(errors.Malformed) as e:
            codec.open_envelope(env_bytes(msgpack.packb(body)), ROSTER)
        assert e.value.path == path


def test_prev_is_the_hash_of_the_previous_body_bytes():
    """[P-BATCH-3] batch 2 chains to SHA-256 of batch 1's body bytes exactly as signed."""
    import hashlib

    b1 = codec.make_batch(cluster="c1", node="north", epoch=1, n=1, prev=codec.ZERO_HASH,
                          events=[ev(1)], now_ms=T0)
    env1, _ = codec.open_envelope(codec.sign(b1, NORTH), ROSTER)
    assert codec.body_hash(env1.b) == hashlib.sha256(env1.b).digest()
    b2 = codec.make_batch(cluster="c1", node="north", epoch=1, n=2, prev=codec.body_hash(env1.b),
                          events=[ev(2)], now_ms=T0)
    _, body2 = codec.open_envelope(codec.sign(b2, NORTH), ROSTER)
    assert body2.prev == codec.body_hash(env1.b)


def test_batch_event_count_limits():
    """[P-BATCH-4] more than MAX_EVENTS_PER_BATCH is TOO_LARGE; an empty batch is MALFORMED."""
    n = limits.MAX_EVENTS_PER_BATCH + 1
    evs = [ev(i, cls=Delete) for i in range(1, n + 1)]
    blob = codec.sign(batch(evs), NORTH)
    with pytest.raises(errors.TooLarge) as e:
        codec.open_envelope(blob, ROSTER)
    assert e.value.path == "$.events"
    raw = msgpack.unpackb(codec.encode(batch([ev(1)])))
    raw["events"] = []
    assert code_of(env_bytes(msgpack.packb(raw))) == "MALFORMED"
    with pytest.raises(errors.Malformed):
        codec.make_batch(cluster="c1", node="north", epoch=1, n=1, prev=codec.ZERO_HASH,
                         events=[], now_ms=T0)


def test_blob_size_limit_is_checked_before_decoding():
    """[P-LIM-1] an oversized blob is TOO_LARGE even when it is not msgpack at all."""
    with pytest.raises(errors.TooLarge):
        codec.decode(b"\xc1" * (limits.MAX_BLOB_BYTES + 1), messages.Envelope)
    with pytest.raises(errors.TooLarge):
        codec.open_envelope(b"\xc1" * 300, ROSTER, max_bytes=299)


@pytest.mark.parametrize(
    "value",
    [[1, 2], {"x": 1}, msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0), 2**63, 2**64 - 1],
)
def test_column_values_must_be_storage_classes(value):
    """[P-ENC-7] containers and extension types; [P-ENC-3] ints beyond int64; [P-LIM-2]."""
    raw = msgpack.unpackb(codec.encode(batch([ev(1)])))
    raw["events"][0][11] = {"col": value}
    with pytest.raises(errors.Malformed) as e:
        codec.open_envelope(env_bytes(msgpack.packb(raw)), ROSTER)
    assert e.value.path is not None and e.value.path.startswith("$.events[0].values")


def test_text_and_name_limits():
    """[P-LIM-2] text over its limit is MALFORMED, naming the field."""
    raw = msgpack.unpackb(codec.encode(batch([ev(1)])))
    raw["events"][0][11] = {"col": "x" * (limits.MAX_TEXT_CHARS + 1)}
    with pytest.raises(errors.Malformed) as e:
        codec.open_envelope(env_bytes(msgpack.packb(raw)), ROSTER)
    assert e.value.path == "$.events[0].values.col"
    raw = msgpack.unpackb(codec.encode(batch([ev(1)])))
    raw["events"][0][7] = "k" * (limits.MAX_PK_CHARS + 1)
    with pytest.raises(errors.Malformed) as e:
        codec.open_envelope(env_bytes(msgpack.packb(raw)), ROSTER)
    assert e.value.path == "$.events[0][7]"


def test_unknown_fields_are_ignored_under_a_known_major():
    """[P-ENC-5] trailing event elements and unknown map keys are ignored; [P-VER-2] minor."""
    b = batch([ev(1, cls=Create)])
    raw = msgpack.unpackb(codec.encode(b))
    raw["events"][0] += ["future", {"x": 1}]
    raw["future_key"] = [1, 2, 3]
    raw["v"] = [1, 7]
    blob = msgpack.packb({"v": [1, 7], "c": "c1", "o": "north", "k": NORTH.key_id,
                          "b": msgpack.packb(raw), "s": NORTH.sign(msgpack.packb(raw)),
                          "route": "x"})
    _, body = codec.open_envelope(blob, ROSTER)
    assert body.events == b.events and body.v == (1, 7)
    reply = msgpack.packb({"status": "stored", "hub_seq": 4, "hub_epoch": 1, "new": True})
    assert codec.decode(reply, messages.PushReply) == messages.PushReply("stored", 4, 1)


def test_unknown_tags_are_malformed():
    """[P-ENC-6] an unknown event kind or body tag cannot be ignored safely."""
    raw = msgpack.unpackb(codec.encode(batch([ev(1)])))
    raw["events"][0][0] = "upsert"
    assert code_of(env_bytes(msgpack.packb(raw))) == "MALFORMED"
    raw = msgpack.unpackb(codec.encode(hello()))
    raw["t"] = "gossip"
    assert code_of(env_bytes(msgpack.packb(raw))) == "MALFORMED"


@pytest.mark.parametrize("peer,side", [((2, 0), "newer"), ((0, 9), "older")])
def test_unknown_major_is_refused_naming_both_versions(peer, side):
    """[P-VER-1] the refusal says older or newer and names both versions."""
    with pytest.raises(errors.UnsupportedVersion) as e:
        codec.open_envelope(env_bytes(codec.encode(hello(v=peer)), v=peer), ROSTER)
    text = str(e.value)
    assert side in text and f"{peer[0]}.{peer[1]}" in text
    assert f"{version.MAJOR}.{version.MINOR}" in text


def test_request_freshness_and_nonces():
    """[P-REQ-1] STALE_REQUEST either way; [P-REQ-2] REPLAYED_REQUEST for a used nonce."""
    h = hello()
    codec.check_fresh(h, T0 + 300_000, 300_000)
    for now in (T0 + 300_001, T0 - 300_001):
        with pytest.raises(errors.StaleRequest):
            codec.check_fresh(h, now, 300_000)
    seen = {b"x" * 16}
    codec.check_nonce(h, seen)
    seen.add(NONCE)
    with pytest.raises(errors.ReplayedRequest) as e:
        codec.check_nonce(h, seen)
    assert e.value.path == "$.nonce"
    assert seen == {b"x" * 16, NONCE}  # the check only looks
    p = Pull(v=(1, 0), c="c1", o="north", ts=T0, e=1, nonce=NONCE, hub_epoch=1, cursor=0)
    with pytest.raises(errors.ReplayedRequest):
        codec.check_nonce(p, seen)
    s = StatusRequest(v=(1, 0), c="c1", o="north", ts=T0, nonce=NONCE)
    with pytest.raises(errors.ReplayedRequest):
        codec.check_nonce(s, seen)


def test_endpoint_takes_one_body_type():
    """[P-REQ-3] a hello on the push endpoint is UNEXPECTED_MESSAGE."""
    _, body = codec.open_envelope(codec.sign(hello(), NORTH), ROSTER)
    assert codec.expect(body, Hello) is body
    with pytest.raises(errors.UnexpectedMessage) as e:
        codec.expect(body, Batch)
    assert "Hello" in str(e.value) and "Batch" in str(e.value)


def test_batch_clock_bound():
    """[P-HLC-7] one event too far ahead refuses the whole batch, naming that event."""
    drift = hlc.DEFAULT_MAX_DRIFT_MS
    ok = ev(1)
    ahead = Update(**{**{f: getattr(ev(2), f) for f in ev(2).__struct_fields__},
                      "hlc": hlc.make(T0 + drift + 1)})
    b = batch([ok, ahead])
    with pytest.raises(errors.ClockSkew) as e:
        codec.check_batch_clock(b, T0, drift)
    assert e.value.path == "$.events[1].hlc" and "north/2" in str(e.value)
    codec.check_batch_clock(batch([ok]), T0, drift)


@pytest.mark.parametrize("cls", errors.ALL_ERRORS)
def test_error_replies_carry_code_hint_action_and_status(cls):
    """[P-ERR-1] every error travels as code, message, hint and action; status per code."""
    err = cls("something went wrong", path="$.x")
    reply = codec.decode(codec.encode(messages.ErrorReply(**err.to_wire())), messages.ErrorReply)
    assert reply.code == cls.code and reply.action == cls.action and reply.hint == cls.hint
    assert "$.x" in reply.message
    assert 400 <= cls.http_status < 600 and cls.http_status != 500
    back = errors.from_wire(err.to_wire())
    assert type(back) is cls and back.action == cls.action
    assert str(back) == str(err)  # the code once, as the sender wrote it


def test_unknown_error_code_means_stop():
    """[P-ERR-2] a code this version does not know is a failure with action stop."""
    err = errors.from_wire({"code": "SOMETHING_NEW", "message": "m"})
    assert type(err) is errors.ProtocolError
    assert err.code == "SOMETHING_NEW" and err.action == errors.STOP
    assert str(err) == "SOMETHING_NEW: m"


def test_error_codes_are_unique_and_stable():
    codes = [c.code for c in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert {"BAD_SIGNATURE", "UNKNOWN_NODE", "UNSUPPORTED_VERSION", "MALFORMED", "TOO_LARGE",
            "SEQUENCE_GAP", "SEQUENCE_FORK", "CLOCK_SKEW", "WRONG_CLUSTER"} <= set(codes)


def test_decode_refuses_non_bytes():
    """[P-ERR-3] even a wrong argument type comes back as a protocol error."""
    with pytest.raises(errors.Malformed):
        codec.decode("text", messages.Envelope)  # type: ignore[arg-type]
