"""The typed messages of protocol v1.

Events are msgpack arrays tagged by kind (compact and fast to decode); message bodies are
msgpack maps with short keys tagged by ``t``.  Every type is a frozen msgspec Struct, so a
decoded message is validated once, at the edge, and no raw dict leaves this package.

Field order of the array types is part of the wire format: new fields go at the end, with
defaults, and receivers ignore trailing fields they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from . import limits

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_NAME_CHARS)]
PrimaryKey = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_PK_CHARS)]
U64 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]  # msgpack int64: what SQLite can hold
Seq = Annotated[int, msgspec.Meta(ge=1, le=(1 << 63) - 1)]
Cursor = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
Nonce = Annotated[bytes, msgspec.Meta(min_length=limits.NONCE_BYTES, max_length=limits.NONCE_BYTES)]
Hash = Annotated[bytes, msgspec.Meta(min_length=limits.HASH_BYTES, max_length=limits.HASH_BYTES)]
# A column value is one of the SQLite storage classes: str (TEXT), bytes (BLOB), int
# (INTEGER, signed 64-bit), float (REAL), None (NULL); bool travels as msgpack bool.
# msgspec cannot express a str|bytes union, so codec.check_values() validates them.
Values = Annotated[dict[Name, Any], msgspec.Meta(max_length=limits.MAX_COLUMNS)]
Version = tuple[Annotated[int, msgspec.Meta(ge=0, le=65535)], Annotated[int, msgspec.Meta(ge=0, le=65535)]]

CREATE = "create"
UPDATE = "update"
DELETE = "delete"
TRANSFER = "transfer"
RESOLVE = "resolve"

ACCEPT = "accept"  # resolve: the incoming change takes effect (values re-issued by the resolver)
KEEP = "keep"  # resolve: the local (owner's) state stays
MERGE = "merge"  # resolve: the resolver's merged values take effect
DECISIONS = (ACCEPT, KEEP, MERGE)


class Event(msgspec.Struct, frozen=True, array_like=True, tag_field="kind"):
    """Fields every event carries.  Identity is ``(node, epoch, seq)``.

    ``node`` and ``epoch`` together are the event's origin; ``seq`` counts that origin's
    events from 1 without gaps.  The order key ``(hlc, node, epoch)`` is a total order.
    """

    kind: ClassVar[str]
    node: Name
    epoch: U64
    seq: Seq
    hlc: U64
    schema: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    table: Name
    pk: PrimaryKey
    user: Name
    role: Name
    admin: bool

    @property
    def order_key(self) -> tuple[int, str, int]:
        return (self.hlc, self.node, self.epoch)

    @property
    def event_id(self) -> tuple[str, int, int]:
        return (self.node, self.epoch, self.seq)


class Create(Event, frozen=True, array_like=True, tag=CREATE):
    """A whole row; columns it does not name take their schema defaults."""

    kind: ClassVar[str] = CREATE
    values: Values


class Update(Event, frozen=True, array_like=True, tag=UPDATE):
    """Only the columns that change: an absent column is untouched, None is a value."""

    kind: ClassVar[str] = UPDATE
    values: Values


class Delete(Event, frozen=True, array_like=True, tag=DELETE):
    """A tombstone; only a later create brings the key back."""

    kind: ClassVar[str] = DELETE


class Transfer(Event, frozen=True, array_like=True, tag=TRANSFER):
    """Hands the row to another office from this order key on."""

    kind: ClassVar[str] = TRANSFER
    owner: Name


class Resolve(Event, frozen=True, array_like=True, tag=RESOLVE):
    """Closes conflict ``conflict`` everywhere; of two resolutions the greater order key wins."""

    kind: ClassVar[str] = RESOLVE
    conflict: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    decision: Annotated[str, msgspec.Meta(pattern="^(accept|keep|merge)$")]
    values: Values = {}


AnyEvent = Create | Update | Delete | Transfer | Resolve
EVENT_TYPES: dict[str, type[Event]] = {c.kind: c for c in (Create, Update, Delete, Transfer, Resolve)}


class Body(msgspec.Struct, frozen=True, tag_field="t", kw_only=True):
    """Fields every signed body carries: they bind the bytes to one version, cluster and sender."""

    v: Version
    c: Name  # cluster id
    o: Name  # sender node id
    ts: U64  # sender's wall clock when signed, Unix ms


class Batch(Body, frozen=True, tag="batch", kw_only=True):
    """A run of one origin's events, ``first``..``last`` without gaps, chained by ``prev``."""

    e: U64  # sender's node epoch
    n: Seq  # batch sequence within the epoch
    first: Seq
    last: Seq
    prev: Hash  # sha256 of the previous batch's body bytes; 32 zero bytes for n == 1
    events: Annotated[list[AnyEvent], msgspec.Meta(min_length=1, max_length=limits.MAX_EVENTS_PER_BATCH)]


