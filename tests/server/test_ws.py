"""WS /data/{sid}/push and /pull against the app under uvicorn and a real Redis.

The Redis Streamer README's send and receive snippets run as written (only the address is the
test server's); then multi-stream, latest, header=0, ack, block, count, ids, atomic
messages, every bad input with its close code (and nothing partial in Redis), a
client killed mid-frame, and an idle pull outliving the Redis client's socket timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets
from support.live_server import LiveServer, url_fixture  # noqa: F401
from support.redis_clients import blocked_xreads, data_keys
from support.streamer_snippets import RECEIVE_SNIPPET, SEND_SNIPPET, load_snippet
from support.waiting import wait_until
from websockets.frames import Frame, Opcode

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.edge.uvicorn_guard import frame_head

SOCKET_TIMEOUT = 1.0  # the server's Redis client socket_timeout, far below `block`
MAX_MESSAGE = 1 << 20
DEADLINE = 10.0
CLIENT_NAME = "fastredis-ws-tests"  # the server's Redis connections, in CLIENT LIST


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(
        redis_url=redis_server.url,
        max_message_size=MAX_MESSAGE,
        maxlen=100_000,  # no trimming in these tests (test_push_trims has its own server)
        redis_params={"socket_timeout": SOCKET_TIMEOUT, "client_name": CLIENT_NAME},
    )
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def connect(url: str, **kw: Any) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None, **kw)


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), DEADLINE)


async def recv_batch(ws: Any) -> tuple[list[Any], bytes]:
    header = json.loads(await recv(ws))
    data = await recv(ws)
    assert isinstance(data, bytes)
    return header, data


def split(header: list[Any], entries: bytes) -> list[tuple[str, str, bytes]]:
    """The README's slicing of a pull batch."""
    sids, ts, offsets = tuple(zip(*header)) or ((),) * 3  # noqa: B905 (as the README)
    return [
        (sid, t, entries[start:end])
        for sid, t, start, end in zip(sids, ts, offsets, offsets[1:] + (None,))  # noqa: B905, RUF005
    ]


async def push(url: str, sid: str, *payloads: bytes) -> list[str]:
    """Push one message of `payloads` with ack; the new ids."""
    async with connect(f"{url}/data/{sid}/push?ack=1") as ws:
        ends, total = [], 0
        for p in payloads:
            total += len(p)
            ends.append(total)
        await ws.send(json.dumps(ends))
        await ws.send(b"".join(payloads))
        return json.loads(await recv(ws))


async def closed_with(ws: Any) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        for _ in range(1000):
            await recv(ws)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def blocked_readers(r: redis.Redis) -> int:
    """Pulls of the module's server parked in a blocking XREAD."""
    return blocked_xreads(r, CLIENT_NAME)


@pytest.fixture(autouse=True)
def _no_pull_left(r: redis.Redis) -> None:
    """The pulls of the test before have ended their reads (closing a pull does)."""
    try:
        wait_until(lambda: blocked_readers(r) == 0, DEADLINE, what="earlier pulls to end")
    except AssertionError:
        mine = [c for c in r.client_list() if c.get("name") == CLIENT_NAME]
        raise AssertionError(f"blocked pulls left: {mine}") from None


async def until_blocked(r: redis.Redis, n: int = 1) -> None:
    """Wait until `n` pulls are parked in a blocking XREAD (so their cursors are set)."""
    deadline = time.monotonic() + DEADLINE
    while blocked_readers(r) < n:
        assert time.monotonic() < deadline, "the pull never reached its blocking XREAD"
        await asyncio.sleep(0.01)


# -- the Redis Streamer README's snippets, as written (host:port aside) ---------------------------


