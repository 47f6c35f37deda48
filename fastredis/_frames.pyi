"""Type contract of the compiled frame packer (src_cython/fastredis/_frames.pyx)."""

from typing import Any

from fastredis._batch import StreamBatch
from fastredis._writer import REFERENCE_MIN as REFERENCE_MIN
from fastredis._writer import pack_commands as pack_commands

_Buffer = bytes | bytearray | memoryview

class FrameError(ValueError):
    """A push frame header or payload that does not fit the protocol."""

def json_string(s: str | bytes) -> bytes:
    """`s` as a JSON string literal, escaped as pull_header escapes names and ids
    (invalid UTF-8 -> one U+FFFD per invalid sequence, as bytes.decode(errors="replace"))."""

def pull_header(
    batch: StreamBatch, field: bytes | str = b"d", sid: str | bytes | None = None
) -> bytes:
    """JSON `[[sid, id, start], ...]` (UTF-8): start offsets of each entry's `field`
    value in the pull payload. `sid` names the stream of every entry: required for
    RANGE/AUTOCLAIM batches (no stream names in the reply), overrides READ names.
    Stream names that are not valid UTF-8 get U+FFFD for each invalid sequence."""

def pull_payload(batch: StreamBatch, field: bytes | str = b"d") -> bytes:
    """The `field` values of every entry back to back (one memcpy each).
    An entry without the field contributes 0 bytes."""

def pull_views(batch: StreamBatch, field: bytes | str = b"d") -> list[memoryview]:
    """The same payload as views into the batch buffer, for writelines: one view per
    entry (empty for entries without the field), aligned with the batch."""

def values_nbytes(batch: StreamBatch) -> int:
    """The bytes of every field value of `batch` (offsets()["val_len"].sum())."""

def push_entries(
    header: Any, payload: _Buffer, sids: list[str]
) -> list[tuple[str, str, memoryview]]:
    """Validate a push header against its binary payload and split it into
    (sid, id, view) entries. `header` is the decoded JSON: a list of end offsets
    (every entry goes to each of `sids`), of [sid, end] pairs, or of
    [sid, id, end] triples; id is "*" unless given. Offsets must be ints,
    non-decreasing, inside the payload, and the last must equal len(payload).
    Raises FrameError naming the problem."""
