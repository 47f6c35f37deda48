"""Websocket plumbing shared by push and pull: accepting, closing, sending safely."""

from __future__ import annotations

import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fastredis.server.edge.auth import admit
from fastredis.server.edge.protocol import close_reason

__all__ = ["accept_checked", "close_with", "send_quietly"]


async def accept_checked(ws: WebSocket, mode: str) -> bool:
    """Accept the handshake unless the token may not `mode` ("read"/"write") the
    streams of the path: then it is refused with HTTP 403 (returns False). Tokens
    and browser origins were checked before (`fastredis.server.edge.auth`)."""
    if not await admit(ws, mode):
        return False
    await ws.accept()
    return True


async def close_with(ws: WebSocket, code: int, reason: str) -> None:
    """Close with `code` and `reason` unless the socket is closed already."""
    if ws.application_state != WebSocketState.CONNECTED:
        return
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.close(code, close_reason(reason))


async def send_quietly(ws: WebSocket, message: dict[str, object]) -> bool:
    """Send unless the client is gone; False when it is."""
    if ws.application_state != WebSocketState.CONNECTED:
        return False
    try:
        await ws.send(message)
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True
