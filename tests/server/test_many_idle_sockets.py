"""10,000 idle pull sockets on one `fastredis serve` (a subprocess, default settings):
every one stays open on at most --redis-max-connections Redis connections, and a push
and a pull from another socket still complete. The machinery (client processes, the
probes) is benchmarks/bench_idle.py's; RSS and timings are reported there, not here."""

from __future__ import annotations

import math
from collections.abc import Iterator

import bench_idle
import pytest

from fastredis.embedded import EmbeddedRedis
from fastredis.server.run.settings import DEFAULT_REDIS_MAX_CONNECTIONS

SOCKETS = 10_000


@pytest.fixture(scope="module")
def private_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:  # the scenario empties its Redis
        yield server


@pytest.mark.timeout(600)
def test_ten_thousand_idle_pulls_of_their_own_streams(private_redis: EmbeddedRedis) -> None:
    procs = math.ceil(SOCKETS / bench_idle.PER_PROC)
    bench_idle.raise_nofile(SOCKETS + bench_idle.FD_SPARE)  # the server inherits it
    clients = bench_idle.Clients(procs, math.ceil(SOCKETS / procs))
    try:
        o = bench_idle.run_scenario(
            clients, private_redis, "distinct", SOCKETS,
            probes=3, shared_streams=bench_idle.SHARED_STREAMS,
            concurrency=bench_idle.CONCURRENCY,
        )  # fmt: skip
    finally:
        clients.close()
    assert o["open"]["opened"] == SOCKETS, o["open"]
    assert o["release"]["still_open"] == SOCKETS, o["release"]  # none closed (no 1013)
    assert o["quiet_after_s"] is not None, "the server never settled"
    # every Redis connection of the server, however many sockets (less this check's)
    assert o["redis_held"]["connected"] <= DEFAULT_REDIS_MAX_CONNECTIONS, o["redis_held"]
    assert o["redis_held_after_probe"]["connected"] <= DEFAULT_REDIS_MAX_CONNECTIONS
    for key in ("push_ms", "pull_ms"):  # the probes completed (they raise otherwise)
        assert o["probe_held"][key] > 0
