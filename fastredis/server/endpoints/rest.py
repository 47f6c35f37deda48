"""REST: GET /data/{sid} reads one batch, POST /data/{sid} adds entries.

GET answers the payloads back to back (application/octet-stream) with the pull
header in the ``entry-offset`` response header (``[[sid, id, start], ...]``) and the
cursors in ``last-entry-id`` (pass it back as ``last_entry_id`` to read on). One answer
holds at most ``--max-read-bytes`` of entries (about): when it was cut short, the
``more-entries: 1`` header says more are likely there. Query:
``last_entry_id`` (default ``*``: the newest ``count`` entries; ``$``, ``0``, an id, or
one per stream joined by '+'), ``count`` (1), ``latest``, ``block`` (ms; default: do
not wait), ``offsets`` (``end``: end offsets, also under the names ``x-offsets`` and
``x-last-entry-id`` that the Redis Streamer protocol's deployed clients read).

POST takes multipart/form-data, every part one entry (its field name does not
matter), or any other body as a single entry. Each entry goes to every stream of the
path; all are written atomically; the answer is the JSON list of the new ids.
Errors are 4xx (503 when Redis is unreachable) with a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Coroutine, Iterator
from typing import Any, TypeVar

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastredis.server.edge.protocol import (
    BadInput,
    PushOptions,
    ReadOptions,
    end_offsets,
    parse_query,
    query_items,
)
from fastredis.server.endpoints.answering import answer

__all__ = ["get_data", "post_data"]

log = logging.getLogger("fastredis.server")

T = TypeVar("T")

SLICE_BYTES = 1 << 20  # a GET's answer is sent in slices of this many bytes
DRAIN_SECONDS = 30.0  # a refused POST's body is read (and dropped) this long at most


async def get_data(request: Request) -> Response:
    return await answer(request, "read", lambda sids: _get(request, sids))


async def _get(request: Request, sids: list[str]) -> Response:
    opts = parse_query(
        "get", query_items(request.query_params), len(sids),
        default_offsets=request.app.state.settings.offsets,
    )  # fmt: skip
    assert isinstance(opts, ReadOptions)
    hub = request.app.state.hub
    sub = hub.subscribe(
        sids, opts.last_entry_ids, count=opts.count, latest=opts.latest, read_ahead=False,
        via="rest",
    )  # fmt: skip
    give_back = _nothing
    try:
        async with sub:
            if opts.block is None:
                # a read of its own, held until sent: GETs take turns by bytes
                give_back = await hub.answers.take(hub.sizes.estimate(sids, opts.count))
                delivery = await sub.next(timeout=0)
            else:
                wait = opts.block / 1000 if opts.block else None
                delivery = await _unless_gone(request, sub.next(timeout=wait))
    except ClientGone:
        return Response(status_code=499)  # nobody reads it; the read is released
    except BaseException:
        give_back()
        raise
    more = False
    cursor = sub.last_entry_id()
    views: list[memoryview] = []
    if delivery is None or not len(delivery.batch):
        header = "[]"
    else:
        header, views, ids, more = delivery.first(opts.count)
        delivery.sent("rest", header.count("],[") + 1)
        cursor = "+".join(ids[s] for s in sids)
    if not header.isascii():  # HTTP header values are latin-1: escape the rest
        header = json.dumps(json.loads(header))
    if opts.end_offsets:
        header = end_offsets(header, sum(v.nbytes for v in views))
    headers = {"entry-offset": header, "last-entry-id": cursor}
    if opts.end_offsets:  # and the names the Redis Streamer protocol's clients read
        headers |= {"x-offsets": header, "x-last-entry-id": cursor}
    if more:  # cut by --max-read-bytes (or count): read on from last-entry-id
        headers["more-entries"] = "1"
    return _Answer(views, headers, give_back)


def _nothing() -> None:
    pass


class _Answer(Response):
    """A GET's answer: the payloads sent as they are in the batch, in slices of about
    `SLICE_BYTES` (never packed whole), and `done` called once sent or abandoned."""

    media_type = "application/octet-stream"

    def __init__(self, views: list[memoryview], headers: dict[str, str], done: Any) -> None:
        self.views = views
        self.done = done
        super().__init__(b"", headers=headers)
        self.headers["content-length"] = str(sum(v.nbytes for v in views))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            for body in _slices(self.views):
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.views = []
            self.done()


def _slices(views: list[memoryview]) -> Iterator[Any]:
    """`views` as bodies of about SLICE_BYTES (small ones joined, large ones cut)."""
    group: list[memoryview] = []
    size = 0
    for view in views:
        while view.nbytes:
            take = view[: SLICE_BYTES - size]
            group.append(take)
            size += take.nbytes
            view = view[take.nbytes :]
            if size >= SLICE_BYTES:
                yield group[0] if len(group) == 1 else b"".join(group)
                group, size = [], 0
    if group:
        yield group[0] if len(group) == 1 else b"".join(group)


class ClientGone(Exception):
    """The HTTP client disconnected while its request waited."""


async def _unless_gone(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """`work`'s result, or ClientGone as soon as the client disconnects (the work is
    cancelled: a blocking GET holds nothing once its client has left)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    task, watcher = loop.create_task(work), loop.create_task(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:
        for t in (task, watcher):
            t.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if not finished:
        raise ClientGone
    return task.result()


async def _limited(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadInput(f"request body is over the limit of {limit} bytes", status=413)
        yield chunk
    request.state.body_read = True


async def _drain(request: Request) -> None:
    """Read and discard the rest of a refused request's body (for `DRAIN_SECONDS` at
    most) before answering: a server that answers and closes while the client is still
    sending makes the kernel reset the connection, and the client gets a broken pipe
    instead of the answer (with ``Connection: close``, as urllib sends). A client that
    waits for ``100 Continue`` has sent nothing: it is answered at once."""
    if getattr(request.state, "body_read", False):
        return
    if not getattr(request.state, "body_started", False) and (
        request.headers.get("expect", "").lower() == "100-continue"
    ):
        return

    async def rest() -> None:
        while True:
            message = await request.receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    with contextlib.suppress(TimeoutError, asyncio.TimeoutError, OSError):
        await asyncio.wait_for(rest(), DRAIN_SECONDS)


async def _entries(request: Request, limit: int, max_parts: int) -> list[bytes]:
    length = request.headers.get("content-length")
    request.state.body_started = False
    if length is not None and length.isdigit() and int(length) > limit:
        raise BadInput(f"request body of {length} bytes is over the limit of {limit}", status=413)
    content_type = request.headers.get("content-type", "")
    request.state.body_started = True
    if not content_type.startswith("multipart/form-data"):
        return [b"".join([chunk async for chunk in _limited(request, limit)])]
    parser = MultiPartParser(
        request.headers, _limited(request, limit), max_files=max_parts, max_fields=max_parts
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadInput(f"bad multipart body: {exc.message}", status=400) from None
    try:
        data = []
        for _name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data.append(await value.read())
            else:
                data.append(value.encode())
    finally:
        await form.close()
    if not data:
        raise BadInput("multipart body has no parts: nothing to add", status=400)
    return data


async def post_data(request: Request) -> Response:
    return await answer(
        request, "write", lambda sids: _post(request, sids), lambda: _drain(request)
    )


async def _post(request: Request, sids: list[str]) -> Response:
    settings = request.app.state.settings
    opts = parse_query("post", query_items(request.query_params), len(sids))
    assert isinstance(opts, PushOptions)
    max_entries = settings.max_entries_per_message
    data = await _entries(request, settings.max_message_size, max_entries // len(sids))
    if len(data) * len(sids) > max_entries:
        raise BadInput(
            f"{len(data)} parts to {len(sids)} streams make {len(data) * len(sids)} "
            f"entries, over the limit of {max_entries} (max_entries_per_message)",
            status=413,
        )
    entries = [(sid, "*", payload) for payload in data for sid in sids]
    return JSONResponse(await request.app.state.writers.add(entries))
