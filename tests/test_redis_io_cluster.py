"""Batch reads over a real Redis Cluster (3 primaries + 3 replicas), sync and asyncio,
checked against stock redis-py reading each stream on its own."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from fastredis.redis_io import (
    FastParser,
    aread_each,
    axrange_batch,
    axread_batch,
    axreadgroup_batch,
    is_cluster,
    make_async_client,
    make_client,
    slot_groups,
    xautoclaim_batch,
    xrange_batch,
    xread_batch,
    xreadgroup_batch,
    xrevrange_batch,
)

# Ten streams spread over every primary (several slots per node) and two sharing a tag.
STREAMS = [f"s{i}" for i in range(10)] + ["{cam1}:rgb", "{cam1}:depth"]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def cluster(cluster_url: str, request: pytest.FixtureRequest) -> Any:
    with make_client({"protocol": request.param}, url=cluster_url) as client:
        yield client


@pytest.fixture
def plain(cluster_url: str) -> Any:
    with redis.RedisCluster.from_url(cluster_url) as client:
        yield client


def _fill(plain: redis.RedisCluster, per_stream: int = 3) -> dict[str, list[tuple]]:
    for j in range(per_stream):
        for name in STREAMS:
            plain.xadd(name, {"d": f"{name}-{j}"})
    return {
        name: [(i.decode(), {k.decode(): v.decode() for k, v in f.items()}) for i, f in entries]
        for name in STREAMS
        for entries in [plain.xrange(name)]
    }


def _by_stream(batch: Any) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for stream, entry_id, fields in batch:
        out.setdefault(stream, []).append((entry_id, fields))
    return out


def test_cluster_mode_is_detected(cluster_url: str, redis_url: str) -> None:
    with make_client(url=cluster_url) as client:
        assert is_cluster(client)
    with make_client(url=redis_url) as client:
        assert not is_cluster(client)
    with make_client(url=cluster_url, cluster=False) as client:
        assert not is_cluster(client)  # told so: one node, as before


def test_multi_slot_read_never_gives_crossslot(cluster: Any, plain: redis.RedisCluster) -> None:
    expected = _fill(plain)
    nodes = {node.name for node, _ in slot_groups(cluster, dict.fromkeys(STREAMS, 0))}
    assert len(nodes) == 3  # the streams really live on every primary
    with pytest.raises(redis.exceptions.RedisClusterException):
        plain.xread(dict.fromkeys(STREAMS, 0))  # stock redis-py refuses it
    batch = xread_batch(cluster, dict.fromkeys(STREAMS, 0))
    assert _by_stream(batch) == expected  # every entry, in id order per stream
    assert list(batch.streams) == STREAMS
    assert xread_batch(cluster, dict.fromkeys(STREAMS, 0), count=1).last_ids() == {
        name: entries[0][0] for name, entries in expected.items()
    }
    # and from the cursor on: nothing twice
    assert len(xread_batch(cluster, batch.last_ids())) == 0


def test_every_node_connection_uses_the_fastredis_parser(cluster: Any, plain) -> None:
    _fill(plain, 1)
    xread_batch(cluster, dict.fromkeys(STREAMS, 0))
    for node in cluster.get_primaries():
        pool = node.redis_connection.connection_pool
        conn = pool.get_connection()
        try:
            assert isinstance(conn._parser, FastParser)
        finally:
            pool.release(conn)


def test_names_go_out_in_the_client_s_encoding(cluster_url: str, plain) -> None:
    _fill(plain, 1)
    with redis.RedisCluster.from_url(cluster_url, encoding="latin-1") as latin:
        latin.xadd("caf\u00e9", {"d": "x"})  # the key is b"caf\xe9"
    with make_client({"encoding": "latin-1"}, url=cluster_url) as client:
        batch = xread_batch(client, {"caf\u00e9": 0, "s0": 0}, encoding="latin-1")
        assert batch.streams == ("caf\u00e9", "s0") and len(batch) == 2
    with make_client(url=cluster_url) as client:
        with pytest.raises(redis.exceptions.DataError):  # as redis-py refuses it
            xread_batch(client, {"s0": None, "s1": 0})  # type: ignore[dict-item]
        assert len(xread_batch(client, {"s0": 0, "s1": 0})) == 2  # the client still works


def _xread_calls(node: Any) -> int:
    stats = node.redis_connection.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def test_hash_tagged_streams_are_read_in_one_command(cluster: Any, plain) -> None:
    _fill(plain, 2)
    node = plain.get_node_from_key("{cam1}:rgb")
    node.redis_connection.config_resetstat()
    batch = xread_batch(cluster, {"{cam1}:rgb": 0, "{cam1}:depth": 0})
    assert _xread_calls(node) == 1
    assert batch.streams == ("{cam1}:rgb", "{cam1}:depth") and len(batch) == 4


def test_single_key_reads_go_to_the_key_s_node(cluster: Any, plain) -> None:
    expected = _fill(plain, 4)
    for name in STREAMS:
        assert [(i, f) for _s, i, f in xrange_batch(cluster, name)] == expected[name]
        assert xrevrange_batch(cluster, name, count=1).ids() == [expected[name][-1][0]]
    plain.xgroup_create("s1", "g", 0)
    plain.xreadgroup("g", "c1", {"s1": ">"})
    claimed = xautoclaim_batch(cluster, "s1", "g", "c2", 0)
    assert claimed.ids() == [i for i, _f in expected["s1"]]


def _in_thread(fn: Any) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_blocking_read_over_nodes_delivers_the_first_arrival(cluster: Any, plain) -> None:
    expected = _fill(plain, 1)
    cursors = {name: entries[-1][0] for name, entries in expected.items()}  # not "$": no race
    # a minute of BLOCK: the read can only end this test by the entry arriving
    thread, result = _in_thread(lambda: xread_batch(cluster, cursors, block=60_000))
    plain.xadd("s7", {"d": "late"})
    thread.join(30)
    assert [(s, f) for s, _i, f in result[0]] == [("s7", {"d": "late"})]
    # the woken connections are reusable: a timeout reads empty, then data again
    cursors.update(result[0].last_ids())
    assert len(xread_batch(cluster, cursors, block=50)) == 0
    plain.xadd("{cam1}:depth", {"d": "x"})
    assert xread_batch(cluster, dict.fromkeys(STREAMS, "0"), count=10).nbytes > 0


def test_group_read_over_nodes_loses_no_delivered_entry(cluster: Any, plain) -> None:
    for name in STREAMS:
        plain.xgroup_create(name, "g", "$", mkstream=True)
    got: list[str] = []
    thread, result = _in_thread(
        lambda: xreadgroup_batch(cluster, "g", "c", dict.fromkeys(STREAMS, ">"), block=60_000)
    )
    for name in STREAMS:
        plain.xadd(name, {"d": name})
    thread.join(30)
    got += [s for s, _i, _f in result[0]]
    while len(got) < len(STREAMS):  # what the first answer did not carry comes next
        more = xreadgroup_batch(cluster, "g", "c", dict.fromkeys(STREAMS, ">"), block=5000)
        got += [s for s, _i, _f in more]
    assert sorted(got) == sorted(STREAMS)
    pending = sum(plain.xpending(name, "g")["pending"] for name in STREAMS)
    assert pending == len(STREAMS)  # every delivered entry was handed over, once
    again = xreadgroup_batch(cluster, "g", "c", dict.fromkeys(STREAMS, "0"))
    assert sorted(s for s, _i, _f in again) == sorted(STREAMS)


async def test_async_reads_over_the_cluster(cluster_url: str, plain) -> None:
    expected = _fill(plain, 3)
    client = make_async_client(url=cluster_url)
    try:
        assert is_cluster(client)
        batch = await axread_batch(client, dict.fromkeys(STREAMS, 0))
        assert _by_stream(batch) == expected
        assert (await axrange_batch(client, "s4")).ids() == [i for i, _f in expected["s4"]]
        cursors = batch.last_ids()
        reader = asyncio.ensure_future(axread_batch(client, cursors, block=60_000))
        await asyncio.sleep(0)
        await client.xadd("s2", {"d": "late"})
        late = await asyncio.wait_for(reader, 30)
        assert [(s, f) for s, _i, f in late] == [("s2", {"d": "late"})]
        for name in STREAMS:
            await client.xgroup_create(name, "g", 0)
        group = await axreadgroup_batch(client, "g", "c", dict.fromkeys(STREAMS, ">"))
        assert len(group) == len(STREAMS) * 3 + 1
    finally:
        await client.aclose()


async def test_read_each_answers_every_command_in_order(cluster_url: str, plain) -> None:
    """Commands over every node, one key repeated, come back in the order given; a
    command Redis refuses is answered by its error and the others still answer."""
    _fill(plain, 2)
    plain.set("text", "x")
    commands = [(name, ["XLEN", name]) for name in reversed(STREAMS)]
    commands += [("text", ["XLEN", "text"]), ("s3", ["XRANGE", "s3", "-", "+", "COUNT", 1])]
    commands.append(("s3", ["XLEN", "s3"]))
    client = make_async_client(url=cluster_url)
    try:
        replies = await aread_each(client, commands)
    finally:
        await client.aclose()
    assert replies[: len(STREAMS)] == [2] * len(STREAMS)
    refused, first, again = replies[len(STREAMS) :]
    assert isinstance(refused, redis.ResponseError) and "WRONGTYPE" in str(refused)
    assert first[0][1] == [b"d", b"s3-0"] and again == 2


def _blocked_readers(plain: redis.RedisCluster) -> int:
    infos = plain.info("clients", target_nodes=redis.RedisCluster.PRIMARIES)
    return sum(int(info["blocked_clients"]) for info in infos.values())


async def test_async_cancelled_blocking_read_leaves_the_client_usable(cluster_url, plain) -> None:
    client = make_async_client(url=cluster_url)
    try:
        reader = asyncio.ensure_future(
            axread_batch(client, {name: "$" for name in STREAMS}, block=60_000)
        )
        deadline = time.monotonic() + 30
        while _blocked_readers(plain) == 0:  # cancelled while its XREADs block
            assert time.monotonic() < deadline, "the read never reached its blocking XREAD"
            await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        plain.xadd("s0", {"d": "after"})
        batch = await axread_batch(client, dict.fromkeys(STREAMS, 0))
        assert [(s, f) for s, _i, f in batch] == [("s0", {"d": "after"})]
    finally:
        await client.aclose()
