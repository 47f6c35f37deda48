"""The one table from Redis failures to what each face answers: the same message in
the user's terms as a websocket close reason, an HTTP JSON error and a GraphQL error,
against a real Redis (out of memory, ids refused) and redis-py's exception classes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from redis import exceptions as rx
from support.live_server import LiveServer

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.edge.errors import failure
from fastredis.server.edge.protocol import BadInput

DEADLINE = 10.0
OOM = "Redis is out of memory (its maxmemory): nothing written; try again later"


async def closed_with(url: str, *messages: Any) -> tuple[int, str]:
    async with websockets.connect(url, open_timeout=DEADLINE) as ws:
        for message in messages:
            await ws.send(message)
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), DEADLINE)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.fixture
def full_redis(private_redis: EmbeddedRedis) -> Iterator[LiveServer]:
    """The server on a Redis that is out of memory (maxmemory reached)."""
    app = create_app(Settings(redis_url=private_redis.url))
    with LiveServer(app) as live, redis.Redis.from_url(private_redis.url) as r:
        r.xadd("s", {"d": b"before"})
        r.config_set("maxmemory", 1)
        try:
            yield live
        finally:
            r.config_set("maxmemory", 0)


async def test_out_of_memory_is_try_again_later_on_every_face(full_redis: LiveServer) -> None:
    ws = full_redis.ws_url
    for header in ("[1]", "[1, 2]"):  # one XADD, and the atomic script of several
        assert await closed_with(f"{ws}/data/s/push", header, b"xy"[: json.loads(header)[-1]]) == (
            1013,
            OOM,
        )
    resp = httpx.post(f"{full_redis.http_url}/data/s", content=b"x", timeout=DEADLINE)
    assert (resp.status_code, resp.json()) == (503, {"error": OOM})
    # reading still works
    resp = httpx.get(f"{full_redis.http_url}/data/s", timeout=DEADLINE)
    assert resp.status_code == 200 and resp.content == b"before"


async def test_ids_refused_by_redis_name_the_stream(
    redis_server: EmbeddedRedis, redis_url: str
) -> None:
    with redis.Redis.from_url(redis_url) as r:
        r.xadd("s", {"d": b"x"}, id="10-0")
    with LiveServer(create_app(Settings(redis_url=redis_url))) as live:
        url = f"{live.ws_url}/data/s/push"
        # one entry: a plain XADD, refused by Redis itself
        assert await closed_with(url, '[["s", "5-0", 1]]', b"x") == (
            1008,
            "stream 's': the entry id is not above the stream's last id",
        )
        # several: the atomic script checks before writing
        assert await closed_with(url, '[["s", "5-0", 1], ["s", "20-0", 2]]', b"xy") == (
            1008,
            "stream 's': id 5-0 is not above the last id 10-0; nothing written",
        )
    with redis.Redis.from_url(redis_url) as r:
        assert r.xlen("s") == 1


@pytest.mark.parametrize(
    ("exc", "code", "status", "message"),
    [
        (rx.MaxConnectionsError("Too many connections"), 1013, 503, "server is in use"),
        (rx.ConnectionError("No connection available."), 1013, 503, "--redis-max-connections"),
        (rx.TimeoutError("Timeout reading from socket"), 1011, 503, "no answer in time"),
        (rx.ConnectionError("Error 111 connecting"), 1011, 503, "Redis unavailable: Error 111"),
        (rx.BusyLoadingError("Redis is loading the dataset in memory"), 1013, 503, "busy"),
        (rx.ResponseError("BUSY Redis is busy running a script."), 1013, 503, "long Lua job"),
        (rx.ReadOnlyError("You can't write against a read only replica."), 1011, 503, "replica"),
        (rx.NoPermissionError("this user has no permissions"), 1011, 502, "may not use Redis"),
        (rx.ResponseError("ERR something new script: 0fbb35, on @user_script:64."), 1011, 502,
         "Redis refused the request: ERR something new"),
        (BadInput("bad query", 1008, 400), 1008, 400, "bad query"),
        (RuntimeError("a bug"), 1011, 500, "server error (logged on the server)"),
    ],
)  # fmt: skip
def test_failure_table(exc: BaseException, code: int, status: int, message: str) -> None:
    got = failure(exc)
    assert (got.code, got.status) == (code, status)
    assert message in got.message and "script:" not in got.message, got.message
