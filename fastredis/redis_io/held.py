"""Connections held across many commands: a pull's reads, a pipelined writer.

Checking a connection out of the pool per command costs more than the command at
thousands a second (the checkout, redis-py's Python packer, its per-call timeout
task), so hot paths hold one and send buffers packed by the Cython packer
(`fastredis._frames.pack_commands`). Replies are parsed by the fastredis parser;
``read_batch`` parses the next one as a StreamBatch.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import redis.asyncio
import redis.exceptions

from fastredis._frames import pack_commands
from fastredis._resp import READ, StreamBatch
from fastredis.redis_io.async_batch_reads import axread_batch
from fastredis.redis_io.async_cluster_reads import acluster_blocking_pop
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.cluster import is_cluster, mark_stale
from fastredis.redis_io.commands import blocking_read_timeout, xread_command
from fastredis.redis_io.sockets import send_buffers

__all__ = ["HeldConnection", "ReadPipeline", "blocking_command"]

T = TypeVar("T")


class HeldConnection:
    """One connection of `client`'s pool, taken on first use and kept until `release`.

    On a Redis Cluster the connection is to one node: `route(key)` picks the node
    serving `key`'s slot (every command sent must be for that slot; Redis answers
    CROSSSLOT or MOVED otherwise, and writes nothing), and `xread` is routed by slot
    (`fastredis.redis_io.axread_batch`), holding no connection."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._cluster = is_cluster(client)  # an isinstance of redis-py's ABCs: ~3 us a call
        self._conn: Any = None
        self._node: Any = None  # cluster: the node the connection is to

    @property
    def node_name(self) -> str | None:
        """Cluster: the node `route` chose (host:port); None otherwise."""
        return None if self._node is None else str(self._node.name)

    async def route(self, key: Any) -> None:
        """Cluster: hold a connection to the node serving `key` (no-op otherwise, and
        when already there). Call it with no reply owed."""
        if not self._cluster:
            return
        if self.client._initialize:
            await self.client.initialize()
        try:
            node = self.client.get_node_from_key(key)
        except redis.exceptions.SlotNotCoveredError as exc:  # a failover under way
            mark_stale(self.client)
            raise redis.exceptions.ConnectionError(f"{exc}: try again") from None
        if self._node is not None and node.name != self._node.name:
            await self.release()
        self._node = node

    async def acquire(self) -> HeldConnection:
        """Take the connection now (it is taken on first use otherwise)."""
        if self._conn is None:
            if self._cluster:
                if self._node is None:
                    raise TypeError("a held cluster connection needs route(key) first")
                conn = self._node.acquire_connection()
                if not conn.is_connected:  # a node hands out connections unconnected
                    await conn.connect()
            else:
                conn = await self.client.connection_pool.get_connection()
            if not isinstance(conn._parser, AsyncFastParser):
                await self._give_back(conn)
                raise TypeError("the Redis client must use the fastredis parser")
            self._conn = conn
        return self

    @property
    def held(self) -> bool:
        """Whether a connection is held (taken, and not released since)."""
        return self._conn is not None

    def closed_by_server(self) -> bool:
        """Whether the connection held was closed by Redis (EOF or an error seen while
        it sat idle, as after a restart): a command sent on it would fail."""
        conn = self._conn
        if conn is None:
            return False
        receiver = getattr(conn._parser, "_receiver", None)
        if receiver is not None:
            return receiver.closed is not None
        reader = getattr(conn, "_reader", None)
        return reader is not None and reader.at_eof()

    async def read_idempotent(self, read: Callable[[HeldConnection], Awaitable[T]]) -> T:
        """`read(self)`, a read (sending it twice is harmless). A connection Redis closed
        while it was held idle (a restart) is dropped first; one whose close was not
        seen yet fails as closed, and `read` runs once more on a new connection."""
        idle = self.held
        if self.closed_by_server():
            await self.release(broken=True)
            idle = False
        try:
            return await read(self)
        except redis.exceptions.ConnectionError:
            if not idle:
                raise
            await self.release(broken=True)  # a new one: the pool checks it
            return await read(self)

    async def _give_back(self, conn: Any) -> None:
        if self._cluster:
            self._node.release(conn)
        else:
            await self.client.connection_pool.release(conn)

    async def send(self, bufs: list[Any]) -> None:
        """Send packed RESP buffers (large ones are not copied)."""
        if self._conn is None:
            await self.acquire()
        await send_buffers(self._conn, bufs)

    async def send_commands(self, commands: list[list[Any]]) -> None:
        """Pack `commands` with the Cython packer and send them in one write."""
        await self.send(pack_commands(commands))

    async def read_reply(self, timeout: float | None = math.inf) -> Any:
        """The next reply (a ResponseError reply raises; the connection stays good).
        Cluster: MOVED/ASK (the slot went elsewhere, as after a failover) and a lost
        node reload the slot map for the next `route`; MOVED/ASK raise ConnectionError
        (Redis unavailable here: try again), not a refusal of the command."""
        try:
            return await self._conn.read_response(timeout=timeout)
        except (redis.exceptions.MovedError, redis.exceptions.AskError) as exc:
            mark_stale(self.client)
            raise redis.exceptions.ConnectionError(
                f"the cluster slot moved ({exc}): try again"
            ) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            mark_stale(self.client)
            raise

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
        if self._cluster:
            return await axread_batch(self.client, streams, count, block, encoding=None)
        await self.send_commands([xread_command(streams, count, block)])
        return await self.read_batch(READ, None, block)

    async def release(self, broken: bool = False) -> None:
        """Give the connection back; `broken`: replies may still be owed, so drop it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if broken:
                await conn.disconnect()
                mark_stale(self.client)
            await self._give_back(conn)


class ReadPipeline:
    """Batch reads sent one after another on one held connection of `client` (not a
    cluster's), each without waiting for the replies of those before it: Redis prepares
    the next while the caller uses the last. Redis runs a connection's commands in the
    order sent, so replies come in that order; each is read once those before it are.

    A read that fails or is cancelled with its reply owed (an error reply is a whole
    reply: not that) loses the connection's later replies: the reads sent before the
    next ``send`` raise ConnectionError, and that send takes a new connection.
    """

    def __init__(self, client: Any) -> None:
        self._held = HeldConnection(client)
        self._last: asyncio.Future[Any] | None = None  # the reply read last
        self._gen = 0  # bumped when a reply is lost: older reads cannot be answered
        self._held_gen = 0  # the generation the held connection serves

    async def send(
        self, args: list[Any], kind: int, encoding: str | None, block: int | None
    ) -> asyncio.Future[StreamBatch]:
        """Send one read (`block`: its BLOCK ms); return the future of its reply."""
        if self._held_gen != self._gen:
            await self._held.release(broken=True)
            self._held_gen, self._last = self._gen, None
        gen = self._gen
        try:
            await self._held.send_commands([args])
        except BaseException:
            self._lose(gen)
            raise
        reply = asyncio.ensure_future(self._reply(self._last, gen, kind, encoding, block))
        # A callback, not an except clause: a reply cancelled before it ever ran is lost too.
        reply.add_done_callback(partial(self._replied, gen))
        self._last = reply
        return reply

    async def _reply(
        self,
        before: asyncio.Future[Any] | None,
        gen: int,
        kind: int,
        encoding: str | None,
        block: int | None,
    ) -> StreamBatch:
        if before is not None:
            await asyncio.wait([before])
        if gen != self._gen:
            raise redis.exceptions.ConnectionError("a reply before this one was lost")
        return await self._held.read_batch(kind, encoding, block)

    def _replied(self, gen: int, reply: asyncio.Future[Any]) -> None:
        """A reply not read whole (cancelled, or failed other than by an error reply,
        which is a whole reply) loses the connection's later ones."""
        if reply.cancelled() or not isinstance(
            reply.exception(), (type(None), redis.exceptions.ResponseError)
        ):
            self._lose(gen)

    def _lose(self, gen: int) -> None:
        if gen == self._gen:
            self._gen += 1

    async def close(self) -> None:
        """Give the connection back (dropped if replies are still owed)."""
        owed = self._held_gen != self._gen or (self._last is not None and not self._last.done())
        self._last = None
        await self._held.release(broken=owed)


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
