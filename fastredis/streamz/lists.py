"""from_redis_lists: pop items from Redis lists (a simple queue) and emit them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from streamz import Stream

from fastredis.redis_io import blocking_command
from fastredis.streamz.base import RedisSource
from fastredis.streamz.checks import block_ms, check_count, check_name
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, log
from fastredis.streamz.emission import emit_each

__all__ = ["from_redis_lists"]

LIST_COUNT = 1000  # most list items popped per round trip (BLMPOP ... COUNT)


class from_redis_lists(RedisSource):
    """Pop items from one or several Redis lists (a simple queue) and emit them.

    Parameters
    ----------
    keys: str or list of str
        The list(s) to pop from; with several, the first non-empty one in this order.
    client_params: dict, optional
        Passed to redis-py unchanged (host, port, db, password, ssl, ...).
    url: str, optional
        A redis:// (rediss://, unix://) URL instead of / on top of client_params.
    timeout: float
        Seconds one blocking pop waits before trying again (0, or < 0.001: forever).
    left: bool
        Pop from the head (BLPOP side, default) or the tail (``left=False``, BRPOP side).
        Pushing with RPUSH and popping left is FIFO; popping the side you push to is LIFO.
    count: int
        Most items taken per round trip when the list has many (BLMPOP ... COUNT; servers
        before Redis 7 use BLPOP/BRPOP, one item each). Popped items are removed from
        Redis: a crash loses at most the items popped and not yet emitted.
    convert, encoding:
        Decode items to str (default UTF-8); ``convert=False`` emits bytes.
    """

    _kind = "list"

    def __init__(
        self,
        keys: str | list[str],
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        left: bool = True,
        convert: bool = True,
        encoding: str | None = "utf-8",
        count: int = LIST_COUNT,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(keys, (str, bytes)):
            keys = [keys]
        if not isinstance(keys, (list, tuple)) or not keys:
            raise TypeError(f"keys must be a list name or a non-empty list of names, not {keys!r}")
        self.keys = [check_name(k, "a list name") for k in keys]
        self.timeout = timeout
        self._block_s = block_ms(timeout) / 1000
        self.left = bool(left)
        self._popped_from: Any = None  # the key the last pop took its items from
        self.count = check_count(count)
        self._mpop = True
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )

    def _names_for_log(self) -> str:
        return ", ".join(map(repr, self.keys))

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        await self._check_types(self.keys, "list")

    def _timeout_arg(self) -> str:
        return repr(self._block_s) if self._block_s else "0"

    async def _pop(self) -> list[Any]:
        assert self.client is not None
        side = "LEFT" if self.left else "RIGHT"
        if self._mpop:
            args = [
                "BLMPOP",
                self._timeout_arg(),
                len(self.keys),
                *self.keys,
                side,
                "COUNT",
                self.count,
            ]
            try:
                reply = await blocking_command(self.client, args, self._block_s)
            except redis.exceptions.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._mpop = False  # before Redis 7
            else:
                if reply is None:
                    return []
                self._popped_from = reply[0]
                return list(reply[1])
        cmd = "BLPOP" if self.left else "BRPOP"
        reply = await blocking_command(
            self.client, [cmd, *self.keys, self._timeout_arg()], self._block_s
        )
        if reply is None:
            return []
        self._popped_from = reply[0]
        return [reply[1]]

    async def _main(self) -> None:
        backoff = Backoff(self._what)
        encoding = self.encoding
        while not self.stopped:
            try:
                items = await self._wait(self._pop())
            except TRANSIENT_ERRORS as exc:
                await self._pause(backoff.next_delay(exc))
                continue
            except redis.exceptions.ResponseError as exc:
                if "WRONGTYPE" in str(exc):
                    await self._check_types(self.keys, "list")
                raise
            backoff.succeeded()
            if not items:
                continue
            raw = items
            if encoding is not None:
                items = [x.decode(encoding) if isinstance(x, bytes) else x for x in items]
            emitted = await emit_each(self, items)
            if emitted < len(items):
                await self._put_back(raw[emitted:])

    async def _put_back(self, items: list[Any]) -> None:
        """Items popped but not emitted (the source was stopped): back where they were,
        in order, so the next start (or another reader) gets them."""
        assert self.client is not None
        try:
            await self.client.execute_command(
                "LPUSH" if self.left else "RPUSH", self._popped_from, *reversed(items)
            )
        except Exception as exc:
            log.error("%s: %d popped items not emitted and LOST: %s", self._what, len(items), exc)


# Registered by the streamz entry points; registered here as well when this module is
# imported in an environment where fastredis is not installed (e.g. a source checkout).
if not hasattr(Stream, "from_redis_lists"):
    Stream.register_api(staticmethod)(from_redis_lists)
