"""The hub's event store interface.

The hub needs very little from storage, and keeping it to this small interface is what
lets a PostgreSQL store follow the embedded SQLite one (``store_sqlite.py``) without
touching the HTTP layer.  The rules every implementation must keep:

- **Sequence numbers are never reused.**  ``hub_seq`` grows by one per stored batch and
  a number once handed out is never handed out again in the same hub epoch, even when
  the newest rows are deleted (pruned).  A reader at cursor ``c`` must see every batch
  stored after it learned ``c`` (case C15: plain rowids break this).
- **A push result is durable.**  ``push_many`` returns only after its transaction has
  reached stable storage; the HTTP layer acknowledges only then.
- **Classification and insert are one transaction**, so two pushes of one origin cannot
  both be classed "next".
- **Envelope bytes are stored as received** and served back unchanged.
- **Epochs**: the store holds the hub epoch history; a store opened on a restored copy
  starts a new epoch whose restore point is its head (see ``hub/epoch.py``).
- **Schema registrations are kept with the data**: per schema version, the first digest
  a node's hello stated (which node, when), so a restart or a backup keeps them.  Only an
  operator drops one (``riversync hub schemas --forget``).
- **The prune horizon is kept with the data.**  Every prune records the hub sequence it
  pruned up to (with its hub epoch and time) in the same transaction as the delete, so a
  backup carries exactly the prunes its rows reflect.  ``read_page`` refuses a cursor
  before the horizon when batches of other origins after it are gone (``CursorPruned``),
  checked in the same read snapshot as the rows it would serve, so a prune running beside
  a pull can never make the pull skip batches silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from riversync.protocol.errors import CursorPruned, ProtocolError, SchemaMismatch
from riversync.protocol.messages import Batch, OriginState


@dataclass(frozen=True)
class EpochInfo:
    """One hub epoch: it started at hub sequence ``restore_point`` (0 for the first)."""

    epoch: int
    restore_point: int
    started_ms: int
    reason: str


@dataclass(frozen=True)
class BatchHead:
    """What the store needs of a verified batch: its place in its origin's chain.

    The events themselves stay in the envelope bytes; the store never looks inside them.
    Field names are the Batch's, so ``protocol.chain.classify`` takes a head as it is.
    """

    o: str  # origin node
    e: int  # origin epoch
    n: int  # batch sequence
    first: int
    last: int
    prev: bytes

    @classmethod
    def of(cls, batch: Batch) -> BatchHead:
        return cls(o=batch.o, e=batch.e, n=batch.n, first=batch.first, last=batch.last,
                   prev=batch.prev)


@dataclass(frozen=True)
class PushItem:
    """A verified batch waiting to be stored: its chain head and its exact envelope bytes."""

    batch: BatchHead
    batch_hash: bytes  # sha256 of the signed body bytes (the chain hash)
    envelope: bytes
    now_ms: int


@dataclass(frozen=True)
class PushResult:
    status: str  # "stored" | "duplicate"
    hub_seq: int
    events: int


@dataclass(frozen=True)
class PulledBatch:
    seq: int
    node: str
    envelope: bytes
    events: int


@dataclass(frozen=True)
class Page:
    """One pull's worth of batches after a cursor."""

    batches: list[PulledBatch]
    cursor: int  # what the node sends next time
    head: int
    more: bool


@dataclass(frozen=True)
class CursorInfo:
    node: str
    hub_epoch: int
    cursor: int
    updated_ms: int


@dataclass(frozen=True)
class PruneHorizon:
    """The highest hub sequence pruned so far: batches at or below it are gone."""

    upto_seq: int
    hub_epoch: int  # the hub epoch the prune ran in
    pruned_ms: int  # when


@dataclass(frozen=True)
class PruneResult:
    removed_batches: int
    upto_seq: int  # the smallest position every node has pulled to (what may go)
    horizon: PruneHorizon | None = None  # after this prune
    held_back_by: tuple[str, ...] = ()  # the nodes standing at upto_seq
    advanced: bool = False  # this prune moved the horizon (else it deleted nothing)


@dataclass(frozen=True)
class SchemaRegistration:
    """The schema digest the hub holds for one schema version: the first a node told it."""

    version: int
    digest: str  # lowercase hex SHA-256, as the hello carried it
    node: str  # the node whose hello registered it
    registered_ms: int


def short_digest(digest: str) -> str:
    """The first 12 hex digits: enough to tell two files apart in a message."""
    return digest[:12]


