"""What a recording file holds: times from entry ids and back, and the check that a file
is whole before it is replayed."""

from __future__ import annotations

import os
import struct
from typing import IO

from mcap.exceptions import McapError
from mcap.stream_reader import StreamReader

__all__ = ["MAGIC", "RecordingError", "entry_id_of", "find_break", "stamp_of"]

MAGIC = b"\x89MCAP0\r\n"
_FOOTER_BYTES = 1 + 8 + 8 + 8 + 4  # opcode, length, summary start, summary offsets, crc
_NS_PER_MS = 1_000_000


class RecordingError(Exception):
    """A recording or replay that cannot go on; the message says why, in one line."""


def stamp_of(ms: int, seq: int) -> int:
    """An entry id's time in nanoseconds: ``ms * 1e6 + seq``, the sequence capped at
    999,999 (the exact sequence is kept in the message's ``sequence``)."""
    return ms * _NS_PER_MS + min(seq, _NS_PER_MS - 1)


def entry_id_of(log_time: int, sequence: int) -> str:
    """The entry id a message was recorded from."""
    return f"{log_time // _NS_PER_MS}-{sequence}"


def _whole_records_end(f: IO[bytes]) -> int:
    """The byte offset where the last record that reads whole ends."""
    f.seek(0)
    end = 0
    try:
        for _record in StreamReader(f, validate_crcs=True).records:
            end = f.tell()
    except (McapError, ValueError, struct.error, EOFError):
        pass
    return end


def find_break(path: str | os.PathLike[str]) -> int | None:
    """None when `path` is a whole MCAP file (starts and ends with the magic, a footer
    before it), else the byte offset where it breaks (the end of its last whole record)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < 2 * len(MAGIC) + _FOOTER_BYTES:
            return _whole_records_end(f) if size >= len(MAGIC) else 0
        f.seek(0)
        head = f.read(len(MAGIC))
        f.seek(size - len(MAGIC))
        tail = f.read(len(MAGIC))
        f.seek(size - len(MAGIC) - _FOOTER_BYTES)
        opcode = f.read(1)
        if head == MAGIC and tail == MAGIC and opcode == b"\x02":
            return None
        return _whole_records_end(f) if head == MAGIC else 0
