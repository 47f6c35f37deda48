"""Taking over the entries of dead consumers: heartbeats, silent-consumer detection,
XCLAIM, and XAUTOCLAIM for groups without heartbeats.

A ``Claims`` works for one consumer of a group. It gets what it claims to that consumer
through the ``deliver`` callback it was given, and knows nothing else of the source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis
import redis.asyncio

from fastredis.redis_io import AnyAsyncRedis, axautoclaim_batch, axclaim_batch
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff, as_str, log, running_client

__all__ = ["CLAIM_CHUNK", "Claims", "Deliver", "heartbeat_channel"]

CLAIM_CHUNK = 1000  # pending entries looked at / claimed per XPENDING / XCLAIM round

# deliver(batch, stream, skip_inflight) -> entries emitted. `stream`: claim replies name
# none. `skip_inflight`: leave out what is still in flight here (our own, autoclaimed).
Deliver = Callable[[Any, str, bool], Awaitable[int]]


def heartbeat_channel(group_name: str) -> str:
    """The pub/sub channel a consumer group's heartbeats go to."""
    return f"{group_name}:heartbeats"


class Claims:
    """Heartbeats and claims of one consumer (``consumer``) of ``group`` on ``streams``."""

    def __init__(
        self,
        client: Callable[[], AnyAsyncRedis | None],
        streams: list[str],
        group: str,
        consumer: str,
        deliver: Deliver,
        *,
        heartbeat_interval: float | None,
        claim_timeout: float,
        autoclaim_idle: float | None,
        encoding: str | None,
        what: str,
    ) -> None:
        self._client = client
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.deliver = deliver
        self.heartbeat_interval = heartbeat_interval
        self.claim_timeout = claim_timeout
        self.autoclaim_idle = autoclaim_idle
        self.encoding = encoding
        self.what = what
        self.channel = heartbeat_channel(group)
        self.seen: dict[str, float] = {}  # consumer -> loop time of its last heartbeat
        self.listening_since: float | None = None  # loop time we started hearing beats
        self.claimed = 0  # entries taken over from other consumers

    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The coroutines to run while the consumer runs (cancelled when it stops)."""
        self.seen.clear()
        self.listening_since = None
        out: list[Coroutine[Any, Any, None]] = []
        if self.heartbeat_interval is not None:
            out += [self._listen_heartbeats(), self._heartbeats(), self._watch_silent()]
        if self.autoclaim_idle is not None:
            out.append(self._autoclaim())
        return out

    @property
    def client(self) -> AnyAsyncRedis:
        return running_client(self._client, "claims run")

    # -- heartbeats -----------------------------------------------------------------------

    async def _listen_heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(f"{self.what} heartbeats")
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # Silence only counts from the moment we listen.
                self.listening_since = loop.time()
                backoff.succeeded()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self.seen[as_str(msg["data"])] = loop.time()
            except TRANSIENT_ERRORS as exc:
                self.listening_since = None
                await asyncio.sleep(backoff.next_delay(exc))
            finally:
                await pubsub.aclose()

    async def _heartbeats(self) -> None:
        """PUBLISH our name every heartbeat_interval (its own task: a long claim must not
        make us look dead)."""
        assert self.heartbeat_interval is not None
        backoff = Backoff(f"{self.what} heartbeats")
        while True:
            try:
                await self.client.publish(self.channel, self.consumer)
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(backoff.next_delay(exc))
                continue
            backoff.succeeded()
            await asyncio.sleep(self.heartbeat_interval)

    # -- silent consumers (XCLAIM) --------------------------------------------------------

    async def _watch_silent(self) -> None:
        """Every heartbeat_interval, claim the pending entries of silent consumers."""
        assert self.heartbeat_interval is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.claim_from_silent()
            except TRANSIENT_ERRORS:
                pass  # the heartbeat task logs the outage; try again next round
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("%s: claiming failed: %s", self.what, exc)
            except Exception as exc:  # keep watching whatever a claim's emission raised
                log.error("%s: claiming failed: %s", self.what, exc, exc_info=exc)

    async def claim_from_silent(self) -> None:
        """Claim the pending entries of consumers silent for longer than claim_timeout."""
        now = asyncio.get_running_loop().time()
        since = self.listening_since
        if since is None or now - since <= self.claim_timeout:
            return
        for stream in self.streams:
            info = await self.client.xpending(stream, self.group)
            for row in info.get("consumers") or ():
                consumer = as_str(row["name"])
                if consumer == self.consumer or not int(row["pending"]):
                    continue
                last = self.seen.get(consumer)
                if last is None:
                    # Never heard of: silent from now on, unless it beats.
                    self.seen[consumer] = now
                    continue
                if now - max(last, since) > self.claim_timeout:
                    await self._claim(stream, consumer)

    async def _claim(self, stream: str, consumer: str) -> None:
        idle_ms = int(self.claim_timeout * 1000)
        while True:
            rows = await self.client.xpending_range(
                stream, self.group, min="-", max="+", count=CLAIM_CHUNK,
                consumername=consumer, idle=idle_ms,
            )  # fmt: skip
            ids = [r["message_id"] for r in rows]
            if not ids:
                return
            # XCLAIM's min-idle-time: what another consumer just claimed is not idle any
            # more, so each entry is taken over by one consumer only.
            batch = await axclaim_batch(
                self.client, stream, self.group, self.consumer, idle_ms, ids,
                encoding=self.encoding,
            )  # fmt: skip
            if len(batch):
                self.claimed += len(batch)
                log.warning(
                    "%s: consumer %r silent for over %ss: claimed %d pending entries of %r",
                    self.what, consumer, self.claim_timeout, len(batch), stream,
                )  # fmt: skip
                await self.deliver(batch, stream, False)
            if len(ids) < CLAIM_CHUNK or not len(batch):
                return

    # -- idle entries of anyone (XAUTOCLAIM) ----------------------------------------------

    async def _autoclaim(self) -> None:
        assert self.autoclaim_idle is not None
        every = min(max(self.autoclaim_idle / 2, 0.05), 30.0)
        backoff = Backoff(f"{self.what} autoclaim")
        while True:
            await asyncio.sleep(every)
            try:
                for stream in self.streams:
                    await self.autoclaim(stream)
            except TRANSIENT_ERRORS as exc:
                await asyncio.sleep(backoff.next_delay(exc))
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    log.error("%s: XAUTOCLAIM failed: %s", self.what, exc)
            except Exception as exc:
                log.error("%s: XAUTOCLAIM failed: %s", self.what, exc, exc_info=exc)
            else:
                backoff.succeeded()

    async def autoclaim(self, stream: str) -> None:
        """One XAUTOCLAIM sweep of `stream`: every entry idle past autoclaim_idle."""
        assert self.autoclaim_idle is not None
        idle_ms = int(self.autoclaim_idle * 1000)
        start: Any = "0-0"
        while True:
            batch = await axautoclaim_batch(
                self.client, stream, self.group, self.consumer, idle_ms, start,
                count=CLAIM_CHUNK, encoding=self.encoding,
            )  # fmt: skip
            if len(batch):
                n = await self.deliver(batch, stream, True)
                if n:
                    self.claimed += n
                    log.warning(
                        "%s: XAUTOCLAIM took over %d entries of %r idle > %ss",
                        self.what, n, stream, self.autoclaim_idle,
                    )  # fmt: skip
            start = batch.cursor
            if start is None or as_str(start) in ("0-0", "0"):
                return
