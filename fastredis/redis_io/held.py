"""Connections held across many commands: a pull's reads, a pipelined writer.

Checking a connection out of the pool per command costs more than the command at
thousands a second (the checkout, redis-py's Python packer, its per-call timeout
task), so hot paths hold one and send buffers packed by the Cython packer
(`fastredis._frames.pack_commands`). Replies are parsed by the fastredis parser;
``read_batch`` parses the next one as a StreamBatch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import redis.asyncio
import redis.exceptions

from fastredis._frames import pack_commands
from fastredis._resp import READ, StreamBatch
from fastredis.redis_io.async_cluster_reads import acluster_blocking_pop
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.cluster import is_cluster
from fastredis.redis_io.commands import blocking_read_timeout, xread_command
from fastredis.redis_io.sockets import send_buffers

__all__ = ["HeldConnection", "blocking_command"]


class HeldConnection:
    """One connection of `client`'s pool, taken on first use and kept until `release`."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._conn: Any = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> HeldConnection:
        """Take the connection now (it is taken on first use otherwise)."""
        if self._conn is None:
            conn = await self.client.connection_pool.get_connection()
            if not isinstance(conn._parser, AsyncFastParser):
                await self.client.connection_pool.release(conn)
                raise TypeError("the Redis client must use the fastredis parser")
            self._conn = conn
        return self

    async def send(self, bufs: list[Any]) -> None:
        """Send packed RESP buffers (large ones are not copied)."""
        if self._conn is None:
            await self.acquire()
        await send_buffers(self._conn, bufs)

    async def send_commands(self, commands: list[list[Any]]) -> None:
        """Pack `commands` with the Cython packer and send them in one write."""
        await self.send(pack_commands(commands))

    async def read_reply(self, timeout: float | None = math.inf) -> Any:
        """The next reply (a ResponseError reply raises; the connection stays good)."""
        return await self._conn.read_response(timeout=timeout)

    async def read_batch(
        self, kind: int = READ, encoding: str | None = None, block: int | None = None
    ) -> StreamBatch:
        """The next reply parsed as a StreamBatch; `block`: the command's BLOCK ms."""
        conn = self._conn
        conn._parser.expect_batch(kind, encoding)
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)
        return await conn.read_response(timeout=timeout)

    async def xread(
        self, streams: Mapping[Any, Any], count: int | None, block: int | None
    ) -> StreamBatch:
        """XREAD into a StreamBatch (bytes names and ids)."""
        await self.send_commands([xread_command(streams, count, block)])
        return await self.read_batch(READ, None, block)

    async def release(self, broken: bool = False) -> None:
        """Give the connection back; `broken`: replies may still be owed, so drop it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if broken:
                await conn.disconnect()
            await self.client.connection_pool.release(conn)


async def blocking_command(client: Any, args: list[Any], block_s: float) -> Any:
    """A blocking command (BLMPOP, BLPOP, ...) whose reply may take `block_s` seconds
    (0 = forever): the connection's socket_timeout must not cut it. On a cluster,
    BLMPOP over several slots blocks on each at once (`acluster_blocking_pop`)."""
    if is_cluster(client):
        return await acluster_blocking_pop(client, args, block_s)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_command(*args)
        timeout = blocking_read_timeout(conn.socket_timeout, block_s * 1000, forever=math.inf)
        return await conn.read_response(timeout=timeout)
    except redis.exceptions.ResponseError:
        raise  # a complete error reply: the connection is fine
    except BaseException:
        # The reply may still come: never hand this connection to someone else.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
