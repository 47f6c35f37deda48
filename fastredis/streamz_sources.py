"""streamz sources for Redis lists, streams and consumer groups, on the fastredis reader.

Registered through the ``streamz.sources`` entry point, so after installing fastredis::

    from streamz import Stream
    source = Stream.from_redis_streams("my-stream", client_params={"host": "..."})

All three run on the stream's event loop (tornado on asyncio; by default streamz's own IO
loop thread) with redis-py's asyncio client: a blocking read never blocks the loop, and
``stop()`` cancels it at once. ``start()``, called from another thread, returns once the
source listens (connection checked, key types checked, ``$`` resolved, groups created) and
raises if it cannot. A lost connection is retried with backoff (logged on the
``fastredis.streamz`` logger) and reading resumes where it stopped: the last id per stream, or
the consumer's pending list. Stream reads go through the Cython reader
(``xread_batch``/``xreadgroup_batch``): one round trip per batch, never per entry.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
from streamz import Source, Stream

from fastredis.message import Message, messages_from
from fastredis.redis_io import (
    axautoclaim_batch,
    axclaim_batch,
    axread_batch,
    axreadgroup_batch,
    axrevrange_batch,
)
from fastredis.streamz_acks import Acker, AckRef, BatchAckRef
from fastredis.streamz_common import (
    TRANSIENT_ERRORS,
    Backoff,
    as_str,
    block_ms,
    blocking_command,
    cancel_and_wait,
    check_count,
    check_name,
    check_positive,
    check_start_id,
    describe,
    log,
    make_source_client,
    normalize_streams,
    on_loop_thread,
)

__all__ = [
    "Message",
    "from_redis_consumer_group",
    "from_redis_lists",
    "from_redis_streams",
    "heartbeat_channel",
]

YIELD_EVERY = 1024  # per-message emission lets the loop run (acks, heartbeats) this often
LIST_COUNT = 1000  # most list items popped per round trip (BLMPOP ... COUNT)
CLAIM_CHUNK = 1000  # pending entries looked at / claimed per XPENDING / XCLAIM round


def heartbeat_channel(group_name: str) -> str:
    """The pub/sub channel a consumer group's heartbeats go to."""
    return f"{group_name}:heartbeats"


def _check_batch(batch: Any) -> bool | str:
    if batch is False or batch is True or batch == "messages":
        return batch
    raise ValueError(f"batch must be False, True or 'messages', not {batch!r}")


