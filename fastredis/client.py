"""Client of the fastredis server's websocket protocol, asyncio and sync.

    from fastredis.client import AsyncClient, Client

    async with AsyncClient("ws://localhost:8000") as c:
        await c.push("glf", b"payload")               # one entry
        await c.push("glf", [b"a", b"b", b"c"])       # three entries, one message
        async for sid, entry_id, data in c.pull("glf", last_entry_id="0", count=100):
            ...

    with Client("ws://localhost:8000") as c:           # the same, blocking
        c.push("glf", b"payload")
        for sid, entry_id, data in c.pull("glf", latest=True):
            ...

Push: a JSON header of end offsets (`[len(data)]`, or `[end1, end2, ...]` for a list),
then one binary message (DESIGN.md, "Server face"). Pull: a header
`[[sid, id, start], ...]`, then the payloads back to back; `pull()` yields one
`(sid, id, bytes)` per entry, `pull_batches()` a list per frame. Push and pull
sockets are opened on first use and kept; `close()` closes them. permessage-deflate
is never negotiated (payloads are mostly incompressible) and messages have no size
limit. A server that cannot be reached raises `ServerUnreachable`, naming the URL;
a server that closes a socket with an error code raises `ServerClosed`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sconnect

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncPuller",
    "AsyncPusher",
    "Client",
    "ClientError",
    "Entry",
    "Puller",
    "Pusher",
    "ServerClosed",
    "ServerUnreachable",
    "pull_url",
    "push_url",
    "split_frame",
]

DEFAULT_URL = "ws://localhost:8000"
Payload = bytes | bytearray | memoryview | str
Entry = tuple[str, str, bytes]

_CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "max_size": None}


class ClientError(Exception):
    """Something went wrong talking to a fastredis server."""


class ServerUnreachable(ClientError, ConnectionError):
    """No server answered at the URL (refused, unknown host, timeout)."""

    def __init__(self, url: str, cause: BaseException):
        self.url = url
        detail = str(cause) or type(cause).__name__
        super().__init__(
            f"cannot reach the fastredis server at {url}: {detail} "
            "(is `fastredis serve` running there?)"
        )


class ServerClosed(ClientError):
    """The server closed the socket with an error code (bad input, server error)."""

    def __init__(self, url: str, code: int, reason: str):
        self.url, self.code, self.reason = url, code, reason
        super().__init__(f"the server closed {url} with code {code}: {reason or 'no reason'}")


# -- URLs and frames ---------------------------------------------------------------


def _base(url: str) -> str:
    """ws(s)://host:port[/prefix] from a ws, wss, http or https URL."""
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a websocket or http URL: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _query(params: dict[str, Any]) -> str:
    clean = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        clean[key] = value
    return f"?{urlencode(clean)}" if clean else ""


def push_url(url: str, sid: str, **params: Any) -> str:
    """The push endpoint of `sid` ("a+b" pushes to both) under the server `url`."""
    return f"{_base(url)}/data/{quote(sid, safe='+:@')}/push{_query(params)}"


def pull_url(url: str, sid: str, **params: Any) -> str:
    """The pull endpoint of `sid` ("a+b" reads both); None-valued params are left out."""
    return f"{_base(url)}/data/{quote(sid, safe='+:@')}/pull{_query(params)}"


