"""The fastredis reader as redis-py's asyncio parser (`parser_class=AsyncFastParser`).

Received bytes go straight into the reader. Internals relied on: the hiredis
parser's `_reader`/`_stream`/`_read_size`, and `asyncio.StreamReader`'s `_limit`,
`_buffer`, `_paused`, `_eof`, `_exception`, `_transport`, `_wakeup_waiter` and
`_wait_for_data`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rexc
from redis._parsers.hiredis import _AsyncHiredisParser
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR

from fastredis._resp import PushNotification
from fastredis.redis_io.parser import reader_for

__all__ = ["AsyncFastParser"]


class AsyncFastParser(_AsyncHiredisParser):
    """redis-py parser (asyncio) backed by the fastredis reader."""

    def on_connect(self, connection: Any) -> None:
        super().on_connect(connection)
        self._reader = reader_for(connection, self)
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
