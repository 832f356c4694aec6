"""The agent's only door to the hub: three signed POSTs over HTTP.

Kept narrow so the agent's logic can be read without HTTP in mind.  A request either
returns the typed reply, raises ``HubUnreachable`` (nothing was learnt: retry later), or
raises the hub's typed ``ProtocolError`` rebuilt from its error reply, carrying the
action the hub asks for (retry, resync or stop).
"""

from __future__ import annotations

from typing import TypeVar

import aiohttp
import msgspec

from riversync.protocol import codec
from riversync.protocol.errors import ProtocolError, from_wire
from riversync.protocol.messages import ErrorReply, HelloReply, PullReply, PushReply

T = TypeVar("T")

CONTENT_TYPE = "application/msgpack"
CONNECT_TIMEOUT_S = 3.0  # a hub that does not accept a connection in 3 s counts as away
REQUEST_TIMEOUT_S = 30.0  # beyond any long-poll wait the agent asks for, plus margin


class HubUnreachable(Exception):
    """The hub did not answer (refused, timed out, reset, or answered 5xx without a reason)."""


class HubClient:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, data: bytes, reply_type: type[T], timeout_s: float) -> T:
        session = await self._client()
        try:
            async with session.post(
                self.base_url + path,
                data=data,
                headers={"Content-Type": CONTENT_TYPE},
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=CONNECT_TIMEOUT_S),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise HubUnreachable(f"{path}: {type(e).__name__}: {e}") from None
        if status == 200:
            return codec.decode(body, reply_type)
        try:
            err = msgspec.msgpack.decode(body, type=ErrorReply)
        except (msgspec.DecodeError, msgspec.ValidationError):
            if status >= 500:
                raise HubUnreachable(f"{path}: HTTP {status} without an error reply") from None
            raise ProtocolError(
                f"{self.base_url} answered HTTP {status} with no riversync error reply: it "
                "is not a riversync hub (a node's API, another service?), or a hub of a "
                "much older version",
                hint="check hub_url in the node config: it names the address of `riversync "
                     "hub serve`, not a node's") from None
        error = from_wire({"code": err.code, "message": err.message})
        error.action = err.action or error.action
        if err.hint:
            error.hint = err.hint
        raise error

    async def hello(self, signed: bytes) -> HelloReply:
        return await self._post("/v1/hello", signed, HelloReply, REQUEST_TIMEOUT_S)

    async def push(self, signed: bytes) -> PushReply:
        return await self._post("/v1/push", signed, PushReply, REQUEST_TIMEOUT_S)

    async def pull(self, signed: bytes, wait_ms: int) -> PullReply:
        return await self._post("/v1/pull", signed, PullReply, REQUEST_TIMEOUT_S + wait_ms / 1000)
