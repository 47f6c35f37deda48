"""The asyncio client of the fastredis server's websocket protocol.

    async with AsyncClient("ws://localhost:8000") as c:
        await c.push("glf", b"payload")               # one entry
        await c.push("glf", [b"a", b"b", b"c"])       # three entries, one message
        async for sid, entry_id, data in c.pull("glf", last_entry_id="0", count=100):
            ...

Push and pull sockets are opened on first use and kept; `close()` closes them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fastredis.client.errors import ClientError, ServerClosed, closed_error, connect_error
from fastredis.client.protocol import (
    CONNECT_OPTIONS,
    DEFAULT_URL,
    Entry,
    Payload,
    PullSocket,
    PushSocket,
    base_url,
    push_frame,
)

__all__ = ["AsyncClient", "AsyncPuller", "AsyncPusher"]


async def _aopen(
    url: str, open_timeout: float | None, headers: dict[str, str] | None = None
) -> AsyncConnection:
    try:
        return await aconnect(
            url, open_timeout=open_timeout, additional_headers=headers, **CONNECT_OPTIONS
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise connect_error(url, exc) from exc


class AsyncPusher(PushSocket):
    """One push socket: `await pusher.push(data)`; an async context manager."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPusher:
        if self._ws is None:
            self._ws = await _aopen(self.url, self._open_timeout, self._headers)
        return self

    async def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        ws = self._ws or (await self.connect())._ws
        assert ws is not None
        header, payload = push_frame(data)
        try:
            await ws.send(header)
            await ws.send(payload)
            if self.ack:
                reply = await ws.recv()
                return json.loads(reply)
        except ConnectionClosed as exc:
            raise closed_error(self.url, exc) or ServerClosed(self.url, 1000, "closed") from exc
        return None

    async def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    async def __aenter__(self) -> AsyncPusher:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncPuller(PullSocket):
    """One pull socket. `async for sid, id, data in puller` (entries), or
    `await puller.recv_batch()` / `puller.batches()` (one list per frame).
    Connects on first use; with ack, acknowledges a frame when the next is asked for."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPuller:
        if self._ws is None:
            self._ws = await _aopen(self.url, self._open_timeout, self._headers)
        return self

    async def recv_batch(self) -> list[Entry] | None:
        """The next frame's entries; None when the server ended the pull normally."""
        ws = self._ws or (await self.connect())._ws
        assert ws is not None
        try:
            if self._owe_ack:
                await ws.send("ack")
                self._owe_ack = False
            header = json.loads(await ws.recv())
            payload = await ws.recv()
        except ConnectionClosed as exc:
            error = closed_error(self.url, exc)
            if error is not None:
                raise error from exc
            return None
        return self._frame(header, payload)

    async def batches(self) -> AsyncIterator[list[Entry]]:
        while (batch := await self.recv_batch()) is not None:
            yield batch

    def __aiter__(self) -> AsyncIterator[Entry]:
        return self._entries()

    async def _entries(self) -> AsyncIterator[Entry]:
        async for batch in self.batches():
            for entry in batch:
                yield entry

    async def close(self) -> None:
        self.closed = True
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    async def __aenter__(self) -> AsyncPuller:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncClient:
    """Push and pull against one server; push sockets are kept per stream."""

    def __init__(
        self, url: str = DEFAULT_URL, *, open_timeout: float = 10, token: str | None = None
    ):
        self.url = base_url(url)
        self.open_timeout = open_timeout
        self.token = token  # sent as Authorization: Bearer on every socket
        self._pushers: dict[tuple[str, bool], AsyncPusher] = {}
        self._pullers: list[AsyncPuller] = []

    async def push(
        self, sid: str, data: Payload | Sequence[Payload], *, ack: bool = False
    ) -> list[str] | None:
        """Write `data` (one entry) or a list (one entry each) to `sid`."""
        pusher = self._pushers.get((sid, ack))
        if pusher is None:
            pusher = AsyncPusher(
                self.url, sid, ack=ack, open_timeout=self.open_timeout, token=self.token
            )
            await pusher.connect()
            self._pushers[(sid, ack)] = pusher
        try:
            return await pusher.push(data)
        except ClientError:
            self._pushers.pop((sid, ack), None)
            raise

    def pusher(self, sid: str, *, ack: bool = False) -> AsyncPusher:
        """A push socket of its own (`async with client.pusher(sid) as p`)."""
        return AsyncPusher(self.url, sid, ack=ack, open_timeout=self.open_timeout, token=self.token)

    def pull(self, sid: str, **options: Any) -> AsyncPuller:
        """A pull socket: options last_entry_id ("$", "0", an id), count, latest,
        block (ms), max_fps, ack. Iterate it for (sid, id, bytes)."""
        puller = AsyncPuller(
            self.url, sid, open_timeout=self.open_timeout, token=self.token, **options
        )
        # kept to be closed with the client; those closed already are dropped
        self._pullers = [p for p in self._pullers if not p.closed]
        self._pullers.append(puller)
        return puller

    def pull_batches(self, sid: str, **options: Any) -> AsyncIterator[list[Entry]]:
        """Like pull(), one list of entries per frame."""
        return self.pull(sid, **options).batches()

    async def close(self) -> None:
        pushers, self._pushers = list(self._pushers.values()), {}
        pullers, self._pullers = self._pullers, []
        socks: list[AsyncPusher | AsyncPuller] = [*pushers, *pullers]
        for sock in socks:
            await sock.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
