"""streamz sinks writing to a Redis list (RPUSH/LPUSH) or stream (XADD), in pipelined batches.

Registered through the ``streamz.sinks`` entry point::

    source.map(json.dumps).sink_to_redis_list("out", client_params={"host": "..."})
    source.sink_to_redis_stream("out-stream", maxlen=100_000)

``update()`` only queues the item: one background task on the stream's loop writes
everything queued since its last write in one round trip (one RPUSH with many items, or
one pipeline of XADDs), so items that arrive faster than round trips are batched. An item
is written in order, once. Its streamz references (e.g. a consumer group's acknowledgement)
are held until Redis confirmed the write, so an entry read from a group is acknowledged
only once it is stored. When the queue holds ``high_water`` items, update() returns a
future the upstream waits for (backpressure). A lost connection is retried with backoff;
nothing queued is dropped. ``flush()`` waits until everything queued is written.

Nothing is lost when the script ends: at interpreter exit every sink still holding
items writes them first (waiting up to its ``exit_timeout``, 30 s by default); what
still could not be written is reported on stderr and in the log, never dropped quietly.

``sink_to_redis_stream(..., producer="ID")`` writes exactly once: each item is one
message of the producer ``ID`` (`fastredis.redis_io.producers`, the table and script
the server's ``producer=`` pushes use), numbered after the count already committed
(``sink.committed``, read before the first write). A write retried after a lost
connection first re-reads the count and skips what was committed, so a cut connection
neither doubles nor loses an item.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from streamz import Stream
from streamz.sinks import Sink

from fastredis.redis_io import AnyAsyncRedis
from fastredis.redis_io.lua import is_noscript, with_text
from fastredis.redis_io.producers import (
    DEFAULT_PRODUCER_TTL,
    check_producer_id,
    parse_state,
    produce_command,
    producer_keys,
)
from fastredis.streamz.base import RedisSource
from fastredis.streamz.checks import check_client_params, check_count, check_name
from fastredis.streamz.connection import (
    TRANSIENT_ERRORS,
    Backoff,
    close_client,
    log,
    make_source_client,
)
from fastredis.streamz.loops import on_loop_thread, running_loop

__all__ = ["DEFAULT_FIELD", "sink_to_redis_list", "sink_to_redis_stream"]

DEFAULT_FIELD = "d"  # the field a str/bytes/number item is stored under in a stream entry
MAX_BATCH = 10_000  # most items per write round trip
HIGH_WATER = 100_000  # queued items beyond which update() makes the upstream wait

_SCALARS = (str, bytes, memoryview, int, float)
EXIT_TIMEOUT = 30.0  # seconds a sink may take to write what it holds at interpreter exit

_LIVE: weakref.WeakSet[_RedisSink] = weakref.WeakSet()


def _flush_at_exit() -> None:
    """Write what every sink still holds before the interpreter (and the loop's daemon
    thread) goes; say loudly what could not be written."""
    for sink in list(_LIVE):
        sink._flush_at_exit()


atexit.register(_flush_at_exit)


def _settings_upstream(node: Stream) -> tuple[Mapping[str, Any] | None, str | None]:
    """The connection settings (client_params, url) of the nearest fastredis source
    upstream of `node`, or (None, None) when there is none: a sink given neither writes
    where its data came from."""
    seen: set[int] = set()
    todo = [node]
    while todo:
        n = todo.pop(0)
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, RedisSource):
            return n.client_params, n.url
        todo.extend(getattr(n, "upstreams", ()))
    return None, None


class _RedisSink(Sink):
    _what_kind = "redis"

    def __init__(
        self,
        upstream: Stream,
        key: str,
        client_params: Mapping[str, Any] | None = None,
        url: str | None = None,
        max_batch: int = MAX_BATCH,
        high_water: int = HIGH_WATER,
        exit_timeout: float = EXIT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        self.key = check_name(key, "key")
        self.exit_timeout = float(exit_timeout)
        if client_params is None and url is None:
            client_params, url = _settings_upstream(upstream)
        self.client_params = check_client_params(client_params)
        self.url = url
        self.max_batch = check_count(max_batch, "max_batch", allow_none=False)
        self.high_water = check_count(high_water, "high_water", allow_none=False)
        self.client: AnyAsyncRedis | None = None
        self.error: BaseException | None = None  # the last write Redis refused
        self.written = 0  # items Redis confirmed
        self._queue: list[Any] = []  # encoded items (command args)
        self._metas: list[tuple[int, list[dict[str, Any]]]] = []  # (item index, metadata)
        self._base = 0  # index of _queue[0] among all items ever queued
        self._task: asyncio.Task[None] | None = None
        self._drained: list[asyncio.Future[None]] = []
        kwargs["ensure_io_loop"] = True
        super().__init__(upstream, **kwargs)
        _LIVE.add(self)

    @property
    def _what(self) -> str:
        return f"{type(self).__name__}({self.key!r})"

    # -- streamz --------------------------------------------------------------------------

    def update(self, x: Any, who: Any = None, metadata: Any = None) -> Any:
        args = self._encode(x)  # raises on what cannot be stored, before anything is queued
        if metadata:
            self._retain_refs(metadata)  # now: the caller may release its own at return
        if not on_loop_thread(self.loop):
            # Called from outside the loop (another loop's thread, e.g. a Dask client's, or
            # update() called directly): hand it over.
            self.loop.add_callback(self._enqueue, args, metadata)
            return None
        return self._enqueue(args, metadata)

    def _enqueue(self, args: Any, metadata: Any) -> Any:
        if metadata:
            self._metas.append((self._base + len(self._queue), metadata))
        self._queue.append(args)
        if self._task is None:
            self._task = asyncio.ensure_future(self._writer())
        if len(self._queue) >= self.high_water:
            fut = asyncio.get_running_loop().create_future()
            self._drained.append(fut)
            return fut
        return None

    def destroy(self) -> None:
        super().destroy()
        if self.loop is not None:
            self.loop.add_callback(self._close)

    # -- writing --------------------------------------------------------------------------

    async def _writer(self) -> None:
        backoff = Backoff(self._what)
        try:
            while self._queue:
                n = min(len(self._queue), self.max_batch)
                items = self._queue[:n]
                try:
                    if self.client is None:
                        self.client = make_source_client(self.client_params, self.url)
                    await self._write(self.client, items)
                except TRANSIENT_ERRORS as exc:
                    await asyncio.sleep(backoff.next_delay(exc))
                    continue  # the items stay queued: written after reconnecting
                except Exception as exc:
                    # Redis refused (e.g. the key holds another type), or no client could
                    # be made. The items are dropped and their references kept: a consumer
                    # group does not acknowledge them.
                    self.error = exc
                    log.error("%s: %d items not written to %r: %s", self._what, n, self.key, exc)
                    self._done(n, release=False)
                    continue
                backoff.succeeded()
                self.written += n
                self._done(n, release=True)
        finally:
            self._task = None
            self._wake_drained()

    def _done(self, n: int, release: bool) -> None:
        del self._queue[:n]
        end = self._base + n
        self._base = end
        metas = self._metas
        k = 0
        while k < len(metas) and metas[k][0] < end:
            k += 1
        finished, self._metas = metas[:k], metas[k:]
        if release:
            for _, md in finished:
                self._release_refs(md)
        if len(self._queue) < self.high_water:
            self._wake_drained()

    def _wake_drained(self) -> None:
        drained, self._drained = self._drained, []
        for fut in drained:
            if not fut.done():
                fut.set_result(None)

    async def aflush(self) -> None:
        """Wait (on the loop) until everything queued so far is written."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until everything queued so far is written (from any thread but the loop's)."""
        if on_loop_thread(self.loop):
            raise RuntimeError("flush() would block the loop: await sink.aflush() instead")
        done = threading.Event()

        async def wait() -> None:
            try:
                await self.aflush()
            finally:
                done.set()

        self.loop.add_callback(wait)
        if not done.wait(timeout):
            raise TimeoutError(
                f"{self._what}: {len(self._queue)} items not written after {timeout}s"
            )

    def _flush_at_exit(self) -> None:
        loop = getattr(self.loop, "asyncio_loop", None)
        if loop is None or (not self._queue and self._task is None and not loop.is_running()):
            return
        try:
            if not loop.is_running() or loop.is_closed():
                raise TimeoutError("its event loop is not running")
            self.flush(self.exit_timeout)
        except (TimeoutError, RuntimeError) as exc:
            n = len(self._queue)
            if not n:
                return
            message = f"{self._what}: {n} items NOT written to Redis at exit ({exc})"
            log.error(message)
            print(f"fastredis: {message}", file=sys.stderr, flush=True)

    async def _close(self) -> None:
        await self.aflush()
        client, self.client = self.client, None
        await close_client(client)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then close the connection (the sink can still be used: a
        later item opens a new one)."""
        if running_loop() is not None and on_loop_thread(self.loop):
            raise RuntimeError("close() would block the loop: await sink.aclose() instead")
        done = threading.Event()

        async def run() -> None:
            try:
                await self._close()
            finally:
                done.set()

        self.loop.add_callback(run)
        done.wait(timeout)

    async def aclose(self) -> None:
        await self._close()

    def _encode(self, x: Any) -> Any:
        raise NotImplementedError

    async def _write(self, client: AnyAsyncRedis, items: list[Any]) -> None:
        raise NotImplementedError


class sink_to_redis_list(_RedisSink):
    """Push every item onto a Redis list: RPUSH (``right=True``, default) or LPUSH.

    Items must be str, bytes or numbers (e.g. ``.map(json.dumps)`` first for dicts).
    Many items queued while a write is under way go in one RPUSH/LPUSH, in order.
    """

    def __init__(
        self,
        upstream: Stream,
        key: str,
        right: bool = True,
        client_params: Mapping[str, Any] | None = None,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.right = bool(right)
        super().__init__(upstream, key, client_params=client_params, url=url, **kwargs)

    def _encode(self, x: Any) -> Any:
        if isinstance(x, _SCALARS) and not isinstance(x, bool):
            return x
        raise TypeError(
            f"{self._what}: items must be str, bytes or numbers, not {type(x).__name__} "
            f"(convert first, e.g. .map(json.dumps))"
        )

    async def _write(self, client: AnyAsyncRedis, items: list[Any]) -> None:
        await client.execute_command("RPUSH" if self.right else "LPUSH", self.key, *items)


class sink_to_redis_stream(_RedisSink):
    """Append every item to a Redis stream with XADD (id ``*``).

    A dict item gives the entry's fields; a Message (or any (stream, id, data) entry read
    from a stream, e.g. of a StreamBatch) gives its data;
    a str, bytes or number is stored in one field, ``field`` (default ``"d"``, as the
    fastredis server does). ``maxlen`` caps the stream (``MAXLEN ~ n`` with
    ``approximate=True``, the cheap default; exact otherwise). Many items queued while a
    write is under way go in one pipeline of XADDs, in order.
    """

    def __init__(
        self,
        upstream: Stream,
        key: str,
        maxlen: int | None = None,
        approximate: bool = True,
        client_params: Mapping[str, Any] | None = None,
        url: str | None = None,
        field: str = DEFAULT_FIELD,
        producer: str | None = None,
        producer_ttl: float = DEFAULT_PRODUCER_TTL,
        **kwargs: Any,
    ) -> None:
        self.producer = None if producer is None else check_producer_id(producer)
        self.producer_ttl = float(producer_ttl)
        if not self.producer_ttl > 0:
            raise ValueError(f"producer_ttl must be > 0 seconds, not {producer_ttl!r}")
        self.committed: int | None = None  # the producer's count before the first write
        self._seq0: int | None = None  # the number of the item queued first
        self._recount = False  # re-read the count before writing (after a failed write)
        if maxlen is not None and (
            isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0
        ):
            raise ValueError(f"maxlen must be None or an int >= 0, not {maxlen!r}")
        self.maxlen = maxlen
        self.approximate = bool(approximate)
        self.field = check_name(field, "field")
        super().__init__(upstream, key, client_params=client_params, url=url, **kwargs)
        trim = [] if maxlen is None else ["MAXLEN", "~" if approximate else "=", maxlen]
        self._head = ["XADD", self.key, *trim, "*"]
        self._producer_keys = (
            producer_keys([self.key], self.producer) if self.producer is not None else None
        )

    def _encode(self, x: Any) -> Any:
        if isinstance(x, tuple) and len(x) == 3 and isinstance(x[2], Mapping):
            x = x[2]  # a Message, or a (stream, id, data) entry of a StreamBatch
        if isinstance(x, Mapping):
            if not x:
                raise ValueError(f"{self._what}: an entry needs at least one field, got {{}}")
            flat: list[Any] = []
            for k, v in x.items():
                if (
                    not isinstance(k, (str, bytes))
                    or not isinstance(v, _SCALARS)
                    or isinstance(v, bool)
                ):
                    raise TypeError(
                        f"{self._what}: field names must be str/bytes and values str, bytes or "
                        f"numbers, not {k!r}: {type(v).__name__}"
                    )
                flat.append(k)
                flat.append(v)
            return flat
        if isinstance(x, _SCALARS) and not isinstance(x, bool):
            return [self.field, x]
        raise TypeError(
            f"{self._what}: items must be dicts, Messages, str, bytes or numbers, "
            f"not {type(x).__name__}"
        )

    async def _produce(self, client: AnyAsyncRedis, items: list[Any], text: bool = False) -> None:
        """Write `items` (the first queued) as the producer's next messages, once each
        (by the script's hash; on NOSCRIPT, counted again and sent with its `text`)."""
        keys = self._producer_keys
        assert keys is not None
        skip = 0
        if self._seq0 is None or self._recount:
            committed, _recent = parse_state(await client.get(keys[0]))
            if self._seq0 is None:
                self.committed = committed
                self._seq0 = committed + 1 - self._base
            self._recount = False
            # written by a write whose reply was lost
            skip = max(0, committed - (self._seq0 + self._base) + 1)
        first = self._seq0 + self._base + skip
        maxlen = 0 if self.maxlen is None else self.maxlen
        try:
            async with client.pipeline(transaction=False) as pipe:
                for k, fields in enumerate(items[skip:]):
                    command = produce_command(
                        keys,
                        [self.key],
                        first + k,
                        [(1, "*", fields)],
                        self.producer_ttl,
                        maxlen,
                        self.approximate,
                    )
                    pipe.execute_command(*(with_text(command) if text else command))
                results = await pipe.execute(raise_on_error=False) if len(items) > skip else []
        except BaseException:
            self._recount = True
            raise
        if not text and any(is_noscript(r) for r in results):
            self._recount = True  # those before it were written
            await self._produce(client, items, text=True)
            return
        for r in results:
            if isinstance(r, Exception):
                raise r

    async def _write(self, client: AnyAsyncRedis, items: list[Any]) -> None:
        if self._producer_keys is not None:
            await self._produce(client, items)
            return
        head = self._head
        if len(items) == 1:
            await client.execute_command(*head, *items[0])
            return
        async with client.pipeline(transaction=False) as pipe:
            for fields in items:
                pipe.execute_command(*head, *fields)
            results = await pipe.execute(raise_on_error=False)
        for r in results:
            if isinstance(r, Exception):
                raise r


for _node in (sink_to_redis_list, sink_to_redis_stream):
    if not hasattr(Stream, _node.__name__):
        Stream.register_api()(_node)
