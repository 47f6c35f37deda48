"""The Redis Streamer README's websocket snippets, as written (host:port aside), and a loader that
runs them against a live server."""

from __future__ import annotations

from typing import Any

from support.live_server import LiveServer

SEND_SNIPPET = """
import json
import websockets

async def send_data(sid: str):
    async with websockets.connect(f'ws://localhost:8000/data/{sid}/push') as ws:
        # do what you do
        data = generate_some_data()
        # get it ready to store
        data = serialize_bytes(data)
        # send the header
        await ws.send(json.dumps([ len(data) ]))
        # send the data
        await ws.send(data)
"""

RECEIVE_SNIPPET = """
import json
import websockets

async def receive_data(sid: str):
    async with websockets.connect(f'ws://localhost:8000/data/{sid}/pull') as ws:
        # read the header
        header = json.loads(await ws.recv())
        # read the data
        entries = await ws.recv()

        # unpack the header
        sids, ts, offsets = tuple(zip(*header)) or ((),)*3
        # split up the data (for cases where you query multiple streams)
        for sid, t, start, end in zip(sids, ts, offsets, offsets[1:] + (None,)):
            do_something_with_data(sid, t, entries[start:end])
"""


def load_snippet(source: str, server: LiveServer, **names: Any) -> dict[str, Any]:
    """Run `source` with `names` defined, pointed at `server`; its namespace."""
    namespace: dict[str, Any] = dict(names)
    exec(source.replace("localhost:8000", f"{server.host}:{server.port}"), namespace)
    return namespace
