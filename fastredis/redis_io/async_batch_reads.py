"""Asyncio batch reads: XREAD & co. parsed straight into a StreamBatch; `aread_each`:
plain reads of one key each in one round trip."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from fastredis._resp import AUTOCLAIM, RANGE, READ, StreamBatch
from fastredis.redis_io.async_cluster_reads import KeyCommand, acluster_call, acluster_each
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.bounded_cluster import in_turn
from fastredis.redis_io.clients import AnyAsyncRedis
from fastredis.redis_io.cluster import AsyncRedisCluster
from fastredis.redis_io.commands import (
    StreamIds,
    blocking_read_timeout,
    xautoclaim_args,
    xclaim_args,
    xrange_args,
    xread_args,
    xreadgroup_args,
)

__all__ = [
    "aread_each",
    "axautoclaim_batch",
    "axclaim_batch",
    "axrange_batch",
    "axread_batch",
    "axreadgroup_batch",
    "axrevrange_batch",
]


async def _abatch_call(
    client: AnyAsyncRedis,
    args: list[Any],
    kind: int,
    encoding: str | None,
    block: int | None = None,
) -> StreamBatch:
    if isinstance(client, AsyncRedisCluster):  # XRANGE & co.: one key, args[1]
        return await acluster_call(client, lambda _: args, {args[1]: 0}, kind, encoding, block)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        if not isinstance(conn._parser, AsyncFastParser):
            raise TypeError(
                "batch reads need a client made by fastredis.redis_io.make_async_client "
                "(or built with parser_class=AsyncFastParser)"
            )
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)

        async def call() -> StreamBatch:
            await conn.send_command(*args)
            conn._parser.expect_batch(kind, encoding)
            return await conn.read_response(timeout=timeout)

        async def fail(_error: Exception) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(call, fail)
    finally:
        await pool.release(conn)


async def axread_batch(
    client: AnyAsyncRedis,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREAD into a StreamBatch."""
    if isinstance(client, AsyncRedisCluster):
        build = partial(xread_args, count=count, block=block)
        return await acluster_call(client, build, streams, READ, encoding, block)
    return await _abatch_call(client, xread_args(streams, count, block), READ, encoding, block)


async def axreadgroup_batch(
    client: AnyAsyncRedis,
    group: str,
    consumer: str,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    noack: bool = False,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREADGROUP into a StreamBatch."""
    if isinstance(client, AsyncRedisCluster):
        build = partial(xreadgroup_args, group, consumer, count=count, block=block, noack=noack)
        return await acluster_call(client, build, streams, READ, encoding, block)
    args = xreadgroup_args(group, consumer, streams, count, block, noack)
    return await _abatch_call(client, args, READ, encoding, block)


async def axrange_batch(
    client: AnyAsyncRedis,
    name: str,
    min: Any = "-",
    max: Any = "+",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XRANGE into a StreamBatch."""
    args = xrange_args("XRANGE", name, min, max, count)
    return await _abatch_call(client, args, RANGE, encoding)


async def axrevrange_batch(
    client: AnyAsyncRedis,
    name: str,
    max: Any = "+",
    min: Any = "-",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREVRANGE into a StreamBatch (newest first)."""
    args = xrange_args("XREVRANGE", name, max, min, count)
    return await _abatch_call(client, args, RANGE, encoding)


async def axclaim_batch(
    client: AnyAsyncRedis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    ids: Iterable[Any],
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XCLAIM into a StreamBatch."""
    args = xclaim_args(name, group, consumer, min_idle_time_ms, ids)
    return await _abatch_call(client, args, RANGE, encoding)


async def axautoclaim_batch(
    client: AnyAsyncRedis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    start_id: Any = "0-0",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XAUTOCLAIM into a StreamBatch; `batch.cursor` is the next start id."""
    args = xautoclaim_args(name, group, consumer, min_idle_time_ms, start_id, count)
    return await _abatch_call(client, args, AUTOCLAIM, encoding)


async def aread_each(client: AnyAsyncRedis, commands: Sequence[KeyCommand]) -> list[Any]:
    """Reads of one key each (`(key, args)`; sending one twice is harmless) in one
    pipeline: their plain replies in order, a command Redis refused answered by its
    error. On a cluster (a pipeline per node) they wait out a failover as the batch
    reads do (`acluster_each`: retried every 0.1 s), not by redis-py's retries."""
    if isinstance(client, AsyncRedisCluster):
        async with in_turn(client):
            return await acluster_each(client, commands)
    async with client.pipeline(transaction=False) as pipe:
        for _key, args in commands:
            pipe.execute_command(*args)
        return list(await pipe.execute(raise_on_error=False))
