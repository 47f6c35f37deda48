"""Redis going away under running sources and sinks: reconnect with backoff, no loss."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from streamz import Stream
from support.streamz_helpers import Collector, pending_count, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own that saves its data set on stop and loads it on start."""
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        yield server


def _add(client: redis.Redis, stream: str, start: int, n: int) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd(stream, {"i": i})
    return [x.decode() for x in pipe.execute()]


@pytest.mark.parametrize("persistent", [False, True])
def test_streams_source_survives_restart(
    private_redis: EmbeddedRedis,
    persistent_redis: EmbeddedRedis,
    sources: list,
    caplog: pytest.LogCaptureFixture,
    persistent: bool,
) -> None:
    server = persistent_redis if persistent else private_redis
    client = redis.Redis.from_url(server.url)
    source = Stream.from_redis_streams("s", url=server.url, default_start_id="0")
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    ids = _add(client, "s", 0, 50)
    got.wait_for(50)
    with caplog.at_level(logging.WARNING, logger="fastredis.streamz"):
        server.restart()  # same port; without persistence the stream starts over
        ids += _add(client, "s", 50, 50)  # right away: before the source is back
        wait_until(lambda: len(got) >= 100, what="100 entries")
        ids += _add(client, "s", 100, 10)
        got.wait_for(110)
    assert [m[1] for m in got.items] == ids  # each once, in order
    assert [int(m[2]["i"]) for m in got.items] == list(range(110))
    assert "reconnect attempt 1" in caplog.text and "reconnected after" in caplog.text


def test_group_survives_restart_with_entries_in_flight(
    persistent_redis: EmbeddedRedis, sources: list, caplog: pytest.LogCaptureFixture
) -> None:
    server = persistent_redis
    client = redis.Redis.from_url(server.url)
    source = Stream.from_redis_consumer_group("s", "g", "c", url=server.url, count=20)
    seen = Collector()
    source.sink(seen)
    done = Collector()
    source.partition(60).flatten().sink(done)  # holds entries until 60 have come
    source.start()
    sources.append(source)
    ids = _add(client, "s", 0, 50)
    seen.wait_for(50)
    assert pending_count(client, "s", "g") == 50  # emitted, held downstream, not acked
    with caplog.at_level(logging.WARNING, logger="fastredis.streamz"):
        server.restart()  # the data set (stream, group, pending list) is saved and loaded
        assert pending_count(client, "s", "g") == 50
        ids += _add(client, "s", 50, 70)
        done.wait_for(120)
        wait_until(lambda: pending_count(client, "s", "g") == 0, what="every entry acked")
    delivered = Counter(m[1] for m in seen.items)
    assert set(delivered) == set(ids) and max(delivered.values()) == 1  # no loss, no duplicate
    assert "reconnected after" in caplog.text


def test_group_recreated_after_restart_without_persistence(
    private_redis: EmbeddedRedis, sources: list
) -> None:
    server = private_redis
    client = redis.Redis.from_url(server.url)
    source = Stream.from_redis_consumer_group("s", "g", "c", url=server.url)
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    _add(client, "s", 0, 10)
    got.wait_for(10)
    server.restart()  # stream and group are gone
    wait_until(lambda: client.exists("s"), what="the group (and stream) created again")
    ids = _add(client, "s", 10, 10)
    assert [m[1] for m in got.wait_for(20)[10:]] == ids
    wait_until(lambda: pending_count(client, "s", "g") == 0, what="acks")


def test_lists_source_survives_restart(private_redis: EmbeddedRedis, sources: list) -> None:
    client = redis.Redis.from_url(private_redis.url)
    source = Stream.from_redis_lists("q", url=private_redis.url)
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    client.rpush("q", "a", "b")
    got.wait_for(2)
    private_redis.restart()
    client.rpush("q", "c", "d")
    assert got.wait_for(4) == ["a", "b", "c", "d"]


def test_server_gone_for_good_then_stop(
    private_redis: EmbeddedRedis, sources: list, caplog: pytest.LogCaptureFixture
) -> None:
    source = Stream.from_redis_consumer_group(
        "s", "g", "c", url=private_redis.url, heartbeat_interval=0.1, claim_timeout=1
    )
    source.start()
    sources.append(source)
    with caplog.at_level(logging.WARNING, logger="fastredis.streamz"):
        private_redis.stop()
        wait_until(lambda: "reconnect attempt 3" in caplog.text, what="a few reconnect attempts")
    source.stop()  # returns although the server never came back
    assert source.stopped and source.client is None


def test_sinks_survive_restart(persistent_redis: EmbeddedRedis) -> None:
    server = persistent_redis
    client = redis.Redis.from_url(server.url)
    upstream = Stream()
    to_stream = upstream.sink_to_redis_stream("out", url=server.url)
    to_list = upstream.sink_to_redis_list("out-list", url=server.url)
    for i in range(20):
        upstream.emit(f"x{i}")
    to_stream.flush()
    to_list.flush()
    server.restart()
    for i in range(20, 40):
        upstream.emit(f"x{i}")  # the first writes hit the closed connection: retried
    to_stream.flush()
    to_list.flush()
    expected = [f"x{i}".encode() for i in range(40)]
    assert [e[1][b"d"] for e in client.xrange("out")] == expected
    assert client.lrange("out-list", 0, -1) == expected
    to_stream.close()
    to_list.close()
