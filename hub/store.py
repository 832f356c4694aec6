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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from riversync.protocol.errors import ProtocolError
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
class PruneResult:
    removed_batches: int
    upto_seq: int


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
        """Batches after ``after`` except those of origin (node, node_epoch), in hub order."""
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

    def prune_delivered(self, nodes: list[str]) -> PruneResult:
        """Delete batches every node in ``nodes`` has pulled (cursor in the current epoch)."""
        ...

    def storage_bytes(self) -> int:
        """Bytes the store occupies on disk."""
        ...

    def free_bytes(self) -> int:
        """Bytes left on the store's filesystem (0 if unknown)."""
        ...

    def close(self) -> None: ...
