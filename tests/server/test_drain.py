"""SIGTERM drains (issue 17.6): a real `fastredis serve` stops accepting, lets a push get
the acks of what it sent, and closes pulls with 1012 and a retry hint, spread over
``--drain-seconds``; SSE, MJPEG, Foxglove and GraphQL end the same way, each in its
own terms; then it exits cleanly."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
import websockets
from support.serve_process import Serve, started
from support.waiting import wait_until

DEADLINE = 30.0
WINDOW = 2.0
PULLS = 20
FOXGLOVE = "foxglove.websocket.v1"
GQL = "graphql-transport-ws"


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


HINT = re.compile(r"server restarting; retry in (\d+) ms")


async def test_sigterm_ends_every_other_face_within_the_window(server: Serve) -> None:
    """SSE ends after a ``retry:`` field with the hint, MJPEG ends its multipart body,
    Foxglove and GraphQL websockets close 1012 with the hint: each by the drain, not
    cut by uvicorn's own shutdown."""
    server.wait_ready()
    ws_url = server.http_url.replace("http", "ws")
    opened: list[str] = []

    async def sse(http: httpx.AsyncClient) -> list[str]:
        async with http.stream("GET", "/sse/d") as resp:
            assert resp.status_code == 200
            opened.append("sse")
            return [line async for line in resp.aiter_lines()]

    async def mjpeg(http: httpx.AsyncClient) -> bytes:
        async with http.stream("GET", "/mjpeg/d") as resp:
            assert resp.status_code == 200
            opened.append("mjpeg")
            return b"".join([chunk async for chunk in resp.aiter_bytes()])

    async def ended(ws: websockets.ClientConnection) -> tuple[int, str]:
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), DEADLINE)
        assert info.value.rcvd is not None
        return info.value.rcvd.code, info.value.rcvd.reason

    async def foxglove() -> tuple[int, str]:
        url = f"{ws_url}/foxglove"
        async with websockets.connect(url, subprotocols=[FOXGLOVE]) as ws:  # type: ignore[list-item]
            assert json.loads(await ws.recv())["op"] == "serverInfo"
            opened.append("foxglove")
            return await ended(ws)

    async def graphql() -> tuple[int, str]:
        url = f"{ws_url}/graphql"
        async with websockets.connect(url, subprotocols=[GQL]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            query = 'subscription { data(sids: ["d"]) { sid } }'
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            opened.append("graphql")
            return await ended(ws)

    async with httpx.AsyncClient(base_url=server.http_url, timeout=DEADLINE) as http:
        faces = [
            asyncio.create_task(sse(http)),
            asyncio.create_task(mjpeg(http)),
            asyncio.create_task(foxglove()),
            asyncio.create_task(graphql()),
        ]
        while len(opened) < len(faces):
            await asyncio.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        lines, body, fox, gql = await asyncio.wait_for(asyncio.gather(*faces), DEADLINE)
    assert server.wait_exit() == 0, "".join(server.output)

    comment = [HINT.search(line) for line in lines if line.startswith(":")]
    retry = [line for line in lines if line.startswith("retry:")]
    assert any(comment) and retry == [f"retry: {next(m for m in comment if m)[1]}"]
    assert int(retry[0].split()[1]) <= WINDOW * 1000  # EventSource waits that, then resumes
    assert body.endswith(b"\r\n--fastredis-frame--\r\n")  # the multipart ended, not cut
    for code, reason in (fox, gql):
        match = HINT.fullmatch(reason)
        assert code == 1012 and match and int(match[1]) <= WINDOW * 1000


async def test_sigterm_closes_a_pull_catching_up_by_splice_after_a_whole_frame(
    server: Serve, redis_url: str
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.delete("big")
    payloads = [bytes([i]) * (1 << 20) for i in range(200)]
    for payload in payloads:
        r.xadd("big", {"d": payload})
    server.wait_ready()
    ws_url = server.http_url.replace("http", "ws")
    async with websockets.connect(
        f"{ws_url}/data/big/pull?last_entry_id=0&header=0", max_size=None
    ) as ws:
        got = [await ws.recv()]  # the client reads slowly: the catch-up waits for it

        def spliced() -> bool:  # the metrics tell a pump's progress within a second
            metrics = httpx.get(f"{server.http_url}/metrics", timeout=DEADLINE).text
            return bool(re.search(r'fastredis_stream_reads_total\{kind="spliced"\} [1-9]', metrics))

        await asyncio.to_thread(wait_until, spliced, DEADLINE, what="a splice pump's reads")
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                got.append(await asyncio.wait_for(ws.recv(), DEADLINE))
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    assert HINT.fullmatch(info.value.rcvd.reason)
    assert got == payloads[: len(got)] and len(got) < len(payloads)  # whole, in order
    assert server.wait_exit() == 0, "".join(server.output)
