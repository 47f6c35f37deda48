"""Reading batches for pulls and GETs: cursors per stream, `$`, `*` and `latest`.

A cursor is the id after which the next read starts. `$` is resolved once, when the
pull starts, to the stream's newest id (so no entry falls between two reads, as it
would if every XREAD said `$`); `*` starts just before the newest `count` entries.
With `latest`, each batch skips to the newest `count` entries of each stream that
has anything new (frame dropping): a Lua script finds where they start without
sending payloads, then one XREAD reads exactly those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio

from fastredis._frames import pack_commands
from fastredis._resp import READ, StreamBatch
from fastredis.ids import parse_id, previous_id
from fastredis.redis_io import AsyncFastParser, blocking_read_timeout
from fastredis.server.writing import send_buffers

__all__ = ["NEWEST_LUA", "BatchReader", "StreamCursor"]

# KEYS: streams; ARGV[i]: lowest id to consider for stream i ("-" or "(id"),
# ARGV[#KEYS + 1]: n. Reply per stream: the id of the oldest of its newest n entries
# above the bound (nil when there are none). Payloads never leave Redis.
NEWEST_LUA = """
local n = ARGV[#KEYS + 1]
local out = {}
for i, k in ipairs(KEYS) do
  local r = redis.call('XREVRANGE', k, '+', ARGV[i], 'COUNT', n)
  if #r > 0 then out[i] = r[#r][1] else out[i] = false end
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class BatchReader:
    """XREAD into StreamBatches over one connection held for a pull's lifetime.

    `fastredis.redis_io.axread_batch` checks a connection out of the pool for each
    call; at thousands of batches a second the checkout, redis-py's Python packer and
    its per-call timeout task cost more than the read itself, so a pull keeps one
    connection and packs XREAD with the Cython packer. The reply is parsed by the
    same fastredis parser (``expect_batch``) that axread_batch uses.
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._conn: Any = None

    async def xread(
        self, streams: Mapping[str, str], count: int | None, block: int | None
    ) -> StreamBatch:
        conn = self._conn
        if conn is None:
            conn = self._conn = await self.client.connection_pool.get_connection()
            if not isinstance(conn._parser, AsyncFastParser):
                raise TypeError("the server's Redis client must use the fastredis parser")
        args: list[Any] = [b"XREAD"]
        if count is not None:
            args += [b"COUNT", count]
        if block is not None:
            args += [b"BLOCK", block]
        args.append(b"STREAMS")
        args.extend(streams.keys())
        args.extend(streams.values())
        await send_buffers(conn, pack_commands([args]))
        conn._parser.expect_batch(READ, None)
        timeout = blocking_read_timeout(conn.socket_timeout, block, forever=math.inf)
        return await conn.read_response(timeout=timeout)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.client.connection_pool.release(conn)


def _before(entry_id: Any) -> str:
    return previous_id(*parse_id(entry_id))


class StreamCursor:
    """Where a pull is in each of its streams, and how to read its next batch."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        sids: Sequence[str],
        starts: Sequence[str],
        count: int = 1,
        latest: bool = False,
    ) -> None:
        self.client = client
        self.sids = list(sids)
        self.count = count
        self.latest = latest
        self.ids: dict[str, str] = {}
        self._starts = list(starts)
        self._names = {sid.encode(): sid for sid in self.sids}
        self._newest = client.register_script(NEWEST_LUA)
        self.reader = BatchReader(client)

    async def _oldest_of_newest(
        self, sids: Sequence[str], bounds: Sequence[str], n: int
    ) -> list[Any]:
        if not sids:
            return []
        return list(await self._newest(keys=list(sids), args=[*bounds, n]))

    async def resolve(self) -> None:
        """Turn `$`, `0` and `*` into ids (a round trip for `$` and one for `*`)."""
        pairs = list(zip(self.sids, self._starts, strict=True))
        newest = [s for s, start in pairs if start == "$"]
        recent = [s for s, start in pairs if start == "*"]
        found = dict(
            zip(newest, await self._oldest_of_newest(newest, ["-"] * len(newest), 1), strict=True)
        )
        first = dict(
            zip(
                recent,
                await self._oldest_of_newest(recent, ["-"] * len(recent), self.count),
                strict=True,
            )
        )
        for sid, start in pairs:
            if start == "0":
                self.ids[sid] = "0-0"
            elif start == "$":
                self.ids[sid] = _text(found[sid]) if found[sid] else "0-0"
            elif start == "*":
                self.ids[sid] = _before(first[sid]) if first[sid] else "0-0"
            else:
                self.ids[sid] = start

    def advance(self, batch: StreamBatch) -> None:
        """Move the cursors past `batch`."""
        if len(batch):
            names = self._names
            for name, eid in batch.last_ids().items():
                sid = names.get(name) if isinstance(name, bytes) else name
                if sid is not None:
                    self.ids[sid] = _text(eid)

    async def read(self, block: int | None, count: int | None = None) -> StreamBatch:
        """The next batch (empty when `block` ms pass with nothing new); `count`
        entries per stream at most (default: the cursor's)."""
        if self.latest:
            batch = await self._read_latest()
            if batch is not None:
                self.advance(batch)
                return batch
        batch = await self.reader.xread(self.ids, count or self.count, block)
        self.advance(batch)
        return batch

    async def _read_latest(self) -> StreamBatch | None:
        sids = self.sids
        bounds = [f"({self.ids[s]}" if self.ids[s] != "0-0" else "-" for s in sids]
        oldest = await self._oldest_of_newest(sids, bounds, self.count)
        starts = {sid: _before(first) for sid, first in zip(sids, oldest, strict=True) if first}
        if not starts:
            return None
        return await self.reader.xread(starts, self.count, None)

    async def close(self) -> None:
        """Give the pull's connection back."""
        await self.reader.close()

    def last_entry_id(self) -> str:
        """The cursors as a `last_entry_id` query value ('+'-joined, in stream order)."""
        return "+".join(self.ids[s] for s in self.sids)
