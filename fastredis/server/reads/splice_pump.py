"""A pull's catch-up by splice(2): each payload moves from Redis's socket through a pipe
into the client's socket inside the kernel, never entering the process.

Far behind the tail, a pull costs the server per MB a receive from Redis, a send to the
client and the Python of the read and send path per entry (docs/benchmarks/wire.md). For
the common case (one stream, one entry per frame; no acks, pacing, frame dropping or
resume; Redis by a plain unix or TCP socket, not a cluster) a `SplicePump` serves the
catch-up from a thread of its own, on a Redis connection of its own:

* ``XREAD COUNT 1`` after the cursor, the next one asked as soon as an entry's id is
  known (Redis makes the next reply while this one is sent). The reply's head is
  received and parsed, its payload (field ``d``) spliced into a pipe (by a unix socket:
  received into one reused buffer, cheaper there than splicing) and the rest of the
  reply read; only then are the frame's heads written and the payload sent on. A frame
  is whole or not begun, as on the usual path, so a Redis failure is told to the client
  the usual way.
* It stops at the stream's end (a read with nothing), and hands over before an entry it
  does not take whole (a payload the pipe cannot hold, a large field besides ``d``):
  nothing of that entry was sent, and the usual path goes on from its cursor.

The websocket protocol lends its socket for the run (`lease` of the ``fastredis.views``
extension): its own writes meanwhile (a pong, a keepalive ping) are held and sent by the
pump between frames, in order, and a close or abort of the socket stops the pump at
once. As many run at once as the server's connection budget gives pumps
(`ConnectionBudget.pumps`); other pulls catch up the usual way.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import redis.asyncio
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastredis._frames import json_string, pack_commands
from fastredis.redis_io import is_cluster
from fastredis.server.edge.protocol import end_offsets
from fastredis.server.edge.uvicorn_guard import frame_head

__all__ = ["PumpSlots", "RedisAddress", "SplicePump", "redis_address"]

PEEK_BYTES = 64 * 1024  # a reply's head and small fields must be within this much
PIPE_BYTES = 1 << 20  # asked of the pipe; a payload it cannot hold is handed over
PROGRESS_S = 1.0  # what a pump sent is told this often (the metrics)
REPLY_TIMEOUT = 10.0  # seconds Redis may take to answer one read
CONNECT_TIMEOUT = 5.0

T = TypeVar("T")

_HAS_SPLICE = hasattr(os, "splice")
# an XREAD reply of one entry: *1 *2 $sid *1 *2 (the prefix, known) then $id *<2k>
_ID_FIELDS = re.compile(rb"\$\d+\r\n([0-9]+-[0-9]+)\r\n\*(\d+)\r\n")
_NIL = b"*-1\r\n"
_BULK = re.compile(rb"\$(\d+)\r\n")


@dataclass(frozen=True)
class RedisAddress:
    """Where and how the pump connects: a unix socket's path or (host, port)."""

    address: str | tuple[str, int]
    username: str | None
    password: str | None
    db: int


def redis_address(client: Any) -> RedisAddress | None:
    """The address of a plain (not TLS, not cluster) redis-py asyncio client with fixed
    credentials, else None (no pump)."""
    if not _HAS_SPLICE or is_cluster(client):
        return None
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if kw.get("credential_provider") is not None:
        return None
    cls = pool.connection_class
    if cls is redis.asyncio.UnixDomainSocketConnection:
        address: str | tuple[str, int] = kw["path"]
    elif cls is redis.asyncio.Connection:
        address = (kw.get("host", "localhost"), int(kw.get("port", 6379)))
    else:
        return None
    return RedisAddress(address, kw.get("username"), kw.get("password"), int(kw.get("db") or 0))


class PumpSlots:
    """At most `size` pumps at once (`take` / `give`)."""

    def __init__(self, size: int) -> None:
        self.free = size

    def take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    def give(self) -> None:
        self.free += 1


class _Handover(Exception):
    """An entry the pump does not take whole: nothing of it was sent."""


class _Stopped(Exception):
    """Asked to stop where nothing of an entry was sent yet, or to abort."""


def _command(*args: bytes) -> bytes:
    """One command, RESP-encoded."""
    return b"".join(pack_commands([args]))


@dataclass(frozen=True)
class _Head:
    """One entry's reply: its id, the bytes before its payload, the payload's size and
    the fields after it (-1: it has no payload field, the reply ends there)."""

    entry_id: bytes
    before: int
    size: int
    rest_pairs: int


def _bulk(buf: bytes, pos: int) -> tuple[int, int] | None:
    """Where the bulk string whose head is at `pos` starts and ends (its CRLF after),
    None when its head is not all in `buf`."""
    match = _BULK.match(buf, pos)
    return None if match is None else (match.end(), match.end() + int(match.group(1)))


