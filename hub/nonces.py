"""Replay protection for signed requests (hello, pull, status).

A request is accepted once: its (node, nonce) is remembered until its timestamp leaves
the freshness window, after which ``check_fresh`` refuses it anyway.  The book lives in
memory: a restarted hub forgets it, which re-opens at most one window for read-only
requests that only their signer could have made.  It is bounded; when it is full of
unexpired nonces the hub answers BUSY rather than forget one early.
"""

from __future__ import annotations

from riversync.protocol.errors import Busy, ReplayedRequest


class NonceBook:
    def __init__(self, window_ms: int, max_entries: int):
        self.window_ms = window_ms
        self.max_entries = max_entries
        self._seen: dict[tuple[str, bytes], int] = {}
        self._uses = 0

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, node: str, nonce: bytes, ts_ms: int, now_ms: int) -> None:
        """Record a nonce, or refuse it.

        Raises:
            ReplayedRequest: this node already used this nonce within the window.
            Busy: the book is full of unexpired nonces.
        """
        key = (node, bytes(nonce))
        if key in self._seen:
            raise ReplayedRequest(f"node {node!r} already sent a request with nonce {nonce.hex()}",
                                  path="$.nonce")
        self._uses += 1
        if self._uses % 1024 == 0 or len(self._seen) >= self.max_entries:
            self._expire(now_ms)
            if len(self._seen) >= self.max_entries:
                raise Busy("too many recent requests to remember; retry shortly")
        self._seen[key] = max(ts_ms, now_ms) + self.window_ms

    def _expire(self, now_ms: int) -> None:
        self._seen = {k: exp for k, exp in self._seen.items() if exp > now_ms}
