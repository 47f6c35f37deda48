"""from_redis_consumer_group: read streams as one consumer of a group, acknowledge entries
once everything downstream is done with them, replay and claim what others left."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis
from streamz import Stream

from fastredis.streamz.acks import Acker
from fastredis.streamz.checks import (
    check_count,
    check_name,
    check_positive,
    check_start_id,
    normalize_streams,
)
from fastredis.streamz.claims import Claims
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, log
from fastredis.streamz.deadletters import DeadLetters
from fastredis.streamz.deliverer import Deliverer
from fastredis.streamz.deliveries import Retries
from fastredis.streamz.group_reader import GroupReader
from fastredis.streamz.lag import Lag, group_lag, watch_lag
from fastredis.streamz.loops import on_loop_thread
from fastredis.streamz.streams import StreamSource

__all__ = ["from_redis_consumer_group"]

RETRY_AFTER = 3.0  # seconds before a failed entry is delivered again (with max_deliveries)
MAX_IN_FLIGHT = 10_000  # entries emitted and not finished beyond which reading pauses
LAG_INTERVAL = 5.0  # seconds between lag checks (with lag_warning)


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
        if self.heartbeat_interval is not None and self.claim_timeout <= self.heartbeat_interval:
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
        if lag_warning is not None and (
            isinstance(lag_warning, bool) or not isinstance(lag_warning, int) or lag_warning < 0
        ):
            raise ValueError(f"lag_warning must be None or an int >= 0, not {lag_warning!r}")
        self.lag_warning = lag_warning
        self.lag_interval = check_positive(lag_interval, "lag_interval", allow_none=False)
        self._resync = False
        self._sending = asyncio.Lock()  # made again at each start, on the loop
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )
        self.deliverer = Deliverer(
            self, lambda: self.client, self.group_name, self.consumer_name,
            batch=self.batch, encoding=self.encoding, max_in_flight=self.max_in_flight,
            max_deliveries=self.max_deliveries, dead_letter_stream=self.dead_letter_stream,
            retry_after=self.retry_after, what=self._what,
        )  # fmt: skip
        self.reader = GroupReader(
            lambda: self.client, self.streams, self.group_name, self.consumer_name,
            self.deliverer, self._where_ids, count=self.count, block=self._block,
            encoding=self.encoding, descriptors=self.descriptors, url=self.url,
            client_params=self.client_params, heartbeat_interval=self.heartbeat_interval,
            claim_timeout=self.claim_timeout, autoclaim_idle=self.autoclaim_idle, what=self._what,
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

    # -- what it is made of (each start makes new senders) ------------------------------

    @property
    def acker(self) -> Acker | None:
        """The batched XACKs and the entries in flight."""
        return self.deliverer.acker

    @property
    def dead_letters(self) -> DeadLetters | None:
        return self.deliverer.dead_letters

    @property
    def retries(self) -> Retries | None:
        return self.deliverer.retries

    @property
    def claims(self) -> Claims:
        """Heartbeats and claims."""
        return self.reader.claims

    @property
    def claimed(self) -> int:
        """Entries taken over from other consumers (XCLAIM, XAUTOCLAIM) since created."""
        return self.claims.claimed

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

    def _names_for_log(self) -> str:
        names = ", ".join(map(repr, self.streams))
        return f"{names}; group {self.group_name!r}, consumer {self.consumer_name!r}"

    # -- the source's life ----------------------------------------------------------------

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        await self._check_types(list(self.streams), "stream")
        await self.reader.create_groups()
        self._resync = self.replay_pending
        self._sending = asyncio.Lock()
        self.reader.start()
        for task in [*self.deliverer.start(), *self.claims.tasks()]:
            self._spawn(task)
        if self.lag_warning is not None:
            self._spawn(
                watch_lag(
                    self.client, list(self.streams), self.group_name, self.lag_warning,
                    self.lag_interval, self._what,
                )
            )  # fmt: skip

    async def _close_more(self) -> None:
        await self.deliverer.close()
        await self.reader.close()

    def _reads_ahead(self) -> int:
        return self.reader.read_ahead

    async def _read(self) -> Any:
        # Reads are sent in order, one at a time waiting for room.
        async with self._sending:
            count = await self.deliverer.room(self.count)
            reply = await self.reader.send_read(count, self.max_in_flight)
        batch = await reply
        self.deliverer.arrived(count, batch)
        return batch

    async def _deliver(self, batch: Any) -> None:
        await self.deliverer.deliver_read(batch)

    def _lost_connection(self) -> None:
        # A reply lost on the way was delivered all the same: replay the pending list.
        self._resync = True

    async def _response_error(self, exc: redis.exceptions.ResponseError) -> None:
        if "NOGROUP" in str(exc):
            log.warning("%s: group missing (%s); creating it again", self._what, exc)
            await self.reader.create_groups()
            self._resync = True
            return
        await super()._response_error(exc)

    async def _before_read(self) -> None:
        """Replay our own pending entries when due (at start, after a reconnect)."""
        if not self._resync:
            return
        backoff = Backoff(f"{self._what} replay")
        while not self.stopped:
            try:
                await self.reader.replay_own_pending(self._wait, lambda: self.stopped)
            except TRANSIENT_ERRORS as exc:
                await self._pause(backoff.next_delay(exc))
                continue
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.reader.create_groups()
                continue
            backoff.succeeded()
            self._resync = False
            return

    async def _drop_ahead(self) -> None:
        # Reads that already came back were delivered to us: emit them (in order) rather
        # than leave them pending until the next start. The rest stay pending.
        ahead = self._ahead
        while ahead and ahead[0].done():
            fut = ahead.popleft()
            if fut.cancelled() or fut.exception() is not None:
                break
            try:
                await self.deliverer.deliver_read(fut.result())
            except Exception as exc:
                log.error("%s: %s", self._what, exc, exc_info=exc)
        await super()._drop_ahead()

    async def _cancel_ahead(self) -> None:
        await super()._cancel_ahead()
        self.deliverer.reads_dropped()


if not hasattr(Stream, "from_redis_consumer_group"):  # without the entry points
    Stream.register_api(staticmethod)(from_redis_consumer_group)
