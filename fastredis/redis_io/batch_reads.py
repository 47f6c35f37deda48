"""Sync batch reads: XREAD & co. parsed straight into a StreamBatch."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from fastredis._resp import AUTOCLAIM, RANGE, READ, StreamBatch
from fastredis.redis_io.clients import AnyRedis
from fastredis.redis_io.cluster import RedisCluster
from fastredis.redis_io.cluster_reads import cluster_call
from fastredis.redis_io.commands import (
    StreamIds,
    blocking_read_timeout,
    xautoclaim_args,
    xclaim_args,
    xrange_args,
    xread_args,
    xreadgroup_args,
)
from fastredis.redis_io.parser import FastParser

__all__ = [
    "xautoclaim_batch",
    "xclaim_batch",
    "xrange_batch",
    "xread_batch",
    "xreadgroup_batch",
    "xrevrange_batch",
]


def _batch_call(
    client: AnyRedis, args: list[Any], kind: int, encoding: str | None, block: int | None = None
) -> StreamBatch:
    if isinstance(client, RedisCluster):  # XRANGE & co.: one key, args[1]
        return cluster_call(client, lambda _: args, {args[1]: 0}, kind, encoding, block)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        if not isinstance(conn._parser, FastParser):
            raise TypeError(
                "batch reads need a client made by fastredis.redis_io.make_client "
                "(or built with parser_class=FastParser)"
            )
        timeout = blocking_read_timeout(conn.socket_timeout, block)

        def call() -> StreamBatch:
            conn.send_command(*args)
            conn._parser.expect_batch(kind, encoding)
            return conn.read_response(timeout=timeout)

        return conn.retry.call_with_retry(call, lambda _error: conn.disconnect())
    finally:
        pool.release(conn)


def xread_batch(
    client: AnyRedis,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREAD into a StreamBatch; a BLOCK timeout gives an empty batch."""
    if isinstance(client, RedisCluster):
        build = partial(xread_args, count=count, block=block)
        return cluster_call(client, build, streams, READ, encoding, block)
    return _batch_call(client, xread_args(streams, count, block), READ, encoding, block)


def xreadgroup_batch(
    client: AnyRedis,
    group: str,
    consumer: str,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    noack: bool = False,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREADGROUP into a StreamBatch; a BLOCK timeout gives an empty batch."""
    if isinstance(client, RedisCluster):
        build = partial(xreadgroup_args, group, consumer, count=count, block=block, noack=noack)
        return cluster_call(client, build, streams, READ, encoding, block)
    args = xreadgroup_args(group, consumer, streams, count, block, noack)
    return _batch_call(client, args, READ, encoding, block)


def xrange_batch(
    client: AnyRedis,
    name: str,
    min: Any = "-",
    max: Any = "+",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XRANGE into a StreamBatch."""
    return _batch_call(client, xrange_args("XRANGE", name, min, max, count), RANGE, encoding)


def xrevrange_batch(
    client: AnyRedis,
    name: str,
    max: Any = "+",
    min: Any = "-",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREVRANGE into a StreamBatch (newest first)."""
    return _batch_call(client, xrange_args("XREVRANGE", name, max, min, count), RANGE, encoding)


def xclaim_batch(
    client: AnyRedis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    ids: Iterable[Any],
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XCLAIM into a StreamBatch of the claimed entries."""
    args = xclaim_args(name, group, consumer, min_idle_time_ms, ids)
    return _batch_call(client, args, RANGE, encoding)


def xautoclaim_batch(
    client: AnyRedis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    start_id: Any = "0-0",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XAUTOCLAIM into a StreamBatch; `batch.cursor` is the next start id."""
    args = xautoclaim_args(name, group, consumer, min_idle_time_ms, start_id, count)
    return _batch_call(client, args, AUTOCLAIM, encoding)
