"""Clients that reconnect: producer pushes resent after a reconnect are written once;
reconnecting pulls resume after the last id seen and say when they may have missed
entries. Against real `fastredis serve` processes, killed and restarted, and a proxy
that cuts their sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support.cut_proxy import CutProxy
from support.serve_process import ServeProcess
from support.waiting import wait_until

from fastredis.client import AsyncClient, Client, Gap, ServerClosed
from fastredis.client.errors import ServerUnreachable
from fastredis.client.reconnect import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    REDIS_DOWN_MAX,
    Backoff,
    PullCursor,
    backoff_delay,
)
from fastredis.embedded import EmbeddedRedis, free_port


@pytest.fixture
def server(redis_url: str) -> Iterator[ServeProcess]:
    with ServeProcess(redis_url) as srv:
        yield srv


class Cutter:
    """Cuts the proxy's sockets every `every` seconds until stopped."""

    def __init__(self, proxy: CutProxy, every: float = 0.05) -> None:
        self.proxy, self.every = proxy, every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self.proxy.cut()

    def __enter__(self) -> Cutter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def stored(r: redis.Redis, sid: str) -> list[tuple[str, bytes]]:
    return [(i.decode(), f[b"d"]) for i, f in r.xrange(sid)]


def test_backoff_is_full_jitter_capped() -> None:
    assert all(0 <= backoff_delay(0) <= 0.5 for _ in range(100))
    assert all(0 <= backoff_delay(30) <= BACKOFF_MAX for _ in range(100))
    assert max(backoff_delay(10) for _ in range(200)) > 10  # spread, not fixed


LOST = ServerClosed("ws://a", 1006, "connection lost without a close frame")


def test_a_server_that_answered_resets_the_backoff_however_long_the_outage_was() -> None:
    """A server lost after a long outage (the waits grown to 20 s) sends its clients to
    the next one within the first cap: the socket in between answered."""
    backoff = Backoff(servers=2)
    for _ in range(30):  # both servers down for minutes
        backoff.failed(LOST)
    assert max(backoff.failed(LOST) for _ in range(200)) > 10  # grown
    waits = []
    for _ in range(200):
        backoff.answered()  # one came back: a socket opened and read its first frame
        waits.append(backoff.failed(LOST))  # killed: to the next server
    assert max(waits) <= BACKOFF_FIRST


