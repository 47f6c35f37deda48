"""The shared-read hub: one Redis read per batch however many pullers, the hand-over
from catching up to the shared read, bounded queues, and abandoned waits released."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from support.live_server import LiveServer, url_fixture  # noqa: F401
from support.redis_clients import blocked_xreads, connections_named
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.reads import hub as hub_module
from fastredis.server.reads.hub import QUEUE_LIMIT, Hub
from fastredis.server.run import metrics

DEADLINE = 15.0
MAX_HUB_CONNECTIONS = 32  # Redis connections idle pulls may add, however many they are
CLIENT_NAME = "fastredis-hub-tests"  # also the `hub` fixture's (conftest)


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_server.url, redis_params={"client_name": CLIENT_NAME})
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def xread_calls(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def blocked_reads(r: redis.Redis) -> int:
    return blocked_xreads(r, CLIENT_NAME)


def connect(url: str) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None)


async def recv_entries(ws: Any) -> list[tuple[str, bytes]]:
    """One pull batch as (id, payload) pairs."""
    header = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    data = await asyncio.wait_for(ws.recv(), DEADLINE)
    ends = [h[2] for h in header[1:]] + [len(data)]
    return [(h[1], data[h[2] : end]) for h, end in zip(header, ends, strict=True)]


async def test_many_pullers_share_one_read_per_batch(url: str, r: redis.Redis) -> None:
    """N pullers at the tail: Redis sees about one XREAD per pushed entry, not N."""
    n, k = 30, 10
    async with contextlib_pulls(url, "fan", n) as pulls:
        r.xadd("fan", {"d": b"warm-up"})
        for ws in pulls:  # every puller is at the tail now
            assert [p for _, p in await recv_entries(ws)] == [b"warm-up"]
        before = xread_calls(r)
        for i in range(k):
            r.xadd("fan", {"d": str(i).encode()})
            for ws in pulls:
                assert [p for _, p in await recv_entries(ws)] == [str(i).encode()]
        calls = xread_calls(r) - before
    # about one read per entry (a few more when the shared read came back empty, parked
    # and was woken); one read per puller would be n * k = 300
    assert calls <= n * k // 4, calls


class contextlib_pulls:
    """`n` websocket pulls of `sid` from `$`, opened and closed together."""

    def __init__(self, url: str, sid: str, n: int, query: str = "block=0") -> None:
        self.urls = [f"{url}/data/{sid}/pull?{query}"] * n
        self.sockets: list[Any] = []

    async def __aenter__(self) -> list[Any]:
        self.sockets = [await connect(u).__aenter__() for u in self.urls]
        return self.sockets

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets))


@pytest.mark.parametrize("count", [1, 7])
async def test_catching_up_hands_over_without_gap_or_repeat(
    url: str, r: redis.Redis, count: int
) -> None:
    """A puller from 0 catches up while entries keep coming and a tail puller keeps
    the shared read going; it then joins the shared read: every entry once, in order."""
    for i in range(300):
        r.xadd("hand", {"d": f"{i}".encode()})
    total = 600

    async def produce() -> None:
        for i in range(300, total):
            r.xadd("hand", {"d": f"{i}".encode()})
            if i % 10 == 0:
                await asyncio.sleep(0.005)  # entries arrive during the catch-up

    async with (
        connect(f"{url}/data/hand/pull?block=0") as tail,
        connect(f"{url}/data/hand/pull?last_entry_id=0&count={count}&block=0") as late,
    ):
        producer = asyncio.get_running_loop().create_task(produce())
        got: list[bytes] = []
        while len(got) < total:
            batch = await recv_entries(late)
            assert 1 <= len(batch) <= count
            got += [p for _, p in batch]
        await producer
        seen_by_tail: list[bytes] = []
        while not seen_by_tail or seen_by_tail[-1] != str(total - 1).encode():
            seen_by_tail += [p for _, p in await recv_entries(tail)]
    assert got == [str(i).encode() for i in range(total)]


async def test_a_slow_subscriber_has_a_bounded_queue_and_loses_nothing(
    hub: Hub, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "TAIL_ENTRIES", 1)  # one entry per shared delivery
    r.xadd("slow", {"d": b"first"})
    fast = hub.subscribe(["slow"], ["$"], read_ahead=False)
    slow = hub.subscribe(["slow"], ["$"], read_ahead=False)
    newest = hub.subscribe(["slow"], ["$"], latest=True)
    async with fast, slow, newest:
        for sub in (fast, slow, newest):  # each reaches the tail and joins the shared read
            assert await sub.next(timeout=0.2) is None
        ids = [r.xadd("slow", {"d": str(i).encode()}).decode() for i in range(3 * QUEUE_LIMIT)]
        for eid in ids:
            delivery = await fast.next(timeout=DEADLINE)
            assert delivery is not None
            assert [e[1] for e in delivery.batch] == [eid.encode()]
        assert slow.group is None  # it left the shared read
        group = hub.groups[fast.key]
        assert len(group.history) <= 2  # kept for `fast` and the newest only
        # `latest`: the newest entry only
        delivery = await newest.next(timeout=DEADLINE)
        assert delivery is not None and [e[1] for e in delivery.batch] == [ids[-1].encode()]
        # the slow one fell back to reading by its own cursor: every entry, in order
        got = []
        while len(got) < len(ids):
            delivery = await slow.next(timeout=DEADLINE)
            assert delivery is not None
            got += [e[1].decode() for e in delivery.batch]
        assert got == ids
        # caught up, it is back on the shared read: later entries come once, in order
        more = [r.xadd("slow", {"d": b"more"}).decode() for _ in range(3)]
        while len(got) < len(ids) + len(more):
            delivery = await slow.next(timeout=DEADLINE)
            assert delivery is not None
            got += [e[1].decode() for e in delivery.batch]
        assert got == ids + more
        assert slow.joined


async def test_subscribers_behind_at_one_cursor_share_their_catch_up_reads(
    hub: Hub, r: redis.Redis
) -> None:
    """Viewers that start behind together read each batch from Redis once between them
    (each reads by itself only the first time), and each gets every entry, in order."""
    payloads = [i.to_bytes(4, "big") * 25_000 for i in range(120)]  # 100 KB each
    pipe = r.pipeline()
    for p in payloads:
        pipe.xadd("behind", {"d": p})
    pipe.execute()
    n = 20
    subs = [hub.subscribe(["behind"], ["0"]) for _ in range(n)]

    async def read_all(sub: Any) -> list[bytes]:
        got: list[bytes] = []
        async with sub:
            while len(got) < len(payloads):
                delivery = await sub.next(timeout=DEADLINE)
                assert delivery is not None
                got += [bytes(p) for _, ps in sub.frames(delivery, header=False) for p in ps]
        return got

    before = xread_calls(r)
    shared_before = metrics.COUNTS.stream_reads["shared"]
    results = await asyncio.gather(*(read_all(sub) for sub in subs))
    calls = xread_calls(r) - before
    assert all(got == payloads for got in results)
    assert metrics.COUNTS.stream_reads["shared"] - shared_before == hub.catch_ups.shared
    # alone, each would read the 12 MB in ~7 batches: 140 reads; together they read
    # each batch once, after a first read each
    assert calls <= n + 20, calls
    assert hub.catch_ups.shared >= n * 3


async def test_viewers_catching_up_together_each_learn_that_redis_went_away(
    private_redis: EmbeddedRedis,
) -> None:
    """Redis killed while ten pulls from 0 share their catch-up reads: every pull is
    closed with 1011 and a reason naming Redis (none waits forever on a read that
    another pull was making), and the server serves again once Redis is back."""
    with redis.Redis.from_url(private_redis.url) as plain:
        pipe = plain.pipeline()
        for i in range(100):
            pipe.xadd("cam", {"d": i.to_bytes(4, "big") * 25_000})
        pipe.execute()
    with LiveServer(create_app(Settings(redis_url=private_redis.url))) as live:
        url = f"{live.ws_url}/data/cam/pull?last_entry_id=0&ack=1&block=0"
        pulls = [await connect(url).__aenter__() for _ in range(10)]
        try:
            for ws in pulls:  # each has its first batch, and waits for its ack
                await recv_entries(ws)
            private_redis.kill()

            async def until_closed(ws: Any) -> tuple[int, str]:
                with pytest.raises(websockets.ConnectionClosed) as info:
                    while True:
                        await ws.send("ok")
                        await recv_entries(ws)
                assert info.value.rcvd is not None, "closed without a close frame"
                return info.value.rcvd.code, info.value.rcvd.reason

            closes = await asyncio.gather(*(until_closed(ws) for ws in pulls))
        finally:
            await asyncio.gather(*(ws.close() for ws in pulls))
        assert all(code == 1011 and "Redis unavailable" in reason for code, reason in closes)
        private_redis.start()  # same port: the server recovers by itself
        with redis.Redis.from_url(private_redis.url) as plain:
            plain.xadd("after", {"d": b"back"})
        async with connect(f"{live.ws_url}/data/after/pull?last_entry_id=0") as ws:
            assert [p for _, p in await recv_entries(ws)] == [b"back"]


async def test_a_new_subscriber_never_takes_a_read_kept_from_before_a_recreate(
    hub: Hub, r: redis.Redis
) -> None:
    r.xadd("re", {"d": b"old-1"}, id="1-1")
    r.xadd("re", {"d": b"old-2"}, id="2-1")
    a = hub.subscribe(["re"], ["0"], read_ahead=False)
    b = hub.subscribe(["re"], ["0"], read_ahead=False)
    async with a, b:
        for sub in (a, b):
            for want in (b"old-1", b"old-2"):
                delivery = await sub.next(timeout=DEADLINE)
                assert delivery is not None and [e[2][b"d"] for e in delivery.batch] == [want]
        r.delete("re")
        r.xadd("re", {"d": b"new-1"}, id="1-1")
        r.xadd("re", {"d": b"new-2"}, id="2-1")
        c = hub.subscribe(["re"], ["0"], read_ahead=False)
        async with c:
            for want in (b"new-1", b"new-2"):
                delivery = await c.next(timeout=DEADLINE)
                assert delivery is not None and [e[2][b"d"] for e in delivery.batch] == [want]


async def _ids_of(sub: Any) -> list[str]:
    delivery = await sub.next(timeout=DEADLINE)
    assert delivery is not None
    return [e[1].decode() for e in delivery.batch]


async def test_a_stream_made_anew_with_lower_ids_loses_nothing(hub: Hub, r: redis.Redis) -> None:
    """A pull that lingers on a deleted stream leaves the shared read at its old end;
    a new pull of the stream made anew (with lower ids) still gets every new entry,
    and so does the old one."""
    r.xadd("anew", {"d": b"old"}, id="50-1")
    old = hub.subscribe(["anew"], ["$"], read_ahead=False)
    async with old:
        assert await old.next(timeout=0.2) is None  # on the shared read, at 50-1
        r.delete("anew")
        r.xadd("anew", {"d": b"new"}, id="1-1")
        fresh = hub.subscribe(["anew"], ["0"], read_ahead=False)
        async with fresh:
            assert await _ids_of(fresh) == ["1-1"]
            assert await fresh.next(timeout=0.2) is None  # at the end: joins
            r.xadd("anew", {"d": b"next"}, id="2-1")
            assert await _ids_of(fresh) == ["2-1"]
            assert await _ids_of(old) == ["2-1"]
            r.xadd("anew", {"d": b"then"}, id="3-1")
            assert await _ids_of(fresh) == ["3-1"]
            assert await _ids_of(old) == ["3-1"]
            assert fresh.joined and fresh.group is old.group  # one shared read


async def test_deleted_newest_entries_neither_skip_nor_repeat(hub: Hub, r: redis.Redis) -> None:
    """The newest entries deleted under a pull at the tail: a pull from before them
    joins the shared read, and what comes next reaches both once."""
    for i in (1, 2, 3):
        r.xadd("gone", {"d": b"x"}, id=f"{i}-1")
    tail = hub.subscribe(["gone"], ["$"], read_ahead=False)
    async with tail:
        assert await tail.next(timeout=0.2) is None  # on the shared read, at 3-1
        r.xdel("gone", "2-1", "3-1")
        behind = hub.subscribe(["gone"], ["1-1"], read_ahead=False)
        async with behind:
            assert await behind.next(timeout=0.2) is None
            later = r.xadd("gone", {"d": b"later"}).decode()
            assert await _ids_of(behind) == [later]
            assert await _ids_of(tail) == [later]
            assert await behind.next(timeout=0.2) is None
            assert await tail.next(timeout=0.2) is None
            assert behind.joined and behind.group is tail.group


async def test_every_subscriber_gets_the_same_frame_bytes(hub: Hub, r: redis.Redis) -> None:
    subs = [hub.subscribe(["same"], ["$"], count=5) for _ in range(3)]
    for sub in subs:
        await sub.__aenter__()
    try:
        for sub in subs:
            assert await sub.next(timeout=0.2) is None
        r.xadd("same", {"d": b"x" * 1000})
        deliveries = [await sub.next(timeout=DEADLINE) for sub in subs]
        assert deliveries[0] is not None
        assert all(d is deliveries[0] for d in deliveries)  # one batch, one frame
        assert deliveries[0].frame() is deliveries[0].frame()
    finally:
        for sub in subs:
            await sub.__aexit__(None, None, None)


def test_abandoned_blocking_gets_release_their_reads(server: LiveServer, r: redis.Redis) -> None:
    """GET ?block=600000 whose clients leave: no read is left waiting for them."""
    sockets = []
    for i in range(50):
        s = socket.create_connection((server.host, server.port), timeout=DEADLINE)
        s.sendall(f"GET /data/gone{i}?block=600000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sockets.append(s)
    wait_until(lambda: blocked_reads(r) >= 1, DEADLINE, what="the GETs to wait in Redis")
    for s in sockets:
        s.close()
    wait_until(lambda: blocked_reads(r) == 0, DEADLINE, what="their reads to be released")
    # and the server answers a fresh GET that waits for an entry
    r.xadd("gone0", {"d": b"late"})
    reply = httpx.get(f"{server.http_url}/data/gone0?last_entry_id=0&block=1000", timeout=DEADLINE)
    assert (reply.status_code, reply.content) == (200, b"late")


def server_connections(r: redis.Redis) -> int:
    return connections_named(r, CLIENT_NAME)


async def test_idle_pulls_of_many_streams_hold_bounded_connections(
    url: str, r: redis.Redis
) -> None:
    """150 idle pulls (block=0), each of its own stream, add a bounded number of Redis
    connections (measured: 21 for 50 pulls, 24 for 300), and a push and a pull from
    another socket still complete (one connection per pull used to exhaust redis-py's
    pool and lock everybody out)."""
    n = 150
    before = server_connections(r)  # the pool keeps what earlier tests opened
    sockets = [await connect(f"{url}/data/idle{k}/pull?block=0").__aenter__() for k in range(n)]
    try:
        wait_until(lambda: blocked_reads(r) >= 1, timeout=DEADLINE)
        added = server_connections(r) - before
        assert added <= MAX_HUB_CONNECTIONS, added
        async with connect(f"{url}/data/busy/push?ack=1") as push:
            await push.send("[2]")
            await push.send(b"ok")
            [entry_id] = json.loads(await asyncio.wait_for(push.recv(), DEADLINE))
        async with connect(f"{url}/data/busy/pull?last_entry_id=0") as pull:
            assert await recv_entries(pull) == [(entry_id, b"ok")]
        r.xadd("idle7", {"d": b"wake"})
        assert [p for _, p in await recv_entries(sockets[7])] == [b"wake"]
        assert server_connections(r) - before <= MAX_HUB_CONNECTIONS
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
