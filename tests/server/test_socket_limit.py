"""--max-sockets: past the limit a websocket is closed with 1013 and its reason, MJPEG
gets 503; short requests are unaffected, and a freed place is taken again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import websockets
from support.live_server import LiveServer

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

LIMIT = 3
DEADLINE = 15.0


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(create_app(Settings(redis_url=redis_server.url, max_sockets=LIMIT))) as live:
        yield live


async def test_sockets_past_the_limit_are_told_to_come_back(
    server: LiveServer, redis_url: str
) -> None:
    url = f"ws://{server.host}:{server.port}"
    held = [await websockets.connect(f"{url}/data/s{k}/pull?block=0") for k in range(LIMIT)]
    try:
        refused = await websockets.connect(f"{url}/data/extra/push")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(refused.recv(), DEADLINE)
        assert refused.close_code == 1013
        assert "limit of 3 open sockets (max_sockets)" in (refused.close_reason or "")

        async with httpx.AsyncClient(base_url=f"http://{server.host}:{server.port}") as http:
            assert (await http.get("/data/s0", params={"last_entry_id": "0"})).status_code == 200
            mjpeg = await http.get("/mjpeg/cam", timeout=DEADLINE)
            assert mjpeg.status_code == 503
            assert "max_sockets" in mjpeg.json()["error"]

        await held.pop().close()
        async with websockets.connect(f"{url}/data/again/push?ack=1") as ws:
            await ws.send("[2]")
            await ws.send(b"ok")
            assert len(await asyncio.wait_for(ws.recv(), DEADLINE)) > 2
    finally:
        await asyncio.gather(*(ws.close() for ws in held))
