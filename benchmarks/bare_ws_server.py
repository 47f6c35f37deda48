"""A bare websocket server speaking the seed-003 push/pull protocol, with no Redis.

    python benchmarks/bare_ws_server.py --port 8001

It is the websocket-layer limit of the server benchmark: the same stack as
`fastredis serve` (Starlette under uvicorn, websockets-sansio, permessage-deflate off),
with nothing of Redis or of fastredis's code in the way, so what it measures is what
the websocket layer and the load client carry at best. A push is parsed (header
offsets checked against the payload) and only its ids and sizes are kept, plus the
last few payloads of each stream; a pull is answered with the real payloads when they
are that recent (a live pull: the latency case), otherwise with canned frames cut
from a pushed payload, each entry stamped with its sequence number the way the load
tool stamps them (one reused buffer per batch shape: no allocation per batch).

Protocol subset (the shape of DESIGN.md's "Server face"):

* `WS /data/{sid}/push`: a text JSON header (`[end1, ...]`, `[[sid, end], ...]` or
  `[[sid, id, end], ...]`: the last element of each item is its end offset; the
  stream named in the path is used), then one binary message. `?header=0`: every
  binary message is one entry. `?ack=1`: answer each message with the JSON list of
  the new ids. Offsets that do not fit the payload close the socket with 1007.
* `WS /data/{sid}/pull`: `last_entry_id` ($ default, 0, or an id), `count` (1),
  `latest` (skip to the newest entry). Each batch is a text header
  `[[sid, id, start], ...]` and one binary message with the payloads back to back;
  when nothing is new it waits (like `block=0`). Other parameters are ignored.

Ids are made like Redis makes them (ms-seq, strictly increasing per stream).
It is a benchmark tool, not a store: payloads come back canned, not as pushed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["create_app", "main", "uvicorn_config"]

MAX_MESSAGE_SIZE = 64 * 1024 * 1024


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


async def push(ws: WebSocket) -> None:
    sid = ws.path_params["sid"]
    use_header = ws.query_params.get("header", "1") not in ("0", "false")
    ack = ws.query_params.get("ack", "0") in ("1", "true")
    store: _Store = ws.app.state.store
    await ws.accept()
    st = store.get(sid)
    try:
        while True:
            if use_header:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                text = msg.get("text")
                if text is None:
                    await ws.close(1003, "expected a text header")
                    return
                header = json.loads(text)
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is None:
                await ws.close(1003, "expected a binary message")
                return
            parts = _split(header, data) if use_header else [data]
            ids = st.add(sid, parts)
            if ack:
                await ws.send_text(json.dumps(ids))
    except (ValueError, json.JSONDecodeError) as exc:
        await ws.close(1007, str(exc)[:120])
    except WebSocketDisconnect:
        return


def _start(st: _Stream, last_entry_id: str) -> int:
    if last_entry_id == "$":
        return len(st.keys)
    if last_entry_id in ("0", "-"):
        return 0
    ms, _, seq = last_entry_id.partition("-")
    return bisect.bisect_right(st.keys, (int(ms), int(seq or 0)))


async def pull(ws: WebSocket) -> None:
    sid = ws.path_params["sid"]
    q = ws.query_params
    count = int(q.get("count", "1"))
    latest = q.get("latest", "0") in ("1", "true")
    store: _Store = ws.app.state.store
    await ws.accept()
    st = store.get(sid)
    pos = _start(st, q.get("last_entry_id", "$"))
    canned: dict[Any, bytearray] = {}
    gone = asyncio.ensure_future(ws.receive())  # the client's close, or anything it sends
    try:
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
            starts, offset = [], 0
            for n in st.sizes[pos:end]:
                starts.append(offset)
                offset += n
            frags = st.frags[pos:end]
            header = "[" + ",".join(f"{f}{s}]" for f, s in zip(frags, starts, strict=True)) + "]"
            await ws.send_text(header)
            await ws.send_bytes(st.payload(pos, end, canned))
            pos = end
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
    app.state.store = _Store()
    return app


def uvicorn_config(host: str = "127.0.0.1", port: int = 8001) -> uvicorn.Config:
    """The uvicorn settings `fastredis serve` uses: no permessage-deflate."""
    return uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=MAX_MESSAGE_SIZE + 65536,
        log_level="warning",
        lifespan="off",
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    args = p.parse_args(argv)
    server = uvicorn.Server(uvicorn_config(args.host, args.port))
    print(f"bare websocket server on ws://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


if __name__ == "__main__":
    main()
