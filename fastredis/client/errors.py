"""The client's errors, and how websockets' failures become them."""

from __future__ import annotations

from typing import Any

__all__ = ["ClientError", "ServerClosed", "ServerUnreachable", "closed_error", "connect_error"]


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


def closed_error(url: str, exc: Any) -> ServerClosed | None:
    """ServerClosed for websockets' ConnectionClosed `exc` with an error code; None for a
    normal end (1000, 1001)."""
    frame = exc.rcvd
    if frame is not None and frame.code in (1000, 1001):
        return None
    if frame is None:
        return ServerClosed(url, 1006, "connection lost without a close frame")
    return ServerClosed(url, frame.code, frame.reason)


def connect_error(url: str, exc: BaseException) -> ClientError:
    """The ClientError for a failed websocket handshake or connection."""
    from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

    if isinstance(exc, InvalidMessage):  # the connection broke during the handshake
        return ServerUnreachable(url, exc)
    if isinstance(exc, InvalidStatus) and exc.response.status_code in (502, 503, 504):
        return ServerUnreachable(url, exc)  # a proxy without a server, or one draining
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
