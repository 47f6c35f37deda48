"""Asyncio batch reads over a Redis Cluster (see `fastredis.redis_io.cluster`)."""

from __future__ import annotations

import asyncio
import math
import time

from redis import exceptions as rexc

from fastredis._resp import StreamBatch
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.cluster import (
    FAILOVER_WAIT,
    RETRY_PAUSE,
    AsyncRedisCluster,
    Build,
    Call,
    calls_for,
    check_parser,
    finish,
    lane_commands,
    lanes,
    next_round,
    settled,
)
from fastredis.redis_io.commands import StreamIds, blocking_read_timeout

__all__ = ["acluster_call"]


async def _lane(
    lane: list[Call], kind: int, encoding: str | None, block: int | None, id_known: asyncio.Event
) -> None:
    """Send a lane's calls on one connection of their node and read the replies."""
    node = lane[0].node
    conn = node.acquire_connection()
    owed = False
    try:
        check_parser(conn, AsyncFastParser)
        await node.disconnect_if_needed(conn)
        want_id = id_known is not None
        owed = True
        await conn.send_packed_command(conn.pack_commands(lane_commands(lane, want_id)))
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)
        for call in lane:
            if call.asking:
                await conn.read_response()
            if want_id:
                call.client_id = await conn.read_response()
                id_known.set()
            conn._parser.expect_batch(kind, encoding)
            try:
                call.outcome = await conn.read_response(timeout=timeout)
            except rexc.ResponseError as error:  # one reply: the next ones follow
                call.outcome = error
        owed = False
    except (rexc.RedisError, OSError) as error:
        for call in lane:
            if call.outcome is None:
                call.outcome = error
    finally:
        if id_known is not None:
            id_known.set()
        if owed:
            await conn.disconnect(nowait=True)  # the reply may still come
        node.release(conn)


async def _unblock(call: Call, task: asyncio.Future[None], id_known: asyncio.Event) -> None:
    """Wake a blocked lane: its reply, entries or not, then comes at once."""
    await id_known.wait()
    while not task.done() and call.client_id is not None:
        try:
            await call.node.execute_command("CLIENT", "UNBLOCK", call.client_id)
        except (rexc.RedisError, OSError):
            return  # the read fails on its own and is retried
        # 0 when the read was not blocked yet (in a later packet): again
        await asyncio.wait({task}, timeout=0.01)


async def _round(calls: list[Call], kind: int, encoding: str | None, block: int | None) -> None:
    groups = lanes(calls, block)
    side_by_side = block is not None and len(calls) > 1
    events = [asyncio.Event() if side_by_side else None for _ in groups]
    tasks = [
        asyncio.ensure_future(_lane(lane, kind, encoding, block, event))
        for lane, event in zip(groups, events, strict=True)
    ]
    try:
        if side_by_side:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(
                *(
                    _unblock(lane[0], task, event)
                    for lane, task, event in zip(groups, tasks, events, strict=True)
                    if not task.done()
                )
            )
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def acluster_call(
    client: AsyncRedisCluster,
    build: Build,
    streams: StreamIds,
    kind: int,
    encoding: str | None,
    block: int | None = None,
) -> StreamBatch:
    """Asyncio `cluster_call`: the lanes run as concurrent tasks."""
    if client._initialize:
        await client.initialize()
    deadline = time.monotonic() + FAILOVER_WAIT
    calls = calls_for(client, build, streams)
    done: list[StreamBatch] = []
    while True:
        for call in calls:
            call.outcome = None
        await _round(calls, kind, encoding, block)
        calls, regroup, moved, refresh = next_round(client, calls, done, deadline)
        for error in moved:
            await client.nodes_manager.move_slot(error)
        if refresh:
            await asyncio.sleep(RETRY_PAUSE)
            await client.nodes_manager.initialize()
        if regroup:
            calls += calls_for(client, build, regroup)
        if settled(calls, done, block):
            return finish(done, kind, encoding)