async def test_readme_send_and_receive_snippets(
    server: LiveServer, url: str, r: redis.Redis
) -> None:
    received: list[tuple[str, str, bytes]] = []
    payload = {"frame": 1, "pixels": base64.b64encode(os.urandom(300)).decode()}
    send = load_snippet(
        SEND_SNIPPET,
        server,
        generate_some_data=lambda: payload,
        serialize_bytes=lambda d: json.dumps(d).encode(),
    )["send_data"]
    receive = load_snippet(
        RECEIVE_SNIPPET,
        server,
        do_something_with_data=lambda sid, t, data: received.append((sid, t, data)),
    )["receive_data"]

    receiving = asyncio.ensure_future(receive("glf"))
    await until_blocked(r)  # the pull's `$` is fixed before anything is sent
    await send("glf")
    await asyncio.wait_for(receiving, DEADLINE)

    [(sid, t, data)] = received
    assert sid == "glf"
    assert json.loads(data) == payload
    assert [(t.encode(), {b"d": data})] == r.xrange("glf")


async def test_receive_snippet_slices_several_entries(
    server: LiveServer, url: str, r: redis.Redis
) -> None:
    """The pull header carries start offsets: the README's slicing is right."""
    received: list[tuple[str, str, bytes]] = []
    receive = load_snippet(
        RECEIVE_SNIPPET,
        server,
        do_something_with_data=lambda sid, t, data: received.append((sid, t, data)),
    )["receive_data"]
    receiving = asyncio.ensure_future(receive("a+b"))
    await until_blocked(r)
    ids = await push(url, "a+b", b"one", b"", b"three")  # each entry to both streams
    await asyncio.wait_for(receiving, DEADLINE)
    assert len(ids) == 6
    got = sorted((sid, data) for sid, _, data in received)
    # the first XREAD to wake up may hold one stream or both: whatever it holds is whole
    assert got and set(got) <= {(s, d) for s in "ab" for d in (b"one", b"", b"three")}


# -- push ---------------------------------------------------------------------------


