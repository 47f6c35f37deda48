"""WS /data/{sid}/push?producer=ID: exactly-once pushes from producers that reconnect.

The hello frame's count, numbering across sockets, a resent message acked with its
original ids (two sockets racing), the state's expiry and bound, refused producer ids
(1008 with the reason) and nothing partial written.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import websockets
from support.live_server import LiveServer

from fastredis.embedded import EmbeddedCluster, EmbeddedRedis
from fastredis.redis_io.lua import with_text
from fastredis.redis_io.producers import (
    INDEX_TTLS,
    MAX_PRODUCER_ID,
    MAX_PRODUCERS,
    PRODUCER_WINDOW,
    parse_state,
    produce_command,
    producer_keys,
)
from fastredis.server import Settings, create_app

DEADLINE = 10.0


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_server.url, maxlen=0, producer_ttl=3600)
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture
def url(server: LiveServer, redis_url: str) -> str:
    return server.ws_url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


def connect(url: str) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None)


async def send(ws: Any, *payloads: bytes) -> None:
    ends, total = [], 0
    for p in payloads:
        total += len(p)
        ends.append(total)
    await ws.send(json.dumps(ends))
    await ws.send(b"".join(payloads))


async def recv(ws: Any) -> Any:
    return await asyncio.wait_for(ws.recv(), DEADLINE)


async def hello(ws: Any) -> dict[str, Any]:
    frame = json.loads(await recv(ws))
    assert set(frame) == {"producer", "committed", "recent"}
    return frame


async def closed_with(ws: Any) -> tuple[int, str]:
    with pytest.raises(websockets.ConnectionClosed) as info:
        for _ in range(100):
            await recv(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def payloads(r: redis.Redis, sid: str) -> list[bytes]:
    return [fields[b"d"] for _id, fields in r.xrange(sid)]


async def test_count_carries_across_sockets(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?producer=cam1") as ws:
        assert await hello(ws) == {"producer": "cam1", "committed": 0, "recent": {}}
        await send(ws, b"m1")
        first = json.loads(await recv(ws))
        await send(ws, b"m2a", b"m2b")
        second = json.loads(await recv(ws))
    assert len(first) == 1 and len(second) == 2
    async with connect(f"{url}/data/s/push?producer=cam1") as ws:
        again = await hello(ws)
        assert again["committed"] == 2
        assert again["recent"] == {"1": first, "2": second}
        await send(ws, b"m3")
        await recv(ws)
    async with connect(f"{url}/data/s/push?producer=other") as ws:
        assert (await hello(ws))["committed"] == 0  # counts are per producer
    assert payloads(r, "s") == [b"m1", b"m2a", b"m2b", b"m3"]


async def test_a_message_committed_by_another_socket_is_acked_not_written(
    url: str, r: redis.Redis
) -> None:
    # Two sockets of one producer (an old one not yet gone): both learn committed=0,
    # both send message 1; the second gets the first one's ids, nothing doubles.
    async with (
        connect(f"{url}/data/s/push?producer=p") as a,
        connect(f"{url}/data/s/push?producer=p") as b,
    ):
        assert (await hello(a))["committed"] == 0
        assert (await hello(b))["committed"] == 0
        await send(a, b"one")
        ids_a = json.loads(await recv(a))
        await send(b, b"one")
        ids_b = json.loads(await recv(b))
        await send(b, b"two")
        two = json.loads(await recv(b))
    assert ids_b == ids_a
    assert payloads(r, "s") == [b"one", b"two"]
    assert [i.decode() for i, _f in r.xrange("s")] == [*ids_a, *two]


async def test_multi_stream_message_and_count_are_one_step(url: str, r: redis.Redis) -> None:
    r.set("bad", "a string")
    async with connect(f"{url}/data/a+bad/push?producer=p") as ws:
        await hello(ws)
        await send(ws, b"x")
        code, reason = await closed_with(ws)
    assert code == 1008 and "string" in reason
    assert r.xlen("a") == 0  # nothing partial: not a's entry, not the count
    state, _index = producer_keys(["a", "bad"], "p")
    assert r.get(state) is None


async def test_only_the_last_ids_are_kept_and_state_expires(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?producer=p") as ws:
        await hello(ws)
        for k in range(PRODUCER_WINDOW + 3):
            await send(ws, b"%d" % k)
            await recv(ws)
    state, index = producer_keys(["s"], "p")
    committed, recent = parse_state(r.get(state))
    assert committed == PRODUCER_WINDOW + 3
    assert sorted(recent) == list(range(4, PRODUCER_WINDOW + 4))
    assert 3500_000 < r.pttl(state) <= 3600_000
    # the index outlives the states it counts (renewed every 10 messages)
    assert INDEX_TTLS * 3500_000 < r.pttl(index) <= INDEX_TTLS * 3600_000


async def test_state_expiry_is_configurable(redis_server: EmbeddedRedis, redis_url: str) -> None:
    settings = Settings(redis_url=redis_server.url, producer_ttl=5)
    with LiveServer(create_app(settings)) as live, redis.Redis.from_url(redis_url) as r:
        async with connect(f"{live.ws_url}/data/s/push?producer=p") as ws:
            await hello(ws)
            await send(ws, b"x")
            await recv(ws)
        state, _index = producer_keys(["s"], "p")
        assert 0 < r.pttl(state) <= 5000


async def test_each_write_renews_the_states_expiry(url: str, r: redis.Redis) -> None:
    # The state expires ttl after the producer's last write, never while it writes.
    state, _index = producer_keys(["s"], "p")
    async with connect(f"{url}/data/s/push?producer=p") as ws:
        await hello(ws)
        for k in range(3):
            await send(ws, b"%d" % k)
            await recv(ws)
            assert 3500_000 < r.pttl(state) <= 3600_000
            r.pexpire(state, 60_000)  # as if 59 minutes went by before the next write
    assert parse_state(r.get(state))[0] == 3
    assert r.pttl(state) <= 60_000


async def test_a_stream_made_anew_by_a_producer_gets_a_new_epoch(url: str, r: redis.Redis) -> None:
    epochs = []
    async with connect(f"{url}/data/s+t/push?producer=p") as ws:
        await hello(ws)
        for message in ([["s", 1]], [["s", 1], ["t", 2]]):  # one entry, then two streams
            await ws.send(json.dumps(message))
            await ws.send(b"xy"[: message[-1][1]])
            await recv(ws)
            epochs.append(r.get("XEPOCH:{s}"))
            r.delete("s")
    assert epochs[0] and epochs[1] and epochs[0] != epochs[1]
    assert r.get("XEPOCH:{t}")


def test_a_resent_message_gets_its_ids_while_in_the_window(r: redis.Redis) -> None:
    keys = producer_keys(["s"], "p")

    def write(seq: int) -> Any:
        return r.execute_command(
            *with_text(produce_command(keys, ["s"], seq, [(1, "*", (b"d", b"%d" % seq))], 60))
        )

    ids = {seq: write(seq).decode() for seq in range(1, PRODUCER_WINDOW + 5)}
    last = PRODUCER_WINDOW + 4
    for seq in (last, last - PRODUCER_WINDOW + 1):
        assert [i.decode() for i in write(seq)] == [ids[seq]]  # answered, not written
    with pytest.raises(redis.ResponseError, match=f"only the ids of the last {PRODUCER_WINDOW}"):
        write(last - PRODUCER_WINDOW)
    assert r.xlen("s") == last
    assert write(last + 2)  # a number skipped (a refused write): counted from there
    assert parse_state(r.get(keys[0]))[0] == last + 2


def test_a_resent_message_of_several_entries_gets_all_its_ids(r: redis.Redis) -> None:
    keys = producer_keys(["s", "t"], "p")
    entries = [(1, "*", (b"d", b"a")), (2, "*", (b"d", b"b")), (1, "*", (b"d", b"c"))]
    first = r.execute_command(*with_text(produce_command(keys, ["s", "t"], 1, entries, 60)))
    assert len(first) == 3
    assert r.execute_command(*with_text(produce_command(keys, ["s", "t"], 1, entries, 60))) == first
    assert (r.xlen("s"), r.xlen("t")) == (2, 1)  # written once
    assert parse_state(r.get(keys[0])) == (1, {1: [i.decode() for i in first]})


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("producer=", "non-empty"),
        ("producer=" + "x" * (MAX_PRODUCER_ID + 1), "over the limit"),
        ("producer=a%20b", "letters, digits"),
        ("producer=a%7Cb", "letters, digits"),
        ("producer=p&ack=0", "needs its acks"),
    ],
)
async def test_bad_producer_ids_close_1008(url: str, query: str, why: str) -> None:
    async with connect(f"{url}/data/s/push?{query}") as ws:
        code, reason = await closed_with(ws)
    assert code == 1008 and why in reason


async def test_an_empty_message_is_refused(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?producer=p") as ws:
        await hello(ws)
        await ws.send("[]")
        await ws.send(b"")
        code, reason = await closed_with(ws)
    assert code == 1008 and "at least one entry" in reason


async def test_plain_pushes_are_unchanged(url: str, r: redis.Redis) -> None:
    async with connect(f"{url}/data/s/push?ack=1") as ws:
        await send(ws, b"x")
        first = await recv(ws)  # no hello: the ids come first
    assert isinstance(json.loads(first), list)
    assert r.keys("XPROD*") == []


@pytest.mark.parametrize("query", ["producer=p", "ack=1"])
async def test_a_script_flush_between_pushes_loses_and_doubles_nothing(
    url: str, r: redis.Redis, query: str
) -> None:
    # The lanes call their scripts by hash; Redis forgetting them (SCRIPT FLUSH, as on
    # a restart) answers NOSCRIPT and the message is sent again with the script's text.
    async def push(*entries: tuple[str, bytes]) -> None:  # [[sid, end], ...] headers
        ends, total = [], 0
        for sid, payload in entries:
            total += len(payload)
            ends.append([sid, total])
        await ws.send(json.dumps(ends))
        await ws.send(b"".join(p for _sid, p in entries))

    def noscripts() -> int:
        return int(r.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0))

    before = noscripts()
    async with connect(f"{url}/data/s+t/push?{query}") as ws:
        if query.startswith("producer"):
            await hello(ws)
        acked = []
        for message in ([("s", b"m1")], [("s", b"m2")], [("s", b"m3"), ("t", b"m4")]):
            r.script_flush()
            await push(*message)
            acked.append(json.loads(await recv(ws)))
        r.script_flush()
        for message in ([("s", b"m5")], [("s", b"m6"), ("t", b"m7")], [("s", b"m8")]):
            await push(*message)  # several on their way at once
        for _ in range(3):
            acked.append(json.loads(await recv(ws)))
    assert payloads(r, "s") == [b"m1", b"m2", b"m3", b"m5", b"m6", b"m8"]
    assert payloads(r, "t") == [b"m4", b"m7"]
    assert [len(ids) for ids in acked] == [1, 1, 2, 1, 2, 1]
    # each flush was met by a NOSCRIPT, but for plain pushes of one entry to a stream
    # the socket wrote to (m2, m5): those go as XADD NOMKSTREAM, with no script
    assert noscripts() - before >= (4 if query.startswith("producer") else 3)
    if query.startswith("producer"):
        state, _index = producer_keys(["s", "t"], "p")
        assert parse_state(r.get(state))[0] == 6


def test_producers_per_stream_set_are_bounded(r: redis.Redis) -> None:
    def one(producer: str) -> Any:
        keys = producer_keys(["s"], producer)
        cmd = produce_command(keys, ["s"], 1, [(1, "*", (b"d", b"x"))], 3600)
        return r.execute_command(*with_text(cmd))

    pipe = r.pipeline(transaction=False)
    for k in range(MAX_PRODUCERS):
        keys = producer_keys(["s"], f"p{k}")
        cmd = produce_command(keys, ["s"], 1, [(1, "*", (b"d", b"x"))], 3600)
        pipe.execute_command(*with_text(cmd))
    pipe.execute()
    with pytest.raises(redis.ResponseError, match="producers already"):
        one("late")
    assert r.xlen("s") == MAX_PRODUCERS  # the refused one wrote nothing
    r.delete(producer_keys(["s"], "p7")[0])  # one state expired: room for one more
    late = one("late")  # a message of one entry: its id
    assert r.xrange("s", late, late)
    assert len(one("p0")) == 1  # a known producer is never refused (a resend here: [id])


def test_the_producer_index_outlives_a_producer_that_writes_on(r: redis.Redis) -> None:
    """The index counting a stream set's producers (the bound) is renewed as they
    write: a producer writing for ten times the ttl and more is counted all along."""
    ttl = 0.05
    keys = producer_keys(["s"], "p")
    index = keys[1]
    k, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 12 * ttl or k < 25:
        k += 1
        cmd = produce_command(keys, ["s"], k, [(1, "*", (b"d", b"x"))], ttl)
        r.execute_command(*with_text(cmd))
        assert r.sismember(index, "p"), f"not counted after message {k}"
        time.sleep(ttl / 3)  # the producer's pace: a message before its state expires
    assert r.pttl(index) > 1000 * ttl  # outlives the state by more than a ttl


async def test_producer_pushes_on_a_redis_cluster(
    redis_cluster: EmbeddedCluster, cluster_url: str
) -> None:
    from fastredis.client import Client

    app = create_app(Settings(redis_url=redis_cluster.url, maxlen=0))
    with LiveServer(app) as live, redis.RedisCluster.from_url(cluster_url) as r:
        with Client(live.ws_url) as c:
            for sid in ("{cam1}:rgb", "plain", "other"):  # streams on several nodes
                for i in range(3):
                    c.push(sid, b"%d" % i, producer="p")
            ids = c.push("{cam1}:rgb+{cam1}:depth", [b"x"], producer="p")
            assert ids is not None and len(ids) == 2  # one message, two streams, one slot
        for sid in ("{cam1}:rgb", "plain", "other"):
            state, _index = producer_keys([sid], "p")
            assert r.keyslot(state) == r.keyslot(sid)
            assert parse_state(r.get(state))[0] == 3
        async with connect(f"{live.ws_url}/data/a%7Bb/push?producer=p") as ws:  # "a{b"
            code, reason = await closed_with(ws)
        assert code == 1008 and "hash tag" in reason
