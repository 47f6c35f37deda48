"""Type contract of the compiled RESP reader (src_cython/fastredis/_resp.pyx)."""

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

READ: int  # XREAD / XREADGROUP reply: per stream [name, entries] (RESP2) or a map (RESP3)
RANGE: int  # XRANGE / XREVRANGE / XCLAIM reply: a flat list of entries
AUTOCLAIM: int  # XAUTOCLAIM reply: [cursor, entries, deleted ids]

class PushNotification(list[Any]):
    """A RESP3 push message (`>`), as hiredis.PushNotification."""

class StreamBatch:
    """One stream reply: an owned buffer plus offset arrays; objects made on demand."""

    buf: bytes
    encoding: str | None  # codec for names, ids, keys and values; None gives bytes
    kind: int
    cursor: str | bytes | None  # XAUTOCLAIM's next start id
    deleted: list[str | bytes] | None  # XAUTOCLAIM's deleted ids (Redis >= 7)

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> tuple[str | bytes, str | bytes, dict[Any, Any] | None]: ...
    def __iter__(self) -> Iterator[tuple[str | bytes, str | bytes, dict[Any, Any] | None]]: ...
    @property
    def streams(self) -> tuple[str | bytes, ...]:
        """Stream names in reply order, each made once (RANGE kinds: empty)."""
    @property
    def nbytes(self) -> int:
        """Size of the owned reply buffer."""
    def to_messages(self) -> list[tuple[str | bytes, str | bytes, dict[Any, Any] | None]]: ...
    def ids(self) -> list[str | bytes]: ...
    def id_at(self, i: int) -> tuple[int, int]:
        """Entry id i as numbers (milliseconds, sequence)."""
    def last_ids(self) -> dict[str | bytes, str | bytes]:
        """The greatest id per stream (numeric comparison), for XREAD cursors."""
    def field(self, key: bytes | str) -> list[memoryview | None]:
        """The value of one field of every entry, as memoryviews into the buffer."""
    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickled as the reply bytes (out of band with protocol 5), parsed on load."""
    def offsets(self) -> dict[str, np.ndarray]:
        """The offset arrays as numpy views (no copy): entry_stream, id_off, id_len,
        id_ms, id_seq, field_first, key_off, key_len, val_off, val_len."""

def batch_from_reply(buf: Any, kind: int, encoding: str | None = None) -> StreamBatch:
    """The StreamBatch that the bytes of one stream reply give (what pickles load)."""

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
    def feed(self, buf: Any, off: int = 0, len: int = -1) -> None: ...
    def recv_from(self, sock: Any) -> int:
        """One `sock.recv_into()` straight into the internal buffer (as feed, no copy).

        Offers at least 64 KB of room; while a bulk string is incomplete, its rest
        (at most 16 MB per call). Returns the bytes received, 0 at end of file.
        Exceptions from recv_into (timeouts, OSError, BlockingIOError) propagate
        unchanged and nothing is accounted. The temporary memoryview passed to
        recv_into is released before returning; if recv_into kept an export of it
        (a slice, a buffer), BufferError (the received bytes are still kept).
        RuntimeError when called while a reply is being built (as feed)."""
    def gets(self, decode: bool = True) -> Any:
        """The next reply, or notEnoughData when it is not complete yet."""
    def has_data(self) -> bool: ...
    def len(self) -> int: ...
    def set_encoding(self, encoding: str | None = None, errors: str | None = None) -> None: ...
    def expect_batch(self, kind: int, encoding: str | None = None) -> None:
        """Parse the next reply as a StreamBatch of `kind` (a nil reply gives an empty batch)."""
