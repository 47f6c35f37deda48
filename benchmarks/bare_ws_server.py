"""Bare websocket servers speaking the Redis Streamer push/pull protocol, with no Redis.

    python benchmarks/bare_ws_server.py --port 8001                   # Starlette + uvicorn
    python benchmarks/bare_ws_server.py --port 8002 --impl websockets  # websockets library

They are the websocket-layer limits of the server benchmark, with nothing of Redis or
of fastredis's code in the way. `--impl starlette` (the default) is the same stack as
`fastredis serve` (Starlette under uvicorn, websockets-sansio, permessage-deflate off,
asyncio's loop); `--impl websockets` is the `websockets` library's own asyncio server
(`websockets.asyncio.server.serve`, compression off, the same largest message), the
faster yardstick. Both run the same stream code (`serve_push`, `serve_pull`) through a
small `Conn` adapter, so they differ only in the websocket layer. A push is parsed
(header offsets checked against the payload) and only its ids and sizes are kept, plus
the last few payloads of each stream; a pull is answered with the real payloads when
they are that recent (a live pull: the latency case), otherwise with canned frames cut
from a pushed payload, each entry stamped with its sequence number the way the load
tool stamps them (one reused buffer per batch shape: no allocation per batch).

Protocol subset (the shape of DESIGN.md's "Server face"):

* `WS /data/{sid}/push`: a text JSON header (`[end1, ...]`, `[[sid, end], ...]` or
  `[[sid, id, end], ...]`: the last element of each item is its end offset; the
  stream named in the path is used), then one binary message. `?header=0`: every
  binary message is one entry. `?ack=1`: answer each message with the JSON list of
  the new ids. Offsets that do not fit the payload close the socket with 1007.
* `WS /data/{sid}/pull`: `last_entry_id` ($ default, 0, or an id), `count` (1),
  `latest` (skip to the newest entry), `resume` (1: first a text frame
  `{"resume": {"recovered": true}}`, as fastredis's opens a pull that resumes). Each
  batch is a text header `[[sid, id, start], ...]` and one binary message with the
  payloads back to back; when nothing is new it waits (like `block=0`). Other
  parameters are ignored.

Ids are made like Redis makes them (ms-seq, strictly increasing per stream).
It is a benchmark tool, not a store: payloads come back canned, not as pushed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fastredis.server.run.process import LISTEN_BACKLOG  # as fastredis serve's

__all__ = ["create_app", "main", "serve_websockets", "uvicorn_config", "websockets_handler"]

MAX_MESSAGE_SIZE = 64 * 1024 * 1024  # fastredis serve's default --max-message-size
FRAME_OVERHEAD = 64 * 1024  # the largest message plus framing, as fastredis serve


RECENT = 8  # real payloads kept per stream (for live pulls); older ones are canned
_SEQ = struct.Struct(">Q")


@dataclass
class _Stream:
    keys: list[tuple[int, int]] = field(default_factory=list)  # (ms, seq) per entry
    frags: list[str] = field(default_factory=list)  # '["sid","ms-seq",' per entry
    sizes: list[int] = field(default_factory=list)
    recent: deque[Any] = field(default_factory=lambda: deque(maxlen=RECENT))
    template: bytes = b""  # the largest payload seen: canned entries are cut from it
    seq0: int = 0  # the sequence number in the first entry's first 8 bytes
    last: tuple[int, int] = (0, 0)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, sid: str, parts: list[Any]) -> list[str]:
        ms = int(time.time() * 1000)
        last_ms, seq = self.last
        if ms <= last_ms:
            ms, seq = last_ms, seq + 1
        else:
            seq = 0
        if not self.keys and len(parts[0]) >= _SEQ.size:
            self.seq0 = _SEQ.unpack_from(parts[0])[0]
        ids = []
        prefix = json.dumps(sid)
        for part in parts:
            self.keys.append((ms, seq))
            entry_id = f"{ms}-{seq}"
            ids.append(entry_id)
            self.frags.append(f'[{prefix},"{entry_id}",')
            self.sizes.append(len(part))
            self.recent.append(part)
            if len(part) > len(self.template):
                self.template = bytes(part)
            seq += 1
        self.last = (ms, seq - 1)
        self.changed.set()
        self.changed = asyncio.Event()
        return ids

    def payload(self, pos: int, end: int, canned: dict[Any, bytearray]) -> Any:
        """The payloads of entries pos..end-1 back to back: the real ones when they are
        all recent, else canned bytes (cut from the template, each entry stamped with
        its sequence number like the load tool's payloads), reusing one buffer per
        batch shape (`canned`) so a batch costs no allocation."""
        first_recent = len(self.keys) - len(self.recent)
        if pos >= first_recent:
            parts = [self.recent[i - first_recent] for i in range(pos, end)]
            return parts[0] if len(parts) == 1 else b"".join(parts)
        sizes = self.sizes[pos:end]
        key = (sizes[0], len(sizes)) if sizes.count(sizes[0]) == len(sizes) else None
        buf = canned.get(key) if key is not None else None
        if buf is None:
            buf = bytearray(b"".join(self.template[:n] for n in sizes))
            if key is not None:
                canned[key] = buf
        start = 0
        for i, n in enumerate(sizes):
            if n >= _SEQ.size:
                _SEQ.pack_into(buf, start, self.seq0 + pos + i)
            start += n
        return buf


class _Store:
    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}

    def get(self, sid: str) -> _Stream:
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = _Stream()
        return st


def _split(header: Any, data: bytes) -> list[Any]:
    """The payload parts a push header describes; ValueError when they do not fit."""
    if not isinstance(header, list) or not header:
        raise ValueError("header must be a non-empty JSON list")
    ends = [item[-1] if isinstance(item, list) else item for item in header]
    view = memoryview(data)
    parts, start = [], 0
    for end in ends:
        if not isinstance(end, int) or end < start or end > len(data):
            raise ValueError(f"offset {end!r} does not fit a {len(data)}-byte payload")
        parts.append(data if len(ends) == 1 else view[start:end])
        start = end
    if start != len(data):
        raise ValueError(f"offsets end at {start}, the payload has {len(data)} bytes")
    return parts


class Gone(Exception):
    """The peer has gone (raised by a `Conn` when it can no longer send)."""


class Conn(Protocol):
    """One accepted websocket, whatever library serves it: the stream code below sees
    only this."""

    async def receive(self) -> str | bytes | None:
        """The next message (text as str, binary as bytes); None when the peer has gone."""
        ...

    async def send(self, message: str | bytes | bytearray) -> None:
        """Send one message (str: text, else binary); raise Gone when the peer has gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def _flag(query: Mapping[str, str], name: str, default: str) -> bool:
    return query.get(name, default) not in ("0", "false")


async def serve_push(conn: Conn, st: _Stream, sid: str, query: Mapping[str, str]) -> None:
    """The push loop of one socket: a text header and one binary message (or, with
    `header=0`, one binary message per entry) at a time, until the peer goes."""
    use_header = _flag(query, "header", "1")
    ack = query.get("ack", "0") in ("1", "true")
    header: Any = None
    try:
        while True:
            if use_header:
                text = await conn.receive()
                if text is None:
                    return
                if not isinstance(text, str):
                    await conn.close(1003, "expected a text header")
                    return
                header = json.loads(text)
            data = await conn.receive()
            if data is None:
                return
            if isinstance(data, str):
                await conn.close(1003, "expected a binary message")
                return
            parts = _split(header, data) if use_header else [data]
            ids = st.add(sid, parts)
            if ack:
                await conn.send(json.dumps(ids))
    except (ValueError, json.JSONDecodeError) as exc:
        await conn.close(1007, str(exc)[:120])
    except Gone:
        return


RESUMED = '{"resume": {"recovered": true}}'  # nothing is ever lost here


def _start(st: _Stream, last_entry_id: str) -> int:
    if last_entry_id == "$":
        return len(st.keys)
    if last_entry_id in ("0", "-"):
        return 0
    ms, _, seq = last_entry_id.partition("-")
    return bisect.bisect_right(st.keys, (int(ms), int(seq or 0)))


def _pull_header(st: _Stream, pos: int, end: int) -> str:
    starts, offset = [], 0
    for n in st.sizes[pos:end]:
        starts.append(offset)
        offset += n
    frags = st.frags[pos:end]
    return "[" + ",".join(f"{f}{s}]" for f, s in zip(frags, starts, strict=True)) + "]"


async def serve_pull(conn: Conn, st: _Stream, query: Mapping[str, str]) -> None:
    """The pull loop of one socket: batches of up to `count` entries from
    `last_entry_id`, waiting when nothing is new, until the peer goes."""
    count = int(query.get("count", "1"))
    latest = query.get("latest", "0") in ("1", "true")
    pos = _start(st, query.get("last_entry_id", "$"))
    canned: dict[Any, bytearray] = {}
    gone = asyncio.ensure_future(conn.receive())  # the client's close, or anything it sends
    try:
        if query.get("resume", "0") in ("1", "true"):
            await conn.send(RESUMED)
        while True:
            while pos >= len(st.keys):
                waiter = asyncio.ensure_future(st.changed.wait())
                await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    waiter.cancel()
                    return
            if latest:
                pos = len(st.keys) - 1
            end = min(pos + count, len(st.keys))
            await conn.send(_pull_header(st, pos, end))
            await conn.send(st.payload(pos, end, canned))
            pos = end
    except Gone:
        return
    finally:
        gone.cancel()


# -- Starlette under uvicorn (the stack of `fastredis serve`) --------------------------


class _StarletteConn:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        try:
            msg = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        text = msg.get("text")
        return text if text is not None else msg.get("bytes")

    async def send(self, message: str | bytes | bytearray) -> None:
        try:
            if isinstance(message, str):
                await self.ws.send_text(message)
            else:
                await self.ws.send_bytes(message)  # type: ignore[arg-type]
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise Gone from exc

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(code, reason)


async def push(ws: WebSocket) -> None:
    await ws.accept()
    sid = ws.path_params["sid"]
    st = ws.app.state.store.get(sid)
    await serve_push(_StarletteConn(ws), st, sid, ws.query_params)


async def pull(ws: WebSocket) -> None:
    await ws.accept()
    st = ws.app.state.store.get(ws.path_params["sid"])
    await serve_pull(_StarletteConn(ws), st, ws.query_params)


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            WebSocketRoute("/data/{sid}/push", push),
            WebSocketRoute("/data/{sid}/pull", pull),
        ]
    )
    app.state.store = _Store()
    return app


