#!/usr/bin/env python3
"""Make spec/vectors/ and the generated parts of spec/PROTOCOL.md from riversync.protocol.

Usage:
    python spec/make_vectors.py                 # rewrite spec/vectors/ and the spec's tables
    python spec/make_vectors.py --out DIR       # write the vectors to DIR instead
    python spec/make_vectors.py --check         # exit 1 if anything on disk is out of date

Every vector's expected value comes from what this script *built*, not from decoding the
bytes, and its expected error code is written here by hand; the script then runs the
implementation on each vector and refuses to write one it disagrees with.  Keys come from
fixed seeds and Ed25519 signatures are deterministic, so a rerun gives identical files.

The generated parts of PROTOCOL.md (field tables, error table, limits, chain diagram) sit
between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import msgpack
import msgspec

from riversync.protocol import chain, codec, errors, hlc, keys, limits, messages
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

HERE = Path(__file__).resolve().parent
FORMAT = 1

CLUSTER = "leagues-test"
SEEDS = {name: hashlib.sha256(f"riversync test key {name}".encode()).digest() for name in (
    "north", "south", "east", "mallory")}
KEYS = {name: keys.SigningKey(seed) for name, seed in SEEDS.items()}
OFFICES = {"north": "North Office", "south": "South Office"}
ROSTER = keys.Roster(
    CLUSTER, {n: keys.NodeEntry(n, OFFICES[n], KEYS[n].public_key) for n in ("north", "south")}
)
T0 = 1_767_258_000_000  # 2026-01-01T09:00:00Z in Unix ms
NORTH_EPOCH = 7001
SOUTH_EPOCH = 9002
NONCE = bytes(range(16))
DRIFT = hlc.DEFAULT_MAX_DRIFT_MS


# ---------------------------------------------------------------- JSON-safe values


def to_json(x: object) -> object:
    """The JSON-safe form documented in vectors/README.md."""
    if x is None or isinstance(x, bool | str):
        return x
    if isinstance(x, int):
        return x if -(2**53) < x < 2**53 else {"int": str(x)}
    if isinstance(x, float):
        return {"float": repr(x)}
    if isinstance(x, bytes | bytearray):
        return {"bin": bytes(x).hex()}
    if isinstance(x, list | tuple):
        return [to_json(i) for i in x]
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, msgspec.Struct):
        cfg = x.__struct_config__
        out: dict = {}
        if cfg.tag_field is not None:
            out[cfg.tag_field] = cfg.tag
        for f in x.__struct_fields__:
            out[f] = to_json(getattr(x, f))
        return out
    raise TypeError(type(x))


# ---------------------------------------------------------------- builders


def ev(cls, seq: int, *, node: str = "north", epoch: int = NORTH_EPOCH, hlc_: int | None = None,
       pk: str = "K-1", admin: bool = False, user: str = "ana", **extra):
    h = hlc.make(T0, seq) if hlc_ is None else hlc_
    return cls(node=node, epoch=epoch, seq=seq, hlc=h, schema=1, table="clubs", pk=pk,
               user=user, role="clerk", admin=admin, **extra)


def batch(events, *, n: int = 1, prev: bytes = codec.ZERO_HASH, node: str = "north",
          epoch: int = NORTH_EPOCH, cluster: str = CLUSTER, ts: int = T0, v=(1, 0),
          first: int | None = None, last: int | None = None) -> Batch:
    return Batch(v=v, c=cluster, o=node, ts=ts, e=epoch, n=n,
                 first=events[0].seq if first is None else first,
                 last=events[-1].seq if last is None else last, prev=prev, events=list(events))


def hello(**kw) -> Hello:
    base = dict(v=(1, 0), c=CLUSTER, o="north", ts=T0, e=NORTH_EPOCH, nonce=NONCE)
    base.update(kw)
    return Hello(**base)


def envelope_bytes(body_bytes: bytes, *, signer: str = "north", node: str | None = None,
                   cluster: str = CLUSTER, v=(1, 0), key_id: str | None = None,
                   sig: bytes | None = None, extra: dict | None = None) -> bytes:
    """An envelope around ``body_bytes`` built by hand, for vectors the encoder cannot make."""
    key = KEYS[signer]
    env = {"v": list(v), "c": cluster, "o": node or signer, "k": key_id or key.key_id,
           "b": body_bytes, "s": key.sign(body_bytes) if sig is None else sig}
    if extra:
        env.update(extra)
    return msgpack.packb(env, use_bin_type=True)


def raw_body(fields: dict) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def body_map(body: messages.Body) -> dict:
    """A body as a plain dict (keys in wire order), to add or break fields by hand."""
    return msgpack.unpackb(codec.encode(body), raw=False, strict_map_key=False)


def signed(body: messages.Body, signer: str = "north") -> bytes:
    return codec.sign(body, KEYS[signer])


# ---------------------------------------------------------------- vectors

VECTORS: list[dict] = []


def add(name: str, kind: str, description: str, data: bytes | None, **fields) -> None:
    vec = {"name": name, "kind": kind, "description": description}
    if data is not None:
        vec["input"] = data.hex()
    vec.update(fields)
    VECTORS.append(vec)


def ok_open(body) -> dict:
    return {"body": to_json(body)}


def open_vectors() -> None:
    create = ev(Create, 1, values={"name": "Riverside FC", "founded": 1921, "rating": 4.5,
                                   "logo": b"\x89PNG", "notes": None, "active": True})
    add("batch-create", "open", "A batch of one create event with every value type.",
        signed(batch([create])), expect=ok_open(batch([create])))
    upd = ev(Update, 1, values={"phone": "555-0111", "fax": None})
    add("batch-update", "open", "An update names only changed columns; None is a value (NULL).",
        signed(batch([upd])), expect=ok_open(batch([upd])))
    dele = ev(Delete, 1)
    add("batch-delete", "open", "A delete (tombstone) carries no values.",
        signed(batch([dele])), expect=ok_open(batch([dele])))
    tr = ev(Transfer, 1, owner="South Office")
    add("batch-transfer", "open", "A transfer names the new owning office.",
        signed(batch([tr])), expect=ok_open(batch([tr])))
    for decision, values in (("accept", {"name": "Riverside AFC"}), ("keep", {}),
                             ("merge", {"name": "Riverside FC", "phone": "555-0199"})):
        rs = ev(Resolve, 1, admin=decision != "keep", conflict=f"north/{NORTH_EPOCH}/3",
                decision=decision, values=values)
        add(f"batch-resolve-{decision}", "open", f"A resolve event with decision {decision!r}.",
            signed(batch([rs])), expect=ok_open(batch([rs])))
    mixed = [
        ev(Create, 1, values={"name": "A"}),
        ev(Update, 2, values={"name": "B"}),
        ev(Transfer, 3, owner="South Office"),
        ev(Resolve, 4, conflict="c-1", decision="keep"),
        ev(Delete, 5),
    ]
    b1 = batch(mixed)
    add("batch-mixed", "open", "Five events of every kind, sequences 1..5, in one batch.",
        signed(b1), expect=ok_open(b1))
    b1_hash = codec.body_hash(codec.encode(b1))
    b2 = batch([ev(Update, 6, values={"name": "C"})], n=2, prev=b1_hash)
    add("batch-second", "open", "Batch 2 names the SHA-256 of batch 1's body bytes as prev.",
        signed(b2), expect=ok_open(b2))
    c18 = ev(Create, 1, pk="att-1", values={
        "name": "Zoë.pdf", "data": bytes.fromhex("00015044 46fffe".replace(" ", "")),
        "size": 2**63 - 1, "ratio": 1.0, "code": "00123", "delta": -1})
    add("batch-type-fidelity", "open",
        "C18: str stays str, bin stays bin, 2^63-1, 1.0 stays a float, '00123' stays text, -1.",
        signed(batch([c18])), expect=ok_open(batch([c18])))
    h = hello()
    add("hello", "open", "A hello request.", signed(h), expect=ok_open(h))
    p = Pull(v=(1, 0), c=CLUSTER, o="south", ts=T0, e=SOUTH_EPOCH, nonce=NONCE, hub_epoch=3,
             cursor=41, limit=50, wait_ms=30_000)
    add("pull-long-poll", "open", "A pull with a cursor, a limit and a 30 s long-poll.",
        signed(p, "south"), expect=ok_open(p))
    pd = body_map(Pull(v=(1, 0), c=CLUSTER, o="south", ts=T0, e=SOUTH_EPOCH, nonce=NONCE,
                       hub_epoch=3, cursor=0))
    del pd["limit"], pd["wait_ms"]
    pd_expect = Pull(v=(1, 0), c=CLUSTER, o="south", ts=T0, e=SOUTH_EPOCH, nonce=NONCE,
                     hub_epoch=3, cursor=0)
    add("pull-defaults", "open", "A pull without limit and wait_ms takes the defaults 100 and 0.",
        envelope_bytes(raw_body(pd), signer="south"), expect=ok_open(pd_expect))
    st = StatusRequest(v=(1, 0), c=CLUSTER, o="north", ts=T0, nonce=NONCE)
    add("status", "open", "A status request.", signed(st), expect=ok_open(st))

    # Unknown fields under a known major are ignored.
    one = ev(Update, 1, values={"name": "X"})
    bm = body_map(batch([one]))
    bm["events"][0] = [*bm["events"][0], "a future field", 42]
    add("unknown-trailing-event-fields", "open",
        "Elements after an event's last known field are ignored.",
        envelope_bytes(raw_body(bm)), expect=ok_open(batch([one])))
    bm = body_map(batch([one]))
    bm["zz_future"] = {"nested": [1, 2]}
    add("unknown-body-keys", "open", "Unknown keys in a body map are ignored.",
        envelope_bytes(raw_body(bm)), expect=ok_open(batch([one])))
    add("unknown-envelope-keys", "open", "Unknown keys in the envelope map are ignored.",
        envelope_bytes(codec.encode(h), extra={"x_route": "eu-1"}), expect=ok_open(h))
    h19 = hello(v=(1, 9))
    add("newer-minor-version", "open", "A peer speaking 1.9 is understood by a 1.0 receiver.",
        envelope_bytes(codec.encode(h19), v=(1, 9)), expect=ok_open(h19))
    rs = ev(Resolve, 1, conflict="c-9", decision="keep")
    bm = body_map(batch([rs]))
    bm["events"][0] = bm["events"][0][:-1]
    add("resolve-without-values", "open",
        "A resolve whose trailing optional values element is absent decodes with values {}.",
        envelope_bytes(raw_body(bm)), expect=ok_open(batch([rs])))

    # Errors, in the order open_envelope checks them.
    add("too-large", "open", "A blob longer than the receiver's limit (here 256 bytes).",
        signed(b1), max_bytes=256, expect={"error": "TOO_LARGE"})
    add("not-msgpack", "open", "Truncated msgpack.", signed(h)[:-5], expect={"error": "MALFORMED"})
    add("envelope-not-a-map", "open", "An envelope must be a map.",
        msgpack.packb([1, 2, 3]), expect={"error": "MALFORMED"})
    add("envelope-missing-signature", "open", "An envelope without s.",
        msgpack.packb({"v": [1, 0], "c": CLUSTER, "o": "north", "k": KEYS["north"].key_id,
                       "b": codec.encode(h)}), expect={"error": "MALFORMED"})
    add("version-newer-major", "open", "Major 2 is refused, naming both versions.",
        envelope_bytes(codec.encode(hello(v=(2, 0))), v=(2, 0)),
        expect={"error": "UNSUPPORTED_VERSION"})
    add("version-older-major", "open", "Major 0 is refused, naming both versions.",
        envelope_bytes(codec.encode(hello(v=(0, 3))), v=(0, 3)),
        expect={"error": "UNSUPPORTED_VERSION"})
    add("wrong-cluster", "open", "A blob signed for another cluster.",
        envelope_bytes(codec.encode(hello(c="other-cluster")), cluster="other-cluster"),
        expect={"error": "WRONG_CLUSTER"})
    add("unknown-node", "open", "A node id the roster does not list.",
        signed(hello(o="east"), "east"), expect={"error": "UNKNOWN_NODE"})
    add("wrong-key-id", "open", "North's node id with another key's id.",
        envelope_bytes(codec.encode(h), key_id=KEYS["mallory"].key_id),
        expect={"error": "UNKNOWN_NODE"})
    add("signature-by-other-key", "open",
        "North's node id and key id, but signed by another key.",
        envelope_bytes(codec.encode(h), sig=KEYS["mallory"].sign(codec.encode(h))),
        expect={"error": "BAD_SIGNATURE"})
    hb = codec.encode(h)
    flipped = hb[:-1] + bytes([hb[-1] ^ 0x01])
    add("body-byte-flipped", "open", "One bit of the signed body changed after signing.",
        envelope_bytes(flipped, sig=KEYS["north"].sign(hb)), expect={"error": "BAD_SIGNATURE"})
    hm = body_map(h)
    reordered = raw_body(dict(reversed(list(hm.items()))))
    add("re-encoded-body", "open",
        "C17: a relay re-encoded the signed body (same fields, keys in another order) and kept "
        "the original signature; verifying exact bytes refuses it, re-encoding would not.",
        envelope_bytes(reordered, sig=KEYS["north"].sign(hb)),
        expect={"error": "BAD_SIGNATURE"})
    add("body-not-msgpack", "open", "Validly signed bytes that are not msgpack.",
        envelope_bytes(b"\xc1\x00\x01"), expect={"error": "MALFORMED"})
    add("unknown-body-type", "open", "A body tag this version does not know.",
        envelope_bytes(raw_body({**hm, "t": "gossip"})), expect={"error": "MALFORMED"})
    add("body-disagrees-with-envelope", "open",
        "The signed body names south while the envelope (and key) say north.",
        envelope_bytes(codec.encode(hello(o="south"))), expect={"error": "MALFORMED"})
    bm = body_map(batch([one]))
    bm["events"][0][0] = "upsert"
    add("unknown-event-kind", "open", "An event tag this version does not know.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm = body_map(batch([one]))
    bm["events"][0][1] = "n" * (limits.MAX_NAME_CHARS + 1)
    add("name-too-long", "open", "A node id longer than the name limit.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm = body_map(batch([ev(Update, 1, values={"name": "X"})]))
    bm["events"][0][11] = {"tags": ["a", "b"]}
    add("value-not-a-storage-class", "open", "A column value that is an array.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm["events"][0][11] = {"big": 2**64 - 1}
    add("value-beyond-int64", "open", "An integer value above 2^63-1.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm = body_map(batch([one]))
    bm["last"] = 2
    add("last-disagrees-with-events", "open", "last says 2 but the batch holds one event.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm = body_map(batch([ev(Update, 1, values={}), ev(Update, 2, values={})]))
    bm["events"][1][3] = 3
    add("event-seq-not-contiguous", "open", "Event sequences 1, 3 in a batch claiming 1..2.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    bm = body_map(batch([one]))
    bm["prev"] = b"\x01" * 32
    add("first-batch-nonzero-prev", "open", "Batch 1 of an epoch must name the zero hash.",
        envelope_bytes(raw_body(bm)), expect={"error": "MALFORMED"})
    spoof = ev(Update, 1, node="south", epoch=SOUTH_EPOCH, values={"name": "X"})
    add("event-of-other-node", "open", "C10: north signs a batch holding a south event.",
        envelope_bytes(raw_body(body_map(batch([spoof])))), expect={"error": "ORIGIN_MISMATCH"})
    old = ev(Update, 1, epoch=NORTH_EPOCH - 1, values={"name": "X"})
    add("event-of-other-epoch", "open", "An event of another epoch of the signer.",
        envelope_bytes(raw_body(body_map(batch([old])))), expect={"error": "ORIGIN_MISMATCH"})

    # Receiver context: endpoint, freshness, nonces, clock.
    add("hello-on-push", "open", "A hello sent to /v1/push, which takes only batches.",
        signed(h), endpoint="/v1/push", expect={"error": "UNEXPECTED_MESSAGE"})
    add("hello-fresh", "open", "A hello signed 20 s before hub time, inside a 120 s window.",
        signed(h), endpoint="/v1/hello", now_ms=T0 + 20_000, window_ms=120_000,
        seen_nonces=[bytes(16).hex()], expect=ok_open(h))
    add("hello-stale", "open", "A hello signed 10 minutes before hub time (window 120 s).",
        signed(h), endpoint="/v1/hello", now_ms=T0 + 600_000, window_ms=120_000,
        expect={"error": "STALE_REQUEST"})
    add("hello-replayed", "open", "A hello whose nonce the hub already accepted.",
        signed(h), endpoint="/v1/hello", now_ms=T0, window_ms=120_000,
        seen_nonces=[NONCE.hex()], expect={"error": "REPLAYED_REQUEST"})
    ahead = ev(Update, 1, hlc_=hlc.make(T0 + DRIFT + 1, 0), values={"name": "X"})
    add("batch-clock-ahead", "open",
        "An event stamped 5 min + 1 ms ahead of hub time (max drift 5 min).",
        signed(batch([ahead])), endpoint="/v1/push", now_ms=T0, max_drift_ms=DRIFT,
        expect={"error": "CLOCK_SKEW"})
    edge = ev(Update, 1, hlc_=hlc.make(T0 + DRIFT, 65535), values={"name": "X"})
    add("batch-clock-at-limit", "open",
        "An event exactly 5 min ahead of hub time is accepted (the bound is inclusive).",
        signed(batch([edge])), endpoint="/v1/push", now_ms=T0, max_drift_ms=DRIFT,
        expect=ok_open(batch([edge])))


def chain_vectors() -> None:
    b1 = batch([ev(Create, 1, values={"name": "A"}), ev(Update, 2, values={"name": "B"})])
    b1_bytes = codec.encode(b1)
    h1 = codec.body_hash(b1_bytes)
    held1 = messages.OriginState(epoch=NORTH_EPOCH, batches=1, last_seq=2, last_hash=h1)
    b2 = batch([ev(Update, 3, values={"name": "C"})], n=2, prev=h1)

    def case(name, description, body, held, held_hash_at_n, outcome):
        expect = {"chain": outcome} if outcome in (chain.NEXT, chain.DUPLICATE) else {
            "error": outcome}
        add(f"chain-{name}", "chain", description, signed(body),
            held=None if held is None else to_json(held),
            held_hash_at_n=None if held_hash_at_n is None else held_hash_at_n.hex(),
            expect=expect)

    case("first", "Nothing held; batch 1 with the zero prev hash is next.", b1, None, None,
         chain.NEXT)
    case("follows", "Batch 1 held; batch 2 chains to it and continues at event 3.", b2, held1,
         None, chain.NEXT)
    case("duplicate", "Batch 1 held; the same bytes again (a retry after a lost ack, C16).",
         b1, held1, h1, chain.DUPLICATE)
    other = batch([ev(Create, 1, values={"name": "A*"}), ev(Update, 2, values={"name": "B"})])
    case("same-n-other-bytes", "Batch 1 held; another batch 1 of the same epoch (restored "
         "node, C16 same id, other payload).", other, held1, h1, "SEQUENCE_FORK")
    case("wrong-prev", "Batch 1 held; batch 2 names another predecessor.",
         batch([ev(Update, 3, values={})], n=2, prev=b"\x02" * 32), held1, None,
         "SEQUENCE_FORK")
    case("skips-batches", "Batch 1 held; batch 3 arrives.",
         batch([ev(Update, 3, values={})], n=3, prev=h1), held1, None, "SEQUENCE_GAP")
    case("skips-events", "Batch 1 (events 1..2) held; batch 2 starts at event 5.",
         batch([ev(Update, 5, values={})], n=2, prev=h1), held1, None, "SEQUENCE_GAP")
    case("empty-not-first", "Nothing held; batch 2 arrives.", b2, None, None, "SEQUENCE_GAP")
    case("empty-first-events-skip", "Nothing held; batch 1 starts at event 4.",
         batch([ev(Update, 4, values={})]), None, None, "SEQUENCE_GAP")


def hlc_vectors() -> None:
    def steps(name, description, start, ops):
        add(f"hlc-{name}", "hlc", description, None, start=to_json(start), steps=ops)

    def send(now, expect):
        return {"op": "send", "now_ms": now, "expect": to_json(expect)}

    def recv(remote, now, expect=None, error=None, max_drift_ms=DRIFT):
        step = {"op": "receive", "remote": to_json(remote), "now_ms": now,
                "max_drift_ms": max_drift_ms}
        if error:
            step["expect_error"] = error
        else:
            step["expect"] = to_json(expect)
        return step

    m = hlc.make
    steps("local-ticks", "Three local events in one frozen millisecond, then time moves on.",
          0, [send(T0, m(T0, 0)), send(T0, m(T0, 1)), send(T0, m(T0, 2)),
              send(T0 + 1, m(T0 + 1, 0))])
    steps("clock-backwards", "The wall clock steps back 2 s: the HLC keeps counting on.",
          m(T0, 3), [send(T0 - 2000, m(T0, 4)), send(T0 - 1999, m(T0, 5)),
                     send(T0 + 1, m(T0 + 1, 0))])
    steps("receive-remote-counter", "C03a: last T0/5, a remote T0/9 arrives with the clock "
          "frozen at T0: the next local event is after T0/9.",
          m(T0, 5), [recv(m(T0, 9), T0, m(T0, 10)), send(T0, m(T0, 11))])
    steps("receive-older", "A remote stamp older than the local clock leaves it ahead.",
          m(T0, 5), [recv(m(T0 - 5000, 70), T0 + 2, m(T0 + 2, 0))])
    steps("receive-ahead-within-drift", "A remote 4 min ahead is accepted and adopted.",
          m(T0, 0), [recv(m(T0 + 240_000, 3), T0, m(T0 + 240_000, 4)),
                     send(T0 + 1, m(T0 + 240_000, 5))])
    steps("drift-refused", "A remote more than max_drift ahead is refused and the clock "
          "is unchanged.", m(T0, 1),
          [recv(m(T0 + DRIFT + 1, 0), T0, error="CLOCK_SKEW"), send(T0, m(T0, 2))])
    steps("counter-overflow", "Counter 65535 full: the next tick borrows the next ms.",
          m(T0, 65534), [send(T0, m(T0, 65535)), send(T0, m(T0 + 1, 0)),
                         send(T0, m(T0 + 1, 1))])
    steps("receive-counter-overflow", "A remote at counter 65535 makes the receiver borrow "
          "the next millisecond.", m(T0, 2), [recv(m(T0, 65535), T0, m(T0 + 1, 0))])
    steps("hlc-range-exhausted", "At the largest HLC there is no next instant: CLOCK_OVERFLOW.",
          hlc.HLC_MAX, [{"op": "send", "now_ms": T0, "expect_error": "CLOCK_OVERFLOW"}])
    add("hlc-make-wall-too-big", "hlc", "A wall time beyond 47 bits cannot be packed.", None,
        start=0, steps=[{"op": "make", "wall_ms": hlc.WALL_MAX + 1, "counter": 0,
                         "expect_error": "CLOCK_OVERFLOW"},
                        {"op": "make", "wall_ms": hlc.WALL_MAX, "counter": 65535,
                         "expect": to_json(hlc.HLC_MAX)}])


def decode_vectors() -> None:
    origin = messages.OriginState(epoch=NORTH_EPOCH, batches=4, last_seq=120,
                                  last_hash=hashlib.sha256(b"batch 4").digest())
    hr = messages.HelloReply(v=(1, 0), hub_epoch=3, restore_point=0, hub_time_ms=T0,
                             head=512, origins=[origin])
    add("reply-hello", "decode", "A hello reply listing one epoch of the asking node.",
        codec.encode(hr), type="HelloReply", expect={"value": to_json(hr)})
    pr = messages.PushReply(status="stored", hub_seq=513, hub_epoch=3)
    add("reply-push", "decode", "A push reply.", codec.encode(pr), type="PushReply",
        expect={"value": to_json(pr)})
    south_event = ev(Create, 1, node="south", epoch=SOUTH_EPOCH, values={"name": "A"})
    b = signed(batch([south_event], node="south", epoch=SOUTH_EPOCH), "south")
    pl = messages.PullReply(hub_epoch=3, cursor=514, head=514, batches=[b], more=False)
    add("reply-pull", "decode", "A pull reply carrying one original signed batch of south.",
        codec.encode(pl), type="PullReply", expect={"value": to_json(pl)})
    sr = messages.StatusReply(v=(1, 0), hub_epoch=3, hub_time_ms=T0, head=514, nodes=[
        messages.NodeStatus(node="north", epoch=NORTH_EPOCH, batches=2, last_seq=6, cursor=512,
                            last_seen_ms=T0 - 1500),
        messages.NodeStatus(node="south", epoch=SOUTH_EPOCH, batches=1, last_seq=1)])
    add("reply-status", "decode", "A status reply with two nodes (south's cursor defaulted).",
        codec.encode(sr), type="StatusReply", expect={"value": to_json(sr)})
    pm = msgpack.unpackb(codec.encode(pr))
    pm["x_region"] = "eu"
    add("reply-unknown-keys", "decode", "Unknown keys in a reply are ignored.",
        msgpack.packb(pm), type="PushReply", expect={"value": to_json(pr)})
    add("reply-bad-status", "decode", "A push reply status outside stored|duplicate.",
        msgpack.packb({**pm, "status": "maybe"}), type="PushReply",
        expect={"error": "MALFORMED"})
    for cls in errors.ALL_ERRORS[:errors.ALL_ERRORS.index(errors.CursorAhead)]:  # up to 1.1
        error_vector(cls)


SCHEMA_DIGEST = hashlib.sha256(b"riversync test schema 1").hexdigest()


def schema_vectors() -> None:
    """Since 1.1 a hello states the node's schema version and digest (section 5.3)."""
    hs = hello(v=(1, 1), schema=1, schema_digest=SCHEMA_DIGEST)
    add("hello-schema", "open", "A 1.1 hello stating schema version 1 and its digest.",
        envelope_bytes(codec.encode(hs), v=(1, 1)), expect=ok_open(hs))
    bad = body_map(hs)
    bad["schema_digest"] = SCHEMA_DIGEST.upper()
    add("hello-schema-digest-not-hex", "open",
        "A schema digest must be 64 lowercase hex digits (or absent).",
        envelope_bytes(raw_body(bad), v=(1, 1)), expect={"error": "MALFORMED"})


