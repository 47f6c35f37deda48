"""The blocking client of the fastredis server's websocket protocol.

    with Client("ws://localhost:8000") as c:
        c.push("glf", b"payload")
        for sid, entry_id, data in c.pull("glf", latest=True):
            ...

The twin of `fastredis.client.async_client`, method for method.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sconnect

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

__all__ = ["Client", "Puller", "Pusher"]


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


class Pusher(PushSocket):
    """Blocking push socket: `pusher.push(data)`; a context manager."""

    _ws: SyncConnection | None

    def connect(self) -> Pusher:
        if self._ws is None:
            self._ws = _open(self.url, self._open_timeout, self._headers)
        return self

    def push(self, data: Payload | Sequence[Payload]) -> list[str] | None:
        """Write one entry (bytes) or several (a list), atomically; with ack, their ids."""
        ws = self._ws or self.connect()._ws
        assert ws is not None
        header, payload = push_frame(data)
        try:
            ws.send(header)
            ws.send(payload)
            if self.ack:
                return json.loads(ws.recv())
        except ConnectionClosed as exc:
            raise closed_error(self.url, exc) or ServerClosed(self.url, 1000, "closed") from exc
        return None

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
    for one list per frame."""

    _ws: SyncConnection | None

    def connect(self) -> Puller:
        if self._ws is None:
            self._ws = _open(self.url, self._open_timeout, self._headers)
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
            error = closed_error(self.url, exc)
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

    def __init__(
        self, url: str = DEFAULT_URL, *, open_timeout: float = 10, token: str | None = None
    ):
        self.url = base_url(url)
        self.open_timeout = open_timeout
        self.token = token  # sent as Authorization: Bearer on every socket
        self._pushers: dict[tuple[str, bool], Pusher] = {}
        self._pullers: list[Puller] = []

    def push(
        self, sid: str, data: Payload | Sequence[Payload], *, ack: bool = False
    ) -> list[str] | None:
        """Write `data` (one entry) or a list (one entry each) to `sid`."""
        pusher = self._pushers.get((sid, ack))
        if pusher is None:
            pusher = Pusher(
                self.url, sid, ack=ack, open_timeout=self.open_timeout, token=self.token
            ).connect()
            self._pushers[(sid, ack)] = pusher
        try:
            return pusher.push(data)
        except ClientError:
            self._pushers.pop((sid, ack), None)
            raise

    def pusher(self, sid: str, *, ack: bool = False) -> Pusher:
        return Pusher(self.url, sid, ack=ack, open_timeout=self.open_timeout, token=self.token)

    def pull(self, sid: str, **options: Any) -> Puller:
        """A pull socket: options last_entry_id, count, latest, block, max_fps, ack."""
        puller = Puller(self.url, sid, open_timeout=self.open_timeout, token=self.token, **options)
        # kept to be closed with the client; those closed already are dropped
        self._pullers = [p for p in self._pullers if not p.closed]
        self._pullers.append(puller)
        return puller

    def pull_batches(self, sid: str, **options: Any) -> Iterator[list[Entry]]:
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
