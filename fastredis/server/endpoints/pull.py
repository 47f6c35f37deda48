"""WS /data/{sid}/pull: per batch, a text JSON header ``[[sid, id, start], ...]`` and
one binary message holding the payloads back to back.

Query: ``last_entry_id`` (``$``: entries added from now on; ``0``; ``*``: start with
the newest ``count`` entries; an id; or one per stream joined by '+'), ``count``
(entries per stream per batch, 1), ``block`` (ms, default 5000: when nothing arrives
for that long an empty batch -- header ``[]``, empty binary -- is sent, so an idle
pull shows it is alive; 0 waits forever), ``latest`` (skip to the newest entries:
frame dropping), ``max_fps`` (at most that many batches a second), ``header`` (1;
with 0 every entry is sent as its own binary message and nothing for an empty batch),
``ack`` (after each batch sent, wait for a text message from the client; a binary
message closes the pull with 1003), ``offsets`` (``start``, the default unless
``fastredis serve --offsets end``; ``end``: the header says where each payload ends, as
the Redis Streamer protocol's deployed clients read it), ``resume`` (1: first a text
frame ``{"resume": {...}}``, and ``{"gap": {...}}`` before entries that follow a loss;
`fastredis.server.reads.resume`), ``epoch`` (with resume: the epochs last seen).

``$`` (and every start) is fixed before the handshake is accepted: whatever is added
once the client sees the socket open is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastredis.server.edge.auth import admit
from fastredis.server.edge.drain import CLOSE_RESTART
from fastredis.server.edge.errors import explain
from fastredis.server.edge.protocol import (
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    BadInput,
    ReadOptions,
    end_offsets,
    parse_query,
    parse_sids,
    query_items,
)
from fastredis.server.edge.uvicorn_guard import TEXT_FIRST, VIEWS_EXTENSION
from fastredis.server.endpoints.websocket import close_with
from fastredis.server.reads.delivery import Delivery, Views, nbytes
from fastredis.server.reads.hub import Subscription
from fastredis.server.reads.splice_pump import SplicePump
from fastredis.server.run import metrics

__all__ = ["pull_endpoint"]

log = logging.getLogger("fastredis.server")

MAX_ACKS_AHEAD = 64  # acks a client may send before the batches they acknowledge


async def pull_endpoint(ws: WebSocket) -> None:
    settings = ws.app.state.settings
    if not await admit(ws, "read"):
        return
    try:
        sids = parse_sids(ws.path_params["sid"])
        opts = parse_query(
            "pull", query_items(ws.query_params), len(sids), default_block=settings.pull_block_ms,
            default_offsets=settings.offsets,
        )  # fmt: skip
        assert isinstance(opts, ReadOptions)
    except BadInput as exc:
        await ws.accept()
        await close_with(ws, exc.code, exc.reason)
        return
    sub = ws.app.state.hub.subscribe(
        sids, opts.last_entry_ids, count=opts.count, latest=opts.latest,
        max_fps=opts.max_fps or None, resume=opts.resume, epochs=opts.epochs,
    )  # fmt: skip
    try:
        async with sub:  # the start is fixed before the client sees the socket open
            await ws.accept()
            if sub.resumed is not None:
                await ws.send({"type": "websocket.send", "text": sub.resumed.frame()})
            await _serve(ws, sub, sids, opts)
    except RedisError as exc:  # fixing the start failed (_serve answers its own)
        await ws.accept()
        await close_with(ws, *(await explain(exc, ws.app.state.redis, sids)).close())


async def _serve(ws: WebSocket, sub: Subscription, sids: list[str], opts: ReadOptions) -> None:
    """Run an open pull until it ends (errors are told to the client here)."""

    # A watcher owns ws.receive(): it hands acks over and, when the client goes,
    # cancels the pull wherever it waits.
    main = asyncio.current_task()
    assert main is not None
    acks: asyncio.Queue[Message] | None = asyncio.Queue(MAX_ACKS_AHEAD) if opts.ack else None
    gone = False
    pulling = True
    drained: str | None = None  # the close reason, once the server drains

    def drain(reason: str) -> None:
        nonlocal drained
        if drained is None and pulling:
            drained = reason
            main.cancel()

    async def watch() -> None:
        nonlocal gone
        with contextlib.suppress(Exception):
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if acks is not None:
                    if message.get("text") is None:
                        await close_with(
                            ws, CLOSE_UNSUPPORTED,
                            "expected a text message as ack, got a binary message",
                        )  # fmt: skip
                        continue  # and wait for the disconnect
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

    watcher = asyncio.get_running_loop().create_task(watch())
    unregister = ws.app.state.drain.register(drain)
    try:
        try:
            await _pull_loop(ws, sub, opts, acks, lambda: gone)
        except BadInput as exc:
            await close_with(ws, exc.code, exc.reason)
        except RedisError as exc:
            await close_with(ws, *(await explain(exc, ws.app.state.redis, sids)).close())
        except (WebSocketDisconnect, OSError):
            pass  # the client went away while a batch was being sent
        finally:
            pulling = False
    except asyncio.CancelledError:
        if not gone and drained is None:
            raise
        uncancel = getattr(main, "uncancel", None)
        if uncancel is not None:
            uncancel()
        if drained is not None and not gone:
            await close_with(ws, CLOSE_RESTART, drained)
    finally:
        unregister()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _pull_loop(
    ws: WebSocket,
    sub: Subscription,
    opts: ReadOptions,
    acks: asyncio.Queue[Message] | None,
    gone: Callable[[], bool],
) -> None:
    """Send what the hub delivers: the frames of each batch are packed once and shared
    with every other pull of the same streams; at the tail, a frame the socket takes at
    once is sent by the hub's task (`_direct_sender`), and this sends the rest."""
    idle = opts.block / 1000 if opts.block else None
    views = VIEWS_EXTENSION in ws.scope.get("extensions", {})
    send = ws.send
    await _spliced_catch_up(ws, sub, opts)
    sub.direct = _direct_sender(ws, sub, opts)
    try:
        while not gone():
            delivery = await sub.next(timeout=idle)
            if delivery is None:  # `block` ms without an entry: an empty batch says alive
                if opts.header:
                    await send({"type": "websocket.send", "text": "[]"})
                    await send({"type": "websocket.send", "bytes": b""})
                continue
            if opts.resume:  # only readers that resume are told of gaps
                for gap in delivery.gaps:
                    await send({"type": "websocket.send", "text": gap.frame()})
            if not len(delivery.batch):
                continue
            delivery.sent("ws")
            for header, payloads in sub.frames(delivery, opts.header, views):
                if not opts.latest:
                    await sub.pace()
                first = None  # the header, when it goes out in the write of its payload
                if header is not None:
                    header = _header(header, payloads, opts)
                    if views and len(payloads) == 1:
                        first = header
                    else:
                        await send({"type": "websocket.send", "text": header})
                for payload in payloads:
                    await send(_binary(payload, first))
                    first = None
                if acks is not None:  # with `ack`
                    await acks.get()  # binary ones close the pull in the watcher
    finally:
        sub.direct = None


