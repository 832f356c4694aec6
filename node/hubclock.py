"""What this node knows of its wall clock against the hub's, from the hub's own replies.

Theory of operation.  The hub is the cluster's time reference: it refuses a batch holding
an event stamped more than ``max_drift_ms`` ahead of its clock (``CLOCK_SKEW``) and a
request signed outside its freshness window (``STALE_REQUEST``).  A node whose clock runs
ahead therefore stamps events the hub will refuse for as long as the lead lasts, and its
operator sees only "fix the clock", even after the clock was fixed.

Every hub reply that carries the hub's time is a *reading*: a hello's ``hub_time_ms``, a
``STALE_REQUEST`` (it names the request's ``ts`` and the hub's time) and a ``CLOCK_SKEW``
(it names the event's HLC and how far ahead of the hub's time it is, so the hub's time is
their difference, and the limit, which is the cluster's max drift).  No wire field is
added: the refusal texts are made by ``riversync.protocol`` (``hlc.check_drift`` and
``codec.check_fresh``), and a text this module cannot read is simply no reading.

A reading found *ahead* (more than the max drift) arms the write guard.  The guard never
trusts it blindly: the offset is carried forward with a monotonic clock and compared with
the wall clock *now*, so fixing the clock lifts the guard at once; a sane hello, an
acknowledged push or an unreachable hub (offline first: the office keeps working) forget
it; and it expires after ``READING_TTL_S`` without a new one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from riversync.protocol import hlc
from riversync.protocol.errors import ClockSkew, ProtocolError, StaleRequest

# s; a reading arms the guard this long.  While the hub keeps refusing, the agent asks again
# at least every backoff cap (60 s), so only a reading nobody renews can get this old.
READING_TTL_S = 10 * 60

_SKEW = re.compile(r"remote HLC (\d+)/\d+ is (-?\d+) ms ahead of local time; limit (\d+) ms")
_STALE = re.compile(r"request signed at (\d+) ms, hub time is (\d+) ms; window is (\d+) ms")


@dataclass(frozen=True)
class Reading:
    """This node's wall clock minus the hub's (``offset_ms``, positive: ahead) at one moment."""

    offset_ms: int
    hub_ms: int  # the hub's wall clock then, Unix ms
    local_ms: int  # this node's wall clock then, Unix ms
    mono_s: float  # this node's monotonic clock when the reading was recorded
    seen_ms: int  # and its wall clock at that same moment
    source: str  # "hello", "STALE_REQUEST" or "CLOCK_SKEW"


@dataclass(frozen=True)
class Refusal:
    """What a hub refusal says about the clocks: the hub's time and, for ``CLOCK_SKEW``,
    the cluster's max drift and the refused event's HLC."""

    hub_ms: int
    local_ms: int  # this node's clock when it signed (STALE_REQUEST) or sent (CLOCK_SKEW)
    max_drift_ms: int | None = None
    event_hlc: int | None = None


def read_refusal(err: ProtocolError, sent_local_ms: int) -> Refusal | None:
    """The clock facts in a hub refusal, or None when it holds none (or an unknown text).

    ``sent_local_ms`` is this node's clock when the request left: a ``CLOCK_SKEW`` reply
    names only the hub's time, a ``STALE_REQUEST`` names the request's own ``ts`` too.
    """
    text = str(err)
    if isinstance(err, ClockSkew):
        m = _SKEW.search(text)
        if m:
            wall_ms, ahead, limit = (int(g) for g in m.groups())
            return Refusal(hub_ms=wall_ms - ahead, local_ms=sent_local_ms,
                           max_drift_ms=limit, event_hlc=hlc.make(wall_ms))
    elif isinstance(err, StaleRequest):
        m = _STALE.search(text)
        if m:
            signed, hub_ms, _window = (int(g) for g in m.groups())
            return Refusal(hub_ms=hub_ms, local_ms=signed)
    return None


class HubClock:
    """The node's latest readings and the write guard built on them (event-loop only)."""

    def __init__(self, wall_ms: Callable[[], int],
                 mono_s: Callable[[], float] = time.monotonic, ttl_s: float = READING_TTL_S):
        self.wall_ms = wall_ms
        self.mono_s = mono_s
        self.ttl_s = ttl_s
        # The hub's limit, learnt from its CLOCK_SKEW replies (hub.toml limits.max_drift_ms).
        self.max_drift_ms = hlc.DEFAULT_MAX_DRIFT_MS
        self.last: Reading | None = None  # the newest reading: status and metrics
        self._ahead: Reading | None = None  # a reading that found this clock ahead: the guard

    def observe(self, hub_ms: int, local_ms: int, source: str,
                max_drift_ms: int | None = None, error_ms: int = 0) -> Reading:
        """Record one reading; it arms the guard when it finds this clock too far ahead
        even if it overstates the offset by ``error_ms`` (half a hello's round trip), and
        disarms it when it does not.  A refusal's reading can only understate how far
        ahead this clock is (the hub read its clock after the node signed), so it needs
        no margin."""
        if max_drift_ms is not None:
            self.max_drift_ms = max_drift_ms
        r = Reading(local_ms - hub_ms, hub_ms, local_ms, self.mono_s(), self.wall_ms(), source)
        self.last = r
        self._ahead = r if r.offset_ms - max(0, error_ms) > self.max_drift_ms else None
        return r

    def forget(self) -> None:
        """Disarm the guard (an acknowledged push, an unreachable hub)."""
        self._ahead = None

    def offset_now(self, r: Reading) -> int:
        """A reading's offset carried forward to now: the wall clock's change since the
        reading minus the time that passed (monotonic).  A clock fixed since shows at once."""
        elapsed_ms = (self.mono_s() - r.mono_s) * 1000
        return round(r.offset_ms + (self.wall_ms() - r.seen_ms) - elapsed_ms)

    def ahead(self) -> dict | None:
        """Why writes must wait now, or None: this clock is more than the max drift ahead of
        the hub's by a reading younger than the TTL, carried forward to now."""
        r = self._ahead
        if r is None:
            return None
        age = self.mono_s() - r.mono_s
        if age > self.ttl_s:
            self._ahead = None
            return None
        off = self.offset_now(r)
        if off <= self.max_drift_ms:
            self._ahead = None  # the clock was fixed since the reading
            return None
        return {"offset_ms": off, "max_drift_ms": self.max_drift_ms, "source": r.source,
                "measured_s_ago": round(age, 1)}

    def snapshot(self) -> dict | None:
        r = self.last
        if r is None:
            return None
        return {"offset_ms": self.offset_now(r), "measured_offset_ms": r.offset_ms,
                "source": r.source, "measured_s_ago": round(self.mono_s() - r.mono_s, 1),
                "max_drift_ms": self.max_drift_ms, "ahead": self.ahead() is not None}


