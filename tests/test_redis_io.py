"""Batch reads and the parser hook against a real server, checked against stock redis-py."""

from __future__ import annotations

import os
import time

import pytest
import redis
import redis.asyncio

from fastredis import StreamBatch
from fastredis._resp import READ
from fastredis.redis_io import (
    ReadPipeline,
    axautoclaim_batch,
    axclaim_batch,
    axrange_batch,
    axread_batch,
    axreadgroup_batch,
    axrevrange_batch,
    make_async_client,
    make_client,
    xautoclaim_batch,
    xclaim_batch,
    xrange_batch,
    xread_batch,
    xreadgroup_batch,
    xrevrange_batch,
)

PROTOCOLS = [2, 3]


@pytest.fixture(params=PROTOCOLS, ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def client(redis_url: str, protocol: int) -> redis.Redis:
    with make_client({"protocol": protocol}, url=redis_url) as c:
        yield c


@pytest.fixture
async def aclient(redis_url: str, protocol: int) -> redis.asyncio.Redis:
    c = make_async_client({"protocol": protocol}, url=redis_url)
    yield c
    await c.aclose()


def _fill(r: redis.Redis, key: str, n: int, fields: dict) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(key, fields)
    return pipe.execute()


def _as_stock(batch: StreamBatch) -> list[tuple]:
    """The batch's messages in the shape stock redis-py gives for XRANGE (bytes)."""
    return [(entry_id, fields) for _stream, entry_id, fields in batch]


def test_xread_one_entry_utf8_and_bytes(client: redis.Redis, plain_redis: redis.Redis) -> None:
    entry_id = plain_redis.xadd("s", {"name": "zoë", "n": "1"}).decode()
    batch = xread_batch(client, {"s": "0"})
    assert isinstance(batch, StreamBatch)
    assert list(batch) == [("s", entry_id, {"name": "zoë", "n": "1"})]
    raw = xread_batch(client, {"s": "0"}, encoding=None)
    assert list(raw) == [(b"s", entry_id.encode(), {b"name": "zoë".encode(), b"n": b"1"})]
    assert batch.last_ids() == {"s": entry_id}


def test_xread_10000_entries_equal_stock_redis_py(
    client: redis.Redis, plain_redis: redis.Redis
) -> None:
    _fill(plain_redis, "a", 10_000, {"x": "1", "y": b"\x00\xff\r\n", "z": "three"})
    _fill(plain_redis, "b", 10, {"only": "field"})
    batch = xread_batch(client, {"a": "0", "b": "0"}, encoding=None)
    assert len(batch) == 10_010
    assert batch.streams == (b"a", b"b")
    expected = plain_redis.xread({"a": "0", "b": "0"})
    got = {}
    for stream, entry_id, fields in batch:
        got.setdefault(stream, []).append((entry_id, fields))
    assert got == {name: entries for name, entries in expected}


def test_xread_count_and_cursor_resume(client: redis.Redis, plain_redis: redis.Redis) -> None:
    ids = [i.decode() for i in _fill(plain_redis, "s", 25, {"d": "x"})]
    seen, cursor = [], "0"
    while True:
        batch = xread_batch(client, {"s": cursor}, count=10)
        if not len(batch):
            break
        assert len(batch) <= 10
        seen += batch.ids()
        cursor = batch.last_ids()["s"]
    assert seen == ids


def test_ids_are_ordered_as_numbers_not_strings(
    client: redis.Redis, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("s", {"d": "a"}, id="5-9")
    plain_redis.xadd("s", {"d": "b"}, id="5-10")
    batch = xread_batch(client, {"s": "0"})
    assert batch.ids() == ["5-9", "5-10"]
    assert batch.last_ids() == {"s": "5-10"}
    assert batch.id_at(1) == (5, 10)
    # resuming from the numeric maximum delivers nothing twice
    assert len(xread_batch(client, {"s": batch.last_ids()["s"]})) == 0


def test_empty_stream_and_block_timeout_give_empty_batches(
    client: redis.Redis, plain_redis: redis.Redis
) -> None:
    assert len(xread_batch(client, {"missing": "0"})) == 0
    start = time.monotonic()
    batch = xread_batch(client, {"missing": "$"}, block=100)
    assert len(batch) == 0 and time.monotonic() - start >= 0.09
    assert len(xrange_batch(client, "missing")) == 0


def test_block_outlives_a_short_socket_timeout(redis_url: str, plain_redis: redis.Redis) -> None:
    with make_client({"socket_timeout": 0.2}, url=redis_url) as short:
        start = time.monotonic()
        batch = xread_batch(short, {"s": "$"}, block=600)
        assert len(batch) == 0 and time.monotonic() - start >= 0.55


@pytest.mark.parametrize("size", [0, 1, 1 << 20, 64 << 20], ids=["0B", "1B", "1MB", "64MB"])
def test_payload_sizes_round_trip(client: redis.Redis, plain_redis: redis.Redis, size: int) -> None:
    payload = os.urandom(size)
    plain_redis.xadd("s", {"d": payload})
    batch = xread_batch(client, {"s": "0"}, encoding=None)
    (view,) = batch.field(b"d")
    assert len(view) == size and view == payload
    assert batch[0][2][b"d"] == payload


def test_xrange_and_xrevrange(client: redis.Redis, plain_redis: redis.Redis) -> None:
    ids = [i.decode() for i in _fill(plain_redis, "s", 5, {"d": "v"})]
    assert xrange_batch(client, "s").ids() == ids
    assert xrange_batch(client, "s", ids[1], ids[3]).ids() == ids[1:4]
    assert xrange_batch(client, "s", count=2).ids() == ids[:2]
    assert xrevrange_batch(client, "s").ids() == ids[::-1]
    assert _as_stock(xrange_batch(client, "s", encoding=None)) == plain_redis.xrange("s")


def test_xreadgroup_xclaim_xautoclaim(client: redis.Redis, plain_redis: redis.Redis) -> None:
    ids = [i.decode() for i in _fill(plain_redis, "s", 3, {"d": "v"})]
    plain_redis.xgroup_create("s", "g", id="0")
    batch = xreadgroup_batch(client, "g", "alice", {"s": ">"})
    assert batch.ids() == ids
    # alice's pending entries are replayed with id 0
    assert xreadgroup_batch(client, "g", "alice", {"s": "0"}).ids() == ids
    claimed = xclaim_batch(client, "s", "g", "bob", 0, ids[:2])
    assert claimed.ids() == ids[:2]
    assert [c["name"] for c in plain_redis.xinfo_consumers("s", "g")] == [b"alice", b"bob"]
    auto = xautoclaim_batch(client, "s", "g", "carol", 0, count=10)
    assert sorted(auto.ids()) == ids
    assert auto.cursor == "0-0"
    # a deleted entry is reported, not returned, by XAUTOCLAIM
    plain_redis.xdel("s", ids[0])
    auto = xautoclaim_batch(client, "s", "g", "dave", 0)
    assert auto.ids() == ids[1:]
    assert auto.deleted == [ids[0]]


def test_xreadgroup_empty_pending_history(client: redis.Redis, plain_redis: redis.Redis) -> None:
    plain_redis.xgroup_create("s", "g", id="$", mkstream=True)
    assert len(xreadgroup_batch(client, "g", "c", {"s": "0"})) == 0
    assert len(xreadgroup_batch(client, "g", "c", {"s": ">"}, block=50)) == 0


def test_errors_become_redis_py_exceptions(client: redis.Redis, plain_redis: redis.Redis) -> None:
    plain_redis.set("k", "not a stream")
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        xreadgroup_batch(client, "nogroup", "c", {"s": ">"})
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        xread_batch(client, {"k": "0"})
    # the connection is still usable afterwards
    plain_redis.xadd("s", {"d": "1"})
    assert len(xread_batch(client, {"s": "0"})) == 1


def test_bad_arguments_raise_before_sending(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="count"):
        xread_batch(client, {"s": "0"}, count=0)
    with pytest.raises(ValueError, match="block"):
        xread_batch(client, {"s": "0"}, block=-1)
    with pytest.raises(ValueError, match="streams"):
        xread_batch(client, {})


def test_stock_client_is_refused(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as stock, pytest.raises(TypeError, match="make_client"):
        xread_batch(stock, {"s": "0"})


def test_parser_serves_ordinary_commands(client: redis.Redis, plain_redis: redis.Redis) -> None:
    plain_redis.hset("h", mapping={"a": "1", "b": "2"})
    plain_redis.xadd("s", {"d": "1"})
    assert client.hgetall("h") == plain_redis.hgetall("h")
    assert client.xinfo_stream("s")["length"] == 1
    assert client.incr("n") == 1 and client.get("missing") is None
    pipe = client.pipeline()
    pipe.set("a", "1").get("a").lpush("l", "x", "y").lrange("l", 0, -1)
    assert pipe.execute() == [True, b"1", 2, [b"y", b"x"]]


def test_pubsub_through_the_parser(client: redis.Redis, plain_redis: redis.Redis) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe("chan")
    deadline = time.monotonic() + 5
    message = pubsub.get_message(timeout=1)
    assert message["type"] == "subscribe"
    plain_redis.publish("chan", "hello")
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1)
        if message:
            break
    assert message["type"] == "message" and message["data"] == b"hello"
    pubsub.close()


def test_decode_responses_client(redis_url: str, plain_redis: redis.Redis) -> None:
    plain_redis.set("k", "v")
    with make_client({"decode_responses": True}, url=redis_url) as c:
        assert c.get("k") == "v"


def test_reconnects_after_server_restart(private_redis) -> None:
    with make_client(url=private_redis.url) as c:
        c.xadd("s", {"d": "1"})
        assert len(xread_batch(c, {"s": "0"})) == 1
        private_redis.restart()  # no persistence: the stream is gone
        c.xadd("s", {"d": "2"})
        assert [f["d"] for _s, _i, f in xread_batch(c, {"s": "0"})] == ["2"]


async def test_async_batch_reads(aclient: redis.asyncio.Redis, plain_redis: redis.Redis) -> None:
    ids = [i.decode() for i in _fill(plain_redis, "s", 100, {"d": "v"})]
    assert (await axread_batch(aclient, {"s": "0"})).ids() == ids
    assert (await axrange_batch(aclient, "s", count=5)).ids() == ids[:5]
    assert (await axrevrange_batch(aclient, "s", count=1)).ids() == ids[-1:]
    plain_redis.xgroup_create("s", "g", id="0")
    assert len(await axreadgroup_batch(aclient, "g", "a", {"s": ">"}, count=10)) == 10
    assert (await axclaim_batch(aclient, "s", "g", "b", 0, ids[:3])).ids() == ids[:3]
    auto = await axautoclaim_batch(aclient, "s", "g", "c", 0, count=100)
    assert sorted(auto.ids()) == ids[:10]
    empty = await axread_batch(aclient, {"s": "$"}, block=50)
    assert len(empty) == 0


async def test_read_pipeline_answers_in_order_and_loses_nothing_with_a_reply(
    aclient: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    ids = [i.decode() for i in _fill(plain_redis, "s", 30, {"d": "v"})]
    plain_redis.xgroup_create("s", "g", id="0")
    new = ["XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "s", ">"]
    pipeline = ReadPipeline(aclient)
    try:
        first = await pipeline.send(new, READ, "utf-8", None)
        second = await pipeline.send(new, READ, "utf-8", None)  # before the first's reply
        assert (await second).ids() == ids[10:20]
        assert (await first).ids() == ids[:10]
        # A reply given up on (cancelled before it was read) loses those after it on its
        # connection; the next read goes on another, and nothing Redis delivered is lost.
        given_up = await pipeline.send(new, READ, "utf-8", None)
        after = await pipeline.send(new, READ, "utf-8", None)
        given_up.cancel()
        with pytest.raises(redis.exceptions.ConnectionError):
            await after
        history = ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", "0"]
        assert (await (await pipeline.send(history, READ, "utf-8", None))).ids() == ids
    finally:
        await pipeline.close()


async def test_async_block_outlives_socket_timeout(redis_url: str) -> None:
    c = make_async_client({"socket_timeout": 0.2}, url=redis_url)
    try:
        start = time.monotonic()
        assert len(await axread_batch(c, {"s": "$"}, block=600)) == 0
        assert time.monotonic() - start >= 0.55
    finally:
        await c.aclose()


def test_client_params_without_url(redis_server, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("s", {"d": "1"})
    params = {"host": redis_server.host, "port": redis_server.port, "db": 0}
    with make_client(params) as c:
        assert len(xread_batch(c, {"s": "0"})) == 1


async def test_async_client_params_without_url(redis_server, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("s", {"d": "1"})
    c = make_async_client({"host": redis_server.host, "port": redis_server.port})
    try:
        assert len(await axread_batch(c, {"s": "0"})) == 1
    finally:
        await c.aclose()
