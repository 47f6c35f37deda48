"""The delivering half of a consumer group: emit what the group delivered to this
consumer, each entry (or batch) with a reference count whose release acknowledges it;
retry or dead-letter what failed; count what is in flight, so reading can wait for room."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from streamz import Stream

from fastredis.redis_io import AnyAsyncRedis, axclaim_batch
from fastredis.streamz.acks import Acker, BatchAckRef
from fastredis.streamz.batch_modes import WHOLE, messages_item, read_item
from fastredis.streamz.connection import as_str
from fastredis.streamz.deadletters import DeadLetters, describe_error
from fastredis.streamz.deliveries import Retries, delivery_counts
from fastredis.streamz.descriptors import DescriptorRead
from fastredis.streamz.emission import emit_each, emit_one
from fastredis.streamz.entries import batch_messages, ids_by_stream, message_ids
from fastredis.streamz.message import Message

__all__ = ["READ_SHARE", "Deliverer"]

# A read asks for at most 1/READ_SHARE of max_in_flight: the two reads sent ahead and the
# one being emitted leave most of the bound to acks not confirmed yet (with 1/4, acks
# waiting at Redis behind the reads shrank or held back the next read). On bench_streamz's
# 100,000 entries 1/8 and 1/6 left the loop less idle and used less CPU than 1/4.
READ_SHARE = 8


class Deliverer:
    """Emits, through `source`, what `consumer` of `group` was delivered, and acknowledges
    it when everything downstream is done with it.

    Each start of the source calls ``start()`` (a new Acker, and with a dead-letter
    stream new DeadLetters and Retries, all on the loop) and ``close()`` when it stops.
    """

    def __init__(
        self,
        source: Stream,
        client: Callable[[], AnyAsyncRedis | None],
        group: str,
        consumer: str,
        *,
        batch: bool | str,
        encoding: str | None,
        max_in_flight: int | None,
        max_deliveries: int | None,
        dead_letter_stream: str | None,
        retry_after: float,
        what: str,
    ) -> None:
        self.source = source
        self._client = client
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.encoding = encoding
        self.max_in_flight = max_in_flight
        self.max_deliveries = max_deliveries
        self.dead_letter_stream = dead_letter_stream
        self.retry_after = retry_after
        self.what = what
        self.acker: Acker | None = None
        self.dead_letters: DeadLetters | None = None
        self.retries: Retries | None = None
        self._reserved = 0  # entries asked for by reads under way, or read and not emitted

    def start(self) -> list[Coroutine[Any, Any, None]]:
        """Make this start's senders; return the coroutines to run while the source runs."""
        self.acker = Acker(self._client, self.group, self.what)
        self._reserved = 0
        if self.dead_letter_stream is None:
            return []
        self.dead_letters = DeadLetters(
            self._client, self.group, self.dead_letter_stream, self.what
        )
        self.retries = Retries(self.retry_after, self._redeliver, self.what)
        return [self.retries.run()]

    async def close(self) -> None:
        """Send the acks and dead-letter moves gathered so far (at most 5 s each)."""
        for sender in (self.acker, self.dead_letters):
            if sender is not None:
                await sender.flush(timeout=5.0)
                sender.cancel()

    # -- in flight ---------------------------------------------------------------------

    async def room(self, count: int | None) -> int | None:
        """How many entries the next read may ask for: `count`, lowered so that emitted-
        and-unfinished plus asked-for-and-unemitted entries stay within max_in_flight
        (waiting for a tenth of it, or `count`, to free up), and to 1/READ_SHARE of
        max_in_flight. What it gives counts as reserved until `arrived`."""
        limit = self.max_in_flight
        if limit is None:
            return count
        assert self.acker is not None
        needed = max(1, min(count or limit, limit // 10))
        room = await self.acker.wait_for_room(limit, needed, self._outside)
        room = min(room, max(1, limit // READ_SHARE))
        room = room if count is None else min(count, room)
        self._reserved += room
        return room

    def arrived(self, asked: int | None, batch: Any) -> None:
        """A read that `room` allowed `asked` entries came back with `batch`: its
        entries count until emitted."""
        if self.max_in_flight is None or asked is None:
            return
        self._reserved += _entries(batch) - asked
        assert self.acker is not None
        self.acker.freed()  # fewer than asked: room for a read waiting

    def reads_dropped(self) -> None:
        """No read is under way and none is being emitted: nothing is reserved."""
        self._reserved = 0

    def _outside(self) -> int:
        """Outstanding entries the acker does not see: asked for by reads under way or
        read and not emitted yet, failed and waiting for their retry."""
        return self._reserved + (len(self.retries.queued) if self.retries is not None else 0)

    # -- emission --------------------------------------------------------------------------

    async def deliver_read(self, batch: Any) -> int:
        """Emit a fresh read (the entries' first delivery); return how many entries."""
        try:
            if type(batch) is DescriptorRead:
                return await self._emit_descriptors(batch)
            if self.batch in WHOLE:
                return await self._emit_batch(batch)
            return await self._emit_messages(batch_messages(batch))
        finally:
            if self.max_in_flight is not None:
                self._reserved -= _entries(batch)
            assert self.acker is not None
            self.acker.freed()

    async def deliver_again(
        self,
        batch: Any,
        stream: Any = None,
        skip_inflight: bool = False,
        errors: dict[str, str] | None = None,
    ) -> int:
        """Emit entries delivered before (replayed, claimed, retried) with their delivery
        counts from XPENDING; return how many were emitted. `stream`: the stream of a claim
        batch (XCLAIM / XAUTOCLAIM replies carry no stream name). `skip_inflight`: leave
        out entries emitted before and not finished yet (replays after a reconnect, our
        own entries autoclaimed). `errors`: id -> the exception text of a retried entry's
        last failure."""
        if stream is not None and self.encoding is None:
            stream = stream.encode()
        msgs = self._still_to_do(batch_messages(batch, stream), skip_inflight)
        if not msgs:
            return 0
        msgs = await self._counted(msgs, errors or {})
        return await self._emit_messages(msgs, one_by_one=errors is not None)

    async def _emit_descriptors(self, read: DescriptorRead) -> int:
        assert self.acker is not None
        for d, ids in read:
            exc = await emit_one(self.source, d, BatchAckRef(self.acker, {d.stream: ids}))
            if exc is not None:
                self.acker.not_done_many({d.stream: ids})
                for entry_id in ids:
                    self._failed_once(d.stream, entry_id, 1, exc)
        return len(read)

    async def _emit_batch(self, batch: Any) -> int:
        """The StreamBatch of a read itself, acknowledged as a whole."""
        assert self.acker is not None
        ids = ids_by_stream(batch)
        exc = await emit_one(
            self.source, read_item(self.batch, batch), BatchAckRef(self.acker, ids)
        )
        if exc is not None:
            self.acker.not_done_many(ids)
            for stream, stream_ids in ids.items():
                for entry_id in stream_ids:
                    self._failed_once(stream, entry_id, 1, exc)
        return len(batch)

    async def _emit_messages(self, msgs: list[Message], one_by_one: bool = False) -> int:
        acker = self.acker
        assert acker is not None
        if not self.batch:
            return await emit_each(self.source, msgs, acker=acker, failed=self._failed)
        # A list of Messages (also in batch=True mode for claimed or replayed entries);
        # retried entries come one per list, so one poison entry condemns no other.
        for part in ([m] for m in msgs) if one_by_one else (msgs,):
            item = messages_item(self.batch, part, self.encoding)
            exc = await emit_one(self.source, item, BatchAckRef(acker, message_ids(part)))
            if exc is not None:
                for m in part:
                    self._failed(m, exc)
        return len(msgs)

    # -- failures ----------------------------------------------------------------------

    def _failed(self, m: Message, exc: Exception) -> None:
        assert self.acker is not None
        self.acker.not_done(m[0], m[1])
        self._failed_once(m[0], m[1], m.deliveries, exc)

    def _failed_once(self, stream: Any, entry_id: Any, deliveries: int, exc: Exception) -> None:
        """Processing raised. Without max_deliveries the entry stays pending (replayed at the
        next start, claimed by others if this consumer dies, or autoclaimed); with it, it is
        retried after retry_after, or moved to the dead-letter stream after its last try."""
        if self.dead_letters is None or self.retries is None or self.max_deliveries is None:
            return
        if deliveries >= self.max_deliveries:
            self.dead_letters.move(stream, entry_id, exc)
        else:
            self.retries.add(stream, entry_id, describe_error(exc))

    async def _redeliver(self, stream: str, items: list[tuple[str, str]]) -> None:
        """Deliver failed entries again (XCLAIM to ourselves: it counts the delivery). The
        min-idle-time leaves out what another consumer took over meanwhile."""
        client = self._client()
        assert client is not None and self.retries is not None
        min_idle_ms = int(self.retries.retry_after * 500)
        ids = [entry_id for entry_id, _ in items]
        batch = await axclaim_batch(
            client, stream, self.group, self.consumer, min_idle_ms, ids, encoding=self.encoding
        )
        if len(batch):
            await self.deliver_again(batch, stream=stream, errors=dict(items))

    # -- what is left to deliver again ----------------------------------------------------

    def _still_to_do(self, msgs: list[Message], skip_inflight: bool) -> list[Message]:
        """Leave out entries deleted from the stream (acknowledged: nothing to process) and,
        with `skip_inflight`, those still in flight here or waiting for their retry."""
        acker, retries = self.acker, self.retries
        assert acker is not None
        keep = []
        for m in msgs:
            if m[2] is None:
                acker.ack(m[0], m[1])
            elif not skip_inflight or not (
                acker.is_inflight(m[0], m[1]) or (retries and retries.waiting(m[0], m[1]))
            ):
                keep.append(m)
        return keep

    async def _counted(self, msgs: list[Message], errors: dict[str, str]) -> list[Message]:
        """Give each Message its delivery count (XPENDING); move those delivered more than
        max_deliveries times to the dead-letter stream instead."""
        client = self._client()
        assert client is not None
        ids: dict[str, list[str]] = {}
        for m in msgs:
            ids.setdefault(as_str(m[0]), []).append(as_str(m[1]))
        counts = {
            stream: await delivery_counts(client, stream, self.group, self.consumer, stream_ids)
            for stream, stream_ids in ids.items()
        }
        limit = self.max_deliveries
        keep = []
        for m in msgs:
            entry_id = as_str(m[1])
            n = counts[as_str(m[0])].get(entry_id)
            if n is None:
                continue  # not pending here any more: acknowledged, or taken over meanwhile
            if limit is not None and n > limit:
                assert self.dead_letters is not None
                self.dead_letters.move(m[0], m[1], errors.get(entry_id))
                continue
            if n != 1:
                m.deliveries = n
            keep.append(m)
        return keep


def _entries(read: Any) -> int:
    """How many entries a read brought (a DescriptorRead: ids per descriptor)."""
    if type(read) is DescriptorRead:
        return sum(len(ids) for _, ids in read)
    return len(read)
