"""``GET /sse/{sid}``: a stream's entries as Server-Sent Events (``text/event-stream``),
for browsers' ``EventSource``; several streams are joined with '+' as on the pull.

* Each entry is one event. Its ``id:`` is where a reader stands after it: the entry id
  for one stream; for several, the '+'-joined cursor of every stream (``a+b`` gives
  ``1-0+5-0``), so resuming from it resumes every stream at once.
* ``data:`` is the payload as UTF-8 text (``data=text``, the default; line breaks
  arrive as LF, as SSE says), or base64 (``data=base64``). In text mode an entry that
  is not UTF-8 is sent base64 and its event named ``binary`` (so nothing is mangled).
* The event name is ``message`` (``onmessage``) for one stream; with several, the
  stream id (``addEventListener(sid, ...)``), and ``SID:binary`` for base64 in text mode.
* Where it starts: ``Last-Event-ID`` (sent by a reconnecting EventSource), else
  ``?lastEventID=``, else ``?last_entry_id=`` (as the pull), else ``$``; fixed before
  the response headers go. The delivery contract's checks
  (`fastredis.server.reads.resume`, through the hub, as a pull with ``resume=1``): when
  entries after a resumed id may be gone, a ``resume`` event (the pull's resume
  object, ``recovered`` false) comes first; a ``gap`` event (the pull's gap object)
  comes before the entries that follow a loss, at the start or while the viewer
  reads (it fell behind a trim, the stream was made anew). Neither has an ``id:``.
* A comment every `PING_S` seconds keeps proxies from closing an idle stream.
* On SIGTERM the stream ends within the drain window (`fastredis.server.edge.drain`),
  after a ``retry:`` field holding the hint: EventSource comes back then, with
  ``Last-Event-ID``.
* ``latest=1`` sends only the newest entry each time the viewer is ready for one;
  ``max_fps`` caps the events a second (each the newest: entries between are skipped).
  Every viewer reads through the hub's shared read, the one the pulls of the same
  streams use (`fastredis.server.reads.newest`): no XREAD per viewer or per kind.

sse-starlette does the response: keep-alive comments, the client leaving, shutdown.
The events themselves are encoded here, once per entry for all viewers (`EventCache`).
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from fastredis._frames import pull_views
from fastredis.ids import parse_id
from fastredis.server.edge.drain import retry_ms
from fastredis.server.edge.protocol import (
    SSEOptions,
    parse_sse_query,
    query_items,
)
from fastredis.server.endpoints.answering import answer, refuse_other_types
from fastredis.server.reads.hub import Delivery, Subscription
from fastredis.server.reads.newest import Newest

__all__ = ["PING_S", "EventCache", "sse_endpoint"]

PING_S = 15.0  # a comment this often keeps proxies from closing an idle stream
CACHE_EVENTS = 64  # encoded events kept for other viewers of the same entries
CACHE_BYTES = 32 << 20


class EventCache:
    """The last few encoded events, so N viewers of an entry encode it once."""

    def __init__(self, events: int = CACHE_EVENTS, nbytes: int = CACHE_BYTES) -> None:
        self._events: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._limit, self._limit_bytes, self._bytes = events, nbytes, 0

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        return self._events.get(key)

    def put(self, key: tuple[Any, ...], event: bytes) -> None:
        if key in self._events:
            return
        self._events[key] = event
        self._bytes += len(event)
        while len(self._events) > self._limit or self._bytes > self._limit_bytes:
            self._bytes -= len(self._events.popitem(last=False)[1])


def _encode(payload: Any, as_base64: bool, name: str | None, event_id: str) -> bytes:
    data: str | None = None
    if not as_base64:
        try:
            data = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            name = "binary" if name is None else f"{name}:binary"
    if data is None:
        data = base64.b64encode(payload).decode("ascii")
    return ServerSentEvent(data, event=name, id=event_id).encode()


def delivery_events(
    delivery: Delivery,
    sids: Sequence[str],
    before: dict[str, str],
    opts: SSEOptions,
    cache: EventCache,
    newest: bool = False,
) -> list[bytes]:
    """The events of one delivery (one per entry; `newest`: its last entry only);
    `before` (the cursor ahead of it) is moved along. With several streams an event's
    id is the whole cursor after it."""
    batch = delivery.batch
    several = len(sids) > 1
    names = batch.streams if several else ()
    streams = batch.offsets()["entry_stream"] if several else None
    out = []
    pairs = list(enumerate(zip(batch.ids(), pull_views(batch), strict=True)))
    for i, (eid, view) in pairs[-1:] if newest else pairs:
        entry_id = eid.decode() if isinstance(eid, bytes) else str(eid)
        sid = sids[0]
        if streams is not None:
            raw = names[int(streams[i])]
            sid = raw.decode() if isinstance(raw, bytes) else str(raw)
        if parse_id(entry_id) <= parse_id(before[sid]):
            continue  # at or before where the viewer stands (a skipping start)
        before[sid] = entry_id
        event_id = "+".join(before[s] for s in sids) if several else entry_id
        key = (sid, entry_id, event_id, opts.base64)
        event = cache.get(key)
        if event is None:
            event = _encode(view, opts.base64, sid if several else None, event_id)
            cache.put(key, event)
        out.append(event)
    return out


class Drained(Exception):
    """The server drains (SIGTERM): the viewer's stream ends, with this reason."""


