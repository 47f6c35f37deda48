"""Reads bounded in bytes: how many entries one Redis reply may ask for.

Redis (before 8.10) and Valkey bound a read by entries only (COUNT), never by bytes,
so a read of ``count=100000`` entries of 1 MB would make one 100 GB reply. The hub
turns every read's COUNT into one that fits `max_read_bytes`, from the size of the
stream's entries:

* `EntrySizes` keeps, per stream, the bytes per entry seen in its latest reads (a larger
  batch raises it at once; a smaller one halves it at most), shared by every reader.
* A stream not read yet is probed first: one small script (`PROBE_LUA`) measures a few
  of its newest entries and the entries after the reader's cursor, in Redis, and sends
  back only the number. Streams probed at the same moment share one round trip.

This was chosen over a script that reads entries itself and stops at the byte budget:
such a script copies every payload into Lua and out again (see
``benchmarks/bench_read_bytes.py`` for the two side by side), while COUNT from sizes
costs nothing per read. The bound is as good as the estimate: a stream whose entries
suddenly grow many times over between two reads overshoots once, by that factor.

Answers that are not shared (a REST GET's) also take turns by bytes (`ByteTurns`):
however many greedy GETs come at once, the server holds about two replies for them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio

from fastredis._resp import StreamBatch
from fastredis.redis_io import aslot_groups, is_cluster

__all__ = ["DEFAULT_MAX_READ_BYTES", "PROBE_LUA", "ByteTurns", "EntrySizes", "redis_count"]

# about the most one Redis reply of a read may hold (--max-read-bytes)
DEFAULT_MAX_READ_BYTES = 16 << 20
PROBE_ENTRIES = 8  # entries measured at each end of a probe
MAX_STREAMS = 100_000  # streams whose entry size is kept (the least recent go first)
ENTRY_OVERHEAD = 64  # bytes a reply spends per entry beside its payload (id, framing)

# KEYS: streams; ARGV[i]: where stream i's reader starts ("(id", or "-"), ARGV[#KEYS+1]:
# entries to measure at each end. Reply per stream: the largest entry (its field names
# and values, in bytes) of its newest entries and of those after the start; 0: none.
PROBE_LUA = r"""
local n = tonumber(ARGV[#KEYS + 1])
local out = {}
local function largest(entries, most)
  for _, e in ipairs(entries) do
    local size = 0
    for _, v in ipairs(e[2]) do size = size + #v end
    if size > most then most = size end
  end
  return most
end
for i, k in ipairs(KEYS) do
  local most = largest(redis.call('XREVRANGE', k, '+', '-', 'COUNT', n), 0)
  out[i] = largest(redis.call('XRANGE', k, ARGV[i], '+', 'COUNT', n), most)
end
return out
"""


class EntrySizes:
    """Bytes per entry of each stream, from what was read (see the module)."""

    def __init__(self, client: redis.asyncio.Redis, max_read_bytes: int) -> None:
        self.client = client
        self.max_read_bytes = max_read_bytes
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.probes = 0  # round trips made to probe (for tests and metrics)

    def known(self, sids: Sequence[str]) -> bool:
        return all(sid in self._sizes for sid in sids)

    def get(self, sid: str) -> int:
        return self._sizes.get(sid, 0)

    def _set(self, sid: str, size: int) -> None:
        sizes = self._sizes
        sizes[sid] = size
        sizes.move_to_end(sid)
        while len(sizes) > MAX_STREAMS:
            sizes.popitem(last=False)

    def observe(self, batch: StreamBatch, sids: Sequence[str]) -> None:
        """Learn from a batch just read of `sids` (a larger size counts at once, a
        smaller one halves the estimate at most: one small batch does not let the next
        read ask for many large entries)."""
        n = len(batch)
        if not n:
            return
        per = batch.nbytes // n
        names = batch.streams
        for name in names or sids:
            sid = name.decode() if isinstance(name, bytes) else str(name)
            old = self._sizes.get(sid, 0)
            self._set(sid, max(per, old // 2))

    async def probe(self, starts: Mapping[str, str]) -> None:
        """Measure the streams of `starts` (stream -> cursor) not known yet."""
        sids = [sid for sid in starts if sid not in self._sizes]
        if not sids:
            return
        self.probes += 1
        script = self.client.register_script(PROBE_LUA)
        bounds: dict[Any, Any] = {
            sid: "-" if starts[sid] in ("0-0", "0") else f"({starts[sid]}" for sid in sids
        }
        if is_cluster(self.client):
            found: dict[str, Any] = {}
            for _node, group in await aslot_groups(self.client, bounds):
                replies = await script(keys=list(group), args=[*group.values(), PROBE_ENTRIES])
                found.update(zip(group, replies, strict=True))
        else:
            replies = await script(keys=sids, args=[*bounds.values(), PROBE_ENTRIES])
            found = dict(zip(sids, replies, strict=True))
        for sid in sids:
            self._set(sid, int(found[sid]) + ENTRY_OVERHEAD)


def redis_count(sizes: EntrySizes | None, sids: Sequence[str], count: int, budget: int) -> int:
    """The COUNT for one read of `count` entries per stream of `sids` whose reply fits
    `budget` bytes (at least 1)."""
    if sizes is None:
        return count
    per = sum(sizes.get(sid) or ENTRY_OVERHEAD for sid in sids)
    return max(1, min(count, budget // per))


class ByteTurns:
    """Bytes that answers in flight may hold together (`total`): a caller takes its
    share before reading and gives it back once its answer is sent, and waits its turn
    (first come, first served) while the others hold too much. A share is at most
    `total`, so one caller always fits."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, nbytes: int) -> Callable[[], None]:
        """Take `nbytes` (capped at `total`); returns the function that gives them back
        (once; it is safe to call again)."""
        nbytes = min(nbytes, self.total)
        if self._waiting or self.held + nbytes > self.total:
            fut = asyncio.get_running_loop().create_future()
            self._waiting.append((nbytes, fut))
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._give(nbytes)  # granted as it was cancelled: pass it on
                else:
                    self._waiting.remove((nbytes, fut))
                    self._wake()
                raise
        else:
            self.held += nbytes
        given = False

        def give_back() -> None:
            nonlocal given
            if not given:
                given = True
                self._give(nbytes)

        return give_back

    def _give(self, nbytes: int) -> None:
        self.held -= nbytes
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.total:
            nbytes, fut = self._waiting.popleft()
            self.held += nbytes
            fut.set_result(None)
