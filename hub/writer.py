"""Group commit: one thread owns every write to the store.

Why a thread and a queue: a durable commit waits for an fsync (milliseconds).  Pushes
that arrive while one commit is in flight queue up and are stored together in the next
transaction, so ten nodes pushing at once pay for one fsync, not ten, and the event loop
never blocks on the disk.  Each push's future resolves only after the transaction that
holds it has committed: that is the acknowledgement rule.

Cursor updates ride along in the same loop and the same kind of group (the latest per
node wins), so recording where each puller stands costs no extra fsync under load.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from .store import CursorInfo, HubStore, PushItem, PushResult

log = logging.getLogger("riversync.hub.writer")

MAX_GROUP = 512  # pushes per transaction; bounds one commit's size and latency


class Writer:
    def __init__(self, store: HubStore):
        self._store = store
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.commits = 0  # push transactions committed; batches stored / commits = group size
        self._thread = threading.Thread(target=self._run, name="hub-writer", daemon=True)
        self._thread.start()

    async def push(self, item: PushItem) -> PushResult | Exception:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put(("push", item, fut, loop))
        return await fut

    async def set_cursor(self, info: CursorInfo) -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._q.put(("cursor", info, fut, loop))
        r = await fut
        if isinstance(r, Exception):
            raise r

    def stop(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._q.get()
            if first is None:
                break
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            pushes = [g for g in group if g[0] == "push"]
            cursor_items = [g for g in group if g[0] == "cursor"]
            cursors = {g[1].node: g[1] for g in cursor_items}
            if pushes:
                try:
                    results = self._store.push_many([g[1] for g in pushes])
                    self.commits += 1
                except Exception as e:  # the whole group failed: every pusher hears why
                    log.exception("storing %d batches failed", len(pushes))
                    results = [e] * len(pushes)
                for (_, _, fut, loop), r in zip(pushes, results, strict=True):
                    loop.call_soon_threadsafe(_resolve, fut, r)
            if cursors:
                done: object = None
                try:
                    self._store.set_cursors(list(cursors.values()))
                except Exception as e:
                    log.exception("recording delivery cursors failed")
                    done = e
                for _, _, fut, loop in cursor_items:
                    loop.call_soon_threadsafe(_resolve, fut, done)


def _resolve(fut: asyncio.Future, value) -> None:
    if not fut.done():
        fut.set_result(value)
