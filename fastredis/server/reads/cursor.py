"""Reading batches for pulls and GETs: cursors per stream, `$`, `*` and `latest`.

A cursor is the id after which the next read starts. `$` is resolved once, before the
client's socket opens (`fastredis.server.reads.resume`), to the stream's newest id (so
no entry falls between two reads, as it would if every XREAD said `$`); `*` starts
just before the newest `count` entries.
With `latest`, each batch skips to the newest `count` entries of each stream that
has anything new (frame dropping): a Lua script finds where they start without
sending payloads, then one XREAD reads exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastredis._resp import READ, StreamBatch
from fastredis.ids import parse_id, previous_id
from fastredis.redis_io import (
    AnyAsyncRedis,
    HeldConnection,
    aread_each,
    aslot_groups,
    is_cluster,
    xread_command,
)
from fastredis.server.reads.sizes import EntrySizes, redis_count

__all__ = ["NEWEST_LUA", "StreamCursor", "oldest_of_newest"]

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


async def oldest_of_newest(
    client: AnyAsyncRedis, sids: Sequence[str], bounds: Sequence[str], n: int
) -> list[Any]:
    """Per stream, the id of the oldest of its newest `n` entries above its bound ("-"
    or "(id"), None when there are none: one round trip (on a cluster, a script per
    slot, each node's pipelined, waiting out a failover: `aread_each`)."""
    if not sids:
        return []
    if not is_cluster(client):
        script = client.register_script(NEWEST_LUA)
        return list(await script(keys=list(sids), args=[*bounds, n]))
    # a script's keys must share a slot: one per slot (EVAL: no node loads it first)
    groups = [g for _node, g in await aslot_groups(client, dict(zip(sids, bounds, strict=True)))]
    commands = [(next(iter(g)), ["EVAL", NEWEST_LUA, len(g), *g, *g.values(), n]) for g in groups]
    found: dict[str, Any] = {}
    for group, replies in zip(groups, await aread_each(client, commands), strict=True):
        if isinstance(replies, Exception):
            raise replies
        found.update(zip(group, replies, strict=True))
    return [found[sid] for sid in sids]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _before(entry_id: Any) -> str:
    return previous_id(*parse_id(entry_id))


class StreamCursor:
    """Where a pull is in each of its streams, and how to read its next batch."""

    def __init__(
        self,
        client: AnyAsyncRedis,
        sids: Sequence[str],
        starts: Sequence[str],
        count: int = 1,
        latest: bool = False,
        sizes: EntrySizes | None = None,
    ) -> None:
        self.client = client
        self.sids = list(sids)
        self.count = count
        self.latest = latest
        self.sizes = sizes  # with it, every read's reply fits sizes.max_read_bytes
        self.cut = False  # the last read asked for fewer entries than wanted (bytes)
        self.prelude_replies: list[Any] = []
        self.ids: dict[str, str] = {}
        self._starts = list(starts)
        self._names = {sid.encode(): sid for sid in self.sids}

    async def resolve(self, newest: dict[str, str] | None = None) -> None:
        """Turn `$`, `0` and `*` into ids: `$` from `newest` (each stream's newest id,
        "0-0" when empty) or a round trip, `*` a round trip."""
        pairs = list(zip(self.sids, self._starts, strict=True))
        if newest is None:
            wanted = [s for s, start in pairs if start == "$"]
            found = await oldest_of_newest(self.client, wanted, ["-"] * len(wanted), 1)
            newest = {s: _text(f) if f else "0-0" for s, f in zip(wanted, found, strict=True)}
        recent = [s for s, start in pairs if start == "*"]
        first = dict(
            zip(
                recent,
                await oldest_of_newest(self.client, recent, ["-"] * len(recent), self.count),
                strict=True,
            )
        )
        for sid, start in pairs:
            if start == "0":
                self.ids[sid] = "0-0"
            elif start == "$":
                self.ids[sid] = newest[sid]
            elif start == "*":
                self.ids[sid] = _before(first[sid]) if first[sid] else "0-0"
            else:
                self.ids[sid] = start

    def move_to(self, ids: dict[str, str]) -> None:
        """Set the cursor (one id per stream): the one way it moves but by reading."""
        self.ids = dict(ids)

    def advance(self, batch: StreamBatch) -> None:
        """Move the cursors past `batch`."""
        if len(batch):
            names = self._names
            for name, eid in batch.last_ids().items():
                sid = names.get(name) if isinstance(name, bytes) else name
                if sid is not None:
                    self.ids[sid] = _text(eid)

    async def read(
        self,
        conn: HeldConnection,
        block: int | None,
        count: int | None = None,
        budget: int | None = None,
        step: int = 1,
        prelude: list[list[Any]] | None = None,
    ) -> StreamBatch:
        """The next batch over `conn` (empty when `block` ms pass with nothing new);
        `count` entries per stream at most (default: the cursor's), fewer when their
        bytes would pass `budget` (default: ``sizes.max_read_bytes``), then a multiple
        of `step` when that is at least `step`; `cut` says whether they were fewer and
        the reply full (more are likely there). `prelude`: commands sent in the same
        pipeline just before the XREAD (not on a cluster); their replies are left in
        `prelude_replies`."""
        if self.latest:
            batch = await self._read_latest(conn)
            if batch is not None:
                self.advance(batch)
                return batch
        wanted = count or self.count
        asked = wanted
        sizes = self.sizes
        if sizes is not None:
            if not sizes.known(self.sids):
                await sizes.probe(self.sids)
            limit = sizes.max_read_bytes if budget is None else min(budget, sizes.max_read_bytes)
            asked = redis_count(sizes, self.sids, wanted, limit)
            if asked > step:
                asked -= asked % step
        if prelude and not is_cluster(self.client):
            await conn.send_commands([*prelude, xread_command(self.ids, asked, block)])
            self.prelude_replies = [await conn.read_reply() for _ in prelude]
            batch = await conn.read_batch(READ, None, block)
        else:
            batch = await conn.xread(self.ids, asked, block)
        if sizes is not None:
            sizes.observe(batch, self.sids)
        self.cut = asked < wanted and len(batch) >= asked
        self.advance(batch)
        return batch

    async def _read_latest(self, conn: HeldConnection) -> StreamBatch | None:
        sids = self.sids
        bounds = [f"({self.ids[s]}" if self.ids[s] != "0-0" else "-" for s in sids]
        oldest = await oldest_of_newest(self.client, sids, bounds, self.count)
        starts = {sid: _before(first) for sid, first in zip(sids, oldest, strict=True) if first}
        if not starts:
            return None
        count = self.count
        if self.sizes is not None:  # the newest `count` entries, or fewer by bytes
            count = redis_count(self.sizes, sids, count, self.sizes.max_read_bytes)
            if count < self.count:
                oldest = await oldest_of_newest(self.client, sids, bounds, count)
                starts = {s: _before(f) for s, f in zip(sids, oldest, strict=True) if f}
        batch = await conn.xread(starts, count, None)
        if self.sizes is not None:
            self.sizes.observe(batch, sids)
        return batch

    def last_entry_id(self) -> str:
        """The cursors as a `last_entry_id` query value ('+'-joined, in stream order)."""
        return "+".join(self.ids[s] for s in self.sids)