def _push_frame(data: Payload | Sequence[Payload]) -> tuple[str, Payload]:
    """The header and binary message of one push: one entry, or one per list item."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return f"[{memoryview(data).nbytes}]", data
    parts = [p.encode("utf-8") if isinstance(p, str) else p for p in data]
    if not parts:
        raise ValueError("nothing to push: the list of payloads is empty")
    ends, end = [], 0
    for p in parts:
        end += memoryview(p).nbytes
        ends.append(end)
    return json.dumps(ends), b"".join(parts)


def split_frame(header: list[Any], payload: bytes) -> list[Entry]:
    """Pull header `[[sid, id, start], ...]` + payload -> [(sid, id, bytes), ...]."""
    if not header:
        return []
    starts = [h[2] for h in header]
    ends = [*starts[1:], len(payload)]
    return [(h[0], h[1], payload[a:b]) for h, a, b in zip(header, starts, ends, strict=True)]


def _closed(url: str, exc: ConnectionClosed) -> ServerClosed | None:
    """ServerClosed for an error close; None for a normal end (1000, 1001)."""
    frame = exc.rcvd
    if frame is not None and frame.code in (1000, 1001):
        return None
    if frame is None:
        return ServerClosed(url, 1006, "connection lost without a close frame")
    return ServerClosed(url, frame.code, frame.reason)


def _connect_error(url: str, exc: BaseException) -> ClientError:
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        return ClientError(
            f"{url} refused the websocket: HTTP {status}" + (f": {body[:200]}" if body else "")
        )
    if isinstance(exc, InvalidURI):
        return ClientError(f"invalid server URL {url!r}: {exc}")
    if isinstance(exc, InvalidHandshake):
        return ClientError(f"{url} is not a fastredis websocket endpoint: {exc}")
    return ServerUnreachable(url, exc)


# -- what the asyncio and sync sockets share -----------------------------------------


class _PushSocket:
    """The push endpoint and options of AsyncPusher and Pusher."""

    _ws: Any

    def __init__(self, url: str, sid: str, *, ack: bool = False, open_timeout: float = 10):
        self.sid = sid
        self.ack = ack
        self.url = push_url(url, sid, ack=1 if ack else None)
        self._open_timeout = open_timeout
        self._ws = None


class _PullSocket:
    """The pull endpoint, options and frame decoding of AsyncPuller and Puller."""

    _ws: Any

    def __init__(
        self,
        url: str,
        sid: str,
        *,
        last_entry_id: str | None = None,
        count: int | None = None,
        latest: bool = False,
        block: int | None = None,
        max_fps: float | None = None,
        ack: bool = False,
        open_timeout: float = 10,
    ):
        self.sid = sid
        self.ack = ack
        self.url = pull_url(
            url,
            sid,
            last_entry_id=last_entry_id,
            count=count,
            latest=1 if latest else None,
            block=block,
            max_fps=max_fps,
            ack=1 if ack else None,
        )
        self._open_timeout = open_timeout
        self._ws = None
        self._owe_ack = False
        self.closed = False

    def _frame(self, header: list[Any], payload: bytes | str) -> list[Entry]:
        """The entries of a received frame; with ack, it is owed an ack from now on."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._owe_ack = self.ack
        return split_frame(header, payload)


# -- asyncio -----------------------------------------------------------------------


async def _aopen(url: str, open_timeout: float | None) -> AsyncConnection:
    try:
        return await aconnect(url, open_timeout=open_timeout, **_CONNECT_OPTIONS)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise _connect_error(url, exc) from exc


