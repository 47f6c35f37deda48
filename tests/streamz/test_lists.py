"""from_redis_lists: bytes, timeouts, many items per round trip."""

from __future__ import annotations

import threading

import redis
from streamz import Stream
from support.streamz_helpers import Collector, collect, sources_fixture  # noqa: F401


def test_lists_convert_false_and_timeout(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    got = collect(Stream.from_redis_lists("q", url=redis_url, convert=False, timeout=0.1), sources)
    threading.Event().wait(0.3)
    plain_redis.rpush("q", b"\x00\xff")
    assert got.wait_for(1) == [b"\x00\xff"]


def test_lists_many_items_few_round_trips(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.rpush("q", *[str(i) for i in range(5000)])
    plain_redis.config_resetstat()
    got = collect(Stream.from_redis_lists("q", url=redis_url), sources)
    assert got.wait_for(5000) == [str(i) for i in range(5000)]
    stats = plain_redis.info("commandstats")
    assert stats["cmdstat_blmpop"]["calls"] <= 10  # COUNT 1000 per pop, not one per item
