"""Dead letters: entries delivered max_deliveries times without being acknowledged, moved to
a dead-letter stream, each in one Lua script (XADD there + XACK here, atomically).

The dead-letter entry keeps the original fields and adds its provenance: ``_stream``,
``_id``, ``_group``, ``_consumer`` (the consumer it was pending at), ``_deliveries`` (its
delivery count, from XPENDING) and ``_error`` (the last exception seen downstream, when
there was one). An entry that is no longer pending (acknowledged, or moved by another
consumer meanwhile) is left alone, so a retried move never writes a second dead letter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from fastredis.redis_io import AnyAsyncRedis
from fastredis.streamz.batching import Batch, BatchSender, count
from fastredis.streamz.connection import as_str, log

__all__ = ["PROVENANCE", "DeadLetters", "describe_error"]

PROVENANCE = ("_stream", "_id", "_group", "_consumer", "_deliveries", "_error")
ERROR_MAX = 1000  # characters of an exception kept in `_error`

# KEYS[1] the stream, KEYS[2] the dead-letter stream; ARGV[1] the group, then (id, error)
# pairs (error '' = none). Returns how many entries were moved.
MOVE_SCRIPT = """
local moved = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 then
    local fields = {}
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 1 then fields = e[1][2] end
    local n = #fields
    fields[n + 1] = '_stream'; fields[n + 2] = KEYS[1]
    fields[n + 3] = '_id'; fields[n + 4] = id
    fields[n + 5] = '_group'; fields[n + 6] = ARGV[1]
    fields[n + 7] = '_consumer'; fields[n + 8] = p[1][2]
    fields[n + 9] = '_deliveries'; fields[n + 10] = tostring(p[1][4])
    if ARGV[i + 1] ~= '' then fields[n + 11] = '_error'; fields[n + 12] = ARGV[i + 1] end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XACK', KEYS[1], ARGV[1], id)
    moved = moved + 1
  end
end
return moved
"""


def describe_error(exc: BaseException | None) -> str:
    """An exception as the `_error` field holds it: ``"ValueError: bad entry"``."""
    if exc is None:
        return ""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 3] + "..."


class DeadLetters(BatchSender):
    """Moves entries to `stream` (the dead-letter stream) in the background, one script
    call per source stream with every entry gathered since the last one."""

    kind = "dead letters"

    def __init__(
        self,
        client_getter: Callable[[], AnyAsyncRedis | None],
        group: str,
        stream: str,
        what: str,
    ) -> None:
        super().__init__(client_getter, what)
        self.group = group
        self.stream = stream
        self.moved = 0  # entries the scripts moved
        self._script: Any = None

    def move(self, stream: Any, entry_id: Any, error: BaseException | str | None) -> None:
        """Queue one entry for the dead-letter stream."""
        text = error if isinstance(error, str) else describe_error(error)
        self._add(stream, (entry_id, text))

    async def _send(self, client: AnyAsyncRedis, batch: Batch) -> None:
        if self._script is None:
            self._script = client.register_script(MOVE_SCRIPT)
        for stream, items in batch.items():
            args: list[Any] = [self.group]
            for entry_id, error in items:
                args += (entry_id, error)
            moved = int(await self._script(keys=[stream, self.stream], args=args, client=client))
            self.moved += moved
            log.warning(
                "%s: moved %d entries of %r to the dead-letter stream %r",
                self.what, moved, as_str(stream), self.stream,
            )  # fmt: skip

    def _refused(self, exc: redis.exceptions.ResponseError, batch: Batch) -> None:
        # Each entry is moved whole or not at all: what was refused stays pending.
        log.error("%s: %d entries not moved to %r: %s", self.what, count(batch), self.stream, exc)