def test_the_wait_grows_only_once_every_server_of_the_list_failed() -> None:
    backoff = Backoff(servers=2)
    refused = ServerUnreachable("ws://a", ConnectionRefusedError())
    caps = []
    for _ in range(8):
        caps.append(max(Backoff.failed(_copy(backoff), refused) for _ in range(300)))
        backoff.failed(refused)
    # two tries (one round) at each cap: 0.5, 0.5, 1, 1, 2, 2, 4, 4
    assert [c <= BACKOFF_FIRST * 2 ** (k // 2) for k, c in enumerate(caps)] == [True] * 8
    assert caps[6] > BACKOFF_FIRST * 2  # and it grows


def test_redis_unavailable_and_a_restart_hint_bound_the_wait() -> None:
    backoff = Backoff(servers=2)
    down = ServerClosed("ws://a", 1011, "Redis unavailable: Connection refused")
    assert max(backoff.failed(down) for _ in range(400)) <= REDIS_DOWN_MAX
    assert backoff.rounds == 200  # still counted: any other failure waits its full cap
    loading = ServerClosed("ws://a", 1013, "Redis is busy (Valkey is loading the dataset): ...")
    assert max(backoff.failed(loading) for _ in range(100)) <= REDIS_DOWN_MAX
    full = ServerClosed("ws://a", 1013, "every Redis connection is in use: try again")
    assert max(backoff.failed(full) for _ in range(100)) > REDIS_DOWN_MAX  # overloaded
    alone = Backoff(servers=1)
    for _ in range(10):
        alone.failed(LOST)
    restarting = ServerClosed("ws://a", 1012, "server restarting; retry in 1234 ms")
    assert alone.failed(restarting) == 1.234  # the server's own (jittered) hint
    assert alone.rounds == 10


def _copy(backoff: Backoff) -> Backoff:
    twin = Backoff(backoff.servers)
    twin.rounds, twin.tried = backoff.rounds, backoff.tried
    return twin


async def test_async_producer_push_through_cut_sockets_and_a_kill(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    n = 400
    acked: list[list[str]] = []
    with CutProxy(server.port) as proxy, Cutter(proxy):
        url = f"ws://127.0.0.1:{proxy.port}"
        async with AsyncClient(url) as c:
            for i in range(n):
                if i == n // 2:  # kill -9 the server, push while it is down, restart it
                    server.stop(signal.SIGKILL)
                    task = asyncio.ensure_future(c.push("s", b"%d" % i, producer="cam"))
                    await asyncio.to_thread(server.start)
                    acked.append(await task)  # type: ignore[arg-type]
                    continue
                acked.append(await c.push("s", b"%d" % i, producer="cam"))  # type: ignore[arg-type]
        assert proxy.cuts > 10
    rows = stored(plain_redis, "s")
    assert [d for _i, d in rows] == [b"%d" % i for i in range(n)]  # 0 lost, 0 doubled
    assert [ids[0] for ids in acked] == [i for i, _d in rows]  # every push got its ids


def test_sync_producer_push_through_cut_sockets_and_a_sigterm(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    n = 300
    with CutProxy(server.port) as proxy, Cutter(proxy), Client(f"127.0.0.1:{proxy.port}") as c:
        for i in range(n):
            if i == n // 2:
                server.stop(signal.SIGTERM)
                threading.Thread(target=server.start).start()
            ids = c.push("s", [b"%da" % i, b"%db" % i], producer="p")
            assert ids is not None and len(ids) == 2
    assert [d for _i, d in stored(plain_redis, "s")] == [
        x for i in range(n) for x in (b"%da" % i, b"%db" % i)
    ]


async def test_a_restarted_producer_learns_what_was_committed(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    async with AsyncClient(server.ws_url) as c:
        for i in range(5):
            await c.push("s", b"%d" % i, producer="job")
    async with AsyncClient(server.ws_url) as c:
        pusher = await c.pusher("s", producer="job").connect()
        assert pusher.committed == 5  # a restarted job skips its first 5 messages
        await pusher.close()


def _feed(r: redis.Redis, sid: str, n: int, stop: threading.Event) -> list[str]:
    ids = []
    for i in range(n):
        if stop.is_set():
            break
        ids.append(r.xadd(sid, {"d": b"%d" % i}).decode())
        time.sleep(0.002)
    return ids


def test_reconnecting_pull_resumes_through_cuts_and_a_kill(
    server: ServeProcess, redis_url: str, plain_redis: redis.Redis
) -> None:
    n = 1500
    added: list[str] = []
    stop = threading.Event()
    feeder = threading.Thread(target=lambda: added.extend(_feed(plain_redis, "s", n, stop)))
    got: list[str] = []
    gaps: list[Gap] = []
    with CutProxy(server.port) as proxy, Client(f"127.0.0.1:{proxy.port}") as c:
        puller = c.pull("s", last_entry_id="0", count=50, reconnect=True)
        feeder.start()
        killed = False
        with Cutter(proxy, every=0.1):
            for item in puller:
                if isinstance(item, Gap):
                    gaps.append(item)
                    continue
                got.append(item[1])
                if len(got) == n // 2 and not killed:
                    killed = True
                    server.stop(signal.SIGKILL)
                    threading.Thread(target=server.start).start()
                if len(got) == n:
                    break
        stop.set()
        feeder.join()
        assert proxy.cuts > 5
    assert got == added  # in order, 0 lost, 0 doubled
    assert gaps == []


async def test_a_pull_opened_at_dollar_resumes_where_the_server_fixed_it(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    """The server fixes `$` when the socket opens and says where (resume=1's first
    frame), so a cut before any entry was seen resumes there: what was added
    meanwhile arrives, and no gap is reported."""
    with CutProxy(server.port) as proxy:
        async with AsyncClient(f"127.0.0.1:{proxy.port}") as c:
            puller = c.pull("s", reconnect=True, block=100)  # at $, nothing seen yet
            assert await asyncio.wait_for(puller.recv_batch(), 30) == []  # idle: alive
            proxy.cut()
            plain_redis.xadd("s", {"d": b"after"})
            first = await asyncio.wait_for(puller.__aiter__().__anext__(), 30)
            assert not isinstance(first, Gap), first
            assert first[0] == "s" and bytes(first[2]) == b"after"
            await puller.close()


@pytest.mark.parametrize("resume", [None, False])  # resume=1 (default), or as before it
async def test_a_pull_cut_before_it_read_anything_says_it_may_have_missed_entries(
    server: ServeProcess, plain_redis: redis.Redis, resume: bool | None
) -> None:
    with CutProxy(server.port) as proxy:
        async with AsyncClient(f"127.0.0.1:{proxy.port}") as c:
            puller = c.pull("s", reconnect=True, resume=resume)  # at $, nothing read yet
            await puller.connect()
            proxy.cut()
            plain_redis.xadd("s", {"d": b"after"})
            first = await asyncio.wait_for(puller.__aiter__().__anext__(), 30)
            # Never silence: the entry (the first socket outlived the cut) or a gap.
            if isinstance(first, Gap):
                assert first.sid == "s" and "before any entry was seen" in first.reason
            else:
                assert first[0] == "s" and bytes(first[2]) == b"after"
            await puller.close()


def test_a_list_of_servers_goes_round_to_one_that_answers(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    plain_redis.xadd("s", {"d": b"x"})
    with Client([dead, server.ws_url]) as c:
        puller = c.pull("s", last_entry_id="0", reconnect=True)
        batch = puller.recv_batch(timeout=30)
        assert isinstance(batch, list) and batch[0][2] == b"x"
        ids = c.push("s", b"y", producer="p")  # the push socket goes round too
    assert ids is not None
    wait_until(lambda: plain_redis.xlen("s") == 2, 10, "the push")


def test_a_refused_producer_message_is_raised_not_retried(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    plain_redis.set("taken", "a string")
    with Client(server.ws_url) as c:
        with pytest.raises(ServerClosed) as info:
            c.push("taken", b"x", producer="p")
        assert info.value.code == 1008 and "another type" in info.value.reason
        assert c.push("s", b"y", producer="p") is not None  # the client goes on


def test_the_cursor_reads_resume_and_gap_frames() -> None:
    cursor = PullCursor(["a"], None)
    assert cursor.param() == "$" and cursor.blind() == ["a"]
    ok = {"resume": {"from": "5-0", "recovered": True, "first_id": "1-0", "epoch": "e"}}
    assert cursor.frame(json.dumps(ok)) is None
    assert cursor.param() == "5-0" and cursor.blind() == []  # $ resolved by the server
    lost = {"resume": {"from": "5-0", "recovered": False, "first_id": "9-0", "epoch": "e"}}
    assert cursor.frame(json.dumps(lost)) == Gap("a", "5-0", "9-0", ANY_REASON)
    gap = cursor.frame(json.dumps({"gap": {"from": "7-0", "first_id": "12-0"}}))
    assert gap is not None and (gap.sid, gap.after, gap.first) == ("a", "7-0", "12-0")
    two = PullCursor(["a", "b"], "0+3-0")
    two.seen([("b", "4-0", b"")])
    assert two.param() == "0+4-0"


class _AnyReason(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_REASON = _AnyReason("")


async def test_a_producer_push_cancelled_before_its_ack_is_neither_lost_nor_doubled(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    async with AsyncClient(server.ws_url) as c:
        pusher = c.pusher("s", producer="p")
        await pusher.push(b"0")
        for i in range(1, 30):  # cancelled at once: before or after it was written
            task = asyncio.ensure_future(pusher.push(b"%d" % i))
            await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await pusher.push(b"last")  # resends what was not acked first
        await pusher.close()
    data = [d for _i, d in stored(plain_redis, "s")]
    assert data == [b"%d" % i for i in range(30)] + [b"last"]


async def test_a_pull_cancelled_between_header_and_payload_loses_nothing(
    server: ServeProcess, plain_redis: redis.Redis
) -> None:
    n, size = 20, 4 << 20
    for i in range(n):
        plain_redis.xadd("s", {"d": b"%08d" % i + bytes(size)})
    got: list[bytes] = []
    cancelled = 0
    async with AsyncClient(server.ws_url) as c:
        puller = c.pull("s", last_entry_id="0", count=1)
        while len(got) < n:
            try:  # a deadline that lands while the 4 MB payload is on its way
                batch = await asyncio.wait_for(puller.recv_batch(), 0.002)
            except asyncio.TimeoutError:
                cancelled += 1
                continue
            assert isinstance(batch, list)
            got.extend(d[:8] for _s, _i, d in batch)
        await puller.close()
    assert cancelled > 0
    assert got == [b"%08d" % i for i in range(n)]


def record_waits(puller: Any) -> list[float]:
    """The waits `puller`'s backoff draws from now on, in order."""
    waits: list[float] = []
    failed = puller.backoff.failed

    def recorded(exc: BaseException) -> float:
        waits.append(failed(exc))
        return waits[-1]

    puller.backoff.failed = recorded
    return waits


async def test_a_pull_resumes_soon_after_redis_is_back_however_long_it_was_down(
    private_redis: EmbeddedRedis,
) -> None:
    """While Redis is down both servers answer 1011, round after round; the waits stay
    within `REDIS_DOWN_MAX` (they grew to 20 s before), so once Redis is back the pull
    resumes well before a deadline a grown wait would miss."""
    with (
        ServeProcess(private_redis.url) as a,
        ServeProcess(private_redis.url) as b,
        redis.Redis.from_url(private_redis.url) as r,
    ):
        r.xadd("s", {"d": b"before"})
        async with AsyncClient([a.ws_url, b.ws_url]) as c:
            puller = c.pull("s", last_entry_id="0", reconnect=True)
            assert (await asyncio.wait_for(puller.recv_batch(), 30))[0][2] == b"before"  # type: ignore[index]
            waits = record_waits(puller)
            private_redis.stop()
            task = asyncio.ensure_future(puller.recv_batch())
            while puller.backoff.rounds < 5:  # both servers refused, 5 times over
                await asyncio.sleep(0.05)
            private_redis.start()
            r.xadd("s", {"d": b"after"})
            batch = await asyncio.wait_for(task, REDIS_DOWN_MAX + 10)  # < 16 s: the old cap
            assert isinstance(batch, list) and batch[0][2] == b"after"
            assert max(waits) <= REDIS_DOWN_MAX and len(waits) >= 10
            await puller.close()


async def test_a_pull_whose_server_answered_goes_to_the_next_at_the_first_wait(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    """Both servers down for rounds of tries (the waits grow), then back: the socket
    that answered starts the count again, so a kill -9 right after sends the pull to
    the other server within the first cap, not after a wait grown by the outage."""
    with ServeProcess(redis_url) as a, ServeProcess(redis_url) as b:
        plain_redis.xadd("s", {"d": b"0"})
        async with AsyncClient([a.ws_url, b.ws_url]) as c:
            puller = c.pull("s", last_entry_id="0", reconnect=True)
            assert (await asyncio.wait_for(puller.recv_batch(), 30))[0][2] == b"0"  # type: ignore[index]
            waits = record_waits(puller)
            a.stop(signal.SIGKILL)
            b.stop(signal.SIGKILL)
            task = asyncio.ensure_future(puller.recv_batch())
            while puller.backoff.rounds < 3:
                await asyncio.sleep(0.05)
            await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
            plain_redis.xadd("s", {"d": b"1"})
            assert (await asyncio.wait_for(task, 60))[0][2] == b"1"  # type: ignore[index]
            assert puller.backoff.rounds == 0  # it answered
            del waits[:]
            on = a if puller.base == a.ws_url else b
            on.stop(signal.SIGKILL)
            plain_redis.xadd("s", {"d": b"2"})
            assert (await asyncio.wait_for(puller.recv_batch(), 30))[0][2] == b"2"  # type: ignore[index]
            assert len(waits) == 1 and waits[0] <= BACKOFF_FIRST
            await puller.close()
