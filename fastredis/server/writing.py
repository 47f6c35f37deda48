"""Writing pushed entries to Redis: every message all or none, pipelined.

One entry is one ``XADD sid MAXLEN ~ N <id> d <payload>``, atomic by itself. A
message of several entries runs as one Lua script (`ADD_ENTRIES_LUA`) that first
checks everything Redis could refuse -- a key that is not a stream, an explicit id
not above the stream's last id -- and only then writes. MULTI/EXEC would not do:
Redis does not roll back the commands before one that fails inside EXEC.

Commands are RESP-encoded by the Cython packer (`fastredis._frames.pack_commands`),
which references the payloads instead of copying them, and sent through a redis-py
connection held through `fastredis.redis_io.HeldConnection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import ResponseError

from fastredis._frames import pack_commands
from fastredis.ids import parse_add_id
from fastredis.redis_io import HeldConnection, is_cluster
from fastredis.server import metrics
from fastredis.server.errors import refused
from fastredis.server.protocol import CLOSE_INVALID_DATA, CLOSE_POLICY, BadInput

__all__ = ["ADD_ENTRIES_LUA", "PipelinedWriter", "add_entries", "entry_commands"]

Entry = tuple[str, str, Any]  # (sid, id or "*", payload buffer)

# KEYS: the distinct streams. ARGV[1]: MAXLEN (0: no trimming), then per entry:
# index into KEYS, id ("*", "ms-*" or canonical "ms-seq"), payload.
ADD_ENTRIES_LUA = r"""
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function refuse(msg)
  return redis.error_reply(msg .. '; nothing written')
end
local last = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'stream' and t ~= 'none' then
    return refuse('WRONGTYPE key ' .. k .. ' holds a ' .. t .. ', not a stream')
  end
  last[i] = t
end
for j = 2, #ARGV, 3 do
  local i = tonumber(ARGV[j])
  local id = ARGV[j + 1]
  local l = last[i]
  if id == '*' then
    last[i] = 'auto'
  else
    if l == 'auto' then
      return refuse('ERR stream ' .. KEYS[i] ..
        ': an explicit id cannot follow a * id of the same stream in one message')
    elseif l == 'none' then
      l = {'0', '0'}
    elseif l == 'stream' then
      local info = redis.call('XINFO', 'STREAM', KEYS[i])
      for x = 1, #info, 2 do
        if info[x] == 'last-generated-id' then
          local ms, seq = string.match(info[x + 1], '^(%d+)-(%d+)$')
          l = {ms, seq}
        end
      end
    end
    local ms, seq = string.match(id, '^(%d+)-(.+)$')
    local c = cmp(ms, l[1])
    if seq == '*' then
      if c < 0 or (c == 0 and l[2] == '18446744073709551615') then
        return refuse('ERR stream ' .. KEYS[i] .. ': id ' .. id ..
          ' is not above the last id ' .. l[1] .. '-' .. l[2])
      end
      if c > 0 then l = {ms, '0'} else l = {ms, '?'} end
    else
      if c < 0 or (c == 0 and (l[2] == '?' or cmp(seq, l[2]) <= 0)) then
        return refuse('ERR stream ' .. KEYS[i] .. ': id ' .. id ..
          ' is not above the last id ' .. l[1] .. '-' .. l[2])
      end
      l = {ms, seq}
    end
    last[i] = l
  end
