"""Type contract of the compiled RESP reader (src_cython/fastredis/_resp.pyx)."""

from collections.abc import Callable
from typing import Any

import hiredis
from typing_extensions import disjoint_base

from fastredis._batch import AUTOCLAIM as AUTOCLAIM
from fastredis._batch import RANGE as RANGE
from fastredis._batch import READ as READ
from fastredis._batch import StreamBatch as StreamBatch

class PushNotification(hiredis.PushNotification):
    """A RESP3 push message (`>`), as hiredis.PushNotification (a list)."""

class ReplyError(hiredis.ReplyError):
    """Default class for error replies (`-ERR ...`) when no replyError is given."""

class ProtocolError(hiredis.ProtocolError):
    """Default class raised for malformed input when no protocolError is given."""

def batch_from_reply(buf: Any, kind: int, encoding: str | None = None) -> StreamBatch:
    """The StreamBatch that the bytes of one stream reply give (what pickles load)."""

def join_read_batches(header: bytes, batches: list[StreamBatch], starts: list[int]) -> StreamBatch:
    """One READ batch from READ batches of disjoint streams, without parsing again:
    `header`, then each batch's reply from starts[i], offsets moved with the bytes."""

@disjoint_base
class Reader:
    """Incremental RESP2/RESP3 reader; a drop-in for hiredis.Reader."""

    def __init__(
        self,
        protocolError: Callable[[str], Exception] | None = None,
        replyError: Callable[[str], Exception] | None = None,
        encoding: str | None = None,
        errors: str | None = None,
        notEnoughData: Any = False,
    ) -> None: ...
    def feed(self, buf: Any, off: int = 0, len: int = -1) -> None:
        """Append buf[off:off+len]; ValueError for a range outside buf (as hiredis)."""
    def recv_from(self, sock: Any) -> int:
        """One `sock.recv_into()` straight into the internal buffer (as feed, no copy).

        Offers at least 64 KB of room; while a bulk string is incomplete, its rest
        (at most 16 MB per call). Returns the bytes received, 0 at end of file.
        Exceptions from recv_into (timeouts, OSError, BlockingIOError) propagate
        unchanged and nothing is accounted. The temporary memoryview passed to
        recv_into is released before returning; if recv_into kept an export of it
        (a slice, a buffer), BufferError (the received bytes are still kept).
        RuntimeError when called while a reply is being built (as feed)."""
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """asyncio.BufferedProtocol.get_buffer: a writable view of the free tail (the
        room recv_from offers), pending until buffer_updated(n); any other call
        first releases a pending view, nothing accounted."""
    def buffer_updated(self, nbytes: int) -> None:
        """asyncio.BufferedProtocol.buffer_updated: account nbytes written to the
        get_buffer view and release it (BufferError if an export of it was kept,
        the bytes still kept); RuntimeError without a pending view."""
    def gets(self, decode: bool = True) -> Any:
        """The next reply, or notEnoughData when it is not complete yet."""
    def has_data(self) -> bool: ...
    def len(self) -> int: ...
    def missing(self) -> int:
        """Bytes known to be missing before `gets()` can get further (0: none known)."""
    def getmaxbuf(self) -> int: ...
    def setmaxbuf(self, maxbuf: int | None) -> None:
        """An empty internal buffer larger than this is released (0: never; None:
        the default, as hiredis)."""
    def set_encoding(self, encoding: str | None = None, errors: str | None = None) -> None: ...
    def expect_batch(self, kind: int, encoding: str | None = None) -> None:
        """Parse the next reply as a StreamBatch of `kind` (a nil reply gives an empty batch)."""
