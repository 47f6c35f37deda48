"""redis-py clients (sync and asyncio) whose connections use the fastredis parser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias, TypeVar

import redis
import redis.asyncio

from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.cluster import (
    AsyncRedisCluster,
    RedisCluster,
    cluster_enabled,
    make_async_cluster_client,
    make_cluster_client,
)
from fastredis.redis_io.parser import FastParser

__all__ = ["AnyAsyncRedis", "AnyRedis", "describe", "make_async_client", "make_client"]

# What make_client / make_async_client return: a plain client, or a cluster one for a
# Redis Cluster (each batch read routes on which it is).
AnyRedis: TypeAlias = redis.Redis | RedisCluster
AnyAsyncRedis: TypeAlias = redis.asyncio.Redis | AsyncRedisCluster


_Plain = TypeVar("_Plain", redis.Redis, redis.asyncio.Redis)


def _with_parser(client: _Plain, parser_class: type) -> _Plain:
    # Redis(**kwargs) has no parser_class argument; the pool's connection kwargs do,
    # and every connection it makes (TCP, TLS, unix socket) gets the parser.
    client.connection_pool.connection_kwargs["parser_class"] = parser_class
    return client


def make_client(
    client_params: Mapping[str, Any] | None = None,
    url: str | None = None,
    cluster: bool | None = None,
) -> AnyRedis:
    """A redis-py client using the fastredis parser; `client_params` go to redis-py unchanged.
    A Redis Cluster node gives a RedisCluster (`cluster=None` asks the server, one
    ``INFO cluster``; True / False say so)."""
    if cluster or (cluster is None and cluster_enabled(client_params, url)):
        return make_cluster_client(client_params, url)
    params = dict(client_params or {})
    client = redis.Redis.from_url(url, **params) if url is not None else redis.Redis(**params)
    return _with_parser(client, FastParser)


def make_async_client(
    client_params: Mapping[str, Any] | None = None,
    url: str | None = None,
    cluster: bool | None = None,
    max_connections: int | None = None,
    pool_wait: float | None = None,
    cluster_requests: int | None = None,
) -> AnyAsyncRedis:
    """An asyncio redis-py client using the fastredis parser (a cluster one as make_client;
    the ``INFO cluster`` question is asked with a short sync connection).

    `max_connections`: a pool that never opens more; a caller finding them all in use
    waits for one (up to `pool_wait` s, None: forever) instead of getting redis-py's
    "Too many connections". A cluster keeps redis-py's pool per node (it refuses past
    100 connections of a node); `cluster_requests`: at most that many commands and
    pipelines run at once, the rest wait their turn (up to `pool_wait` s), while held
    connections are bounded by their owners."""
    if cluster or (cluster is None and cluster_enabled(client_params, url)):
        return make_async_cluster_client(client_params, url, cluster_requests, pool_wait)
    params = dict(client_params or {})
    client: redis.asyncio.Redis
    if max_connections is not None:
        if url is None:
            raise ValueError("max_connections needs the Redis URL")
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_wait, **params
        )
        client = redis.asyncio.Redis.from_pool(pool)
    elif url is not None:
        client = redis.asyncio.Redis.from_url(url, **params)
    else:
        client = redis.asyncio.Redis(**params)
    return _with_parser(client, AsyncFastParser)


def describe(client: AnyRedis | AnyAsyncRedis) -> str:
    """host:port/db (or the socket path) of a client, for messages."""
    if isinstance(client, RedisCluster | AsyncRedisCluster):
        node = client.get_default_node()
        return f"cluster {node.host}:{node.port}" if node else "cluster"
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
