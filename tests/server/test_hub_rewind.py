"""A subscriber that reaches the end of a stream while the shared tail read moves on:
no entry reaches anyone twice (the race behind issue #17's doubled ids), and a stream
made anew below the shared read's cursor still reaches everybody."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from fastredis.embedded import EmbeddedRedis
from fastredis.redis_io import make_async_client
from fastredis.server.reads.hub import Hub, Subscription

DEADLINE = 15.0


@pytest.fixture
def r(redis_url: str) -> Any:
    with redis.Redis.from_url(redis_url) as client:
        yield client


async def _ids(sub: Subscription, timeout: float = DEADLINE) -> list[str]:
    delivery = await sub.next(timeout=timeout)
    return [] if delivery is None else [e[1].decode() for e in delivery.batch]


async def _until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def _drain(sub: Subscription) -> list[str]:
    """What `sub` has to take now (its group's deliveries already published)."""
    got: list[str] = []
    while ids := await _ids(sub, timeout=0):
        got += ids
    return got


def _after_empty_read(sub: Subscription, meanwhile: Callable[[], Awaitable[None]]) -> None:
    """Run `meanwhile` once, right after `sub`'s first read by its own cursor came back
    empty and before `sub` acts on it (the turn of the loop where the race happens)."""
    real = sub._read_own
    done = False

    async def read_own() -> Any:
        nonlocal done
        result = await real()
        if not done and not len(result[0].batch):
            done = True
            await meanwhile()
        return result

    sub._read_own = read_own  # type: ignore[method-assign]


@pytest.mark.parametrize("resume", [False, True])
async def test_an_entry_the_group_read_during_an_empty_catch_up_read_comes_once(
    hub: Hub, r: redis.Redis, resume: bool
) -> None:
    """S's read at the end comes back empty; a tail subscriber then comes, an entry is
    added, and the tail read delivers it before S goes on: S gets it once (reading it
    by itself), and the tail subscriber does not get it again."""
    sid = f"race-{resume}"
    first = r.xadd(sid, {"d": b"a"}).decode()
    # count=1: its read of `first` is full, so it reads again (and finds nothing)
    late = hub.subscribe([sid], ["0"], read_ahead=False, resume=resume)
    tail = hub.subscribe([sid], ["$"], read_ahead=False, resume=resume)
    added: list[str] = []

    async def tail_joins_and_gets_an_entry() -> None:
        await tail.__aenter__()
        assert await tail.next(timeout=0.2) is None  # at the tail: on the shared read
        assert tail.joined
        added.append(r.xadd(sid, {"d": b"E"}).decode())
        assert await _ids(tail) == added  # the group read and published it

    _after_empty_read(late, tail_joins_and_gets_an_entry)
    async with late:
        try:
            assert await _ids(late) == [first]
            got = await _ids(late)
            assert added and got == added  # read by itself, once
            then = r.xadd(sid, {"d": b"F"}).decode()
            while then not in got:
                got += await _ids(late)
            assert got == [*added, then]
            seen = await _ids(tail)
            while then not in seen:
                seen += await _ids(tail)
            assert seen == [then], "the tail subscriber got an entry again"
            assert await _drain(tail) == [] and await _drain(late) == []
            assert late.joined and late.group is tail.group
        finally:
            await tail.__aexit__(None, None, None)


async def test_a_stream_made_anew_below_the_tail_reaches_every_subscriber_once(
    hub: Hub, r: redis.Redis
) -> None:
    """Two tail subscribers of a stream deleted and made anew with lower ids, and one
    that reads the new stream from 0: the new entries reach each of them once."""
    r.xadd("below", {"d": b"old"}, id="90-1")
    tails = [hub.subscribe(["below"], ["$"], read_ahead=False) for _ in range(2)]
    async with tails[0], tails[1]:
        for sub in tails:
            assert await sub.next(timeout=0.2) is None
        r.delete("below")
        r.xadd("below", {"d": b"new"}, id="1-1")
        fresh = hub.subscribe(["below"], ["0"], read_ahead=False)
        async with fresh:
            assert await _ids(fresh) == ["1-1"]
            assert await fresh.next(timeout=0.2) is None  # at the end: joins
            for n in (2, 3):
                r.xadd("below", {"d": b"x"}, id=f"{n}-1")
                for sub in (fresh, *tails):
                    assert await _ids(sub) == [f"{n}-1"]
            for sub in (fresh, *tails):
                assert await _drain(sub) == []
            assert fresh.group is tails[0].group is tails[1].group


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix-socket"])
async def test_reads_after_redis_restarted_do_not_fail_on_idle_connections(unix: bool) -> None:
    """Redis restarted while the hub's read connections sat idle (catch-up, tail and
    parking): the next reads take new ones (no "Connection closed by server"), over
    TCP and over a unix socket (how `fastredis serve` reaches its embedded Valkey)."""
    with EmbeddedRedis(unix_socket=unix) as private_redis:
        await _idle_through_a_restart(private_redis, private_redis.unix_url or private_redis.url)


async def _idle_through_a_restart(private_redis: EmbeddedRedis, url: str) -> None:
    with redis.Redis.from_url(private_redis.url) as plain:
        plain.xadd("idle", {"d": b"a"}, id="1-1")
    client = make_async_client({}, url=url)
    hub = Hub(client)
    try:
        before = hub.subscribe(["idle"], ["0"], read_ahead=False)
        async with before:  # a catch-up read, a tail read, the parking read
            assert await _ids(before) == ["1-1"]
            assert await before.next(timeout=0.2) is None
            assert before.joined
        parking = hub.parking
        await _until(lambda: parking._task is not None and parking._task.done())
        assert parking._conn.held  # all three connections idle now
        private_redis.restart()
        with redis.Redis.from_url(private_redis.url) as plain:
            plain.xadd("idle", {"d": b"b"}, id="2-1")
        after = hub.subscribe(["idle"], ["1-1"], read_ahead=False)
        async with after:
            assert await _ids(after) == ["2-1"]
            assert await after.next(timeout=0.2) is None  # at the end: the tail read
            with redis.Redis.from_url(private_redis.url) as plain:
                plain.xadd("idle", {"d": b"c"}, id="3-1")
            assert await _ids(after) == ["3-1"]
    finally:
        await hub.close()
        await client.aclose()
