"""The fastredis reader as redis-py's asyncio parser (`parser_class=AsyncFastParser`).

Received bytes land straight in the reader's buffer: the connection's transport is
handed a `asyncio.BufferedProtocol` (`ReceiveProtocol`) whose `get_buffer` is the
reader's free tail, so the kernel copies into the reader and nothing copies after it
(no StreamReader bytearray, no chunk object, no feed copy). redis-py's own
StreamReaderProtocol is kept for what it does besides receiving: EOF and errors
(so the StreamReader's `at_eof()`/`exception()` stay true) and the writer's flow
control (`drain`).

Internals relied on: the hiredis parser's `_reader`/`_stream`/`_read_size`/
`_connected`, redis-py's `Connection._writer` (an asyncio StreamWriter) and, for
bytes received before the parser takes over, `asyncio.StreamReader._buffer`.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis import exceptions as rexc
from redis._parsers.hiredis import _AsyncHiredisParser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR

from fastredis._resp import PushNotification, Reader
from fastredis.redis_io.parser import reader_for

__all__ = ["AsyncFastParser", "ReceiveProtocol"]


class ReceiveProtocol(asyncio.BufferedProtocol):
    """Receives into a fastredis Reader; everything else goes to `inner` (the
    transport's previous protocol)."""

    def __init__(
        self,
        reader: Reader,
        inner: asyncio.BaseProtocol,
        high_water: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.reader = reader
        # kept: asyncio.get_running_loop() is a getpid() system call per use (3.11)
        self.loop = loop
        self.inner = inner
        self.high_water = high_water  # pending bytes past which reading pauses
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.fed = False  # bytes arrived since the parser last looked
        self.closed: BaseException | None = None  # EOF or the connection's error
        self.waiter: asyncio.Future[None] | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        reader.buffer_updated(nbytes)
        self.fed = True
        # not while the bulk string the parser stopped in is still short: a 1 MB
        # reply comes in several chunks, and each wake resumes the reading coroutines
        if not reader.missing():
            self._wake()
        # nobody is reading and a lot is pending: stop receiving until someone does
        if self.waiter is None and self.reader.len() > self.high_water:
            self._pause()

    def eof_received(self) -> bool | None:
        self._close(rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR))
        return cast(asyncio.Protocol, self.inner).eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR))
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    async def wait(self) -> None:
        """Until bytes arrive (at once if some did since the last call); raises once
        the connection is closed and nothing new arrived."""
        if not self.fed:
            if self.closed is None:
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                self.waiter = self.loop.create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
            if not self.fed:
                raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR) from self.closed
        self.fed = False

    def _pause(self) -> None:
        if self.transport is not None and not self.paused:
            try:
                self.transport.pause_reading()
            except (NotImplementedError, RuntimeError):
                return  # a transport that cannot pause keeps receiving
            self.paused = True

    def _close(self, error: BaseException) -> None:
        if self.closed is None:
            self.closed = error
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncFastParser(_AsyncHiredisParser):
    """redis-py parser (asyncio) backed by the fastredis reader."""

    _receiver: ReceiveProtocol | None = None
    _hiredis_PushNotificationType: Any  # redis-py's is None without hiredis >= 3.2

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        reader = reader_for(connection, self)
        self._reader = cast(Any, reader)
        self._hiredis_PushNotificationType = PushNotification
        self._receiver = None
        writer = getattr(connection, "_writer", None)
        transport = writer.transport if isinstance(writer, asyncio.StreamWriter) else None
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            return  # not a socket stream: redis-py's read path (a copy per chunk)
        stream = self._stream
        pending = getattr(stream, "_buffer", None)
        if pending:  # received before the parser took over
            reader.feed(bytes(pending))
            pending.clear()
        # pause only when a reply is not being read and twice the read size is pending
        receiver = ReceiveProtocol(
            reader, transport.get_protocol(), 2 * self._read_size, asyncio.get_running_loop()
        )
        receiver.fed = bool(reader.len())
        receiver.transport = transport
        transport.set_protocol(receiver)
        self._receiver = receiver

    @property
    def _fast(self) -> Reader | None:
        # redis-py types `_reader` as hiredis.Reader: ours is a drop-in, not a subclass
        return cast("Reader | None", self._reader)

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self._receiver = None

    async def read_from_socket(self) -> bool:
        receiver = self._receiver
        if receiver is None:
            if self._connected and self._fast is not None:
                return await super().read_from_socket()
            raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        await receiver.wait()
        return True

    def expect_batch(self, kind: int, encoding: str | None) -> None:
        """Parse the next reply as a StreamBatch."""
        if self._fast is None:
            raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        self._fast.expect_batch(kind, encoding)
