"""Parking: the one blocking read that watches every idle stream of the hub.

A group of `fastredis.server.reads.hub` whose read found nothing new parks here. One held
connection runs a blocking XREAD (COUNT 1) over the streams of every parked group, from
the lowest cursor of each; a group is woken when one of its streams has an entry past
its cursor. When the parked set changes, the read is cut short with CLIENT UNBLOCK
(changes gathered for a moment) and issued again.

On a Redis Cluster one blocking XREAD cannot cover streams of several slots (it would
hold a connection per slot), so the same read is made without BLOCK, split by slot and
pipelined per node, every `CLUSTER_POLL_S` (longer when a round takes long); a new entry
of an idle stream waits at most that long. (Blocking each idle group's own read instead held
a tail turn for 250 ms at a time: with 200 idle pulls a new entry took up to 2 s.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from fastredis._resp import StreamBatch
from fastredis.ids import parse_id
from fastredis.redis_io import AnyAsyncRedis, HeldConnection
from fastredis.server.reads.cursor import StreamCursor

__all__ = ["CLUSTER_POLL_S", "PARK_BLOCK_MS", "Parked", "Parking", "ParkingOwner"]

PARK_BLOCK_MS = 30_000  # the parking read's BLOCK (it is re-issued when groups change)
# s: changes to the parked set are gathered this long, and longer per parked group
# (each change re-issues the parking read, whose size is the number of idle streams: at
# 10,000 a re-issue costs milliseconds); a newly parked stream's first entry waits at
# most this much more
UNBLOCK_AFTER = 0.025
UNBLOCK_AFTER_PER_GROUP = 10e-6
# s: a cluster's parked streams are read this often at most; a round that took long
# (many idle streams) is followed by a pause of CLUSTER_POLL_SHARE times its length,
# so polling takes at most about 1 / (1 + CLUSTER_POLL_SHARE) of the server
CLUSTER_POLL_S = 0.05
CLUSTER_POLL_SHARE = 4.0


class ParkingOwner(Protocol):
    """What parking needs of its hub: the Redis client, whether it is a cluster, and a
    way to run a task it does not await."""

    client: AnyAsyncRedis
    cluster: bool

    def spawn(self, coro: Any) -> None: ...


class Parked(Protocol):
    """What parking needs of a parked group: its cursor (read, never set here)."""

    @property
    def cursor(self) -> StreamCursor: ...


class Parking:
    """One blocking XREAD (COUNT 1) over the streams of every parked group, on one held
    connection; a group is woken when one of its streams has an entry past its cursor.
    When the parked set changes, the read is cut short with CLIENT UNBLOCK. On a
    cluster the read is made without BLOCK, round after round (`_poll`)."""

    def __init__(self, hub: ParkingOwner) -> None:
        self.hub = hub
        self.parked: dict[Parked, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn = HeldConnection(hub.client)
        self._client_id: int | None = None
        self._blocked = False
        self._unblock: asyncio.TimerHandle | None = None

    async def wait(self, group: Parked) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.parked[group] = fut
        self._changed()
        try:
            await fut
        finally:
            self.parked.pop(group, None)

    def wake(self, group: Parked, exc: BaseException | None = None) -> None:
        fut = self.parked.pop(group, None)
        if not self.parked:
            self._changed()  # nothing left to wait for: end the blocked read
        if fut is not None and not fut.done():
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

    def _changed(self) -> None:
        if not self.parked and not self._blocked:
            return
        if self.hub.cluster:  # the polling read sees the change in its next round
            if self.parked and (self._task is None or self._task.done()):
                self._task = asyncio.get_running_loop().create_task(self._poll())
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        elif self._blocked and self._unblock is None:
            after = max(UNBLOCK_AFTER, UNBLOCK_AFTER_PER_GROUP * len(self.parked))
            self._unblock = asyncio.get_running_loop().call_later(after, self._cut)

    def _cut(self) -> None:
        self._unblock = None
        if self._blocked and self._client_id is not None:
            self.hub.spawn(self.hub.client.execute_command("CLIENT", "UNBLOCK", self._client_id))

    async def _run(self) -> None:
        conn = self._conn
        try:
            # held since the last run: Redis may have closed it meanwhile (restarted)
            await conn.read_idempotent(self._read)
        except asyncio.CancelledError:
            await conn.release(broken=True)
            raise
        except Exception as exc:
            await conn.release(broken=True)
            self._client_id = None
            self._fail_all(exc)

    async def _read(self, conn: HeldConnection) -> None:
        """The parking read, again while groups are parked."""
        if self._client_id is None or not conn.held:  # a new connection: its id
            await conn.send_commands([[b"CLIENT", b"ID"]])
            self._client_id = int(await conn.read_reply())
        while self.parked:
            streams = self._lowest()
            self._blocked = True
            try:
                batch = await conn.xread(streams, 1, PARK_BLOCK_MS)
            finally:
                self._blocked = False
            if len(batch):
                self._wake_readers(batch)

    async def _poll(self) -> None:
        """The cluster's parking: the parked streams read without BLOCK, every round."""
        loop = asyncio.get_running_loop()
        try:
            while self.parked:
                started = loop.time()
                batch = await self._conn.xread(self._lowest(), 1, None)
                if len(batch):
                    self._wake_readers(batch)
                took = loop.time() - started
                await asyncio.sleep(max(CLUSTER_POLL_S - took, CLUSTER_POLL_SHARE * took))
        except Exception as exc:
            self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        """The parking read failed: every parked group gets the error."""
        for group in list(self.parked):
            self.wake(group, exc)

    def _lowest(self) -> dict[str, str]:
        """Per stream, the lowest cursor of the parked groups (ids are parsed only for
        a stream two groups share: with 10,000 idle streams this runs per change, and
        on a cluster every round)."""
        lowest: dict[str, str] = {}
        for group in self.parked:
            for sid, eid in group.cursor.ids.items():
                mine = lowest.setdefault(sid, eid)
                if mine != eid and parse_id(eid) < parse_id(mine):
                    lowest[sid] = eid
        return lowest

    def _wake_readers(self, batch: StreamBatch) -> None:
        found = {
            (k.decode() if isinstance(k, bytes) else k): parse_id(v)
            for k, v in batch.last_ids().items()
        }
        for group in list(self.parked):
            ids = group.cursor.ids
            if any(sid in found and found[sid] > parse_id(ids[sid]) for sid in ids):
                self.wake(group)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._conn.release()
