"""Asyncio batch reads over a Redis Cluster (see `fastredis.redis_io.cluster`)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rexc

from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.cluster import (
    FAILOVER_WAIT,
    PENDING,
    RETRY_PAUSE,
    AsyncRedisCluster,
    Build,
    Call,
    calls_for,
    check_parser,
    finish,
    lanes,
    next_round,
    pack_lane,
    reroute,
    settled,
    slot_groups,
)
from fastredis.redis_io.commands import StreamIds, blocking_read_timeout

__all__ = ["KeyCommand", "acluster_blocking_pop", "acluster_call", "acluster_each", "aslot_groups"]

# One command and the key it reads (its slot routes it).
KeyCommand = tuple[Any, Sequence[Any]]


async def _lane(
    lane: list[Call],
    kind: int | None,
    encoding: str | None,
    block: int | None,
    id_known: asyncio.Event | None,
) -> None:
    """Send a lane's calls on one connection of their node and read the replies."""
    node = lane[0].node
    conn = node.acquire_connection()
    owed = False
    try:
        check_parser(conn, AsyncFastParser)
        await node.disconnect_if_needed(conn)
        owed = True
        await conn.send_packed_command(pack_lane(conn, lane, want_id=id_known is not None))
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)
        for call in lane:
            if call.asking:
                await conn.read_response()
            if id_known is not None:
                call.client_id = await conn.read_response()
                id_known.set()
            if kind is not None:
                conn._parser.expect_batch(kind, encoding)
            try:
                call.outcome = await conn.read_response(timeout=timeout)
            except rexc.ResponseError as error:  # one reply: the next ones follow
                call.outcome = error
        owed = False
    except (rexc.RedisError, OSError) as error:
        for call in lane:
            if call.outcome is PENDING:
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


async def _round(
    calls: list[Call], kind: int | None, encoding: str | None, block: int | None
) -> None:
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
                    if event is not None and not task.done()
                )
            )
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _rounds(
    client: AsyncRedisCluster,
    calls: list[Call],
    kind: int | None,
    encoding: str | None,
    block: int | None,
    errors_answer: bool = False,
) -> list[Any]:
    """Run `calls` (routed) until every one is answered (or, blocking, one got
    entries): redirects followed, and a lost node, CLUSTERDOWN or TRYAGAIN retried
    every `RETRY_PAUSE` s with a fresh topology, for up to `FAILOVER_WAIT` s. The
    replies, as they came; each call keeps its own in `outcome`."""
    deadline = time.monotonic() + FAILOVER_WAIT
    done: list[Any] = []
    while True:
        for call in calls:
            call.outcome = PENDING
        await _round(calls, kind, encoding, block)
        calls, moved, refresh = next_round(client, calls, done, deadline, errors_answer)
        for error in moved:
            await client.nodes_manager.move_slot(error)
        if refresh:
            await asyncio.sleep(RETRY_PAUSE)
            await client.nodes_manager.initialize()
        reroute(client, calls)
        if settled(calls, done, block):
            return done


async def acluster_call(
    client: AsyncRedisCluster,
    build: Build,
    streams: StreamIds,
    kind: int | None,
    encoding: str | None,
    block: int | None = None,
) -> Any:
    """Asyncio `cluster_call`: the lanes run as concurrent tasks. `kind` None: plain
    replies, one per slot that answered, as a list."""
    if client._initialize:
        await client.initialize()
    done = await _rounds(client, calls_for(client, build, streams), kind, encoding, block)
    return finish(done, kind, encoding)


async def acluster_each(client: AsyncRedisCluster, commands: Sequence[KeyCommand]) -> list[Any]:
    """Commands of one key each (`(key, args)`: reads, which may be sent twice), sent
    as `acluster_call`'s are (a node's pipelined on one connection, the nodes at once,
    retried through a failover); their plain replies in order, a command Redis refused
    answered by its ResponseError."""
    if client._initialize:
        await client.initialize()
    manager = client.nodes_manager
    calls = [
        Call(manager.get_node_from_slot(client.keyslot(key)), {key: None}, list(args), False)
        for key, args in commands
    ]
    if calls:
        await _rounds(client, list(calls), None, None, None, errors_answer=True)
    return [call.outcome for call in calls]


async def acluster_blocking_pop(client: AsyncRedisCluster, args: list[Any], block_s: float) -> Any:
    """BLMPOP over keys in several slots: one per slot, side by side; the first items end
    the wait and every slot's popped items are returned, as one BLMPOP reply (the key
    is the first answering one's). BLPOP/BRPOP must name keys of one slot."""
    cmd = str(args[0]).upper()
    if cmd != "BLMPOP":
        if len({client.keyslot(k) for k in args[1:-1]}) > 1:
            raise ValueError(f"{cmd} over keys in several cluster slots: use BLMPOP")
        return await client.execute_command(*args)
    timeout, numkeys = args[1], int(args[2])
    keys, rest = args[3 : 3 + numkeys], args[3 + numkeys :]

    def build(group: StreamIds) -> list[Any]:
        return ["BLMPOP", timeout, len(group), *group, *rest]

    block_ms = int(block_s * 1000)
    replies = await acluster_call(client, build, dict.fromkeys(keys, 0), None, None, block_ms)
    popped = [r for r in replies if r is not None]
    if not popped:
        return None
    return [popped[0][0], [item for reply in popped for item in reply[1]]]


async def aslot_groups(client: Any, streams: StreamIds) -> list[tuple[Any, dict]]:
    """`slot_groups` for an asyncio cluster client (its slot map loaded first)."""
    if client._initialize:
        await client.initialize()
    return slot_groups(client, streams)
