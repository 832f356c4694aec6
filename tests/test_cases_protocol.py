"""Real-world failure cases C03, C16, C17 and C18 at the protocol layer.

Expected values are those of the cases list; rule ids those of spec/PROTOCOL.md.
"""

from __future__ import annotations

import msgpack
import pytest

from riversync.protocol import chain, codec, hlc, keys, messages
from riversync.protocol.errors import BadSignature, SequenceFork
from riversync.protocol.messages import Batch, Create, Update

TEN_AM = 1_767_261_600_000  # 2026-01-01T10:00:00.000Z
NORTH = keys.SigningKey(b"\x51" * 32)
SOUTH = keys.SigningKey(b"\x52" * 32)
ROSTER = keys.Roster("c", {
    "north": keys.NodeEntry("north", "North", NORTH.public_key),
    "south": keys.NodeEntry("south", "South", SOUTH.public_key),
})


def update(node: str, seq: int, h: int, values: dict, epoch: int = 1, **kw) -> Update:
    fields = dict(node=node, epoch=epoch, seq=seq, hlc=h, schema=1, table="companies",
                  pk="K-3", user="ana", role="clerk", admin=False, values=values)
    return Update(**{**fields, **kw})


def one_batch(ev, n: int = 1, prev: bytes = codec.ZERO_HASH) -> Batch:
    return codec.make_batch(cluster="c", node=ev.node, epoch=ev.epoch, n=n, prev=prev,
                            events=[ev], now_ms=TEN_AM)


# ---------------------------------------------------------------- C03


def test_c03a_receive_takes_the_remote_counter_into_account():
    """C03(a) [P-HLC-3]: north at 10:00:00.000/5 pulls south's event at /9, clock frozen;
    north's next event is stamped at least 10:00:00.000/10 and wins the order."""
    north_last = hlc.make(TEN_AM, 5)
    south_event = update("south", 1, hlc.make(TEN_AM, 9), {"name": "Sample Logistics"},
                         admin=True)
    # the remote event arrives inside a signed batch, as it would over the wire
    _, body = codec.open_envelope(codec.sign(one_batch(south_event), SOUTH), ROSTER)
    for e in body.events:
        north_last = hlc.receive(north_last, e.hlc, TEN_AM)
    correction = hlc.send(north_last, TEN_AM)
    assert correction >= hlc.make(TEN_AM, 10)
    assert (hlc.wall(correction), hlc.counter(correction)) == (TEN_AM, 11)
    north_event = update("north", 1, correction, {"name": "Sample Logistics GmbH"})
    winner = max([south_event, north_event], key=lambda e: e.order_key)
    assert winner.values["name"] == "Sample Logistics GmbH"


def test_c03b_seventy_thousand_events_in_one_frozen_millisecond():
    """C03(b) [P-HLC-5] [P-HLC-6]: 70,000 HLCs strictly increasing, no repeat, no wrap to
    counter 0 at the same wall time, and exact through msgpack."""
    last = hlc.make(TEN_AM, 5)
    stamps = []
    for _ in range(70_000):
        last = hlc.send(last, TEN_AM)
        stamps.append(last)
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))
    assert len(set(stamps)) == 70_000
    seen = set()
    for s in stamps:
        pair = (hlc.wall(s), hlc.counter(s))
        assert pair not in seen
        seen.add(pair)
    # the counter filled up and borrowed the next millisecond instead of wrapping
    assert hlc.wall(stamps[-1]) == TEN_AM + 1
    assert hlc.counter(stamps[65_529]) == 0xFFFF and hlc.wall(stamps[65_529]) == TEN_AM
    assert stamps[65_530] == hlc.make(TEN_AM + 1, 0)
    # exact through msgpack: as plain integers, and inside typed events
    assert msgpack.unpackb(msgpack.packb(stamps)) == stamps
    evs = [update("north", i + 1, s, {}) for i, s in enumerate(stamps)]
    back = codec.decode(codec.encode(evs), list[messages.AnyEvent])
    assert [e.hlc for e in back] == stamps


# ---------------------------------------------------------------- C16


def test_c16_lost_ack_retry_and_self_retry_are_duplicates():
    """C16 [P-CHAIN-1]: the hub stored batch 1 but the ack was lost; the node sends the
    same bytes again, or rebuilds and re-signs the same batch: both are duplicates."""
    ev = update("north", 1, hlc.make(TEN_AM, 1), {"phone": "555-0111"})
    blob = codec.sign(one_batch(ev), NORTH)
    env, body = codec.open_envelope(blob, ROSTER)
    h = codec.body_hash(env.b)
    assert chain.classify(body, h, None, None) == chain.NEXT
    held = messages.OriginState(epoch=1, batches=1, last_seq=1, last_hash=h)
    env2, body2 = codec.open_envelope(blob, ROSTER)  # the retry: same bytes
    assert chain.classify(body2, codec.body_hash(env2.b), held, h) == chain.DUPLICATE
    resigned = codec.sign(one_batch(ev), NORTH)  # rebuilt from the journal, signed again
    assert resigned == blob  # deterministic encoding and Ed25519: identical bytes
    env3, body3 = codec.open_envelope(resigned, ROSTER)
    assert chain.classify(body3, codec.body_hash(env3.b), held, h) == chain.DUPLICATE