def _resumes(starts: Sequence[str]) -> bool:
    """Whether a viewer resumes: it starts after an entry id it was given."""
    return any(start not in ("$", "*", "0") for start in starts)


def _event(name: str, detail: dict[str, Any]) -> bytes:
    """A named event of notes (no id: where the viewer stands does not move)."""
    return ServerSentEvent(json.dumps(detail, separators=(",", ":")), event=name).encode()


Source = Subscription | Newest


async def _events(
    request: Request, sids: list[str], opts: SSEOptions, source: Source
) -> AsyncIterator[bytes]:
    """The events of an open viewer; its subscription is entered (its start fixed)."""
    asked = opts.last_entry_ids
    skipping = isinstance(source, Newest)
    sub = source.sub if isinstance(source, Newest) else source
    cache: EventCache = request.app.state.sse_events
    unregister = request.app.state.drain.register(lambda why: sub.fail(Drained(why)))
    try:
        resumed = sub.resumed
        if resumed is not None and _resumes(asked) and not resumed.recovered:
            yield _event("resume", resumed.as_dict())  # something after the id may be gone
        if isinstance(source, Newest):
            source.start()
        before = {
            sid: sub.cursor.ids[sid] if a in ("$", "*") else ("0-0" if a == "0" else a)
            for sid, a in zip(sids, asked, strict=True)
        }
        while True:
            try:
                delivery = await source.next()
            except Drained as drained:  # SIGTERM: come back after the hint, resuming
                why = str(drained)
                yield ServerSentEvent(comment=why, retry=retry_ms(why)).encode()
                return
            if delivery is None:
                continue
            for gap in delivery.gaps if sub.resume else ():  # before what follows it
                yield _event("gap", gap.as_dict())
            if not len(delivery.batch):
                continue
            delivery.sent("sse")
            newest = skipping and len(sids) == 1  # one stream: its newest entry only
            for event in delivery_events(delivery, sids, before, opts, cache, newest):
                yield event
    finally:
        unregister()
        await source.__aexit__(None, None, None)


async def sse_endpoint(request: Request) -> Response:
    """GET /sse/{sid}?data=text|base64&latest=&max_fps=&lastEventID="""
    return await answer(request, "read", lambda sids: _sse(request, sids))


async def _sse(request: Request, sids: list[str]) -> Response:
    opts = parse_sse_query(
        query_items(request.query_params), len(sids), request.headers.get("last-event-id")
    )
    await refuse_other_types(request.app.state.redis, sids)
    source = _subscribe(request, sids, opts)
    sub = source.sub if isinstance(source, Newest) else source
    await sub.__aenter__()  # the start is fixed (and checked) before the headers go
    return EventSourceResponse(
        _events(request, sids, opts, source), ping=PING_S, background=BackgroundTask(_leave, source)
    )


def _subscribe(request: Request, sids: list[str], opts: SSEOptions) -> Source:
    """The viewer's read of the hub (not entered). Every viewer resumes
    (`fastredis.server.reads.resume`: gaps are found at its start and while it reads)
    but one that skips entries (latest, max_fps): it starts at the newest, and rides
    the ordinary group of the streams (the one other viewers read) through `Newest`."""
    skipping = opts.latest or bool(opts.max_fps)
    # skipping starts at the newest entry (what is older than the asked id is dropped)
    starts = [s if s == "$" or not skipping else "*" for s in opts.last_entry_ids]
    sub = request.app.state.hub.subscribe(sids, starts, count=1, via="sse", resume=not skipping)
    return Newest(sub, opts.max_fps or None, "sse") if skipping else sub


async def _leave(source: Source) -> None:
    """The read ends with the response, even one whose events never began."""
    await source.__aexit__(None, None, None)
