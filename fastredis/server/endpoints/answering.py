"""The preamble every HTTP face shares: the streams named in the path, the caller's
access to them, and one answer for each way a request can fail (a `BadInput` as its
status and reason, a Redis error through the error table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from fastredis.redis_io import AnyAsyncRedis
from fastredis.server.edge.auth import require_read, require_write
from fastredis.server.edge.errors import explain, failure
from fastredis.server.edge.protocol import BadInput, parse_sids

__all__ = ["answer", "refuse_other_types"]

Access = Literal["read", "write"]
R = TypeVar("R")  # a Response, or an ASGI app that answers by streaming


async def answer(
    request: Request,
    access: Access,
    handle: Callable[[list[str]], Awaitable[R]],
    refused: Callable[[], Awaitable[None]] | None = None,
) -> R | Response:
    """`handle(sids)` for the streams of the path once the caller may `access` them;
    a refusal or a Redis failure becomes its answer. `refused` runs before a refusal
    is answered (a POST reads the rest of its body, so the client reads the answer)."""
    sids: list[str] = []
    try:
        sids = parse_sids(request.path_params["sid"])
        (require_read if access == "read" else require_write)(request, sids)
        return await handle(sids)
    except BadInput as exc:
        if refused is not None:
            await refused()
        return failure(exc).response()
    except RedisError as exc:
        return (await explain(exc, request.app.state.redis, sids)).response()


async def refuse_other_types(redis: AnyAsyncRedis, sids: Sequence[str]) -> None:
    """Raise 409 for a key of another type, before an answer that streams begins (a
    stream that does not exist yet is fine: it is waited for)."""
    async with redis.pipeline(transaction=False) as pipe:
        for sid in sids:
            pipe.type(sid)
        kinds = await pipe.execute()
    for sid, kind in zip(sids, kinds, strict=True):
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        if name not in ("stream", "none"):
            raise BadInput(f"{sid!r} holds a {name}, not a stream", status=409)