end
local ids = {}
local maxlen = ARGV[1]
for j = 2, #ARGV, 3 do
  local k = KEYS[tonumber(ARGV[j])]
  if maxlen ~= '0' then
    ids[#ids + 1] = redis.call('XADD', k, 'MAXLEN', '~', maxlen, ARGV[j + 1], 'd', ARGV[j + 2])
  else
    ids[#ids + 1] = redis.call('XADD', k, ARGV[j + 1], 'd', ARGV[j + 2])
  end
end
return ids
"""
_LUA_BYTES = ADD_ENTRIES_LUA.encode()


def _canonical_id(eid: Any) -> str:
    try:
        parsed = parse_add_id(str(eid))
    except ValueError as exc:
        raise BadInput(f"bad entry id in header: {exc}", CLOSE_INVALID_DATA) from None
    if parsed is None:
        return "*"
    ms, seq = parsed
    return f"{ms}-{'*' if seq is None else seq}"


def entry_commands(entries: Sequence[Entry], maxlen: int) -> list[Any]:
    """The one command that writes `entries` atomically: XADD for one, EVAL for more."""
    if len(entries) == 1:
        sid, eid, payload = entries[0]
        if eid != "*":
            eid = _canonical_id(eid)
        if maxlen:
            return [b"XADD", sid, b"MAXLEN", b"~", maxlen, eid, b"d", payload]
        return [b"XADD", sid, eid, b"d", payload]
    keys: dict[str, int] = {}
    argv: list[Any] = [maxlen]
    for sid, eid, payload in entries:
        index = keys.get(sid)
        if index is None:
            index = keys[sid] = len(keys) + 1
        argv.append(index)
        argv.append(eid if eid == "*" else _canonical_id(eid))
        argv.append(payload)
    return [b"EVAL", _LUA_BYTES, len(keys), *keys, *argv]


def one_slot_key(client: Any, entries: Sequence[Entry]) -> Any:
    """The key that routes `entries` on a cluster: all must be in one slot (one atomic
    write), else BadInput (close 1008 / HTTP 400) and nothing is written."""
    key = entries[0][0]
    if is_cluster(client):
        slots = {client.keyslot(sid) for sid, _eid, _payload in entries}
        if len(slots) > 1:
            names = sorted({str(sid) for sid, _eid, _payload in entries})
            raise BadInput(
                f"one message's entries go to streams in different Redis Cluster slots "
                f"({', '.join(names)}): a message is written atomically, so its streams "
                f"must share a hash tag, as {{cam1}}:rgb and {{cam1}}:depth do",
                CLOSE_POLICY,
            )
    return key


def _decode_ids(reply: Any) -> list[str]:
    if isinstance(reply, list):
        return [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
    return [reply.decode() if isinstance(reply, bytes) else str(reply)]


async def add_entries(
    client: redis.asyncio.Redis, entries: Sequence[Entry], maxlen: int
) -> list[str]:
    """Write `entries` atomically (one request); the new ids in order."""
    if not entries:
        return []
    conn = HeldConnection(client)
    try:
        await conn.route(one_slot_key(client, entries))
        await conn.send_commands([entry_commands(entries, maxlen)])
        reply = await conn.read_reply()
    except ResponseError as exc:
        raise refused(exc, list(dict.fromkeys(e[0] for e in entries))) from None
    finally:
        await conn.release()
    metrics.pushed("rest", len(entries), sum(len(e[2]) for e in entries))
    return _decode_ids(reply)


ReplyHandler = Callable[[list[str]], Awaitable[None]]


class PipelinedWriter:
    """Writes messages over one dedicated connection without waiting for Redis.

    `write()` queues a message's command; a flusher task sends everything queued
    since it last ran in one socket write (so a burst of websocket
    messages costs one socket write), and a reader task takes the replies in order
    and hands each message's new ids to `on_ids`. A refused write ends the writer:
    `error` is set and `on_error` is called (messages already sent after the refused
    one are still written, each all or none).
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        maxlen: int,
        on_ids: ReplyHandler | None = None,
        on_error: Callable[[BaseException], Awaitable[None]] | None = None,
        max_pending: int = 4096,
        max_unsent_bytes: int = 8 << 20,
    ) -> None:
        self.client = client
        self.maxlen = maxlen
        self.on_ids = on_ids
        self.on_error = on_error
        self.max_pending = max_pending
        self.max_unsent_bytes = max_unsent_bytes
        self._unsent = 0  # bytes queued or being written, not yet taken by the socket
        self.error: BaseException | None = None
        self._conn = HeldConnection(client)
        self._queued: list[Any] = []
        self._pending = 0  # messages queued or sent whose reply is not read yet
        self._flush_wanted = asyncio.Event()
        self._reply_wanted = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._done = asyncio.Event()
        self._done.set()
        self._tasks: deque[asyncio.Task[None]] = deque()
        self._sent = 0  # messages sent whose reply is not read yet
        # per message sent: (time, entries, bytes, the stream of a one-entry message)
        self._queued_at: deque[tuple[float, int, int, str | None]] = deque()

    async def start(self) -> PipelinedWriter:
        if not is_cluster(self._conn.client):  # a cluster's node: at the first write
            await self._conn.acquire()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_loop()))
        self._tasks.append(loop.create_task(self._reply_loop()))
        return self

    async def write(self, entries: Sequence[Entry]) -> None:
        """Queue one message (its entries all or none). Raises the writer's error."""
        if self.error is not None:
            raise self.error
        command = entry_commands(entries, self.maxlen)
        if is_cluster(self._conn.client):
            key = one_slot_key(self._conn.client, entries)
            if self._conn.held and not self._conn.serves(key):
                await self.drain()  # the stream's node differs: nothing may stay owed
            await self._conn.route(key)
            await self._conn.acquire()
        # Backpressure: a client faster than Redis waits here, so its socket stops
        # being read (not the server's memory filling up).
        while self._pending >= self.max_pending or self._unsent >= self.max_unsent_bytes:
            self._room.clear()
            await self._room.wait()
            if self.error is not None:
                raise self.error
        bufs = pack_commands([command])
        for buf in bufs:
            self._unsent += len(buf)
        self._queued.extend(bufs)
        self._queued_at.append(
            (
                time.perf_counter(),
                len(entries),
                sum(len(e[2]) for e in entries),
                entries[0][0] if len(entries) == 1 else None,
            )
        )
        self._pending += 1
        self._done.clear()
        self._flush_wanted.set()

    async def drain(self) -> None:
        """Wait until every message queued so far is written (or the writer failed)."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def _flush_loop(self) -> None:
        try:
            while True:
                await self._flush_wanted.wait()
                self._flush_wanted.clear()
                bufs, self._queued = self._queued, []
                if not bufs:
                    continue
                # Count them as sent first: the reply loop only reads replies owed.
                self._sent = self._pending
                self._reply_wanted.set()
                await self._conn.send(bufs)
                self._unsent -= sum(len(b) for b in bufs)
                del bufs
                if not self._room.is_set() and self._unsent < self.max_unsent_bytes:
                    self._room.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._fail(exc)

    async def _reply_loop(self) -> None:
        conn = self._conn
        try:
            while True:
                if self._sent == 0:
                    self._reply_wanted.clear()
                    await self._reply_wanted.wait()
                    continue
                try:
                    reply = await conn.read_reply()
                except ResponseError as exc:  # a one-entry XADD's error names no stream
                    sid = self._queued_at[0][3] if self._queued_at else None
                    raise refused(exc, [sid] if sid is not None else []) from None
                self._sent -= 1
                self._pending -= 1
                queued_at, n, nbytes, _ = self._queued_at.popleft()
                metrics.pushed("ws", n, nbytes, time.perf_counter() - queued_at)
                if (
                    not self._room.is_set()
                    and self._pending < self.max_pending
                    and self._unsent < self.max_unsent_bytes
                ):
                    self._room.set()
                if self._pending == 0:
                    self._done.set()
                if self.on_ids is not None:
                    await self.on_ids(_decode_ids(reply))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._fail(exc)

    async def _fail(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        self.error = exc
        self._room.set()
        self._done.set()
        if self.on_error is not None:
            await self.on_error(exc)

    async def close(self, wait: bool = True) -> None:
        """Wait (when `wait`) until every queued message is written, then give the
        connection back (or drop it when replies are still owed)."""
        try:
            if wait and self.error is None:
                await self._done.wait()
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()
            await self._conn.release(broken=bool(self._pending) or self.error is not None)
