"""Consumer-group acknowledgement for the streamz sources: reference counts and batched XACK.

Every entry a group source emits carries ``metadata=[{"ref": ref}]``, a streamz
``RefCounter``. Nodes that hold data for later (partition, buffer, our sinks until the write
is confirmed) retain it; when the count reaches zero nothing downstream needs the entry any
more and its id joins the next XACK. Acks are sent by one background task, one XACK per
stream with every id gathered since the last one, all streams in one pipeline: never a
round trip per entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from threading import get_ident
from typing import Any

import redis
import redis.asyncio
from streamz.core import RefCounter

from fastredis.redis_io import AnyAsyncRedis, HeldConnection, is_cluster
from fastredis.streamz.batching import Batch, BatchSender, count
from fastredis.streamz.connection import log
from fastredis.streamz.entries import message_ids

__all__ = ["AckRef", "Acker", "BatchAckRef"]


class _AckRefCounter(RefCounter):
    """A reference count that tells its acker, once, when it reaches zero (`_done`).

    Starts at 1: the source holds its own reference while it emits and while it waits for
    what the emit returned, so an entry is never acked before everything downstream is done.
    """

    # No RefCounter.__init__: it would look up (and maybe start) streamz's IO loop.
    cb = None
    loop = None

    def __init__(self, acker: Acker) -> None:
        self.count = 1
        self.acker: Acker | None = acker

    def retain(self, n: int = 1) -> None:
        self.count += n

    def release(self, n: int = 1) -> None:
        self.count -= n
        if self.count <= 0 and self.acker is not None:
            acker, self.acker = self.acker, None
            self._done(acker)

    def _done(self, acker: Acker) -> None:
        raise NotImplementedError


class AckRef(_AckRefCounter):
    """The reference count of one entry, a (stream, id, ...) tuple, made by the emitter;
    at zero the entry is acknowledged (once)."""

    def __init__(self, acker: Acker, entry: Any) -> None:
        self.count = 1  # _AckRefCounter.__init__ inlined: one is made per entry
        self.acker = acker
        self.entry = entry

    def emitted(self) -> bool:
        """Release the emitter's reference. True when that finished the entry: the emitter
        then hands it to ``Acker.finished`` with others (cheaper than one by one). An entry
        held downstream is in flight until it is released there."""
        self.count -= 1
        acker = self.acker
        if acker is None:
            return False
        if self.count <= 0:
            self.acker = None
            return True
        acker.inflight_add(self.entry[0], self.entry[1])
        return False

    def _done(self, acker: Acker) -> None:
        acker.done(self.entry[0], self.entry[1])

    def __repr__(self) -> str:
        return f"<AckRef {self.entry[0]!r} {self.entry[1]!r} count={self.count}>"


class BatchAckRef(_AckRefCounter):
    """The reference count of a whole emitted batch (batch mode): all its ids at zero."""

    def __init__(self, acker: Acker, ids: dict[Any, list[Any]]) -> None:
        super().__init__(acker)
        self.ids = ids
        for stream, stream_ids in ids.items():
            acker.inflight_update(stream, stream_ids)

    def _done(self, acker: Acker) -> None:
        for stream, stream_ids in self.ids.items():
            acker.done_many(stream, stream_ids)

    def __repr__(self) -> str:
        n = sum(map(len, self.ids.values()))
        return f"<BatchAckRef {n} entries count={self.count}>"


class Acker(BatchSender):
    """Gathers finished entry ids and XACKs them in the background, batched per stream.

    `inflight` holds, per stream, the ids emitted and not yet acknowledged: replaying the
    pending list after a reconnect (or an XAUTOCLAIM of our own entries) skips them.
    """

    kind = "acks"

    def __init__(
        self,
        client_getter: Callable[[], AnyAsyncRedis | None],
        group: str,
        what: str,
        on_nogroup: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(client_getter, what)
        self.group = group
        self.on_nogroup = on_nogroup
        self.inflight: dict[Any, set[Any]] = {}
        self.acked = 0  # ids confirmed by XACK replies (sent, whatever the reply count)
        # Made on the loop's thread: references released elsewhere are handed over to it.
        self._loop = asyncio.get_running_loop()
        self._thread = get_ident()
        self._room: asyncio.Event | None = None  # set when entries finish, while a read waits

    # -- bookkeeping (called on the loop thread, many times: keep them cheap) -------------

    def inflight_add(self, stream: Any, entry_id: Any) -> None:
        try:
            self.inflight[stream].add(entry_id)
        except KeyError:
            self.inflight[stream] = {entry_id}

    def inflight_update(self, stream: Any, ids: Iterable[Any]) -> None:
        self.inflight.setdefault(stream, set()).update(ids)

    def is_inflight(self, stream: Any, entry_id: Any) -> bool:
        s = self.inflight.get(stream)
        return s is not None and entry_id in s

    def in_flight(self) -> int:
        """Entries emitted and not finished downstream yet."""
        return sum(map(len, self.inflight.values()))

    async def wait_for_room(self, limit: int, needed: int, outside: Callable[[], int]) -> int:
        """Wait until at most `limit - needed` entries are outstanding: in flight, finished
        but not acknowledged yet, or `outside()` (read and not emitted yet, waiting for a
        retry); return the room there is."""
        while True:
            room = limit - self.in_flight() - self.unsent() - outside()
            if room >= needed:
                return room
            self._room = event = asyncio.Event()
            try:
                await event.wait()
            finally:
                self._room = None

    def freed(self) -> None:
        """Entries finished (or a read batch was emitted): wake a read waiting for room."""
        if self._room is not None:
            self._room.set()

    def not_done(self, stream: Any, entry_id: Any) -> None:
        """Processing failed: no longer in flight, left pending (not acknowledged)."""
        s = self.inflight.get(stream)
        if s is not None:
            s.discard(entry_id)
        if self._room is not None:
            self._room.set()

    def not_done_many(self, ids: Batch) -> None:
        for stream, stream_ids in ids.items():
            s = self.inflight.get(stream)
            if s is not None:
                s.difference_update(stream_ids)
        self.freed()

    def ack(self, stream: Any, entry_id: Any) -> None:
        """Acknowledge an entry that was never in flight (deleted from the stream)."""
        self._add(stream, entry_id)

    def done(self, stream: Any, entry_id: Any) -> None:
        """One entry is finished downstream: ack it with the next flush."""
        if get_ident() != self._thread:  # released by a node working in another thread
            self._loop.call_soon_threadsafe(self.done, stream, entry_id)
            return
        s = self.inflight.get(stream)
        if s is not None:
            s.discard(entry_id)
        if self._room is not None:
            self._room.set()
        self._add(stream, entry_id)

    def finished(self, entries: list[Any]) -> None:
        """(stream, id, ...) entries the emitter saw finished (never in flight): ack them
        with the next flush."""
        for stream, ids in message_ids(entries).items():
            self._add_many(stream, ids)
        self.freed()

    def done_many(self, stream: Any, ids: list[Any]) -> None:
        if get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.done_many, stream, ids)
            return
        s = self.inflight.get(stream)
        if s is not None:
            s.difference_update(ids)
        self.freed()
        self._add_many(stream, ids)

    # -- sending --------------------------------------------------------------------------

    async def _send(self, client: AnyAsyncRedis, batch: Batch) -> None:
        # Packed by the Cython packer: redis-py's packs ~2.3 us per id (23 ms per
        # 10,000-id XACK) on the loop thread that also emits the messages.
        held = HeldConnection(client)
        broken = True
        try:
            if is_cluster(client):  # one node per stream's slot
                for stream, ids in batch.items():
                    await held.route(stream)
                    await held.send_commands([["XACK", stream, self.group, *ids]])
                    await held.read_reply()
            else:
                commands = [["XACK", stream, self.group, *ids] for stream, ids in batch.items()]
                await held.send_commands(commands)
                for _ in commands:
                    await held.read_reply()
            broken = False
        finally:
            await held.release(broken)  # replies may still be owed after an error
        self.acked += count(batch)

    def _sent(self) -> None:
        self.freed()

    def _refused(self, exc: redis.exceptions.ResponseError, batch: Batch) -> None:
        if "NOGROUP" in str(exc):
            # The group is gone (e.g. a server restarted without persistence): nothing to
            # acknowledge any more.
            log.warning("%s: group gone, %d acks dropped", self.what, count(batch))
            if self.on_nogroup is not None:
                self.on_nogroup()
        else:
            log.error("%s: XACK failed: %s", self.what, exc)