class AsyncPusher(_PushSocket):
    """One push socket: `await pusher.push(data)`; an async context manager."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPusher:
        if self._ws is None:
            self._ws = await _aopen(self.url, self._open_timeout)
        return self

    async def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        ws = self._ws or (await self.connect())._ws
        assert ws is not None
        header, payload = _push_frame(data)
        try:
            await ws.send(header)
            await ws.send(payload)
            if self.ack:
                reply = await ws.recv()
                return json.loads(reply)
        except ConnectionClosed as exc:
            raise _closed(self.url, exc) or ServerClosed(self.url, 1000, "closed") from exc
        return None

    async def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            await ws.close()

    async def __aenter__(self) -> AsyncPusher:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncPuller(_PullSocket):
    """One pull socket. `async for sid, id, data in puller` (entries), or
    `await puller.recv_batch()` / `puller.batches()` (one list per frame).
    Connects on first use; with ack, acknowledges a frame when the next is asked for."""

    _ws: AsyncConnection | None

    async def connect(self) -> AsyncPuller:
        if self._ws is None:
            self._ws = await _aopen(self.url, self._open_timeout)
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
            error = _closed(self.url, exc)
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

    def __init__(self, url: str = DEFAULT_URL, *, open_timeout: float = 10):
        self.url = _base(url)
        self.open_timeout = open_timeout
        self._pushers: dict[tuple[str, bool], AsyncPusher] = {}
        self._pullers: list[AsyncPuller] = []

    async def push(
        self, sid: str, data: Payload | Sequence[Payload], *, ack: bool = False
    ) -> list[str] | None:
        """Write `data` (one entry) or a list (one entry each) to `sid`."""
        pusher = self._pushers.get((sid, ack))
        if pusher is None:
            pusher = AsyncPusher(self.url, sid, ack=ack, open_timeout=self.open_timeout)
            await pusher.connect()
            self._pushers[(sid, ack)] = pusher
        try:
            return await pusher.push(data)
        except ClientError:
            self._pushers.pop((sid, ack), None)
            raise

    def pusher(self, sid: str, *, ack: bool = False) -> AsyncPusher:
        """A push socket of its own (`async with client.pusher(sid) as p`)."""
        return AsyncPusher(self.url, sid, ack=ack, open_timeout=self.open_timeout)

    def pull(self, sid: str, **options: Any) -> AsyncPuller:
        """A pull socket: options last_entry_id ("$", "0", an id), count, latest,
        block (ms), max_fps, ack. Iterate it for (sid, id, bytes)."""
        puller = AsyncPuller(self.url, sid, open_timeout=self.open_timeout, **options)
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
        for sock in [*pushers, *pullers]:
            await sock.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- sync --------------------------------------------------------------------------


def _open(url: str, open_timeout: float | None) -> SyncConnection:
    try:
        return sconnect(url, open_timeout=open_timeout, legacy=True, **_CONNECT_OPTIONS)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise _connect_error(url, exc) from exc


class Pusher(_PushSocket):
    """Blocking push socket: `pusher.push(data)`; a context manager."""

    _ws: SyncConnection | None

    def connect(self) -> Pusher:
        if self._ws is None:
            self._ws = _open(self.url, self._open_timeout)
        return self

    def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        ws = self._ws or self.connect()._ws
        assert ws is not None
        header, payload = _push_frame(data)
        try:
            ws.send(header)
            ws.send(payload)
            if self.ack:
                return json.loads(ws.recv())
        except ConnectionClosed as exc:
            raise _closed(self.url, exc) or ServerClosed(self.url, 1000, "closed") from exc
        return None

    def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            ws.close()

    def __enter__(self) -> Pusher:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Puller(_PullSocket):
    """Blocking pull socket: iterate for (sid, id, bytes); `recv_batch()`/`batches()`
    for one list per frame."""

    _ws: SyncConnection | None

    def connect(self) -> Puller:
        if self._ws is None:
            self._ws = _open(self.url, self._open_timeout)
        return self

    def recv_batch(self, timeout: float | None = None) -> list[Entry] | None:
        """The next frame's entries; None when the server ended the pull normally,
        TimeoutError when `timeout` (s) passes first."""
        ws = self._ws or self.connect()._ws
        assert ws is not None
        try:
            if self._owe_ack:
                ws.send("ack")
                self._owe_ack = False
            header = json.loads(ws.recv(timeout))
            payload = ws.recv()
        except ConnectionClosed as exc:
            error = _closed(self.url, exc)
            if error is not None:
                raise error from exc
            return None
        return self._frame(header, payload)

    def batches(self) -> Iterator[list[Entry]]:
        while (batch := self.recv_batch()) is not None:
            yield batch

    def __iter__(self) -> Iterator[Entry]:
        for batch in self.batches():
            yield from batch

    def close(self) -> None:
        self.closed = True
        if self._ws is not None:
            ws, self._ws = self._ws, None
            ws.close()

    def __enter__(self) -> Puller:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """Blocking twin of AsyncClient."""

    def __init__(self, url: str = DEFAULT_URL, *, open_timeout: float = 10):
        self.url = _base(url)
        self.open_timeout = open_timeout
        self._pushers: dict[tuple[str, bool], Pusher] = {}
        self._pullers: list[Puller] = []

    def push(
        self, sid: str, data: Payload | Sequence[Payload], *, ack: bool = False
    ) -> list[str] | None:
        """Write `data` (one entry) or a list (one entry each) to `sid`."""
        pusher = self._pushers.get((sid, ack))
        if pusher is None:
            pusher = Pusher(self.url, sid, ack=ack, open_timeout=self.open_timeout).connect()
            self._pushers[(sid, ack)] = pusher
        try:
            return pusher.push(data)
        except ClientError:
            self._pushers.pop((sid, ack), None)
            raise

    def pusher(self, sid: str, *, ack: bool = False) -> Pusher:
        return Pusher(self.url, sid, ack=ack, open_timeout=self.open_timeout)

    def pull(self, sid: str, **options: Any) -> Puller:
        """A pull socket: options last_entry_id, count, latest, block, max_fps, ack."""
        puller = Puller(self.url, sid, open_timeout=self.open_timeout, **options)
        # kept to be closed with the client; those closed already are dropped
        self._pullers = [p for p in self._pullers if not p.closed]
        self._pullers.append(puller)
        return puller

    def pull_batches(self, sid: str, **options: Any) -> Iterator[list[Entry]]:
        return self.pull(sid, **options).batches()

    def close(self) -> None:
        pushers, self._pushers = list(self._pushers.values()), {}
        pullers, self._pullers = self._pullers, []
        for sock in [*pushers, *pullers]:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