def error_vector(cls: type[errors.ProtocolError]) -> None:
    reply = messages.ErrorReply(code=cls.code, message=f"example {cls.code}", hint=cls.hint,
                                action=cls.action)
    add(f"error-{cls.code.lower().replace('_', '-')}", "error",
        f"An error reply with code {cls.code}: HTTP {cls.http_status}, action "
        f"{cls.action!r}.", codec.encode(reply),
        expect={"code": cls.code, "http_status": cls.http_status, "action": cls.action})


def vectors_1_2() -> None:
    """Since 1.2: CURSOR_AHEAD [H-PULL-3], and a digest needs its schema version."""
    error_vector(errors.CursorAhead)
    bad = body_map(hello(v=(1, 2), schema=1, schema_digest=SCHEMA_DIGEST))
    bad["schema"] = 0
    add("hello-schema-digest-without-version", "open",
        "A schema digest with schema 0 ('not stated') is refused (since 1.2).",
        envelope_bytes(raw_body(bad), v=(1, 2)), expect={"error": "MALFORMED"})


def build() -> list[dict]:
    VECTORS.clear()
    open_vectors()
    chain_vectors()
    hlc_vectors()
    decode_vectors()
    schema_vectors()  # after the rest: vectors added later keep the older files' numbers
    vectors_1_2()
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names)), "vector names must be unique"
    return list(VECTORS)


