"""A reconnect storm, test-sized: 300 idle viewers pulling with ``resume=1`` (each its
own stream; or 10 streams, entries added while the server is down) all reconnect at
once after `fastredis serve` is killed and started again. Every one is resumed,
``recovered`` true, and the server reads Redis at most once per distinct cursor. The
machinery is benchmarks/bench_storm.py's; times are reported there, not here."""

from __future__ import annotations

from collections.abc import Iterator

import bench_storm
import pytest

from fastredis.embedded import EmbeddedRedis

VIEWERS = 300


@pytest.fixture(scope="module")
def storm_clients() -> Iterator[bench_storm.Clients]:
    bench_storm.raise_nofile(VIEWERS + bench_storm.FD_SPARE)  # the server inherits it
    clients = bench_storm.Clients(1, VIEWERS)
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:  # each case empties its Redis
        yield server


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", bench_storm.CASES)
def test_all_resumed_at_most_one_read_per_cursor(
    case: str, storm_clients: bench_storm.Clients, private_redis: EmbeddedRedis
) -> None:
    streams = bench_storm.SHARED_STREAMS
    o = bench_storm.run_case(
        storm_clients, private_redis, case, VIEWERS, shared_streams=streams,
        concurrency=VIEWERS, depth=bench_storm.shared_depth(VIEWERS, streams),
    )  # fmt: skip
    assert o["dropped"] == VIEWERS  # every socket went with the server
    storm = o["storm"]
    assert (len(storm["seconds"]), storm["failed"]) == (VIEWERS, 0), storm["errors"]
    assert storm["not_recovered"] == 0  # nothing was lost: resumed, not restarted
    cursors = o["distinct_cursors"]
    assert cursors == (VIEWERS if case == "distinct" else streams)
    # the server's reads for cursors, counted by its own metrics
    assert bench_storm.by_cursor(o["stream_reads"]) <= cursors, o["stream_reads"]
    if case == "shared":  # behind the tail: one catch-up read per cursor, shared
        assert o["stream_reads"]["shared"] >= VIEWERS - cursors, o["stream_reads"]
    else:  # and every XREAD Valkey served, the parking read's too
        assert o["xread_calls"] <= cursors, o["xread_calls"]
