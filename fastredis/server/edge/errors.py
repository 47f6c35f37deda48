"""The one table from a failure to what each face answers with.

Every endpoint (websocket push and pull, REST, GraphQL) turns an exception into a
`Failure` here: a websocket close code, an HTTP status, and one message in the
user's terms that serves as the close reason, the JSON ``{"error": ...}`` body and
the GraphQL error message. Redis's own wording (``WRONGTYPE Operation against a key
holding the wrong kind of value``, a Lua script's ``script: <sha>, on
@user_script:5.``, redis-py's pipeline internals) never reaches a client.

=========================  =====  ====  =============================================
failure                    close  HTTP  message
=========================  =====  ====  =============================================
bad input (`BadInput`)     its    its   its reason
key of another type        1008   409   stream 'x' holds a string, not a stream
id not above the last      1008   409   stream 'x': id 5-0 is not above the last id ...
no such stream (XINFO)     1008   404   stream 'x' does not exist
Redis out of memory        1013   503   Redis is out of memory: nothing written ...
Redis loading / busy       1013   503   Redis is busy (...): try again later
all connections in use     1013   503   every Redis connection ... in use: try again
Redis read-only replica    1011   503   Redis is a read-only replica ...
credentials / ACL refused  1011   502   the server may not use Redis (...)
Redis unreachable          1011   503   Redis unavailable: <redis-py's reason>
Redis timed out            1011   503   Redis unavailable: no answer in time
another Redis refusal      1011   502   Redis refused the request: <its message>
anything else              1011   500   server error (logged on the server)
=========================  =====  ====  =============================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx
from starlette.responses import JSONResponse

from fastredis.server.edge.protocol import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    BadInput,
)
from fastredis.server.run import metrics

__all__ = ["Failure", "explain", "failure", "refused"]

log = logging.getLogger("fastredis.server")


@dataclass(frozen=True)
class Failure:
    """What to answer a failed request with, on each face."""

    code: int  # websocket close code
    status: int  # HTTP status
    message: str  # close reason, JSON "error", GraphQL error message

    def close(self) -> tuple[int, str]:
        """(close code, reason) for `websocket.close_with`."""
        return self.code, self.message

    def response(self) -> JSONResponse:
        """The HTTP answer: ``{"error": message}`` with the status."""
        return JSONResponse({"error": self.message}, status_code=self.status)

    def bad_input(self) -> BadInput:
        """The failure as the exception endpoints raise to refuse a request."""
        return BadInput(self.message, self.code, self.status)


# -- reading Redis's wording -----------------------------------------------------------

_SCRIPT_CONTEXT = re.compile(r"\s*script: \w+, on @\w+:\d+\.?\s*$")
_PIPELINE_CONTEXT = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: \('(.*)',\)$")
_LUA_WRONGTYPE = re.compile(r"^WRONGTYPE key (.*) holds an? (\w+), not a stream")
_LUA_ID = re.compile(r"^(?:ERR )?stream (.*?): (.*?)(?:; nothing written)?$", re.DOTALL)
_XADD_ID = ("equal or smaller than the target stream top item", "must be greater than 0-0")


def _text(exc: BaseException) -> str:
    """Redis's message without a Lua script's or a redis-py pipeline's context."""
    text = str(exc.args[0]) if exc.args else str(exc)
    text = _PIPELINE_CONTEXT.sub(r"\1", text)  # redis-py's pipeline wording
    return _SCRIPT_CONTEXT.sub("", text).strip()


