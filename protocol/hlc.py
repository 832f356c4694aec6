"""Hybrid logical clock (Kulkarni et al. 2014) as a pure 64-bit value.

Theory of operation: an HLC is one unsigned integer, ``wall_ms << 16 | counter``.  Because
the counter sits in the low bits, ``h + 1`` is "the next instant": when the counter is
full it carries into the millisecond, so overflow borrows the next millisecond instead of
wrapping, and timestamps can never repeat or go backwards.  Integers compare, sort and
travel through msgpack exactly.

Nothing here reads a clock: every function takes ``now_ms``.  The caller persists the last
HLC it issued, so a restart or an NTP step backwards cannot make it reissue a timestamp.
"""

from __future__ import annotations

from .errors import ClockOverflow, ClockSkew

COUNTER_BITS = 16
COUNTER_MASK = (1 << COUNTER_BITS) - 1
WALL_MAX = (1 << 47) - 1  # the top bit stays clear so an HLC fits a signed 64-bit integer (SQLite INTEGER)
HLC_MAX = (1 << 63) - 1
DEFAULT_MAX_DRIFT_MS = 5 * 60 * 1000  # runbook: refuse clocks more than 5 minutes ahead


def make(wall_ms: int, counter: int = 0) -> int:
    """Pack a wall time in Unix milliseconds and a counter into one HLC."""
    if not 0 <= wall_ms <= WALL_MAX:
        raise ClockOverflow(f"wall time {wall_ms} ms does not fit in 47 bits")
    if not 0 <= counter <= COUNTER_MASK:
        raise ClockOverflow(f"counter {counter} does not fit in 16 bits")
    return (wall_ms << COUNTER_BITS) | counter


def wall(h: int) -> int:
    """Milliseconds part of an HLC."""
    return h >> COUNTER_BITS


def counter(h: int) -> int:
    """Counter part of an HLC."""
    return h & COUNTER_MASK


def _checked(h: int) -> int:
    if h > HLC_MAX:
        raise ClockOverflow("HLC passed its 63-bit range")
    return h


def send(last: int, now_ms: int) -> int:
    """Timestamp for a local event: later than ``last`` and not before ``now_ms``."""
    physical = make(now_ms, 0)
    return physical if physical > last else _checked(last + 1)


def check_drift(remote: int, now_ms: int, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS) -> None:
    """Refuse a remote timestamp more than ``max_drift_ms`` ahead of the local wall clock.

    Raises:
        ClockSkew: the remote clock is too far ahead.
    """
    ahead = wall(remote) - now_ms
    if ahead > max_drift_ms:
        raise ClockSkew(
            f"remote HLC {format_hlc(remote)} is {ahead} ms ahead of local time; limit {max_drift_ms} ms"
        )


def receive(last: int, remote: int, now_ms: int, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS) -> int:
    """Merge a remote timestamp into the local clock; the result exceeds both.

    Raises:
        ClockSkew: the remote clock is more than ``max_drift_ms`` ahead of ``now_ms``.
    """
    check_drift(remote, now_ms, max_drift_ms)
    logical = max(last, remote)
    physical = make(now_ms, 0)
    return physical if physical > logical else _checked(logical + 1)


def format_hlc(h: int) -> str:
    """Human form ``<wall_ms>/<counter>`` used in messages and docs."""
    return f"{wall(h)}/{counter(h)}"
