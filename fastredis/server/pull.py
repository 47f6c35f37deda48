"""WS /data/{sid}/pull: per batch, a text JSON header ``[[sid, id, start], ...]`` and
one binary message holding the payloads back to back.

Query: ``last_entry_id`` (``$``: entries added from now on; ``0``; ``*``: start with
the newest ``count`` entries; an id; or one per stream joined by '+'), ``count``
(entries per stream per batch, 1), ``block`` (ms, default 5000: when nothing arrives
for that long an empty batch -- header ``[]``, empty binary -- is sent, so an idle
pull shows it is alive; 0 waits forever), ``latest`` (skip to the newest entries:
frame dropping), ``max_fps`` (at most that many batches a second), ``header`` (1;
with 0 every entry is sent as its own binary message and nothing for an empty batch),
``ack`` (after each batch sent, wait for a text message from the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastredis._frames import json_string, pull_header, pull_payload, pull_views
from fastredis._resp import StreamBatch
from fastredis.server import metrics
from fastredis.server.errors import explain
from fastredis.server.protocol import (
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    BadInput,
    ReadOptions,
    parse_query,
    parse_sids,
    query_items,
)
from fastredis.server.reading import StreamCursor
from fastredis.server.websocket import accept_checked, close_with

__all__ = ["pull_endpoint"]

log = logging.getLogger("fastredis.server")

MAX_ACKS_AHEAD = 64  # acks a client may send before the batches they acknowledge


async def pull_endpoint(ws: WebSocket) -> None:
    settings = ws.app.state.settings
    if not await accept_checked(ws, "read"):
        return
    try:
        sids = parse_sids(ws.path_params["sid"])
        opts = parse_query(
            "pull", query_items(ws.query_params), len(sids), default_block=settings.pull_block_ms
        )
        assert isinstance(opts, ReadOptions)
    except BadInput as exc:
        await close_with(ws, exc.code, exc.reason)
        return

    # A watcher owns ws.receive(): it hands acks over and, when the client goes,
    # cancels the pull wherever it waits (a blocking XREAD included).
    main = asyncio.current_task()
    assert main is not None
    acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_ACKS_AHEAD)
    gone = False
    pulling = True

    async def watch() -> None:
        nonlocal gone
        with contextlib.suppress(Exception):
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if opts.ack:
                    if acks.full():  # acks far ahead of the batches: a flood
                        await close_with(ws, CLOSE_POLICY, "too many acks ahead of the batches")
                        continue  # and wait for the disconnect
                    acks.put_nowait(message)
                # Without ack, anything the client sends is ignored.
        gone = True
        # Cancel the pull wherever it waits. A cancellation can be lost on the way
        # (Python 3.11's asyncio.wait_for, used inside redis-py, swallows one that
        # races with completion), so ask again until the pull has stopped.
        while pulling:
            main.cancel()
            await asyncio.sleep(0.5)

    cursor = StreamCursor(ws.app.state.redis, sids, opts.last_entry_ids, opts.count, opts.latest)
    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        try:
            await _pull_loop(ws, cursor, opts, acks, lambda: gone)
        except BadInput as exc:
            await close_with(ws, exc.code, exc.reason)
        except RedisError as exc:
            await close_with(ws, *(await explain(exc, ws.app.state.redis, sids)).close())
        except (WebSocketDisconnect, OSError):
            pass  # the client went away while a batch was being sent
        finally:
            pulling = False
    except asyncio.CancelledError:
        if not gone:
            raise
        uncancel = getattr(main, "uncancel", None)
        if uncancel is not None:
            uncancel()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await cursor.close()


# Read-ahead at count=1: a pull of one stream without `latest` asks Redis for up to
# READ_AHEAD_MAX small entries at once (about READ_AHEAD_BYTES a read) and sends
# them one batch per entry. A Redis round trip costs a send and a receive system
# call, which at one entry per batch is most of the work. (Each one-entry batch
# needs its own header anyway; larger counts are framed in C from the batch.)
READ_AHEAD_MAX = 64
READ_AHEAD_BYTES = 256 * 1024

Frame = tuple[str | None, list[Any]]  # (header text or None, binary messages)


def _redis_count(batch: StreamBatch) -> int:
    """Entries to ask Redis for next at count=1, from the entry size in `batch`."""
    n = len(batch)
    if n == 0:
        return 1
    return max(1, min(READ_AHEAD_BYTES // max(1, batch.nbytes // n), READ_AHEAD_MAX))


def _frames(batch: StreamBatch, header: bool, sid_json: str | None) -> list[Frame]:
    """What to send for `batch`: one websocket batch, or with `sid_json` (the one
    stream's name as JSON: a count=1 read-ahead) one batch per entry."""
    n = len(batch)
    views = pull_views(batch)
    if sid_json is not None and n > 1:
        if not header:
            return [(None, [view]) for view in views]
        return [
            (f'[[{sid_json},"{eid.decode()}",0]]', [view])
            for eid, view in zip(batch.ids(), views, strict=True)
        ]
    if not header:
        return [(None, views)] if n else []
    # One entry: a view into the batch instead of a copy (~0.5 ms per MB here);
    # websocket servers take any bytes-like object.
    payload = views[0] if n == 1 else pull_payload(batch)
    return [(pull_header(batch).decode(), [payload])]


async def _pull_loop(
    ws: WebSocket,
    cursor: StreamCursor,
    opts: ReadOptions,
    acks: asyncio.Queue[dict[str, Any]],
    gone: Callable[[], bool],
) -> None:
    send = ws.send
    loop = asyncio.get_running_loop()
    interval = 1.0 / opts.max_fps if opts.max_fps > 0 else 0.0
    next_at = 0.0

    async def pace() -> None:
        nonlocal next_at
        now = loop.time()
        if now < next_at:
            await asyncio.sleep(next_at - now)
            now = next_at
        next_at = now + interval

    await cursor.resolve()
    # Without latest, ack or max_fps the next read runs while this one is sent, so
    # Redis's work and the websocket's overlap (at most two reads in memory).
    prefetch = not (opts.latest or opts.ack or interval)
    read_ahead = len(cursor.sids) == 1 and opts.count == 1 and not opts.latest
    sid_json = json_string(cursor.sids[0]).decode() if read_ahead else None
    redis_count = opts.count
    ahead: asyncio.Task[Any] | None = None
    try:
        while not gone():
            if interval and opts.latest:
                await pace()  # then read: the newest entry at sending time
            if ahead is not None:
                batch, ahead = await ahead, None
            else:
                batch = await cursor.read(opts.block, redis_count)
            if read_ahead:
                redis_count = _redis_count(batch)
            if prefetch:
                ahead = loop.create_task(cursor.read(opts.block, redis_count))
            metrics.pulled("ws", batch)
            frames = _frames(batch, opts.header, sid_json)
            del batch
            for header, payloads in frames:
                if interval and not opts.latest:
                    await pace()
                if header is not None:
                    await send({"type": "websocket.send", "text": header})
                for payload in payloads:
                    await send({"type": "websocket.send", "bytes": payload})
                if opts.ack:
                    message = await acks.get()
                    if message.get("text") is None:
                        raise BadInput(
                            "expected a text message as ack, got a binary message",
                            CLOSE_UNSUPPORTED,
                        )
    finally:
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead
