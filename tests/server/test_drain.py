"""SIGTERM drains (issue 17.6): a real `fastredis serve` stops accepting, lets a push get
the acks of what it sent, and closes pulls with 1012 and a retry hint, spread over
``--drain-seconds``; then it exits cleanly."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator

import pytest
import redis
import websockets
from support.serve_process import Serve, started

DEADLINE = 30.0
WINDOW = 2.0
PULLS = 20


@pytest.fixture
def server(redis_url: str) -> Iterator[Serve]:
    yield from started("--drain-seconds", str(WINDOW), REDIS_URL=redis_url)


async def test_sigterm_drains_pushes_then_pulls(server: Serve, redis_url: str) -> None:
    server.wait_ready()
    ws_url = server.http_url.replace("http", "ws")
    pulls = [
        await websockets.connect(f"{ws_url}/data/d/pull?block=0&count=100") for _ in range(PULLS)
    ]
    push = await websockets.connect(f"{ws_url}/data/d/push?ack=1&header=0")
    acked: list[str] = []

    async def pushing() -> None:
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await push.send(b"x" * 100)
                acked.extend(json.loads(await asyncio.wait_for(push.recv(), DEADLINE)))
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012

    async def closed(ws: websockets.ClientConnection) -> tuple[float, int, str]:
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), DEADLINE)
        assert info.value.rcvd is not None
        return time.monotonic(), info.value.rcvd.code, info.value.rcvd.reason

    producer = asyncio.create_task(pushing())
    while len(acked) < 50:  # pushing, and the pulls receiving
        await asyncio.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    first = asyncio.create_task(closed(pulls[0]))
    ends = [await first, *await asyncio.gather(*(closed(ws) for ws in pulls[1:]))]
    await producer
    with pytest.raises(OSError):  # no longer accepting
        await websockets.connect(f"{ws_url}/data/d/pull", open_timeout=DEADLINE)
    assert server.wait_exit() == 0, "".join(server.output)

    for _at, code, reason in ends:
        assert code == 1012
        match = re.fullmatch(r"server restarting; retry in (\d+) ms", reason)
        assert match and int(match[1]) <= WINDOW * 1000
    # spread over the window: the last pull closes well after the first
    times = sorted(at for at, _code, _reason in ends)
    assert times[-1] - sent >= WINDOW * (PULLS - 1) / PULLS * 0.9
    # the push got the acks of everything written, and nothing acked is missing
    r = redis.Redis.from_url(redis_url)
    assert [eid.decode() for eid, _ in r.xrange("d")] == acked
