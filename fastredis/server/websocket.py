"""Websocket plumbing shared by push and pull: accepting, closing, sending safely."""

from __future__ import annotations

import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fastredis.server.protocol import CLOSE_POLICY, close_reason

__all__ = ["accept_checked", "close_with", "send_quietly"]


async def accept_checked(ws: WebSocket) -> bool:
    """Accept the handshake; when CORS origins are configured, close a socket from
    any other browser origin with 1008 (returns False then)."""
    await ws.accept()
    origins = ws.app.state.settings.cors_origins
    origin = ws.headers.get("origin")
    if origins and "*" not in origins and origin is not None and origin not in origins:
        await close_with(ws, CLOSE_POLICY, f"origin {origin} is not allowed")
        return False
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
