"""A batch read once for every subscriber that wants it, and the frames each one sends.

A `Delivery` holds one batch and where a subscriber is after it. Subscribers that
differ only in ``count`` share the read: ``count`` shapes the frames a subscriber sends
(at most ``count`` entries per stream each, `Delivery.frames`), not what Redis is asked
for. The frame of the whole batch, and the frames of one entry each, are packed once
and shared; frames of other sizes are packed for the subscriber that sends them and
dropped once sent (they copy payloads; a shared copy per distinct count would hold as
many copies of the batch as there are counts).
"""

from __future__ import annotations

from typing import Any

from fastredis._frames import json_string, pull_header, pull_payload, pull_views
from fastredis._resp import StreamBatch
from fastredis.ids import format_id
from fastredis.server.reads.resume import Gap
from fastredis.server.run import metrics

__all__ = ["VIEW_ENTRY_BYTES", "Delivery", "Frame", "Ids", "Views", "nbytes"]

Frame = tuple[str | None, list[Any]]  # (header text or None, binary messages)
Ids = dict[str, str]
# Entries this large on average are sent as views into the batch (one binary message
# of several buffers) when the socket can take that: no copy of the batch is made, per
# subscriber or shared. Smaller ones are packed once and shared.
VIEW_ENTRY_BYTES = 64 * 1024


class Views(list[Any]):
    """One binary message's payload given as several buffers (views into the batch)."""


def nbytes(payload: Any) -> int:
    """The size of one binary message's payload (a buffer, or `Views`)."""
    if isinstance(payload, Views):
        return sum(memoryview(v).nbytes for v in payload)
    return memoryview(payload).nbytes


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


