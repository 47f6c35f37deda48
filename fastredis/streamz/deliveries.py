"""Delivery counts from XPENDING, and the retries of entries whose processing raised.

Redis counts every delivery of a group's entry: XREADGROUP (also re-reading one's own
pending entries), XCLAIM and XAUTOCLAIM each add one. An entry read fresh is on its first
delivery; for any other, ``delivery_counts`` asks XPENDING.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastredis.ids import parse_id
from fastredis.redis_io import AnyAsyncRedis
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, as_str, log

__all__ = ["Retries", "delivery_counts"]

PENDING_CHUNK = 1000  # XPENDING rows asked for per round trip


async def delivery_counts(
    client: AnyAsyncRedis, stream: str, group: str, consumer: str, ids: list[str]
) -> dict[str, int]:
    """The delivery count of each of `ids` pending at `consumer` (ids not pending there any
    more are left out). One XPENDING per PENDING_CHUNK pending entries of the id range."""
    wanted = set(ids)
    first = min(ids, key=parse_id)
    last = max(ids, key=parse_id)
    out: dict[str, int] = {}
    while len(out) < len(wanted):
        rows = await client.xpending_range(
            stream, group, min=first, max=last, count=PENDING_CHUNK, consumername=consumer
        )
        for row in rows:
            entry_id = as_str(row["message_id"])
            if entry_id in wanted:
                out[entry_id] = int(row["times_delivered"])
        if len(rows) < PENDING_CHUNK:
            break
        first = "(" + as_str(rows[-1]["message_id"])
    return out


# redeliver(stream, [(id, error text), ...]): deliver these entries again.
Redeliver = Callable[[str, list[tuple[str, str]]], Awaitable[None]]


class Retries:
    """Entries whose processing raised, delivered again by their own consumer
    `retry_after` seconds later (through `redeliver`)."""

    def __init__(self, retry_after: float, redeliver: Redeliver, what: str) -> None:
        self.retry_after = retry_after
        self.redeliver = redeliver
        self.what = what
        self._queue: deque[tuple[float, str, str, str]] = deque()  # (due, stream, id, error)
        self.queued: set[tuple[str, str]] = set()  # (stream, id) waiting for their retry
        self._wake = asyncio.Event()

    def add(self, stream: Any, entry_id: Any, error: str) -> None:
        key = (as_str(stream), as_str(entry_id))
        if key in self.queued:
            return
        self.queued.add(key)
        due = asyncio.get_running_loop().time() + self.retry_after
        self._queue.append((due, *key, error))  # one delay for all: the queue stays sorted
        self._wake.set()

    def waiting(self, stream: Any, entry_id: Any) -> bool:
        return (as_str(stream), as_str(entry_id)) in self.queued

    def clear(self) -> None:
        """Forget the queue (at a restart, the pending list is replayed instead)."""
        self._queue.clear()
        self.queued.clear()

    async def run(self) -> None:
        """Retry entries as they come due, until cancelled."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(f"{self.what} retries")
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._queue[0][0] - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due = self._take_due(loop.time())
            for stream, items in due.items():
                try:
                    await self.redeliver(stream, items)
                except TRANSIENT_ERRORS as exc:
                    # Still pending at this consumer: replayed after the reconnect.
                    await asyncio.sleep(backoff.next_delay(exc))
                except Exception as exc:
                    log.error("%s: retry failed: %s", self.what, exc, exc_info=exc)
                else:
                    backoff.succeeded()

    def _take_due(self, now: float) -> dict[str, list[tuple[str, str]]]:
        due: dict[str, list[tuple[str, str]]] = {}
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, stream, entry_id, error = queue.popleft()
            self.queued.discard((stream, entry_id))
            due.setdefault(stream, []).append((entry_id, error))
        return due