SchemaDigest = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{64})?$")]


class Hello(Body, frozen=True, tag="hello", kw_only=True, omit_defaults=True):
    """Opens a session: the node states its current epoch and learns what the hub holds.

    Since 1.1 it also states the schema version it runs and that schema's digest, so the
    hub can refuse an office whose schema file says the same version with other rules
    (they would park each other's events in silence).  Both default to "not stated", and
    defaults are left out of the bytes, so a node without a digest sends what 1.0 sent.
    """

    e: U64
    nonce: Nonce
    schema: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0  # 0: not stated
    schema_digest: SchemaDigest = ""  # lowercase hex SHA-256; "": not stated (not checked)


class Pull(Body, frozen=True, tag="pull", kw_only=True):
    """Asks for other origins' batches after ``cursor`` of hub epoch ``hub_epoch``."""

    e: U64  # requester's node epoch: batches of exactly this origin are not returned
    nonce: Nonce
    hub_epoch: U64
    cursor: Cursor
    limit: Annotated[int, msgspec.Meta(ge=1, le=limits.MAX_BATCHES_PER_PULL)] = 100
    wait_ms: Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_WAIT_MS)] = 0


class StatusRequest(Body, frozen=True, tag="status", kw_only=True):
    """Asks for the hub's view of the cluster."""

    nonce: Nonce


AnyBody = Batch | Hello | Pull | StatusRequest


class Envelope(msgspec.Struct, frozen=True):
    """A signed blob: ``s`` is the Ed25519 signature of exactly the bytes ``b``.

    ``v``, ``c`` and ``o`` are repeated outside the signed bytes only so a receiver can
    refuse an unknown version, cluster or node before verifying; the copies inside ``b``
    are the ones that count and must be equal.
    """

    v: Version
    c: Name
    o: Name
    k: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]  # key id
    b: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_BLOB_BYTES)]
    s: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


# ---- hub responses (unsigned: they carry no authority; origins' batches are verified) ----


class OriginState(msgspec.Struct, frozen=True):
    """What the hub holds of one origin (node epoch)."""

    epoch: U64
    batches: Cursor  # last batch sequence stored
    last_seq: Cursor  # last event sequence stored
    last_hash: Hash  # hash of the last stored batch's body bytes


class HelloReply(msgspec.Struct, frozen=True):
    v: Version
    hub_epoch: U64
    restore_point: Cursor  # hub sequence the current hub epoch started from
    hub_time_ms: U64
    head: Cursor  # highest hub sequence stored
    origins: list[OriginState]  # every epoch of the asking node the hub holds


class PushReply(msgspec.Struct, frozen=True):
    status: Annotated[str, msgspec.Meta(pattern="^(stored|duplicate)$")]
    hub_seq: Cursor
    hub_epoch: U64


class PullReply(msgspec.Struct, frozen=True):
    hub_epoch: U64
    cursor: Cursor  # the cursor to send next time
    head: Cursor
    batches: list[bytes]  # original signed envelopes, as the origins sent them
    more: bool


class ErrorReply(msgspec.Struct, frozen=True):
    code: str
    message: str
    hint: str = ""
    action: str = "stop"


class NodeStatus(msgspec.Struct, frozen=True):
    """The hub's view of one node, as ``/v1/status`` reports it."""

    node: Name
    epoch: U64  # the node's latest epoch the hub holds
    batches: Cursor  # last batch sequence stored of that epoch
    last_seq: Cursor  # last event sequence stored of that epoch
    cursor: Cursor = 0  # last hub sequence the node said it applied (its latest pull)
    last_seen_ms: U64 = 0  # hub time of the node's latest request, Unix ms; 0: never


class StatusReply(msgspec.Struct, frozen=True):
    """Answer to a StatusRequest: what the hub holds and how far each node has come."""

    v: Version
    hub_epoch: U64
    hub_time_ms: U64
    head: Cursor
    nodes: list[NodeStatus] = []
