"""Viewers of one stream for benchmarks/bench_faces.py, in a process of their own:

    python benchmarks/faces_viewers.py KIND N HOST PORT SID WARMUP_S WINDOW_S

KIND is ``ws`` (websocket pulls), ``sse`` (GET /sse/{sid}?data=base64) or ``foxglove``
(/foxglove, subscribed to the stream's channel). Each of the N viewers connects, reads
for WARMUP_S seconds, then counts the frames it receives in the next WINDOW_S seconds.
Prints one JSON line: {"kind", "frames": [per viewer], "bytes": total}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import websockets

SSE_EVENT = b"\r\nid: "  # every event starts with its id, after a line end


class Counter:
    def __init__(self) -> None:
        self.frames = 0
        self.nbytes = 0
        self.counting = False

    def add(self, frames: int, nbytes: int) -> None:
        if self.counting:
            self.frames += frames
            self.nbytes += nbytes


async def _ws(c: Counter, host: str, port: int, sid: str) -> None:
    url = f"ws://{host}:{port}/data/{sid}/pull?last_entry_id=$&block=0&header=0"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        async for message in ws:
            c.add(1, len(message))


async def _sse(c: Counter, host: str, port: int, sid: str) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    writer.write(f"GET /sse/{sid}?data=base64 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    tail = b""
    while True:
        chunk = await reader.read(1 << 20)
        if not chunk:
            return
        data = tail + chunk
        c.add(data.count(SSE_EVENT), len(chunk))
        tail = data[-(len(SSE_EVENT) - 1) :]


async def _foxglove(c: Counter, host: str, port: int, sid: str) -> None:
    url = f"ws://{host}:{port}/foxglove"
    async with websockets.connect(
        url,
        subprotocols=["foxglove.websocket.v1"],
        max_size=None,
        compression=None,  # type: ignore[list-item]
    ) as ws:
        subscribed = False
        async for message in ws:
            if isinstance(message, bytes):
                c.add(1, len(message))
                continue
            data = json.loads(message)
            if data["op"] == "advertise" and not subscribed:
                for channel in data["channels"]:
                    if channel["topic"] == sid:
                        sub = {"id": 1, "channelId": channel["id"]}
                        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [sub]}))
                        subscribed = True


async def main(
    kind: str, n: int, host: str, port: int, sid: str, warmup: float, window: float
) -> dict[str, Any]:
    view = {"ws": _ws, "sse": _sse, "foxglove": _foxglove}[kind]
    counters = [Counter() for _ in range(n)]
    tasks = [asyncio.create_task(view(c, host, port, sid)) for c in counters]
    await asyncio.sleep(warmup)
    for c in counters:
        c.counting = True
    started = time.monotonic()
    await asyncio.sleep(window)
    for c in counters:
        c.counting = False
    elapsed = time.monotonic() - started
    failed = [repr(t.exception()) for t in tasks if t.done() and t.exception()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "kind": kind,
        "frames": [c.frames for c in counters],
        "bytes": sum(c.nbytes for c in counters),
        "seconds": elapsed,
        "failed": failed,
    }


if __name__ == "__main__":
    kind, n, host, port, sid, warmup, window = sys.argv[1:8]
    result = asyncio.run(main(kind, int(n), host, int(port), sid, float(warmup), float(window)))
    print(json.dumps(result), flush=True)
