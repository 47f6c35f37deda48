"""Hostile input against the app under uvicorn (with `fastredis serve`'s protocol
options), real websockets and a real Redis: every bad socket gets its close code and
reason (or an HTTP 4xx), nothing partial is written, and the server goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from support.live_server import LiveServer
from support.redis_clients import data_keys
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.run.settings import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_HEADER_SIZE

DEADLINE = 10.0
MAX_MESSAGE = 1 << 20
MAX_HEADER = 64 * 1024
MAX_ENTRIES = 100
HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(
        redis_url=redis_server.url,
        max_message_size=MAX_MESSAGE,
        max_header_size=MAX_HEADER,
        max_entries_per_message=MAX_ENTRIES,
        handshake_timeout=HANDSHAKE_TIMEOUT,
    )
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def url(server: LiveServer, redis_url: str) -> str:
    return server.ws_url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def connect(url: str, **kw: Any) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None, **kw)


async def closed_with(ws: Any) -> tuple[int, str]:
    """Read until the server closes; its close code and reason (a close frame must come)."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        for _ in range(1000):
            await asyncio.wait_for(ws.recv(), DEADLINE)
    assert info.value.rcvd is not None, f"closed without a close frame: {info.value!r}"
    return info.value.rcvd.code, info.value.rcvd.reason


async def refused(url: str, *messages: Any) -> tuple[int, str]:
    """Send `messages` on a new socket (without waiting in between); the close."""
    async with connect(url) as ws:
        try:
            for message in messages:
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass  # closed before the rest was sent: its close frame is read below
        return await closed_with(ws)


async def push_ok(url: str, sid: str = "good") -> None:
    """The server still takes a push from another client."""
    async with connect(f"{url}/data/{sid}/push?ack=1") as ws:
        await ws.send("[2]")
        await ws.send(b"ok")
        assert len(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))) == 1


def no_sockets_left(server: LiveServer) -> None:
    connections = server.server.server_state.connections
    wait_until(lambda: not connections, DEADLINE, what="the server to drop every socket")


# -- the header -------------------------------------------------------------------------


async def test_lone_surrogate_in_a_header_is_1007(url: str, r: redis.Redis) -> None:
    # valid JSON, valid UTF-8 text: the escape makes a string no stream name can be
    for header in ('[["s\\ud800", 1]]', '[["s", "\\udfff", 1]]'):
        code, reason = await refused(f"{url}/data/s/push", header, b"x")
        assert (code, "lone surrogate" in reason) == (1007, True), reason
    # a proper surrogate pair is one character, and fine
    async with connect(f"{url}/data/s/push?ack=1") as ws:
        await ws.send('[["s\\ud83d\\ude00", 1]]')
        await ws.send(b"x")
        await asyncio.wait_for(ws.recv(), DEADLINE)
    assert data_keys(r) == ["s\U0001f600".encode()]


async def test_deeply_nested_header_is_1007(url: str, r: redis.Redis) -> None:
    depth = MAX_HEADER // 2 - 1  # deep enough (100,000 deep: the test of the defaults)
    code, reason = await refused(f"{url}/data/s/push", "[" * depth + "]" * depth, b"")
    assert (code, reason) == (1007, "header nests too deeply to be a push header")
    await push_ok(url)
    assert data_keys(r) == [b"good"]


async def test_empty_stream_name_in_a_header_is_1007(url: str, r: redis.Redis) -> None:
    code, reason = await refused(f"{url}/data/s/push", '[["s", 1], ["", 2]]', b"xy")
    assert code == 1007 and "empty" in reason, reason
    assert r.dbsize() == 0


def test_graphql_json_nested_too_deeply_is_bad_json(server: LiveServer) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    resp = httpx.post(
        server.http_url + "/graphql",
        content=deep,
        headers={"content-type": "application/json"},
        timeout=DEADLINE,
    )
    assert resp.status_code == 400, resp.text


