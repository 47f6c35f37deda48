"""The fastredis reader as redis-py's sync parser (`parser_class=FastParser`).

Subclasses redis-py's hiredis parser and swaps `hiredis.Reader` for
`fastredis._resp.Reader`, a drop-in. Internals relied on: the parser's
`_reader`/`_sock`, `on_connect` kwargs and redis-py's socket error constants.
"""

from __future__ import annotations

from typing import Any, cast

from redis import exceptions as rexc
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis._parsers.socket import (
    NONBLOCKING_EXCEPTION_ERROR_NUMBERS,
    NONBLOCKING_EXCEPTIONS,
    SENTINEL,
    SERVER_CLOSED_CONNECTION_ERROR,
)
from redis.exceptions import InvalidResponse

from fastredis._resp import PushNotification, Reader

__all__ = ["FastParser", "reader_for"]


def reader_for(connection: Any, parser: Any) -> Reader:
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
        self._reader = cast(Any, reader_for(connection, self))
        self._hiredis_PushNotificationType = PushNotification

    @property
    def _fast(self) -> Reader | None:
        # redis-py types `_reader` as hiredis.Reader: ours is a drop-in, not a subclass
        return cast("Reader | None", self._reader)

    def read_from_socket(self, timeout: Any = SENTINEL, raise_on_timeout: bool = True) -> bool:
        # redis-py 8.1's _HiredisParser.read_from_socket (same timeouts, exceptions and
        # socket-timeout restore), with reader.recv_from(sock) in place of
        # sock.recv_into(self._buffer) + reader.feed(...): no bounce copy.
        sock, reader = self._sock, self._fast
        if sock is None or reader is None:  # disconnected by another thread
            raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        # redis-py passes the socket's own timeout too: setting it again would cost two
        # system calls per receive (the socket is left at _socket_timeout between calls)
        custom_timeout = timeout is not SENTINEL and timeout != self._socket_timeout
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
        if self._fast is None:
            raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
        self._fast.expect_batch(kind, encoding)
