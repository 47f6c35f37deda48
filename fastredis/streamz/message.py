"""Message: the (stream, id, data) 3-tuple the streamz sources emit (needs no streamz)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from operator import itemgetter
from typing import Any

from fastredis.ids import parse_id

__all__ = ["Message", "messages_from", "parse_id"]


class Message(tuple):
    """One stream entry as a 3-tuple ``(stream, id, data)``.

    A plain tuple for unpacking and equality (``Message("s", "1-0", {}) == ("s", "1-0", {})``),
    with names for the parts and ``.copy()``, which copies ``data`` so the caller can change it
    without touching the message other branches of a pipeline see.
    """

    __slots__ = ()

    def __new__(cls, stream: Any, id: Any, data: Any) -> Message:
        return tuple.__new__(cls, (stream, id, data))

    stream = property(itemgetter(0), doc="stream name (str, or bytes with convert=False)")
    id = property(itemgetter(1), doc="entry id, e.g. '1700000000000-0'")
    data = property(itemgetter(2), doc="the entry's fields as a dict")

    def copy(self) -> Message:
        """A new Message with a shallow copy of ``data``."""
        data = self[2]
        return tuple.__new__(Message, (self[0], self[1], dict(data) if data is not None else None))

    def __repr__(self) -> str:
        return f"Message(stream={self[0]!r}, id={self[1]!r}, data={self[2]!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Message, tuple(self))


_as_message = partial(tuple.__new__, Message)


def messages_from(entries: Iterable[tuple[Any, Any, Any]]) -> list[Message]:
    """Wrap (stream, id, data) tuples, e.g. ``StreamBatch.to_messages()``, as Messages."""
    return list(map(_as_message, entries))
