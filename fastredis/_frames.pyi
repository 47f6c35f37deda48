"""Type contract of the compiled frame packer (src_cython/fastredis/_frames.pyx)."""

from typing import Any

from fastredis._resp import StreamBatch

Buffer = bytes | bytearray | memoryview

class FrameError(ValueError):
    """A push frame header or payload that does not fit the protocol."""

def pull_header(batch: StreamBatch, field: bytes = b"d") -> bytes:
    """JSON `[[sid, id, start], ...]` (UTF-8): start offsets of each entry's `field`
    value in the pull payload."""

def pull_payload(batch: StreamBatch, field: bytes = b"d") -> bytes:
    """The `field` values of every entry back to back (one memcpy each).
    An entry without the field contributes 0 bytes."""

def pull_views(batch: StreamBatch, field: bytes = b"d") -> list[memoryview]:
    """The same payload as views into the batch buffer, for writelines."""

def push_entries(
    header: Any, payload: Buffer, sids: list[str]
) -> list[tuple[str, str, memoryview]]:
    """Validate a push header against its binary payload and split it into
    (sid, id, view) entries. `header` is the decoded JSON: a list of end offsets
    (every entry goes to each of `sids`), of [sid, end] pairs, or of
    [sid, id, end] triples; id is "*" unless given. Offsets must be ints,
    non-decreasing, inside the payload, and the last must equal len(payload).
    Raises FrameError naming the problem."""

def pack_commands(commands: list[list[Any]]) -> list[Buffer]:
    """RESP-encode commands whose arguments are bytes, str, int or buffers.
    Large buffer arguments are referenced, not copied; pass the result to
    `socket.sendmsg`/`writelines`/redis-py's `send_packed_command`."""
