"""Refusals the client can read (issue 17.8): a binary message on an ``ack=1`` pull
closes it with 1003 and its reason, at once; an oversize REST POST always gets its 413,
even from a client that keeps sending its body and asked for ``Connection: close``."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
import websockets
from support.live_server import LiveServer

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

LIMIT = 1 << 20
DEADLINE = 10.0


@pytest.fixture(scope="module")
def live(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(create_app(Settings(redis_url=redis_server.url, max_message_size=LIMIT))) as s:
        yield s


async def test_binary_ack_closes_with_1003_at_once(live: LiveServer, redis_url: str) -> None:
    """No batch is due (the stream is empty): the refusal does not wait for one."""
    async with websockets.connect(f"{live.ws_url}/data/s/pull?ack=1") as ws:
        await ws.send(b"not an ack")
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), DEADLINE)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        1003,
        "expected a text message as ack, got a binary message",
    )


def _post_slowly(port: int, head: str, chunks: list[bytes]) -> bytes:
    """Send a request head then its body chunk by chunk (a pause between them), as a
    client that reads the answer only once it has sent everything; the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(head.encode())
        for chunk in chunks:
            s.sendall(chunk)  # a broken pipe here fails the test
            time.sleep(0.001)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
        return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_post_gets_its_413(live: LiveServer, redis_url: str, chunked: bool) -> None:
    body = [b"x" * 65536] * (8 * LIMIT // 65536)
    head = "POST /data/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in body] + [b"0\r\n\r\n"]
    else:
        head += f"Content-Length: {sum(map(len, body))}\r\n\r\n"
        chunks = body
    for _ in range(5):
        answer = _post_slowly(live.port, head, chunks)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
