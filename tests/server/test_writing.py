"""The server's write path against a real Redis: the all-or-none Lua script and the
shared write lanes (order, ids, backpressure, a refused write, many writers on few
connections)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from fastredis.redis_io import make_async_client
from fastredis.server.edge.protocol import BadInput
from fastredis.server.run.settings import Settings
from fastredis.server.writes.write_lanes import WriteLanes

Entries = list[tuple[str, str, bytes]]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    c = make_async_client(Settings(redis_url=redis_url).client_params, url=redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def lanes(client: redis.asyncio.Redis) -> AsyncIterator[WriteLanes]:
    lanes = WriteLanes(client, 2, 0)
    yield lanes
    await lanes.close()


async def add_entries(lanes: WriteLanes, entries: Entries) -> list[str]:
    return await lanes.add(entries)


async def test_add_entries_ids_and_partial_ids(lanes: WriteLanes, plain_redis: redis.Redis) -> None:
    ids = await add_entries(
        lanes, [("s", "5-1", b"a"), ("s", "5-*", b"b"), ("s", "6-*", b"c"), ("t", "*", b"d")]
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
    client: redis.asyncio.Redis, plain_redis: redis.Redis, entries: Entries
) -> None:
    plain_redis.xadd("s", {"d": "old"}, id="5-0")
    plain_redis.set("text", "x")
    with pytest.raises(BadInput, match="nothing written") as info:
        await WriteLanes(client, 1, 1000).add(entries)
    assert info.value.status == 409
    assert plain_redis.xlen("s") == 1
    assert plain_redis.xinfo_stream("s")["last-generated-id"] == b"5-0"


async def test_add_entries_bad_id_is_refused_in_python(lanes: WriteLanes) -> None:
    with pytest.raises(BadInput, match="bad entry id") as info:
        await add_entries(lanes, [("s", "x-1", b"a"), ("s", "*", b"b")])
    assert info.value.code == 1007


async def test_writer_order_ids_and_backpressure(
    lanes: WriteLanes, plain_redis: redis.Redis
) -> None:
    acked: list[list[str]] = []
    most_pending = 0

    async def on_ids(ids: list[str]) -> None:
        acked.append(ids)

    writer = lanes.writer(on_ids=on_ids, max_pending=8, max_unsent_bytes=4096)
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


async def test_a_refused_write_ends_only_its_own_writer(
    client: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    plain_redis.set("text", "x")
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    lanes = WriteLanes(client, 1, 0)  # both writers on the one lane
    bad = lanes.writer(on_error=on_error)
    good = lanes.writer()
    await bad.write([("s", "*", b"before")])
    await bad.write([("s", "*", b"a"), ("text", "*", b"b")])
    await good.write([("g", "*", b"1")])
    with pytest.raises(BadInput):
        await bad.drain()
    with pytest.raises(BadInput):
        await bad.write([("s", "*", b"after")])
    await good.write([("g", "*", b"2")])
    await good.drain()
    await bad.close()
    await good.close()
    await lanes.close()
    refusal = "stream 'text' holds a string, not a stream; nothing written"
    assert [str(e) for e in errors] == [refusal]
    assert [e[1][b"d"] for e in plain_redis.xrange("s")] == [b"before"]
    assert [e[1][b"d"] for e in plain_redis.xrange("g")] == [b"1", b"2"]


async def test_many_writers_share_the_lanes_connections(
    lanes: WriteLanes, plain_redis: redis.Redis
) -> None:
    """200 writers at once, each acked in its own order, over 2 Redis connections."""
    before = plain_redis.info("clients")["connected_clients"]
    acked: dict[int, list[str]] = {k: [] for k in range(200)}

    async def one(k: int) -> None:
        async def on_ids(ids: list[str]) -> None:
            acked[k].extend(ids)

        writer = lanes.writer(on_ids=on_ids)
        for i in range(20):
            await writer.write([(f"w{k}", "*", b"%d" % i)])
        await writer.close()

    await asyncio.gather(*(one(k) for k in range(200)))
    assert lanes.connections() == 2
    assert plain_redis.info("clients")["connected_clients"] - before <= 2
    for k in (0, 99, 199):
        entries = plain_redis.xrange(f"w{k}")
        assert [e[1][b"d"] for e in entries] == [b"%d" % i for i in range(20)]
        assert acked[k] == [e[0].decode() for e in entries]


async def test_a_slow_ack_reader_does_not_hold_up_the_lane(
    lanes: WriteLanes, plain_redis: redis.Redis
) -> None:
    """A writer whose acks cannot be sent (its socket is stuck) does not stop another
    writer on the same lane."""
    stuck = asyncio.Event()

    async def never(ids: list[str]) -> None:
        await stuck.wait()

    slow = lanes.writer(on_ids=never)  # lane 0
    lanes.writer()  # lane 1
    fast = lanes.writer()  # lane 0 again
    for _ in range(50):
        await slow.write([("slow", "*", b"x")])
    for i in range(50):
        await fast.write([("fast", "*", b"%d" % i)])
    await asyncio.wait_for(fast.drain(), 30)
    assert plain_redis.xlen("fast") == 50
    assert plain_redis.xlen("slow") == 50
    stuck.set()
    await slow.close()
    await fast.close()


async def test_a_stream_deleted_under_a_writer_is_made_anew_in_order(
    lanes: WriteLanes, plain_redis: redis.Redis
) -> None:
    """A writer's stream deleted between its messages (they go as plain XADDs once the
    stream is known): the next messages, pipelined, make it anew with a new epoch, in
    order, none lost."""
    acked: list[str] = []

    async def on_ids(ids: list[str]) -> None:
        acked.extend(ids)

    writer = lanes.writer(on_ids=on_ids)
    for i in range(3):
        await writer.write([("s", "*", b"old%d" % i)])
        await writer.drain()
    old_epoch = plain_redis.get("XEPOCH:{s}")
    assert old_epoch
    plain_redis.delete("s")
    for i in range(20):  # queued at once: pipelined on the lane
        await writer.write([("s", "*", b"new%d" % i)])
    await writer.drain()
    await writer.write([("s", "*", b"last")])
    await writer.close()
    entries = plain_redis.xrange("s")
    assert [e[1][b"d"] for e in entries] == [b"new%d" % i for i in range(20)] + [b"last"]
    assert acked[3:] == [e[0].decode() for e in entries]
    assert plain_redis.get("XEPOCH:{s}") not in (None, old_epoch)
