"""sink_to_redis_list and sink_to_redis_stream."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from streamz import Stream
from support.streamz_helpers import sources_fixture  # noqa: F401
from support.waiting import wait_until
from tornado.ioloop import IOLoop

from fastredis.streamz.message import Message
from fastredis.streamz.sinks import DEFAULT_FIELD


def test_list_sink_right_and_left(redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    right = source.sink_to_redis_list("r", url=redis_url)
    left = source.sink_to_redis_list("l", right=False, url=redis_url)
    for x in ["a", b"b", 3, 4.5]:
        source.emit(x)
    right.flush()
    left.flush()
    assert plain_redis.lrange("r", 0, -1) == [b"a", b"b", b"3", b"4.5"]
    assert plain_redis.lrange("l", 0, -1) == [b"4.5", b"3", b"b", b"a"]
    right.close()
    left.close()


def test_list_sink_client_params(redis_server, redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    sink = source.sink_to_redis_list(
        "q", client_params={"host": redis_server.host, "port": redis_server.port, "db": 3}
    )
    source.emit("x")
    sink.flush()
    plain_redis.select(3)
    assert plain_redis.lrange("q", 0, -1) == [b"x"]
    sink.close()


def test_stream_sink_items(redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    sink = source.sink_to_redis_stream("out", url=redis_url)
    source.emit({"a": 1, "b": "two"})
    source.emit("text")
    source.emit(b"\x00bytes")
    source.emit(Message("elsewhere", "1-1", {"k": "v"}))
    source.emit(7)
    sink.flush()
    assert DEFAULT_FIELD == "d"
    assert [e[1] for e in plain_redis.xrange("out")] == [
        {b"a": b"1", b"b": b"two"},
        {b"d": b"text"},
        {b"d": b"\x00bytes"},
        {b"k": b"v"},
        {b"d": b"7"},
    ]
    sink.close()


def test_stream_sink_field_name(redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    sink = source.sink_to_redis_stream("out", field="payload", url=redis_url)
    source.emit(json.dumps({"x": 1}))
    sink.flush()
    assert plain_redis.xrange("out")[0][1] == {b"payload": b'{"x": 1}'}
    sink.close()


def test_stream_sink_maxlen(redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    exact = source.sink_to_redis_stream("exact", maxlen=10, approximate=False, url=redis_url)
    approx = source.sink_to_redis_stream("approx", maxlen=10, url=redis_url)
    for i in range(1000):
        source.emit({"i": i})
    exact.flush()
    approx.flush()
    assert plain_redis.xlen("exact") == 10
    assert plain_redis.xrange("exact")[0][1] == {b"i": b"990"}
    assert 10 <= plain_redis.xlen("approx") < 1000  # trimmed by whole macro nodes
    exact.close()
    approx.close()


def test_sinks_write_in_pipelined_batches(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """Items that come faster than round trips go in few writes, in order."""
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(5000):
        pipe.xadd("in", {"i": i})
    pipe.execute()
    plain_redis.config_resetstat()
    source = Stream.from_redis_streams("in", url=redis_url, default_start_id="0")
    to_list = source.map(lambda m: m[2]["i"]).sink_to_redis_list("copy-list", url=redis_url)
    to_stream = source.sink_to_redis_stream("copy", maxlen=100_000, url=redis_url)
    source.start()
    sources.append(source)
    wait_until(lambda: to_list.written == 5000 and to_stream.written == 5000, what="5000 writes")
    assert plain_redis.lrange("copy-list", 0, -1) == [str(i).encode() for i in range(5000)]
    assert [e[1][b"i"] for e in plain_redis.xrange("copy")] == [
        str(i).encode() for i in range(5000)
    ]
    stats = plain_redis.info("commandstats")
    assert stats["cmdstat_rpush"]["calls"] < 500  # many items per RPUSH
    # XADDs go in pipelines: one round trip for many (the count of commands stays 5000)
    assert stats["cmdstat_xadd"]["calls"] == 5000


def test_sink_errors(redis_url: str, plain_redis: redis.Redis) -> None:
    source = Stream()
    to_list = source.sink_to_redis_list("l", url=redis_url)
    with pytest.raises(TypeError, match=r"json\.dumps"):
        source.emit({"not": "a str"})
    to_list.destroy()
    to_stream = source.sink_to_redis_stream("s", url=redis_url)
    with pytest.raises(ValueError, match="at least one field"):
        source.emit({})
    with pytest.raises(TypeError, match="values str, bytes or numbers"):
        source.emit({"a": None})
    with pytest.raises(TypeError, match="items must be"):
        source.emit(object())
    with pytest.raises(ValueError, match="maxlen"):
        source.sink_to_redis_stream("s", maxlen=-1)
    with pytest.raises(ValueError, match="key"):
        source.sink_to_redis_list("")
    plain_redis.set("a-string", "x")
    wrong = source.sink_to_redis_stream("a-string", url=redis_url)
    to_stream.destroy()
    source.emit({"a": 1})
    wrong.flush()
    assert wrong.error is not None and "WRONGTYPE" in str(wrong.error)
    wrong.close()


async def test_sink_backpressure(redis_url: str, plain_redis: redis.Redis) -> None:
    """Beyond high_water queued items, update() hands the upstream a future to wait for."""
    source = Stream(asynchronous=True, loop=IOLoop.current())
    sink = source.sink_to_redis_list("q", url=redis_url, high_water=100, max_batch=50)
    most = 0
    for i in range(2000):
        await source.emit(str(i))  # waits when the sink's queue is full
        most = max(most, len(sink._queue))
    await sink.aflush()
    assert most <= 100
    assert await asyncio.to_thread(plain_redis.llen, "q") == 2000
    await sink.aclose()


def test_sink_reuses_its_sources_connection_settings(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """A sink given neither url nor client_params writes where its data came from (the
    nearest fastredis source upstream), not to localhost:6379."""
    source = Stream.from_redis_streams("s", url=redis_url, default_start_id="0")
    sink = source.map(lambda m: m.data).sink_to_redis_stream("copy")
    lists = source.map(lambda m: m.data["i"]).sink_to_redis_list("copied")
    assert (sink.url, lists.url) == (redis_url, redis_url)  # checked before anything runs
    other_db = redis_url.rsplit("/", 1)[0] + "/1"
    told = source.map(lambda m: m.id).sink_to_redis_list("elsewhere", url=other_db)
    assert told.url == other_db and told.client_params == {}  # unless told otherwise
    for i in range(3):
        plain_redis.xadd("s", {"i": i})
    source.start()
    sources.append(source)
    wait_until(lambda: plain_redis.xlen("copy") == 3 and plain_redis.llen("copied") == 3)
    assert plain_redis.lrange("copied", 0, -1) == [b"0", b"1", b"2"]
    with redis.Redis.from_url(other_db) as db1:
        wait_until(lambda: db1.llen("elsewhere") == 3, what="the sink told where to write")
