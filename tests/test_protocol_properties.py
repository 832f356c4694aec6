"""Hypothesis properties of the codec: round trips, tamper evidence, a total decoder.

Rule ids are those of spec/PROTOCOL.md.
"""

from __future__ import annotations

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from riversync.protocol import codec, errors, hlc, keys, limits, messages
from riversync.protocol.messages import (
    Batch,
    Create,
    Delete,
    Hello,
    Pull,
    Resolve,
    StatusRequest,
    Transfer,
    Update,
)

NORTH = keys.SigningKey(b"\x41" * 32)
ROSTER = keys.Roster("c1", {"north": keys.NodeEntry("north", "North", NORTH.public_key)})
I64 = st.integers(-(2**63), 2**63 - 1)
U63 = st.integers(0, 2**63 - 1)
names = st.text(min_size=1, max_size=limits.MAX_NAME_CHARS)
values = st.dictionaries(
    names,
    st.none() | st.booleans() | I64 | st.floats(allow_nan=False) | st.text(max_size=40)
    | st.binary(max_size=40),
    max_size=6,
)


def common(node: str, epoch: int, seq: int):
    return st.fixed_dictionaries({
        "node": st.just(node), "epoch": st.just(epoch), "seq": st.just(seq),
        "hlc": U63, "schema": st.integers(1, 65535), "table": names,
        "pk": st.text(min_size=1, max_size=limits.MAX_PK_CHARS), "user": names, "role": names,
        "admin": st.booleans(),
    })


def event(node: str = "north", epoch: int = 1, seq: int = 1):
    base = common(node, epoch, seq)
    return st.one_of(
        st.builds(lambda b, v: Create(**b, values=v), base, values),
        st.builds(lambda b, v: Update(**b, values=v), base, values),
        st.builds(lambda b: Delete(**b), base),
        st.builds(lambda b, o: Transfer(**b, owner=o), base, names),
        st.builds(lambda b, c, d, v: Resolve(**b, conflict=c, decision=d, values=v), base,
                  st.text(min_size=1, max_size=128), st.sampled_from(messages.DECISIONS), values),
    )


@st.composite
def batches(draw, node: str = "north", cluster: str = "c1"):
    epoch = draw(U63)
    first = draw(st.integers(1, 2**40))
    count = draw(st.integers(1, 5))
    evs = [draw(event(node, epoch, first + i)) for i in range(count)]
    n = draw(st.integers(1, 2**40))
    prev = codec.ZERO_HASH if n == 1 else draw(st.binary(min_size=32, max_size=32))
    return Batch(v=(1, draw(st.integers(0, 65535))), c=cluster, o=node, ts=draw(U63), e=epoch,
                 n=n, first=first, last=first + count - 1, prev=prev, events=evs)


nonces = st.binary(min_size=16, max_size=16)
requests = st.one_of(
    st.builds(Hello, v=st.just((1, 0)), c=st.just("c1"), o=st.just("north"), ts=U63, e=U63,
              nonce=nonces),
    st.builds(Pull, v=st.just((1, 0)), c=st.just("c1"), o=st.just("north"), ts=U63, e=U63,
              nonce=nonces, hub_epoch=U63, cursor=U63,
              limit=st.integers(1, limits.MAX_BATCHES_PER_PULL),
              wait_ms=st.integers(0, limits.MAX_WAIT_MS)),
    st.builds(StatusRequest, v=st.just((1, 0)), c=st.just("c1"), o=st.just("north"), ts=U63,
              nonce=nonces),
)
bodies = batches() | requests
origin_states = st.builds(messages.OriginState, epoch=U63, batches=U63, last_seq=U63,
                          last_hash=st.binary(min_size=32, max_size=32))
replies = st.one_of(
    st.builds(messages.HelloReply, v=st.just((1, 0)), hub_epoch=U63, restore_point=U63,
              hub_time_ms=U63, head=U63, origins=st.lists(origin_states, max_size=3)),
    st.builds(messages.PushReply, status=st.sampled_from(["stored", "duplicate"]), hub_seq=U63,
              hub_epoch=U63),
    st.builds(messages.PullReply, hub_epoch=U63, cursor=U63, head=U63,
              batches=st.lists(st.binary(max_size=64), max_size=3), more=st.booleans()),
    st.builds(messages.ErrorReply, code=st.sampled_from(sorted(errors.BY_CODE)),
              message=st.text(), hint=st.text(), action=st.sampled_from(["retry", "resync",
                                                                          "stop"])),
    st.builds(messages.StatusReply, v=st.just((1, 0)), hub_epoch=U63, hub_time_ms=U63,
              head=U63, nodes=st.lists(st.builds(messages.NodeStatus, node=names, epoch=U63,
                                                 batches=U63, last_seq=U63, cursor=U63,
                                                 last_seen_ms=U63), max_size=3)),
)


