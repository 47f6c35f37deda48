"""``latest`` / ``max_fps`` for one viewer on top of the hub's every-entry read.

The hub reads a stream once per group of subscribers, and a group is made per
(streams, count, latest, read-ahead): a ``latest=1`` pull reads the stream on its own.
`Newest` gives a viewer (SSE, Foxglove) the same behaviour while it rides the ordinary
group, the one websocket pulls use: a task takes every delivery as it is published and
keeps only the newest (a pointer: the batch is the group's, shared), and the viewer takes
that one whenever it is ready for the next, at most `max_fps` times a second. A slow
viewer skips deliveries, never queues them, and never falls behind the group; and one
XREAD per frame serves pulls, SSE and Foxglove viewers alike.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastredis.server.reads.hub import Delivery, Subscription
from fastredis.server.run import metrics

__all__ = ["Newest"]


class Newest:
    """`async with Newest(sub, ...) as newest:` then ``await newest.next()``: the newest
    delivery of `sub` (a hub subscription without latest) since the last call."""

    def __init__(self, sub: Subscription, max_fps: float | None, via: str) -> None:
        self.sub = sub
        self.via = via
        self._interval = 1.0 / max_fps if max_fps else 0.0
        self._reason = "max_fps" if max_fps else "latest"
        self._next_at = 0.0
        self._slot: Delivery | None = None
        self._ready = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Newest:
        await self.sub.__aenter__()
        self.start()
        return self

    def start(self) -> None:
        """Begin taking deliveries of `sub`, entered already (``__aexit__`` leaves it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._take())

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.sub.__aexit__(*exc)

    async def _take(self) -> None:
        try:
            while True:
                delivery = await self.sub.next()
                if delivery is None or not len(delivery.batch):
                    continue
                if self._slot is not None:  # the viewer had no time for it
                    metrics.dropped(self.via, self._reason, len(self._slot.batch))
                self._slot = delivery
                self._ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            self._ready.set()

    async def next(self) -> Delivery:
        """The newest delivery not taken yet (waiting for one, and for `max_fps`)."""
        loop = asyncio.get_running_loop()
        if self._interval:
            wait = self._next_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        while self._slot is None:
            if self._error is not None:
                raise self._error
            self._ready.clear()
            await self._ready.wait()
        delivery, self._slot = self._slot, None
        self._next_at = loop.time() + self._interval
        return delivery
