"""How long one push message holds Redis: the atomic write script against pipelined
XADDs of the same entries (not atomic, and so not what the server does), in one run.

Redis runs one command at a time, so every other client waits while a message's
script runs; `max_entries_per_message` (default 10,000) bounds that wait. Groups
(compare within a group): entries-100, entries-1000, entries-10000, 100-byte
payloads to one stream. ``extra_info["redis_usec"]`` is Redis's own time per call
(INFO commandstats): for the script, the longest any other client waits for it.
Run: pytest benchmarks/bench_push_script.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fastredis.redis_io.lua import with_text
from fastredis.server.writes.entries import entry_commands

SIZES = [100, 1000, 10_000]
PAYLOAD = b"x" * 100


@pytest.fixture
def client(bench_server: Any) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(bench_server.url) as r:
        r.flushall()
        r.config_resetstat()
        yield r
        r.flushall()


def _usec_per_call(r: redis.Redis, command: str) -> float:
    stats = r.info("commandstats").get(f"cmdstat_{command}", {})
    return float(stats.get("usec_per_call", 0.0))


@pytest.mark.parametrize("n", SIZES)
def test_atomic_script(benchmark: Any, client: redis.Redis, n: int) -> None:
    benchmark.group = f"entries-{n}"
    command = entry_commands([("s", "*", PAYLOAD)] * n, 1000)
    client.execute_command(*with_text(command))  # loads the script: EVALSHA from here

    def write() -> Any:
        return client.execute_command(*command)

    ids = benchmark(write)
    assert len(ids) == n
    benchmark.extra_info["redis_usec"] = _usec_per_call(client, "evalsha")


@pytest.mark.parametrize("n", SIZES)
def test_pipelined_xadd(benchmark: Any, client: redis.Redis, n: int) -> None:
    benchmark.group = f"entries-{n}"

    def write() -> Any:
        pipe = client.pipeline(transaction=False)
        for _ in range(n):
            pipe.xadd("s", {"d": PAYLOAD}, maxlen=1000, approximate=True)
        return pipe.execute()

    ids = benchmark(write)
    assert len(ids) == n
    benchmark.extra_info["redis_usec"] = _usec_per_call(client, "xadd")
