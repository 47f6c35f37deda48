"""A consumer group's CPU-bound pipeline on a 2-worker Dask LocalCluster, next to the same
work in one process, in the same run.

1,000 entries of 10 KB each; the work per entry is ~1 ms of hashing (800 SHA-256
rounds: CPU-bound, holds the GIL). Timed from start() until every entry is processed
and acknowledged.
  single process: source.map(work).sink(count)
  dask per entry: source.scatter().map(work).buffer(32).gather().sink(count)
  dask descriptors: descriptors=True, count=100: source.scatter().map(fetch).map(work_all)
      .buffer(8).gather().sink(count): only id ranges go to the workers, which XRANGE
      their entries themselves.
The machine has 2 cores, shared with Valkey and this process: 2 workers cannot give 2x.

    pytest benchmarks/bench_streamz_dask.py --benchmark-only -s
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dask_jobs import work, work_all
from distributed import Client, LocalCluster
from streamz import Stream

from fastredis.embedded import EmbeddedRedis
from fastredis.streamz.descriptors import fetch

N = 1_000
PAYLOAD = b"x" * 10_000
STREAM = "bench:dask"
ROUNDS = 2
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Client]:
    with (
        LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as c,
        Client(c) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def server(bench_server: EmbeddedRedis) -> EmbeddedRedis:
    with redis.Redis.from_url(bench_server.url) as r:
        r.delete(STREAM)
        pipe = r.pipeline(transaction=False)
        for _ in range(N):
            pipe.xadd(STREAM, {"d": PAYLOAD})
        pipe.execute()
    return bench_server


class Count:
    def __init__(self) -> None:
        self.n = 0
        self.done = threading.Event()

    def __call__(self, x: Any) -> None:
        self.n += len(x) if isinstance(x, list) else 1
        if self.n >= N:
            self.done.set()


def _run(benchmark: Any, server: EmbeddedRedis, client: Client, mode: str) -> None:
    plain = redis.Redis.from_url(server.url)
    state: dict[str, Any] = {}

    def setup() -> None:
        plain.xgroup_destroy(STREAM, "g")
        plain.xgroup_create(STREAM, "g", id="0")
        count = Count()
        kw: dict[str, Any] = {"url": server.url, "count": 100}
        if mode != "single":
            kw["loop"] = client.loop
        if mode == "descriptors":
            kw["descriptors"] = True
        source = Stream.from_redis_consumer_group(STREAM, "g", "c", **kw)
        if mode == "single":
            source.map(work).sink(count)
        elif mode == "dask":
            source.scatter().map(work).buffer(32).gather().sink(count)
        else:
            source.scatter().map(fetch).map(work_all).buffer(8).gather().sink(count)
        state.update(source=source, count=count)

    def target() -> None:
        state["source"].start()
        if not state["count"].done.wait(300):
            raise TimeoutError(f"{state['count'].n} of {N}")
        while plain.xpending(STREAM, "g")["pending"]:
            time.sleep(0.001)
        state["source"].stop()

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, iterations=1)
    RESULTS[mode] = N / benchmark.stats.stats.min
    benchmark.extra_info["msgs_per_s"] = round(RESULTS[mode])


@pytest.mark.benchmark(group="streamz-dask")
@pytest.mark.parametrize("mode", ["single", "dask", "descriptors"])
def test_group_on_dask(benchmark: Any, server: EmbeddedRedis, cluster: Client, mode: str) -> None:
    _run(benchmark, server, cluster, mode)


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    if "single" not in RESULTS:
        return
    print(f"\n\nconsumer group, {N} entries of 10 KB, ~1 ms of CPU each (best of {ROUNDS}):")
    for mode, rate in RESULTS.items():
        print(f"  {mode:12s} {rate:>8,.0f} msgs/s  {rate / RESULTS['single']:.2f}x one process")
