"""An asyncio RedisCluster whose commands wait for a connection instead of failing.

redis-py's asyncio cluster keeps a pool per node that raises MaxConnectionsError ("Too
many connections") when it is full (100 connections), and never waits.
`BoundedRedisCluster` lets at most `requests` commands and pipelines run at once (each
holds at most one connection of a node); a caller past them waits for its turn, up to
`wait` seconds, and only then gets MaxConnectionsError. Held connections
(`fastredis.redis_io.HeldConnection`) come from the node pools directly: their owners
bound them (the server's `ConnectionBudget`).

Internals relied on: `ClusterPipeline(client, transaction)` and its `cluster_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.event import EventDispatcherInterface

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # redis-py depends on async-timeout before Python 3.11.3
    from async_timeout import timeout as _timeout

__all__ = ["BoundedRedisCluster", "in_turn"]

# Set while a command or pipeline has its turn: a pipeline that retries its commands
# one by one (after a MOVED) must not wait for a second turn.
_IN_TURN: ContextVar[bool] = ContextVar("fastredis_cluster_turn", default=False)


@contextlib.asynccontextmanager
async def _unreachable_is_connection_error() -> AsyncIterator[None]:
    """redis-py raises RedisClusterUnreachableError (not a RedisError) when no node
    answers while it refreshes the topology (during a failover): callers catch
    RedisError, so it is a ConnectionError here, Redis being unavailable for now."""
    try:
        yield
    except rexc.RedisClusterUnreachableError as exc:
        raise rexc.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc


class BoundedRedisCluster(AsyncRedisCluster):
    """`AsyncRedisCluster` with turns for commands and pipelines (`bound`)."""

    _turns: asyncio.Semaphore | None = None
    _wait: float | None = None

    def bound(self, requests: int, wait: float | None) -> None:
        """At most `requests` commands and pipelines at once; a caller waits up to
        `wait` s (None: forever) for its turn."""
        if requests < 1:
            raise ValueError(f"requests must be >= 1, not {requests}")
        self._turns = asyncio.Semaphore(requests)
        self._wait = wait

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the turns (nothing when not bounded, or already in one)."""
        turns = self._turns
        if turns is None or _IN_TURN.get():
            yield
            return
        try:
            async with _timeout(self._wait):
                await turns.acquire()
        except TimeoutError:
            raise rexc.MaxConnectionsError(
                f"no Redis connection free within {self._wait:g}s"
            ) from None
        token = _IN_TURN.set(True)
        try:
            yield
        finally:
            _IN_TURN.reset(token)
            turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with in_turn(self):
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise rexc.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _TurnPipeline(self, transaction)


class _TurnPipeline(ClusterPipeline):
    """A cluster pipeline that runs on one of its client's turns."""

    # declared by redis-py's CommandsProtocol: for the type checker only
    _event_dispatcher: EventDispatcherInterface

    async def __aenter__(self) -> _TurnPipeline:
        async with _unreachable_is_connection_error():
            await super().__aenter__()  # the cluster's topology, when not known yet
        return self

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        async with in_turn(client):
            return await super().execute(raise_on_error, allow_redirections)


@contextlib.asynccontextmanager
async def in_turn(client: AsyncRedisCluster) -> AsyncIterator[None]:
    """What a command or pipeline of `client` runs in: one of its turns when it is a
    `BoundedRedisCluster`, with the cluster unreachable as a ConnectionError."""
    turn = client.turn() if isinstance(client, BoundedRedisCluster) else contextlib.nullcontext()
    async with turn, _unreachable_is_connection_error():
        yield
