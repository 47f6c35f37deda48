"""Reading batches for pulls and GETs: cursors per stream, `$`, `*` and `latest`.

A cursor is the id after which the next read starts. `$` is resolved once, when the
pull starts, to the stream's newest id (so no entry falls between two reads, as it
would if every XREAD said `$`); `*` starts just before the newest `count` entries.
With `latest`, each batch skips to the newest `count` entries of each stream that
has anything new (frame dropping): a Lua script finds where they start without
sending payloads, then one XREAD reads exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio

from fastredis._resp import StreamBatch
from fastredis.ids import parse_id, previous_id
from fastredis.redis_io import HeldConnection, aslot_groups, is_cluster

__all__ = ["NEWEST_LUA", "StreamCursor"]

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

    async def _oldest_of_newest(
        self, sids: Sequence[str], bounds: Sequence[str], n: int
    ) -> list[Any]:
        if not sids:
            return []
        if not is_cluster(self.client):
            return list(await self._newest(keys=list(sids), args=[*bounds, n]))
        # a script's keys must share a slot: one call per slot
        found: dict[str, Any] = {}
        for _node, group in await aslot_groups(self.client, dict(zip(sids, bounds, strict=True))):
            replies = await self._newest(keys=list(group), args=[*group.values(), n])
            found.update(zip(group, replies, strict=True))
        return [found[sid] for sid in sids]

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

    async def read(
        self, conn: HeldConnection, block: int | None, count: int | None = None
    ) -> StreamBatch:
        """The next batch over `conn` (empty when `block` ms pass with nothing new);
        `count` entries per stream at most (default: the cursor's)."""
        if self.latest:
            batch = await self._read_latest(conn)
            if batch is not None:
                self.advance(batch)
                return batch
        batch = await conn.xread(self.ids, count or self.count, block)
        self.advance(batch)
        return batch

    async def _read_latest(self, conn: HeldConnection) -> StreamBatch | None:
        sids = self.sids
        bounds = [f"({self.ids[s]}" if self.ids[s] != "0-0" else "-" for s in sids]
        oldest = await self._oldest_of_newest(sids, bounds, self.count)
        starts = {sid: _before(first) for sid, first in zip(sids, oldest, strict=True) if first}
        if not starts:
            return None
        return await conn.xread(starts, self.count, None)

    def last_entry_id(self) -> str:
        """The cursors as a `last_entry_id` query value ('+'-joined, in stream order)."""
        return "+".join(self.ids[s] for s in self.sids)