def _skip_pairs(buf: bytes, pos: int, pairs: int) -> int | None:
    """Where `pairs` field/value bulk strings starting at `pos` end; None: not all in
    `buf`."""
    for _ in range(2 * pairs):
        bulk = _bulk(buf, pos)
        if bulk is None or bulk[1] + 2 > len(buf):
            return None
        pos = bulk[1] + 2
    return pos


def _parse_head(buf: bytes, prefix: bytes) -> _Head | None:
    """The head of one entry's XREAD reply at the start of `buf` (its stream's part is
    `prefix`), None when more bytes are needed; raises the reply's error, and
    `_Handover` for a reply of another shape."""
    if buf.startswith(b"-"):
        if b"\r\n" not in buf:
            return None
        raise BaseParser.parse_error(buf[1 : buf.index(b"\r\n")].decode(errors="replace"))
    if not buf.startswith(prefix):
        if prefix.startswith(buf):
            return None
        raise _Handover("a reply of another shape")
    match = _ID_FIELDS.match(buf, len(prefix))
    if match is None:
        if len(buf) < len(prefix) + 64:
            return None
        raise _Handover("a reply of another shape")
    pairs, pos = int(match.group(2)) // 2, match.end()
    for i in range(pairs):
        name = _bulk(buf, pos)
        value = None if name is None else _bulk(buf, name[1] + 2)
        if name is None or value is None:
            return None
        if buf[name[0] : name[1]] == b"d":
            return _Head(match.group(1), value[0], value[1] - value[0], pairs - i - 1)
        pos = value[1] + 2
        if pos > len(buf):
            return None
    return _Head(match.group(1), pos, 0, -1)  # no payload field: an empty message


def _fields_after(buf: bytes, pairs: int) -> int | None:
    """The bytes of a payload's CRLF and the `pairs` fields after it at the start of
    `buf`; None: not all in `buf`."""
    if len(buf) < 2:
        return None
    if not buf.startswith(b"\r\n"):
        raise RedisConnectionError("a malformed reply from Redis")
    return _skip_pairs(buf, 2, pairs)


