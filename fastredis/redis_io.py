"""redis-py integration: the fastredis reader as redis-py's parser, and batch reads.

redis-py stays the connection layer (URLs, auth, TLS, unix sockets, pools, retries).
The parsers below subclass redis-py's hiredis parsers and swap `hiredis.Reader` for
`fastredis._resp.Reader`, a drop-in; a batch read asks the reader to parse the next
reply as a StreamBatch. Internals relied on: `Connection._parser`, the hiredis
parsers' `_reader`/`_sock`/`_stream` attributes and `on_connect` kwargs, and (asyncio)
`asyncio.StreamReader`'s `_limit`, `_buffer`, `_paused` and `_wait_for_data`, so that
received bytes go straight into the reader.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

import redis
import redis.asyncio
from redis import exceptions as rexc
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser, _HiredisParser
from redis._parsers.socket import (
    NONBLOCKING_EXCEPTION_ERROR_NUMBERS,
    NONBLOCKING_EXCEPTIONS,
    SENTINEL,
    SERVER_CLOSED_CONNECTION_ERROR,
)
from redis.exceptions import InvalidResponse

from fastredis._resp import AUTOCLAIM, RANGE, READ, PushNotification, Reader, StreamBatch

__all__ = [
    "AsyncFastParser",
    "FastParser",
    "axautoclaim_batch",
    "axclaim_batch",
    "axrange_batch",
    "axread_batch",
    "axreadgroup_batch",
    "axrevrange_batch",
    "blocking_read_timeout",
    "make_async_client",
    "make_client",
    "xautoclaim_batch",
    "xclaim_batch",
    "xrange_batch",
    "xread_batch",
    "xreadgroup_batch",
    "xrevrange_batch",
]

# Extra seconds to wait past BLOCK before calling a blocking read dead.
_BLOCK_MARGIN = 5.0
StreamIds = Mapping[str | bytes, str | bytes | int]


def _reader_for(connection: Any, parser: Any) -> Reader:
    encoder = connection.encoder
    return Reader(
        protocolError=InvalidResponse,
        replyError=parser.parse_error,
        encoding=encoder.encoding if encoder.decode_responses else None,
        errors=encoder.encoding_errors,
        notEnoughData=NOT_ENOUGH_DATA,
    )


class FastParser(_HiredisParser):
    """redis-py parser (sync) backed by the fastredis reader."""

    def on_connect(self, connection: Any, **kwargs: Any) -> None:
        super().on_connect(connection, **kwargs)
        self._reader = _reader_for(connection, self)
        self._hiredis_PushNotificationType = PushNotification

    def read_from_socket(self, timeout: Any = SENTINEL, raise_on_timeout: bool = True) -> bool:
        # redis-py 8.1's _HiredisParser.read_from_socket (same timeouts, exceptions and
        # socket-timeout restore), with reader.recv_from(sock) in place of
        # sock.recv_into(self._buffer) + reader.feed(...): no bounce copy.
        sock, reader = self._sock, self._reader
        if sock is None or reader is None:  # disconnected by another thread
            raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        custom_timeout = timeout is not SENTINEL
        try:
            if custom_timeout:
                sock.settimeout(timeout)
            if reader.recv_from(sock) == 0:
                raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
            return True
        except TimeoutError as ex:  # socket.timeout
            if raise_on_timeout:
                raise rexc.TimeoutError("Timeout reading from socket") from ex
            return False
        except NONBLOCKING_EXCEPTIONS as ex:
            allowed = NONBLOCKING_EXCEPTION_ERROR_NUMBERS.get(ex.__class__, -1)
            if ex.errno == allowed:
                if not raise_on_timeout:
                    return False
                if timeout == 0:
                    raise rexc.TimeoutError("Timeout reading from socket") from ex
            raise rexc.ConnectionError(f"Error while reading from socket: {ex.args}") from ex
        finally:
            if custom_timeout:
                sock.settimeout(self._socket_timeout)

    def expect_batch(self, kind: int, encoding: str | None) -> None:
        """Parse the next reply as a StreamBatch."""
        self._reader.expect_batch(kind, encoding)


class AsyncFastParser(_AsyncHiredisParser):
    """redis-py parser (asyncio) backed by the fastredis reader."""

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        self._reader = _reader_for(connection, self)
        self._hiredis_PushNotificationType = PushNotification
        # asyncio.StreamReader pauses the transport past 2 x limit (64 KiB by default):
        # a 1 MB reply then costs a pause/resume (two epoll_ctl calls) per 128 KiB and a
        # read() per piece. Let it buffer up to the read size instead.
        stream = self._stream
        if isinstance(getattr(stream, "_limit", None), int):
            stream._limit = max(stream._limit, self._read_size)
        # Received bytes go straight into the fastredis reader instead of through
        # StreamReader's bytearray and a read() copy of it: two copies of every byte
        # fewer (a first chunk with nothing pending is even adopted as it is). The
        # StreamReader still does the waiting, EOF, errors and flow control.
        self._fed = False
        if isinstance(stream, asyncio.StreamReader) and isinstance(
            getattr(stream, "_buffer", None), bytearray
        ):
            if stream._buffer:  # anything received before the parser took over
                self._reader.feed(bytes(stream._buffer))
                stream._buffer.clear()
                self._fed = True
            stream.feed_data = self._feed_data  # type: ignore[method-assign]
            self._direct = True
        else:
            self._direct = False

    def _feed_data(self, data: bytes) -> None:
        # StreamReader.feed_data for this connection's reader: the protocol calls it
        # with each chunk received. Past 2 x limit of unparsed bytes the transport is
        # paused, as StreamReader would; waiting for data (read_from_socket) resumes it.
        stream = self._stream
        if not data:
            return
        self._reader.feed(data)
        self._fed = True
        stream._wakeup_waiter()
        transport = stream._transport
        if transport is not None and not stream._paused and self._reader.len() > 2 * stream._limit:
            try:
                transport.pause_reading()
            except NotImplementedError:
                stream._transport = None
            else:
                stream._paused = True

    async def read_from_socket(self) -> bool:
        if not self._direct:
            return await super().read_from_socket()
        stream = self._stream
        if not self._fed:
            if stream._exception is not None:
                raise stream._exception
            if not stream._eof:
                await stream._wait_for_data("read")
            if not self._fed:  # woken by EOF
                raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR) from None
        self._fed = False
        return True

    def expect_batch(self, kind: int, encoding: str | None) -> None:
        """Parse the next reply as a StreamBatch."""
        self._reader.expect_batch(kind, encoding)


def _with_parser(client: Any, parser_class: type) -> Any:
    # Redis(**kwargs) has no parser_class argument; the pool's connection kwargs do,
    # and every connection it makes (TCP, TLS, unix socket) gets the parser.
    client.connection_pool.connection_kwargs["parser_class"] = parser_class
    return client


def make_client(
    client_params: Mapping[str, Any] | None = None, url: str | None = None
) -> redis.Redis:
    """A redis-py client using the fastredis parser; `client_params` go to redis-py unchanged."""
    params = dict(client_params or {})
    client = redis.Redis.from_url(url, **params) if url is not None else redis.Redis(**params)
    return _with_parser(client, FastParser)


def make_async_client(
    client_params: Mapping[str, Any] | None = None, url: str | None = None
) -> redis.asyncio.Redis:
    """An asyncio redis-py client using the fastredis parser."""
    params = dict(client_params or {})
    if url is not None:
        client = redis.asyncio.Redis.from_url(url, **params)
    else:
        client = redis.asyncio.Redis(**params)
    return _with_parser(client, AsyncFastParser)


# -- command building -------------------------------------------------------------


def _stream_args(streams: StreamIds) -> list[Any]:
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError("streams must be a non-empty mapping of stream name -> id")
    return ["STREAMS", *streams.keys(), *streams.values()]


def _count_args(count: int | None) -> list[Any]:
    if count is None:
        return []
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive int, not {count!r}")
    return ["COUNT", count]


def _block_args(block: int | None) -> list[Any]:
    if block is None:
        return []
    if not isinstance(block, int) or isinstance(block, bool) or block < 0:
        raise ValueError(f"block must be a non-negative int of milliseconds, not {block!r}")
    return ["BLOCK", block]


def _xread_args(streams: StreamIds, count: int | None, block: int | None) -> list[Any]:
    return ["XREAD", *_count_args(count), *_block_args(block), *_stream_args(streams)]


def _xreadgroup_args(
    group: str, consumer: str, streams: StreamIds, count: int | None, block: int | None, noack: bool
) -> list[Any]:
    return [
        "XREADGROUP", "GROUP", group, consumer,
        *_count_args(count), *_block_args(block), *(["NOACK"] if noack else []),
        *_stream_args(streams),
    ]  # fmt: skip


def _xrange_args(cmd: str, name: str, first: Any, second: Any, count: int | None) -> list[Any]:
    return [cmd, name, first, second, *_count_args(count)]


def _xclaim_args(
    name: str, group: str, consumer: str, idle_ms: int, ids: Iterable[Any]
) -> list[Any]:
    ids = list(ids)
    if not ids:
        raise ValueError("xclaim needs at least one id")
    return ["XCLAIM", name, group, consumer, idle_ms, *ids]


def _xautoclaim_args(
    name: str, group: str, consumer: str, idle_ms: int, start_id: Any, count: int | None
) -> list[Any]:
    return ["XAUTOCLAIM", name, group, consumer, idle_ms, start_id, *_count_args(count)]


def blocking_read_timeout(
    socket_timeout: float | None, block_ms: float | None, forever: float | None = None
) -> float | None:
    """How long to wait for the reply of a command with BLOCK `block_ms` (None: not a
    blocking command): it must outlive the client's socket_timeout. `forever` is what
    this caller's redis-py API takes for no limit (sync: None, asyncio: math.inf)."""
    if block_ms is None:
        return socket_timeout
    if block_ms == 0:
        return forever
    wait = block_ms / 1000 + _BLOCK_MARGIN
    return wait if socket_timeout is None else max(socket_timeout, wait)


