"""The replication agent: keeps one office's store in step with the hub.

Theory of operation.

*Push.*  The next batch is built from ``Store.outbox``, signed, and its exact envelope
bytes are persisted (``Store.meta_set``) **before** the first send.  Until the hub
acknowledges, every retry sends those same bytes, so a lost acknowledgement makes the hub
see a duplicate, never a second batch with the same number and other bytes (a fork).  On
acknowledgement the store marks the events acked, then the chain state (batch number and
hash) moves on, then the pending bytes are cleared: each step is idempotent, so a crash
between any two of them ends in the same place after a restart.

*Pull.*  Every batch in a pull reply is verified against the roster's key of its origin
(the hub relays, it cannot forge), then all of the reply's events are applied with the
cursor in one store transaction, so an apply is exactly-once across crashes.

*Hello and reconcile.*  At start and after any outage the agent says hello.  The reply
says what the hub holds of this node: a lost ack is recognised and completed; a hub that
holds less than was acknowledged (hub restored from a backup) gets the lost batches
again; a cursor of an older hub epoch is sent unchanged, and the hub, which alone knows
every restore point since, answers from the right place.  For this node's older epochs
(it was restored) the hello says what the hub holds: that comes back through the ordinary
pull and is acknowledged only when each event matches the local one of the same number (a
differing one is adopted and this node's write re-issued into the current epoch); the
rest is pushed as the old epoch's continuation.

*Relay.*  A hello that finds the cursor of an older hub epoch (the hub was restored)
records a relay pass as due in the store, so neither a restart nor a pull into the new
epoch can lose it; the pass pushes again the kept batches of other origins the hub lacks
(``node.relay``) and only then clears it.  Kept batches older than ``relay_keep_days``
are pruned in the sync cycle, never while a pass is due.

*Failures* are classed, never logged and skipped: the hub away is retried with
exponential backoff, jitter and a cap; a gap or a changed hub epoch makes the agent
resync (hello again); a bad signature, a fork or a batch the store refuses beyond the
retry threshold stops replication and raises a critical alert until an operator acts
(``riversync status`` says what, ``POST /v1/sync`` retries).

*The hub's clock.*  Every exchange goes through ``_ask``, which reads the hub's time out
of a hello reply or a clock refusal (``node.hubclock``).  A refusal that the agent only
retries (``CLOCK_SKEW``, ``STALE_REQUEST``: anything but ``BUSY``) is kept in ``refused``
until that request succeeds, so the status warns while events wait instead of looking
healthy; its hint says what the clocks show (events stamped ahead by a clock fixed since
are kept and go out by themselves, or this clock is still wrong).  A reading that finds
this node's clock ahead of the hub's by more than the max drift makes ``clock_ahead``
refuse local writes (the API answers 503 ``CLOCK_AHEAD``) rather than stamp more events
the hub must refuse; it never outlives a sane hello, an acknowledged push, an unreachable
hub or a clock fixed since.  Such a push refusal does not skip the pull after it: events
held back by this node's clock may wait a day, the others' changes need not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import apsw

from riversync.config import DEFAULT_RELAY_KEEP_DAYS
from riversync.engine.db import transaction
from riversync.protocol import codec
from riversync.protocol.codec import ZERO_HASH, body_hash, make_batch, open_envelope, sign
from riversync.protocol.errors import (
    RESYNC,
    RETRY,
    Busy,
    CursorAhead,
    ProtocolError,
    SequenceFork,
    TooLarge,
)
from riversync.protocol.keys import Roster, SigningKey
from riversync.protocol.messages import Batch, Envelope, Hello, HelloReply, OriginState, Pull
from riversync.protocol.version import VERSION

from . import head, relay
from .db import DbThread
from .health import NodeMetrics
from .hubclock import HubClock, held_back_now, read_refusal, refusal_hint
from .transport import HubClient, HubUnreachable

log = logging.getLogger("riversync.node.agent")

BATCH_MAX_EVENTS = 1000  # events per pushed batch: one hub transaction stays short
PULL_LIMIT = 100  # batches asked for per pull
STOP_RECANCEL_S = 0.5  # stop(): a loop still running this long after its cancel gets another
LONG_POLL_MS = 20_000  # ms a realtime pull waits at the hub; under the hub's 30 s maximum
BACKOFF_BASE_S = 0.5  # first retry after the hub went away
BACKOFF_CAP_S = 60.0  # never wait longer than this between retries (also <= sync interval)
REPLAY_RETRY_THRESHOLD = 3  # a batch the store refuses this many times stops replication

META_PENDING = "agent.push.pending"  # hex of the signed bytes awaiting an ack
META_CHAIN = "agent.push.chain"  # "<epoch>:<batch n>:<hash hex>" of the last acked batch
# The batch a restored backup was still waiting for an ack on (hex of its signed bytes):
# proven held when the hub's last batch hash is its hash, or a later own batch chains to it.
META_RESTORED_PENDING = "agent.push.restored"
# Set (to the new hub epoch) when hello finds the cursor of an older hub epoch, cleared only
# after a relay pass completed [N-RELAY-1]: a restart or a pull that moves the cursor to the
# new epoch first must not make the node forget that the hub may lack batches it keeps.
META_RELAY_DUE = "agent.relay.due"


# The hub's refusal of a batch over its events-per-batch limit (hub/verify.py) names it.
_HUB_EVENT_CAP = re.compile(r"the hub takes at most (\d+)")


def _wall_of(mono: float | None) -> float | None:
    """A monotonic instant as Unix time on the wall clock as it reads now."""
    return None if mono is None else time.time() - (time.monotonic() - mono)


@dataclass(frozen=True)
class AgentSettings:
    cluster_id: str
    node_id: str
    sync_interval_s: float
    realtime: bool
    batch_max_events: int = BATCH_MAX_EVENTS
    long_poll_ms: int = LONG_POLL_MS
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    replay_retry_threshold: int = REPLAY_RETRY_THRESHOLD
    relay_keep_days: int = DEFAULT_RELAY_KEEP_DAYS  # 0: keep no pulled batches, relay nothing


class Resync(Exception):
    """Say hello again before the next exchange (gap, changed hub epoch)."""


class SyncStopped(Exception):
    """Replication must stop until an operator acts; ``code`` names why."""

    def __init__(self, code: str, message: str, hint: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


class ApplyFailed(Exception):
    """The store refused a pulled batch; retried with backoff up to the threshold."""


class PollInterrupted(Exception):
    """A long-poll was cut short so that a sync-now can pull at once."""


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, never above cap.

    The random half keeps offices that lost the hub together from returning in lockstep.
    """
    d = min(cap, base * (2 ** min(attempt, 30)))
    return d / 2 + rng.uniform(0, d / 2)