async def test_push_forms_and_ack(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/a+b/push?ack=1") as ws:
        await ws.send(json.dumps([2, 5]))  # every entry to each stream of the path
        await ws.send(b"xxyyy")
        ids = json.loads(await recv(ws))
        assert len(ids) == 4
        await ws.send(json.dumps([["c", 1], ["a", 3]]))  # [sid, end]
        await ws.send(b"zww")
        ids2 = json.loads(await recv(ws))
        await ws.send(json.dumps([["d", "7-1", 1], ["d", "7-2", 2], ["d", "8", 3]]))
        await ws.send(b"123")
        assert json.loads(await recv(ws)) == ["7-1", "7-2", "8-0"]
        await ws.send("[]")  # an empty message: nothing written, still answered in order
        await ws.send(b"")
        assert json.loads(await recv(ws)) == []
    assert [e[1][b"d"] for e in r.xrange("a")] == [b"xx", b"yyy", b"ww"]
    assert [e[1][b"d"] for e in r.xrange("b")] == [b"xx", b"yyy"]
    assert [e[1][b"d"] for e in r.xrange("c")] == [b"z"]
    assert ids2 == [r.xrange("c")[0][0].decode(), r.xrange("a")[-1][0].decode()]
    assert [i.decode() for i, _ in r.xrange("a")[:2]] == [ids[0], ids[2]]


async def test_push_header_0(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?header=0&ack=1") as ws:
        for data in (b"first", b"", b"third"):
            await ws.send(data)
            assert len(json.loads(await recv(ws))) == 1
    assert [e[1][b"d"] for e in r.xrange("s")] == [b"first", b"", b"third"]


async def test_push_is_pipelined_and_ordered(url: str, r: redis.Redis) -> None:
    n = 3000
    async with connect(f"{url}/data/s/push") as ws:
        for i in range(n):
            data = str(i).encode()
            await ws.send(json.dumps([len(data)]))
            await ws.send(data)
    # closing does not lose what was sent: the server writes all it received in full
    wait_until(lambda: r.xlen("s") == n, DEADLINE, what=f"{n} entries")
    assert [int(e[1][b"d"]) for e in r.xrange("s")] == list(range(n))


async def test_push_trims_approximately(redis_server: EmbeddedRedis, r: redis.Redis) -> None:
    r.flushall()
    app = create_app(Settings(redis_url=redis_server.url, maxlen=100))
    with LiveServer(app) as live:
        async with connect(f"{live.ws_url}/data/s/push?header=0") as ws:
            for _ in range(2000):
                await ws.send(b"x")
        wait_until(lambda: r.exists("s") and r.xinfo_stream("s")["entries-added"] == 2000, DEADLINE)
    assert 100 <= r.xlen("s") < 2000


async def test_message_entries_are_written_all_or_none(url: str, r: redis.Redis) -> None:
    r.set("text", "not a stream")
    async with connect(f"{url}/data/s/push") as ws:
        await ws.send(json.dumps([["s", 2], ["text", 4]]))
        await ws.send(b"okno")
        code, reason = await closed_with(ws)
    assert (code, reason) == (1008, "stream 'text' holds a string, not a stream; nothing written")
    assert not r.exists("s")

    r.xadd("t", {"d": "old"}, id="100-0")
    for header in (
        [["t", "200-0", 1], ["t", "50-0", 2]],  # the second id is below the first
        [["t", "300-0", 1], ["t", "300-0", 2]],  # the same id twice
        [["t", "90-0", 1], ["t", "400-0", 2]],  # below the stream's last id
        [["t", 1], ["t", "500-0", 2]],  # an explicit id after a * id of the same stream
    ):
        async with connect(f"{url}/data/t/push") as ws:
            await ws.send(json.dumps(header))
            await ws.send(b"ab")
            code, reason = await closed_with(ws)
        # refused by the frame check (1007) or by Redis before writing (1008)
        assert code in (1007, 1008), reason
        assert r.xlen("t") == 1
    assert r.xinfo_stream("t")["last-generated-id"] == b"100-0"


# -- pull ---------------------------------------------------------------------------


async def test_pull_count_and_last_entry_id(url: str, r: redis.Redis) -> None:
    ids = [r.xadd("s", {"d": str(i)}).decode() for i in range(5)]
    async with connect(f"{url}/data/s/pull?last_entry_id=0&count=2") as ws:
        batches = [await recv_batch(ws) for _ in range(3)]
    entries = [e for h, d in batches for e in split(h, d)]
    assert [len(h) for h, _ in batches] == [2, 2, 1]
    assert entries == [("s", ids[i], str(i).encode()) for i in range(5)]
    async with connect(f"{url}/data/s/pull?last_entry_id={ids[2]}&count=10") as ws:
        header, data = await recv_batch(ws)
    assert [(t, d) for _, t, d in split(header, data)] == [(ids[3], b"3"), (ids[4], b"4")]


async def test_pull_batches_hold_count_entries(url: str, r: redis.Redis) -> None:
    """The server reads ahead from Redis, but every batch holds at most `count`."""
    ids = [r.xadd("s", {"d": f"entry-{i}" * (i % 3)}).decode() for i in range(200)]
    for count in (1, 3):
        async with connect(f"{url}/data/s/pull?last_entry_id=0&count={count}") as ws:
            got: list[tuple[str, str, bytes]] = []
            while len(got) < 200:
                header, data = await recv_batch(ws)
                assert 1 <= len(header) <= count
                got += split(header, data)
        assert got == [("s", ids[i], (f"entry-{i}" * (i % 3)).encode()) for i in range(200)]
    async with connect(f"{url}/data/s/pull?last_entry_id=0&header=0&ack=1&count=2") as ws:
        assert [await recv(ws), await recv(ws)] == [b"", b"entry-1"]
        with pytest.raises(asyncio.TimeoutError):  # the rest of the read waits for the ack
            await asyncio.wait_for(ws.recv(), 0.3)
        await ws.send("ok")
        assert [await recv(ws), await recv(ws)] == [b"entry-2entry-2", b""]


async def test_large_pull_payloads_arrive_whole_with_pings_between(
    url: str, r: redis.Redis
) -> None:
    """Payloads at each frame-length boundary, and past the size the server writes as
    frame head + payload: every byte arrives, and pings sent meanwhile get their pongs."""
    sizes = [125, 126, 65535, 65536, 65537, 1 << 20, 3 << 20]
    payloads = [os.urandom(n) for n in sizes]
    ids = [r.xadd("big", {"d": p}).decode() for p in payloads]
    for count in (1, 3):
        async with connect(f"{url}/data/big/pull?last_entry_id=0&count={count}") as ws:
            got: list[tuple[str, str, bytes]] = []
            while len(got) < len(sizes):
                pong = await ws.ping()  # answered between the server's data frames
                got += split(*await recv_batch(ws))
                await asyncio.wait_for(pong, DEADLINE)
        assert [(t, len(d)) for _, t, d in got] == list(zip(ids, sizes, strict=True))
        assert [d for _, _, d in got] == payloads


async def test_large_frames_at_the_tail_arrive_whole_and_keep_the_pull_alive(
    url: str, r: redis.Redis
) -> None:
    """Pulls waiting at the tail (their frames go out from the hub's read, not their
    own task): every large entry arrives whole, in order, header included (start or
    end offsets, or none), and frames sent that way count as activity for `block`: no
    empty batch while entries come more often than that."""
    queries = ["block=400", "block=400&offsets=end", "block=400&header=0"]
    async with contextlib.AsyncExitStack() as stack:
        pulls = [
            await stack.enter_async_context(connect(f"{url}/data/tail/pull?{q}")) for q in queries
        ]
        await until_blocked(r)
        async with connect(f"{url}/data/tail/push?ack=1") as pusher:
            for i in range(8):
                payload = bytes([i]) * (100_000 + i)
                await pusher.send(json.dumps([len(payload)]))
                await pusher.send(payload)
                (eid,) = json.loads(await recv(pusher))
                start, end = await recv(pulls[0]), await recv(pulls[1])
                assert json.loads(start) == [["tail", eid, 0]]
                assert json.loads(end) == [["tail", eid, len(payload)]]
                assert [await recv(ws) for ws in pulls] == [payload] * 3
                await asyncio.sleep(0.1)  # 8 x 0.1 s: longer than block, never idle that long


def _first_binary_frame(host: str, port: int, path: str) -> tuple[int, bytes]:
    """A raw client asking for permessage-deflate: the first binary frame's first
    byte (FIN, RSV1 = compressed, opcode) and its payload as sent."""
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
            "\r\n".encode()
        )
        stream = sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += stream.read(1)
        assert b" 101 " in head.split(b"\r\n")[0] and b"permessage-deflate" in head, head
        while True:
            first, second = stream.read(2)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(stream.read(2), "big")
            elif size == 127:
                size = int.from_bytes(stream.read(8), "big")
            data = stream.read(size)
            if first & 0x0F == 0x2:  # binary
                return first, data


def test_large_pull_payloads_are_compressed_when_permessage_deflate_is_on(
    redis_server: EmbeddedRedis, r: redis.Redis
) -> None:
    """The server never offers compression, but run with it on, a large payload goes
    through websockets' own (compressing) frames, not the uncopied head + payload."""
    payload = b"\x00" * 500_000
    r.xadd("deflate", {"d": payload})
    app = create_app(Settings(redis_url=redis_server.url))
    with LiveServer(app, ws_per_message_deflate=True) as live:
        first, data = _first_binary_frame(
            live.host, live.port, "/data/deflate/pull?last_entry_id=0"
        )
    assert first & 0x40, "not compressed"  # RSV1: a permessage-deflate message
    assert len(data) < 10_000
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(data + b"\x00\x00\xff\xff") == payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 65537, 200_000])
@pytest.mark.parametrize(("opcode", "first"), [(Opcode.BINARY, 0x82), (Opcode.TEXT, 0x81)])
def test_direct_frame_head_is_the_one_websockets_writes(
    size: int, opcode: Opcode, first: int
) -> None:
    data = os.urandom(size) if opcode is Opcode.BINARY else b"a" * size
    expected = Frame(opcode, data).serialize(mask=False, extensions=[])
    assert frame_head(first, size) + data == expected


