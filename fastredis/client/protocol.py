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

__all__ = [
    "CONNECT_OPTIONS",
    "DEFAULT_URL",
    "Entry",
    "Payload",
    "PullSocket",
    "PushSocket",
    "auth_headers",
    "base_url",
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


class PushSocket:
    """The push endpoint and options of AsyncPusher and Pusher."""

    _ws: Any

    def __init__(
        self,
        url: str,
        sid: str,
        *,
        ack: bool = False,
        open_timeout: float = 10,
        token: str | None = None,
    ):
        self.sid = sid
        self.ack = ack
        self.url = push_url(url, sid, ack=1 if ack else None)
        self._open_timeout = open_timeout
        self._headers = auth_headers(token)
        self._ws = None


class PullSocket:
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
        token: str | None = None,
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
        self._headers = auth_headers(token)
        self._ws = None
        self._owe_ack = False
        self.closed = False

    def _frame(self, header: list[Any], payload: bytes | str) -> list[Entry]:
        """The entries of a received frame; with ack, it is owed an ack from now on."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._owe_ack = self.ack
        return split_frame(header, payload)
