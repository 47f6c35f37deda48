"""Refuse a request whose path or query is not valid UTF-8, or whose path is too long.

Starlette and uvicorn decode the percent-escapes of a path lossily: ``/data/%FF/push``
and ``/data/%FE/push`` both became the stream U+FFFD. `RawPathGuard` checks the raw
bytes (``scope["raw_path"]``, ``scope["query_string"]``) before routing, for every
endpoint: HTTP gets a 400 (or 414) with a JSON ``{"error": ...}`` body, a websocket is
accepted and closed with 1007 (or 1009) and the same reason.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastredis.server.edge.protocol import CLOSE_INVALID_DATA, CLOSE_TOO_BIG, BadInput, close_reason

__all__ = ["MAX_PATH_BYTES", "RawPathGuard", "check_raw_path"]

# A path that fits websockets' 8 KiB request line ("GET <path> HTTP/1.1"), so a too
# long path gets the same answer on every face.
MAX_PATH_BYTES = 8000


def _utf8(raw: bytes, what: str) -> None:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = unquote_to_bytes(raw)[exc.start : exc.end]
        shown = "".join(f"%{b:02X}" for b in bad)
        raise BadInput(
            f"the {what} is not valid UTF-8 ({shown} at byte {exc.start})",
            CLOSE_INVALID_DATA,
            400,
        ) from None


def check_raw_path(scope: Scope) -> None:
    """Raise BadInput unless the request's raw path and query are valid UTF-8 and the
    path is at most MAX_PATH_BYTES."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    if len(raw_path) > MAX_PATH_BYTES:
        raise BadInput(
            f"path of {len(raw_path)} bytes is over the limit of {MAX_PATH_BYTES}",
            CLOSE_TOO_BIG,
            414,
        )
    _utf8(raw_path, "path")
    _utf8(scope.get("query_string", b""), "query string")


class RawPathGuard:
    """ASGI middleware: `check_raw_path` before the app sees the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                check_raw_path(scope)
            except BadInput as exc:
                await _refuse(scope, receive, send, exc)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: BadInput) -> None:
    if scope["type"] == "http":
        await JSONResponse({"error": exc.reason}, status_code=exc.status)(scope, receive, send)
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": exc.code, "reason": close_reason(exc.reason)})