def uvicorn_config(host: str = "127.0.0.1", port: int = 8001) -> uvicorn.Config:
    """The uvicorn settings `fastredis serve` uses: no permessage-deflate, asyncio's loop."""
    return uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=MAX_MESSAGE_SIZE + FRAME_OVERHEAD,
        loop="asyncio",
        log_level="warning",
        lifespan="off",
        backlog=LISTEN_BACKLOG,
    )


# -- the websockets library's own asyncio server -----------------------------------------


class _WebsocketsConn:
    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            return None

    async def send(self, message: str | bytes | bytearray) -> None:
        try:
            await self.ws.send(message)
        except ConnectionClosed as exc:
            raise Gone from exc

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


_ROUTE = re.compile(r"/data/([^/]+)/(push|pull)")


def _route(path: str) -> tuple[str, str, dict[str, str]] | None:
    """(sid, 'push' or 'pull', query) of a request path, None when it is neither."""
    url = urlsplit(path)
    m = _ROUTE.fullmatch(url.path)
    if m is None:
        return None
    return unquote(m.group(1)), m.group(2), dict(parse_qsl(url.query))


def _process_request(ws: ServerConnection, request: Request) -> Response | None:
    """Plain HTTP (the start-up probe of benchmarks/procs.py) gets 200; unknown paths 404."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return ws.respond(HTTPStatus.OK, "bare websockets server\n")
    if _route(request.path) is None:
        return ws.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
    return None


def websockets_handler(store: _Store) -> Callable[[ServerConnection], Awaitable[None]]:
    """The connection handler for `websockets.asyncio.server.serve` over `store`."""

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        sid, kind, query = _route(ws.request.path)  # type: ignore[misc]  # checked before
        conn = _WebsocketsConn(ws)
        if kind == "push":
            await serve_push(conn, store.get(sid), sid, query)
        else:
            await serve_pull(conn, store.get(sid), query)

    return handler


async def serve_websockets(host: str = "127.0.0.1", port: int = 8001) -> None:
    """Serve with the websockets library (no compression, the same largest message as
    the Starlette server) until cancelled."""
    async with serve(
        websockets_handler(_Store()),
        host,
        port,
        compression=None,
        max_size=MAX_MESSAGE_SIZE + FRAME_OVERHEAD,
        process_request=_process_request,
        backlog=LISTEN_BACKLOG,
    ) as server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--impl",
        choices=("starlette", "websockets"),
        default="starlette",
        help="Starlette under uvicorn (the stack of fastredis serve; the default) or the "
        "websockets library's asyncio server",
    )
    args = p.parse_args(argv)
    print(f"bare {args.impl} server on ws://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        if args.impl == "websockets":
            asyncio.run(serve_websockets(args.host, args.port))
        else:
            uvicorn.Server(uvicorn_config(args.host, args.port)).run()


if __name__ == "__main__":
    main()
