"""Codec cost per event: the signed, validated, typed path beside plain msgpack.

Run with ``make bench`` (pytest-benchmark), or ``python bench/bench_codec.py`` for a short
table of microseconds per event and the ratios the protocol is held to: encode+sign and
verify+decode of a 1,000-event batch should cost at most 1.5x plain ``msgpack.packb`` /
``unpackb`` of the same events.  The second comparison decides the typed decoder:
msgspec (typed, validating) against the ``msgpack`` package plus building the same
objects by hand (without the validation msgspec does on the way).
"""

from __future__ import annotations

import sys
import timeit

import msgpack
import msgspec
import pytest

from riversync.protocol import codec, hlc, keys, messages
from riversync.protocol.messages import Batch, Update

EVENTS = 1_000
T0 = 1_767_258_000_000
KEY = keys.SigningKey(b"\x42" * 32)
ROSTER = keys.Roster("bench", {"north": keys.NodeEntry("north", "North", KEY.public_key)})


def make_batch() -> Batch:
    events = [
        Update(node="north", epoch=7, seq=i, hlc=hlc.make(T0, i), schema=1, table="players",
               pk=f"P-{i:06d}", user="ana", role="clerk", admin=False,
               values={"name": f"Player {i}", "club": "K-3", "rating": 1200.5 + i,
                       "goals": i % 40, "notes": None})
        for i in range(1, EVENTS + 1)
    ]
    return codec.make_batch(cluster="bench", node="north", epoch=7, n=1,
                            prev=codec.ZERO_HASH, events=events, now_ms=T0)


BATCH = make_batch()
BLOB = codec.sign(BATCH, KEY)
BODY = codec.encode(BATCH)
# The same events as plain Python data: what msgpack.packb/unpackb handle.
PLAIN = msgpack.unpackb(BODY)
PLAIN_BYTES = msgpack.packb(PLAIN)
_body_decoder = msgspec.msgpack.Decoder(messages.AnyBody)
_KINDS = messages.EVENT_TYPES


def msgpack_manual_decode(data: bytes) -> Batch:
    """msgpack.unpackb, then the same typed objects built by hand (no validation)."""
    raw = msgpack.unpackb(data)
    events = []
    for e in raw["events"]:
        cls = _KINDS[e[0]]
        events.append(cls(*e[1:len(cls.__struct_fields__) + 1]))
    return Batch(v=tuple(raw["v"]), c=raw["c"], o=raw["o"], ts=raw["ts"], e=raw["e"],
                 n=raw["n"], first=raw["first"], last=raw["last"], prev=raw["prev"],
                 events=events)


def signed_encode() -> bytes:
    return codec.sign(BATCH, KEY)


def signed_decode():
    return codec.open_envelope(BLOB, ROSTER)


def plain_pack() -> bytes:
    return msgpack.packb(PLAIN)


def plain_unpack():
    return msgpack.unpackb(PLAIN_BYTES)


def msgspec_typed_decode():
    return _body_decoder.decode(BODY)


CASES = {
    "plain msgpack.packb": plain_pack,
    "encode+sign (riversync)": signed_encode,
    "plain msgpack.unpackb": plain_unpack,
    "verify+decode (riversync)": signed_decode,
    "msgspec typed decode": msgspec_typed_decode,
    "msgpack + manual construction": lambda: msgpack_manual_decode(BODY),
}


def test_same_events_everywhere():
    assert msgpack_manual_decode(BODY) == BATCH == msgspec_typed_decode()
    assert signed_decode()[1] == BATCH


@pytest.mark.parametrize("name", list(CASES))
def test_codec(benchmark, name):
    benchmark.group = "codec, 1,000-event batch"
    benchmark.extra_info["events"] = EVENTS
    benchmark(CASES[name])
    benchmark.extra_info["us_per_event"] = benchmark.stats.stats.median * 1e6 / EVENTS


def measure(number: int = 30, repeat: int = 7) -> dict[str, float]:
    """Median-free best-of timing: microseconds per event for each case."""
    out = {}
    for name, fn in CASES.items():
        best = min(timeit.repeat(fn, number=number, repeat=repeat)) / number
        out[name] = best * 1e6 / EVENTS
    return out


def main() -> int:
    us = measure()
    print(f"{'case':34} us/event")
    for name, v in us.items():
        print(f"{name:34} {v:8.3f}")
    enc = us["encode+sign (riversync)"] / us["plain msgpack.packb"]
    dec = us["verify+decode (riversync)"] / us["plain msgpack.unpackb"]
    typed = us["msgspec typed decode"] / us["msgpack + manual construction"]
    print(f"\nencode+sign / packb        = {enc:.2f}x  (target <= 1.5x)")
    print(f"verify+decode / unpackb    = {dec:.2f}x  (target <= 1.5x)")
    print(f"msgspec typed / msgpack+manual = {typed:.2f}x  (< 1: msgspec is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