def test_c16_same_batch_id_with_another_payload_is_a_fork():
    """C16 [P-CHAIN-1]: same origin, epoch and batch number, other content: SEQUENCE_FORK,
    never silently taken as a duplicate or an overwrite."""
    first = codec.sign(one_batch(update("north", 1, hlc.make(TEN_AM, 1), {"a": 1})), NORTH)
    env, _ = codec.open_envelope(first, ROSTER)
    h = codec.body_hash(env.b)
    held = messages.OriginState(epoch=1, batches=1, last_seq=1, last_hash=h)
    other = codec.sign(one_batch(update("north", 1, hlc.make(TEN_AM, 1), {"a": 2})), NORTH)
    env2, body2 = codec.open_envelope(other, ROSTER)
    with pytest.raises(SequenceFork) as e:
        chain.classify(body2, codec.body_hash(env2.b), held, h)
    assert e.value.action == "resync"
    assert held == messages.OriginState(epoch=1, batches=1, last_seq=1, last_hash=h)


# ---------------------------------------------------------------- C17


def _hello_map() -> dict:
    return {"t": "hello", "v": [1, 0], "c": "c", "o": "north", "ts": TEN_AM, "e": 5,
            "nonce": b"\x00" * 16}


def _env(body: bytes, sig: bytes) -> bytes:
    return msgpack.packb({"v": [1, 0], "c": "c", "o": "north", "k": NORTH.key_id, "b": body,
                          "s": sig})


def test_c17_the_signature_covers_the_exact_bytes_not_a_re_encoding():
    """C17 [P-SIG-1]: a body re-encoded in transit (keys reordered) keeps the decoded value
    but not the signature: the receiver verifies the bytes it got and refuses."""
    original = msgpack.packb(_hello_map())
    sig = NORTH.sign(original)
    reordered = msgpack.packb(dict(reversed(list(_hello_map().items()))))
    assert reordered != original
    assert msgpack.unpackb(reordered) == msgpack.unpackb(original)  # same meaning
    codec.open_envelope(_env(original, sig), ROSTER)
    with pytest.raises(BadSignature):
        codec.open_envelope(_env(reordered, sig), ROSTER)


def test_c17_non_canonical_bytes_that_were_signed_are_accepted_as_sent():
    """C17 [P-SIG-1]: a sender whose encoder writes wider ints than ours is fine; what is
    verified and hashed is its bytes, never our re-encoding of them."""
    body = _hello_map()
    wide = msgpack.packb({k: v for k, v in body.items() if k != "e"})
    wide = bytes([wide[0] + 1]) + wide[1:] + msgpack.packb("e") + b"\xcf" + (5).to_bytes(8, "big")
    env, hello = codec.open_envelope(_env(wide, NORTH.sign(wide)), ROSTER)
    assert hello.e == 5
    assert env.b == wide
    assert codec.encode(hello) != wide  # re-encoding would have produced other bytes
    assert codec.body_hash(env.b) == codec.body_hash(wide)


# ---------------------------------------------------------------- C18

C18_ROW = {
    "name": "Zoë.pdf",
    "data": bytes.fromhex("00015044 46fffe".replace(" ", "")),
    "size": 9223372036854775807,
    "ratio": 1.0,
    "code": "00123",
    "delta": -1,
}
C18_TYPES = {"name": str, "data": bytes, "size": int, "ratio": float, "code": str, "delta": int}


def test_c18_types_survive_push_and_pull():
    """C18 [P-ENC-2] [P-ENC-3] [P-ENC-4]: text stays text, blob stays blob, 2^63-1 exact,
    1.0 stays a float, '00123' keeps its zeros, -1 stays negative; through a push and
    then inside a pull reply, as south receives it."""
    ev = Create(node="north", epoch=1, seq=1, hlc=hlc.make(TEN_AM), schema=1,
                table="attachments", pk="att-1", user="ana", role="clerk", admin=False,
                values=C18_ROW)
    blob = codec.sign(one_batch(ev), NORTH)
    reply = codec.encode(messages.PullReply(hub_epoch=1, cursor=1, head=1, batches=[blob],
                                            more=False))
    pulled = codec.decode(reply, messages.PullReply)
    _, body = codec.open_envelope(pulled.batches[0], ROSTER)
    got = body.events[0].values
    assert got == C18_ROW
    assert {k: type(v) for k, v in got.items()} == C18_TYPES
    assert got["data"].hex().upper() == "0001504446FFFE"
    assert got["size"] == 2**63 - 1 and got["delta"] == -1 and got["code"] == "00123"
    assert repr(got["ratio"]) == "1.0"
    # on the wire: name and code are msgpack str, data is bin, ratio float 64
    wire = msgpack.unpackb(blob)["b"]
    assert b"\xc4\x07" + C18_ROW["data"] in wire  # bin 8, 7 bytes
    assert b"\xa8" + "Zoë.pdf".encode() in wire  # fixstr, 8 UTF-8 bytes
    assert b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00" in wire  # float 64 1.0
    assert b"\xa5" + b"00123" in wire  # fixstr


def test_c18_a_blob_is_never_taken_for_text_nor_text_for_a_blob():
    """C18 [P-ENC-2]: bytes that are valid UTF-8 stay bytes; str stays str."""
    values = {"b": b"plain ascii", "s": "plain ascii", "z": b"\xff\xfe"}
    ev = Update(node="north", epoch=1, seq=1, hlc=hlc.make(TEN_AM), schema=1, table="t",
                pk="k", user="u", role="clerk", admin=False, values=values)
    _, body = codec.open_envelope(codec.sign(one_batch(ev), NORTH), ROSTER)
    got = body.events[0].values
    assert type(got["b"]) is bytes and type(got["s"]) is str and got["z"] == b"\xff\xfe"