def _quoted(keys: Sequence[str]) -> str:
    return ", ".join(repr(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")


def _wrong_type(text: str, keys: Sequence[str], types: Mapping[str, str]) -> str:
    found = _LUA_WRONGTYPE.match(text)
    if found:
        return f"stream {found.group(1)!r} holds a {found.group(2)}, not a stream"
    named = [(k, t) for k, t in types.items() if t not in ("stream", "none")]
    if named:
        return "; ".join(f"stream {k!r} holds a {t}, not a stream" for k, t in named)
    if len(keys) == 1:
        return f"stream {keys[0]!r} holds another type of key, not a stream"
    if keys:
        return f"one of the streams {_quoted(keys)} holds another type of key, not a stream"
    return "a key of another type is where a stream was expected"


def _bad_id(text: str, keys: Sequence[str]) -> str:
    found = _LUA_ID.match(text)
    if found:
        return f"stream {found.group(1)!r}: {found.group(2)}"
    where = f"stream {keys[0]!r}: " if len(keys) == 1 else ""
    if _XADD_ID[1] in text:
        return f"{where}an entry id must be above 0-0"
    return f"{where}the entry id is not above the stream's last id"


# -- the table ---------------------------------------------------------------------------

Match = Callable[[BaseException, str], bool]
Describe = Callable[[BaseException, str, Sequence[str], Mapping[str, str]], str]


@dataclass(frozen=True)
class _Rule:
    match: Match
    code: int
    status: int
    describe: Describe


def _kind(*classes: type[BaseException]) -> Match:
    return lambda exc, text: isinstance(exc, classes)


def _says(*parts: str) -> Match:
    return lambda exc, text: any(p in text for p in parts)


_RULES: tuple[_Rule, ...] = (
    _Rule(
        lambda e, t: (
            isinstance(e, rx.MaxConnectionsError)
            or (isinstance(e, rx.ConnectionError) and t.startswith("No connection available"))
        ),
        CLOSE_TRY_LATER,
        503,
        lambda e, t, k, ty: (
            "every Redis connection of the server is in use (--redis-max-connections): "
            "try again later"
        ),
    ),
    # BusyLoadingError is a ConnectionError to redis-py: it comes first
    _Rule(
        _kind(rx.BusyLoadingError, rx.TryAgainError, rx.MasterDownError, rx.ClusterDownError),
        CLOSE_TRY_LATER,
        503,
        lambda e, t, k, ty: f"Redis is busy ({t}): try again later",
    ),
    _Rule(
        _kind(rx.TimeoutError),
        CLOSE_INTERNAL,
        503,
        lambda e, t, k, ty: "Redis unavailable: no answer in time",
    ),
    _Rule(
        _kind(rx.ConnectionError),
        CLOSE_INTERNAL,
        503,
        lambda e, t, k, ty: f"Redis unavailable: {t}",
    ),
    _Rule(
        _says("WRONGTYPE", "wrong kind of value"),
        CLOSE_POLICY,
        409,
        lambda e, t, k, ty: _wrong_type(t, k, ty),
    ),
    _Rule(
        lambda e, t: (" id " in t and bool(_LUA_ID.match(t))) or any(p in t for p in _XADD_ID),
        CLOSE_POLICY,
        409,
        lambda e, t, k, ty: _bad_id(t, k),
    ),
    _Rule(
        _says("no such key"),
        CLOSE_POLICY,
        404,
        lambda e, t, k, ty: f"stream {k[0]!r} does not exist" if len(k) == 1 else "no such stream",
    ),
    _Rule(
        lambda e, t: isinstance(e, rx.OutOfMemoryError) or "maxmemory" in t,
        CLOSE_TRY_LATER,
        503,
        lambda e, t, k, ty: (
            "Redis is out of memory (its maxmemory): nothing written; try again later"
        ),
    ),
    _Rule(
        _says("busy running a script"),
        CLOSE_TRY_LATER,
        503,
        lambda e, t, k, ty: "Redis is busy running a long Lua job: try again later",
    ),
    _Rule(
        _kind(rx.ReadOnlyError),
        CLOSE_INTERNAL,
        503,
        lambda e, t, k, ty: "Redis is a read-only replica: the server must use the primary",
    ),
    _Rule(
        _kind(rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError),
        CLOSE_INTERNAL,
        502,
        lambda e, t, k, ty: f"the server may not use Redis (credentials or ACL): {t}",
    ),
    _Rule(
        _kind(rx.ResponseError),
        CLOSE_INTERNAL,
        502,
        lambda e, t, k, ty: f"Redis refused the request: {t}",
    ),
    _Rule(
        _kind(rx.RedisError),
        CLOSE_INTERNAL,
        502,
        lambda e, t, k, ty: f"Redis error: {t}",
    ),
)


def failure(
    exc: BaseException, keys: Sequence[str] = (), types: Mapping[str, str] | None = None
) -> Failure:
    """What to answer for `exc`, raised by a request on the streams `keys` (`types`:
    their Redis types, when known, to name a key of the wrong type)."""
    if isinstance(exc, rx.RedisError):
        metrics.redis_error(exc)
    return _failure(exc, keys, types)


def _failure(
    exc: BaseException, keys: Sequence[str] = (), types: Mapping[str, str] | None = None
) -> Failure:
    if isinstance(exc, BadInput):
        return Failure(exc.code, exc.status, exc.reason)
    text = _text(exc)
    for rule in _RULES:
        if rule.match(exc, text):
            message = rule.describe(exc, text, keys, types or {})
            if "nothing written" in text and "nothing written" not in message:
                message += "; nothing written"  # our write script's promise, kept
            return Failure(rule.code, rule.status, message)
    log.error("request failed", exc_info=exc)
    return Failure(CLOSE_INTERNAL, 500, "server error (logged on the server)")


def refused(exc: BaseException, keys: Sequence[str] = ()) -> BadInput:
    """`exc` (a Redis refusal) as the `BadInput` an endpoint raises."""
    return failure(exc, keys).bad_input()


_TYPE_LOOKUPS = 16  # keys whose type is looked up to name a key of the wrong type


async def explain(exc: BaseException, client: Any, keys: Sequence[str] = ()) -> Failure:
    """`failure(exc, keys)`, naming the type of a wrong-type key (one TYPE round trip on
    that error only)."""
    first = failure(exc, keys)
    if first.status != 409 or "another type" not in first.message or client is None:
        return first
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys[:_TYPE_LOOKUPS]:
                pipe.type(key)
            replies = await pipe.execute(raise_on_error=False)
    except rx.RedisError:
        return first
    types = {
        key: (t.decode() if isinstance(t, bytes) else str(t))
        for key, t in zip(keys, replies, strict=False)
        if not isinstance(t, Exception)
    }
    return _failure(exc, keys, types)  # counted once, by the first failure() above
