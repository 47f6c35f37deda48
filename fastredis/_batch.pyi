"""Type contract of StreamBatch (src_cython/fastredis/_batch.pyx; layout in _batch.pxd)."""

from collections.abc import Iterator
from typing import Any, overload

import numpy as np
from typing_extensions import disjoint_base

# the C functions other compiled modules cimport (take_spare), as Cython exports them
__pyx_capi__: dict[str, Any]

def spare_buffers() -> tuple[int, int]:
    """(count, bytes) of big reply buffers of dropped batches kept for reuse."""

def release_spare_buffers() -> int:
    """Give the kept reply buffers back to the system; the bytes they held."""

READ: int  # XREAD / XREADGROUP reply: per stream [name, entries] (RESP2) or a map (RESP3)
RANGE: int  # XRANGE / XREVRANGE / XCLAIM reply: a flat list of entries
AUTOCLAIM: int  # XAUTOCLAIM reply: [cursor, entries, deleted ids]

_Name = str | bytes
# (stream name, or None for RANGE/AUTOCLAIM batches; id; fields, or None when nil)
_Item = tuple[_Name | None, _Name, dict[Any, Any] | None]

@disjoint_base
class StreamBatch:
    """One stream reply: an owned buffer plus offset arrays; objects made on demand."""

    @property
    def buf(self) -> bytes: ...
    @property
    def encoding(self) -> str | None:
        """Codec for names, ids, keys and values; None gives bytes."""
    @property
    def kind(self) -> int: ...
    @property
    def cursor(self) -> _Name | None:
        """XAUTOCLAIM's next start id."""
    @property
    def deleted(self) -> list[_Name] | None:
        """XAUTOCLAIM's deleted ids (Redis >= 7)."""
    @property
    def streams(self) -> tuple[_Name, ...]:
        """Stream names in reply order, each made once (RANGE kinds: empty)."""
    @property
    def nbytes(self) -> int:
        """Size of the owned reply buffer."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, i: int) -> _Item: ...
    @overload
    def __getitem__(self, i: slice) -> list[_Item]: ...
    def __iter__(self) -> Iterator[_Item]: ...
    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickled as the reply bytes (out of band with protocol 5), parsed on load."""
    def to_messages(self) -> list[_Item]: ...
    def ids(self) -> list[_Name]: ...
    def id_at(self, i: int) -> tuple[int, int]:
        """Entry id i as numbers (milliseconds, sequence)."""
    def last_ids(self) -> dict[_Name | None, _Name]:
        """The greatest id per stream (numeric comparison), for XREAD cursors;
        keyed by None for RANGE/AUTOCLAIM batches."""
    def field(self, key: bytes | str) -> list[memoryview | None]:
        """The value of one field of every entry, as memoryviews into the buffer."""
    def __arrow_c_schema__(self) -> Any:
        """The Arrow schema of the batch's columns (an "arrow_schema" PyCapsule)."""
    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]:
        """(schema, array) PyCapsules: the batch as one Arrow struct array."""
    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        """The batch as an Arrow stream of one record batch (a PyCapsule): stream,
        id_ms, id_seq, then one binary_view (string_view with an encoding) column
        per field name, viewing the reply buffer with no payload copied."""
    def offsets(self) -> dict[str, np.ndarray[Any, Any]]:
        """The offset arrays as read-only numpy views (no copy): entry_stream, id_off,
        id_len, id_ms, id_seq, field_first, entry_nil, key_off, key_len, val_off,
        val_len, stream_off, stream_len."""