# ---- words ----------------------------------------------------------------------------


def utc(ms: int) -> str:
    """A Unix-ms instant as operators read it in a log or a status."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: float) -> str:
    """Plain words for a span: seconds, minutes, hours or days."""
    s = abs(ms) / 1000
    if s < 120:
        return f"{s:.0f} second" + ("" if round(s) == 1 else "s")
    if s < 2 * 3600:
        return f"{s / 60:.0f} minutes"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} hours"
    return f"{s / 86400:.1f} days"


def ahead_words(offset_ms: int, max_drift_ms: int) -> str:
    return (f"this node's clock is {duration(offset_ms)} ahead of the hub's (the cluster "
            f"allows {duration(max_drift_ms)})")


def guard_message(info: dict) -> str:
    return (f"{ahead_words(info['offset_ms'], info['max_drift_ms'])}, as the hub's "
            f"{info['source']} reply {info['measured_s_ago']:.0f} s ago showed: an event "
            "stamped now would be refused by the hub, so this write was not taken")


GUARD_HINT = ("fix this computer's clock (NTP, e.g. `timedatectl set-ntp true`); writes are "
              "taken again as soon as it agrees with the hub's; nothing was written (if every "
              "office reports this, the hub's clock is the one behind: fix the hub's)")


def held_back(queued: int, newest_hlc: int, hub_ms: int, max_drift_ms: int) -> str:
    """The honest words for events stamped ahead of the hub when the clock is fine now."""
    newest = hlc.wall(newest_hlc)
    accept = newest - max_drift_ms
    wait = f", in about {duration(accept - hub_ms)}" if accept > hub_ms else ""
    return (f"{queued} queued event(s) are stamped up to {utc(newest)} (this node's clock was "
            f"ahead when they were written); the hub accepts them from about {utc(accept)}"
            f"{wait}; they are kept, not lost, and pushed by themselves then; writes taken "
            "meanwhile wait behind them (their clock continues from the newest stamp); this "
            "node's clock agrees with the hub's now, so there is nothing to fix")


def held_back_now(err: ProtocolError, offset_ms: int, max_drift_ms: int, queued: int,
                  newest_hlc: int | None) -> bool:
    """True when the hub refused events stamped ahead by a clock that agrees with it now."""
    return (isinstance(err, ClockSkew) and abs(offset_ms) <= max_drift_ms
            and newest_hlc is not None and queued > 0)


def refusal_hint(err: ProtocolError, fact: Refusal, offset_ms: int, max_drift_ms: int,
                 queued: int, newest_hlc: int | None) -> str | None:
    """The hint to give instead of the hub's generic one, or None to keep the hub's."""
    kept = f"; the {queued} queued event(s) are kept, not lost" if queued else ""
    if offset_ms > max_drift_ms:
        return (f"{ahead_words(offset_ms, max_drift_ms)}: fix it (NTP); until then new writes "
                f"are refused (503 CLOCK_AHEAD){kept}")
    if offset_ms < -max_drift_ms:
        return (f"this node's clock is {duration(offset_ms)} behind the hub's (the cluster "
                f"allows {duration(max_drift_ms)}): fix it (NTP){kept}")
    if held_back_now(err, offset_ms, max_drift_ms, queued, newest_hlc):
        return held_back(queued, newest_hlc, fact.hub_ms, max_drift_ms)
    return None
