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

    ``deliveries``: how many times Redis has delivered the entry to a consumer of its group,
    this delivery included (1 the first time; from XPENDING for entries replayed, retried or
    claimed). Not part of the tuple, so equality ignores it; it survives copy() and pickling.
    """

    # No __slots__: the few Messages delivered more than once carry `deliveries` in their
    # own __dict__ (made only then); all others read the class default.
    deliveries = 1

    def __new__(cls, stream: Any, id: Any, data: Any) -> Message:
        return tuple.__new__(cls, (stream, id, data))

    stream = property(itemgetter(0), doc="stream name (str, or bytes with convert=False)")
    id = property(itemgetter(1), doc="entry id, e.g. '1700000000000-0'")
    data = property(itemgetter(2), doc="the entry's fields as a dict")

    def copy(self) -> Message:
        """A new Message with a shallow copy of ``data``."""
        data = self[2]
        m = tuple.__new__(Message, (self[0], self[1], dict(data) if data is not None else None))
        if self.__dict__:
            m.__dict__.update(self.__dict__)
        return m

    def __repr__(self) -> str:
        more = f", deliveries={self.deliveries}" if self.deliveries != 1 else ""
        return f"Message(stream={self[0]!r}, id={self[1]!r}, data={self[2]!r}{more})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Message, tuple(self), self.__dict__ or None)


_as_message = partial(tuple.__new__, Message)


def messages_from(entries: Iterable[tuple[Any, Any, Any]]) -> list[Message]:
    """Wrap (stream, id, data) tuples, e.g. ``StreamBatch.to_messages()``, as Messages."""
    return list(map(_as_message, entries))
