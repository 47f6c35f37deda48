"""redis-py clients (sync and asyncio) whose connections use the fastredis parser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio

from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.parser import FastParser

__all__ = ["describe", "make_async_client", "make_client"]


def _with_parser(client: Any, parser_class: type) -> Any:
    # Redis(**kwargs) has no parser_class argument; the pool's connection kwargs do,
    # and every connection it makes (TCP, TLS, unix socket) gets the parser.
    client.connection_pool.connection_kwargs["parser_class"] = parser_class
    return client


def make_client(
    client_params: Mapping[str, Any] | None = None, url: str | None = None
) -> redis.Redis:
    """A redis-py client using the fastredis parser; `client_params` go to redis-py unchanged."""
    params = dict(client_params or {})
    client = redis.Redis.from_url(url, **params) if url is not None else redis.Redis(**params)
    return _with_parser(client, FastParser)


def make_async_client(
    client_params: Mapping[str, Any] | None = None, url: str | None = None
) -> redis.asyncio.Redis:
    """An asyncio redis-py client using the fastredis parser."""
    params = dict(client_params or {})
    if url is not None:
        client = redis.asyncio.Redis.from_url(url, **params)
    else:
        client = redis.asyncio.Redis(**params)
    return _with_parser(client, AsyncFastParser)


def describe(client: redis.Redis | redis.asyncio.Redis) -> str:
    """host:port/db (or the socket path) of a client, for messages."""
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