def _retrieve(fut: asyncio.Future) -> None:
    """Mark an abandoned request's outcome as seen (the caller handles or drops it)."""
    if not fut.cancelled():
        fut.exception()


def new_epoch() -> int:
    """A random node epoch: 62 bits, never 0, so two epochs of one node never collide."""
    return secrets.randbits(62) | 1


def keep_restored_pending(store) -> None:
    """Before a new node epoch clears the batch awaiting an ack, keep its bytes: the hub's
    hashes can still prove it held (``Agent._settle_restored_pending``)."""
    pending = store.meta_get(META_PENDING)
    if pending:
        store.meta_set(META_RESTORED_PENDING, pending)


def now_ms() -> int:
    return int(time.time() * 1000)


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        store: Any,
        db: DbThread,
        key: SigningKey,
        roster: Roster,
        hub: HubClient,
        metrics: NodeMetrics,
    ):
        self.s = settings
        self.store = store
        self.db = db
        self.key = key
        self.roster = roster
        self.hub = hub
        self.metrics = metrics
        self.rng = random.Random()
        self.state = "starting"  # starting | running | backoff | stopped
        self.error: dict | None = None
        # Monotonic instants of the last complete push and pull: a wall clock fixed (or
        # wrong) since must not make "last push 0 s ago" of a push an hour old, so the
        # snapshot turns them into Unix time on the wall clock of the moment it is taken.
        self._push_ok_mono: float | None = None
        self._pull_ok_mono: float | None = None
        self.last_error_at: float | None = None
        self.hub_epoch: int | None = None
        self.hub_head: int | None = None
        self.cursor: tuple[int, int] | None = None
        self.replay_failures = 0
        self.skipped: list[dict] = []  # origins held past a gap after a full pull
        self.attempt = 0
        self._hello_ok = asyncio.Event()
        self._wake = asyncio.Event()
        self._poll_interrupt = asyncio.Event()
        self._push_lock = asyncio.Lock()
        self._pull_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._pull_override: tuple[int, int] | None = None
        self.batch_max = settings.batch_max_events
        self.batch_cap = settings.batch_max_events  # lowered to the hub's events-per-batch
        self.may_renew_epoch = True  # until the first local write or completed hello
        self._relay_due = False  # set when the hub's epoch changed: see relay_lost
        self._relay_due_loaded = False  # read back from META_RELAY_DUE once per start
        self.relay_clock = now_ms  # when batches count as kept and pruning runs (ms)
        self._relay_pruned_at: int | None = None
        self.relay_kept: tuple[int, int] | None = None  # (batches, bytes) at the last prune
        # Set when a restored hub had lost batches of this epoch and the chain was rebuilt
        # from what it held: another node may relay our original batches meanwhile.
        self._hub_lost_own = False
        # Older epochs of this node as the hub holds them: epoch -> (batches, last hash).
        self._old_chains: dict[int, tuple[int, bytes]] = {}
        # ... and the hub's last number of each: own events up to it wait for the pull.
        self._old_held: dict[int, int] = {}
        self.diverged: list[dict] = []  # own old-epoch ids the hub holds other events under
        self.renewed_epoch: tuple[int, int] | None = None
        self.wall_ms = now_ms  # this node's wall clock (Unix ms) for every stamp it signs
        self.clock = HubClock(lambda: self.wall_ms())
        # The hub's latest refusal that the agent only retries (not BUSY), until the same
        # request succeeds: {"code", "request", "message", "hint", "at"}.
        self.refused: dict | None = None

    # ---- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="riversync-sync"))
        if self.s.realtime:
            self._tasks.append(asyncio.create_task(self._poll_loop(), name="riversync-poll"))

    async def stop(self) -> None:
        """Cancel the loops and wait until each has ended.

        A task can absorb a cancel that races what it awaits, so one that is still running
        after a moment is cancelled again.  ``asyncio.wait`` neither raises a task's own
        error nor hides a cancel of ``stop()`` itself.
        """
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            while not t.done():
                done, _ = await asyncio.wait({t}, timeout=STOP_RECANCEL_S)
                if not done:
                    t.cancel()
            if not t.cancelled():
                t.exception()  # retrieved: shutting down, nothing more to do with it
        self._tasks.clear()
        await self.hub.close()

    def notify_write(self) -> None:
        """A local write committed: push at once in realtime mode.

        While the hub is away the backoff decides when to try again; a busy office must
        not turn every write into another connection attempt.
        """
        self.may_renew_epoch = False
        if self.s.realtime and self.state != "backoff":
            self._wake.set()

    def snapshot(self) -> dict:
        lag = None
        if self.hub_head is not None and self.cursor is not None:
            lag = max(0, self.hub_head - self.cursor[1])
        return {
            "state": self.state,
            "error": self.error,
            "hub_url": self.hub.base_url,
            "hub_epoch": self.hub_epoch,
            "hub_head": self.hub_head,
            "cursor": list(self.cursor) if self.cursor else None,
            "inbound_lag": lag,
            "last_push_ok": _wall_of(self._push_ok_mono),
            "last_pull_ok": _wall_of(self._pull_ok_mono),
            "replay_failures_consecutive": self.replay_failures,
            "realtime": self.s.realtime,
            "diverged": self.diverged[-20:],
            "sync_interval_s": self.s.sync_interval_s,
            "relay_due": self._relay_due,
            "relay_keep_days": self.s.relay_keep_days,
            "relay_kept_batches": self.relay_kept[0] if self.relay_kept else None,
            "relay_kept_bytes": self.relay_kept[1] if self.relay_kept else None,
            "clock": self.clock.snapshot(),
            "refused": self.refused,
            "skipped": self.skipped,
        }

    def clock_ahead(self) -> dict | None:
        """Why local writes must wait now (this clock is ahead of the hub's by more than
        the cluster's max drift, by a current reading), or None: see ``node.hubclock``."""
        return self.clock.ahead()

    # ---- the loops --------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            wait = float(self.s.sync_interval_s)
            if self.state != "stopped":
                try:
                    await self._cycle(pull=not self.s.realtime)
                    wait = self.s.sync_interval_s
                except (HubUnreachable, ApplyFailed) as e:
                    wait = self._went_away(e)
                except Resync as e:
                    self._note_error("RESYNC", str(e), "", RESYNC)
                    self._hello_ok.clear()
                    wait = self.s.backoff_base_s
                except SyncStopped as e:
                    self._stop(e)
                except ProtocolError as e:
                    wait = self._protocol_error(e)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancel that lands as the event is set, and stop() would wait for ever.
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _poll_loop(self) -> None:
        """Realtime mode: keep one long-poll pull open at the hub."""
        while True:
            await self._hello_ok.wait()
            if self.state == "stopped":
                await asyncio.sleep(self.s.backoff_base_s)
                continue
            wait = 0.0
            try:
                await self.pull_all(self.s.long_poll_ms, interruptible=True)
                self.attempt = 0
            except PollInterrupted:
                pass
            except (HubUnreachable, ApplyFailed) as e:
                wait = self._went_away(e)
            except Resync as e:
                self._note_error("RESYNC", str(e), "", RESYNC)
                self._hello_ok.clear()
                self._wake.set()
            except SyncStopped as e:
                self._stop(e)
            except ProtocolError as e:
                wait = self._protocol_error(e)
            if wait:
                await asyncio.sleep(wait)

    async def _cycle(self, *, pull: bool) -> dict:
        await self.prune_relay()  # first: it needs no hub
        if not self._hello_ok.is_set():
            await self.hello()
        pushed, refused = await self._push_before_pull()
        if self._relay_due:
            await self.relay_lost()
        pulled = await self.pull_all(0) if pull else 0
        if refused is not None:
            raise refused
        self.attempt = 0
        if self.state != "stopped":
            self.state = "running"
            self.error = None
            self.refused = None
        return {"pushed": pushed, "pulled": pulled}

    async def _push_before_pull(self) -> tuple[int, ProtocolError | None]:
        """Push; a refusal the agent only retries (``CLOCK_SKEW``, ``STALE_REQUEST``, not
        ``BUSY``) is returned for the caller to raise after its pull, not raised at once:
        events held back by this node's own clock must not also stop it receiving the other
        offices' changes, which may take a day."""
        try:
            return await self.push_all(), None
        except ProtocolError as e:
            if e.action != RETRY or isinstance(e, Busy):
                raise
            return 0, e

    async def sync_now(self) -> dict:
        """Push then pull at once (``POST /v1/sync``); also restarts a stopped agent.

        Raises:
            HubUnreachable, SyncStopped, ProtocolError: the exchange failed (and the agent
            carries on with its usual handling).
        """
        if self.state == "stopped":
            self.state = "starting"
            self.error = None
            self.replay_failures = 0
            self._hello_ok.clear()
        try:
            await self.hello()
            pushed, refused = await self._push_before_pull()
            if self._relay_due:
                await self.relay_lost()
            self._poll_interrupt.set()
            pulled = await self.pull_all(0)
            if refused is not None:
                raise refused
        except (HubUnreachable, ApplyFailed) as e:
            self._went_away(e)
            raise
        except SyncStopped as e:
            self._stop(e)
            raise
        except Resync:
            self._hello_ok.clear()
            raise
        except ProtocolError as e:
            self._protocol_error(e)
            raise
        self.attempt = 0
        self.state = "running"
        self.error = None
        self.refused = None
        return {"pushed": pushed, "pulled": pulled}

    async def sync_now_quietly(self, timeout_s: float) -> bool:
        """``sync_now`` bounded in time; a failure is recorded in the state, not raised."""
        try:
            await asyncio.wait_for(self.sync_now(), timeout=timeout_s)
            return True
        except (TimeoutError, HubUnreachable, ApplyFailed, SyncStopped, ProtocolError, Resync):
            if self.state not in ("stopped", "backoff"):
                self.state = "backoff"
            return False

    # ---- failure handling ---------------------------------------------------------------

    def _went_away(self, e: Exception) -> float:
        self.state = "backoff"
        if isinstance(e, HubUnreachable):
            self.clock.forget()  # offline first: no hub, no reason to refuse writes
        self._hello_ok.clear()  # the hub may come back restored: say hello again
        if isinstance(e, ApplyFailed):
            self._note_error("REPLAY_FAILED", str(e), "the node retries; see its log", RETRY)
        else:
            self._note_error("HUB_UNREACHABLE", str(e),
                             "check that the hub runs and is reachable", RETRY)
        delay = backoff_delay(self.attempt, self.s.backoff_base_s, self._cap(), self.rng)
        self.attempt += 1
        return delay

    def _cap(self) -> float:
        return max(self.s.backoff_base_s, min(self.s.backoff_cap_s, float(self.s.sync_interval_s)))

    def _protocol_error(self, e: ProtocolError) -> float:
        if e.action == RETRY:
            self.state = "backoff"
            self._note_error(e.code, e.message, e.hint, RETRY)
            delay = backoff_delay(self.attempt, self.s.backoff_base_s, self._cap(), self.rng)
            self.attempt += 1
            return delay
        if e.action == RESYNC and (not isinstance(e, SequenceFork) or self._hub_lost_own):
            # A fork right after the hub lost our batches is another node's relay of our
            # original bytes racing our rebuilt batch: hello again and adopt the hub's chain.
            self._note_error(e.code, e.message, e.hint, RESYNC)
            self._hello_ok.clear()
            return self.s.backoff_base_s
        self._stop(SyncStopped(e.code, e.message, e.hint))
        return self.s.sync_interval_s

    def _note_error(self, code: str, message: str, hint: str, action: str) -> None:
        self.error = {"code": code, "message": message, "hint": hint, "action": action}
        self.last_error_at = time.time()
        self.metrics.sync_errors.labels(code=code, action=action).inc()
        log.warning("sync: %s (%s): %s", code, action, message)

    def _stop(self, e: SyncStopped) -> None:
        self.state = "stopped"
        self._hello_ok.clear()
        self.error = {"code": e.code, "message": e.message, "hint": e.hint, "action": "stop"}
        self.last_error_at = time.time()
        self.metrics.sync_errors.labels(code=e.code, action="stop").inc()
        log.error("replication stopped: %s: %s (%s)", e.code, e.message, e.hint)

    # ---- hello and reconcile ----------------------------------------------------------

    async def _ask(self, what: str, request, sent_ms: int):
        """Await one hub request (a coroutine), learning what its answer says of the
        clocks; ``sent_ms`` is this node's clock when it was signed.

        Raises:
            HubUnreachable, ProtocolError: as the transport raised them; a refusal's hint
            is replaced by what the clocks show (``hubclock.refusal_hint``).
        """
        try:
            reply = await request
        except HubUnreachable:
            self.clock.forget()
            raise
        except ProtocolError as e:
            await self._hub_refused(what, e, sent_ms)
            raise
        if self.refused is not None and self.refused["request"] == what:
            self.refused = None
        return reply

    async def _hub_refused(self, what: str, e: ProtocolError, sent_ms: int) -> None:
        if e.action != RETRY or isinstance(e, Busy):
            return  # BUSY is load shedding; resync and stop errors have their own handling
        fact = read_refusal(e, sent_ms)
        held = None
        if fact is not None:
            r = self.clock.observe(fact.hub_ms, fact.local_ms, e.code, fact.max_drift_ms)
            try:
                queued, newest = await self.db.run(self._queued_newest)
            except apsw.Error as db_err:  # the hub's refusal matters more than our advice
                log.error("counting the events the hub refused failed: %s", db_err)
                queued, newest = 0, None
            hint = refusal_hint(e, fact, r.offset_ms, self.clock.max_drift_ms, queued, newest)
            if hint:
                e.hint = hint
            if held_back_now(e, r.offset_ms, self.clock.max_drift_ms, queued, newest):
                # Events stamped by a clock fixed since: the status words are rebuilt from
                # these with the queue as it is then (writes keep being taken meanwhile).
                held = {"newest_hlc": newest, "max_drift_ms": self.clock.max_drift_ms}
        self.refused = {"code": e.code, "request": what, "message": e.message, "hint": e.hint,
                        "at": time.time(), "held": held}

    def _queued_newest(self) -> tuple[int, int | None]:
        """Events waiting for the hub and the newest HLC among them (db thread)."""
        queued = self.store.outbox_size()
        newest = None
        pending = self._pending()
        if pending is not None:
            newest = max(ev.hlc for ev in pending[1].events)
        epoch = self.store.epoch
        if self.store.outbox(limit=1, epoch=epoch):
            seq = self.store.own_seq(epoch)
            ev = self.store.own_events(epoch, [seq]).get(seq) if seq else None
            if ev is not None:
                newest = max(newest or 0, ev.hlc)
        return queued, newest

    async def hello(self) -> HelloReply:
        sent = self.wall_ms()
        schema = self.store.schema
        # [N-SCHEMA-1] the hub compares the digest with the cluster's for this version; a
        # refusal (SCHEMA_MISMATCH, action stop) stops replication like any stop error.
        body = Hello(v=VERSION, c=self.s.cluster_id, o=self.s.node_id, ts=sent,
                     e=self.store.epoch, nonce=os.urandom(16), schema=schema.version,
                     schema_digest=schema.digest())  # ~30 us: no cache needed
        reply = await self._ask("hello", self.hub.hello(sign(body, self.key)), sent)
        # The hub read its clock between send and receipt: half the round trip is the error.
        received = self.wall_ms()
        self.clock.observe(reply.hub_time_ms, (sent + received) // 2, "hello",
                           error_ms=(received - sent) // 2)
        await self._load_relay_due()
        self.hub_epoch = reply.hub_epoch
        self.hub_head = reply.head
        cur = await self.db.run(self.store.get_cursor, "hub")
        if cur is not None and cur[0] == reply.hub_epoch and cur[1] > reply.head:
            # [H-PULL-3] seen from the node: no hub served this cursor, so the hub's store
            # went back without a new hub epoch (a copy put back by hand).  Going on would
            # skip, for good, every batch the hub takes up to the old cursor, and pushing
            # would hand the stale store our batches again: stop before either.
            raise CursorAhead(
                f"this node pulled up to hub sequence {cur[1]} of hub epoch {cur[0]}, but "
                f"the hub's head is {reply.head}: its store went back without a new hub "
                "epoch; replication stops so that nothing is skipped")
        mine = next((o for o in reply.origins if o.epoch == self.store.epoch), None)
        await self.db.run(self._align_push_state, mine)
        await self.db.run(self._align_old_epochs, reply.origins)
        if cur is None:
            self._pull_override = (reply.hub_epoch, 0)
        elif cur[0] != reply.hub_epoch:
            # A restored hub may lack batches only we hold now: durable before the pull
            # below moves the cursor into the new epoch, where no hello would see it again.
            await self.db.run(self.store.meta_set, META_RELAY_DUE, str(reply.hub_epoch))
            self._relay_due = True
            # Cursor of an older hub epoch: send it unchanged and let the hub decide where
            # to start [H-EPOCH-2].  Only the hub knows every restore point since; the reply
            # names only the newest, so a minimum taken here skips batches after two restores.
            self._pull_override = (cur[0], cur[1])
        else:
            self._pull_override = None
        self.cursor = self._pull_override or (cur[0], cur[1])
        self.may_renew_epoch = False
        self._hello_ok.set()
        return reply

    def _chain(self) -> tuple[int, int, bytes]:
        raw = self.store.meta_get(META_CHAIN)
        if raw:
            e, n, h = str(raw).split(":")
            if int(e) == self.store.epoch:
                return int(e), int(n), bytes.fromhex(h)
        return self.store.epoch, 0, ZERO_HASH

    def _set_chain(self, epoch: int, n: int, h: bytes) -> None:
        self.store.meta_set(META_CHAIN, f"{epoch}:{n}:{h.hex()}")

    def _pending(self) -> tuple[bytes, Batch, bytes] | None:
        """The signed batch awaiting an ack, of the current epoch or an older one."""
        raw = self.store.meta_get(META_PENDING)
        if not raw:
            return None
        data = bytes.fromhex(str(raw))
        env = codec.decode(data, Envelope)
        batch = codec.decode(env.b, Batch)
        return data, batch, body_hash(env.b)

    def _align_old_epochs(self, origins: list[OriginState]) -> None:
        """Settle this node's older epochs with what the hub holds of them (db thread).

        A restored node starts a new epoch at once but leaves its old epoch's events alone
        until the hub has answered: the events the hub holds are acknowledged (those the
        backup lacks come back through the pull), and the rest are pushed as the old
        epoch's continuation, chained to the hub's last batch of it.  Nothing is numbered
        twice, so no event can arrive twice under two identities.
        """
        current = self.store.epoch
        held = {o.epoch: o for o in origins if o.epoch != current}
        epochs = set(held) | {e for e in self.store.own_epochs() if e != current}
        pending = self._pending()
        self._old_chains = {}
        self._old_held = {}
        for epoch in sorted(epochs):
            o = held.get(epoch)
            n, seq, h = (o.batches, o.last_seq, o.last_hash) if o else (0, 0, ZERO_HASH)
            self.store.requeue_after(epoch, seq)
            # Not acknowledged here: the hub may hold other events under these numbers (a
            # copy put back).  They are compared one by one when the pull brings them back.
            self._old_chains[epoch] = (n, h)
            self._old_held[epoch] = seq
            self._settle_restored_pending(epoch, n, h)
            if pending is not None and pending[1].e == epoch:
                batch = pending[1]
                if not (batch.n == n + 1 and batch.prev == h and batch.first == seq + 1):
                    # Stored already (covered by the mark) or overtaken: built again from
                    # the outbox, under the number the hub expects next.
                    self.store.meta_set(META_PENDING, "")

    def _restored_pending(self) -> tuple[Batch, bytes] | None:
        raw = self.store.meta_get(META_RESTORED_PENDING)
        if not raw:
            return None
        env = codec.decode(bytes.fromhex(str(raw)), Envelope)
        return codec.decode(env.b, Batch), body_hash(env.b)

    def _settle_restored_pending(self, epoch: int, n: int, h: bytes) -> None:
        """Acknowledge the batch a restored backup awaited an ack for once the hub proves it
        holds those very bytes (db thread): the hub's batch ``n`` of ``epoch`` has hash
        ``h`` (its last one, from a hello; or the one a pulled own batch chains to).  Such
        a batch may sit before the restored cursor, so the pull might never bring its
        events back to be compared."""
        rp = self._restored_pending()
        if rp is None:
            return
        batch, bh = rp
        if batch.e == epoch and batch.n == n and bh == h:
            self.store.mark_acked(epoch, batch.last)
            self.store.meta_set(META_RESTORED_PENDING, "")

    def _align_push_state(self, held: OriginState | None) -> None:
        """Bring the push chain in line with what the hub holds of this epoch (db thread).

        Raises:
            SyncStopped: the hub holds more of this epoch than this database knows (it was
            put back from a copy) after local writes were already taken, so a new epoch
            can no longer be started safely; or other bytes under the same number.
        """
        epoch, n, h = self._chain()
        hub_n = held.batches if held else 0
        hub_seq = held.last_seq if held else 0
        hub_hash = held.last_hash if held else ZERO_HASH
        pending = self._pending()
        if pending is not None and pending[1].e != epoch:
            pending = None  # an older epoch's: settled by _align_old_epochs
        if self._hub_lost_own and hub_n > n and (self.store.own_seq(epoch) or 0) >= hub_seq:
            # A restored hub lost our batches, we rebuilt ours from what it held, and another
            # node relayed our originals first [N-RELAY-1]: the hub holds exactly events we
            # signed, so they are acknowledged and the chain continues from the hub's.
            self._hub_lost_own = False
            self.store.meta_set(META_PENDING, "")
            self.store.mark_acked(epoch, hub_seq)
            self._set_chain(epoch, hub_n, hub_hash)
            return
        if pending is not None:
            _data, batch, phash = pending
            if batch.n == hub_n and phash == hub_hash:
                # Stored, but the ack was lost: complete it now.
                self._acked(batch, phash)
                return
            if batch.n == hub_n + 1 and batch.prev == hub_hash:
                return  # the hub still waits for exactly these bytes; resend them
            if batch.n <= hub_n:
                self._behind(epoch, hub_n, hub_seq, f"batch {batch.n} differs from the hub's")
                return
            # The hub lost batches it had acknowledged (restored): rebuild from what it holds.
            self.store.meta_set(META_PENDING, "")
        if n < hub_n or (n == hub_n and h != hub_hash and hub_n > 0):
            self._behind(epoch, hub_n, hub_seq, f"this node knows {n} of the hub's {hub_n} batches")
        elif n > hub_n:
            # Hub restored from an older backup: re-push everything after what it holds.
            self._hub_lost_own = True
            self._unack(epoch, hub_seq)
            self._set_chain(epoch, hub_n, hub_hash)

    def _behind(self, epoch: int, hub_n: int, hub_seq: int, what: str) -> None:
        """The database is older than the hub's record of this epoch (put back from a copy).

        Before any local write, that is exactly a restore: start a new epoch for new
        writes; the old epoch is then settled with the hub like any older epoch (what the
        hub holds comes back through the pull, the rest is pushed as its continuation).
        After local writes, new events may already reuse numbers the hub holds, so
        replication stops instead.

        Raises:
            SyncStopped: local writes were taken before the mismatch was seen.
        """
        if not self.may_renew_epoch:
            raise SyncStopped(
                "SEQUENCE_FORK",
                f"{self.s.node_id}/{epoch}: {what}; this database is older than the hub's record",
                "restore this node with `riversync restore` from its newest backup, which "
                "starts a new node epoch",
            )
        new = new_epoch()
        self.store.begin_epoch(new)
        keep_restored_pending(self.store)
        self.store.meta_set(META_PENDING, "")
        self.store.meta_set(META_CHAIN, "")
        self.renewed_epoch = (epoch, new)
        head.record(self.store)
        log.warning("node %s: %s; the database was put back from a copy: started node epoch %d "
                    "(was %d) and pulls its own events back", self.s.node_id, what, new, epoch)

    def _unack(self, epoch: int, last_seq: int) -> None:
        """The hub lost what came after ``last_seq``: those events are queued again."""
        self.store.requeue_after(epoch, last_seq)

    # ---- push -------------------------------------------------------------------------

    def _next_push(self) -> bytes | None:
        """The bytes to send next: the pending batch, or a new one persisted first (db thread)."""
        pending = self._pending()
        if pending is not None:
            return pending[0]
        events = []
        # Older epochs first: new writes may build on what the restored node wrote before.
        for old in sorted(self._old_chains):
            events = self.store.outbox(limit=self.batch_max, epoch=old)
            if events and events[0].seq <= self._old_held.get(old, 0):
                events = []  # the hub holds these numbers: compared when pulled, not pushed
            if events:
                epoch = old
                n, h = self._old_chains[old]
                break
        if not events:
            events = self.store.outbox(limit=self.batch_max, epoch=self.store.epoch)
            if not events:
                return None
            epoch, n, h = self._chain()
        batch = make_batch(cluster=self.s.cluster_id, node=self.s.node_id, epoch=epoch, n=n + 1,
                           prev=h, events=events, now_ms=self.wall_ms())
        data = sign(batch, self.key)
        self.store.meta_set(META_PENDING, data.hex())  # durable before it leaves this node
        return data

    def _acked(self, batch: Batch, h: bytes) -> None:
        self.store.mark_acked(batch.e, batch.last)
        if batch.e == self.store.epoch:
            self._set_chain(batch.e, batch.n, h)
        else:
            self._old_chains[batch.e] = (batch.n, h)
        self.store.meta_set(META_PENDING, "")

    def _acked_bytes(self, data: bytes) -> int:
        env = codec.decode(data, Envelope)
        batch = codec.decode(env.b, Batch)
        self._acked(batch, body_hash(env.b))
        return len(batch.events)

    async def push_all(self) -> int:
        """Push until the outbox is empty; returns the number of events acknowledged."""
        total = 0
        async with self._push_lock:
            while True:
                data = await self.db.run(self._next_push)
                if data is None:
                    break
                try:
                    await self._ask("push", self.hub.push(data), self.wall_ms())
                except TooLarge as e:
                    # The hub refused the batch whole and stored nothing, so these bytes
                    # can be replaced without any risk of a fork: build smaller batches.
                    if self.batch_max <= 1:
                        raise
                    cap = _HUB_EVENT_CAP.search(str(e))
                    if cap:  # the hub's own events-per-batch limit: keep to it from now on
                        self.batch_cap = max(1, min(self.batch_cap, int(cap.group(1))))
                    self.batch_max = max(1, min(self.batch_max // 2, self.batch_cap))
                    await self.db.run(self.store.meta_set, META_PENDING, "")
                    log.warning("hub refused a batch as too large; batches now hold at most %d "
                                "events", self.batch_max)
                    continue
                total += await self.db.run(self._acked_bytes, data)
                self.clock.forget()  # the hub took events this clock stamped
                # Large rows shrank the batches (bytes): grow back once they pass again.
                self.batch_max = min(self.batch_cap, self.batch_max * 2)
            self._push_ok_mono = time.monotonic()
            self.batch_max = self.batch_cap  # the outbox is empty: the large rows are through
        if total:
            self.metrics.pushed_events.inc(total)
        return total

    async def relay_lost(self) -> int:
        """Push again, unchanged, other origins' batches the (restored) hub no longer holds
        [N-RELAY-1]; returns the batches stored.  The hub checks each with its origin's key
        and chain, so a refusal here only means someone else got there first; an answer
        that judged nothing (the hub busy, unreachable, or its status unanswered) leaves the
        pass due, in ``META_RELAY_DUE`` too, for the next cycle or the next start."""
        held = await relay.hub_holds(self.hub.base_url)
        if held is None:
            return 0  # cannot tell now: try again next cycle (the flag stays, on disk too)
        envelopes = await self.db.run(relay.missing_at_hub, self.store.conn, held,
                                      self.s.node_id)
        stored = 0
        again = False
        for data in envelopes:
            try:
                stored += (await self.hub.push(data)).status == "stored"
            except ProtocolError as e:
                if e.action == RETRY:  # busy, clock: the hub did not judge the batch
                    again = True
                    log.info("relaying a batch the hub lost must wait: %s", e)
                    break
                log.info("relaying a batch the hub lost was refused: %s", e)
        if not again:
            await self.db.run(self.store.meta_set, META_RELAY_DUE, "")
            self._relay_due = False
        if stored:
            log.warning("node %s: the hub had lost %d batch(es) of other origins that only "
                        "this node held; pushed them again as signed", self.s.node_id, stored)
        return stored

    async def _load_relay_due(self) -> None:
        """Read back a relay pass that was due when the node stopped (once per start)."""
        if not self._relay_due_loaded:
            if await self.db.run(self.store.meta_get, META_RELAY_DUE):
                self._relay_due = True
            self._relay_due_loaded = True

    async def prune_relay(self, *, force: bool = False) -> int | None:
        """Delete kept batches older than ``relay_keep_days`` and refresh the kept-batch
        metrics; at most once every ``relay.PRUNE_INTERVAL_S`` unless ``force``.  Returns
        the batches deleted, or None when it did not run.

        While a relay pass is due nothing is deleted: the hub may need exactly the oldest
        batches.  A failure is logged and retried at the next interval; it must not stop
        replication, which does not depend on it.
        """
        now = self.relay_clock()
        if (not force and self._relay_pruned_at is not None
                and now - self._relay_pruned_at < relay.PRUNE_INTERVAL_S * 1000):
            return None
        self._relay_pruned_at = now
        try:
            await self._load_relay_due()
            gone = 0
            if not self._relay_due:
                gone = await self.db.write("relay", relay.prune, self.store.conn, now,
                                           self.s.relay_keep_days)
            self.relay_kept = await self.db.run(relay.kept_stats, self.store.conn)
        except apsw.Error as e:
            log.error("pruning the kept relay batches failed (retried in %d s): %s",
                      relay.PRUNE_INTERVAL_S, e)
            return None
        self.metrics.relay_kept_batches.set(self.relay_kept[0])
        self.metrics.relay_kept_bytes.set(self.relay_kept[1])
        if gone:
            log.info("node %s: deleted %d kept relay batch(es) older than %d day(s)",
                     self.s.node_id, gone, self.s.relay_keep_days)
        return gone

    # ---- pull -------------------------------------------------------------------------

    async def _pull_from(self) -> tuple[int, int]:
        if self._pull_override is not None:
            return self._pull_override
        cur = await self.db.run(self.store.get_cursor, "hub")
        if cur is None:
            raise Resync("no cursor yet")
        return cur[0], cur[1]

    async def _request(self, hub_epoch: int, cursor: int, wait_ms: int, interruptible: bool):
        sent = self.wall_ms()
        body = Pull(v=VERSION, c=self.s.cluster_id, o=self.s.node_id, ts=sent,
                    e=self.store.epoch, nonce=os.urandom(16), hub_epoch=hub_epoch,
                    cursor=cursor, limit=PULL_LIMIT, wait_ms=wait_ms)
        fut = asyncio.ensure_future(
            self._ask("pull", self.hub.pull(sign(body, self.key), wait_ms), sent))
        fut.add_done_callback(_retrieve)
        if not interruptible:
            return await fut
        stop = asyncio.ensure_future(self._poll_interrupt.wait())
        try:
            done, _ = await asyncio.wait({fut, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if fut not in done:
            fut.cancel()
            raise PollInterrupted()
        return fut.result()

    def _verify(self, raw_batches: list[bytes]) -> tuple[list, list[tuple[Batch, bytes]]]:
        """Open every batch of a reply; any failure refuses the whole reply.  Returns the
        events and each batch with its signed bytes (kept for relaying [N-RELAY-1]).

        Raises:
            SyncStopped: a batch does not verify against the roster.
        """
        events: list = []
        kept: list[tuple[Batch, bytes]] = []
        for i, raw in enumerate(raw_batches):
            try:
                _env, body = open_envelope(raw, self.roster)
                batch = codec.expect(body, Batch)
            except ProtocolError as e:
                raise SyncStopped(
                    e.code,
                    f"batch {i} of a pull reply was refused: {e}",
                    "the hub relayed a batch this node cannot trust; check the roster on the "
                    "hub and on this node, then POST /v1/sync",
                ) from None
            events.extend(batch.events)
            kept.append((batch, raw))
        return events, kept

    async def pull_all(self, wait_ms: int, *, interruptible: bool = False) -> int:
        """Pull and apply until the hub has nothing more; returns events applied."""
        total = 0
        async with self._pull_lock:
            if not interruptible:
                self._poll_interrupt.clear()
            while True:
                hub_epoch, cursor = await self._pull_from()
                reply = await self._request(hub_epoch, cursor, wait_ms, interruptible)
                if reply.hub_epoch != self.hub_epoch:
                    raise Resync(f"the hub's epoch changed from {self.hub_epoch} to "
                                 f"{reply.hub_epoch}")
                events, kept = self._verify(reply.batches)
                if events or reply.cursor != cursor or self._pull_override is not None:
                    await self._apply(events, reply.hub_epoch, reply.cursor, kept)
                    self._pull_override = None
                self.cursor = (reply.hub_epoch, reply.cursor)
                self.hub_head = reply.head
                total += len(events)
                if not reply.more:
                    break
                wait_ms = 0
            self._pull_ok_mono = time.monotonic()
            self.skipped = await self.db.run(self.store.origin_gaps)
        return total

    def _settle_own(self, events: list, now: int) -> list[dict]:
        """Compare own events of older epochs coming back from the hub with the local ones
        of the same (node, epoch, seq) (db thread).

        The same id with other content means this database was put back from a copy and
        took writes under numbers the hub already held: the hub's events are the truth for
        those ids, and the local writes, accepted with a 2xx, are re-issued into the
        current epoch (``Store.yield_own``), so nothing is lost and every office converges.
        """
        me, current = self.s.node_id, self.store.epoch
        by_epoch: dict[int, dict[int, Any]] = {}
        for ev in events:
            if ev.node == me and ev.epoch != current:
                by_epoch.setdefault(ev.epoch, {})[ev.seq] = ev
        found = []
        for epoch, hub_evs in by_epoch.items():
            local = self.store.own_events(epoch, hub_evs)
            differ = [s for s, ev in local.items() if ev != hub_evs[s]]
            if not differ:
                continue
            new = self.store.yield_own(epoch, differ, now_ms=now)
            note = {"epoch": epoch, "seqs": sorted(differ), "reissued_epoch": current,
                    "reissued_seqs": [ev.seq for ev in new], "at": time.time()}
            log.warning("node %s: the hub holds other events than this database under "
                        "%s/%d seq %s (the database was put back from a copy): adopted the "
                        "hub's, re-issued this node's %d write(s) as epoch %d seq %s",
                        me, me, epoch, note["seqs"], len(new), current,
                        note["reissued_seqs"])
            found.append(note)
        return found

    def _settle_and_apply(self, events: list, now: int, cursor: tuple[str, int, int],
                          kept: list[tuple[Batch, bytes]] = ()):
        with transaction(self.store.conn):  # the kept envelopes commit with the apply
            if self.s.relay_keep_days > 0:
                relay.keep(self.store.conn, list(kept), self.relay_clock())
            for batch, _raw in kept:
                if batch.o == self.s.node_id and batch.e != self.store.epoch and batch.n > 1:
                    self._settle_restored_pending(batch.e, batch.n - 1, batch.prev)
            found = self._settle_own(events, now)
            result = self.store.apply_remote(events, now_ms=now, cursor=cursor)
        return found, result

    async def _apply(self, events: list, hub_epoch: int, cursor: int,
                     kept: list[tuple[Batch, bytes]] = ()) -> None:
        try:
            found, _ = await self.db.write("apply", self._settle_and_apply, events,
                                           self.wall_ms(),
                                           ("hub", hub_epoch, cursor), kept)
            if found:
                self.diverged.extend(found)
                self._note_error("OWN_EVENTS_DIVERGED",
                                 f"{sum(len(f['seqs']) for f in found)} own event(s) of an "
                                 "older epoch differed from the hub's; this node's writes were "
                                 "re-issued into the current epoch",
                                 "nothing to do: they are pushed at once; `riversync verify` "
                                 "confirms convergence", RETRY)
                self._wake.set()
        except ProtocolError:
            self._replay_failed()
            raise
        except Exception as e:  # the store refused the batch: count, retry, then stop
            self._replay_failed()
            if self.replay_failures > self.s.replay_retry_threshold:
                raise SyncStopped(
                    getattr(e, "code", type(e).__name__),
                    f"applying {len(events)} pulled events failed {self.replay_failures} "
                    f"times: {e}",
                    "see the node log; fix the cause (schema, disk) and POST /v1/sync",
                ) from e
            raise ApplyFailed(f"applying pulled events failed, will retry: {e}") from e
        self.replay_failures = 0
        self.metrics.pulled_events.inc(len(events))
        if events:
            newest = max(ev.hlc for ev in events) >> 16
            self.metrics.replay_lag.observe(max(0.0, time.time() - newest / 1000))

    def _replay_failed(self) -> None:
        self.replay_failures += 1
        self.metrics.replay_failures.inc()
