"""The hybrid logical clock: send/receive rules, drift refusal, overflow, monotonicity.

Rule ids are those of spec/PROTOCOL.md; C03 is in tests/test_cases_protocol.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from riversync.protocol import hlc
from riversync.protocol.errors import ClockOverflow, ClockSkew, ProtocolError

T = 1_767_258_000_000
DRIFT = hlc.DEFAULT_MAX_DRIFT_MS


def test_layout_is_47_bit_wall_and_16_bit_counter():
    """[P-HLC-1] wall << 16 | counter; the largest fits a signed 64-bit integer."""
    h = hlc.make(T, 7)
    assert h == (T << 16) | 7
    assert (hlc.wall(h), hlc.counter(h)) == (T, 7)
    assert hlc.make(hlc.WALL_MAX, 0xFFFF) == hlc.HLC_MAX == 2**63 - 1
    with pytest.raises(ClockOverflow):
        hlc.make(hlc.WALL_MAX + 1)
    with pytest.raises(ClockOverflow):
        hlc.make(T, 0x10000)
    with pytest.raises(ClockOverflow):
        hlc.make(-1)
    assert hlc.format_hlc(h) == f"{T}/7"
    assert hlc.make(T, 65535) < hlc.make(T + 1, 0)  # integers sort like (wall, counter)


def test_send_rule():
    """[P-HLC-2] now << 16 when ahead of last, else last + 1."""
    assert hlc.send(0, T) == hlc.make(T)
    assert hlc.send(hlc.make(T, 4), T) == hlc.make(T, 5)
    assert hlc.send(hlc.make(T, 4), T + 3) == hlc.make(T + 3)
    assert hlc.send(hlc.make(T, 4), T - 60_000) == hlc.make(T, 5)  # clock went back


def test_receive_rule():
    """[P-HLC-3] the result exceeds both last and remote, and is at least now << 16."""
    assert hlc.receive(hlc.make(T, 5), hlc.make(T, 9), T) == hlc.make(T, 10)
    assert hlc.receive(hlc.make(T, 9), hlc.make(T, 5), T) == hlc.make(T, 10)
    assert hlc.receive(hlc.make(T, 5), hlc.make(T - 10, 900), T + 1) == hlc.make(T + 1)
    assert hlc.receive(hlc.make(T, 5), hlc.make(T + 100, 3), T) == hlc.make(T + 100, 4)


def test_drift_refusal_leaves_the_clock_alone():
    """[P-HLC-4] more than max_drift ahead: CLOCK_SKEW; exactly max_drift: accepted."""
    last = hlc.make(T, 3)
    with pytest.raises(ClockSkew) as e:
        hlc.receive(last, hlc.make(T + DRIFT + 1), T)
    assert str(DRIFT + 1) in str(e.value)
    assert hlc.send(last, T) == hlc.make(T, 4)  # the caller's clock was never touched
    assert hlc.receive(last, hlc.make(T + DRIFT, 65535), T) == hlc.make(T + DRIFT + 1, 0)
    with pytest.raises(ClockSkew):
        hlc.check_drift(hlc.make(T + 11), T, 10)
    hlc.check_drift(hlc.make(T + 10, 65535), T, 10)


def test_counter_overflow_borrows_the_next_millisecond():
    """[P-HLC-5] never wraps; past 2^63-1 there is no next instant."""
    assert hlc.send(hlc.make(T, 0xFFFF), T) == hlc.make(T + 1, 0)
    assert hlc.receive(hlc.make(T, 1), hlc.make(T, 0xFFFF), T) == hlc.make(T + 1, 0)
    with pytest.raises(ClockOverflow):
        hlc.send(hlc.HLC_MAX, T)
    with pytest.raises(ClockOverflow):
        hlc.receive(hlc.HLC_MAX - 1, hlc.HLC_MAX, hlc.WALL_MAX)


# An operation: ("tick", wall step) or ("recv", wall step, remote offset in ms, remote counter).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(-120_000, 2_000)),
        st.tuples(st.just("recv"), st.integers(-120_000, 2_000),
                  st.integers(-600_000, DRIFT + 60_000), st.integers(0, 0xFFFF)),
        st.tuples(st.just("burst"), st.integers(0, 70_000)),
    ),
    min_size=1,
    max_size=40,
)


@given(ops, st.integers(0, 0xFFFF))
def test_hlc_is_strictly_monotonic_under_any_interleaving(operations, start_counter):
    """[P-HLC-6] local ticks, remote receives and a wall clock that jumps back: always up.

    A refused remote (too far ahead) leaves the clock unchanged [P-HLC-4].
    """
    now = T
    last = hlc.make(now, start_counter)
    for op in operations:
        now = max(0, now + op[1]) if op[0] != "burst" else now
        before = last
        if op[0] == "tick":
            last = hlc.send(last, now)
        elif op[0] == "burst":  # many events in one frozen millisecond
            for _ in range(op[1] % 300):
                nxt = hlc.send(last, now)
                assert nxt > last
                last = nxt
            continue
        else:
            remote = hlc.make(max(0, now + op[2]), op[3])
            try:
                last = hlc.receive(last, remote, now, DRIFT)
            except ClockSkew:
                assert op[2] > DRIFT
                assert last == before
                continue
            assert last > remote
        assert last > before
        assert last >= hlc.make(now)
        assert last <= hlc.HLC_MAX


@given(st.integers(0, hlc.HLC_MAX), st.integers(0, hlc.HLC_MAX), st.integers(0, hlc.WALL_MAX))
def test_receive_raises_only_protocol_errors(last, remote, now):
    """[P-ERR-3] any in-range inputs give a later HLC or a typed error."""
    try:
        out = hlc.receive(last, remote, now)
    except ProtocolError:
        return
    assert out > last and out > remote