class Delivery:
    """One batch for subscribers: shared by all of them, never mutated. `cursor` is where
    a subscriber is after it (one id per stream); `before` the cursor it follows; a
    group's deliveries also have `seq` (its place in the group) and `start` (the bytes
    the group published before it). `gaps`: what was lost between `before` and the batch
    (found only for readers that resume); `cut`: the read was cut short by its byte
    bound (more entries are likely there)."""

    __slots__ = (
        "_chunks", "_frame", "_payload_bytes", "_singles", "batch", "before", "cursor", "cut",
        "gaps", "seq", "start",
    )  # fmt: skip

    def __init__(
        self,
        batch: StreamBatch,
        cursor: Ids,
        before: Ids | None = None,
        seq: int = -1,
        start: int = 0,
    ) -> None:
        self.batch = batch
        self.cursor = cursor
        self.before = before
        self.seq = seq
        self.start = start
        self.gaps: list[Gap] = []
        self.cut = False
        self._frame: tuple[str, Any] | None = None
        self._singles: list[Frame] | None = None
        self._chunks: list[list[int]] | None = None
        self._payload_bytes = -1

    def sent(self, via: str, entries: int | None = None) -> None:
        """Count the delivery (or `entries` of it) as sent to one client over `via` (the
        metrics); its payload size is summed once, not per client."""
        if self._payload_bytes < 0:
            self._payload_bytes = metrics.payload_bytes(self.batch)
        n = len(self.batch)
        if entries is None or entries == n:
            metrics.pulled(via, n, self._payload_bytes)
        else:
            metrics.pulled(via, entries, self._payload_bytes * entries // max(1, n))

    def frame(self) -> tuple[str, Any]:
        """(header text, payload) of the whole batch as one pull frame, packed once."""
        if self._frame is None:
            batch = self.batch
            # One entry: a view into the batch instead of a copy (~0.5 ms per MB).
            payload = pull_views(batch)[0] if len(batch) == 1 else pull_payload(batch)
            self._frame = (pull_header(batch).decode(), payload)
        return self._frame

    def chunks(self, count: int) -> list[list[int]]:
        """The entries (indexes) of each frame of at most `count` entries per stream."""
        n = len(self.batch)
        streams = self.batch.streams
        if len(streams) <= 1:
            return [list(range(i, min(i + count, n))) for i in range(0, n, count)]
        ranks: dict[int, int] = {}
        out: list[list[int]] = []
        for i, stream in enumerate(self.batch.offsets()["entry_stream"].tolist()):
            rank = ranks[stream] = ranks.get(stream, -1) + 1
            j = rank // count
            if j == len(out):
                out.append([])
            out[j].append(i)
        return out

    def frames(self, count: int, header: bool = True, views: bool = False) -> list[Frame]:
        """What a pull of `count` sends of this batch: frames of at most `count` entries
        per stream; with `header` False, their payloads alone, one binary message per
        entry (views into the batch). `views`: the socket takes a message as `Views`,
        used for large entries instead of a packed copy."""
        batch = self.batch
        n = len(batch)
        if not n:
            return []
        one_stream = len(batch.streams) <= 1
        if count == 1 and one_stream and n > 1:
            return self._one_each(header)
        chunks = [list(range(n))] if count >= n else self.chunks(count)
        as_views = views and n > 1 and batch.nbytes >= VIEW_ENTRY_BYTES * n
        if len(chunks) == 1:
            if not header:
                return [(None, pull_views(batch))]
            if as_views:
                return [(pull_header(batch).decode(), [Views(pull_views(batch))])]
            text, payload = self.frame()
            return [(text, [payload])]
        every = pull_views(batch)
        if not header:
            return [(None, [every[i] for i in chunk]) for chunk in chunks]
        if as_views:
            return [
                (self._header(chunk, every), [Views(every[i] for i in chunk)]) for chunk in chunks
            ]
        return [self._packed(chunk, every) for chunk in chunks]

    def _one_each(self, header: bool) -> list[Frame]:
        """One frame per entry of a one-stream batch (shared: views, no copies)."""
        views = pull_views(self.batch)
        if not header:
            return [(None, [view]) for view in views]
        if self._singles is None:
            sid = json_string(self.batch.streams[0]).decode()
            self._singles = [
                (f'[[{sid},"{_text(eid)}",0]]', [view])
                for eid, view in zip(self.batch.ids(), views, strict=True)
            ]
        return self._singles

    def _packed(self, chunk: list[int], views: list[memoryview]) -> tuple[str, list[Any]]:
        text = self._header(chunk, views)
        payload: Any = views[chunk[0]] if len(chunk) == 1 else b"".join(views[i] for i in chunk)
        return text, [payload]

    def _header(self, chunk: list[int], views: list[memoryview]) -> str:
        """The pull header of the entries `chunk` (start offsets from 0)."""
        batch = self.batch
        names = [json_string(name).decode() for name in batch.streams]
        which = batch.offsets()["entry_stream"].tolist() if len(names) > 1 else None
        parts, start = [], 0
        for i in chunk:
            sid = names[which[i]] if which is not None else names[0]
            parts.append(f'[{sid},"{format_id(*batch.id_at(i))}",{start}]')
            start += views[i].nbytes
        return "[" + ",".join(parts) + "]"

    def first(self, count: int) -> tuple[str, list[memoryview], Ids, bool]:
        """A REST GET's answer: the header and payloads (views, not copied) of the first
        frame of at most `count` entries per stream, the cursor after it, and whether
        more entries are likely there (the batch holds more, or its read was cut by
        bytes)."""
        batch = self.batch
        views = pull_views(batch)
        chunks = self.chunks(count)
        if len(chunks) == 1:
            return pull_header(batch).decode(), views, self.cursor, self.cut
        chunk = chunks[0]
        cursor = dict(self.before or self.cursor)
        names = [_text(name) for name in batch.streams]
        which = batch.offsets()["entry_stream"].tolist() if len(names) > 1 else None
        for i in chunk:
            cursor[names[which[i]] if which is not None else names[0]] = format_id(*batch.id_at(i))
        return self._header(chunk, views), [views[i] for i in chunk], cursor, True
