"""The reading half of a consumer group: create the groups, read new entries
(XREADGROUP, or only their ids in descriptor mode), replay this consumer's own pending
entries, and claim those of dead consumers. What it gets goes to a Deliverer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis
import redis.asyncio

from fastredis._resp import READ
from fastredis.redis_io import (
    AnyAsyncRedis,
    ReadPipeline,
    axread_batch,
    axreadgroup_batch,
    is_cluster,
)
from fastredis.redis_io.commands import xreadgroup_args
from fastredis.streamz.claims import Claims
from fastredis.streamz.connection import as_str, log, running_client
from fastredis.streamz.deliverer import Deliverer
from fastredis.streamz.descriptors import READ_IDS_SCRIPT, Descriptor, DescriptorRead

__all__ = ["DESCRIBE_COUNT", "READ_AHEAD", "GroupReader"]

DESCRIBE_COUNT = 10_000  # most entries per descriptor without count or max_in_flight
READ_AHEAD = 2  # reads of new entries under way while a batch is emitted (pipelined)

# wait(awaitable): await it so that stopping the source cancels it
Wait = Callable[[Awaitable[Any]], Awaitable[Any]]


class GroupReader:
    """Reads `streams` (name -> where a group created here starts) as `consumer` of
    `group`, for `deliverer`, which emits what is read again (replays, claims).

    `where_ids(batch)` gives the last id per stream of a batch, by our stream names.
    With `descriptors`, new entries are delivered in Redis and only described here (with
    `url` and `client_params`, where a worker fetches them). Claims (heartbeats, XCLAIM,
    XAUTOCLAIM) run as ``claims.tasks()``.

    New entries are read through one connection that carries READ_AHEAD reads at once,
    answered in the order sent (`send_read`); on a cluster, and in descriptor mode, one
    read at a time.
    """

    def __init__(
        self,
        client: Callable[[], AnyAsyncRedis | None],
        streams: Mapping[str, str],
        group: str,
        consumer: str,
        deliverer: Deliverer,
        where_ids: Callable[[Any], dict[str, Any]],
        *,
        count: int | None,
        block: int,
        encoding: str | None,
        descriptors: bool,
        url: str | None,
        client_params: Mapping[str, Any],
        heartbeat_interval: float | None,
        claim_timeout: float,
        autoclaim_idle: float | None,
        what: str,
    ) -> None:
        self._client = client
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.deliverer = deliverer
        self._where_ids = where_ids
        self.count = count
        self.block = block
        self.encoding = encoding
        self.descriptors = descriptors
        self.url, self.client_params = url, client_params  # put in each Descriptor
        self.what = what
        self._read_script: Any = None
        self._pipeline: ReadPipeline | None = None
        self.claims = Claims(
            client, list(streams), group, consumer, deliverer.deliver_again,
            heartbeat_interval=heartbeat_interval, claim_timeout=claim_timeout,
            autoclaim_idle=autoclaim_idle, encoding=encoding, what=what,
        )  # fmt: skip

    @property
    def client(self) -> AnyAsyncRedis:
        return running_client(self._client, "group reads")

    async def create_groups(self) -> None:
        """XGROUP CREATE ... MKSTREAM for each stream (a group that exists is kept)."""
        for name, start in self.streams.items():
            try:
                await self.client.execute_command(
                    "XGROUP", "CREATE", name, self.group, start, "MKSTREAM"
                )
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            else:
                log.info("%s: created group at %s on stream %r", self.what, start, name)

    def start(self) -> None:
        """Each start of the source (a new client): a new pipeline for the reads."""
        client = self.client
        self._pipeline = None if self.descriptors or is_cluster(client) else ReadPipeline(client)

    async def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.close()

    @property
    def read_ahead(self) -> int:
        """How many reads of new entries may be under way at once."""
        return 1 if self._pipeline is None else READ_AHEAD

    async def send_read(self, count: int | None, max_in_flight: int | None) -> Awaitable[Any]:
        """Send a read of new entries (as `read`); return what awaits its reply. Reads
        are answered in the order sent."""
        if self._pipeline is None:
            return asyncio.ensure_future(self.read(count, max_in_flight))
        streams = dict.fromkeys(self.streams, ">")
        args = xreadgroup_args(self.group, self.consumer, streams, count, self.block, False)
        return await self._pipeline.send(args, READ, self.encoding, self.block)

    async def read(self, count: int | None, max_in_flight: int | None) -> Any:
        """New entries, at most `count` per stream (None: all there are); in descriptor
        mode, at most `count` (or max_in_flight, or DESCRIBE_COUNT) described."""
        if self.descriptors:
            return await self._read_ids(count or max_in_flight or DESCRIBE_COUNT)
        streams = dict.fromkeys(self.streams, ">")
        return await axreadgroup_batch(
            self.client, self.group, self.consumer, streams, count, self.block,
            encoding=self.encoding,
        )  # fmt: skip

    async def _read_ids(self, count: int) -> DescriptorRead:
        """Descriptor mode: deliver up to `count` new entries per stream to ourselves and
        describe them (one script per stream: nothing but ids leaves Redis). When there is
        nothing new, wait (XREAD BLOCK) until there is, and return nothing."""
        client = self.client
        if self._read_script is None:
            self._read_script = client.register_script(READ_IDS_SCRIPT)
        out = DescriptorRead()
        lasts: dict[str, Any] = {}
        for stream in self.streams:
            args = [self.group, self.consumer, count]
            raw_ids, last = await self._read_script(keys=[stream], args=args, client=client)
            ids = [as_str(i) for i in raw_ids]
            lasts[stream] = last
            if ids:
                d = Descriptor(
                    stream, ids[0], ids[-1], len(ids), self.url, self.client_params,
                    self.encoding,
                )  # fmt: skip
                out.append((d, ids))
        if not out:
            await axread_batch(client, lasts, 1, self.block, self.encoding)
        return out

    async def replay_own_pending(self, wait: Wait, stopped: Callable[[], bool]) -> None:
        """Emit this consumer's pending entries (XREADGROUP from id 0 until empty), except
        those still in flight here."""
        positions: dict[str, Any] = dict.fromkeys(self.streams, "0-0")
        replayed = 0
        while positions and not stopped():
            batch = await wait(
                axreadgroup_batch(
                    self.client, self.group, self.consumer, positions, self.count,
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
                replayed += await self.deliverer.deliver_again(batch, skip_inflight=True)
        if replayed:
            log.info("%s: replayed %d pending entries", self.what, replayed)
