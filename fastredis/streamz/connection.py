"""The Redis side of the streamz sources and sinks: clients, transient errors, backoff."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from fastredis.redis_io import AnyAsyncRedis, make_async_client
from fastredis.streamz.checks import check_client_params

log = logging.getLogger("fastredis.streamz")

# Transient failures: the server went away, restarts, or is loading its data set.
# (redis-py's BusyLoadingError is a ConnectionError.)
TRANSIENT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

BACKOFF_FIRST = 0.05  # seconds before the first reconnect attempt
BACKOFF_MAX = 2.0  # the wait doubles up to this


def make_source_client(client_params: Mapping[str, Any] | None, url: str | None) -> AnyAsyncRedis:
    """The asyncio client of a source or sink: redis-py with the fastredis reader.

    redis-py's own silent retries are turned off (unless client_params sets `retry`):
    the sources reconnect themselves, log it, and know a reply may have been lost.
    """
    params = check_client_params(client_params)
    params.setdefault("retry", Retry(NoBackoff(), 0))
    return make_async_client(params, url=url)


async def close_client(client: AnyAsyncRedis | None) -> None:
    """Close a source's or sink's client and its connections (a cluster client closes
    its node pools with it and takes no arguments)."""
    if isinstance(client, AsyncRedisCluster):
        await client.aclose()
    elif client is not None:
        await client.aclose(close_connection_pool=True)


def running_client(getter: Callable[[], AnyAsyncRedis | None], who: str) -> AnyAsyncRedis:
    """The client `getter` gives while its source runs (`who` works only then)."""
    client = getter()
    assert client is not None, f"{who} only while the source runs"
    return client


def as_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class Backoff:
    """Doubling waits between reconnect attempts, logged."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def next_delay(self, error: BaseException) -> float:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**self.failures)
        self.failures += 1
        log.warning(
            "%s: Redis unavailable (%s: %s); reconnect attempt %d in %.2fs",
            self.what,
            type(error).__name__,
            error,
            self.failures,
            delay,
        )
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.warning("%s: reconnected after %d attempt(s)", self.what, self.failures)
        self.failures = 0