async def _spliced_catch_up(ws: WebSocket, sub: Subscription, opts: ReadOptions) -> None:
    """Send what a pull has to catch up by a `SplicePump` when it may: a pull of one
    stream from a given id, one entry per frame, with no ack, pacing, frame dropping or
    resume, on the ``fastredis.views`` socket (`fastredis.server.reads.splice_pump`)."""
    state = ws.app.state
    lender = ws.scope.get("extensions", {}).get(VIEWS_EXTENSION, {})
    if (
        state.pump_address is None
        or "lease" not in lender
        or len(sub.sids) != 1
        or opts.count != 1
        or opts.ack
        or opts.latest
        or opts.max_fps
        or opts.resume
        or opts.last_entry_ids[0] in ("$", "*")
        or not state.pumps.take()
    ):
        return

    def closed() -> None:  # the socket was closed or aborted while lent (pump is made)
        pump.stop(abort=True)

    try:
        lent = lender["lease"](closed)
        if lent is None:
            return
        client, held = lent
        sid = sub.sids[0]
        pump = SplicePump(
            state.pump_address, client, held, sid, sub.last_entry_id(), opts.header,
            opts.end_offsets,
        )  # fmt: skip
        try:
            await pump.run(_count_spliced)
        finally:
            lender["unlease"](not pump.broken)
            sub.moved_to({sid: pump.last})
    finally:
        state.pumps.give()


def _count_spliced(entries: int, nbytes: int, reads: int) -> None:
    metrics.pulled("ws", entries, nbytes)
    metrics.stream_read("spliced", reads)


def _header(header: str, payloads: list[Any], opts: ReadOptions) -> str:
    """A frame's text header as the pull sends it (with `end_offsets`: each entry's
    end in the binary message)."""
    return end_offsets(header, sum(nbytes(p) for p in payloads)) if opts.end_offsets else header


def _direct_sender(
    ws: WebSocket, sub: Subscription, opts: ReadOptions
) -> Callable[[Delivery], bool] | None:
    """What sends a delivery of one frame from the hub's task, when the socket takes it
    at once (`Subscription.direct`): for a pull that sends each frame as it comes (no
    ack, no pacing, no frame dropping) on the ``fastredis.views`` socket; else None."""
    send_now = ws.scope.get("extensions", {}).get(VIEWS_EXTENSION, {}).get("send_now")
    if send_now is None or opts.ack or opts.latest or opts.max_fps:
        return None

    def direct(delivery: Delivery) -> bool:
        if delivery.gaps or not len(delivery.batch):
            return False  # a gap is told first, in its own text message
        frames = sub.frames(delivery, opts.header, True)
        if len(frames) != 1 or len(frames[0][1]) != 1:
            return False
        header, payloads = frames[0]
        if header is not None:
            header = _header(header, payloads, opts)
        payload = payloads[0]
        if not send_now(_binary(payload, header)):
            return False
        delivery.sent("ws")
        return True

    return direct


def _binary(payload: Any, text: str | None) -> Message:
    """The send message of one binary message (several buffers when `Views`), with
    `text` sent just before it in the same write (the `fastredis.views` socket)."""
    key = VIEWS_EXTENSION if isinstance(payload, Views) else "bytes"
    message: Message = {"type": "websocket.send", key: payload}
    if text is not None:
        message[TEXT_FIRST] = text
    return message
