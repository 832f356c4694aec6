"""The batch chain: how a receiver classes an origin's next batch.

Each batch names the hash of its origin's previous batch, so the hub can tell a retry
(same bytes: duplicate) from a node restored from an old backup (same sequence, other
bytes: fork) and from a lost batch (gap).  Pure: the caller supplies what it holds.

Theory of operation: per origin (node id + node epoch) the receiver is in one of two
states, ``empty`` (holds nothing of it) or ``holding`` (holds batches 1..h).  An incoming
batch is first reduced to one *observation* about how it relates to what is held; the
pair (state, observation) is looked up in ``TRANSITIONS``, the one table that decides the
outcome and the next state.  spec/PROTOCOL.md's state diagram is generated from that
table by spec/make_vectors.py, so the spec cannot drift from the code.
"""

from __future__ import annotations

from .codec import ZERO_HASH
from .errors import Malformed, SequenceFork, SequenceGap
from .messages import Batch, OriginState

# Outcomes.
NEXT = "next"
DUPLICATE = "duplicate"
GAP = "gap"
FORK = "fork"

# States of one origin at the receiver.
EMPTY = "empty"
HOLDING = "holding"

# Observations, in the order classify() tests them (the first that holds is the one).
SAME_BYTES = "same_bytes"
OTHER_BYTES = "other_bytes"
SKIPS_BATCHES = "skips_batches"
WRONG_PREV = "wrong_prev"
SKIPS_EVENTS = "skips_events"
FOLLOWS = "follows"

OBSERVATIONS: dict[str, str] = {
    SAME_BYTES: "n <= h and the body hash equals the held batch n's hash",
    OTHER_BYTES: "n <= h and the body hash differs from the held batch n's hash",
    SKIPS_BATCHES: "n > h + 1",
    WRONG_PREV: "n = h + 1 and prev differs from the hash of held batch h (zero hash when h = 0)",
    SKIPS_EVENTS: "n = h + 1, prev matches, first differs from held last_seq + 1",
    FOLLOWS: "n = h + 1, prev matches, first = held last_seq + 1",
}

# (state, observation) -> (outcome, next state).  Every pair not listed is impossible
# (``n <= h`` cannot hold when nothing is held); meeting one is a bug and raises.
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (EMPTY, FOLLOWS): (NEXT, HOLDING),
    (EMPTY, SKIPS_BATCHES): (GAP, EMPTY),
    (EMPTY, SKIPS_EVENTS): (GAP, EMPTY),
    (EMPTY, WRONG_PREV): (FORK, EMPTY),
    (HOLDING, FOLLOWS): (NEXT, HOLDING),
    (HOLDING, SAME_BYTES): (DUPLICATE, HOLDING),
    (HOLDING, OTHER_BYTES): (FORK, HOLDING),
    (HOLDING, SKIPS_BATCHES): (GAP, HOLDING),
    (HOLDING, WRONG_PREV): (FORK, HOLDING),
    (HOLDING, SKIPS_EVENTS): (GAP, HOLDING),
}


def observe(
    batch: Batch, batch_hash: bytes, held: OriginState | None, held_hash_at_n: bytes | None
) -> tuple[str, str]:
    """Reduce ``batch`` against what is held to ``(state, observation)``."""
    last_n = held.batches if held else 0
    state = HOLDING if last_n > 0 else EMPTY
    if batch.n <= last_n:
        return state, SAME_BYTES if held_hash_at_n == batch_hash else OTHER_BYTES
    if batch.n > last_n + 1:
        return state, SKIPS_BATCHES
    last_hash = held.last_hash if held and last_n > 0 else ZERO_HASH
    if batch.prev != last_hash:
        return state, WRONG_PREV
    last_seq = held.last_seq if held else 0
    if batch.first != last_seq + 1:
        return state, SKIPS_EVENTS
    return state, FOLLOWS


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
    state, seen = observe(batch, batch_hash, held, held_hash_at_n)
    try:
        outcome, _next_state = TRANSITIONS[(state, seen)]
    except KeyError:
        raise Malformed(f"batch chain: no transition from state {state!r} on {seen!r}") from None
    if outcome in (NEXT, DUPLICATE):
        return outcome
    origin = f"{batch.o}/{batch.e}"
    last_n = held.batches if held else 0
    if seen == OTHER_BYTES:
        raise SequenceFork(
            f"origin {origin} batch {batch.n} differs from the one already held", path="$.n"
        )
    if seen == WRONG_PREV:
        raise SequenceFork(
            f"origin {origin} batch {batch.n} does not chain to held batch {last_n}", path="$.prev"
        )
    if seen == SKIPS_BATCHES:
        raise SequenceGap(
            f"origin {origin} sent batch {batch.n}; the hub holds up to {last_n}", path="$.n"
        )
    last_seq = held.last_seq if held else 0
    raise SequenceGap(
        f"origin {origin} batch {batch.n} starts at event {batch.first}; "
        f"expected {last_seq + 1}",
        path="$.first",
    )


def mermaid() -> str:
    """The state diagram of ``TRANSITIONS`` as Mermaid text (used by the spec)."""
    lines = ["stateDiagram-v2", f"    [*] --> {EMPTY}"]
    for (state, seen), (outcome, nxt) in TRANSITIONS.items():
        label = outcome if outcome in (NEXT, DUPLICATE) else f"{outcome} (refused)"
        lines.append(f"    {state} --> {nxt}: {seen} / {label}")
    return "\n".join(lines)
