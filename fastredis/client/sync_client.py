"""The blocking client of the fastredis server's websocket protocol.

    with Client("ws://localhost:8000") as c:
        c.push("glf", b"payload")
        for sid, entry_id, data in c.pull("glf", latest=True):
            ...

The twin of `fastredis.client.async_client`, method for method.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sconnect

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

__all__ = ["Client", "Puller", "Pusher"]


def _closed(url: str, exc: ConnectionClosed) -> ServerClosed:
    return closed_error(url, exc) or ServerClosed(url, 1000, "closed")


def _open(
    url: str, open_timeout: float | None, headers: dict[str, str] | None = None
) -> SyncConnection:
    try:
        return sconnect(
            url,
            open_timeout=open_timeout,
            additional_headers=headers,
            legacy=True,
            **CONNECT_OPTIONS,
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise connect_error(url, exc) from exc
    except ConnectionClosed as exc:  # cut during the handshake
        raise ServerUnreachable(url, exc) from exc


class Pusher(PushSocket):
    """Blocking push socket: `pusher.push(data)`; a context manager. With a `producer`,
    a lost connection is reopened and the messages not acked resent (each written once)."""

    _ws: SyncConnection | None

    def connect(self) -> Pusher:
        if self._ws is None:
            ws = _open(self.url, self._open_timeout, self._headers)
            if self.log is not None:
                try:
                    self.log.hello(ws.recv())
                    self.backoff.answered()
                except ConnectionClosed as exc:
                    raise _closed(self.url, exc) from exc
            self._ws = ws
        return self

    def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        if self.log is not None:
            return self._produce(data)
        ws = self._ws or self.connect()._ws
        assert ws is not None
        header, payload = push_frame(data)
        try:
            ws.send(header)
            ws.send(payload)
            if self.ack:
                return json.loads(ws.recv())
        except ConnectionClosed as exc:
            raise _closed(self.url, exc) from exc
        return None

    def _produce(self, data: Payload | Sequence[Payload]) -> list[str]:
        log = self.log
        assert log is not None
        message = Pending(*push_frame(data))
        log.unacked.append(message)
        while message.ids is None:
            try:
                self._send_unacked()
            except ClientError as exc:
                self._drop()
                if not retryable(exc):
                    log.unacked.clear()  # refused: none of them can be written
                    raise
                time.sleep(self._failed(exc))
            except BaseException:
                # Interrupted mid-exchange: what this socket owes is unknown, so the next
                # push opens a new one, whose hello settles it (the message is kept).
                self._drop()
                raise
        return message.ids

    def _send_unacked(self) -> None:
        log = self.log
        assert log is not None
        fresh = self._ws is None
        self.connect()  # a new socket's hello settles what was committed
        ws = self._ws
        assert ws is not None
        try:
            todo = log.unacked if fresh else log.unacked[-1:]
            for message in todo:
                ws.send(message.header)
                ws.send(message.payload)
            for _ in range(len(todo)):
                log.acked(json.loads(ws.recv()))
        except ConnectionClosed as exc:
            raise _closed(self.url, exc) from exc
        self.backoff.answered()

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()

    def close(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            ws.close()

    def __enter__(self) -> Pusher:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Puller(PullSocket):
    """Blocking pull socket: iterate for (sid, id, bytes); `recv_batch()`/`batches()`
    for one list per frame. With `reconnect`, a lost socket is reopened after the last
    id seen, and a `Gap` is yielded where entries were lost."""

    _ws: SyncConnection | None

    def connect(self) -> Puller:
        if self._ws is None:
            url = self.url
            self._opening()
            self._ws = _open(url, self._open_timeout, self._headers)
        return self

    def recv_batch(self, timeout: float | None = None) -> list[Entry] | Gap | None:
        """The next frame's entries (or, reconnecting, a Gap); None when the server
        ended the pull normally, TimeoutError when `timeout` (s) passes first."""
        while True:
            try:
                return self._recv_once(timeout)
            except ClientError as exc:
                self._drop()
                delay = self._retry_delay(exc)
                if delay is None:
                    raise
                time.sleep(delay)

    def _recv_once(self, timeout: float | None) -> list[Entry] | Gap | None:
        ws = self._ws or self.connect()._ws
        assert ws is not None
        if self._gaps:
            return self._gaps.pop(0)
        try:
            if self._owe_ack:
                ws.send("ack")
                self._owe_ack = False
            text = ws.recv(timeout)
            while isinstance(text, str) and text[:1] == "{":
                gap = self._object(text)
                if gap is not None:
                    return gap
                text = ws.recv(timeout)
            header = json.loads(text)
            payload = ws.recv()
        except ConnectionClosed as exc:
            error = closed_error(self.url, exc)
            if error is None and self.reconnect and exc.rcvd is not None and exc.rcvd.code == 1001:
                error = ServerClosed(self.url, 1001, "going away")
            if error is not None:
                raise error from exc
            return None
        return self._frame(header, payload)

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.close()

    def batches(self) -> Iterator[list[Entry] | Gap]:
        while (batch := self.recv_batch()) is not None:
            yield batch

    def __iter__(self) -> Iterator[Entry | Gap]:
        for batch in self.batches():
            if isinstance(batch, Gap):
                yield batch
            else:
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
        self._pushers: dict[tuple[str, bool, str | None], Pusher] = {}
        self._pullers: list[Puller] = []

    def push(
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
                pusher.connect()
            self._pushers[key] = pusher
        try:
            return pusher.push(data)
        except ClientError:
            self._pushers.pop(key, None)
            raise

    def pusher(self, sid: str, *, ack: bool = False, producer: str | None = None) -> Pusher:
        return Pusher(
            self.urls,
            sid,
            ack=ack,
            open_timeout=self.open_timeout,
            token=self.token,
            producer=producer,
        )

    def pull(self, sid: str, **options: Any) -> Puller:
        """A pull socket: options last_entry_id, count, latest, block, max_fps, ack,
        reconnect, resume."""
        puller = Puller(self.urls, sid, open_timeout=self.open_timeout, token=self.token, **options)
        # kept to be closed with the client; those closed already are dropped
        self._pullers = [p for p in self._pullers if not p.closed]
        self._pullers.append(puller)
        return puller

    def pull_batches(self, sid: str, **options: Any) -> Iterator[list[Entry] | Gap]:
        return self.pull(sid, **options).batches()

    def close(self) -> None:
        pushers, self._pushers = list(self._pushers.values()), {}
        pullers, self._pullers = self._pullers, []
        socks: list[Pusher | Puller] = [*pushers, *pullers]
        for sock in socks:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
