"""Claims: heartbeats, a killed consumer's entries taken over (XCLAIM), XAUTOCLAIM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import redis
from support.streamz_helpers import (  # noqa: F401
    Collector,
    collect,
    consumer_pending,
    group_source,
    pending_count,
    sources_fixture,
)
from support.waiting import wait_until

from fastredis.streamz.claims import heartbeat_channel


def test_heartbeats_are_published(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    pubsub = plain_redis.pubsub()
    pubsub.subscribe(heartbeat_channel("g"))
    collect(
        group_source(redis_url, "s", "beating", heartbeat_interval=0.1, claim_timeout=1), sources
    )
    beats = []
    wait_until(
        lambda: (
            ((m := pubsub.get_message(timeout=0.1)) and m["type"] == "message" and beats.append(m))
            or len(beats) >= 2
        ),
        what="two heartbeats",
    )
    assert beats[0]["channel"] == b"g:heartbeats" and beats[0]["data"] == b"beating"
    pubsub.close()


CONSUMER = """
import sys, time
from streamz import Stream
source = Stream.from_redis_consumer_group(
    "jobs", "workers", "doomed", url=sys.argv[1], heartbeat_interval=0.2, claim_timeout=1
)
source.partition(10**6).sink(print)  # takes entries and never finishes them
source.start()
print("ready", flush=True)
time.sleep(600)
"""


def test_killed_consumer_is_claimed_by_survivor(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CONSUMER), redis_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        ids = [plain_redis.xadd("jobs", {"i": i}).decode() for i in range(100)]
        wait_until(
            lambda: consumer_pending(plain_redis, "jobs", "workers", "doomed") == 100,
            what="the doomed consumer to hold all 100",
        )
        survivor = group_source(
            redis_url, "jobs", "survivor", group="workers", heartbeat_interval=0.2, claim_timeout=1
        )
        got = collect(survivor, sources)
        os.kill(child.pid, signal.SIGKILL)  # mid-processing: 100 entries unacknowledged
        child.wait(10)
        got.wait_for(100, timeout=20)
        assert sorted(m[1] for m in got.items) == sorted(ids)
        assert len(got) == 100 and survivor.claimed == 100
        assert {m.deliveries for m in got.items} == {2}  # XCLAIM counted the second one
        wait_until(lambda: pending_count(plain_redis, "jobs", "workers") == 0, what="all acked")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_live_consumer_is_not_claimed(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """A consumer that keeps beating keeps its pending entries, however long it holds them."""
    holder = group_source(redis_url, "s", "holder", heartbeat_interval=0.1, claim_timeout=0.5)
    seen = Collector()
    holder.sink(seen)
    collect(holder, sources, node=holder.partition(10**6))
    for i in range(5):
        plain_redis.xadd("s", {"i": i})
    seen.wait_for(5)
    other = group_source(redis_url, "s", "other", heartbeat_interval=0.1, claim_timeout=0.5)
    got = collect(other, sources)
    # Long enough for several claim checks past claim_timeout.
    wait_until(
        lambda: (
            other.claims.listening_since is not None
            and other.loop.asyncio_loop.time() - other.claims.listening_since > 1.5
        ),
        what="the other consumer to watch for 1.5 s",
    )
    assert got.items == [] and other.claimed == 0
    assert consumer_pending(plain_redis, "s", "g", "holder") == 5


def test_autoclaim_without_heartbeats(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    gone = group_source(redis_url, "s", "gone")
    seen = Collector()
    gone.sink(seen)
    collect(gone, sources, node=gone.partition(10**6))
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(10)]
    seen.wait_for(10)
    gone.stop()  # never comes back; its 10 entries stay pending
    rescuer = group_source(redis_url, "s", "rescuer", autoclaim_idle=0.3)
    got = collect(rescuer, sources)
    assert sorted(m[1] for m in got.wait_for(10)) == sorted(ids)
    assert all(m[0] == "s" for m in got.items)  # XAUTOCLAIM replies name no stream: filled in
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")
    assert rescuer.claimed == 10
