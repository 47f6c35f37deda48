"""A bare broadcast server: the fan-out ceiling of benchmarks/bench_fanout.py.

    python benchmarks/bare_broadcast.py --port 8002

The same stack as `fastredis serve` (Starlette under uvicorn, with the uvicorn settings
of benchmarks/bare_ws_server.py: websockets-sansio, no permessage-deflate) and no
Redis. Every pushed frame is kept as it arrived, with its pull header built once, and
the same two objects (the header text and the payload bytes) are sent to every viewer
of the stream: what a fan-out server does at best.

* `WS /data/{sid}/push`: a text JSON header (ignored but for the entry count: one
  entry per message, like `[len(data)]`), then one binary message; `?header=0`: every
  binary message is one frame. `?ack=1`: each message is answered with `["<id>"]`.
* `WS /data/{sid}/pull`: `last_entry_id` (`$`, the default, or `0`), `header` (1: a
  text header `[["sid","id",0]]` then the payload, the pull frame of `fastredis serve`
  at count=1; 0: the payload only), `latest` (skip to the newest frame). Other query
  parameters are ignored.

Frames are kept in a ring of at most `RING_BYTES` (and `RING_FRAMES`). A viewer that
falls further behind than the ring skips to its oldest frame: the skipped frames are
lost to it, in order and without duplicates (the benchmark counts them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import deque

import uvicorn
from bare_ws_server import uvicorn_config
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["create_app", "main"]

RING_BYTES = 256 * 1024 * 1024
RING_FRAMES = 4096


class _Stream:
    """The recent frames of one stream, by absolute position."""

    def __init__(self, sid: str) -> None:
        self.prefix = f"[[{json.dumps(sid)},"
        self.ring: deque[tuple[str, bytes]] = deque()
        self.ring_bytes = 0
        self.first = 0  # absolute position of ring[0]
        self.last = (0, -1)  # (ms, seq) of the newest id
        self.changed = asyncio.Event()

    @property
    def end(self) -> int:
        return self.first + len(self.ring)

    def add(self, data: bytes) -> str:
        ms = int(time.time() * 1000)
        last_ms, seq = self.last
        seq = seq + 1 if ms <= last_ms else 0
        ms = max(ms, last_ms)
        self.last = (ms, seq)
        entry_id = f"{ms}-{seq}"
        self.ring.append((f'{self.prefix}"{entry_id}",0]]', data))
        self.ring_bytes += len(data)
        while len(self.ring) > 1 and (self.ring_bytes > RING_BYTES or len(self.ring) > RING_FRAMES):
            self.ring_bytes -= len(self.ring.popleft()[1])
            self.first += 1
        self.changed.set()
        self.changed = asyncio.Event()
        return entry_id


def _stream(ws: WebSocket) -> _Stream:
    streams: dict[str, _Stream] = ws.app.state.streams
    sid = ws.path_params["sid"]
    if sid not in streams:
        streams[sid] = _Stream(sid)
    return streams[sid]


def _flag(ws: WebSocket, name: str, default: str) -> bool:
    return ws.query_params.get(name, default) not in ("0", "false")


async def push(ws: WebSocket) -> None:
    """Take frames (text header, then binary) and broadcast each as it arrived."""
    use_header = _flag(ws, "header", "1")
    ack = _flag(ws, "ack", "0")
    await ws.accept()
    st = _stream(ws)
    try:
        while True:
            if use_header:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                if msg.get("text") is None:
                    await ws.close(1003, "expected a text header")
                    return
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is None:
                await ws.close(1003, "expected a binary message")
                return
            entry_id = st.add(data)
            if ack:
                await ws.send_text(f'["{entry_id}"]')
    except WebSocketDisconnect:
        return


async def _wait(st: _Stream, pos: int, gone: asyncio.Future[object]) -> bool:
    """Wait until the stream has a frame at `pos`; False when the client went."""
    while pos >= st.end:
        waiter = asyncio.ensure_future(st.changed.wait())
        await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
        if gone.done():
            waiter.cancel()
            return False
    return True


async def pull(ws: WebSocket) -> None:
    """Send every frame from `last_entry_id` on, the same objects to every viewer."""
    use_header = _flag(ws, "header", "1")
    latest = _flag(ws, "latest", "0")
    await ws.accept()
    st = _stream(ws)
    pos = st.first if ws.query_params.get("last_entry_id", "$") == "0" else st.end
    send = ws.send
    gone = asyncio.ensure_future(ws.receive())  # the client's close, or anything it sends
    try:
        while await _wait(st, pos, gone):
            pos = st.end - 1 if latest else max(pos, st.first)  # behind the ring: skip
            header, data = st.ring[pos - st.first]
            if use_header:
                await send({"type": "websocket.send", "text": header})
            await send({"type": "websocket.send", "bytes": data})
            pos += 1
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    finally:
        gone.cancel()


def create_app() -> Starlette:
    app = Starlette(
        routes=[
            WebSocketRoute("/data/{sid}/push", push),
            WebSocketRoute("/data/{sid}/pull", pull),
        ]
    )
    app.state.streams = {}
    return app


def config(host: str = "127.0.0.1", port: int = 8002) -> uvicorn.Config:
    """bare_ws_server's uvicorn settings (those of `fastredis serve`), with this app."""
    cfg = uvicorn_config(host, port)
    cfg.app = create_app()
    return cfg


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8002)
    args = p.parse_args(argv)
    server = uvicorn.Server(config(args.host, args.port))
    print(f"bare broadcast server on ws://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


if __name__ == "__main__":
    main()
