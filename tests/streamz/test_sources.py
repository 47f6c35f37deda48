"""from_redis_streams and from_redis_lists: options, ids, batch modes, errors, stop and cleanup."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
from streamz import Stream
from support.streamz_helpers import Collector, sources_fixture  # noqa: F401
from support.waiting import wait_until
from tornado.ioloop import IOLoop

from fastredis import StreamBatch
from fastredis.embedded import free_port
from fastredis.message import Message, parse_id


def _start(source, sources: list) -> Collector:
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    return got


# -- Message ---------------------------------------------------------------------------------


def test_message_is_a_tuple_with_copy() -> None:
    m = Message("s", "1-0", {"a": "1"})
    assert m == ("s", "1-0", {"a": "1"}) and isinstance(m, tuple) and len(m) == 3
    assert (m.stream, m.id, m.data) == ("s", "1-0", {"a": "1"})
    _stream, _entry_id, data = m.copy()
    data["b"] = "2"
    assert m.data == {"a": "1"}  # the copy's dict is a new one
    assert m.copy() == m and type(m.copy()) is Message
    assert Message("s", "1-0", None).copy().data is None


def test_parse_id_is_numeric() -> None:
    assert parse_id("5-10") > parse_id("5-9")
    assert parse_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_id("7") == (7, 0)
    with pytest.raises(ValueError):
        parse_id("x-1")


# -- from_redis_streams ------------------------------------------------------------------------


def test_ids_compared_as_numbers_5_9_then_5_10(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """'5-9' > '5-10' as strings: the tools this replaces delivered 5-10 twice."""
    plain_redis.xadd("s", {"n": "a"}, id="5-9")
    plain_redis.xadd("s", {"n": "b"}, id="5-10")
    got = _start(
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
    new = _start(Stream.from_redis_streams("s", url=redis_url), sources)  # "$"
    zero = _start(Stream.from_redis_streams("s", url=redis_url, default_start_id="0"), sources)
    after = _start(Stream.from_redis_streams("s", url=redis_url, default_start_id=ids[2]), sources)
    last = plain_redis.xadd("s", {"i": 4}).decode()
    assert [m[1] for m in zero.wait_for(5)] == [*ids, last]
    assert [m[1] for m in after.wait_for(2)] == [ids[3], last]
    assert [m[1] for m in new.wait_for(1)] == [last]


def test_dollar_on_a_missing_stream_reads_what_comes(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    got = _start(Stream.from_redis_streams("nothing-yet", url=redis_url), sources)
    entry_id = plain_redis.xadd("nothing-yet", {"x": 1}).decode()
    assert got.wait_for(1) == [("nothing-yet", entry_id, {"x": "1"})]


def test_count_limits_each_read(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    for i in range(10):
        plain_redis.xadd("s", {"i": i})
    got = _start(
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
    got = _start(source, sources)
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
    got = _start(source, sources)
    threading.Event().wait(0.3)  # several BLOCK 50 timeouts go by with nothing emitted
    assert got.items == []
    entry_id = plain_redis.xadd("s", {"late": 1}).decode()
    assert got.wait_for(1) == [("s", entry_id, {"late": "1"})]


@pytest.mark.parametrize(
    ("timeout", "block"), [(0, 0), (None, 0), (0.0005, 0), (0.001, 1), (0.25, 250), (2, 2000)]
)
def test_timeout_seconds_to_block_ms(timeout, block) -> None:
    assert Stream.from_redis_streams("s", timeout=timeout)._block == block


def test_convert_false_gives_bytes(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    entry_id = plain_redis.xadd("s", {"k": b"\xff\x00"})
    got = _start(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", convert=False), sources
    )
    assert got.wait_for(1) == [(b"s", entry_id, {b"k": b"\xff\x00"})]
    plain_redis.xadd("s", {"k": b"more"})
    assert got.wait_for(2)[1][2] == {b"k": b"more"}  # resumes after the bytes id


def test_encoding(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    plain_redis.xadd("s", {"k": "é".encode("latin-1")})
    got = _start(
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
    assert _start(by_params, sources).wait_for(1)[0][2] == {"db": "2"}
    assert _start(by_url, sources).wait_for(1)[0][2] == {"db": "2"}


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


# -- from_redis_lists ----------------------------------------------------------------------------


def test_lists_convert_false_and_timeout(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    got = _start(Stream.from_redis_lists("q", url=redis_url, convert=False, timeout=0.1), sources)
    threading.Event().wait(0.3)
    plain_redis.rpush("q", b"\x00\xff")
    assert got.wait_for(1) == [b"\x00\xff"]


def test_lists_many_items_few_round_trips(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.rpush("q", *[str(i) for i in range(5000)])
    plain_redis.config_resetstat()
    got = _start(Stream.from_redis_lists("q", url=redis_url), sources)
    assert got.wait_for(5000) == [str(i) for i in range(5000)]
    stats = plain_redis.info("commandstats")
    assert stats["cmdstat_blmpop"]["calls"] <= 10  # COUNT 1000 per pop, not one per item


# -- errors ------------------------------------------------------------------------------------


def test_wrong_key_type_names_the_key(redis_url: str, plain_redis: redis.Redis) -> None:
    plain_redis.rpush("a-list", "x")
    plain_redis.xadd("a-stream", {"x": 1})
    with pytest.raises(TypeError, match="'a-list' holds a list, not a stream"):
        Stream.from_redis_streams(["ok", "a-list"], url=redis_url).start()
    with pytest.raises(TypeError, match="'a-list' holds a list, not a stream"):
        Stream.from_redis_consumer_group("a-list", "g", "c", url=redis_url).start()
    with pytest.raises(TypeError, match="'a-stream' holds a stream, not a list"):
        Stream.from_redis_lists("a-stream", url=redis_url).start()


def test_key_replaced_by_another_type_while_running(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = Stream.from_redis_streams("s", url=redis_url, timeout=0.05)
    _start(source, sources)
    plain_redis.rpush("s", "now a list")
    wait_until(lambda: source.error is not None, what="the source to stop with an error")
    assert isinstance(source.error, TypeError) and "'s' holds a list" in str(source.error)
    assert source.stopped


def test_missing_server_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for source in (
        Stream.from_redis_streams("s", url=url),
        Stream.from_redis_lists("q", url=url),
        Stream.from_redis_consumer_group("s", "g", "c", url=url),
    ):
        with pytest.raises(
            redis.exceptions.ConnectionError, match=r"cannot reach Redis at 127\.0\.0\.1"
        ):
            source.start()
        assert source.stopped


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"count": -1}, ValueError, "count must be a positive int"),
        ({"count": 0}, ValueError, "count must be a positive int"),
        ({"count": 2.5}, TypeError, "count must be a positive int"),
        ({"timeout": -1}, ValueError, "timeout must be >= 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"default_start_id": "abc"}, ValueError, "start id"),
        ({"streams": 5}, TypeError, "streams must be"),
        ({"streams": []}, ValueError, "at least one stream"),
        ({"streams": {"s": "nope"}}, ValueError, "start id for stream 's'"),
        ({"batch": "yes"}, ValueError, "batch must be"),
        ({"client_params": "localhost"}, TypeError, "client_params"),
        ({"convert": True, "encoding": None}, ValueError, "encoding"),
    ],
)
def test_bad_arguments_streams(kwargs, error, match) -> None:
    kwargs = {"streams": "s", **kwargs}
    with pytest.raises(error, match=match):
        Stream.from_redis_streams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"group_name": ""}, ValueError, "group_name"),
        ({"consumer_name": None}, ValueError, "consumer_name"),
        ({"heartbeat_interval": 0}, ValueError, "heartbeat_interval"),
        ({"claim_timeout": -5}, ValueError, "claim_timeout"),
        ({"heartbeat_interval": 5, "claim_timeout": 5}, ValueError, "longer than heartbeat"),
        ({"autoclaim_idle": 0}, ValueError, "autoclaim_idle"),
        ({"count": -3}, ValueError, "count"),
    ],
)
def test_bad_arguments_group(kwargs, error, match) -> None:
    kwargs = {"streams": "s", "group_name": "g", "consumer_name": "c", **kwargs}
    with pytest.raises(error, match=match):
        Stream.from_redis_consumer_group(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"keys": []}, TypeError), ({"keys": "q", "count": 0}, ValueError), ({"keys": 3}, TypeError)],
)
def test_bad_arguments_lists(kwargs, error) -> None:
    with pytest.raises(error):
        Stream.from_redis_lists(**kwargs)


# -- stop, cleanup, the loop -------------------------------------------------------------------


def _named(client: redis.Redis, name: str) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == name)


@pytest.mark.parametrize("kind", ["streams", "lists", "group"])
def test_stop_cancels_a_blocking_read_and_closes_connections(
    redis_url: str, plain_redis: redis.Redis, kind: str
) -> None:
    name = f"stop-test-{kind}"
    params = {"client_name": name}  # tells this source's connections from anybody else's
    threads = threading.active_count()
    make = {
        "streams": lambda: Stream.from_redis_streams("s", url=redis_url, client_params=params),
        "lists": lambda: Stream.from_redis_lists("q", url=redis_url, client_params=params),
        "group": lambda: Stream.from_redis_consumer_group(
            "s", "g", "c", url=redis_url, client_params=params,
            heartbeat_interval=0.1, claim_timeout=1,
        ),
    }[kind]  # fmt: skip
    for _ in range(2):  # start again after stop
        source = make()
        got = Collector()
        source.sink(got)
        source.start()
        wait_until(lambda: _named(plain_redis, name) > 0, what="the source's connection")
        if kind == "group":  # reading, heartbeats and the pub/sub listener
            wait_until(lambda: _named(plain_redis, name) >= 3, what="3 connections")
        source.stop()  # the read blocks forever (timeout=0): stop() must cut it
        assert source.stopped
        wait_until(lambda: _named(plain_redis, name) == 0, what="connections closed")
        # (streamz's IO loop thread may start with the first source; nothing beyond that)
        assert threading.active_count() <= threads + 1


def test_restart_after_stop_resumes_after_last_id(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = Stream.from_redis_streams("s", url=redis_url, default_start_id="0")
    got = _start(source, sources)
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


@pytest.mark.parametrize(
    "params", [{"decode_responses": True}, {"protocol": 3}], ids=["decode_responses", "resp3"]
)
def test_client_params_decode_responses_and_resp3(
    redis_url: str, plain_redis: redis.Redis, sources: list, params: dict
) -> None:
    """decode_responses=True or RESP3 in client_params changes nothing the sources emit."""
    plain_redis.xadd("s", {"a": 1})
    plain_redis.rpush("q", "x")
    streams = _start(
        Stream.from_redis_streams("s", url=redis_url, client_params=params, default_start_id="0"),
        sources,
    )
    group = _start(
        Stream.from_redis_consumer_group(
            "s", "g", "c", url=redis_url, client_params=params, heartbeat_interval=0.1,
            claim_timeout=1,
        ),
        sources,
    )  # fmt: skip
    lists = _start(Stream.from_redis_lists("q", url=redis_url, client_params=params), sources)
    assert streams.wait_for(1)[0][2] == {"a": "1"}
    assert group.wait_for(1)[0][2] == {"a": "1"}
    assert lists.wait_for(1) == ["x"]
    wait_until(lambda: plain_redis.xpending("s", "g")["pending"] == 0, what="acks")