async def test_graphql_websocket_message_nested_too_deeply_is_4400(url: str) -> None:
    async with connect(f"{url}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["type"] == "connection_ack"
        await ws.send("[" * 100_000 + "]" * 100_000)
        assert await closed_with(ws) == (4400, "WebSocket message must be valid JSON")


@pytest.mark.parametrize(
    ("path", "header", "words"),
    [
        ("/data/s/push", [0] * (MAX_ENTRIES + 1), "header of 101 entries"),
        ("/data/a+b/push", [0] * (MAX_ENTRIES // 2 + 1), "header of 102 entries"),
        ("/data/s/push", [["s", 0]] * (MAX_ENTRIES + 1), "header of 101 entries"),
    ],
)
async def test_too_many_entries_in_one_message_is_1009(
    url: str, r: redis.Redis, path: str, header: list[Any], words: str
) -> None:
    code, reason = await refused(url + path, json.dumps(header), b"")
    assert code == 1009 and words in reason and "max_entries_per_message" in reason, reason
    assert r.dbsize() == 0


async def test_as_many_entries_as_allowed_are_written(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?ack=1") as ws:
        await ws.send(json.dumps(list(range(1, MAX_ENTRIES + 1))))
        await ws.send(b"x" * MAX_ENTRIES)
        ids = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    assert len(ids) == MAX_ENTRIES == r.xlen("s")


async def test_oversize_header_before_its_payload_still_gets_1009(url: str, r: redis.Redis) -> None:
    """What a normal client does: header, then payload at once. The close frame
    reaches the client every time (the socket is not reset with its payload unread)."""
    header = json.dumps([0] * (MAX_HEADER // 2) + [MAX_MESSAGE])
    assert MAX_HEADER < len(header) < MAX_MESSAGE
    for _ in range(20):
        code, reason = await refused(f"{url}/data/s/push", header, b"x" * MAX_MESSAGE)
        assert code == 1009 and "max_header_size" in reason, reason
    assert r.dbsize() == 0
    await push_ok(url)


async def test_message_over_the_websocket_limit_still_gets_1009(
    server: LiveServer, url: str, r: redis.Redis
) -> None:
    """A message past ws_max_size is refused by the websocket layer itself, before the
    app sees it; the client still gets the close frame and its reason."""
    huge = "[" + " " * (2 * MAX_MESSAGE) + "1]"
    for _ in range(10):
        code, reason = await refused(f"{url}/data/s/push", huge, b"x" * MAX_MESSAGE)
        assert code == 1009 and "bytes" in reason, reason
    assert r.dbsize() == 0
    await push_ok(url)
    no_sockets_left(server)


async def test_a_megabyte_header_of_zeros_is_refused_by_default(
    redis_server: EmbeddedRedis, redis_url: str
) -> None:
    """The header that became 557,055 XADDs in one Lua call (Redis stalled for
    seconds) is refused by the default limits, before anything reaches Redis; so is
    a header nested 100,000 deep (it raised RecursionError, with no close frame)."""
    assert (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_HEADER_SIZE) == (1000, 256 * 1024)
    header = "[" + ",".join(["0"] * 557_055) + "]"
    zeros_limit = "[" + ",".join(["0"] * (DEFAULT_MAX_ENTRIES + 1)) + "]"
    with LiveServer(create_app(Settings(redis_url=redis_url))) as live:
        code, reason = await refused(f"{live.ws_url}/data/s/push", header, b"")
        assert code == 1009 and "max_header_size" in reason, reason
        code, reason = await refused(f"{live.ws_url}/data/s/push", zeros_limit, b"")
        assert code == 1009 and "max_entries_per_message" in reason, reason
        deep = "[" * 100_000 + "]" * 100_000
        code, reason = await refused(f"{live.ws_url}/data/s/push", deep, b"")
        assert (code, reason) == (1007, "header nests too deeply to be a push header")
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


# -- the handshake and the path ---------------------------------------------------------


def _handshake(path: bytes, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def _answer(server: LiveServer, request: bytes) -> bytes:
    """Everything the server sends back until it closes the socket."""
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("size", [16_000, 60_000])
def test_handshake_with_a_long_path_gets_414(server: LiveServer, size: int) -> None:
    path = b"/data/" + b"a" * size + b"/push"
    for _ in range(50):
        answer = _answer(server, _handshake(path))
        assert answer.startswith(b"HTTP/1.1 414 "), answer[:200]
    no_sockets_left(server)
    # REST refuses the same path the same way
    resp = httpx.get(server.http_url + path.decode(), timeout=DEADLINE)
    assert resp.status_code == 414 and "over the limit" in resp.json()["error"]


def test_handshake_with_a_long_header_line_gets_431(server: LiveServer) -> None:
    answer = _answer(server, _handshake(b"/data/s/push", b"X-Big: " + b"a" * 20_000 + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    many = b"".join(b"X-%d: a\r\n" % i for i in range(200))
    assert _answer(server, _handshake(b"/data/s/push", many)).startswith(b"HTTP/1.1 431 ")
    no_sockets_left(server)


def test_a_slow_request_head_gets_408(server: LiveServer) -> None:
    """Slowloris: a handshake (or request) sent a little at a time is cut off once the
    handshake timeout has passed, whatever still trickles in."""
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as sock:
        sock.sendall(_handshake(b"/data/s/push")[:40])  # then nothing more
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"not received within 2s" in answer
    with socket.create_connection((server.host, server.port), timeout=DEADLINE) as sock:
        answer = sock.recv(65536)  # a connection that never sends a byte: closed, silently
    assert answer == b""
    no_sockets_left(server)


@pytest.mark.parametrize("escape", ["%FF", "%FE", "a%C3", "%ED%A0%80"])
async def test_path_that_is_not_utf8_is_refused(
    server: LiveServer, url: str, r: redis.Redis, escape: str
) -> None:
    for kind in ("push", "pull"):
        code, reason = await refused(f"{url}/data/{escape}/{kind}", "[1]", b"x")
        assert code == 1007 and "path is not valid UTF-8" in reason, reason
    http = server.http_url
    for resp in (
        httpx.get(f"{http}/data/{escape}", timeout=DEADLINE),
        httpx.post(f"{http}/data/{escape}", content=b"x", timeout=DEADLINE),
        httpx.get(f"{http}/data/s?last_entry_id={escape}", timeout=DEADLINE),
    ):
        assert resp.status_code == 400 and "not valid UTF-8" in resp.json()["error"], resp.text
    assert r.dbsize() == 0
    # percent-escaped UTF-8 is a stream name like any other
    await push_ok(url, "%C3%A9t%C3%A9")
    assert data_keys(r) == ["été".encode()]


# -- frames -----------------------------------------------------------------------------


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _open(server: LiveServer, path: str) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=DEADLINE)
    sock.sendall(_handshake(path.encode()))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    return sock


def _close_code(sock: socket.socket) -> tuple[int, bytes]:
    """Read server frames up to its close frame: (code, reason)."""
    data = b""
    while True:
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            chunk = sock.recv(65536)
            assert chunk, f"closed without a close frame (read {data[:100]!r})"
            data += chunk
        n = data[1] & 0x7F
        assert n < 126, "a long server frame before the close"
        opcode, body, data = data[0] & 0x0F, data[2 : 2 + n], data[2 + n :]
        if opcode == 0x8:
            return int.from_bytes(body[:2], "big"), body[2:]


def test_invalid_utf8_in_a_text_frame_is_1007(server: LiveServer, r: redis.Redis) -> None:
    with _open(server, "/data/s/push") as sock:
        sock.sendall(_frame(0x1, b"[1\xff]") + _frame(0x2, b"x"))
        code, _ = _close_code(sock)
    assert code == 1007
    assert r.dbsize() == 0


def test_client_gone_mid_message_writes_nothing(server: LiveServer, r: redis.Redis) -> None:
    # the payload's first fragment, then gone
    with _open(server, "/data/s/push") as sock:
        sock.sendall(_frame(0x1, b"[6]") + _frame(0x2, b"abc", fin=False))
    # a header announcing 100 KB, 10 of them sent, then gone
    with _open(server, "/data/s/push") as sock:
        sock.sendall(_frame(0x1, b"[100000]") + _frame(0x2, b"x" * 100_000)[:10_000])
    no_sockets_left(server)
    assert r.dbsize() == 0


def test_pings_without_reading_their_pongs_are_closed_with_1008(server: LiveServer) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the window opens
    sock.settimeout(DEADLINE)
    with sock:
        sock.connect((server.host, server.port))
        sock.sendall(_handshake(b"/data/s/pull?block=0"))
        while b"\r\n\r\n" not in sock.recv(4096, socket.MSG_PEEK):
            pass
        head = sock.recv(4096, socket.MSG_PEEK)
        sock.recv(head.index(b"\r\n\r\n") + 4)
        # 13 MB of pongs, if all were queued: more than the kernel's buffers hold
        sock.settimeout(2.0)
        with contextlib.suppress(TimeoutError):  # the server stops reading once it closes
            sock.sendall(_frame(0x9, b"p" * 125) * 100_000)
        sock.settimeout(DEADLINE)
        code, reason = _close_code(sock)  # the pongs queued before the bound, then this
    assert (code, reason) == (1008, b"pings sent faster than their pongs are read")
