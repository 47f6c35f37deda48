"""from_redis_consumer_group: read streams as one consumer of a group, acknowledge entries
once everything downstream is done with them, replay and claim what others left."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis
from streamz import Stream

from fastredis.redis_io import axclaim_batch, axread_batch, axreadgroup_batch
from fastredis.streamz.acks import Acker, AckRef, BatchAckRef
from fastredis.streamz.batch_modes import WHOLE, messages_item, read_item
from fastredis.streamz.checks import (
    check_count,
    check_name,
    check_positive,
    check_start_id,
    normalize_streams,
)
from fastredis.streamz.claims import Claims
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, as_str, log
from fastredis.streamz.deadletters import DeadLetters, describe_error
from fastredis.streamz.deliveries import Retries, delivery_counts
from fastredis.streamz.descriptors import READ_IDS_SCRIPT, Descriptor
from fastredis.streamz.emission import emit_each, emit_one
from fastredis.streamz.entries import batch_messages, ids_by_stream, message_ids
from fastredis.streamz.lag import Lag, group_lag, watch_lag
from fastredis.streamz.loops import on_loop_thread
from fastredis.streamz.message import Message
from fastredis.streamz.streams import StreamSource

__all__ = ["from_redis_consumer_group"]

RETRY_AFTER = 3.0  # seconds before a failed entry is delivered again (with max_deliveries)
MAX_IN_FLIGHT = 10_000  # entries emitted and not finished beyond which reading pauses
LAG_INTERVAL = 5.0  # seconds between lag checks (with lag_warning)
DESCRIBE_COUNT = 10_000  # most entries per descriptor without count or max_in_flight


class DescriptorRead(list):  # type: ignore[type-arg]
    """One descriptor-mode read: (Descriptor, ids) per stream; len() counts entries."""

    def __len__(self) -> int:
        return sum(d.count for d, _ in self)


class from_redis_consumer_group(StreamSource):
    """Read streams as one consumer of a consumer group; acknowledge entries when done.

    Parameters
    ----------
    streams: str, list of str, or dict of name -> id
        The stream(s). With a dict, the id is where the group starts when this source has
        to create it (see ``group_start_id``).
    group_name, consumer_name: str
        Consumers of one group share the entries: each goes to one consumer.
    client_params, url:
        As for from_redis_streams.
    timeout: float
        Seconds one XREADGROUP blocks before trying again; 0 or < 0.001: forever.
    count: int, optional
        Most entries per read; None reads all there are.
    replay_pending: bool
        At start, first emit this consumer's own pending entries (delivered before, never
        acknowledged: e.g. it crashed), then new ones.
    heartbeat_interval: float, optional
        Publish the consumer name on the pub/sub channel ``"<group_name>:heartbeats"`` every
        this many seconds, and watch the others' heartbeats.
    claim_timeout: float
        With heartbeats on: a consumer with pending entries that has been silent this long
        (seconds) is taken for dead; its pending entries idle that long are claimed (XCLAIM)
        and emitted here.
    autoclaim_idle: float, optional
        Seconds; every half that, XAUTOCLAIM entries of any consumer pending longer than
        this (for groups without heartbeats). Choose it longer than an entry can take to
        get through the pipeline, or live consumers' work is taken over (duplicates).
    group_start_id: str
        Where a group created here starts: "0" (default: entries already in the stream
        are read too) or "$" (only new entries).
    convert, encoding, batch:
        As for from_redis_streams. A batch is acknowledged as a whole when everything
        downstream is done with it. With ``batch=True``, entries claimed from other
        consumers or replayed after a reconnect come as a list of Messages (a sequence
        of the same (stream, id, data) tuples) rather than a StreamBatch; with
        ``batch="arrow"`` every emitted item is a pyarrow.RecordBatch.

    Acknowledgement: every emitted entry carries a streamz reference count
    (``metadata=[{"ref": ...}]``); when nothing downstream holds it any more (partition
    flushed, sink written, ...) its id joins the next XACK, sent in the background as one
    XACK per stream for all ids gathered meanwhile. A crash before that means redelivery
    (replay at restart, or a claim by another consumer), never loss.
    """

    _kind = "consumer group"

    def __init__(
        self,
        streams: str | list[str] | Mapping[str, str],
        group_name: str,
        consumer_name: str,
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        count: int | None = None,
        replay_pending: bool = True,
        heartbeat_interval: float | None = None,
        claim_timeout: float = 10,
        convert: bool = True,
        encoding: str | None = "utf-8",
        batch: bool | str = False,
        autoclaim_idle: float | None = None,
        group_start_id: str = "0",
        url: str | None = None,
        max_deliveries: int | None = None,
        dead_letter_stream: str | None = None,
        retry_after: float = RETRY_AFTER,
        max_in_flight: int | None = MAX_IN_FLIGHT,
        lag_warning: int | None = None,
        lag_interval: float = LAG_INTERVAL,
        descriptors: bool = False,
        **kwargs: Any,
    ) -> None:
        check_start_id(group_start_id, "(group_start_id)")
        self.group_start_id = group_start_id
        self._init_streams(normalize_streams(streams, group_start_id), count, timeout, batch)
        self.group_name = check_name(group_name, "group_name")
        self.consumer_name = check_name(consumer_name, "consumer_name")
        self.replay_pending = bool(replay_pending)
        self.heartbeat_interval = check_positive(heartbeat_interval, "heartbeat_interval")
        self.claim_timeout = check_positive(claim_timeout, "claim_timeout", allow_none=False)
        if self.heartbeat_interval is not None and self.claim_timeout <= self.heartbeat_interval:  # type: ignore[operator]
            raise ValueError(
                f"claim_timeout ({claim_timeout}) must be longer than heartbeat_interval "
                f"({heartbeat_interval}), or live consumers are taken for dead"
            )
        self.autoclaim_idle = check_positive(autoclaim_idle, "autoclaim_idle")
        self._init_dead_letters(max_deliveries, dead_letter_stream, retry_after)
        self.max_in_flight = check_count(max_in_flight, "max_in_flight")
        self.descriptors = bool(descriptors)
        if self.descriptors:
            if batch is not False:
                raise ValueError("descriptors=True emits Descriptors: leave batch unset")
            self.batch = "messages"  # what is replayed or claimed: fetched already
        self._read_script: Any = None
        self._reserved = 0  # entries read and not emitted yet
        if lag_warning is not None and (
            isinstance(lag_warning, bool) or not isinstance(lag_warning, int) or lag_warning < 0
        ):
            raise ValueError(f"lag_warning must be None or an int >= 0, not {lag_warning!r}")
        self.lag_warning = lag_warning
        self.lag_interval = check_positive(lag_interval, "lag_interval", allow_none=False)
        self.acker: Acker | None = None
        self._resync = False
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )
        self.claims = Claims(
            lambda: self.client, list(self.streams), self.group_name, self.consumer_name,
            self._deliver_claimed, heartbeat_interval=self.heartbeat_interval,
            claim_timeout=self.claim_timeout, autoclaim_idle=self.autoclaim_idle,  # type: ignore[arg-type]
            encoding=self.encoding, what=self._what,
        )  # fmt: skip

    def _init_dead_letters(
        self, max_deliveries: int | None, dead_letter_stream: str | None, retry_after: float
    ) -> None:
        self.max_deliveries = check_count(max_deliveries, "max_deliveries")
        if (max_deliveries is None) != (dead_letter_stream is None):
            raise ValueError(
                "max_deliveries and dead_letter_stream go together: an entry delivered "
                "max_deliveries times is moved to dead_letter_stream"
            )
        self.dead_letter_stream: str | None = None
        if dead_letter_stream is not None:
            self.dead_letter_stream = check_name(dead_letter_stream, "dead_letter_stream")
        if self.dead_letter_stream in self.streams:
            raise ValueError(f"dead_letter_stream {dead_letter_stream!r} is a stream read here")
        self.retry_after = check_positive(retry_after, "retry_after", allow_none=False)
        self.dead_letters: DeadLetters | None = None
        self.retries: Retries | None = None

    def lag(self, timeout: float = 10.0) -> dict[str, Lag]:
        """Per stream, how far behind the group is: ``Lag(lag, pending,
        oldest_pending_age)`` (XINFO GROUPS lag, XPENDING count, seconds since the oldest
        pending entry was added). From any thread but the loop's (there: ``await alag()``),
        while the source runs."""
        if self.client is None or self.loop is None:
            raise RuntimeError(f"{self._what}: lag() needs the source started")
        if on_loop_thread(self.loop):
            raise RuntimeError("lag() would block the loop: await source.alag() instead")
        fut = asyncio.run_coroutine_threadsafe(self.alag(), self.loop.asyncio_loop)
        return fut.result(timeout)

    async def alag(self) -> dict[str, Lag]:
        """lag(), on the source's loop."""
        if self.client is None:
            raise RuntimeError(f"{self._what}: lag() needs the source started")
        return await group_lag(self.client, list(self.streams), self.group_name)

    @property
    def claimed(self) -> int:
        """Entries taken over from other consumers (XCLAIM, XAUTOCLAIM) since created."""
        return self.claims.claimed

    def _names_for_log(self) -> str:
        names = ", ".join(map(repr, self.streams))
        return f"{names}; group {self.group_name!r}, consumer {self.consumer_name!r}"

    # -- setup ------------------------------------------------------------------------------

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        await self._check_types(list(self.streams), "stream")
        await self._create_groups()
        self.acker = Acker(lambda: self.client, self.group_name, self._what)
        self._resync = self.replay_pending
        for task in self.claims.tasks():
            self._spawn(task)
        if self.dead_letter_stream is not None:
            self.dead_letters = DeadLetters(
                lambda: self.client, self.group_name, self.dead_letter_stream, self._what
            )
            self.retries = Retries(self.retry_after, self._redeliver, self._what)  # type: ignore[arg-type]
            self._spawn(self.retries.run())
        if self.lag_warning is not None:
            self._spawn(
                watch_lag(
                    self.client, list(self.streams), self.group_name, self.lag_warning,
                    self.lag_interval, self._what,
                )
            )  # fmt: skip

    async def _create_groups(self) -> None:
        assert self.client is not None
        for name, start in self.streams.items():
            try:
                await self.client.execute_command(
                    "XGROUP", "CREATE", name, self.group_name, start, "MKSTREAM"
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                log.info("%s: created group at %s on stream %r", self._what, start, name)

    async def _close_more(self) -> None:
        for sender in (self.acker, self.dead_letters):
            if sender is not None:
                await sender.flush(timeout=5.0)
                sender.cancel()

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> Any:
        assert self.client is not None and self.acker is not None
        count = self.count
        limit = self.max_in_flight
        if limit is not None:
            # Read no more than fits: emitted-and-unfinished plus read-and-unemitted entries
            # stay within max_in_flight. Wait for a tenth of it (or `count`) to free up.
            needed = max(1, min(count or limit, limit // 10))
            room = await self.acker.wait_for_room(limit, needed, self._outside)
            count = room if count is None else min(count, room)
        if self.descriptors:
            return await self._read_ids(count or self.max_in_flight or DESCRIBE_COUNT)
        streams = dict.fromkeys(self.streams, ">")
        return await axreadgroup_batch(
            self.client, self.group_name, self.consumer_name, streams, count, self._block,
            encoding=self.encoding,
        )  # fmt: skip

    async def _read_ids(self, count: int) -> DescriptorRead:
        """Descriptor mode: deliver up to `count` new entries per stream to ourselves and
        describe them (one script per stream: nothing but ids leaves Redis). When there is
        nothing new, wait (XREAD BLOCK) until there is, and return nothing."""
        assert self.client is not None
        if self._read_script is None:
            self._read_script = self.client.register_script(READ_IDS_SCRIPT)
        out = DescriptorRead()
        lasts: dict[str, Any] = {}
        for stream in self.streams:
            args = [self.group_name, self.consumer_name, count]
            ids, last = await self._read_script(keys=[stream], args=args, client=self.client)
            ids = [as_str(i) for i in ids]
            lasts[stream] = last
            if ids:
                d = Descriptor(
                    stream, ids[0], ids[-1], len(ids), self.url, self.client_params, self.encoding
                )
                out.append((d, ids))
        if not out:
            await axread_batch(self.client, lasts, 1, self._block, self.encoding)
        return out

    async def _emit_descriptors(self, read: DescriptorRead) -> int:
        assert self.acker is not None
        for d, ids in read:
            exc = await emit_one(self, d, BatchAckRef(self.acker, {d.stream: ids}))
            if exc is not None:
                self.acker.not_done_many({d.stream: ids})
                for entry_id in ids:
                    self._failed_once(d.stream, entry_id, 1, exc)
        return len(read)

    def _outside(self) -> int:
        """Outstanding entries the acker does not see: read and not emitted yet (the next
        read, sent meanwhile, counts them), failed and waiting for their retry."""
        return self._reserved + (len(self.retries.queued) if self.retries is not None else 0)

    def _advance(self, batch: Any) -> None:
        self._reserved = len(batch)

    def _lost_connection(self) -> None:
        # A reply lost on the way was delivered all the same: replay the pending list.
        self._resync = True

    async def _response_error(self, exc: redis.exceptions.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            log.warning("%s: group missing (%s); creating it again", self._what, exc)
            await self._create_groups()
            self._resync = True
            return
        await super()._response_error(exc)

    async def _before_read(self) -> None:
        if not self._resync:
            return
        backoff = Backoff(f"{self._what} replay")
        while not self.stopped:
            try:
                await self._replay_own_pending()
            except TRANSIENT_ERRORS as exc:
                await self._pause(backoff.next_delay(exc))
                continue
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._create_groups()
                continue
            backoff.succeeded()
            self._resync = False
            return

    async def _replay_own_pending(self) -> None:
        """Emit this consumer's pending entries (XREADGROUP from id 0 until empty), except
        those still in flight here."""
        assert self.client is not None
        positions: dict[str, Any] = dict.fromkeys(self.streams, "0-0")
        replayed = 0
        while positions and not self.stopped:
            batch = await self._wait(
                axreadgroup_batch(
                    self.client, self.group_name, self.consumer_name, positions, self.count,
                    encoding=self.encoding,
                )
            )  # fmt: skip
            got = self._where_ids(batch)
            for name in list(positions):
                if name in got:
                    positions[name] = got[name]
                else:
                    del positions[name]
            if len(batch):
                replayed += await self._deliver(batch, skip_inflight=True)
        if replayed:
            log.info("%s: replayed %d pending entries", self._what, replayed)

    # -- emission with acknowledgement -------------------------------------------------

    async def _deliver(
        self,
        batch: Any,
        stream: Any = None,
        skip_inflight: bool = False,
        errors: dict[str, str] | None = None,
    ) -> int:
        """Emit a batch, each entry (or the batch) with its reference count; return how many
        entries were emitted. A fresh read (no `stream`, no `skip_inflight`) is the entries'
        first delivery; anything else gets its delivery counts from XPENDING. `stream`: the
        stream of a claim batch (XCLAIM / XAUTOCLAIM replies carry no stream name).
        `skip_inflight`: leave out entries emitted before and not finished yet (replays after
        a reconnect, our own entries autoclaimed). `errors`: id -> the exception text of a
        retried entry's last failure."""
        if stream is None and not skip_inflight:
            try:
                if type(batch) is DescriptorRead:
                    return await self._emit_descriptors(batch)
                if self.batch in WHOLE:
                    return await self._emit_batch(batch)
                return await self._emit_messages(batch_messages(batch))
            finally:
                self._reserved = 0
                assert self.acker is not None
                self.acker.freed()
        if stream is not None and self.encoding is None:
            stream = stream.encode()
        msgs = self._still_to_do(batch_messages(batch, stream), skip_inflight)
        if not msgs:
            return 0
        msgs = await self._counted(msgs, errors or {})
        return await self._emit_messages(msgs, one_by_one=errors is not None)

    async def _emit_batch(self, batch: Any) -> int:
        """The StreamBatch of a read itself, acknowledged as a whole."""
        assert self.acker is not None
        ids = ids_by_stream(batch)
        exc = await emit_one(self, read_item(self.batch, batch), BatchAckRef(self.acker, ids))
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
            return await emit_each(
                self,
                msgs,
                ref_for=lambda m: AckRef(acker, m[0], m[1]),  # count 1: ours until emitted
                failed=self._failed,
            )
        # A list of Messages (also in batch=True mode for claimed or replayed entries);
        # retried entries come one per list, so one poison entry condemns no other.
        for part in ([m] for m in msgs) if one_by_one else (msgs,):
            item = messages_item(self.batch, part, self.encoding)
            exc = await emit_one(self, item, BatchAckRef(acker, message_ids(part)))
            if exc is not None:
                for m in part:
                    self._failed(m, exc)
        return len(msgs)

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
        assert self.client is not None
        ids: dict[str, list[str]] = {}
        for m in msgs:
            ids.setdefault(as_str(m[0]), []).append(as_str(m[1]))
        counts = {
            stream: await delivery_counts(
                self.client, stream, self.group_name, self.consumer_name, stream_ids
            )
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

    async def _deliver_claimed(self, batch: Any, stream: str, skip_inflight: bool) -> int:
        return await self._deliver(batch, stream=stream, skip_inflight=skip_inflight)

    async def _redeliver(self, stream: str, items: list[tuple[str, str]]) -> None:
        """Deliver failed entries again (XCLAIM to ourselves: it counts the delivery). The
        min-idle-time leaves out what another consumer took over meanwhile."""
        assert self.client is not None and self.retries is not None
        min_idle_ms = int(self.retries.retry_after * 500)
        ids = [entry_id for entry_id, _ in items]
        batch = await axclaim_batch(
            self.client, stream, self.group_name, self.consumer_name, min_idle_ms, ids,
            encoding=self.encoding,
        )  # fmt: skip
        if len(batch):
            await self._deliver(batch, stream=stream, errors=dict(items))

    async def _drop_prefetch(self, fut: asyncio.Future[Any]) -> None:
        # A read that already came back was delivered to us: emit it rather than leave it
        # pending until the next start.
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            try:
                await self._deliver(fut.result())
            except Exception as exc:
                log.error("%s: %s", self._what, exc, exc_info=exc)
            return
        await super()._drop_prefetch(fut)


if not hasattr(Stream, "from_redis_consumer_group"):  # without the entry points
    Stream.register_api(staticmethod)(from_redis_consumer_group)