def _messages(batch: Any, stream: Any = None) -> list[Message]:
    """The entries of a batch as Messages (`stream` for claim replies, which name none).

    The cyclic GC is paused meanwhile: tens of thousands of new dicts and tuples (which
    cannot form cycles) would otherwise set off collections that walk them all for nothing.
    No user code runs in between.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        if stream is None:
            return messages_from(batch.to_messages())
        return [Message(stream, entry_id, data) for _, entry_id, data in batch.to_messages()]
    finally:
        if paused:
            gc.enable()


def _ids_by_stream(batch: Any, stream: Any = None) -> dict[Any, list[Any]]:
    """The entry ids of a batch per stream (for acknowledging a whole batch)."""
    ids = batch.ids()
    if stream is not None:
        return {stream: ids}
    names = batch.streams
    if len(names) == 1:
        return {names[0]: ids}
    out: dict[Any, list[Any]] = {}
    for k, entry_id in zip(batch.offsets()["entry_stream"].tolist(), ids, strict=True):
        out.setdefault(names[k], []).append(entry_id)
    return out


class _RedisSource(Source):
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
        if client_params is not None and not isinstance(client_params, Mapping):
            raise TypeError(
                f"client_params must be a dict of redis-py arguments, not {client_params!r}"
            )
        if convert and not encoding:
            raise ValueError("convert=True needs an encoding (or pass convert=False for bytes)")
        self.client_params = dict(client_params or {})
        self.url = url
        self.convert = bool(convert)
        self.encoding = encoding if convert else None
        self.start_timeout = float(start_timeout)
        self.client: redis.asyncio.Redis | None = None
        self.error: BaseException | None = None  # why the source stopped by itself, if it did
        self._wait_fut: asyncio.Future[Any] | None = None
        self._prefetch: asyncio.Future[Any] | None = None
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
        tasks = list(self._tasks)
        if self._prefetch is not None:
            tasks.append(self._prefetch)  # type: ignore[arg-type]
            self._prefetch = None
        await cancel_and_wait(tasks)
        self._tasks.clear()
        await self._close_more()
        client, self.client = self.client, None
        if client is not None:
            await client.aclose(close_connection_pool=True)

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

    # -- emission -------------------------------------------------------------------------

    async def _emit_each(self, items: list[Any]) -> None:
        """Emit items one by one, as ``self._emit`` would, but cheaper: the downstream nodes
        are looked up once per YIELD_EVERY items (at each yield to the loop) instead of per
        item. A node connected from inside a downstream callback gets items from the next
        yield on."""
        gather = asyncio.gather
        n = len(items)
        i = 0
        self.current_metadata = None
        while i < n:
            downstreams = list(self.downstreams)
            end = min(n, i + YIELD_EVERY)
            if len(downstreams) != 1:
                emit = self._emit
                for x in items[i:end]:
                    try:
                        r = emit(x)
                        if r:
                            await gather(*r)
                    except Exception as exc:
                        self._downstream_failed(x, exc)
            else:
                update = downstreams[0].update
                for x in items[i:end]:
                    self.current_value = x
                    try:
                        r = update(x, who=self, metadata=[])
                        if r:
                            await (gather(*r) if type(r) is list else gather(r))
                    except Exception as exc:
                        self._downstream_failed(x, exc)
            i = end
            if i < n:
                await asyncio.sleep(0)

    async def _emit_one(self, x: Any, metadata: list[dict[str, Any]] | None = None) -> bool:
        """Emit one item (an entry, a batch); False when downstream raised."""
        try:
            r = self._emit(x, metadata=metadata)
            if r:
                await asyncio.gather(*r)
        except Exception as exc:
            self._downstream_failed(x, exc)
            return False
        return True

    def _downstream_failed(self, x: Any, exc: Exception) -> None:
        """A node downstream raised: log it and go on with the next item (a source that
        died on one bad entry would stop the whole pipeline)."""
        what = f"entry {x[1]!r} of {x[0]!r}" if type(x) is Message else f"a {type(x).__name__}"
        log.error("%s: downstream raised on %s: %r", self._what, what, exc)

    async def _setup(self) -> None:
        raise NotImplementedError

    async def _main(self) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------


class from_redis_lists(_RedisSource):
    """Pop items from one or several Redis lists (a simple queue) and emit them.

    Parameters
    ----------
    keys: str or list of str
        The list(s) to pop from; with several, the first non-empty one in this order.
    client_params: dict, optional
        Passed to redis-py unchanged (host, port, db, password, ssl, ...).
    url: str, optional
        A redis:// (rediss://, unix://) URL instead of / on top of client_params.
    timeout: float
        Seconds one blocking pop waits before trying again (0, or < 0.001: forever).
    left: bool
        Pop from the head (BLPOP side, default) or the tail (``left=False``, BRPOP side).
        Pushing with RPUSH and popping left is FIFO; popping the side you push to is LIFO.
    count: int
        Most items taken per round trip when the list has many (BLMPOP ... COUNT; servers
        before Redis 7 use BLPOP/BRPOP, one item each). Popped items are removed from
        Redis: a crash loses at most the items popped and not yet emitted.
    convert, encoding:
        Decode items to str (default UTF-8); ``convert=False`` emits bytes.
    """

    _kind = "list"

    def __init__(
        self,
        keys: str | list[str],
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        left: bool = True,
        convert: bool = True,
        encoding: str | None = "utf-8",
        count: int = LIST_COUNT,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(keys, (str, bytes)):
            keys = [keys]
        if not isinstance(keys, (list, tuple)) or not keys:
            raise TypeError(f"keys must be a list name or a non-empty list of names, not {keys!r}")
        self.keys = [check_name(k, "a list name") for k in keys]
        self.timeout = timeout
        self._block_s = block_ms(timeout) / 1000
        self.left = bool(left)
        self.count = check_count(count)
        self._mpop = True
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )

    def _names_for_log(self) -> str:
        return ", ".join(map(repr, self.keys))

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        await self._check_types(self.keys, "list")

    def _timeout_arg(self) -> str:
        return repr(self._block_s) if self._block_s else "0"

    async def _pop(self) -> list[Any]:
        assert self.client is not None
        side = "LEFT" if self.left else "RIGHT"
        if self._mpop:
            args = [
                "BLMPOP",
                self._timeout_arg(),
                len(self.keys),
                *self.keys,
                side,
                "COUNT",
                self.count,
            ]
            try:
                reply = await blocking_command(self.client, args, self._block_s)
            except redis.exceptions.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._mpop = False  # before Redis 7
            else:
                return [] if reply is None else list(reply[1])
        cmd = "BLPOP" if self.left else "BRPOP"
        reply = await blocking_command(
            self.client, [cmd, *self.keys, self._timeout_arg()], self._block_s
        )
        return [] if reply is None else [reply[1]]

    async def _main(self) -> None:
        backoff = Backoff(self._what)
        encoding = self.encoding
        while not self.stopped:
            try:
                items = await self._wait(self._pop())
            except TRANSIENT_ERRORS as exc:
                await self._pause(backoff.next_delay(exc))
                continue
            except redis.exceptions.ResponseError as exc:
                if "WRONGTYPE" in str(exc):
                    await self._check_types(self.keys, "list")
                raise
            backoff.succeeded()
            if not items:
                continue
            if encoding is not None:
                items = [x.decode(encoding) if isinstance(x, bytes) else x for x in items]
            await self._emit_each(items)


# ---------------------------------------------------------------------------------------
# Streams (XREAD)
# ---------------------------------------------------------------------------------------


class _StreamSource(_RedisSource):
    def _init_streams(
        self, streams: dict[str, str], count: int | None, timeout: float | None, batch: Any
    ) -> None:
        self.streams = streams
        self.count = check_count(count)
        self.timeout = timeout
        self._block = block_ms(timeout)
        self.batch = _check_batch(batch)
        # A batch names streams as str or (convert=False) bytes: map both to ours.
        self._name_of: dict[Any, str] = {}
        for name in streams:
            self._name_of[name] = name
            self._name_of[name.encode()] = name

    def _names_for_log(self) -> str:
        return ", ".join(map(repr, self.streams))

    def _where_ids(self, batch: Any) -> dict[str, Any]:
        name_of = self._name_of
        return {name_of.get(k, k): v for k, v in batch.last_ids().items()}

    async def _main(self) -> None:
        backoff = Backoff(self._what)
        nxt: asyncio.Future[Any] | None = None
        try:
            while not self.stopped:
                await self._before_read()
                try:
                    batch = await self._wait(nxt if nxt is not None else self._read())
                except TRANSIENT_ERRORS as exc:
                    nxt = self._prefetch = None
                    self._lost_connection()
                    await self._pause(backoff.next_delay(exc))
                    continue
                except redis.exceptions.ResponseError as exc:
                    nxt = self._prefetch = None
                    await self._response_error(exc)
                    continue
                nxt = self._prefetch = None
                backoff.succeeded()
                if not len(batch):
                    continue
                self._advance(batch)
                if not self.stopped:
                    # Send the next read now: Redis prepares it while we emit this one.
                    nxt = self._prefetch = asyncio.ensure_future(self._read())
                    await asyncio.sleep(0)
                await self._deliver(batch)
        finally:
            if nxt is not None:
                self._prefetch = None
                await self._drop_prefetch(nxt)

    async def _drop_prefetch(self, fut: asyncio.Future[Any]) -> None:
        await cancel_and_wait([fut])

    async def _before_read(self) -> None:
        pass

    def _lost_connection(self) -> None:
        pass

    def _advance(self, batch: Any) -> None:
        pass

    async def _response_error(self, exc: redis.exceptions.ResponseError) -> None:
        if "WRONGTYPE" in str(exc):
            await self._check_types(list(self.streams), "stream")
        raise exc

    async def _read(self) -> Any:
        raise NotImplementedError

    async def _deliver(self, batch: Any) -> None:
        raise NotImplementedError


class from_redis_streams(_StreamSource):
    """Read Redis streams with XREAD and emit ``Message(stream, id, data)`` per entry.

    Parameters
    ----------
    streams: str, list of str, or dict of name -> start id
        The stream(s) to read. A dict gives each stream's start id; otherwise
        ``default_start_id`` applies.
    client_params: dict, optional
        Passed to redis-py unchanged.
    url: str, optional
        A redis:// URL instead of / on top of client_params.
    timeout: float
        Seconds one XREAD blocks (BLOCK, in ms) before trying again; 0 or < 0.001: forever.
    count: int, optional
        Most entries per read (XREAD COUNT); None reads all there are.
    default_start_id: str
        ``"$"`` (default): only entries added after start() returns; ``"0"``: from the start;
        or any entry id: after that id.
    convert, encoding:
        Decode names, ids, keys and values to str (default UTF-8); ``convert=False``: bytes.
    batch: False, True or "messages"
        False (default): emit one Message per entry. True: emit each read's StreamBatch
        itself, a sequence of ``(stream, id, data)`` tuples made only when accessed (also
        ``len()``, ``field(key)`` for one column, ``to_messages()``): the fast path.
        "messages": emit each read as a list of Messages.

    Entry ids are tracked per stream as numbers (the reader's ``last_ids()``), so '5-10'
    follows '5-9'; after a lost connection reading resumes after the last id emitted.
    """

    _kind = "stream"

    def __init__(
        self,
        streams: str | list[str] | Mapping[str, str],
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        count: int | None = None,
        default_start_id: str = "$",
        convert: bool = True,
        encoding: str | None = "utf-8",
        batch: bool | str = False,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_start_id(default_start_id, "(default_start_id)")
        self.default_start_id = default_start_id
        self._init_streams(normalize_streams(streams, default_start_id), count, timeout, batch)
        self._ids: dict[str, Any] = {}
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )

    @property
    def last_ids(self) -> dict[str, Any]:
        """Per stream, the id reading resumes after (the last entry read)."""
        return dict(self._ids)

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        names = list(self.streams)
        await self._check_types(names, "stream")
        ids: dict[str, Any] = {}
        for name, start in self.streams.items():
            if start == "$":
                # Resolve "$" now: entries added from here on are read, and a reconnect
                # resumes from a real id instead of skipping what came meanwhile.
                last = await axrevrange_batch(self.client, name, count=1, encoding="utf-8")
                start = last.ids()[0] if len(last) else "0-0"
            ids[name] = self._ids.get(name, start) if self._ids else start
        self._ids = ids

    async def _read(self) -> Any:
        assert self.client is not None
        return await axread_batch(self.client, self._ids, self.count, self._block, self.encoding)

    def _advance(self, batch: Any) -> None:
        self._ids.update(self._where_ids(batch))

    async def _deliver(self, batch: Any) -> None:
        if self.batch is True:
            await self._emit_one(batch)
        elif self.batch:
            await self._emit_one(_messages(batch))
        else:
            await self._emit_each(_messages(batch))


# ---------------------------------------------------------------------------------------
# Consumer groups (XREADGROUP)
# ---------------------------------------------------------------------------------------


class from_redis_consumer_group(_StreamSource):
    """Read streams as one consumer of a consumer group; acknowledge entries when done.

    Parameters
    ----------
    streams: str, list of str, or dict of name -> id
        The stream(s). With a dict, the id is where the group starts when this source has
        to create it (see ``group_start_id``).
    group_name, consumer_name: str
        Consumers of one group share the entries: each goes to one consumer.
    client_params, url:
        As for from_redis_streams.
    timeout: float
        Seconds one XREADGROUP blocks before trying again; 0 or < 0.001: forever.
    count: int, optional
        Most entries per read; None reads all there are.
    replay_pending: bool
        At start, first emit this consumer's own pending entries (delivered before, never
        acknowledged: e.g. it crashed), then new ones.
    heartbeat_interval: float, optional
        Publish the consumer name on the pub/sub channel ``"<group_name>:heartbeats"`` every
        this many seconds, and watch the others' heartbeats.
    claim_timeout: float
        With heartbeats on: a consumer with pending entries that has been silent this long
        (seconds) is taken for dead; its pending entries idle that long are claimed (XCLAIM)
        and emitted here.
    autoclaim_idle: float, optional
        Seconds; every half that, XAUTOCLAIM entries of any consumer pending longer than
        this (for groups without heartbeats). Choose it longer than an entry can take to
        get through the pipeline, or live consumers' work is taken over (duplicates).
    group_start_id: str
        Where a group created here starts: "0" (default: entries already in the stream
        are read too) or "$" (only new entries).
    convert, encoding, batch:
        As for from_redis_streams. A batch is acknowledged as a whole when everything
        downstream is done with it. With ``batch=True``, entries claimed from other
        consumers or replayed after a reconnect come as a list of Messages (a sequence
        of the same (stream, id, data) tuples) rather than a StreamBatch.

    Acknowledgement: every emitted entry carries a streamz reference count
    (``metadata=[{"ref": ...}]``); when nothing downstream holds it any more (partition
    flushed, sink written, ...) its id joins the next XACK, sent in the background as one
    XACK per stream for all ids gathered meanwhile. A crash before that means redelivery
    (replay at restart, or a claim by another consumer), never loss.
    """

    _kind = "consumer group"

    def __init__(
        self,
        streams: str | list[str] | Mapping[str, str],
        group_name: str,
        consumer_name: str,
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        count: int | None = None,
        replay_pending: bool = True,
        heartbeat_interval: float | None = None,
        claim_timeout: float = 10,
        convert: bool = True,
        encoding: str | None = "utf-8",
        batch: bool | str = False,
        autoclaim_idle: float | None = None,
        group_start_id: str = "0",
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_start_id(group_start_id, "(group_start_id)")
        self.group_start_id = group_start_id
        self._init_streams(normalize_streams(streams, group_start_id), count, timeout, batch)
        self.group_name = check_name(group_name, "group_name")
        self.consumer_name = check_name(consumer_name, "consumer_name")
        self.replay_pending = bool(replay_pending)
        self.heartbeat_interval = check_positive(heartbeat_interval, "heartbeat_interval")
        self.claim_timeout = check_positive(claim_timeout, "claim_timeout", allow_none=False)
        if self.heartbeat_interval is not None and self.claim_timeout <= self.heartbeat_interval:  # type: ignore[operator]
            raise ValueError(
                f"claim_timeout ({claim_timeout}) must be longer than heartbeat_interval "
                f"({heartbeat_interval}), or live consumers are taken for dead"
            )
        self.autoclaim_idle = check_positive(autoclaim_idle, "autoclaim_idle")
        self.channel = heartbeat_channel(self.group_name)
        self.acker: Acker | None = None
        self._resync = False
        self._seen: dict[str, float] = {}  # consumer -> loop time of its last heartbeat
        self._listening_since: float | None = None
        self.claimed = 0  # entries taken over from other consumers
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )

    def _names_for_log(self) -> str:
        names = ", ".join(map(repr, self.streams))
        return f"{names}; group {self.group_name!r}, consumer {self.consumer_name!r}"

    # -- setup ------------------------------------------------------------------------------

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        await self._check_types(list(self.streams), "stream")
        await self._create_groups()
        self.acker = Acker(lambda: self.client, self.group_name, self._what)
        self._resync = self.replay_pending
        self._seen.clear()
        self._listening_since = None
        if self.heartbeat_interval is not None:
            self._spawn(self._listen_heartbeats())
            self._spawn(self._heartbeats())
            self._spawn(self._watch_silent())
        if self.autoclaim_idle is not None:
            self._spawn(self._autoclaim())

    async def _create_groups(self) -> None:
        assert self.client is not None
        for name, start in self.streams.items():
            try:
                await self.client.execute_command(
                    "XGROUP", "CREATE", name, self.group_name, start, "MKSTREAM"
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                log.info("%s: created group at %s on stream %r", self._what, start, name)

    async def _close_more(self) -> None:
        if self.acker is not None:
            await self.acker.flush(timeout=5.0)
            self.acker.cancel()

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> Any:
        assert self.client is not None
        streams = dict.fromkeys(self.streams, ">")
        return await axreadgroup_batch(
            self.client, self.group_name, self.consumer_name, streams, self.count, self._block,
            encoding=self.encoding,
        )  # fmt: skip

    def _lost_connection(self) -> None:
        # A reply lost on the way was delivered all the same: replay the pending list.
        self._resync = True

    async def _response_error(self, exc: redis.exceptions.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            log.warning("%s: group missing (%s); creating it again", self._what, exc)
            await self._create_groups()
            self._resync = True
            return
        await super()._response_error(exc)

    async def _before_read(self) -> None:
        if not self._resync:
            return
        backoff = Backoff(f"{self._what} replay")
        while not self.stopped:
            try:
                await self._replay_own_pending()
            except TRANSIENT_ERRORS as exc:
                await self._pause(backoff.next_delay(exc))
                continue
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._create_groups()
                continue
            backoff.succeeded()
            self._resync = False
            return

    async def _replay_own_pending(self) -> None:
        """Emit this consumer's pending entries (XREADGROUP from id 0 until empty), except
        those still in flight here."""
        assert self.client is not None
        positions: dict[str, Any] = dict.fromkeys(self.streams, "0-0")
        replayed = 0
        while positions and not self.stopped:
            batch = await self._wait(
                axreadgroup_batch(
                    self.client, self.group_name, self.consumer_name, positions, self.count,
                    encoding=self.encoding,
                )
            )  # fmt: skip
            got = self._where_ids(batch)
            for name in list(positions):
                if name in got:
                    positions[name] = got[name]
                else:
                    del positions[name]
            if len(batch):
                replayed += await self._deliver(batch, skip_inflight=True)
        if replayed:
            log.info("%s: replayed %d pending entries", self._what, replayed)

    # -- emission with acknowledgement -------------------------------------------------------

    async def _deliver(self, batch: Any, skip_inflight: bool = False, stream: Any = None) -> int:
        """Emit a batch, each entry (or the batch) with its reference count; return how many
        entries were emitted. `stream`: the stream of a claim batch (XCLAIM / XAUTOCLAIM
        replies carry no stream name). `skip_inflight`: leave out entries emitted before and
        not finished yet (replays after a reconnect, our own entries autoclaimed)."""
        acker = self.acker
        assert acker is not None
        if stream is not None and self.encoding is None:
            stream = stream.encode()
        if self.batch is True and stream is None and not skip_inflight:
            # The StreamBatch itself, acknowledged as a whole.
            ids = _ids_by_stream(batch)
            ref = BatchAckRef(acker, ids)
            if await self._emit_one(batch, [{"ref": ref}]):
                ref.release()
            else:
                acker.not_done_many(ids)
            return len(batch)
        msgs = _messages(batch, stream)
        if skip_inflight:
            keep = []
            for m in msgs:
                if m[2] is None:
                    acker.done(m[0], m[1])  # deleted from the stream: nothing to process
                elif not acker.is_inflight(m[0], m[1]):
                    keep.append(m)
            msgs = keep
        if not msgs:
            return 0
        if self.batch:
            # A list of Messages (also in batch=True mode for claimed or replayed entries).
            live = []
            ids: dict[Any, list[Any]] = {}
            for m in msgs:
                if m[2] is None:
                    acker.done(m[0], m[1])
                else:
                    live.append(m)
                    ids.setdefault(m[0], []).append(m[1])
            if not live:
                return 0
            ref = BatchAckRef(acker, ids)
            if await self._emit_one(live, [{"ref": ref}]):
                ref.release()
            else:
                acker.not_done_many(ids)
            return len(live)
        gather = asyncio.gather
        n = 0
        total = len(msgs)
        i = 0
        while i < total:
            downstreams = list(self.downstreams)
            single = downstreams[0].update if len(downstreams) == 1 else None
            end = min(total, i + YIELD_EVERY)
            for m in msgs[i:end]:
                if m[2] is None:
                    acker.done(m[0], m[1])
                    continue
                ref = AckRef(acker, m[0], m[1])  # count 1: held by us until emit is done
                md = [{"ref": ref}]
                try:
                    if single is not None:
                        # What Stream._emit does for one node, minus its retain/release pair
                        # around update() (a no-op while we hold our own reference).
                        self.current_value = m
                        self.current_metadata = md
                        r = single(m, who=self, metadata=md)
                        if r:
                            await (gather(*r) if type(r) is list else gather(r))
                    else:
                        r = self._emit(m, md)
                        if r:
                            await gather(*r)
                except Exception as exc:
                    # Not acknowledged: it stays pending (replayed at the next start, claimed
                    # by others if this consumer dies, or autoclaimed).
                    acker.not_done(m[0], m[1])
                    self._downstream_failed(m, exc)
                    continue
                ref.release()
                n += 1
            i = end
            if i < total:
                await asyncio.sleep(0)
        return n

    # -- heartbeats and claims ---------------------------------------------------------------

    async def _listen_heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(f"{self._what} heartbeats")
        while True:
            assert self.client is not None
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Silence only counts from the moment we listen.
                self._listening_since = loop.time()
                backoff.succeeded()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._seen[as_str(msg["data"])] = loop.time()
            except TRANSIENT_ERRORS as exc:
                self._listening_since = None
                await asyncio.sleep(backoff.next_delay(exc))
            finally:
                await pubsub.aclose()

    async def _heartbeats(self) -> None:
        """PUBLISH our name every heartbeat_interval (its own task: a long claim must not
        make us look dead)."""
        assert self.heartbeat_interval is not None
        backoff = Backoff(f"{self._what} heartbeats")
        while True:
            assert self.client is not None
            try:
                await self.client.publish(self.channel, self.consumer_name)
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(backoff.next_delay(exc))
                continue
            backoff.succeeded()
            await asyncio.sleep(self.heartbeat_interval)

    async def _watch_silent(self) -> None:
        """Every heartbeat_interval, claim the pending entries of silent consumers."""
        assert self.heartbeat_interval is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._claim_from_silent()
            except TRANSIENT_ERRORS:
                pass  # the heartbeat task logs the outage; try again next round
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("%s: claiming failed: %s", self._what, exc)
            except Exception as exc:  # keep watching whatever a claim's emission raised
                log.error("%s: claiming failed: %s", self._what, exc, exc_info=exc)

    async def _claim_from_silent(self) -> None:
        """Claim the pending entries of consumers silent for longer than claim_timeout."""
        assert self.client is not None and self.claim_timeout is not None
        now = asyncio.get_running_loop().time()
        since = self._listening_since
        if since is None or now - since <= self.claim_timeout:
            return
        for stream in self.streams:
            info = await self.client.xpending(stream, self.group_name)
            for row in info.get("consumers") or ():
                consumer = as_str(row["name"])
                if consumer == self.consumer_name or not int(row["pending"]):
                    continue
                last = self._seen.get(consumer)
                if last is None:
                    # Never heard of: silent from now on, unless it beats.
                    self._seen[consumer] = now
                    continue
                if now - max(last, since) > self.claim_timeout:
                    await self._claim(stream, consumer)

    async def _claim(self, stream: str, consumer: str) -> None:
        assert self.client is not None and self.claim_timeout is not None
        idle_ms = int(self.claim_timeout * 1000)
        while not self.stopped:
            rows = await self.client.xpending_range(
                stream, self.group_name, min="-", max="+", count=CLAIM_CHUNK,
                consumername=consumer, idle=idle_ms,
            )  # fmt: skip
            ids = [r["message_id"] for r in rows]
            if not ids:
                return
            # XCLAIM's min-idle-time: what another consumer just claimed is not idle any
            # more, so each entry is taken over by one consumer only.
            batch = await axclaim_batch(
                self.client, stream, self.group_name, self.consumer_name, idle_ms, ids,
                encoding=self.encoding,
            )  # fmt: skip
            if len(batch):
                self.claimed += len(batch)
                log.warning(
                    "%s: consumer %r silent for over %ss: claimed %d pending entries of %r",
                    self._what, consumer, self.claim_timeout, len(batch), stream,
                )  # fmt: skip
                await self._deliver(batch, stream=stream)
            if len(ids) < CLAIM_CHUNK or not len(batch):
                return

    async def _autoclaim(self) -> None:
        assert self.autoclaim_idle is not None
        idle_ms = int(self.autoclaim_idle * 1000)
        every = min(max(self.autoclaim_idle / 2, 0.05), 30.0)
        backoff = Backoff(f"{self._what} autoclaim")
        while True:
            await asyncio.sleep(every)
            try:
                for stream in self.streams:
                    start: Any = "0-0"
                    while True:
                        assert self.client is not None
                        batch = await axautoclaim_batch(
                            self.client, stream, self.group_name, self.consumer_name, idle_ms,
                            start, count=CLAIM_CHUNK, encoding=self.encoding,
                        )  # fmt: skip
                        if len(batch):
                            n = await self._deliver(batch, skip_inflight=True, stream=stream)
                            if n:
                                self.claimed += n
                                log.warning(
                                    "%s: XAUTOCLAIM took over %d entries of %r idle > %ss",
                                    self._what, n, stream, self.autoclaim_idle,
                                )  # fmt: skip
                        start = batch.cursor
                        if start is None or as_str(start) in ("0-0", "0"):
                            break
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(backoff.next_delay(exc))
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("%s: XAUTOCLAIM failed: %s", self._what, exc)
            except Exception as exc:
                log.error("%s: XAUTOCLAIM failed: %s", self._what, exc, exc_info=exc)
            else:
                backoff.succeeded()

    async def _drop_prefetch(self, fut: asyncio.Future[Any]) -> None:
        # A read that already came back was delivered to us: emit it rather than leave it
        # pending until the next start.
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            try:
                await self._deliver(fut.result())
            except Exception as exc:
                log.error("%s: %s", self._what, exc, exc_info=exc)
            return
        await super()._drop_prefetch(fut)


# Registered by the streamz entry points; registered here as well when this module is
# imported in an environment where fastredis is not installed (e.g. a source checkout).
for _node in (from_redis_lists, from_redis_streams, from_redis_consumer_group):
    if not hasattr(Stream, _node.__name__):
        Stream.register_api(staticmethod)(_node)