def roster_json() -> dict:
    return {
        "cluster_id": CLUSTER,
        "nodes": [{"node_id": n, "office": e.office, "public_key": e.public_key.hex(),
                   "key_id": e.key_id} for n, e in ROSTER.nodes.items()],
        "test_seeds": {n: s.hex() for n, s in SEEDS.items()},
        "not_in_roster": ["east", "mallory"],
    }


def render_files() -> dict[str, str]:
    """File name -> exact text of every file in spec/vectors/ (README.md excepted)."""
    from riversync.commands.conformance import run_vector  # the same runner users run

    out = {"roster.json": json.dumps(roster_json(), indent=2, sort_keys=True) + "\n"}
    for i, vec in enumerate(build(), 1):
        vec = {"format": FORMAT, "roster": "roster.json", **vec}
        problem = run_vector(vec, ROSTER)
        if problem:
            raise SystemExit(f"vector {vec['name']}: the implementation disagrees: {problem}")
        out[f"{i:03d}-{vec['name']}.json"] = json.dumps(vec, indent=2) + "\n"
    return out


# ---------------------------------------------------------------- spec tables


def _type_text(t) -> str:
    it = msgspec.inspect
    if isinstance(t, it.StrType):
        if t.pattern:
            choice = re.fullmatch(r"\^\(([\w|]+)\)\$", t.pattern)
            if choice:
                return "str, one of " + ", ".join(f"`{c}`" for c in choice.group(1).split("|"))
            return f"str `{t.pattern}`"
        return f"str ({t.min_length or 0}..{t.max_length} chars)" if t.max_length else "str"
    if isinstance(t, it.BoolType):
        return "bool"
    if isinstance(t, it.IntType):
        hi = "2^63-1" if t.le == 2**63 - 1 else str(t.le)
        return f"int ({t.ge}..{hi})"
    if isinstance(t, it.BytesType):
        if t.min_length is not None and t.min_length == t.max_length:
            return f"bin ({t.max_length} bytes)"
        return f"bin (<= {t.max_length} bytes)" if t.max_length else "bin"
    if isinstance(t, it.TupleType):
        return "array [" + ", ".join(_type_text(i) for i in t.item_types) + "]"
    if isinstance(t, it.DictType):
        return f"map str -> value (<= {t.max_length} entries)"
    if isinstance(t, it.ListType):
        if isinstance(t.item_type, it.UnionType):
            return f"array of event ({t.min_length}..{t.max_length})"
        return f"array of {_type_text(t.item_type)}"
    return type(t).__name__