async def test_pull_compares_ids_as_numbers(url: str, r: redis.Redis) -> None:
    """'5-9' < '5-10': an entry after 5-9 is delivered exactly once."""
    r.xadd("s", {"d": "a"}, id="5-9")
    r.xadd("s", {"d": "b"}, id="5-10")
    async with connect(f"{url}/data/s/pull?last_entry_id=5-9&count=1&block=300") as ws:
        assert split(*await recv_batch(ws)) == [("s", "5-10", b"b")]
        assert await recv_batch(ws) == ([], b"")  # nothing more: an empty batch


async def test_pull_multi_stream(url: str, r: redis.Redis) -> None:
    r.xadd("a", {"d": "a1"})
    r.xadd("b", {"d": "b1"})
    r.xadd("a", {"d": "a2"})
    async with connect(f"{url}/data/a+b/pull?last_entry_id=0&count=10") as ws:
        header, data = await recv_batch(ws)
        got = [(sid, d) for sid, _, d in split(header, data)]
        assert got == [("a", b"a1"), ("a", b"a2"), ("b", b"b1")]
        await until_blocked(r)
        await push(url, "b", b"b2")
        assert [(s, d) for s, _, d in split(*await recv_batch(ws))] == [("b", b"b2")]
    # one start per stream, joined by '+' (%2B; a '+' that became a space works too)
    first_a = r.xrange("a")[0][0].decode()
    async with connect(f"{url}/data/a+b/pull?last_entry_id={first_a}%2B0&count=10") as ws:
        header, data = await recv_batch(ws)
    assert [(s, d) for s, _, d in split(header, data)] == [
        ("a", b"a2"),
        ("b", b"b1"),
        ("b", b"b2"),
    ]


