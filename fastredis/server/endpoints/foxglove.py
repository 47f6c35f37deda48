"""``WS /foxglove``: the streams as channels of the Foxglove WebSocket protocol
(``foxglove.websocket.v1``), so the Foxglove app shows them live.

* On connect: ``serverInfo``, then ``advertise`` of the streams the token may read
  (SCAN TYPE stream, at most `MAX_CHANNELS`), again every `SCAN_S` seconds for new
  streams, and ``unadvertise`` for those gone. How a stream is advertised:
  `fastredis.server.endpoints.foxglove_wire`.
* ``subscribe`` starts one hub subscription per channel (the shared read: no XREAD per
  viewer) from the newest entry; each entry goes out as one binary Message Data frame.
  With ``latest=1`` (the default) a viewer that does not keep up gets the newest entry
  and skips the rest: nothing queues up. ``max_fps`` caps the frames a second per
  channel (each the newest); ``latest=0`` sends every entry (a slow viewer catches up
  by cursor). Viewers ride the group the pulls of the stream read, so one XREAD per
  entry serves them all (`fastredis.server.reads.newest`).
* A client message that is not the protocol closes the socket with 1007 (1003 for a
  binary one: client publishing is not offered) and a reason; a subscribe to an unknown
  channel, a reused subscription id and ops not offered get a ``status`` message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect

from fastredis._frames import pull_views
from fastredis.server.edge.auth import readable
from fastredis.server.edge.errors import explain
from fastredis.server.edge.protocol import (
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    BadInput,
    ReadOptions,
    parse_query,
    query_items,
)
from fastredis.server.endpoints.foxglove_wire import (
    SUBPROTOCOL,
    Channel,
    channel_for,
    compressed_image,
    image_format,
    message_data,
    parse_client_message,
    stamp_ns,
)
from fastredis.server.endpoints.websocket import close_with
from fastredis.server.reads.newest import Newest
from fastredis.server.reads.stream_info import first_sids
from fastredis.server.writes.meta import is_meta_key, meta_key

__all__ = ["MAX_CHANNELS", "SCAN_S", "foxglove_endpoint"]

SCAN_S = 2.0  # how often the streams are looked for (advertise / unadvertise)
MAX_CHANNELS = 1000  # streams advertised to one client at most
FRESH_S = 0.05  # a new client's first advertise: streams found at most this long ago
MAX_SUBSCRIPTIONS = 256  # per client: each is a hub subscription
SESSION = str(int(time.time() * 1000))  # serverInfo.sessionId: this process's start

# KEYS: streams. Reply per stream: its newest payload's first 8 bytes, or false when
# it is empty (what a stream holds is told without sending its payloads).
HEAD_LUA = """
local out = {}
for i, k in ipairs(KEYS) do
  local r = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)
  out[i] = false
  if #r > 0 then
    local f = r[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'd' then out[i] = string.sub(f[j + 1], 1, 8) end
    end
  end
end
return out
"""


class _SharedScan:
    """The stream keys, looked for at most once per `SCAN_S` for every client of the
    app (a SCAN walks the whole keyspace: not once per client); a client that has just
    connected takes a list at most `FRESH_S` old."""

    def __init__(self) -> None:
        self._sids: list[str] = []
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def sids(self, redis: Any, max_age: float) -> list[str]:
        """The stream keys, as found at most `max_age` seconds ago."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self._at > max_age:
                found = await first_sids(redis, MAX_CHANNELS)
                self._sids = [s for s in found if not is_meta_key(s)]
                self._at = loop.time()
            return self._sids


def _shared_scan(ws: WebSocket) -> _SharedScan:
    scan = getattr(ws.app.state, "foxglove_scan", None)
    if scan is None:
        scan = ws.app.state.foxglove_scan = _SharedScan()
    return scan


class _Session:
    """One Foxglove client: its channels, its subscriptions and their senders."""

    def __init__(self, ws: WebSocket, latest: bool, max_fps: float) -> None:
        self.ws = ws
        self.latest, self.max_fps = latest, max_fps
        self.redis = ws.app.state.redis
        self.channels: dict[int, Channel] = {}
        self.by_sid: dict[str, int] = {}
        self.next_channel = 1
        self.subs: dict[int, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()
        self._heads = self.redis.register_script(HEAD_LUA)

    async def send_json(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def status(self, level: int, message: str) -> None:
        await self.send_json({"op": "status", "level": level, "message": message})

    async def scan(self, first: bool = False) -> None:
        """Advertise the readable streams not advertised yet; unadvertise those gone."""
        max_age = FRESH_S if first else SCAN_S * 0.9
        sids = readable(self.ws, await _shared_scan(self.ws).sids(self.redis, max_age))
        gone = [self.by_sid[s] for s in set(self.by_sid) - set(sids)]
        if gone:
            for cid in gone:
                del self.by_sid[self.channels.pop(cid).sid]
            await self.send_json({"op": "unadvertise", "channelIds": sorted(gone)})
        new = [s for s in sids if s not in self.by_sid]
        if not new:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in new:
                pipe.get(meta_key(sid))
            metas = await pipe.execute(raise_on_error=False)
        heads = await self._heads(keys=new)
        advertised = []
        for sid, meta, head in zip(new, metas, heads, strict=True):
            try:
                meta = json.loads(meta) if isinstance(meta, bytes) else None
            except ValueError:
                meta = None
            channel = channel_for(sid, meta, head if isinstance(head, bytes) else None)
            if channel is None:
                continue
            cid, self.next_channel = self.next_channel, self.next_channel + 1
            self.channels[cid], self.by_sid[sid] = channel, cid
            advertised.append(channel.advertised(cid))
        if advertised:
            await self.send_json({"op": "advertise", "channels": advertised})

    async def subscribe(self, pairs: list[tuple[int, int]]) -> None:
        for sub_id, cid in pairs:
            channel = self.channels.get(cid)
            if channel is None:
                await self.status(2, f"subscribe: no channel {cid} is advertised")
            elif sub_id in self.subs:
                await self.status(2, f"subscribe: subscription id {sub_id} is in use")
            elif len(self.subs) >= MAX_SUBSCRIPTIONS:
                raise BadInput(f"more than {MAX_SUBSCRIPTIONS} subscriptions on one socket")
            else:
                task = asyncio.get_running_loop().create_task(self._forward(sub_id, channel))
                self.subs[sub_id] = task

    async def unsubscribe(self, ids: list[int]) -> None:
        for sub_id in ids:
            task = self.subs.pop(sub_id, None)
            if task is None:
                await self.status(1, f"unsubscribe: no subscription {sub_id}")
                continue
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _forward(self, sub_id: int, channel: Channel) -> None:
        """Send the channel's entries as Message Data frames, newest first."""
        # the ordinary group (the one pulls read), latest / max_fps applied here
        sub = self.ws.app.state.hub.subscribe([channel.sid], ["*"], via="foxglove")
        skipping = self.latest or bool(self.max_fps)
        source = Newest(sub, self.max_fps or None, "foxglove") if skipping else sub
        try:
            async with source:
                while True:
                    delivery = await source.next()
                    if delivery is None:
                        continue
                    delivery.sent("foxglove")
                    batch = delivery.batch
                    views = list(enumerate(pull_views(batch)))
                    for i, view in views[-1:] if skipping else views:
                        stamp = stamp_ns(*batch.id_at(i))
                        parts: list[Any] = [view]
                        if channel.images:
                            fmt = image_format(bytes(view[:8]))
                            if fmt is None:
                                continue  # an image channel shows images only
                            parts = compressed_image(channel.sid, stamp, fmt, view)
                        frame = message_data(sub_id, stamp, parts)
                        async with self.send_lock:
                            await self.ws.send_bytes(frame)
        except RedisError as exc:
            with contextlib.suppress(Exception):
                await self.status(2, f"{channel.sid}: {exc}")
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client went away; the receive loop ends the session

    async def close(self) -> None:
        tasks = list(self.subs.values())
        self.subs.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _receive(session: _Session) -> None:
    """Handle client messages until the client goes; BadInput for a malformed one."""
    ws = session.ws
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            raise BadInput(
                "binary client messages are not taken (clientPublish is not offered)",
                CLOSE_UNSUPPORTED,
            )
        op, arg = parse_client_message(text)
        if op == "subscribe":
            await session.subscribe(arg)
        elif op == "unsubscribe":
            await session.unsubscribe(arg)
        else:
            await session.status(1, f"{op} is not offered by this server")


async def _scan_loop(session: _Session) -> None:
    while True:
        await asyncio.sleep(SCAN_S)
        await session.scan()


async def foxglove_endpoint(ws: WebSocket) -> None:
    """WS /foxglove?latest=1&max_fps= (subprotocol foxglove.websocket.v1)."""
    offered = ws.scope.get("subprotocols") or []
    if SUBPROTOCOL not in offered:
        await ws.accept()
        await close_with(ws, CLOSE_POLICY, f"offer the subprotocol {SUBPROTOCOL}")
        return
    await ws.accept(subprotocol=SUBPROTOCOL)
    try:
        opts = parse_query("foxglove", query_items(ws.query_params), 1)
    except BadInput as exc:
        await close_with(ws, exc.code, exc.reason)
        return
    assert isinstance(opts, ReadOptions)
    session = _Session(ws, opts.latest, opts.max_fps)
    scanner: asyncio.Task[None] | None = None
    receiver: asyncio.Task[None] | None = None
    try:
        await session.send_json(
            {"op": "serverInfo", "name": "fastredis", "capabilities": [], "sessionId": SESSION}
        )
        await session.scan(first=True)
        scanner = asyncio.get_running_loop().create_task(_scan_loop(session))
        receiver = asyncio.get_running_loop().create_task(_receive(session))
        await asyncio.wait({scanner, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for done in (receiver, scanner):
            if done.done():
                done.result()  # a malformed message, a Redis failure: raised here
    except BadInput as exc:
        await close_with(ws, exc.code, exc.reason)
    except RedisError as exc:
        await close_with(ws, *(await explain(exc, ws.app.state.redis, [])).close())
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        for task in (scanner, receiver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await session.close()
