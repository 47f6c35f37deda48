"""What a read's StreamBatch holds, as Messages or as entry ids per stream."""

from __future__ import annotations

import gc
from operator import itemgetter
from typing import Any

from fastredis.streamz.message import Message, messages_from

_stream_of = itemgetter(0)
_id_of = itemgetter(1)


def batch_messages(batch: Any, stream: Any = None) -> list[Message]:
    """The entries of a batch as Messages (`stream` for claim replies, which name none).

    The cyclic GC is paused meanwhile: tens of thousands of new dicts and tuples (which
    cannot form cycles) would otherwise set off collections that walk them all for nothing.
    No user code runs in between.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        if stream is None:
            return messages_from(batch.to_messages())
        return [Message(stream, entry_id, data) for _, entry_id, data in batch.to_messages()]
    finally:
        if paused:
            gc.enable()


def ids_by_stream(batch: Any) -> dict[Any, list[Any]]:
    """The entry ids of a batch (a StreamBatch of a read) per stream."""
    ids = batch.ids()
    names = batch.streams
    if len(names) == 1:
        return {names[0]: ids}
    out: dict[Any, list[Any]] = {}
    for k, entry_id in zip(batch.offsets()["entry_stream"].tolist(), ids, strict=True):
        out.setdefault(names[k], []).append(entry_id)
    return out


def message_ids(msgs: list[Any]) -> dict[Any, list[Any]]:
    """The ids of a list of Messages (or (stream, id, ...) tuples) per stream."""
    if not msgs:
        return {}
    if len(set(map(_stream_of, msgs))) == 1:  # the usual case, at C speed
        return {msgs[0][0]: list(map(_id_of, msgs))}
    out: dict[Any, list[Any]] = {}
    for m in msgs:
        try:
            out[m[0]].append(m[1])
        except KeyError:
            out[m[0]] = [m[1]]
    return out