def field_table(cls) -> str:
    info = msgspec.inspect.type_info(cls)
    rows = ["| # | field | msgpack type | required | meaning |", "|---|---|---|---|---|"]
    pos = 0
    if info.tag_field:
        rows.append(_row(pos, f"`{info.tag_field}`", f"str `{info.tag}`", "yes", "message tag"))
        pos += 1
    for f in info.fields:
        meaning = FIELD_MEANINGS.get((cls.__name__, f.name)) or FIELD_MEANINGS[("*", f.name)]
        req = "yes" if f.required else f"no (default `{_default(f)}`)"
        rows.append(_row(pos, f"`{f.encode_name}`", _type_text(f.type), req, meaning))
        pos += 1
    return "\n".join(rows)


def _row(*cells: object) -> str:
    """One table row; a pipe inside a cell is escaped so it cannot split the cell."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _default(f) -> str:
    if f.default is not msgspec.NODEFAULT:
        return json.dumps(f.default)
    return json.dumps(f.default_factory())


FIELD_MEANINGS: dict[tuple[str, str], str] = {
    ("*", "node"): "origin node id; MUST equal the batch's `o`",
    ("*", "epoch"): "origin node epoch; MUST equal the batch's `e`",
    ("*", "seq"): "origin event sequence, from 1 per epoch, no gaps",
    ("*", "hlc"): "HLC of the event (wall ms << 16 | counter)",
    ("*", "schema"): "schema version the event was written under",
    ("*", "table"): "replicated table name",
    ("*", "pk"): "primary key of the row, as text",
    ("*", "user"): "acting user (roster name); the signing node vouches for the login",
    ("*", "role"): "role of the user when acting",
    ("*", "admin"): "true for an admin override",
    ("Create", "values"): "the whole row: column -> value",
    ("Update", "values"): "changed columns only; nil is a value (NULL)",
    ("Transfer", "owner"): "office that owns the row from this event's order key on",
    ("Resolve", "conflict"): "id of the conflict this closes",
    ("Resolve", "decision"): "`accept`, `keep` or `merge`",
    ("Resolve", "values"): "values that take effect (accept: re-issued; merge: merged)",
    ("*", "v"): "protocol version [major, minor]",
    ("*", "c"): "cluster id",
    ("*", "o"): "sender node id",
    ("*", "ts"): "sender's wall clock when signing, Unix ms",
    ("Batch", "e"): "sender's node epoch",
    ("Batch", "n"): "batch sequence within the epoch, from 1",
    ("Batch", "first"): "seq of the first event",
    ("Batch", "last"): "seq of the last event; `last = first + len(events) - 1`",
    ("Batch", "prev"): "SHA-256 of the previous batch's body bytes; zeros when `n = 1`",
    ("Batch", "events"): "the events, `first`..`last` in order",
    ("Hello", "e"): "sender's current node epoch",
    ("Hello", "schema"): "schema version the node runs (since 1.1; 0: not stated)",
    ("Hello", "schema_digest"): "SHA-256 of that schema's rules, lowercase hex (since 1.1; "
                                "empty: not stated, not checked)",
    ("*", "nonce"): "16 random bytes, never reused",
    ("Pull", "e"): "requester's node epoch (its own origin's batches are not returned)",
    ("Pull", "hub_epoch"): "hub epoch the cursor belongs to (0 before the first pull)",
    ("Pull", "cursor"): "last hub sequence applied (0: from the start)",
    ("Pull", "limit"): "most batches to return",
    ("Pull", "wait_ms"): "long-poll: how long the hub may wait for a first batch",
    ("Envelope", "k"): "key id: first 8 bytes of SHA-256 of the public key, hex",
    ("Envelope", "b"): "the body bytes, exactly as signed",
    ("Envelope", "s"): "Ed25519 signature over `b`",
    ("OriginState", "epoch"): "node epoch",
    ("OriginState", "batches"): "last batch sequence stored",
    ("OriginState", "last_seq"): "last event sequence stored",
    ("OriginState", "last_hash"): "body hash of the last stored batch (zeros if none)",
    ("HelloReply", "hub_epoch"): "current hub epoch",
    ("HelloReply", "restore_point"): "hub sequence the current hub epoch started from",
    ("HelloReply", "hub_time_ms"): "hub wall clock, Unix ms",
    ("HelloReply", "head"): "highest hub sequence stored",
    ("HelloReply", "origins"): "every epoch of the asking node the hub holds",
    ("PushReply", "status"): "`stored` or `duplicate`",
    ("PushReply", "hub_seq"): "hub sequence of the batch",
    ("PushReply", "hub_epoch"): "current hub epoch",
    ("PullReply", "hub_epoch"): "hub epoch of `cursor`",
    ("PullReply", "cursor"): "cursor to send next time, after applying `batches`",
    ("PullReply", "head"): "highest hub sequence stored",
    ("PullReply", "batches"): "original signed envelopes, byte for byte as received",
    ("PullReply", "more"): "true if more batches wait after `cursor`",
    ("StatusReply", "hub_epoch"): "current hub epoch",
    ("StatusReply", "hub_time_ms"): "hub wall clock, Unix ms",
    ("StatusReply", "head"): "highest hub sequence stored",
    ("StatusReply", "nodes"): "one NodeStatus per roster node the hub has heard from",
    ("NodeStatus", "node"): "node id",
    ("NodeStatus", "epoch"): "the node's latest epoch the hub holds",
    ("NodeStatus", "batches"): "last batch sequence stored of that epoch",
    ("NodeStatus", "last_seq"): "last event sequence stored of that epoch",
    ("NodeStatus", "cursor"): "last hub sequence the node reported applied (its latest pull)",
    ("NodeStatus", "last_seen_ms"): "hub time of the node's latest request (0: never)",
    ("ErrorReply", "code"): "stable error code (see Error codes)",
    ("ErrorReply", "message"): "human text naming the field, node and sequence",
    ("ErrorReply", "hint"): "the next step for an operator",
    ("ErrorReply", "action"): "`retry`, `resync` or `stop`",
}

TABLE_TYPES = [messages.Envelope, Batch, Hello, Pull, StatusRequest, Create, Update, Delete,
               Transfer, Resolve, messages.OriginState, messages.HelloReply,
               messages.PushReply, messages.PullReply, messages.StatusReply,
               messages.NodeStatus, messages.ErrorReply]


def error_table() -> str:
    rows = ["| code | HTTP | action | next step (hint) |", "|---|---|---|---|"]
    for cls in errors.ALL_ERRORS:
        rows.append(_row(f"`{cls.code}`", cls.http_status, f"`{cls.action}`", cls.hint))
    return "\n".join(rows)


def limits_table() -> str:
    """The limits of protocol/limits.py with the reason written beside each in the code."""
    import inspect

    reasons = dict(re.findall(r"^([A-Z_]+) = [^#\n]*#\s*(.*)$", inspect.getsource(limits), re.M))
    rows = ["| limit | value | error when exceeded | why |", "|---|---|---|---|"]
    over = {"MAX_BLOB_BYTES": "TOO_LARGE", "MAX_EVENTS_PER_BATCH": "TOO_LARGE",
            "MAX_EVENT_BYTES": "refused by the writing node (N-LIMIT-1)"}
    for name in dir(limits):
        if name.isupper():
            err = over.get(name, "MALFORMED")
            if name in ("NONCE_BYTES", "HASH_BYTES"):
                err = "MALFORMED (exact size)"
            rows.append(_row(f"`{name}`", f"{getattr(limits, name):,}", err,
                             reasons.get(name, "")))
    return "\n".join(rows)


def chain_table() -> str:
    rows = ["| state | observation | outcome | next state |", "|---|---|---|---|"]
    for (state, seen), (outcome, nxt) in chain.TRANSITIONS.items():
        code = {chain.GAP: " (`SEQUENCE_GAP`)", chain.FORK: " (`SEQUENCE_FORK`)"}.get(outcome, "")
        rows.append(_row(state, f"{seen}: {chain.OBSERVATIONS[seen]}", f"{outcome}{code}", nxt))
    return "\n".join(rows)


def generated_blocks() -> dict[str, str]:
    blocks = {f"fields-{c.__name__}": field_table(c) for c in TABLE_TYPES}
    blocks["errors"] = error_table()
    blocks["limits"] = limits_table()
    blocks["chain-table"] = chain_table()
    blocks["chain-diagram"] = "```mermaid\n" + chain.mermaid() + "\n```"
    by_name = {v["name"]: v for v in build()}
    blocks["example-hello"] = example_block(by_name["hello-schema"], "body")
    blocks["example-hello-reply"] = example_block(by_name["reply-hello"], "value")
    return blocks


def example_block(vec: dict, key: str) -> str:
    raw = bytes.fromhex(vec["input"])
    hex_lines = [raw[i:i + 32].hex(" ") for i in range(0, len(raw), 32)]
    lines = [f"```text\n{len(raw)} bytes:", *hex_lines, "```", "",
             "Decoded (JSON form of spec/vectors/README.md):", "", "```json",
             json.dumps(vec["expect"][key], indent=2), "```"]
    if key == "body":
        env = msgpack.unpackb(raw)
        lines += ["", "Envelope around it:", "", "```json", json.dumps(
            {"v": env["v"], "c": env["c"], "o": env["o"], "k": env["k"],
             "b": f"<{len(env['b'])} bytes: the body above>", "s": env["s"].hex()}, indent=2),
            "```"]
    return "\n".join(lines)


BLOCK = re.compile(r"(<!-- generated:([\w-]+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.S)


def render_spec(text: str) -> str:
    blocks = generated_blocks()
    seen = set()

    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in blocks:
            raise SystemExit(f"PROTOCOL.md has an unknown generated block {name!r}")
        seen.add(name)
        return f"{m.group(1)}{blocks[name]}\n{m.group(4)}"

    out = BLOCK.sub(sub, text)
    missing = set(blocks) - seen
    if missing:
        raise SystemExit(f"PROTOCOL.md lacks generated blocks: {sorted(missing)}")
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "vectors")
    ap.add_argument("--spec", type=Path, default=HERE / "PROTOCOL.md")
    ap.add_argument("--check", action="store_true", help="only report what is out of date")
    args = ap.parse_args(argv)
    files = render_files()
    spec_text = args.spec.read_text(encoding="utf-8")
    new_spec = render_spec(spec_text)
    stale = [n for n, t in files.items()
             if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != t]
    extra = [p.name for p in args.out.glob("*.json") if p.name not in files] if args.out.is_dir() else []
    if new_spec != spec_text:
        stale.append(str(args.spec))
    if args.check:
        for n in stale + extra:
            print(f"out of date: {n}")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (args.out / name).unlink()
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    if new_spec != spec_text:
        args.spec.write_text(new_spec, encoding="utf-8")
    print(f"wrote {len(files) - 1} vectors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
