"""Encoding, signing, and the strict decoder for signed blobs.

Verify bytes, then decode: the signature covers exactly the body bytes, which travel and
are stored as they are, so there is nothing to canonicalise.  Order of checks on receipt:
size, envelope shape, version, cluster, node, key id, signature, body shape, body fields
equal to the envelope, then the batch's own invariants.  Each step fails with its typed
error; nothing else escapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from typing import TypeVar

import msgspec

from . import limits
from . import version as _version
from .errors import (
    ClockSkew,
    Malformed,
    OriginMismatch,
    ProtocolError,
    ReplayedRequest,
    StaleRequest,
    TooLarge,
    UnexpectedMessage,
    UnknownNode,
    WrongCluster,
)
from .hlc import check_drift, format_hlc
from .keys import Roster, SigningKey
from .messages import AnyBody, AnyEvent, Batch, Body, Envelope, Hello

ZERO_HASH = bytes(limits.HASH_BYTES)

_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_body_decoder = msgspec.msgpack.Decoder(AnyBody)

T = TypeVar("T")


def body_hash(body_bytes: bytes) -> bytes:
    """Hash that chains batches: SHA-256 of a batch's signed body bytes."""
    return hashlib.sha256(body_bytes).digest()


def encode(obj: object) -> bytes:
    """msgpack bytes of any protocol message or reply."""
    return _encoder.encode(obj)


