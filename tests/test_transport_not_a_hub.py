"""A hub_url that answers HTTP but not as a riversync hub (a node's API, a web server) is
named as such, with a hint about hub_url, instead of "HTTP 401 without an error reply"."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from riversync.node.transport import HubClient, HubUnreachable
from riversync.protocol.errors import ProtocolError


@pytest.mark.parametrize("status", [401, 404])
def test_an_http_service_that_is_not_a_hub_is_named_so(status):
    async def scenario():
        app = web.Application()
        app.router.add_post("/v1/hello", lambda r: web.json_response(
            {"error": {"code": "UNAUTHENTICATED"}}, status=status))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = HubClient(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(ProtocolError) as e:
                await client.hello(b"\x00")
            return e.value
        finally:
            await client.close()
            await runner.cleanup()

    err = asyncio.run(scenario())
    assert not isinstance(err, HubUnreachable)
    assert f"HTTP {status}" in str(err) and "not a riversync hub" in str(err)
    assert "hub_url" in err.hint
