"""The batch chain: how a receiver classes an origin's next batch.

Each batch names the hash of its origin's previous batch, so the hub can tell a retry
(same bytes: duplicate) from a node restored from an old backup (same sequence, other
bytes: fork) and from a lost batch (gap).  Pure: the caller supplies what it holds.
"""

from __future__ import annotations

from .codec import ZERO_HASH
from .errors import SequenceFork, SequenceGap
from .messages import Batch, OriginState

NEXT = "next"
DUPLICATE = "duplicate"


def classify(
    batch: Batch,
    batch_hash: bytes,
    held: OriginState | None,
    held_hash_at_n: bytes | None,
) -> str:
    """Return NEXT or DUPLICATE for ``batch``, or raise.

    ``held`` is what the receiver holds of the batch's origin (None: nothing yet);
    ``held_hash_at_n`` is the hash of the batch it holds with sequence ``batch.n``, if any.

    Raises:
        SequenceGap: the batch does not follow what is held.
        SequenceFork: same sequence (or same predecessor) with other bytes.
    """
    last_n = held.batches if held else 0
    last_seq = held.last_seq if held else 0
    last_hash = held.last_hash if held else ZERO_HASH
    origin = f"{batch.o}/{batch.e}"
    if batch.n <= last_n:
        if held_hash_at_n == batch_hash:
            return DUPLICATE
        raise SequenceFork(
            f"origin {origin} batch {batch.n} differs from the one already held", path="$.n"
        )
    if batch.n > last_n + 1:
        raise SequenceGap(
            f"origin {origin} sent batch {batch.n}; the hub holds up to {last_n}", path="$.n"
        )
    if batch.prev != last_hash:
        raise SequenceFork(
            f"origin {origin} batch {batch.n} does not chain to held batch {last_n}", path="$.prev"
        )
    if batch.first != last_seq + 1:
        raise SequenceGap(
            f"origin {origin} batch {batch.n} starts at event {batch.first}; expected {last_seq + 1}",
            path="$.first",
        )
    return NEXT
