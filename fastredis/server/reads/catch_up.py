"""Catch-up reads shared by the subscribers that need the same one.

Subscribers behind the tail read by their own cursors (`fastredis.server.reads.hub`). Many
viewers of one camera that fell behind together are at the same few cursors: without
sharing, each of them reads the same entries from Redis and packs the same frames
again, which costs Redis and the server as much as the viewers it serves, and a
machine short of CPU then falls further behind (a cascade). `SharedReads` makes a read
for (subscription key, cursor) once:

* a read under way is awaited by the others that need it, instead of read again;
* a finished read is kept for `KEEP_S` seconds, within `KEEP_BYTES` in all (oldest
  dropped first), when other subscribers of the same key may need it.

A subscriber takes another's read only if that read was issued after the subscriber
began (`since`): a stream deleted and made anew can repeat an old cursor, and a read of
the old stream must not continue the cursor of a subscriber that began on the new one.
(One that began before keeps seeing the stream as it was when the read was issued, as
if it had read then.)
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["KEEP_BYTES", "KEEP_S", "SharedReads"]

KEEP_BYTES = 64 << 20  # kept reads, all keys together
KEEP_S = 15.0  # a kept read is used this long after it was made, at most

T = TypeVar("T")


class SharedReads(Generic[T]):
    """Reads made once per key while they are wanted (see the module docstring)."""

    def __init__(self, keep_bytes: int = KEEP_BYTES, keep_s: float = KEEP_S) -> None:
        self.keep_bytes = keep_bytes
        self.keep_s = keep_s
        # key -> (result, issued at, bytes); key -> (its result to come, issued at)
        self._kept: OrderedDict[Hashable, tuple[T, float, int]] = OrderedDict()
        self._kept_bytes = 0
        self._running: dict[Hashable, tuple[asyncio.Future[T | None], float]] = {}
        self.made = 0  # reads made (for tests and metrics)
        self.shared = 0  # reads taken from another subscriber's
        self._running_loop: asyncio.AbstractEventLoop | None = None

    def _loop(self) -> asyncio.AbstractEventLoop:
        # looked up once: get_running_loop() is a getpid() system call on Python 3.11
        if self._running_loop is None:
            self._running_loop = asyncio.get_running_loop()
        return self._running_loop

    async def read(
        self,
        key: Hashable,
        make: Callable[[], Awaitable[T]],
        size: Callable[[T], int],
        *,
        since: float | None,
        keep: bool,
        alone: bool = False,
    ) -> T:
        """The result of `make()` for `key`: one under way or kept that was issued at or
        after `since` (`time.monotonic()`; None: none), else made now; kept for others
        when `keep` and it has bytes (`size`). `alone`: no other subscriber could take
        this read (none of its key began before it is issued), so it is made at once,
        with nothing registered for others (`since` and `keep` are then ignored)."""
        if alone:
            made = await make()
            self.made += 1
            return made
        while since is not None:
            kept = self._take_kept(key, since)
            if kept is not None:
                self.shared += 1
                return kept
            running = self._running.get(key)
            if running is None or running[1] < since:
                break
            theirs = await asyncio.shield(running[0])
            if theirs is not None:
                self.shared += 1
                return theirs
            # the read it waited for was cut off (its subscriber left): try again
        if key in self._running:  # beside a read it may not take: its own
            return await make()
        done: asyncio.Future[T | None] = self._loop().create_future()
        issued = time.monotonic()
        self._running[key] = (done, issued)
        result: T | None = None
        try:
            result = await make()
            self.made += 1
            nbytes = size(result)
            if keep and nbytes:
                self._keep(key, result, issued, nbytes)
            return result
        finally:
            del self._running[key]
            done.set_result(result)  # None: failed or cancelled, the others read

    def _take_kept(self, key: Hashable, since: float) -> T | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if time.monotonic() - kept[1] > self.keep_s:
            self._drop(key)
            return None
        return kept[0] if kept[1] >= since else None

    def _keep(self, key: Hashable, result: T, issued: float, nbytes: int) -> None:
        if nbytes > self.keep_bytes:
            return
        if key in self._kept:
            self._drop(key)
        now = time.monotonic()
        kept = self._kept
        while kept and (
            self._kept_bytes + nbytes > self.keep_bytes
            or now - next(iter(kept.values()))[1] > self.keep_s
        ):
            self._drop(next(iter(kept)))
        kept[key] = (result, issued, nbytes)
        self._kept_bytes += nbytes

    def _drop(self, key: Hashable) -> None:
        _result, _at, nbytes = self._kept.pop(key)
        self._kept_bytes -= nbytes

    def clear(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0