class SplicePump:
    """The catch-up of one pull of `sid` after `after` (see the module docstring):
    `await run()`, `stop()` from the loop."""

    def __init__(
        self,
        address: RedisAddress,
        client: socket.socket,
        held: Callable[[], bytes],
        sid: str,
        after: str,
        header: bool,
        end_offsets: bool,
    ) -> None:
        self.address = address
        self.client = client  # a duplicate of the client's socket: the pump closes it
        self._held = held  # takes the protocol's own writes (pongs, pings) meanwhile
        self.last = after  # the id of the last entry sent
        self.reads = 0  # XREADs made
        self._told = (0, 0, 0)  # entries, bytes and reads told to `progress`
        self.entries = 0  # sent, and their payload bytes
        self.nbytes = 0
        self._header = header
        self._end_offsets = end_offsets
        self._sid_json = json_string(sid)
        sid_b = self._sid = sid.encode()
        self._prefix = b"*1\r\n*2\r\n$%d\r\n%s\r\n*1\r\n*2\r\n" % (len(sid_b), sid_b)
        self._stop = False
        self._abort = False
        self._writing = False  # bytes of the current frame may have been sent
        self._asked = False  # the read after `last` is sent
        self._carry = bytearray()  # bytes received of the next reply
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    async def run(self, progress: Callable[[int, int, int], None]) -> str:
        """Send entries until the stream's end ("end"), an entry it hands over
        ("handover") or `stop()` ("stopped"); a Redis failure raises redis-py's error,
        a client gone OSError. A cancel stops the pump (the frame under way is finished,
        unless `stop(abort=True)` was asked) and waits for its thread to end.
        `progress(entries, nbytes, reads)` is told what was sent and read since its last
        call, every `PROGRESS_S` seconds and at the end."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def work() -> None:
            try:
                outcome = self._work()
            except BaseException as exc:  # handed to the loop, raised there
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, outcome, None)

        threading.Thread(target=work, name="fastredis-splice", daemon=True).start()
        try:
            while not (await asyncio.wait([done], timeout=PROGRESS_S))[0]:
                self._report(progress)
            return done.result()
        except asyncio.CancelledError:
            self.stop()
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            while not done.done():  # the thread ends at the frame's end, or on abort
                try:
                    await asyncio.wait([done])
                except asyncio.CancelledError:  # asked again: one cancel is raised below
                    if uncancel is not None:
                        uncancel()
            done.exception()  # seen: the pull is cancelled, its failure told no one
            raise
        finally:
            self._report(progress)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    @property
    def broken(self) -> bool:
        """Whether it stopped within a frame (the client's socket is then unusable)."""
        return self._writing

    def _report(self, progress: Callable[[int, int, int], None]) -> None:
        now = (self.entries, self.nbytes, self.reads)
        told, self._told = self._told, now
        progress(now[0] - told[0], now[1] - told[1], now[2] - told[2])

    def stop(self, abort: bool = False) -> None:
        """Stop before the next frame (`abort`: at once, even within a frame)."""
        self._stop = True
        self._abort = self._abort or abort
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _work(self) -> str:
        redis_sock = self._connect()
        # by a unix socket, splicing costs more than one copy (docs/benchmarks/wire.md)
        carrier = _Buffer(self) if isinstance(self.address.address, str) else _Pipe(self)
        try:
            while not self._stop:
                if not self._entry(redis_sock, carrier):
                    return "end"
            return "stopped"
        except _Handover:
            return "handover"
        except _Stopped:
            return "stopped"
        finally:
            carrier.close()
            redis_sock.close()
            self.client.close()

    # -- in the pump's thread --------------------------------------------------------

    def _entry(self, rs: socket.socket, carrier: _Pipe | _Buffer) -> bool:
        """Send the entry after `last`; False at the stream's end. The read of the next
        entry is asked for as soon as this one's id is known, so that Redis makes its
        reply while this one is sent (two replies at most are owed). The protocol's own
        frames held meanwhile go first (a keepalive ping waiting out a long catch-up
        would otherwise time the socket out)."""
        held = self._held()
        if held:
            self._writing = True
            self._send(self.client, held, None)
        self._writing = False
        if not self._asked:
            self._ask(rs, self.last.encode())
        buf, self._carry = self._carry, bytearray()
        while True:
            if buf.startswith(_NIL):
                self._asked = False
                self._carry = buf[len(_NIL) :]
                return False
            head = _parse_head(bytes(buf), self._prefix)
            if head is not None:
                break
            self._receive(rs, buf)
        held = bytes(buf[head.before : head.before + head.size])  # the payload's first bytes
        carried = head.size - len(held)
        if carried > carrier.room:
            raise _Handover("a payload larger than the pipe")
        self._ask(rs, head.entry_id)
        carrier.fill(rs, carried)
        rest = buf[head.before + head.size :]
        end: int | None = 0
        while head.rest_pairs >= 0 and (end := _fields_after(bytes(rest), head.rest_pairs)) is None:
            self._receive(rs, rest)
        self._carry = rest[end:]  # the next reply's first bytes
        self._write_frame(head, held, carrier, carried)
        self.last = head.entry_id.decode()
        self.entries += 1
        self.nbytes += head.size
        return True

    def _ask(self, rs: socket.socket, after: bytes) -> None:
        """Send the read of the entry after `after`."""
        command = _command(b"XREAD", b"COUNT", b"1", b"STREAMS", self._sid, after)
        self._send(rs, command, REPLY_TIMEOUT)
        self._asked = True
        self.reads += 1

    def _receive(self, rs: socket.socket, buf: bytearray) -> None:
        """Add what Redis sent next to `buf` (a reply's head and small fields only)."""
        if len(buf) >= PEEK_BYTES:
            raise _Handover("a reply's head or fields over PEEK_BYTES")
        buf += self._from_redis(rs, partial(rs.recv, 4096))

    def _from_redis(self, rs: socket.socket, receive: Callable[[], T]) -> T:
        """What `receive()` got from Redis once something came (waiting for it); a
        closed or failed connection raises redis-py's error."""
        while True:
            try:
                got = receive()
            except BlockingIOError:
                self._wait(rs, select.POLLIN, REPLY_TIMEOUT)
                continue
            except OSError as exc:
                raise self._lost(exc) from exc
            if not got:
                raise RedisConnectionError("Connection closed by server.")
            return got

    def _write_frame(
        self, head: _Head, held: bytes, carrier: _Pipe | _Buffer, carried: int
    ) -> None:
        """The frame's heads (the text header first, with `header`), the payload's
        first bytes, then the rest of it from the carrier."""
        out = b""
        if self._header:
            text = b'[[%s,"%s",0]]' % (self._sid_json, head.entry_id)
            if self._end_offsets:
                text = end_offsets(text.decode(), head.size).encode()
            out = frame_head(0x81, len(text)) + text
        self._writing = True
        self._send(self.client, out + frame_head(0x82, head.size) + held, None, more=carried > 0)
        carrier.drain(carried)
        self._writing = False

    def _send(
        self,
        sock: socket.socket,
        data: bytes | memoryview,
        timeout: float | None,
        more: bool = False,
    ) -> None:
        """Send all of `data` (Redis: within `timeout`; the client: as it reads)."""
        view = memoryview(data)
        flags = socket.MSG_MORE if more else 0
        while view:
            try:
                view = view[sock.send(view, flags) :]
            except BlockingIOError:
                self._wait(sock, select.POLLOUT, timeout)
            except OSError as exc:
                if sock is self.client:
                    raise
                raise self._lost(exc, "writing to") from exc

    def _lost(self, exc: OSError, doing: str = "reading from") -> RedisConnectionError:
        """The error redis-py gives for a failed connection (the message clients see)."""
        a = self.address.address
        where = a if isinstance(a, str) else f"{a[0]}:{a[1]}"
        return RedisConnectionError(f"Error while {doing} {where} : {exc.args}")

    def _wait(self, sock: socket.socket, events: int, timeout: float | None) -> None:
        """Until `sock` is ready for `events` (or failed); `_Stopped` when asked to stop
        where it may, Redis's TimeoutError past `timeout` seconds."""
        poller = select.poll()
        poller.register(sock.fileno(), events)
        poller.register(self._wake_r, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = (
                None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            )
            ready = dict(poller.poll(wait_ms))
            if ready.pop(self._wake_r, 0):
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)
                if self._abort or (self._stop and not self._writing):
                    raise _Stopped
            if ready:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise RedisTimeoutError("Timeout reading from Redis")

    def _connect(self) -> socket.socket:
        """A connection to Redis, authenticated and on its database, non-blocking."""
        a = self.address
        try:
            if isinstance(a.address, str):
                rs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                rs.settimeout(CONNECT_TIMEOUT)
                rs.connect(a.address)
            else:
                rs = socket.create_connection(a.address, CONNECT_TIMEOUT)
                rs.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        try:
            if a.password is not None:
                user = [a.username.encode()] if a.username else []
                self._call(rs, b"AUTH", *user, a.password.encode())
            if a.db:
                self._call(rs, b"SELECT", str(a.db).encode())
            rs.setblocking(False)
        except BaseException:
            rs.close()
            raise
        return rs

    def _call(self, rs: socket.socket, *args: bytes) -> None:
        """One command answered by a status line (blocking, while connecting)."""
        try:
            rs.sendall(_command(*args))
            line = rs.recv(4096)
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        if line.startswith(b"-"):
            raise BaseParser.parse_error(line[1:].strip().decode(errors="replace"))
        if not line.startswith(b"+"):
            raise RedisConnectionError("Connection closed by server.")


class _Pipe:
    """Payloads moved Redis socket -> pipe -> client socket by splice(2)."""

    def __init__(self, pump: SplicePump) -> None:
        self.pump = pump
        self.read_end, self.write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.room = fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)

    def fill(self, rs: socket.socket, size: int) -> None:
        """Move `size` bytes from Redis into the pipe."""
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        waited = False
        while size:
            try:
                moved = os.splice(rs.fileno(), self.write_end, size, flags=flags)
            except BlockingIOError:
                if waited:  # Redis has bytes for it, the pipe takes no more
                    raise _Handover("the pipe is full") from None
                self.pump._wait(rs, select.POLLIN, REPLY_TIMEOUT)
                waited = True
                continue
            except OSError as exc:
                raise self.pump._lost(exc) from exc
            if not moved:
                raise RedisConnectionError("Connection closed by server.")
            size -= moved
            waited = False

    def drain(self, size: int) -> None:
        """Move `size` bytes from the pipe into the client's socket."""
        client = self.pump.client
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        while size:
            try:
                size -= os.splice(self.read_end, client.fileno(), size, flags=flags)
            except BlockingIOError:
                self.pump._wait(client, select.POLLOUT, None)

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


class _Buffer:
    """Payloads received into one buffer and sent from it."""

    def __init__(self, pump: SplicePump) -> None:
        self.pump = pump
        self.room = PIPE_BYTES
        self.view = memoryview(bytearray(self.room))

    def fill(self, rs: socket.socket, size: int) -> None:
        """Receive `size` bytes from Redis into the buffer."""
        view, got = self.view, 0
        while got < size:
            got += self.pump._from_redis(rs, partial(rs.recv_into, view[got:size]))

    def drain(self, size: int) -> None:
        """Send the buffer's first `size` bytes to the client."""
        self.pump._send(self.pump.client, self.view[:size], None)

    def close(self) -> None:
        self.view.release()


def _settle(done: asyncio.Future[str], outcome: str | None, exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        assert outcome is not None
        done.set_result(outcome)
