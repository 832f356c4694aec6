"""One thread owns the store: every database call of the daemon goes through it.

apsw calls block, so running them on the event loop would stall the API and the agent
while a large batch applies.  A single worker thread keeps the calls off the loop and,
as a bonus, serialises them: the store never sees two calls at once, and a call queued
after an apply sees that apply's result.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class DbThread:
    def __init__(self, on_write: Callable[[str, float], None] | None = None):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riversync-db")
        self._on_write = on_write

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def write(self, kind: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like ``run`` for a write transaction; its duration feeds the write-latency metric."""

        def timed() -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self._on_write is not None:
                    self._on_write(kind, time.perf_counter() - t0)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, timed)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
