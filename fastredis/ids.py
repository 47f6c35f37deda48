"""Stream entry ids: the one grammar the whole package parses them with.

An entry id is ``MS-SEQ`` (or ``MS``, sequence 0): two unsigned decimal integers below
2**64, ASCII digits only, as Redis itself accepts them. Ids are compared as numbers, never
as strings ('5-9' sorts after '5-10' as text). Adding entries also allows ``*`` (Redis
picks the id) and ``MS-*`` (Redis picks the sequence).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

__all__ = [
    "MAX_PART",
    "EntryId",
    "format_id",
    "id_datetime",
    "id_ms",
    "is_entry_id",
    "parse_add_id",
    "parse_id",
    "previous_id",
]

MAX_PART = 2**64 - 1
EntryId = tuple[int, int]

_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_ADD_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}|\*))?")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _text(entry_id: object) -> str:
    if isinstance(entry_id, bytes):
        return entry_id.decode("ascii", "replace")
    if not isinstance(entry_id, str):
        raise TypeError(f"an entry id is a str, not {type(entry_id).__name__}")
    return entry_id


def _part(digits: str, entry_id: str) -> int:
    value = int(digits)
    if value > MAX_PART:
        raise ValueError(f"{entry_id!r} is not a stream entry id: its parts must be < 2**64")
    return value


def parse_id(entry_id: str | bytes) -> EntryId:
    """``'MS-SEQ'`` or ``'MS'`` as ``(ms, seq)``; anything else raises ValueError."""
    text = _text(entry_id)
    m = _ID.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a stream entry id (MS-SEQ, e.g. '1700000000000-0')")
    seq = m.group(2)
    return _part(m.group(1), text), _part(seq, text) if seq is not None else 0


def parse_add_id(entry_id: str | bytes) -> tuple[int, int | None] | None:
    """An id for adding an entry: ``None`` for ``'*'``, ``(ms, None)`` for ``'MS-*'``,
    else as :func:`parse_id`."""
    text = _text(entry_id)
    if text == "*":
        return None
    m = _ADD_ID.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a stream entry id (MS-SEQ, MS-* or *)")
    seq = m.group(2)
    ms = _part(m.group(1), text)
    if seq == "*":
        return ms, None
    return ms, _part(seq, text) if seq is not None else 0


def is_entry_id(entry_id: object) -> bool:
    """Whether `entry_id` is a str or bytes that :func:`parse_id` accepts."""
    try:
        parse_id(entry_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def format_id(ms: int, seq: int) -> str:
    """``(ms, seq)`` as ``'MS-SEQ'``."""
    return f"{ms}-{seq}"


def previous_id(ms: int, seq: int) -> str:
    """The greatest id below ``ms-seq``: a read *after* it starts *at* ``ms-seq``."""
    if seq > 0:
        return format_id(ms, seq - 1)
    if ms > 0:
        return format_id(ms - 1, MAX_PART)
    return "0-0"


def id_ms(entry_id: str | bytes) -> int:
    """The milliseconds part of an entry id (Unix time when Redis generated it)."""
    return parse_id(entry_id)[0]


def id_datetime(entry_id: str | bytes) -> datetime:
    """The time in an entry id, as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=id_ms(entry_id))
