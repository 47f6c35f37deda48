"""Pushed entries go to Redis over a few shared, pipelined connections: the write lanes.

Every push socket (and every REST POST) writes through a `PushWriter`; the writers of a
server process share `WriteLanes.size` lanes (per node on a Redis Cluster), so any
number of sockets costs that many Redis connections. A lane is one held connection:

* its flusher sends what every writer queued since it last ran in one socket write;
* its reader takes the replies in order and hands each to the writer whose message it
  answers. A writer's acks are sent by the writer's own task, so a slow socket never
  holds a lane up, and a refused write (a `BadInput`) ends only the writer it belongs
  to; the lane goes on for the others;
* a lost connection fails the writers with a message owed on that lane; the next
  message opens a new connection;
* scripts go by hash (EVALSHA, `fastredis.redis_io.lua`). A NOSCRIPT reply (Redis
  flushed its scripts, or restarted) means that message was not written: the lane
  sends nothing new until every reply owed is in, then loads every script again and
  sends the refused messages as EVAL, in order, ahead of what was queued meanwhile.
  Their commands are kept until replied (bytes already on their way to Redis). Should
  a later message of the same writer have been written before that (another
  connection loaded the scripts in between), its order is lost: that writer fails as
  on a lost connection;
* a one-entry message to a stream its writer has written to is a plain ``XADD
  NOMKSTREAM`` (`fastredis.server.writes.entries.existing_stream_command`), its script
  kept as above: a nil reply (the stream was deleted since) is handled like NOSCRIPT,
  the script sent instead (it makes the stream anew, with its epoch). Only while none
  of the writer's other messages is owed a reply: a plain XADD never meets NOSCRIPT,
  so one sent after a script that does would be written before it.

Memory is bounded per writer (`max_pending` messages, `max_unsent_bytes`) and per lane
(`LANE_UNSENT_BYTES`): a client faster than Redis waits, so its socket stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from fastredis._frames import pack_commands
from fastredis.redis_io import AnyAsyncRedis, HeldConnection, is_cluster
from fastredis.redis_io.lua import is_noscript, load_commands, with_text
from fastredis.server.edge.errors import refused
from fastredis.server.run import metrics
from fastredis.server.writes.entries import (
    Entry,
    entry_commands,
    existing_stream_command,
    one_slot_key,
)
from fastredis.server.writes.producers import ProducerSession

__all__ = ["LANE_UNSENT_BYTES", "PushWriter", "WriteLanes"]

LANE_UNSENT_BYTES = 64 << 20  # queued on one lane, not yet taken by its socket
KNOWN_STREAMS = 16  # streams a writer remembers having written to (plain XADDs)

IdsHandler = Callable[[list[str]], Awaitable[None]]
ErrorHandler = Callable[[BaseException], Awaitable[None]]


@dataclass(slots=True)
class _Message:
    """One message on a lane: whose it is, for its reply and the metrics."""

    writer: PushWriter
    packed: int  # bytes of RESP
    entries: int
    nbytes: int  # payload bytes
    sid: str | None  # the stream of a one-entry message (its errors name none)
    queued_at: float
    command: list[Any] | None  # an EVALSHA, kept until replied: sent again on NOSCRIPT
    plain: bool = False  # sent as XADD NOMKSTREAM: a nil reply sends `command` again


def _decode_ids(reply: Any) -> list[str]:
    if isinstance(reply, list):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
    return [reply.decode() if isinstance(reply, bytes) else str(reply)]


class _Lane:
    """One held connection shared by many writers, pipelined."""

    def __init__(self, conn: HeldConnection) -> None:
        self.conn = conn
        self.unsent = 0
        self.room = asyncio.Event()
        self.room.set()
        self._queued: list[Any] = []  # packed buffers not sent yet
        # None: a SCRIPT LOAD of `_resend` (its reply is no message's)
        self._queued_msgs: list[_Message | None] = []
        self._owed: deque[_Message | None] = deque()  # sent, reply not read yet
        self._noscript: list[_Message] = []  # answered NOSCRIPT: to send again as EVAL
        self._flush_wanted = asyncio.Event()
        self._reply_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def full(self) -> bool:
        return self.unsent >= LANE_UNSENT_BYTES

    def enqueue(self, bufs: list[Any], message: _Message) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._flush_loop()),
                loop.create_task(self._reply_loop()),
            ]
        self._queued.extend(bufs)
        self._queued_msgs.append(message)
        self.unsent += message.packed
        self._flush_wanted.set()

    async def _flush_loop(self) -> None:
        try:
            while True:
                await self._flush_wanted.wait()
                self._flush_wanted.clear()
                if not self._queued_msgs or self._noscript:
                    continue  # on NOSCRIPT, nothing new is sent until `_resend`
                await self.conn.acquire()  # before the reader may read from it
                bufs, self._queued = self._queued, []
                sent, self._queued_msgs = self._queued_msgs, []
                # Owed first: the reader only reads replies of messages sent.
                self._owed.extend(sent)
                self._reply_wanted.set()
                await self.conn.send(bufs)
                del bufs
                for message in sent:
                    if message is None:
                        continue
                    self.unsent -= message.packed
                    message.writer._taken(message.packed)
                if not self.full():
                    self.room.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._broken(exc)

    async def _reply_loop(self) -> None:
        try:
            while True:
                if not self._owed:
                    self._reply_wanted.clear()
                    await self._reply_wanted.wait()
                    continue
                message = self._owed[0]
                try:
                    reply: Any = await self.conn.read_reply()
                except ResponseError as exc:
                    reply = exc
                if message is None:  # a SCRIPT LOAD of `_resend`
                    self._owed.popleft()
                    continue
                self._owed.popleft()
                if message is not None:
                    self._answer(message, reply)
                if self._noscript and not self._owed:
                    self._resend()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._broken(exc)

    def _answer(self, message: _Message, reply: Any) -> None:
        if message.command is not None and (
            is_noscript(reply) or (message.plain and reply is None)
        ):
            if message.plain and message.sid is not None:
                message.writer.forget(message.sid)
            self._noscript.append(message)
            return
        if any(m.writer is message.writer for m in self._noscript):
            reply = RedisConnectionError(
                "Redis lost its scripts (SCRIPT FLUSH or a restart), or the stream was "
                "deleted, while this socket's messages were on their way, and wrote one "
                "out of order: try again"
            )
        elif isinstance(reply, ResponseError):
            reply = refused(reply, [message.sid] if message.sid is not None else [])
        message.writer._answered(message, reply)

    def _resend(self) -> None:
        """Queue the messages answered NOSCRIPT again, first, as EVAL, after loading
        every script (so no EVALSHA after them meets NOSCRIPT, as one of another
        script would if only theirs were loaded)."""
        loads = load_commands()
        bufs: list[Any] = pack_commands(loads)
        again: list[_Message | None] = [None] * len(loads)
        for message in self._noscript:
            if message.writer.error is None and message.command is not None:
                packed = pack_commands([with_text(message.command)])
                # a new _Message: the flusher may still count the first send's bytes
                resent = replace(message, packed=sum(map(len, packed)), command=None)
                again.append(resent)
                message.writer._unsent += resent.packed
                self.unsent += resent.packed
                bufs.extend(packed)
        self._noscript = []
        self._queued[:0] = bufs
        self._queued_msgs[:0] = again
        self._flush_wanted.set()

    async def _broken(self, exc: BaseException) -> None:
        """The connection failed: every writer with a message here fails; start over."""
        me = asyncio.current_task()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            if task is not me:
                task.cancel()
        lost = [*self._noscript, *self._owed, *self._queued_msgs]
        self._owed.clear()
        self._noscript = []
        self._queued, self._queued_msgs = [], []
        self.unsent = 0
        self.room.set()
        for writer in dict.fromkeys(m.writer for m in lost if m is not None):
            writer._fail(exc)
        await self.conn.release(broken=True)

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.conn.release(broken=bool(self._owed))


class PushWriter:
    """One socket's writes (each message all or none), over a shared lane.

    `write()` queues a message; `on_ids` gets each message's new ids, in order, from
    the writer's own task. A refused write ends the writer: `error` is set and
    `on_error` is called (its messages already sent after the refused one are still
    written, each all or none)."""

    def __init__(
        self,
        lanes: WriteLanes,
        index: int,
        on_ids: IdsHandler | None = None,
        on_error: ErrorHandler | None = None,
        max_pending: int = 4096,
        max_unsent_bytes: int = 8 << 20,
        via: str = "ws",
        producer: ProducerSession | None = None,
    ) -> None:
        self._lanes = lanes
        self.producer = producer  # numbers the messages and counts them in Redis
        self.via = via  # who writes (ws, rest): for the metrics
        self._index = index
        self.on_ids = on_ids
        self.on_error = on_error
        self.max_pending = max_pending
        self.max_unsent_bytes = max_unsent_bytes
        self.error: BaseException | None = None
        self._lane: _Lane | None = None
        self._pending = 0  # messages written whose reply (and ack) is not done yet
        self._unsent = 0
        self._room = asyncio.Event()
        self._room.set()
        self._done = asyncio.Event()
        self._done.set()
        self._acks: deque[list[str]] = deque()
        self._ack_wanted = asyncio.Event()
        self._ack_task: asyncio.Task[None] | None = None
        self._error_task: asyncio.Task[None] | None = None
        self._closed = False
        self._known: set[str] = set()  # streams written to: one entry is a plain XADD
        self._scripts_owed = 0  # messages not sent plain whose reply is not in yet

    async def write(self, entries: Sequence[Entry]) -> None:
        """Queue one message (its entries all or none). Raises the writer's error."""
        if self.error is not None:
            raise self.error
        # (plain or not is decided now: while waiting, replies only make it safer)
        command, script = self._command(entries)
        lane = await self._lanes.lane(self._index, entries)
        if lane is not self._lane and self._pending:
            await self.drain()  # another node: its acks would overtake the ones owed
        self._lane = lane
        while True:
            if self.error is not None:
                raise self.error
            if lane.full():
                lane.room.clear()
                await lane.room.wait()
            elif self._pending >= self.max_pending or self._unsent >= self.max_unsent_bytes:
                self._room.clear()
                await self._room.wait()
            else:
                break
        bufs = pack_commands([command])
        packed = sum(len(b) for b in bufs)
        nbytes = sum(len(e[2]) for e in entries)
        sid = entries[0][0] if len(entries) == 1 else None
        self._pending += 1
        self._unsent += packed
        self._done.clear()
        plain = script is not None and command is not script
        self._scripts_owed += not plain
        queued_at = time.perf_counter()
        message = _Message(self, packed, len(entries), nbytes, sid, queued_at, script, plain)
        lane.enqueue(bufs, message)

    def _command(self, entries: Sequence[Entry]) -> tuple[list[Any], list[Any] | None]:
        """(what to send, the script kept to send instead) for one message."""
        if self.producer is not None:
            command = self.producer.command(entries, self._lanes.maxlen)
        else:
            command = entry_commands(entries, self._lanes.maxlen)
        script = command if command[0] == b"EVALSHA" else None
        known = entries[0][0] in self._known
        if script is not None and self.producer is None and known and not self._scripts_owed:
            plain = existing_stream_command(entries, self._lanes.maxlen)
            if plain is not None:
                return plain, script
        return command, script

    def forget(self, sid: str) -> None:
        """`sid` was not there (deleted): its next messages go by script again."""
        self._known.discard(sid)

    async def drain(self) -> None:
        """Wait until every message queued so far is written (or the writer failed)."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    def _taken(self, packed: int) -> None:
        self._unsent -= packed
        self._wake()

    def _answered(self, message: _Message, reply: Any) -> None:
        self._scripts_owed -= not message.plain
        if isinstance(reply, BaseException):
            self._fail(reply)
            return
        metrics.pushed(
            self.via, message.entries, message.nbytes, time.perf_counter() - message.queued_at
        )
        if message.sid is not None and message.sid not in self._known:
            if len(self._known) >= KNOWN_STREAMS:
                self._known.clear()
            self._known.add(message.sid)
        if self.error is not None or self._closed:
            return
        if self.on_ids is None:
            self._settle()
            return
        self._acks.append(_decode_ids(reply))
        self._ack_wanted.set()
        if self._ack_task is None:
            self._ack_task = asyncio.get_running_loop().create_task(self._ack_loop())

    async def _ack_loop(self) -> None:
        assert self.on_ids is not None
        while True:
            if not self._acks:
                self._ack_wanted.clear()
                await self._ack_wanted.wait()
                continue
            await self.on_ids(self._acks.popleft())
            self._settle()

    def _settle(self) -> None:
        self._pending -= 1
        self._wake()
        if self._pending == 0:
            self._done.set()

    def _wake(self) -> None:
        if self._pending < self.max_pending and self._unsent < self.max_unsent_bytes:
            self._room.set()

    def _fail(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        self.error = exc
        self._room.set()
        self._done.set()
        if self.on_error is not None and not self._closed:
            self._error_task = asyncio.get_running_loop().create_task(self._report(exc))

    async def _report(self, exc: BaseException) -> None:
        assert self.on_error is not None
        await self.on_error(exc)

    async def close(self, wait: bool = True) -> None:
        """Wait (when `wait`) until every queued message is written and acked; then
        stop. Messages still on the lane are written, their replies dropped."""
        try:
            if wait and self.error is None:
                await self._done.wait()
        finally:
            self._closed = True
            if self._ack_task is not None:
                self._ack_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ack_task
            if self._error_task is not None:  # the socket's close, with its reason
                await self._error_task


class WriteLanes:
    """The write lanes of one server process (``app.state.writers``)."""

    def __init__(self, client: AnyAsyncRedis, size: int, maxlen: int) -> None:
        if size < 1:
            raise ValueError(f"the write lanes need at least one connection, not {size}")
        self.client = client
        self.size = size
        self.maxlen = maxlen
        self._lanes: dict[str | None, list[_Lane | None]] = {}
        self._next = itertools.count()

    def writer(
        self,
        on_ids: IdsHandler | None = None,
        on_error: ErrorHandler | None = None,
        max_pending: int = 4096,
        max_unsent_bytes: int = 8 << 20,
        via: str = "ws",
        producer: ProducerSession | None = None,
    ) -> PushWriter:
        """A writer for one socket, on the next lane in turn."""
        index = next(self._next) % self.size
        return PushWriter(
            self, index, on_ids, on_error, max_pending, max_unsent_bytes, via, producer
        )

    async def add(self, entries: Sequence[Entry]) -> list[str]:
        """Write one message (a REST POST) and wait: its new ids, in order."""
        ids: list[str] = []

        async def keep(new: list[str]) -> None:
            ids.extend(new)

        writer = self.writer(on_ids=keep, via="rest")
        try:
            await writer.write(entries)
            await writer.drain()
        finally:
            await writer.close(wait=False)
        return ids

    async def lane(self, index: int, entries: Sequence[Entry]) -> _Lane:
        """The lane `index` of the node that serves `entries` (one node unless a cluster)."""
        name = None
        conn = None
        if is_cluster(self.client):
            conn = HeldConnection(self.client)
            await conn.route(one_slot_key(self.client, entries))
            name = conn.node_name
        lanes = self._lanes.get(name)
        if lanes is None:
            lanes = self._lanes[name] = [None] * self.size
        lane = lanes[index]
        if lane is None:
            lane = lanes[index] = _Lane(conn or HeldConnection(self.client))
        return lane

    def connections(self) -> int:
        """Lanes opened so far (each holds at most one Redis connection)."""
        return sum(lane is not None for lanes in self._lanes.values() for lane in lanes)

    async def close(self) -> None:
        lanes = [lane for group in self._lanes.values() for lane in group if lane is not None]
        self._lanes.clear()
        for lane in lanes:
            await lane.close()
