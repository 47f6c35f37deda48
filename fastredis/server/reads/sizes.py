"""Reads bounded in bytes: how many entries one Redis reply may ask for.

Redis (before 8.10) and Valkey bound a read by entries only (COUNT), never by bytes,
so a read of ``count=100000`` entries of 1 MB would make one 100 GB reply. The hub
turns every read's COUNT into one that fits `max_read_bytes`, from the size of the
stream's entries:

* `EntrySizes` keeps, per stream, the bytes per entry seen in its latest reads (a larger
  batch raises it at once; a smaller one halves it at most), shared by every reader.
* A stream not read yet is probed first: MEMORY USAGE (a few of its nodes sampled)
  over its XLEN, in one pipeline for every stream probed at once. Nothing of the
  entries leaves Redis or is copied into a script.

This was chosen over a script that reads entries itself and stops at the byte budget:
such a script copies every payload into Lua and out again (see
``benchmarks/bench_read_bytes.py`` for the two side by side), while COUNT from sizes
costs nothing per read. The bound is as good as the estimate: a stream whose entries
suddenly grow many times over between two reads overshoots once, by that factor.

Answers that are not shared (a REST GET's) also take turns by bytes (`ByteTurns`):
however many greedy GETs come at once, the server holds one of the largest replies at a
time for them, and small ones beside it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence

from fastredis._resp import StreamBatch
from fastredis.redis_io import AnyAsyncRedis, aread_each
from fastredis.server.run.options import option

__all__ = ["DEFAULT_MAX_READ_BYTES", "ByteTurns", "EntrySizes", "redis_count"]

# about the most one Redis reply of a read may hold (--max-read-bytes)
DEFAULT_MAX_READ_BYTES: int = option("--max-read-bytes").default
PROBE_SAMPLES = 5  # MEMORY USAGE ... SAMPLES: the nodes of a stream it measures
MAX_STREAMS = 100_000  # streams whose entry size is kept (the least recent go first)
ENTRY_OVERHEAD = 64  # bytes a reply spends per entry beside its payload (id, framing)
UNKNOWN_ENTRY_BYTES = 1 << 20  # assumed of a stream that could not be measured


class EntrySizes:
    """Bytes per entry of each stream, from what was read (see the module)."""

    def __init__(self, client: AnyAsyncRedis, max_read_bytes: int) -> None:
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

    def estimate(self, sids: Sequence[str], count: int) -> int:
        """About the bytes of a read of `count` entries per stream (a stream not measured
        yet counts as the whole `max_read_bytes`)."""
        if not self.known(sids):
            return self.max_read_bytes
        return min(self.max_read_bytes, count * sum(self.get(sid) for sid in sids))

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

    async def probe(self, sids: Iterable[str]) -> None:
        """Measure the streams of `sids` not known yet: their bytes per entry."""
        sids = [sid for sid in sids if sid not in self._sizes]
        if not sids:
            return
        self.probes += 1
        commands = [
            (sid, command)
            for sid in sids
            for command in (["MEMORY", "USAGE", sid, "SAMPLES", PROBE_SAMPLES], ["XLEN", sid])
        ]
        replies = await aread_each(self.client, commands)
        for sid, usage, length in zip(sids, replies[::2], replies[1::2], strict=True):
            if isinstance(usage, int) and isinstance(length, int) and length:
                self._set(sid, usage // length + ENTRY_OVERHEAD)
            else:  # empty, missing, or MEMORY refused: assume large until a read says
                self._set(sid, UNKNOWN_ENTRY_BYTES)


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
