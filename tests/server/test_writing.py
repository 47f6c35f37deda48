"""The server's write path against a real Redis: the all-or-none Lua script and the
pipelined writer (order, ids, backpressure, a refused write)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from fastredis.redis_io import make_async_client
from fastredis.server.protocol import BadInput
from fastredis.server.settings import Settings
from fastredis.server.writing import PipelinedWriter, add_entries


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = make_async_client(Settings(redis_url=redis_url).client_params, url=redis_url)
    yield c
    await c.aclose()


async def test_add_entries_ids_and_partial_ids(
    client: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    ids = await add_entries(
        client, [("s", "5-1", b"a"), ("s", "5-*", b"b"), ("s", "6-*", b"c"), ("t", "*", b"d")], 0
    )
    assert ids[:3] == ["5-1", "5-2", "6-0"]
    assert plain_redis.xrange("t")[0][0].decode() == ids[3]
    assert [e[1][b"d"] for e in plain_redis.xrange("s")] == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    "entries",
    [
        [("s", "9-0", b"x"), ("s", "9-0", b"y")],  # the same id twice
        [("s", "9-5", b"x"), ("s", "9-1", b"y")],  # going back
        [("s", "*", b"x"), ("s", "99999999999999-0", b"y")],  # explicit after *
        [("s", "5-*", b"x"), ("s", "5-3", b"y")],  # after 5-<unknown seq>
        [("s", "1-0", b"x"), ("s", "*", b"y")],  # below the stream's last id (5-0)
        [("s", "*", b"x"), ("text", "*", b"y")],  # a key that is not a stream
    ],
)
async def test_add_entries_refuses_before_writing(
    client: redis.asyncio.Redis, plain_redis: redis.Redis, entries: list[tuple[str, str, bytes]]
) -> None:
    plain_redis.xadd("s", {"d": "old"}, id="5-0")
    plain_redis.set("text", "x")
    with pytest.raises(BadInput, match="nothing written") as info:
        await add_entries(client, entries, 1000)
    assert info.value.status == 409
    assert plain_redis.xlen("s") == 1
    assert plain_redis.xinfo_stream("s")["last-generated-id"] == b"5-0"


async def test_add_entries_bad_id_is_refused_in_python(client: redis.asyncio.Redis) -> None:
    with pytest.raises(BadInput, match="bad entry id") as info:
        await add_entries(client, [("s", "x-1", b"a"), ("s", "*", b"b")], 0)
    assert info.value.code == 1007


async def test_pipelined_writer_order_ids_and_backpressure(
    client: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    acked: list[list[str]] = []
    most_pending = 0

    async def on_ids(ids: list[str]) -> None:
        acked.append(ids)

    writer = await PipelinedWriter(
        client, 0, on_ids=on_ids, max_pending=8, max_unsent_bytes=4096
    ).start()
    for i in range(500):
        await writer.write([("s", "*", str(i).encode() * 50)])
        most_pending = max(most_pending, writer._pending)
    await writer.drain()
    await writer.close()
    assert most_pending <= 8
    assert [int(e[1][b"d"][: len(str(i))]) for i, e in enumerate(plain_redis.xrange("s"))] == list(
        range(500)
    )
    assert [ids[0] for ids in acked] == [i.decode() for i, _ in plain_redis.xrange("s")]


async def test_pipelined_writer_stops_at_a_refused_write(
    client: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    plain_redis.set("text", "x")
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    writer = await PipelinedWriter(client, 0, on_error=on_error).start()
    await writer.write([("s", "*", b"before")])
    await writer.write([("s", "*", b"a"), ("text", "*", b"b")])
    with pytest.raises(BadInput):
        await writer.drain()
    with pytest.raises(BadInput):
        await writer.write([("s", "*", b"after")])
    await writer.close()
    refusal = "stream 'text' holds a string, not a stream; nothing written"
    assert [str(e) for e in errors] == [refusal]
    assert [e[1][b"d"] for e in plain_redis.xrange("s")] == [b"before"]
    await asyncio.sleep(0)  # nothing left running
