"""WS /data/{sid}/push: a text JSON header, then one binary message, per push.

Header forms (see `fastredis._frames.push_entries`): ``[end, ...]`` (every entry to
each stream of the path), ``[[sid, end], ...]`` or ``[[sid, id, end], ...]``; end
offsets into the binary message, the last equal to its length. ``?header=0``: no
header, every binary message is one entry. ``?ack=1``: after each message is
written, the server sends a text message with the JSON list of its new ids, in the
order of the entries (stream by stream for each offset when the path names several
streams). ``?producer=ID``: exactly-once pushes (acks implied): the socket first gets
``{"producer": ID, "committed": N, "recent": {...}}`` and the k-th message after it is
the producer's message N+k; one already committed is acked with its original ids and
not written again (`fastredis.server.writes.producers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastredis._frames import FrameError, push_entries
from fastredis.server.edge.auth import write_check
from fastredis.server.edge.drain import CLOSE_RESTART
from fastredis.server.edge.errors import explain
from fastredis.server.edge.protocol import (
    CLOSE_INVALID_DATA,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    BadInput,
    PushOptions,
    parse_query,
    parse_sids,
    query_items,
)
from fastredis.server.endpoints.websocket import accept_checked, close_with, send_quietly
from fastredis.server.run.settings import Settings
from fastredis.server.writes.meta import is_meta_key
from fastredis.server.writes.producers import ProducerSession
from fastredis.server.writes.write_lanes import PushWriter

__all__ = ["push_endpoint"]

log = logging.getLogger("fastredis.server")


def _header(text: str, limit: int) -> Any:
    """The decoded JSON header, refused (1009) past `limit` bytes, or (1007) when it is
    not JSON, nests deeper than Python can decode, or holds a lone surrogate."""
    # Fast path for the README's form, `[len(data)]`: ~5 us less than json.loads.
    if text[:1] == "[" and text[-1:] == "]":
        inner = text[1:-1].strip()
        if inner.isdigit() and inner.isascii() and (inner[0] != "0" or inner == "0"):
            return [int(inner)]
    size = len(text) if len(text) * 4 <= limit or text.isascii() else len(text.encode())
    if size > limit:
        raise BadInput(
            f"header of {size} bytes is over the limit of {limit} (max_header_size)",
            CLOSE_TOO_BIG,
        )
    try:
        header = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"header is not JSON: {exc}", CLOSE_INVALID_DATA) from None
    except RecursionError:
        raise BadInput("header nests too deeply to be a push header", CLOSE_INVALID_DATA) from None
    # The text itself is valid UTF-8 (the websocket layer checks); only an escape
    # can make a lone surrogate, which no stream name or id can hold.
    if "\\u" in text:
        try:
            json.dumps(header, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise BadInput(
                f"header holds {exc.object[exc.start : exc.end]!r}, a lone surrogate "
                "(not Unicode text)",
                CLOSE_INVALID_DATA,
            ) from None
    return header


def _entry_count(header: Any, n_sids: int) -> int:
    """How many entries `header` adds: each offset of the plain form goes to every
    stream of the path; each item of the [sid, ...] forms is one entry."""
    if not isinstance(header, list) or not header:
        return 0
    return len(header) if isinstance(header[0], list) else len(header) * n_sids


class PushEndpoint:
    """The push socket as a plain ASGI app: the receive loop calls the server's
    `receive` directly (Starlette's WebSocket.receive adds ~3 us a message)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _push(WebSocket(scope, receive, send), receive)


push_endpoint = PushEndpoint()


async def _push(ws: WebSocket, receive: Receive) -> None:
    settings = ws.app.state.settings
    if not await accept_checked(ws, "write"):
        return
    try:
        sids = parse_sids(ws.path_params["sid"])
        opts = parse_query("push", query_items(ws.query_params), len(sids))
        assert isinstance(opts, PushOptions)
    except BadInput as exc:
        await close_with(ws, exc.code, exc.reason)
        return

    async def send_ids(ids: list[str]) -> None:
        await send_quietly(ws, {"type": "websocket.send", "text": json.dumps(ids)})

    async def on_error(exc: BaseException) -> None:
        await close_with(ws, *(await explain(exc, redis, sids)).close())

    redis = ws.app.state.redis
    producer = None
    if opts.producer is not None:
        try:
            producer, hello = await ProducerSession.open(
                redis, sids, opts.producer, settings.producer_ttl
            )
        except BadInput as exc:
            await close_with(ws, exc.code, exc.reason)
            return
        except RedisError as exc:
            await on_error(exc)
            return
        await send_quietly(ws, {"type": "websocket.send", "text": json.dumps(hello)})
    writer = ws.app.state.writers.writer(
        send_ids if opts.ack else None, on_error, producer=producer
    )
    clean = False
    drained: str | None = None  # the server drains: what it received is acked, then 1012
    loop_task = asyncio.get_running_loop().create_task(
        _receive_loop(ws, receive, writer, sids, opts, settings)
    )

    def drain(reason: str) -> None:
        nonlocal drained
        if drained is None:
            drained = reason
            loop_task.cancel()

    unregister = ws.app.state.drain.register(drain, push=True)
    try:
        try:
            await loop_task
        except asyncio.CancelledError:
            if drained is None:
                raise
        clean = True
    except BadInput as exc:
        await close_with(ws, exc.code, exc.reason)
    except RedisError as exc:
        await on_error(exc)
    except (WebSocketDisconnect, OSError):
        clean = True  # gone while we answered: still write what arrived in full
    finally:
        if not loop_task.done():  # cancelled from outside
            loop_task.cancel()
        # Messages received in full are written even when the client is gone.
        await writer.close(wait=clean or writer.error is None)
        unregister()
        if drained is not None:
            await close_with(ws, CLOSE_RESTART, drained)


def check_header_sids(
    entries: list[tuple[str, str, Any]], check: Callable[[Iterable[str]], None] | None
) -> None:
    """Refuse (before anything is written) a header naming a metadata key, or a
    stream outside the token's write scope."""
    sids = {entry[0] for entry in entries}
    for sid in sids:
        if is_meta_key(sid):
            raise BadInput(f"bad header: {sid!r} is a metadata key, not a stream")
    if check is not None:
        check(sids)


async def _receive_loop(
    ws: WebSocket,
    receive: Receive,
    writer: PushWriter,
    sids: list[str],
    opts: PushOptions,
    settings: Settings,
) -> None:
    with_header = opts.header
    # Streams a header names besides the path's (already admitted) are checked here.
    check_sids = write_check(ws)
    max_size = settings.max_message_size
    max_entries = settings.max_entries_per_message
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if with_header:
            text = message.get("text")
            if text is None:
                raise BadInput(
                    "expected a text JSON header, got a binary message", CLOSE_UNSUPPORTED
                )
            header = _header(text, settings.max_header_size)
            n = _entry_count(header, len(sids))
            if n > max_entries:  # refused before its payload arrives
                raise BadInput(
                    f"header of {n} entries is over the limit of {max_entries} "
                    "(max_entries_per_message)",
                    CLOSE_TOO_BIG,
                )
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return  # header without its payload: nothing is written
            payload = message.get("bytes")
            if payload is None:
                raise BadInput(
                    "expected a binary payload after the header, got a text message",
                    CLOSE_UNSUPPORTED,
                )
        else:
            payload = message.get("bytes")
            if payload is None:
                raise BadInput(
                    "expected a binary message (header=0), got a text message", CLOSE_UNSUPPORTED
                )
            header = [len(payload)]
        if len(payload) > max_size:
            raise BadInput(
                f"message of {len(payload)} bytes is over the limit of {max_size}", CLOSE_TOO_BIG
            )
        try:
            entries = push_entries(header, payload, sids)
        except FrameError as exc:
            raise BadInput(f"bad header: {exc}", CLOSE_INVALID_DATA) from None
        if with_header and header and isinstance(header[0], list):
            check_header_sids(entries, check_sids)
        if entries:
            await writer.write(entries)
        elif opts.producer is not None:  # it would be counted, yet nothing stores the count
            raise BadInput("a producer's message needs at least one entry (the header is [])")
        elif opts.ack:  # nothing to write; answer in order with the messages before
            await writer.drain()
            await send_quietly(ws, {"type": "websocket.send", "text": "[]"})