# -- sync batch reads ---------------------------------------------------------------


def _batch_call(
    client: redis.Redis, args: list[Any], kind: int, encoding: str | None, block: int | None = None
) -> StreamBatch:
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        if not isinstance(conn._parser, FastParser):
            raise TypeError(
                "batch reads need a client made by fastredis.redis_io.make_client "
                "(or built with parser_class=FastParser)"
            )
        timeout = blocking_read_timeout(conn.socket_timeout, block)

        def call() -> StreamBatch:
            conn.send_command(*args)
            conn._parser.expect_batch(kind, encoding)
            return conn.read_response(timeout=timeout)

        return conn.retry.call_with_retry(call, lambda _error: conn.disconnect())
    finally:
        pool.release(conn)


def xread_batch(
    client: redis.Redis,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREAD into a StreamBatch; a BLOCK timeout gives an empty batch."""
    return _batch_call(client, _xread_args(streams, count, block), READ, encoding, block)


def xreadgroup_batch(
    client: redis.Redis,
    group: str,
    consumer: str,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    noack: bool = False,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREADGROUP into a StreamBatch; a BLOCK timeout gives an empty batch."""
    args = _xreadgroup_args(group, consumer, streams, count, block, noack)
    return _batch_call(client, args, READ, encoding, block)


def xrange_batch(
    client: redis.Redis,
    name: str,
    min: Any = "-",
    max: Any = "+",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XRANGE into a StreamBatch."""
    return _batch_call(client, _xrange_args("XRANGE", name, min, max, count), RANGE, encoding)


def xrevrange_batch(
    client: redis.Redis,
    name: str,
    max: Any = "+",
    min: Any = "-",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XREVRANGE into a StreamBatch (newest first)."""
    return _batch_call(client, _xrange_args("XREVRANGE", name, max, min, count), RANGE, encoding)


def xclaim_batch(
    client: redis.Redis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    ids: Iterable[Any],
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XCLAIM into a StreamBatch of the claimed entries."""
    args = _xclaim_args(name, group, consumer, min_idle_time_ms, ids)
    return _batch_call(client, args, RANGE, encoding)


def xautoclaim_batch(
    client: redis.Redis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    start_id: Any = "0-0",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """XAUTOCLAIM into a StreamBatch; `batch.cursor` is the next start id."""
    args = _xautoclaim_args(name, group, consumer, min_idle_time_ms, start_id, count)
    return _batch_call(client, args, AUTOCLAIM, encoding)


# -- asyncio batch reads --------------------------------------------------------------


async def _abatch_call(
    client: redis.asyncio.Redis,
    args: list[Any],
    kind: int,
    encoding: str | None,
    block: int | None = None,
) -> StreamBatch:
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        if not isinstance(conn._parser, AsyncFastParser):
            raise TypeError(
                "batch reads need a client made by fastredis.redis_io.make_async_client "
                "(or built with parser_class=AsyncFastParser)"
            )
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)

        async def call() -> StreamBatch:
            await conn.send_command(*args)
            conn._parser.expect_batch(kind, encoding)
            return await conn.read_response(timeout=timeout)

        async def fail(_error: Exception) -> None:
            await conn.disconnect()

        return await conn.retry.call_with_retry(call, fail)
    finally:
        await pool.release(conn)


async def axread_batch(
    client: redis.asyncio.Redis,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREAD into a StreamBatch."""
    return await _abatch_call(client, _xread_args(streams, count, block), READ, encoding, block)


async def axreadgroup_batch(
    client: redis.asyncio.Redis,
    group: str,
    consumer: str,
    streams: StreamIds,
    count: int | None = None,
    block: int | None = None,
    noack: bool = False,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREADGROUP into a StreamBatch."""
    args = _xreadgroup_args(group, consumer, streams, count, block, noack)
    return await _abatch_call(client, args, READ, encoding, block)


async def axrange_batch(
    client: redis.asyncio.Redis,
    name: str,
    min: Any = "-",
    max: Any = "+",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XRANGE into a StreamBatch."""
    args = _xrange_args("XRANGE", name, min, max, count)
    return await _abatch_call(client, args, RANGE, encoding)


async def axrevrange_batch(
    client: redis.asyncio.Redis,
    name: str,
    max: Any = "+",
    min: Any = "-",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XREVRANGE into a StreamBatch (newest first)."""
    args = _xrange_args("XREVRANGE", name, max, min, count)
    return await _abatch_call(client, args, RANGE, encoding)


async def axclaim_batch(
    client: redis.asyncio.Redis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    ids: Iterable[Any],
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XCLAIM into a StreamBatch."""
    args = _xclaim_args(name, group, consumer, min_idle_time_ms, ids)
    return await _abatch_call(client, args, RANGE, encoding)


async def axautoclaim_batch(
    client: redis.asyncio.Redis,
    name: str,
    group: str,
    consumer: str,
    min_idle_time_ms: int,
    start_id: Any = "0-0",
    count: int | None = None,
    encoding: str | None = "utf-8",
) -> StreamBatch:
    """Asyncio XAUTOCLAIM into a StreamBatch; `batch.cursor` is the next start id."""
    args = _xautoclaim_args(name, group, consumer, min_idle_time_ms, start_id, count)
    return await _abatch_call(client, args, AUTOCLAIM, encoding)
