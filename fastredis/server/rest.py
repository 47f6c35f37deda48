"""REST: GET /data/{sid} reads one batch, POST /data/{sid} adds entries.

GET answers the payloads back to back (application/octet-stream) with the pull
header in the ``entry-offset`` response header (``[[sid, id, start], ...]``) and the
cursors in ``last-entry-id`` (pass it back as ``last_entry_id`` to read on). Query:
``last_entry_id`` (default ``*``: the newest ``count`` entries; ``$``, ``0``, an id, or
one per stream joined by '+'), ``count`` (1), ``latest``, ``block`` (ms; default: do
not wait).

POST takes multipart/form-data, every part one entry (its field name does not
matter), or any other body as a single entry. Each entry goes to every stream of the
path; all are written atomically; the answer is the JSON list of the new ids.
Errors are 4xx (503 when Redis is unreachable) with a JSON ``{"error": ...}`` body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastredis._frames import pull_header, pull_payload
from fastredis.server import metrics
from fastredis.server.auth import require_read, require_write
from fastredis.server.errors import explain, failure
from fastredis.server.protocol import (
    BadInput,
    PushOptions,
    ReadOptions,
    parse_query,
    parse_sids,
    query_items,
)
from fastredis.server.reading import StreamCursor
from fastredis.server.writing import add_entries

__all__ = ["get_data", "post_data"]

log = logging.getLogger("fastredis.server")


async def get_data(request: Request) -> Response:
    sids: list[str] = []
    try:
        sids = parse_sids(request.path_params["sid"])
        require_read(request, sids)
        opts = parse_query("get", query_items(request.query_params), len(sids))
        assert isinstance(opts, ReadOptions)
        cursor = StreamCursor(
            request.app.state.redis, sids, opts.last_entry_ids, opts.count, opts.latest
        )
        try:
            await cursor.resolve()
            batch = await cursor.read(opts.block)
        finally:
            await cursor.close()
    except BadInput as exc:
        return failure(exc).response()
    except RedisError as exc:
        return (await explain(exc, request.app.state.redis, sids)).response()
    metrics.pulled("rest", batch)
    header = pull_header(batch)
    if not header.isascii():  # HTTP header values are latin-1: escape the rest
        header = json.dumps(json.loads(header)).encode()
    return Response(
        pull_payload(batch),
        media_type="application/octet-stream",
        headers={"entry-offset": header.decode(), "last-entry-id": cursor.last_entry_id()},
    )


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadInput(f"request body is over the limit of {limit} bytes", status=413)
        yield chunk


async def _entries(request: Request, limit: int, max_parts: int) -> list[bytes]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BadInput(f"request body of {length} bytes is over the limit of {limit}", status=413)
    content_type = request.headers.get("content-type", "")
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
    settings = request.app.state.settings
    sids: list[str] = []
    try:
        sids = parse_sids(request.path_params["sid"])
        require_write(request, sids)
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
        ids = await add_entries(request.app.state.redis, entries, settings.maxlen)
    except BadInput as exc:
        return failure(exc).response()
    except RedisError as exc:
        return (await explain(exc, request.app.state.redis, sids)).response()
    return JSONResponse(ids)
