"""The asyncio client of the fastredis server's websocket protocol.

    async with AsyncClient("ws://localhost:8000") as c:
        await c.push("glf", b"payload")               # one entry
        await c.push("glf", [b"a", b"b", b"c"])       # three entries, one message
        async for sid, entry_id, data in c.pull("glf", last_entry_id="0", count=100):
            ...

Push and pull sockets are opened on first use and kept; `close()` closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fastredis.client.errors import (
    ClientError,
    ServerClosed,
    ServerUnreachable,
    closed_error,
    connect_error,
)
from fastredis.client.protocol import (
    CONNECT_OPTIONS,
    DEFAULT_URL,
    Entry,
    Payload,
    PullSocket,
    PushSocket,
    base_urls,
    push_frame,
)
from fastredis.client.reconnect import Gap, Pending, retryable

__all__ = ["AsyncClient", "AsyncPuller", "AsyncPusher"]


def _closed(url: str, exc: ConnectionClosed) -> ServerClosed:
    return closed_error(url, exc) or ServerClosed(url, 1000, "closed")


async def _aopen(
    url: str, open_timeout: float | None, headers: dict[str, str] | None = None
) -> AsyncConnection:
    try:
        return await aconnect(
            url, open_timeout=open_timeout, additional_headers=headers, **CONNECT_OPTIONS
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise connect_error(url, exc) from exc
    except ConnectionClosed as exc:  # cut during the handshake
        raise ServerUnreachable(url, exc) from exc


class AsyncPusher(PushSocket):
    """One push socket: `await pusher.push(data)`; an async context manager. With a
    `producer`, a lost connection is reopened (full-jitter backoff, next server) and the
    messages not acked are resent: each is written once."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPusher:
        if self._ws is None:
            ws = await _aopen(self.url, self._open_timeout, self._headers)
            if self.log is not None:
                try:
                    self.log.hello(await ws.recv())
                    self.backoff.answered()
                except ConnectionClosed as exc:
                    raise _closed(self.url, exc) from exc
            self._ws = ws
        return self

    async def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        if self.log is not None:
            return await self._produce(data)
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
            raise _closed(self.url, exc) from exc
        return None

    async def _produce(self, data: Payload | Sequence[Payload]) -> list[str]:
        log = self.log
        assert log is not None
        message = Pending(*push_frame(data))
        log.unacked.append(message)
        while message.ids is None:
            try:
                await self._send_unacked()
            except ClientError as exc:
                await self._drop()
                if not retryable(exc):
                    log.unacked.clear()  # refused: none of them can be written
                    raise
                await asyncio.sleep(self._failed(exc))
            except BaseException:
                # Cancelled mid-exchange: what this socket owes is unknown, so the next
                # push opens a new one, whose hello settles it (the message is kept).
                ws, self._ws = self._ws, None
                if ws is not None:
                    ws.transport.abort()
                raise
        return message.ids

    async def _send_unacked(self) -> None:
        log = self.log
        assert log is not None
        fresh = self._ws is None
        await self.connect()  # a new socket's hello settles what was committed
        ws = self._ws
        assert ws is not None
        try:
            todo = log.unacked if fresh else log.unacked[-1:]
            for message in todo:
                await ws.send(message.header)
                await ws.send(message.payload)
            for _ in range(len(todo)):
                log.acked(json.loads(await ws.recv()))
        except ConnectionClosed as exc:
            raise _closed(self.url, exc) from exc
        self.backoff.answered()

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

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
    Connects on first use; with ack, acknowledges a frame when the next is asked for.
    With `reconnect`, a lost socket is reopened after the last id seen, and a `Gap` is
    yielded where entries were lost."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPuller:
        if self._ws is None:
            url = self.url
            self._opening()
            self._ws = await _aopen(url, self._open_timeout, self._headers)
        return self

    async def recv_batch(self) -> list[Entry] | Gap | None:
        """The next frame's entries (or, reconnecting, a Gap); None when the server
        ended the pull normally."""
        while True:
            try:
                return await self._recv_once()
            except ClientError as exc:
                await self._drop()
                delay = self._retry_delay(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def _recv_once(self) -> list[Entry] | Gap | None:
        ws = self._ws or (await self.connect())._ws
        assert ws is not None
        if self._gaps:
            return self._gaps.pop(0)
        try:
            if self._owe_ack:
                await ws.send("ack")
                self._owe_ack = False
            if self._header is None:
                text = await ws.recv()
                while isinstance(text, str) and text[:1] == "{":
                    gap = self._object(text)
                    if gap is not None:
                        return gap
                    text = await ws.recv()
                self._header = json.loads(text)
            # kept until its payload came: a call cancelled in between loses nothing
            payload = await ws.recv()
            header, self._header = self._header, None
        except ConnectionClosed as exc:
            error = closed_error(self.url, exc)
            if error is None and self.reconnect and exc.rcvd is not None and exc.rcvd.code == 1001:
                error = ServerClosed(self.url, 1001, "going away")
            if error is not None:
                raise error from exc
            return None
        return self._frame(header, payload)

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def batches(self) -> AsyncIterator[list[Entry] | Gap]:
        while (batch := await self.recv_batch()) is not None:
            yield batch

    def __aiter__(self) -> AsyncIterator[Entry | Gap]:
        return self._entries()

    async def _entries(self) -> AsyncIterator[Entry | Gap]:
        async for batch in self.batches():
            if isinstance(batch, Gap):
                yield batch
                continue
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
        self,
        url: str | Sequence[str] = DEFAULT_URL,
        *,
        open_timeout: float = 10,
        token: str | None = None,
    ):
        self.urls = base_urls(url)  # reconnecting sockets go round the list
        self.url = self.urls[0]
        self.open_timeout = open_timeout
        self.token = token  # sent as Authorization: Bearer on every socket
        self._pushers: dict[tuple[str, bool, str | None], AsyncPusher] = {}
        self._pullers: list[AsyncPuller] = []

    async def push(
        self,
        sid: str,
        data: Payload | Sequence[Payload],
        *,
        ack: bool = False,
        producer: str | None = None,
    ) -> list[str] | None:
        """Write `data` (one entry) or a list (one entry each) to `sid`. With
        `producer`, exactly once: acked, resent after a reconnect, never doubled."""
        key = (sid, ack, producer)
        pusher = self._pushers.get(key)
        if pusher is None:
            pusher = self.pusher(sid, ack=ack, producer=producer)
            if producer is None:  # a producer's push connects (and reconnects) itself
                await pusher.connect()
            self._pushers[key] = pusher
        try:
            return await pusher.push(data)
        except ClientError:
            self._pushers.pop(key, None)
            raise

    def pusher(self, sid: str, *, ack: bool = False, producer: str | None = None) -> AsyncPusher:
        """A push socket of its own (`async with client.pusher(sid) as p`)."""
        return AsyncPusher(
            self.urls,
            sid,
            ack=ack,
            open_timeout=self.open_timeout,
            token=self.token,
            producer=producer,
        )

    def pull(self, sid: str, **options: Any) -> AsyncPuller:
        """A pull socket: options last_entry_id ("$", "0", an id), count, latest,
        block (ms), max_fps, ack, reconnect, resume. Iterate it for (sid, id, bytes)
        (and, with reconnect=True, `Gap` events)."""
        puller = AsyncPuller(
            self.urls, sid, open_timeout=self.open_timeout, token=self.token, **options
        )
        # kept to be closed with the client; those closed already are dropped
        self._pullers = [p for p in self._pullers if not p.closed]
        self._pullers.append(puller)
        return puller

    def pull_batches(self, sid: str, **options: Any) -> AsyncIterator[list[Entry] | Gap]:
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
