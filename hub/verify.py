"""Checking a pushed batch before it is stored: on the event loop, or in worker processes.

Why worker processes: a 1,000-event batch costs about 2 ms of CPU to verify and check
(signature, decode, every event's origin, sequence, values and clock).  That work holds
the GIL, so done on the event loop it caps a hub at about one core however many it has.
With ``limits.verify_workers`` > 0 it runs in that many worker processes (spawned, so
they share no threads, sockets or SQLite handles with the hub) and the loop only moves
bytes.  A worker returns the batch's chain head, or the error's code, message and path,
re-raised here as the same typed error.  A worker that dies is replaced, and the batch
that was in it is checked on the loop instead, so a crash never turns into a refusal.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from riversync.config import HubLimits
from riversync.protocol import codec
from riversync.protocol.errors import BY_CODE, ProtocolError, TooLarge
from riversync.protocol.keys import Roster
from riversync.protocol.messages import Batch

from .store import BatchHead

log = logging.getLogger("riversync.hub.verify")


def check_push(data: bytes, roster: Roster, now_ms: int, max_drift_ms: int,
               max_events: int) -> tuple[BatchHead, bytes]:
    """Every check a pushed batch passes before the chain: returns (head, chain hash).

    Raises:
        ProtocolError: the typed refusal (see docs/reference/hub.md, "Push").
    """
    env, body = codec.open_envelope(data, roster)
    batch = codec.expect(body, Batch)
    if len(batch.events) > max_events:
        raise TooLarge(f"batch holds {len(batch.events)} events; the hub takes at most "
                       f"{max_events}", path="$.events")
    codec.check_batch_clock(batch, now_ms, max_drift_ms)
    return BatchHead.of(batch), codec.body_hash(env.b)


_roster: Roster | None = None


def _init_worker(roster: Roster) -> None:
    global _roster
    _roster = roster


def _work(data: bytes, now_ms: int, max_drift_ms: int, max_events: int) -> tuple:
    assert _roster is not None
    try:
        return ("ok",) + check_push(data, _roster, now_ms, max_drift_ms, max_events)
    except ProtocolError as e:
        return ("error", e.code, e.message, e.path)


def _rebuild(code: str, message: str, path: str | None) -> ProtocolError:
    cls = BY_CODE.get(code, ProtocolError)
    err = cls(message, path=path)
    err.code = code
    return err


class Verifier:
    def __init__(self, roster: Roster, limits: HubLimits):
        self.roster = roster
        self.lim = limits
        self._pool: ProcessPoolExecutor | None = None
        if limits.verify_workers:
            self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.lim.verify_workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.roster,))

    async def check(self, data: bytes, now_ms: int) -> tuple[BatchHead, bytes]:
        """Raises the batch's typed ProtocolError, as ``check_push``."""
        args = (now_ms, self.lim.max_drift_ms, self.lim.max_events_per_batch)
        if self._pool is None:
            return check_push(data, self.roster, *args)
        pool = self._pool
        try:
            r = await asyncio.get_running_loop().run_in_executor(pool, _work, data, *args)
        except BrokenProcessPool:
            log.error("a verify worker died; starting new workers")
            if self._pool is pool:
                self._pool = self._new_pool()
            return check_push(data, self.roster, *args)
        if r[0] == "ok":
            return r[1], r[2]
        raise _rebuild(*r[1:])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
