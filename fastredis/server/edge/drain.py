"""SIGTERM drains: the server stops accepting, then closes its sockets in an order its
clients ride through.

* Pushes are told first: what they sent in full is written and acked, then they are
  closed with 1012 ("server restarting; retry in N ms").
* Pulls are closed with 1012 and the same kind of reason, spread evenly over
  `Drain.seconds` (``--drain-seconds``), each with a retry hint drawn at random from that
  window: ten thousand viewers do not all reconnect in the same millisecond.
* Every other long-lived reader is closed the same way, in the same spread: SSE
  (the event stream ends after a ``retry:`` field with the hint, and ``EventSource``
  comes back with ``Last-Event-ID``), MJPEG (the multipart body ends), and the
  Foxglove and GraphQL websockets (1012 with the hint; `DrainedWebSocket` does it for
  any websocket ASGI app).
* What is left (HTTP requests under way) ends with uvicorn's own shutdown, which runs
  next.

Endpoints `register` a closer per socket (called once, with the close reason) and
unregister when the socket ends; `fastredis.server.run.process` runs `Drain.run` when
the process is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Callable
from typing import Any

from fastredis.server.run.options import option

__all__ = ["CLOSE_RESTART", "DEFAULT_DRAIN_SECONDS", "Drain", "DrainedWebSocket", "retry_ms"]

CLOSE_RESTART = 1012  # RFC 6455 (IANA): the service is restarted
DEFAULT_DRAIN_SECONDS: float = option("--drain-seconds").default
GRACE_SECONDS = 2.0  # after the window, sockets still open are left to uvicorn

Closer = Callable[[str], None]


def restart_reason(window: float) -> str:
    """A close reason with a retry hint drawn from `window` seconds."""
    return f"server restarting; retry in {int(random.uniform(0, window) * 1000)} ms"


class Drain:
    """The sockets to close when the server stops (see the module docstring)."""

    def __init__(self, seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        self.seconds = seconds
        self.started = False
        self._pulls: dict[int, Closer] = {}
        self._pushes: dict[int, Closer] = {}
        self._next = 0
        self._empty = asyncio.Event()

    def register(self, closer: Closer, *, push: bool = False) -> Callable[[], None]:
        """Add a socket's `closer`; returns the function that removes it. A socket
        opened while draining is closed at once."""
        if self.started:
            closer(restart_reason(self.seconds))
            return _nothing
        key, self._next = self._next, self._next + 1
        table = self._pushes if push else self._pulls
        table[key] = closer
        self._empty.clear()

        def unregister() -> None:
            table.pop(key, None)
            if not self._pulls and not self._pushes:
                self._empty.set()

        return unregister

    async def run(self) -> None:
        """Close the pushes (after their acks), then the pulls spread over `seconds`;
        return once all are gone, or `GRACE_SECONDS` after the window."""
        self.started = True
        loop = asyncio.get_running_loop()
        for closer in list(self._pushes.values()):
            closer(restart_reason(self.seconds))
        pulls = list(self._pulls.values())
        start = loop.time()
        for i, closer in enumerate(pulls):
            delay = start + self.seconds * i / len(pulls) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            closer(restart_reason(self.seconds))
        if self._pulls or self._pushes:
            remaining = start + self.seconds + GRACE_SECONDS - loop.time()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._empty.wait(), max(0.0, remaining))


def _nothing() -> None:
    pass


def retry_ms(reason: str) -> int:
    """The retry hint (ms) of a `restart_reason`."""
    match = re.search(r"retry in (\d+) ms", reason)
    return int(match[1]) if match else 1000


class DrainedWebSocket:
    """A websocket ASGI `app` the drain closes: 1012 with the retry hint (what the app
    sends after it is dropped; the client's answering close ends the app as a client
    leaving does). HTTP passes through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        drain = getattr(getattr(scope.get("app"), "state", None), "drain", None)
        if scope["type"] != "websocket" or drain is None:
            await self.app(scope, receive, send)
            return
        lock = asyncio.Lock()
        accepted = closed = False
        reason: str | None = None
        tasks: set[asyncio.Task[None]] = set()

        async def close() -> None:
            nonlocal closed
            async with lock:
                if accepted and not closed and reason is not None:
                    closed = True
                    with contextlib.suppress(Exception):  # the client went already
                        await send(
                            {"type": "websocket.close", "code": CLOSE_RESTART, "reason": reason}
                        )

        async def guarded_send(message: Any) -> None:
            nonlocal accepted, closed
            async with lock:
                if closed:
                    return
                await send(message)
                accepted = accepted or message["type"] == "websocket.accept"
                closed = message["type"] == "websocket.close"
            if reason is not None:  # drained before it was accepted
                await close()

        def closer(why: str) -> None:
            nonlocal reason
            reason = why
            task = asyncio.get_running_loop().create_task(close())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        unregister = drain.register(closer)
        try:
            await self.app(scope, receive, guarded_send)
        finally:
            unregister()