def decode(data: bytes, type_: type[T], *, max_bytes: int = limits.MAX_BLOB_BYTES) -> T:
    """Decode ``data`` as ``type_`` strictly.

    Raises:
        TooLarge: more than ``max_bytes``.
        Malformed: anything that is not a valid ``type_``, naming the path.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Malformed(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise TooLarge(f"{len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgspec.msgpack.decode(data, type=type_)
    except msgspec.ValidationError as e:
        raise _malformed(e) from None
    except (msgspec.DecodeError, RecursionError, ValueError, OverflowError) as e:
        raise Malformed(f"not valid msgpack: {e}") from None


def _malformed(e: msgspec.ValidationError) -> Malformed | TooLarge:
    """A typed error naming the path; a batch over the event limit is TOO_LARGE."""
    text = str(e)
    path = None
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        path = rest.rstrip("`")
    if path in ("$.events", "$.b.events") and "length <=" in text:
        return TooLarge(
            f"a batch holds at most {limits.MAX_EVENTS_PER_BATCH} events ({text})", path=path
        )
    return Malformed(text, path=path)


def sign(body: Body, key: SigningKey) -> bytes:
    """Encode ``body`` once, sign those bytes, and return the envelope bytes to send."""
    body_bytes = _encoder.encode(body)
    env = Envelope(v=body.v, c=body.c, o=body.o, k=key.key_id, b=body_bytes, s=key.sign(body_bytes))
    return _encoder.encode(env)


def open_envelope(
    data: bytes, roster: Roster, *, max_bytes: int = limits.MAX_BLOB_BYTES
) -> tuple[Envelope, AnyBody]:
    """Check and decode a signed blob sent by a node of ``roster``'s cluster.

    ``max_bytes`` lets a receiver set a lower size limit than the protocol's.

    Raises:
        TooLarge, Malformed, UnsupportedVersion, WrongCluster, UnknownNode, BadSignature,
        OriginMismatch: see spec/PROTOCOL.md, "Receiving a signed blob".
    """
    env = decode(data, Envelope, max_bytes=max_bytes)
    _version.check(env.v, who=f"node {env.o!r}")
    if env.c != roster.cluster_id:
        raise WrongCluster(f"blob is for cluster {env.c!r}, this is cluster {roster.cluster_id!r}", path="$.c")
    entry = roster.nodes.get(env.o)
    if entry is None:
        raise UnknownNode(f"node {env.o!r} is not in the roster", path="$.o")
    verifier = roster.verify_key(env.o)
    if env.k != verifier.key_id:
        raise UnknownNode(
            f"key {env.k} is not node {env.o!r}'s key ({verifier.key_id})", path="$.k"
        )
    verifier.verify(env.s, env.b)
    try:
        body = _body_decoder.decode(env.b)
    except msgspec.ValidationError as e:
        raise _malformed(e) from None
    except (msgspec.DecodeError, RecursionError, ValueError, OverflowError) as e:
        raise Malformed(f"signed body is not valid msgpack: {e}") from None
    if tuple(body.v) != tuple(env.v) or body.c != env.c or body.o != env.o:
        raise Malformed("signed body disagrees with its envelope (v, c or o)", path="$.b")
    if isinstance(body, Batch):
        check_batch(body)
    elif isinstance(body, Hello) and body.schema_digest and not body.schema:
        raise Malformed("a schema digest needs the schema version it is of (schema 0 is "
                        "'not stated')", path="$.schema")
    return env, body


def check_batch(batch: Batch) -> None:
    """A batch's own invariants: one origin, contiguous sequence ``first``..``last``.

    Raises:
        OriginMismatch: an event claims an origin other than the batch's signer.
        Malformed: sequence numbers or chain fields are inconsistent.
    """
    events = batch.events
    if batch.last != batch.first + len(events) - 1:
        raise Malformed(
            f"batch says events {batch.first}..{batch.last} but holds {len(events)}", path="$.last"
        )
    if batch.n == 1 and batch.prev != ZERO_HASH:
        raise Malformed("the first batch of an epoch must have a zero prev hash", path="$.prev")
    # One pass, written for speed (it runs for every event received): the common case
    # touches each value once; anything unusual is re-checked by check_values(), which
    # names the column.
    node, epoch, first = batch.o, batch.e, batch.first
    max_text, max_bytes = limits.MAX_TEXT_CHARS, limits.MAX_BYTES_VALUE
    seq = first
    for ev in events:
        values = getattr(ev, "values", None)
        if values:
            for val in values.values():
                t = type(val)
                if t is str:
                    if len(val) > max_text:
                        break
                elif t is int:
                    if val > INT64_MAX or val < INT64_MIN:
                        break
                elif t is bytes:
                    if len(val) > max_bytes:
                        break
                elif t not in _SCALARS:
                    break
            else:
                values = None
            if values is not None:
                check_values(values, f"$.events[{seq - first}].values")
        if ev.node != node or ev.epoch != epoch:
            raise OriginMismatch(
                f"event claims origin {ev.node!r}/{ev.epoch} inside a batch signed by "
                f"{node!r}/{epoch}",
                path=f"$.events[{seq - first}].node",
            )
        if ev.seq != seq:
            raise Malformed(
                f"event seq {ev.seq}, expected {seq}", path=f"$.events[{seq - first}].seq"
            )
        seq += 1


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_SCALARS = frozenset({float, bool, type(None)})


def check_values(values: dict, path: str) -> None:
    """Every column value must be one SQLite storage class, within the limits.

    Raises:
        Malformed: naming the column.
    """
    for col, val in values.items():
        t = type(val)
        if t is str:
            if len(val) > limits.MAX_TEXT_CHARS:
                raise Malformed(f"text longer than {limits.MAX_TEXT_CHARS} characters", path=f"{path}.{col}")
        elif t is int:
            if not INT64_MIN <= val <= INT64_MAX:
                raise Malformed("integer outside the signed 64-bit range", path=f"{path}.{col}")
        elif t is bytes:
            if len(val) > limits.MAX_BYTES_VALUE:
                raise Malformed(f"blob longer than {limits.MAX_BYTES_VALUE} bytes", path=f"{path}.{col}")
        elif val is not None and t is not float and t is not bool:
            raise Malformed(f"a column value cannot be a {t.__name__}", path=f"{path}.{col}")


def check_batch_clock(batch: Batch, now_ms: int, max_drift_ms: int) -> None:
    """Refuse a batch holding any event stamped more than ``max_drift_ms`` ahead of ``now_ms``.

    Raises:
        ClockSkew: naming the first such event.
    """
    for i, ev in enumerate(batch.events):
        try:
            check_drift(ev.hlc, now_ms, max_drift_ms)
        except ClockSkew as e:
            raise ClockSkew(
                f"event {ev.node}/{ev.seq} has HLC {format_hlc(ev.hlc)}: {e.message}",
                path=f"$.events[{i}].hlc",
            ) from None


def check_fresh(body: Body, now_ms: int, window_ms: int) -> None:
    """Refuse a request signed more than ``window_ms`` away from ``now_ms`` (either way).

    Raises:
        StaleRequest
    """
    if abs(body.ts - now_ms) > window_ms:
        raise StaleRequest(
            f"request signed at {body.ts} ms, hub time is {now_ms} ms; window is {window_ms} ms",
            path="$.ts",
        )


def check_nonce(body: Body, seen: Container[bytes]) -> None:
    """Refuse a request whose nonce the receiver has already accepted.

    ``seen`` holds the nonces accepted within the freshness window (the receiver keeps
    them; this function only looks).  Batches carry no nonce: the chain catches replays.

    Raises:
        ReplayedRequest
    """
    nonce = getattr(body, "nonce", None)
    if nonce is not None and nonce in seen:
        raise ReplayedRequest(
            f"nonce {nonce.hex()} from node {body.o!r} was already used", path="$.nonce"
        )


def expect(body: AnyBody, type_: type[T]) -> T:
    """Narrow a decoded body to the type an endpoint accepts.

    Raises:
        UnexpectedMessage
    """
    if not isinstance(body, type_):
        raise UnexpectedMessage(
            f"got a {type(body).__name__} message where a {type_.__name__} was expected", path="$.b.t"
        )
    return body


def make_batch(
    *,
    cluster: str,
    node: str,
    epoch: int,
    n: int,
    prev: bytes,
    events: list[AnyEvent],
    now_ms: int,
) -> Batch:
    """Build a batch of one origin's consecutive events (checked like a received one)."""
    if not events:
        raise Malformed("a batch holds at least one event")
    batch = Batch(
        v=_version.VERSION,
        c=cluster,
        o=node,
        ts=now_ms,
        e=epoch,
        n=n,
        first=events[0].seq,
        last=events[-1].seq,
        prev=prev,
        events=list(events),
    )
    check_batch(batch)
    return batch


__all__ = [
    "ZERO_HASH",
    "ProtocolError",
    "body_hash",
    "check_batch",
    "check_batch_clock",
    "check_fresh",
    "check_nonce",
    "decode",
    "encode",
    "expect",
    "make_batch",
    "open_envelope",
    "sign",
]
