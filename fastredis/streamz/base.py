"""What every fastredis source shares: its client, start/stop, reconnecting, key checks.

A source runs on the stream's event loop (tornado on asyncio; by default streamz's own IO
loop thread) with redis-py's asyncio client: a blocking read never blocks the loop, and
``stop()`` cancels it at once. ``start()``, called from another thread, returns once the
source listens (connection checked, key types checked, groups created) and raises if it
cannot. Subclasses give ``_setup()`` (once per start) and ``_main()`` (the reading loop).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
from streamz import Source

from fastredis.redis_io import AnyAsyncRedis, describe
from fastredis.streamz.checks import check_client_params
from fastredis.streamz.connection import (
    TRANSIENT_ERRORS,
    as_str,
    close_client,
    log,
    make_source_client,
)
from fastredis.streamz.loops import cancel_and_wait, on_loop_thread


class RedisSource(Source):
    """What the three sources share: client, start/stop, reconnect, emission."""

    _kind = "redis source"

    def __init__(
        self,
        client_params: Mapping[str, Any] | None = None,
        url: str | None = None,
        convert: bool = True,
        encoding: str | None = "utf-8",
        start_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        if convert and not encoding:
            raise ValueError("convert=True needs an encoding (or pass convert=False for bytes)")
        self.client_params = check_client_params(client_params)
        self.url = url
        self.convert = bool(convert)
        self.encoding = encoding if convert else None
        self.start_timeout = float(start_timeout)
        self.client: AnyAsyncRedis | None = None
        self.error: BaseException | None = None  # why the source stopped by itself, if it did
        self._wait_fut: asyncio.Future[Any] | None = None
        self._ahead: deque[asyncio.Future[Any]] = deque()  # reads sent ahead, oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._finished.set()
        self._start_error: BaseException | None = None
        self._start_waited = False
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading. From another thread than the loop's, return once the source
        listens, or raise why it cannot (server unreachable, wrong key type, ...)."""
        if not self.stopped:
            return
        if not self._finished.is_set() and not on_loop_thread(self.loop):
            self._finished.wait(self.start_timeout)
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._start_error = None
        self.error = None
        self._start_waited = not on_loop_thread(self.loop)
        super().start()
        if not self._start_waited:
            return
        if not self._ready.wait(self.start_timeout):
            self.stop()
            raise TimeoutError(f"{self._what}: not listening after {self.start_timeout}s")
        if self._start_error is not None:
            self._finished.wait(self.start_timeout)
            raise self._start_error

    def stop(self) -> None:
        """Stop reading: a blocked read is cancelled, acks gathered so far are sent, the
        connections are closed. From another thread, returns when all that is done."""
        self.stopped = True
        if self.loop is None:
            return
        if on_loop_thread(self.loop):
            self._interrupt()
            return
        self.loop.add_callback(self._interrupt)
        self._finished.wait(self.start_timeout)

    def _interrupt(self) -> None:
        if not self.stopped:  # started again meanwhile: its waits are not ours to cancel
            return
        fut = self._wait_fut
        if fut is not None and not fut.done():
            fut.cancel()
            # redis-py may swallow a cancellation that lands while it connects: insist.
            asyncio.get_running_loop().call_later(0.05, self._interrupt)

    async def run(self) -> None:
        ready, finished = self._ready, self._finished
        try:
            try:
                self.client = make_source_client(self.client_params, self.url)
                await self._setup()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._start_error = self._explain(exc)
                raise self._start_error from exc
            finally:
                ready.set()
            await self._main()
        except asyncio.CancelledError:
            if not self.stopped:
                log.warning("%s: cancelled", self._what)
        except Exception as exc:
            if self._start_error is None or not self._start_waited:
                log.error("%s stopped: %s", self._what, exc, exc_info=exc)
                self.error = exc
        finally:
            self.stopped = True
            try:
                await self._teardown()
            finally:
                finished.set()

    async def _teardown(self) -> None:
        tasks: list[asyncio.Future[Any]] = [*self._tasks, *self._ahead]
        self._ahead.clear()
        await cancel_and_wait(tasks)
        self._tasks.clear()
        await self._close_more()
        client, self.client = self.client, None
        await close_client(client)

    async def _close_more(self) -> None:
        """Subclasses: send what must be sent before the connections close."""

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, aw: Any) -> Any:
        """Await something stop() may cancel (a blocking read, a backoff sleep)."""
        fut = asyncio.ensure_future(aw)
        self._wait_fut = fut
        try:
            if self.stopped:
                fut.cancel()
            return await fut
        finally:
            self._wait_fut = None

    async def _pause(self, seconds: float) -> None:
        await self._wait(asyncio.sleep(seconds))

    # -- errors ---------------------------------------------------------------------------

    @property
    def _what(self) -> str:
        return f"{type(self).__name__}({self._names_for_log()})"

    def _names_for_log(self) -> str:
        return ""

    def _where(self) -> str:
        return describe(self.client) if self.client is not None else "?"

    def _explain(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TRANSIENT_ERRORS):
            return redis.exceptions.ConnectionError(
                f"{self._what}: cannot reach Redis at {self._where()}: {exc}"
            )
        return exc

    async def _check_types(self, keys: list[str], wanted: str) -> None:
        """Raise TypeError naming the first key that holds something else than `wanted`."""
        assert self.client is not None
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            types = await pipe.execute()
        for key, typ in zip(keys, types, strict=True):
            typ = as_str(typ)
            if typ not in ("none", wanted):
                raise TypeError(
                    f"{self._what}: key {key!r} holds a {typ}, not a {wanted} "
                    f"(Redis at {self._where()})"
                )

    async def _setup(self) -> None:
        raise NotImplementedError

    async def _main(self) -> None:
        raise NotImplementedError