def utc_text(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def cursor_pruned(after: int, horizon: PruneHorizon, missing: int, first: int) -> CursorPruned:
    """The refusal of a read from ``after``: names the cursor, the horizon, what is gone and
    the prune, and says which backups can still help (any store raises this one)."""
    when = utc_text(horizon.pruned_ms)
    return CursorPruned(
        f"cursor {after} is before the hub's prune horizon {horizon.upto_seq} (pruned at "
        f"{when}): {missing} batch(es) after it, from hub sequence {first} on, of other nodes "
        "or of this node's older epochs are no longer held, so this node cannot get those "
        "events from the hub",
        hint=(f"restore this node from a backup taken after {when} (riversync restore -c "
              "NODE_TOML BACKUP), or, with none, restore the hub from a hub backup taken "
              "before it (riversync hub restore); see 'Restoring after a hub prune' in "
              "docs/how-to/operate.md"))


def schema_mismatch(node: str, version: int, digest: str,
                    reg: SchemaRegistration) -> SchemaMismatch:
    """The refusal of ``node``'s hello: names both digests, the version and the node that
    registered the other one, and says which file to fix (any store raises this one)."""
    when = utc_text(reg.registered_ms)
    return SchemaMismatch(
        f"node {node} runs schema version {version} with digest {short_digest(digest)}, but "
        f"the hub registered digest {short_digest(reg.digest)} for version {version} (first "
        f"told by node {reg.node} at {when}): the two schema files differ under one version, "
        "and the offices would judge each other's events by different rules",
        hint=(f"copy the cluster's schema file (the one node {reg.node} runs) to node {node}, "
              "then follow 'A schema file that differs between offices' in "
              "docs/how-to/operate.md; for a file changed on purpose, raise its `version` and "
              f"roll it out to every office; if node {reg.node}'s file is the wrong one, "
              f"stop {reg.node}, run `riversync hub schemas -c hub.toml --forget {version}` "
              "and let a node with the right file sync first"))


class HubStore(Protocol):
    """What the hub daemon needs from its storage.  See the module docstring for the rules."""

    def current_epoch(self) -> EpochInfo: ...

    def epochs(self) -> list[EpochInfo]: ...

    def head(self) -> int:
        """The highest hub sequence ever handed out in this store (0: none)."""
        ...

    def push_many(self, items: list[PushItem]) -> list[PushResult | ProtocolError]:
        """Classify and store each item in order, in one durable transaction.

        A chain refusal (gap, fork) is returned in the item's slot; it does not stop the
        others.  Any other failure raises and stores none of them.
        """
        ...

    def origins_of(self, node: str) -> list[OriginState]:
        """Every epoch of ``node`` the store holds, oldest first."""
        ...

    def read_page(
        self, node: str, node_epoch: int, after: int, limit: int, max_bytes: int
    ) -> Page:
        """Batches after ``after`` except those of origin (node, node_epoch), in hub order.

        Raises:
            CursorPruned: a batch of another origin after ``after`` was pruned.
            CursorAhead: ``after`` is past the head (the hub never served it).
        """
        ...

    def set_cursors(self, updates: list[CursorInfo]) -> None:
        """Record where nodes stand (what each confirmed it holds), in one transaction."""
        ...

    def last_pushes(self) -> dict[str, int]:
        """Unix ms of each node's latest stored batch."""
        ...

    def cursors(self) -> dict[str, CursorInfo]: ...

    def backlog(self, node: str, node_epoch: int, after: int) -> tuple[int, int]:
        """(batches, events) a node at ``after`` has yet to pull."""
        ...

    def totals(self) -> tuple[int, int]:
        """(batches, events) held."""
        ...

    def prune_delivered(self, nodes: list[str], now_ms: int | None = None) -> PruneResult:
        """Delete batches every node in ``nodes`` has pulled, and record the new horizon.

        A node's position is its cursor as the hub would serve it now (``epoch.start_for``:
        a cursor of an older hub epoch counts up to the restore points since); a node with
        no cursor has pulled nothing, so nothing is deleted.  The horizon never goes down.
        """
        ...

    def prune_horizon(self) -> PruneHorizon | None:
        """The highest prune this store's history holds (None: never pruned)."""
        ...

    def schema_registration(self, version: int) -> SchemaRegistration | None:
        """The registration of ``version``, None if no node has told it yet."""
        ...

    def schema_registrations(self) -> list[SchemaRegistration]:
        """Every registered schema version, lowest first."""
        ...

    def register_schema(self, version: int, digest: str, node: str,
                        now_ms: int) -> SchemaRegistration:
        """The registration of ``version``: the one held, else ``digest`` as told by
        ``node``, recorded durably.  Check and insert are one transaction, so of two nodes
        telling a new version at once exactly one registers and the other is compared."""
        ...

    def forget_schema(self, version: int) -> SchemaRegistration | None:
        """Drop the registration of ``version`` (the operator's way out when the first node
        to tell it had the wrong file); returns what was dropped, None if none was held."""
        ...

    def storage_bytes(self) -> int:
        """Bytes the store occupies on disk."""
        ...

    def free_bytes(self) -> int:
        """Bytes left on the store's filesystem (0 if unknown)."""
        ...

    def close(self) -> None: ...
