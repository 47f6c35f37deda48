"""A pull's catch-up by splice (`fastredis.server.reads.splice_pump`): the client gets
exactly what the hub would have sent, a Redis failure is told the same way with only
whole frames before it, the socket's own writes (pongs) wait for the end of a frame,
and a client that vanishes frees the pump's thread and slot."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import RedisError
from support.live_server import LiveServer
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.server.reads.splice_pump import _fields_after, _Handover, _parse_head
from fastredis.server.run.app import create_app
from fastredis.server.run.metrics import COUNTS
from fastredis.server.run.settings import Settings

MB = 1 << 20


@pytest.fixture(scope="module", params=["tcp", "unix"])
def valkey(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedRedis, str]]:
    """A private Valkey and the URL the servers use (its TCP port or unix socket)."""
    with EmbeddedRedis(unix_socket=True) as server:
        url = server.url if request.param == "tcp" else server.unix_url
        assert url is not None
        yield server, url


def _server(url: str, splice: str) -> LiveServer:
    return LiveServer(create_app(Settings(redis_url=url, splice_pulls=splice)))


@pytest.fixture(scope="module")
def servers(valkey: tuple[EmbeddedRedis, str]) -> Iterator[dict[str, LiveServer]]:
    """The same app with splice pulls on and off, on one Valkey."""
    with _server(valkey[1], "on") as on, _server(valkey[1], "off") as off:
        yield {"on": on, "off": off}


def _fill(r: redis.Redis, sid: str) -> int:
    """Entries of every shape a pump meets; how many."""
    r.delete(sid)
    for size in (MB, 300_000, 10, 0):
        r.xadd(sid, {"d": os.urandom(size)})
    r.xadd(sid, {"other": b"x" * 100})  # no payload field: an empty message
    r.xadd(sid, {"meta": b"m" * 50, "d": os.urandom(200_000), "after": b"a" * 70_000})
    r.xadd(sid, {"d": os.urandom(2 * MB)})  # more than the pipe holds: handed over
    r.xadd(sid, {"d": os.urandom(MB)})
    return 8


def _spliced() -> int:
    return COUNTS.stream_reads["spliced"]


async def _reads_told(total: int) -> None:
    """Wait until the pumps' reads add up to `total` (told when a pump ends, which can
    be after its last frame reached the client)."""
    await asyncio.to_thread(wait_until, lambda: _spliced() == total, 10, what="pump reads")


async def _frames(url: str, n_entries: int, query: str, sid: str = "s") -> list[Any]:
    """Every message of a pull from 0 until `n_entries` binary ones came."""
    out: list[Any] = []
    path = f"{url}/data/{quote(sid, safe='')}/pull?last_entry_id=0{query}"
    async with websockets.connect(path, max_size=None) as ws:
        while sum(isinstance(m, bytes) for m in out) < n_entries:
            out.append(await asyncio.wait_for(ws.recv(), 20))
    return out


@pytest.mark.parametrize("query", ["", "&offsets=end", "&header=0"])
async def test_a_spliced_catch_up_sends_what_the_hub_sends(
    valkey: tuple[EmbeddedRedis, str], servers: dict[str, LiveServer], query: str
) -> None:
    n = _fill(redis.Redis.from_url(valkey[0].url), "s")
    before = _spliced()
    spliced = await _frames(servers["on"].ws_url, n, query)
    assert _spliced() - before >= 6  # up to the entry handed over
    assert spliced == await _frames(servers["off"].ws_url, n, query)


async def test_a_stream_name_to_escape_gets_the_same_header(
    valkey: tuple[EmbeddedRedis, str], servers: dict[str, LiveServer]
) -> None:
    sid = 'cam "ü" \\ 1'
    r = redis.Redis.from_url(valkey[0].url)
    r.delete(sid)
    r.xadd(sid, {"d": os.urandom(300_000)})
    r.xadd(sid, {"d": b"small"})
    for query in ("", "&offsets=end"):
        before = _spliced()
        spliced = await _frames(servers["on"].ws_url, 2, query, sid)
        # two entries and the end
        await _reads_told(before + 3)
        assert spliced == await _frames(servers["off"].ws_url, 2, query, sid)
        assert json.loads(spliced[0])[0][0] == sid


async def test_pongs_wait_for_the_frame_and_come_after(
    valkey: tuple[EmbeddedRedis, str], servers: dict[str, LiveServer]
) -> None:
    r = redis.Redis.from_url(valkey[0].url)
    r.delete("s")
    payloads = [os.urandom(MB) for _ in range(40)]
    for p in payloads:
        r.xadd("s", {"d": p})
    url = f"{servers['on'].ws_url}/data/s/pull?last_entry_id=0&header=0"
    async with websockets.connect(url, max_size=None) as ws:
        got = [await ws.recv()]
        pongs = [await ws.ping() for _ in range(20)]  # while the pump runs
        got += [await asyncio.wait_for(ws.recv(), 20) for _ in range(39)]
        await asyncio.wait_for(asyncio.gather(*pongs), 20)
    assert got == payloads


@pytest.mark.parametrize("splice", ["on", "off"])
async def test_redis_failing_mid_catch_up_is_told_after_whole_frames(splice: str) -> None:
    with EmbeddedRedis(unix_socket=True) as valkey:
        r = redis.Redis.from_url(valkey.url)
        for _ in range(300):
            r.xadd("s", {"d": os.urandom(MB)})
        with _server(valkey.unix_url or "", splice) as server:
            url = f"{server.ws_url}/data/s/pull?last_entry_id=0&header=0"
            async with websockets.connect(url, max_size=None) as ws:
                assert len(await ws.recv()) == MB
                valkey.process.kill()  # mid catch-up: the client has read one of 300
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    while True:
                        assert len(await asyncio.wait_for(ws.recv(), 20)) == MB
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011
            assert closed.value.rcvd.reason.startswith("Redis unavailable")


def _pump_threads() -> int:
    return sum(t.name == "fastredis-splice" for t in threading.enumerate())


async def test_a_client_vanishing_mid_catch_up_frees_its_pump(
    valkey: tuple[EmbeddedRedis, str], servers: dict[str, LiveServer]
) -> None:
    r = redis.Redis.from_url(valkey[0].url)
    r.delete("s")
    for _ in range(60):
        r.xadd("s", {"d": os.urandom(MB)})
    url = f"{servers['on'].ws_url}/data/s/pull?last_entry_id=0&header=0"
    for _ in range(Settings().budget.pumps + 1):  # more than the slots: each one was freed
        ws = await websockets.connect(url, max_size=None)
        assert len(await ws.recv()) == MB
        assert _pump_threads() >= 1  # the client reads slowly: the pump waits for it
        ws.transport.abort()
        await asyncio.to_thread(wait_until, lambda: _pump_threads() == 0, 10, what="pump ends")
    before = _spliced()
    assert len(await _frames(servers["on"].ws_url, 60, "&header=0")) == 60
    await _reads_told(before + 61)  # spliced (a slot was free): 60 reads and the end's


@given(st.binary(max_size=300), st.integers(0, 300))
@settings(max_examples=300, deadline=None)
def test_a_hostile_reply_head_is_refused_or_waited_for(tail: bytes, cut: int) -> None:
    prefix = b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n"
    for buf in (prefix + tail, (prefix + b"$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$5\r\n" + tail)[:cut]):
        try:
            head = _parse_head(buf, prefix)
        except (_Handover, RedisError):
            continue
        if head is not None:  # what it read is within the buffer
            assert 0 <= head.before <= len(buf) and head.size >= 0


@given(st.binary(max_size=300), st.integers(-1, 5))
@settings(max_examples=300, deadline=None)
def test_hostile_fields_after_a_payload_are_refused_or_waited_for(buf: bytes, pairs: int) -> None:
    try:
        end = _fields_after(buf, pairs)
    except RedisError:
        return
    assert end is None or 2 <= end <= len(buf)


async def test_a_ping_flood_while_the_socket_is_lent_closes_only_that_socket(
    valkey: tuple[EmbeddedRedis, str], servers: dict[str, LiveServer]
) -> None:
    r = redis.Redis.from_url(valkey[0].url)
    r.delete("s")
    for _ in range(60):
        r.xadd("s", {"d": os.urandom(MB)})
    url = f"{servers['on'].ws_url}/data/s/pull?last_entry_id=0&header=0"
    ws = await websockets.connect(url, max_size=None)
    assert len(await ws.recv()) == MB
    with pytest.raises((websockets.ConnectionClosed, ConnectionResetError)):
        for i in range(10_000):  # their pongs (127 bytes each) are held past the bound
            await ws.ping(b"%125d" % i)
        await asyncio.wait_for(ws.recv(), 20)
    await asyncio.to_thread(wait_until, lambda: _pump_threads() == 0, 10, what="pump ends")
    ws.transport.abort()
    assert len(await _frames(servers["on"].ws_url, 60, "&header=0")) == 60  # others go on


async def test_keepalive_pings_go_between_frames_of_a_long_catch_up(
    valkey: tuple[EmbeddedRedis, str],
) -> None:
    r = redis.Redis.from_url(valkey[0].url)
    r.delete("s")
    payloads = [os.urandom(300_000) for _ in range(200)]
    for p in payloads:
        r.xadd("s", {"d": p})
    app = create_app(Settings(redis_url=valkey[1]))
    # the server pings every 0.3 s and gives up 1.5 s after an unanswered ping
    with LiveServer(app, ws_ping_interval=0.3, ws_ping_timeout=1.5) as server:
        before = _spliced()
        url = f"{server.ws_url}/data/s/pull?last_entry_id=0&header=0"
        async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
            got = []
            for _ in payloads:  # ~4 s of catch-up: it answers the pings as they come
                got.append(await asyncio.wait_for(ws.recv(), 20))
                await asyncio.sleep(0.02)
        assert got == payloads
        await _reads_told(before + 201)
