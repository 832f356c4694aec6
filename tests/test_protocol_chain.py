"""The batch chain: one table decides next, duplicate, gap and fork.

Rule ids are those of spec/PROTOCOL.md.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riversync.protocol import chain, codec, hlc
from riversync.protocol.errors import Malformed, SequenceFork, SequenceGap
from riversync.protocol.messages import Batch, OriginState, Update

T0 = 1_767_258_000_000


def ev(seq: int, value: str = "x") -> Update:
    return Update(node="north", epoch=1, seq=seq, hlc=hlc.make(T0, seq), schema=1, table="t",
                  pk="k", user="u", role="clerk", admin=False, values={"v": value})


def make(n: int, first: int, count: int, prev: bytes, value: str = "x") -> tuple[Batch, bytes]:
    b = Batch(v=(1, 0), c="c", o="north", ts=T0, e=1, n=n, first=first,
              last=first + count - 1, prev=prev,
              events=[ev(first + i, value) for i in range(count)])
    return b, codec.body_hash(codec.encode(b))


class Receiver:
    """A model receiver: what a hub holds of one origin, driven only through classify()."""

    def __init__(self):
        self.hashes: list[bytes] = []
        self.state: OriginState | None = None

    def offer(self, b: Batch, h: bytes) -> str:
        at_n = self.hashes[b.n - 1] if b.n <= len(self.hashes) else None
        outcome = chain.classify(b, h, self.state, at_n)
        if outcome == chain.NEXT:
            self.hashes.append(h)
            self.state = OriginState(epoch=b.e, batches=b.n, last_seq=b.last, last_hash=h)
        return outcome


def test_table_covers_every_reachable_pair_and_nothing_else():
    """[P-CHAIN-1] the transition table is complete for every state and observation."""
    states = {s for s, _ in chain.TRANSITIONS}
    assert states == {chain.EMPTY, chain.HOLDING}
    for s in states:
        for seen in chain.OBSERVATIONS:
            impossible = s == chain.EMPTY and seen in (chain.SAME_BYTES, chain.OTHER_BYTES)
            assert ((s, seen) in chain.TRANSITIONS) != impossible, (s, seen)
    outcomes = {o for o, _ in chain.TRANSITIONS.values()}
    assert outcomes == {chain.NEXT, chain.DUPLICATE, chain.GAP, chain.FORK}


def test_a_pair_missing_from_the_table_raises_naming_both(monkeypatch):
    b, h = make(1, 1, 1, codec.ZERO_HASH)
    monkeypatch.delitem(chain.TRANSITIONS, (chain.EMPTY, chain.FOLLOWS))
    with pytest.raises(Malformed) as e:
        chain.classify(b, h, None, None)
    assert "empty" in str(e.value) and "follows" in str(e.value)


def test_outcomes():
    """[P-CHAIN-1] next, duplicate, gap and fork, each from the table."""
    r = Receiver()
    b1, h1 = make(1, 1, 2, codec.ZERO_HASH)
    assert r.offer(b1, h1) == chain.NEXT
    assert r.offer(b1, h1) == chain.DUPLICATE
    b2, h2 = make(2, 3, 1, h1)
    with pytest.raises(SequenceGap) as e:
        r.offer(*make(3, 3, 1, h1))
    assert e.value.path == "$.n" and e.value.code == "SEQUENCE_GAP"
    with pytest.raises(SequenceGap) as e:
        r.offer(*make(2, 5, 1, h1))
    assert e.value.path == "$.first"
    with pytest.raises(SequenceFork) as e:
        r.offer(*make(2, 3, 1, b"\x07" * 32))
    assert e.value.path == "$.prev"
    with pytest.raises(SequenceFork) as e:
        r.offer(*make(1, 1, 2, codec.ZERO_HASH, value="other"))
    assert e.value.path == "$.n" and e.value.action == "resync"
    assert r.offer(b2, h2) == chain.NEXT
    assert r.offer(b1, h1) == chain.DUPLICATE  # an old retry is still a duplicate


def test_refusals_leave_the_held_state_unchanged():
    """[P-CHAIN-2] a gap or fork changes nothing the receiver holds."""
    r = Receiver()
    b1, h1 = make(1, 1, 1, codec.ZERO_HASH)
    r.offer(b1, h1)
    before = (r.state, list(r.hashes))
    for bad in (make(3, 2, 1, h1), make(2, 9, 1, h1), make(2, 2, 1, b"\x01" * 32),
                make(1, 1, 1, codec.ZERO_HASH, value="y")):
        with pytest.raises((SequenceGap, SequenceFork)):
            r.offer(*bad)
        assert (r.state, r.hashes) == before


@given(st.lists(st.integers(1, 4), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_any_delivery_order_with_retries_ends_holding_the_whole_chain(sizes, rnd):
    """[P-CHAIN-1] retrying refused batches in any order converges; duplicates are no-ops."""
    batches, prev, first = [], codec.ZERO_HASH, 1
    for n, size in enumerate(sizes, 1):
        b, h = make(n, first, size, prev)
        batches.append((b, h))
        prev, first = h, first + size
    r = Receiver()
    pending = list(batches) * 2
    rnd.shuffle(pending)
    rounds = 0
    while pending and rounds < 100:
        rounds += 1
        left = []
        for b, h in pending:
            try:
                r.offer(b, h)
            except SequenceGap:
                left.append((b, h))
        pending = left
    assert not pending
    assert r.hashes == [h for _, h in batches]
    assert r.state.last_seq == first - 1


def test_mermaid_diagram_has_every_transition():
    text = chain.mermaid()
    assert text.startswith("stateDiagram-v2")
    for (state, seen), (_, nxt) in chain.TRANSITIONS.items():
        assert f"{state} --> {nxt}: {seen} /" in text
