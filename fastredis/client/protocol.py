"""The server protocol as the client speaks it: endpoint URLs, push frames, pull-frame
splitting, and the options the asyncio and blocking sockets share.

Push: a JSON header of end offsets (`[len(data)]`, or `[end1, end2, ...]` for a list),
then one binary message. Pull: a header `[[sid, id, start], ...]`, then the payloads
back to back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from fastredis.client.errors import ClientError
from fastredis.client.reconnect import (
    Backoff,
    Gap,
    ProducerLog,
    PullCursor,
    retryable,
    unknown_resume,
)

__all__ = [
    "CONNECT_OPTIONS",
    "DEFAULT_URL",
    "Entry",
    "Payload",
    "PullSocket",
    "PushSocket",
    "auth_headers",
    "base_url",
    "base_urls",
    "pull_url",
    "push_frame",
    "push_url",
    "split_frame",
]

DEFAULT_URL = "ws://localhost:8000"
Payload = bytes | bytearray | memoryview | str
Entry = tuple[str, str, bytes]

# permessage-deflate never (payloads are mostly incompressible); no message size limit
CONNECT_OPTIONS: dict[str, Any] = {"compression": None, "max_size": None}


def base_url(url: str) -> str:
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
    return f"{base_url(url)}/data/{quote(sid, safe='+:@')}/push{_query(params)}"


def pull_url(url: str, sid: str, **params: Any) -> str:
    """The pull endpoint of `sid` ("a+b" reads both); None-valued params are left out."""
    return f"{base_url(url)}/data/{quote(sid, safe='+:@')}/pull{_query(params)}"


def push_frame(data: Payload | Sequence[Payload]) -> tuple[str, Payload]:
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


def auth_headers(token: str | None) -> dict[str, str] | None:
    """The handshake headers that carry `token` (never put in the URL, which errors
    and logs show)."""
    return {"Authorization": f"Bearer {token}"} if token else None


def base_urls(url: str | Sequence[str]) -> list[str]:
    """One server URL, or a list of them (a reconnecting socket goes round it)."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("no server URL given")
    return [base_url(u) for u in urls]


class _Servers:
    """The server list of a socket and the one in use."""

    def __init__(self, url: str | Sequence[str]) -> None:
        self._bases = base_urls(url)
        self._at = 0
        self.backoff = Backoff(len(self._bases))

    @property
    def base(self) -> str:
        return self._bases[self._at]

    def next_server(self) -> None:
        self._at = (self._at + 1) % len(self._bases)

    def _failed(self, exc: BaseException) -> float:
        """A retryable failure of the socket: go to the next server; the wait first."""
        delay = self.backoff.failed(exc)
        self.next_server()
        return delay


class PushSocket(_Servers):
    """The push endpoint and options of AsyncPusher and Pusher. With `producer`, every
    message is acked and the socket reconnects to resend what was not."""

    _ws: Any

    def __init__(
        self,
        url: str | Sequence[str],
        sid: str,
        *,
        ack: bool = False,
        open_timeout: float = 10,
        token: str | None = None,
        producer: str | None = None,
    ):
        super().__init__(url)
        self.sid = sid
        self.ack = ack or producer is not None
        self.producer = producer
        self.log = ProducerLog(producer) if producer is not None else None
        self._query = {"ack": 1 if ack and producer is None else None, "producer": producer}
        self._open_timeout = open_timeout
        self._headers = auth_headers(token)
        self._ws = None

    @property
    def url(self) -> str:
        return push_url(self.base, self.sid, **self._query)

    @property
    def committed(self) -> int | None:
        """With a producer: how many of its messages the server has committed (as of the
        last hello or ack); a producer that restarts skips that many."""
        return None if self.log is None else self.log.committed


class PullSocket(_Servers):
    """The pull endpoint, options, cursor and frame decoding of AsyncPuller and Puller."""

    _ws: Any

    def __init__(
        self,
        url: str | Sequence[str],
        sid: str,
        *,
        last_entry_id: str | None = None,
        count: int | None = None,
        latest: bool = False,
        block: int | None = None,
        max_fps: float | None = None,
        ack: bool = False,
        open_timeout: float = 10,
        token: str | None = None,
        reconnect: bool = False,
        resume: bool | None = None,
    ):
        super().__init__(url)
        self.sid = sid
        self.ack = ack
        self.reconnect = reconnect
        # resume=1 with reconnect unless told; dropped if the server does not know it
        self._resume = reconnect if resume is None else resume
        self._query: dict[str, Any] = {
            "count": count,
            "latest": 1 if latest else None,
            "block": block,
            "max_fps": max_fps,
            "ack": 1 if ack else None,
        }
        self._start = last_entry_id
        self.cursor = PullCursor(sid.split("+"), last_entry_id)
        self._open_timeout = open_timeout
        self._headers = auth_headers(token)
        self._ws = None
        self._owe_ack = False
        self._header: Any = None  # a frame's header whose payload was not read yet
        self._opened = 0  # sockets opened so far
        self._gaps: list[Gap] = []
        self.closed = False

    @property
    def url(self) -> str:
        """The URL of the next socket: after the last ids seen once one was opened."""
        start = self.cursor.param() if self._opened else self._start
        return pull_url(
            self.base,
            self.sid,
            last_entry_id=start,
            resume=1 if self._resume else None,
            **self._query,
        )

    def _opening(self) -> None:
        """A socket is being opened: a reconnect may have missed entries of streams
        opened at $ of which nothing was seen yet, not even where the server fixed $
        (resume=1's first frame)."""
        if self._opened and not self._query["latest"]:
            for sid in self.cursor.blind():
                self._gaps.append(
                    Gap(sid, None, None, "reconnected at $ before any entry was seen")
                )
        self._opened += 1
        self._owe_ack = False
        self._header = None

    def _retry_delay(self, exc: ClientError) -> float | None:
        """After a failed socket: seconds to wait before the next one, None to raise."""
        if not self.reconnect or self.closed:
            return None
        if unknown_resume(exc):  # a server from before resume=: ask again without it
            self._resume = False
            return 0.0
        if not retryable(exc):
            return None
        return self._failed(exc)

    def _object(self, text: str) -> Gap | None:
        """A JSON object frame (resume=1's first, a gap): the server answered."""
        self.backoff.answered()
        return self.cursor.frame(text)

    def _frame(self, header: list[Any], payload: bytes | str) -> list[Entry]:
        """The entries of a received frame; with ack, it is owed an ack from now on."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._owe_ack = self.ack
        entries = split_frame(header, payload)
        self.cursor.seen(entries)
        self.backoff.answered()
        return entries