async def test_pull_dollar_misses_nothing_between_reads(url: str, r: redis.Redis) -> None:
    r.xadd("s", {"d": "before"})
    async with connect(f"{url}/data/s/pull?block=100") as ws:
        await until_blocked(r)
        assert await recv_batch(ws) == ([], b"")  # the block ran out
        # entries added while no XREAD is waiting are still delivered
        r.xadd("s", {"d": "x1"})
        r.xadd("s", {"d": "x2"})
        got: list[bytes] = []
        while len(got) < 2:
            got += [d for _, _, d in split(*await recv_batch(ws))]
    assert got == [b"x1", b"x2"]


async def test_pull_star_starts_with_the_newest(url: str, r: redis.Redis) -> None:
    for i in range(5):
        r.xadd("s", {"d": str(i)})
    async with connect(f"{url}/data/s/pull?last_entry_id=*&count=2") as ws:
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"3", b"4"]


async def test_pull_latest_drops_frames(url: str, r: redis.Redis) -> None:
    for i in range(50):
        r.xadd("s", {"d": str(i)})
    async with connect(f"{url}/data/s/pull?last_entry_id=0&latest=1&ack=1") as ws:
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"49"]
        for i in range(50, 100):  # the puller is slow: it has not acked yet
            r.xadd("s", {"d": str(i)})
        await ws.send("next")
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"99"]
        await ws.send("next")
        await until_blocked(r)
        r.xadd("s", {"d": "100"})
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"100"]


async def test_pull_latest_multi_stream_count(url: str, r: redis.Redis) -> None:
    for i in range(10):
        r.xadd("a", {"d": f"a{i}"})
        r.xadd("b", {"d": f"b{i}"})
    async with connect(f"{url}/data/a+b/pull?last_entry_id=0&latest=1&count=3") as ws:
        header, data = await recv_batch(ws)
    assert [(s, d) for s, _, d in split(header, data)] == [
        ("a", b"a7"),
        ("a", b"a8"),
        ("a", b"a9"),
        ("b", b"b7"),
        ("b", b"b8"),
        ("b", b"b9"),
    ]


