"""from_redis_streams: start ids, ids as numbers, count, batch modes, encodings, restarts."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from streamz import Stream
from support.streamz_helpers import Collector, collect, sources_fixture  # noqa: F401
from support.waiting import wait_until
from tornado.ioloop import IOLoop

from fastredis import StreamBatch
from fastredis.streamz.message import Message


def test_ids_compared_as_numbers_5_9_then_5_10(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """'5-9' > '5-10' as strings: the tools this replaces delivered 5-10 twice."""
    plain_redis.xadd("s", {"n": "a"}, id="5-9")
    plain_redis.xadd("s", {"n": "b"}, id="5-10")
    got = collect(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", count=1), sources
    )
    assert got.wait_for(2) == [("s", "5-9", {"n": "a"}), ("s", "5-10", {"n": "b"})]
    plain_redis.xadd("s", {"n": "c"}, id="5-11")
    plain_redis.xadd("s", {"n": "d"}, id="10-0")
    wait_until(lambda: len(got) >= 4, what="4 entries")
    got.wait_for(4)
    assert [m[1] for m in got.items] == ["5-9", "5-10", "5-11", "10-0"]
    assert sources[0].last_ids == {"s": "10-0"}


def test_default_start_id_dollar_zero_and_id(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(4)]
    new = collect(Stream.from_redis_streams("s", url=redis_url), sources)  # "$"
    zero = collect(Stream.from_redis_streams("s", url=redis_url, default_start_id="0"), sources)
    after = collect(Stream.from_redis_streams("s", url=redis_url, default_start_id=ids[2]), sources)
    last = plain_redis.xadd("s", {"i": 4}).decode()
    assert [m[1] for m in zero.wait_for(5)] == [*ids, last]
    assert [m[1] for m in after.wait_for(2)] == [ids[3], last]
    assert [m[1] for m in new.wait_for(1)] == [last]


def test_dollar_on_a_missing_stream_reads_what_comes(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    got = collect(Stream.from_redis_streams("nothing-yet", url=redis_url), sources)
    entry_id = plain_redis.xadd("nothing-yet", {"x": 1}).decode()
    assert got.wait_for(1) == [("nothing-yet", entry_id, {"x": "1"})]


def test_count_limits_each_read(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    for i in range(10):
        plain_redis.xadd("s", {"i": i})
    got = collect(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", count=3, batch=True),
        sources,
    )
    wait_until(lambda: sum(map(len, got.items)) == 10, what="10 entries")
    assert all(isinstance(b, StreamBatch) for b in got.items)
    assert [len(b) for b in got.items] == [3, 3, 3, 1]
    assert [m[2]["i"] for b in got.items for m in b] == [str(i) for i in range(10)]


def test_batch_messages_mode(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    ids = [plain_redis.xadd(f"s{i % 2}", {"i": i}).decode() for i in range(6)]
    source = Stream.from_redis_streams(
        ["s0", "s1"], url=redis_url, default_start_id="0", batch="messages"
    )
    got = collect(source, sources)
    wait_until(lambda: sum(map(len, got.items)) == 6, what="6 entries")
    msgs = [m for batch in got.items for m in batch]
    assert all(type(b) is list for b in got.items)
    assert all(type(m) is Message for m in msgs)
    assert sorted(msgs) == sorted(Message(f"s{i % 2}", ids[i], {"i": str(i)}) for i in range(6))


def test_timeout_repeats_reads_until_data(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = Stream.from_redis_streams("s", url=redis_url, timeout=0.05)
    assert source._block == 50
    got = collect(source, sources)
    threading.Event().wait(0.3)  # several BLOCK 50 timeouts go by with nothing emitted
    assert got.items == []
    entry_id = plain_redis.xadd("s", {"late": 1}).decode()
    assert got.wait_for(1) == [("s", entry_id, {"late": "1"})]


def test_convert_false_gives_bytes(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    entry_id = plain_redis.xadd("s", {"k": b"\xff\x00"})
    got = collect(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", convert=False), sources
    )
    assert got.wait_for(1) == [(b"s", entry_id, {b"k": b"\xff\x00"})]
    plain_redis.xadd("s", {"k": b"more"})
    assert got.wait_for(2)[1][2] == {b"k": b"more"}  # resumes after the bytes id


def test_encoding(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    plain_redis.xadd("s", {"k": "é".encode("latin-1")})
    got = collect(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", encoding="latin-1"),
        sources,
    )
    assert got.wait_for(1)[0][2] == {"k": "é"}


def test_client_params_and_url(
    redis_server, redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.select(2)
    plain_redis.xadd("s", {"db": 2})
    by_params = Stream.from_redis_streams(
        "s", client_params={"host": redis_server.host, "port": redis_server.port, "db": 2},
        default_start_id="0",
    )  # fmt: skip
    by_url = Stream.from_redis_streams("s", url=redis_url[:-1] + "2", default_start_id="0")
    assert collect(by_params, sources).wait_for(1)[0][2] == {"db": "2"}
    assert collect(by_url, sources).wait_for(1)[0][2] == {"db": "2"}


def test_exception_downstream_is_logged_and_reading_goes_on(
    redis_url: str, plain_redis: redis.Redis, sources: list, caplog: pytest.LogCaptureFixture
) -> None:
    def picky(m):
        if m[2]["i"] == "1":
            raise ValueError("bad entry")
        return m

    source = Stream.from_redis_streams("s", url=redis_url)
    got = Collector()
    source.map(picky).sink(got)
    source.start()
    sources.append(source)
    for i in range(3):
        plain_redis.xadd("s", {"i": i})
    wait_until(lambda: len(got) == 2, what="entries 0 and 2")
    assert [m[2]["i"] for m in got.items] == ["0", "2"]
    assert not source.stopped


def test_key_replaced_by_another_type_while_running(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = Stream.from_redis_streams("s", url=redis_url, timeout=0.05)
    collect(source, sources)
    plain_redis.rpush("s", "now a list")
    wait_until(lambda: source.error is not None, what="the source to stop with an error")
    assert isinstance(source.error, TypeError) and "'s' holds a list" in str(source.error)
    assert source.stopped


def test_restart_after_stop_resumes_after_last_id(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = Stream.from_redis_streams("s", url=redis_url, default_start_id="0")
    got = collect(source, sources)
    plain_redis.xadd("s", {"i": 0})
    got.wait_for(1)
    source.stop()
    plain_redis.xadd("s", {"i": 1})
    source.start()
    plain_redis.xadd("s", {"i": 2})
    assert [m[2]["i"] for m in got.wait_for(3)] == ["0", "1", "2"]


async def test_runs_on_the_callers_loop(redis_url: str, plain_redis: redis.Redis) -> None:
    """With loop=IOLoop.current() the source runs on the test's own asyncio loop, which a
    blocking read must never block."""
    source = Stream.from_redis_streams("s", url=redis_url, loop=IOLoop.current())
    got = Collector()
    source.sink(got)
    source.start()  # on the loop: returns at once
    ticks = 0
    while source.client is None or not source._ids:
        await asyncio.sleep(0.01)
        ticks += 1
    for _ in range(5):  # the loop keeps turning while XREAD BLOCK 0 waits
        await asyncio.sleep(0.01)
        ticks += 1
    await asyncio.to_thread(plain_redis.xadd, "s", {"x": 1})
    for _ in range(500):
        if got.items:
            break
        await asyncio.sleep(0.01)
    assert got.items and got.items[0][2] == {"x": "1"}
    source.stop()
    for _ in range(500):
        if source.client is None:
            break
        await asyncio.sleep(0.01)
    assert source.client is None and ticks >= 5
