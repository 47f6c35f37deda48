"""The simplest relay a user would write: redis-py (+ hiredis) XREAD feeding a
`websockets` server, speaking the pull half of the Redis Streamer protocol.

    python benchmarks/relay_yardstick.py --port 8003 --redis-url redis://127.0.0.1:6380

`WS /data/{sid}/pull?last_entry_id=0&count=1`: XREAD COUNT `count` from
`last_entry_id` (BLOCK 1000 when nothing is new), then per batch a text header
`[[sid, id, start], ...]` and one binary message with the entries' `d` fields back to
back. Nothing else: no auth, no shared reads, no limits. It is the yardstick the
server's 1 MB pull is compared with (benchmarks/bench_server.py), not a product.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def relay(ws: ServerConnection, client: redis.asyncio.Redis) -> None:
    parts = urlsplit(ws.request.path if ws.request else "/")
    segments = parts.path.strip("/").split("/")
    if len(segments) != 3 or segments[0] != "data" or segments[2] != "pull":
        await ws.close(1008, "only /data/{sid}/pull")
        return
    sid = segments[1]
    query = parse_qs(parts.query)
    last: Any = query.get("last_entry_id", ["0"])[0]
    count = int(query.get("count", ["1"])[0])
    with contextlib.suppress(ConnectionClosed):
        await _relay(ws, client, sid, last, count)


async def _relay(
    ws: ServerConnection, client: redis.asyncio.Redis, sid: str, last: Any, count: int
) -> None:
    while True:
        reply = await client.xread({sid: last}, count=count, block=1000)
        if not reply:
            continue
        header, payloads, start = [], [], 0
        for entry_id, fields in reply[0][1]:
            data = fields[b"d"]
            header.append([sid, entry_id.decode(), start])
            payloads.append(data)
            start += len(data)
            last = entry_id
        await ws.send(json.dumps(header))
        await ws.send(payloads[0] if len(payloads) == 1 else b"".join(payloads))


async def main(port: int, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)  # hiredis parses when installed

    async def handler(ws: ServerConnection) -> None:
        await relay(ws, client)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.redis_url))
