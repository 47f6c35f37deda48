"""What the streamz sources and sinks share: argument checks, clients, backoff, loop helpers."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from fastredis.message import parse_id
from fastredis.redis_io import blocking_read_timeout, make_async_client

log = logging.getLogger("fastredis.streamz")

# Transient failures: the server went away, restarts, or is loading its data set.
# (redis-py's BusyLoadingError is a ConnectionError.)
TRANSIENT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

BACKOFF_FIRST = 0.05  # seconds before the first reconnect attempt
BACKOFF_MAX = 2.0  # the wait doubles up to this


def block_ms(timeout: float | None, what: str = "timeout") -> int:
    """Seconds (float) -> BLOCK milliseconds; None or anything below 1 ms means 0 (forever)."""
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{what} must be >= 0 seconds (0 blocks forever), not {timeout!r}")
    if timeout < 0.001 or math.isinf(timeout):
        return 0
    return max(1, round(timeout * 1000))


def check_count(count: int | None, what: str = "count") -> int | None:
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{what} must be a positive int or None, not {count!r}")
    if count < 1:
        raise ValueError(f"{what} must be a positive int or None, not {count!r}")
    return count


def check_positive(value: float | None, what: str, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def check_name(name: Any, what: str) -> str:
    if isinstance(name, bytes):
        name = name.decode()
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty str, not {name!r}")
    return name


def check_start_id(value: Any, stream: str, allow_dollar: bool = True) -> str:
    """A start id as given ('$', '0', '1700000000000-0', 5, ...) checked and made a str."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str):
        if value == "$" and allow_dollar:
            return value
        try:
            parse_id(value)
        except ValueError:
            pass
        else:
            return value
    allowed = "'$', '0' or an entry id like '1700000000000-0'" if allow_dollar else "an entry id"
    raise ValueError(f"start id for stream {stream!r} must be {allowed}, not {value!r}")


def normalize_streams(streams: Any, default_id: Any, allow_dollar: bool = True) -> dict[str, str]:
    """str / list / tuple / dict notation -> {stream name: start id}."""
    if isinstance(streams, (str, bytes)):
        streams = [streams]
    if isinstance(streams, Mapping):
        pairs = list(streams.items())
    elif isinstance(streams, (list, tuple, set, frozenset)):
        pairs = [(name, default_id) for name in streams]
    else:
        raise TypeError(
            f"streams must be a str, a list of str or a dict of name -> start id, not {streams!r}"
        )
    if not pairs:
        raise ValueError("streams must name at least one stream")
    out: dict[str, str] = {}
    for name, start in pairs:
        name = check_name(name, "a stream name")
        out[name] = check_start_id(start, name, allow_dollar)
    return out


def make_source_client(
    client_params: Mapping[str, Any] | None, url: str | None
) -> redis.asyncio.Redis:
    """The asyncio client of a source or sink: redis-py with the fastredis reader.

    redis-py's own silent retries are turned off (unless client_params sets `retry`):
    the sources reconnect themselves, log it, and know a reply may have been lost.
    """
    if client_params is not None and not isinstance(client_params, Mapping):
        raise TypeError(
            f"client_params must be a dict of redis-py arguments, not {client_params!r}"
        )
    params = dict(client_params or {})
    params.setdefault("retry", Retry(NoBackoff(), 0))
    return make_async_client(params, url=url)


def describe(client: redis.asyncio.Redis) -> str:
    """host:port/db (or the socket path) of a client, for messages."""
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def as_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def blocking_command(client: redis.asyncio.Redis, args: list[Any], block_s: float) -> Any:
    """A blocking command (BLMPOP, BLPOP, ...) whose reply may take `block_s` seconds
    (0 = forever): the connection's socket_timeout must not cut it."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_command(*args)
        timeout = blocking_read_timeout(conn.socket_timeout, block_s * 1000, forever=math.inf)
        return await conn.read_response(timeout=timeout)
    except redis.exceptions.ResponseError:
        raise  # a complete error reply: the connection is fine
    except BaseException:
        # The reply may still come: never hand this connection to someone else.
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)


async def cancel_and_wait(futures: list[Any], patience: float = 5.0) -> None:
    """Cancel tasks and wait until they are done. A cancellation that lands while redis-py
    opens a connection can be swallowed (redis-py 8.1), so it is repeated until it sticks."""
    pending = [f for f in futures if not f.done()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while pending:
        for f in pending:
            f.cancel()
        _done, still = await asyncio.wait(pending, timeout=0.05)
        pending = list(still)
        if pending and loop.time() > deadline:
            log.error("%d task(s) ignore cancellation: %r", len(pending), pending)
            return
    for f in futures:
        if f.done() and not f.cancelled():
            f.exception()  # retrieved: no "exception was never retrieved" noise


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_loop_thread(tornado_loop: Any) -> bool:
    """True when called from the thread running `tornado_loop` (an IOLoop)."""
    loop = running_loop()
    return loop is not None and loop is getattr(tornado_loop, "asyncio_loop", None)


class Backoff:
    """Doubling waits between reconnect attempts, logged."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def next_delay(self, error: BaseException) -> float:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**self.failures)
        self.failures += 1
        log.warning(
            "%s: Redis unavailable (%s: %s); reconnect attempt %d in %.2fs",
            self.what,
            type(error).__name__,
            error,
            self.failures,
            delay,
        )
        return delay

    def succeeded(self) -> None:
        if self.failures:
            log.warning("%s: reconnected after %d attempt(s)", self.what, self.failures)
        self.failures = 0
