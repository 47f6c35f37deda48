"""stop() with a slow step after the source: it returns after the item under way (not
after the whole batch), and the next start() goes on where it left, losing nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
from streamz import Stream
from support.waiting import wait_until

from fastredis.streamz.group_reader import READ_AHEAD

N = 200
BATCH = 100


def _source(kind: str, url: str) -> Any:
    if kind == "group":
        return Stream.from_redis_consumer_group("in", "g", "c", url=url, count=BATCH)
    if kind == "streams":
        return Stream.from_redis_streams({"in": "0"}, url=url, count=BATCH)
    return Stream.from_redis_lists("in-list", url=url, count=BATCH)


@pytest.mark.parametrize("kind", ["group", "streams", "lists"])
def test_stop_returns_after_the_item_under_way_and_loses_nothing(
    kind: str, redis_url: str, plain_redis: redis.Redis
) -> None:
    for i in range(N):
        plain_redis.xadd("in", {"d": str(i)})
        plain_redis.rpush("in-list", str(i))
    source = _source(kind, redis_url)
    seen: list[int] = []

    def slow(x: Any) -> None:
        time.sleep(0.02)  # a slow step on the loop thread
        seen.append(int(x if kind == "lists" else x[2]["d"]))

    source.sink(slow)
    try:
        source.start()
        wait_until(lambda: len(seen) >= 3, 30, what="a few items")
        source.stop()
        stopped_at = len(seen)
        assert stopped_at < BATCH  # the rest of the batch was not run through first
        source.start()
        wait_until(lambda: len(set(seen)) == N, 60, what="every item")
    finally:
        source.stop()
    if kind == "group":  # at least once: everything acknowledged, nothing pending
        assert sorted(set(seen)) == list(range(N))
        wait_until(lambda: plain_redis.xpending("in", "g")["pending"] == 0, 30, "acks")
    else:  # the reader rewound (streams) or put the rest back (lists): once, in order
        assert seen == list(range(N))
        assert plain_redis.llen("in-list") == 0 or kind == "streams"


@pytest.mark.parametrize("kind", ["group", "streams", "lists"])
def test_stop_does_not_wait_for_an_asynchronous_step(
    kind: str, redis_url: str, plain_redis: redis.Redis
) -> None:
    for i in range(N):
        plain_redis.xadd("in", {"d": str(i)})
        plain_redis.rpush("in-list", str(i))
    source = _source(kind, redis_url)
    seen: list[int] = []
    release = asyncio.Event()

    async def held(x: Any) -> None:  # a step that waits on something outside
        seen.append(int(x if kind == "lists" else x[2]["d"]))
        if len(seen) == 3:
            await release.wait()

    source.sink(held)
    try:
        source.start()
        wait_until(lambda: len(seen) >= 3, 30, what="a few items")
        source.stop()  # returns although the third item's step never finishes
        assert len(seen) == 3
        source.loop.add_callback(release.set)
        source.start()
        wait_until(lambda: set(range(N)) <= set(seen), 60, what="every item")
    finally:
        source.stop()
    assert seen.count(2) == 2  # the item under way is delivered again: at least once
    assert len(seen) == N + 1


@pytest.mark.parametrize("kind", ["group", "streams", "lists"])
def test_stop_during_a_finished_coroutine_step_counts_its_item_as_delivered(
    kind: str, redis_url: str, plain_redis: redis.Redis
) -> None:
    # partition() is a tornado coroutine: it returns a future for every item, done at
    # once here. A stop() that lands right after the batch it completes (here from the
    # sink itself, on the loop thread) must not count the last item as undelivered: a
    # list reader put it back, so the list kept an item its steps had taken.
    for i in range(10):
        plain_redis.xadd("in", {"d": str(i)})
        plain_redis.rpush("in-list", str(i))
    source = _source(kind, redis_url)
    batches: list[tuple[Any, ...]] = []

    def take(batch: tuple[Any, ...]) -> None:
        batches.append(batch)
        source.stop()

    source.partition(10).sink(take)
    try:
        source.start()
        wait_until(lambda: batches, 30, what="the batch of 10")
    finally:
        source.stop()  # from this thread: returns once the source has finished
    assert len(batches) == 1 and len(batches[0]) == 10
    if kind == "lists":
        assert plain_redis.llen("in-list") == 0
    if kind == "group":  # every item acknowledged: none left to deliver again
        wait_until(lambda: plain_redis.xpending("in", "g")["pending"] == 0, 30, "acks")


def test_stop_leaves_what_the_reads_sent_ahead_brought_pending_for_the_next_start(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    # While a batch is emitted, the group's next reads are under way: Redis delivers
    # their entries to this consumer before they are emitted. A stop() then leaves them
    # pending; the next start emits them first, each once, in order, and acks them.
    total = (READ_AHEAD + 2) * BATCH
    for i in range(total):
        plain_redis.xadd("in", {"d": str(i)})
    source = _source("group", redis_url)
    seen: list[int] = []
    gate = threading.Event()

    def sink(x: Any) -> None:
        seen.append(int(x[2]["d"]))
        if len(seen) == 3:
            gate.wait(30)  # holds the loop thread: the reads sent ahead reach Redis meanwhile

    source.sink(sink)
    try:
        source.start()
        delivered = (1 + READ_AHEAD) * BATCH  # the batch being emitted and those read ahead
        wait_until(
            lambda: plain_redis.xpending("in", "g")["pending"] == delivered, 30, "reads ahead"
        )
        stopper = threading.Thread(target=source.stop)
        stopper.start()
        wait_until(lambda: source.stopped, 30, what="stop() under way")
        gate.set()
        stopper.join(30)
        assert seen == [0, 1, 2]
        assert plain_redis.xpending("in", "g")["pending"] == delivered - 3  # none lost
        source.start()
        wait_until(lambda: len(seen) >= total, 60, what="every entry")
        wait_until(lambda: plain_redis.xpending("in", "g")["pending"] == 0, 30, "acks")
    finally:
        gate.set()
        source.stop()
    assert seen == list(range(total))  # nothing twice, nothing skipped, in order