async def test_pull_header_0(url: str, r: redis.Redis) -> None:
    for data in (b"one", b"", b"three"):
        r.xadd("s", {"d": data})
    async with connect(f"{url}/data/s/pull?last_entry_id=0&count=10&header=0&block=200") as ws:
        got = [await recv(ws) for _ in range(3)]
        assert got == [b"one", b"", b"three"]
        # an empty batch sends nothing with header=0: the next message is the next entry
        await asyncio.sleep(0.3)  # let one block run out
        r.xadd("s", {"d": "four"})
        assert await recv(ws) == b"four"


async def test_pull_ack_waits_for_the_client(url: str, r: redis.Redis) -> None:
    for i in range(3):
        r.xadd("s", {"d": str(i)})
    async with connect(f"{url}/data/s/pull?last_entry_id=0&ack=1") as ws:
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"0"]
        with pytest.raises(asyncio.TimeoutError):  # nothing until we ack
            await asyncio.wait_for(ws.recv(), 0.5)
        await ws.send("ok")
        assert [d for _, _, d in split(*await recv_batch(ws))] == [b"1"]
        await ws.send(b"binary")  # an ack must be text
        code, reason = await closed_with(ws)
    assert code == 1003 and "ack" in reason


async def test_pull_ack_flood_is_refused(url: str) -> None:
    async with connect(f"{url}/data/nothing/pull?ack=1&block=0") as ws:
        for _ in range(200):
            await ws.send("ack")
        code, reason = await closed_with(ws)
    assert code == 1008 and "acks" in reason


async def test_pull_block_sends_empty_batches(url: str) -> None:
    async with connect(f"{url}/data/nothing/pull?block=200") as ws:
        start = time.monotonic()
        assert await recv_batch(ws) == ([], b"")
        assert await recv_batch(ws) == ([], b"")
        assert time.monotonic() - start >= 0.35


async def test_pull_max_fps(url: str, r: redis.Redis) -> None:
    for i in range(6):
        r.xadd("s", {"d": str(i)})
    async with connect(f"{url}/data/s/pull?last_entry_id=0&max_fps=20") as ws:
        start = time.monotonic()
        got = [split(*await recv_batch(ws))[0][2] for _ in range(6)]
        elapsed = time.monotonic() - start
    assert got == [str(i).encode() for i in range(6)]
    assert elapsed >= 5 / 20 * 0.9


async def test_idle_pull_outlives_the_redis_socket_timeout(url: str, r: redis.Redis) -> None:
    """The server's Redis client has socket_timeout=1 s; pulls block far longer (both
    pulls share one blocking read)."""
    block_ms = int(SOCKET_TIMEOUT * 2500)
    async with (
        connect(f"{url}/data/idle/pull?block={block_ms}") as timed,
        connect(f"{url}/data/idle/pull?block=0") as forever,
    ):
        await until_blocked(r, 1)
        start = time.monotonic()
        assert await recv_batch(timed) == ([], b"")  # the block ran out, not the socket
        assert time.monotonic() - start >= SOCKET_TIMEOUT * 2
        await until_blocked(r, 1)
        await asyncio.sleep(SOCKET_TIMEOUT)  # `forever` has now waited > 3 socket timeouts
        await push(url, "idle", b"late")
        assert [d for _, _, d in split(*await recv_batch(timed))] == [b"late"]
        assert [d for _, _, d in split(*await recv_batch(forever))] == [b"late"]


