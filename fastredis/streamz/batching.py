"""One background task per consumer job that sends, per stream, everything gathered since
its last round trip: the acks (XACK) and the dead-letter moves share it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from fastredis.redis_io import AnyAsyncRedis
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, log

Batch = dict[Any, list[Any]]  # stream -> items (ids, or (id, error) pairs)


class BatchSender:
    """Items gathered per stream (`pending`), sent by one background task: after a round
    trip, everything gathered meanwhile goes in the next. A transient failure keeps the
    items (sent after the reconnect); a refusal is handed to ``_refused``."""

    kind = "items"

    def __init__(self, client_getter: Callable[[], AnyAsyncRedis | None], what: str) -> None:
        self._client = client_getter
        self.what = what
        self.pending: Batch = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sending = 0  # items of the round trip under way

    def unsent(self) -> int:
        """Items gathered or on their way, not confirmed by Redis yet."""
        return count(self.pending) + self._sending

    def _add(self, stream: Any, item: Any) -> None:
        try:
            self.pending[stream].append(item)
        except KeyError:
            self.pending[stream] = [item]
        if self._task is None:
            self._kick()

    def _add_many(self, stream: Any, items: list[Any]) -> None:
        self.pending.setdefault(stream, []).extend(items)
        if self._task is None:
            self._kick()

    def _kick(self) -> None:
        try:
            self._task = asyncio.ensure_future(self._flush_loop())
        except RuntimeError:  # no running loop on this thread (released elsewhere)
            self._task = None

    async def _flush_loop(self) -> None:
        backoff = Backoff(f"{self.what} {self.kind}")
        try:
            while self.pending:
                client = self._client()
                if client is None:
                    return  # the source is closed; what remains is replayed on restart
                batch, self.pending = self.pending, {}
                self._sending = count(batch)
                try:
                    await self._send(client, batch)
                except TRANSIENT_ERRORS as exc:
                    self._put_back(batch)
                    if self._closing:
                        n = count(batch)
                        log.warning("%s: %d %s not sent (%s)", self.what, n, self.kind, exc)
                        return
                    await asyncio.sleep(backoff.next_delay(exc))
                    continue
                except redis.exceptions.ResponseError as exc:
                    self._refused(exc, batch)
                    continue
                finally:
                    self._sending = 0
                backoff.succeeded()
                self._sent()
        finally:
            self._task = None

    def _sent(self) -> None:
        """Called after each confirmed round trip."""

    def _put_back(self, batch: Batch) -> None:
        for stream, items in batch.items():
            newer = self.pending.get(stream)
            self.pending[stream] = items + newer if newer else items

    async def flush(self, timeout: float | None = None) -> None:
        """Send what is gathered and wait for it (used when stopping)."""

        async def run() -> None:
            while self.pending or self._task is not None:
                if self._client() is None:
                    return
                if self._task is None:
                    self._kick()
                task = self._task
                if task is None:
                    return
                await asyncio.shield(task)

        self._closing = True
        try:
            await asyncio.wait_for(run(), timeout)
        except (asyncio.TimeoutError, *TRANSIENT_ERRORS) as exc:
            n = count(self.pending)
            log.warning("%s: %d %s not sent at stop (%r)", self.what, n, self.kind, exc)
        finally:
            self._closing = False

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _send(self, client: AnyAsyncRedis, batch: Batch) -> None:
        raise NotImplementedError

    def _refused(self, exc: redis.exceptions.ResponseError, batch: Batch) -> None:
        log.error("%s: %d %s refused: %s", self.what, count(batch), self.kind, exc)


def count(batch: Batch) -> int:
    return sum(map(len, batch.values()))