@given(bodies)
def test_signed_bodies_round_trip(body):
    """[P-SIG-1] [P-ENC-2] [P-ENC-3] [P-ENC-4] sign, open: the same typed value, exactly."""
    env, got = codec.open_envelope(codec.sign(body, NORTH), ROSTER)
    assert got == body
    assert type(got) is type(body)
    if isinstance(body, Batch):
        for a, b in zip(got.events, body.events, strict=True):
            for k, v in getattr(b, "values", {}).items():
                assert type(a.values[k]) is type(v)
    assert codec.encode(got) == env.b  # decode then encode is the identity on our bytes


@given(event() | event("south", 5, 9))
def test_events_round_trip(ev):
    """[P-ENC-1] an event is a tagged array and comes back equal."""
    data = codec.encode(ev)
    assert msgpack.unpackb(data)[0] == ev.kind
    assert codec.decode(data, messages.AnyEvent) == ev


@given(replies)
def test_replies_round_trip(reply):
    assert codec.decode(codec.encode(reply), type(reply)) == reply


@given(batches(), st.data())
@example(
    batch=Batch(v=(1, 0), c="c1", o="north", ts=0, e=0, n=1, first=1, last=1,
                prev=codec.ZERO_HASH, events=[Delete(node="north", epoch=0, seq=1, hlc=0,
                                                     schema=1, table="t", pk="k", user="u",
                                                     role="r", admin=False)]),
    data=None,
)  # pinned: the smallest batch, every byte flipped in turn
def test_flipping_any_byte_of_a_signed_blob_is_refused(batch, data):
    """[P-SIG-8] any single changed byte of the blob is refused with a typed error."""
    blob = codec.sign(batch, NORTH)
    if data is None:  # the pinned example: try every position with one mask
        positions = [(i, 0x01) for i in range(len(blob))]
    else:
        positions = [(data.draw(st.integers(0, len(blob) - 1)), data.draw(st.integers(1, 255)))]
    for i, mask in positions:
        bad = bytearray(blob)
        bad[i] ^= mask
        try:
            codec.open_envelope(bytes(bad), ROSTER)
        except errors.ProtocolError:
            continue
        raise AssertionError(f"byte {i} xor {mask:#x} was accepted")


def _decode_everywhere(data: bytes) -> None:
    for type_ in (messages.Envelope, messages.AnyBody, messages.AnyEvent, messages.HelloReply,
                  messages.PullReply, messages.PushReply, messages.ErrorReply,
                  messages.StatusReply):
        try:
            codec.decode(data, type_)
        except errors.ProtocolError:
            pass
    try:
        codec.open_envelope(data, ROSTER)
    except errors.ProtocolError:
        pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=12),
    max_leaves=30,
)


@given(st.binary(max_size=300))
@example(b"\xdd\xff\xff\xff\xff")  # array header claiming 4G elements
@example(b"\xc7\x01\xff\x00")  # timestamp extension
@example(b"\x91" * 100_000 + b"\xc0")  # nesting far past any stack
def test_decoder_fed_arbitrary_bytes_raises_only_protocol_errors(data):
    """[P-ERR-3] any byte string decodes or raises a ProtocolError, nothing else."""
    _decode_everywhere(data)


@given(msgpack_values)
def test_decoder_fed_arbitrary_msgpack_raises_only_protocol_errors(value):
    """[P-ERR-3] well-formed msgpack of the wrong shape is a protocol error too."""
    _decode_everywhere(msgpack.packb(value))


@given(msgpack_values | st.binary(max_size=200))
def test_validly_signed_arbitrary_bodies_raise_only_protocol_errors(body):
    """[P-ERR-3] past the signature check the body decoder is total as well."""
    raw = body if isinstance(body, bytes) else msgpack.packb(body)
    blob = msgpack.packb({"v": [1, 0], "c": "c1", "o": "north", "k": NORTH.key_id, "b": raw,
                          "s": NORTH.sign(raw)})
    try:
        codec.open_envelope(blob, ROSTER)
    except errors.ProtocolError:
        pass


@given(batches(), st.integers(0, 10), st.integers(0, 11), msgpack_values)
def test_batch_with_a_field_replaced_by_junk_raises_only_protocol_errors(batch, i, j, junk):
    """[P-ERR-3] structurally near-valid batches: one event field replaced by any value."""
    raw = msgpack.unpackb(codec.encode(batch))
    target = raw["events"][i % len(raw["events"])]
    target[j % len(target)] = junk
    body = msgpack.packb(raw)
    blob = msgpack.packb({"v": [1, 0], "c": "c1", "o": "north", "k": NORTH.key_id, "b": body,
                          "s": NORTH.sign(body)})
    try:
        codec.open_envelope(blob, ROSTER)
    except errors.ProtocolError:
        pass


def test_hlc_values_survive_the_wire_at_the_extremes():
    """[P-HLC-1] the largest HLC fits int64 and round-trips in an event."""
    ev = Delete(node="n", epoch=2**63 - 1, seq=2**63 - 1, hlc=hlc.HLC_MAX, schema=1, table="t",
                pk="k", user="u", role="r", admin=True)
    assert codec.decode(codec.encode(ev), messages.AnyEvent) == ev