async def test_closing_a_pull_ends_its_blocking_read(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/pull?block=0"):
        await until_blocked(r)
    wait_until(lambda: blocked_readers(r) == 0, DEADLINE, what="the XREAD to end")


async def test_closing_pulls_never_leaves_a_read_running(url: str, r: redis.Redis) -> None:
    """Closing just as the next read is on its way to Redis (a race that once let a
    pull go on reading for its departed client) ends the pull every time."""
    for i in range(40):
        sid = f"s{i}"
        r.xadd(sid, {"d": "first"})
        async with connect(f"{url}/data/{sid}/pull?last_entry_id=0&header=0&block=200") as ws:
            assert await recv(ws) == b"first"
            r.xadd(sid, {"d": "second"})
            assert await recv(ws) == b"second"
        wait_until(lambda: blocked_readers(r) == 0, 2.0, what="the pull's read to end")


async def test_pull_of_a_key_that_is_not_a_stream(url: str, r: redis.Redis) -> None:
    r.set("text", "x")
    async with connect(f"{url}/data/text/pull") as ws:
        code, reason = await closed_with(ws)
    assert (code, reason) == (1008, "stream 'text' holds a string, not a stream")


# -- bad input: the socket is closed with a code and a reason, nothing partial -----------


@pytest.mark.parametrize(
    ("messages", "code", "words"),
    [
        (["not json", b"abc"], 1007, "JSON"),
        (["[4]", b"abc"], 1007, "header"),  # the end offset is past the payload
        (["[1, 3]", b"abcdef"], 1007, "header"),  # the last offset is not the length
        (["[2, 1, 3]", b"abc"], 1007, "header"),  # offsets going back
        (['["x"]', b"abc"], 1007, "header"),
        (['[["s", "not-an-id", 3]]', b"abc"], 1007, "id"),
        ([b"abc"], 1003, "header"),  # binary where the header belongs
        (["[3]", "abc"], 1003, "binary"),  # text where the payload belongs
        (["[3]", b"x" * (MAX_MESSAGE + 1)], 1009, "limit"),
    ],
)
async def test_bad_push_input(
    url: str, r: redis.Redis, messages: list[Any], code: int, words: str
) -> None:
    async with connect(f"{url}/data/good/push?ack=1") as good:
        async with connect(f"{url}/data/s/push") as ws:
            for message in messages:
                await ws.send(message)
            got_code, reason = await closed_with(ws)
        assert (got_code, words.lower() in reason.lower()) == (code, True), reason
        # the other client goes on
        await good.send("[2]")
        await good.send(b"ok")
        assert len(json.loads(await recv(good))) == 1
    assert data_keys(r) == [b"good"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/data/s/push?bogus=1", "unknown query parameter"),
        ("/data/s/push?ack=maybe", "boolean"),
        ("/data/s/push?header=1&header=0", "twice"),
        ("/data/a++b/push", "empty name"),
        ("/data/a+a/push", "twice"),
        ("/data/s/pull?count=0", "range"),
        ("/data/s/pull?count=ten", "integer"),
        ("/data/s/pull?block=-1", "range"),
        ("/data/s/pull?last_entry_id=yesterday", "last_entry_id"),
        ("/data/a+b/pull?last_entry_id=0%2B0%2B0", "3 ids for 2 streams"),
        ("/data/s/pull?max_fps=fast", "number"),
        ("/data/s/pull?latests=1", "unknown query parameter"),
    ],
)
async def test_bad_query_closes_with_1008(url: str, r: redis.Redis, path: str, words: str) -> None:
    async with connect(url + path) as ws:
        code, reason = await closed_with(ws)
    assert code == 1008 and words in reason, reason
    assert r.dbsize() == 0


def _raw_handshake(host: str, port: int, path: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=DEADLINE)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payload < 64 KiB)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_client_killed_mid_frame_leaves_nothing(
    server: LiveServer, url: str, r: redis.Redis
) -> None:
    # header sent, then gone
    sock = _raw_handshake(server.host, server.port, "/data/s/push")
    sock.sendall(_frame(0x1, b"[5]"))
    sock.close()
    # header and half of the payload frame, then gone
    sock = _raw_handshake(server.host, server.port, "/data/s/push")
    frame = _frame(0x2, b"hello")
    sock.sendall(_frame(0x1, b"[5]") + frame[: len(frame) - 2])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    # the server goes on; the stream holds only what was sent in full
    assert len(await push(url, "s", b"whole")) == 1
    connections = server.server.server_state.connections
    wait_until(lambda: not connections, DEADLINE, what="the server to drop the sockets")
    assert [e[1][b"d"] for e in r.xrange("s")] == [b"whole"]
    assert data_keys(r) == [b"s"]
