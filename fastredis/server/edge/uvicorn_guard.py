"""uvicorn's HTTP (h11) and websocket (websockets-sansio) protocols, hardened against
hostile clients.

* A request head (the request line and headers, a websocket handshake included) must
  arrive within `Settings.handshake_timeout` seconds: uvicorn had no such limit, so a
  client sending a byte now and then held its socket forever (slowloris). Past it the
  client that began one gets ``408``; the socket is closed. (h11 bounds its size.)

A large binary message (a pull's payload, `DIRECT_FRAME_BYTES` or more) is written to
the socket as its frame head and then the payload itself: websockets would first copy
the payload into one frame (a memory copy of every pulled byte; 1 MB pulls were
bound by the server's CPU on 2 cores). A message may also be given as several buffers
(``{"type": "websocket.send", "fastredis.views": [...]}``, offered to the app by the
``fastredis.views`` scope extension): one binary message written from them as they are,
so a pull of several large entries is never packed into one copy. Either may carry
``"fastredis.text_first": str``, a text message (a pull's header) written with it in the
same `write`: one system call and one wake of the client less per pulled frame. When
nothing is queued in the transport, such a message goes out in one ``sendmsg`` of its
buffers; what the socket does not take is queued by the transport as before (its
high-water mark pauses the app's writes: a slow client holds a bounded buffer). The
extension's ``"send_now"`` (a plain function, not a coroutine) writes such a message at
once when that needs no waiting (the app's writes are not paused) and says whether it
did: the hub sends a frame from its own task that way (`fastredis.server.reads.hub`).

Three gaps of `WebSocketsSansIOProtocol` (uvicorn 0.54) are closed as well:

* A handshake the `websockets` parser refuses (a request line or a header line over
  8 KiB, too many headers, not HTTP) was never answered: websockets queued its
  ``414`` / ``431`` answer but uvicorn only looks at parsed events, so the socket
  hung open holding an fd. It is now answered at once and closed.
* A client sending pings without reading made the server queue their pongs without
  bound. While the client reads nothing of what is sent (the transport paused the
  writes), at most `MAX_UNREAD_PONGS` bytes of pongs are queued; past that the socket
  is closed with 1008.
* A message over ``ws_max_size`` (and invalid UTF-8 in a text message) failed the
  connection and closed the TCP socket at once. When the client was still sending
  (an oversize header followed by its payload, as every client does), the unread
  bytes made the kernel reset the connection and the client lost the close frame
  with its 1009 / 1007. Now the server sends the close frame and keeps reading and
  discarding (nothing is buffered) until the client has been quiet for
  `QUIET_SECONDS` (it has read the close and answered it) or `DRAIN_SECONDS` pass.

`uvicorn_options(settings)` gives the uvicorn.Config arguments every way of serving
the app uses (`fastredis serve`, the tests' live server).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from fastredis.server.run.settings import Settings

__all__ = [
    "TEXT_FIRST",
    "VIEWS_EXTENSION",
    "GuardedH11Protocol",
    "GuardedWebSocketProtocol",
    "frame_head",
    "uvicorn_options",
]

DRAIN_SECONDS = 5.0  # at most this long a failed socket is read (and discarded)
QUIET_SECONDS = 0.25  # ... and closed once the client has sent nothing for this long
FRAME_OVERHEAD = 64 * 1024  # ws_max_size above the largest message (framing)
# Binary messages this large are written as head + payload (two writes, no copy); a
# smaller one is cheaper copied into one write.
DIRECT_FRAME_BYTES = 64 * 1024
VIEWS_EXTENSION = "fastredis.views"  # a send message of several buffers (see above)
TEXT_FIRST = "fastredis.text_first"  # a text message to send just before (see above)
MAX_HELD_BYTES = 256 * 1024  # the protocol's writes held while its socket is lent
# pong bytes queued while the client reads nothing of what is sent (writes paused): a
# client sending pings without reading their pongs would otherwise grow the buffer
MAX_UNREAD_PONGS = 64 * 1024


_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class GuardedH11Protocol(H11Protocol):
    """`H11Protocol` with a deadline for each request head."""

    head_timeout = 10.0  # seconds; uvicorn_options sets the server's
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    _head_started = False  # bytes of the current request head have arrived

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the socket failed)
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._head_started = False
            self._arm_head_timer()  # for the next request on this connection

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # An idle socket (a browser's preconnect) is closed without an answer it
            # could mistake for the reply to a request it is about to send.
            if self._head_started:
                body = b'{"error": "request head not received within %gs"}' % self.head_timeout
                self.transport.write(_REQUEST_TIMEOUT % (len(body), body))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` that answers refused handshakes and drains failed
    sockets before closing them."""

    _drain_timer: asyncio.TimerHandle | None = None
    _drain_until = 0.0

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the app's task has not run yet
            scope["extensions"][VIEWS_EXTENSION] = {
                "send_now": self.send_now,
                "lease": self.lease,
                "unlease": self.unlease,
            }

    _unread_pongs = 0  # pong bytes queued since writes were paused

    def handle_ping(self) -> None:
        output = b"".join(self.conn.data_to_send())
        if not self.writable.is_set():  # the client reads nothing of what is sent
            self._unread_pongs += len(output)
            if self._unread_pongs > MAX_UNREAD_PONGS:
                self.conn.fail(1008, "pings sent faster than their pongs are read")
                self.handle_parser_exception()  # told, the close sent, the socket drained
                return
        self.transport.write(output)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unread_pongs = 0

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self._drain_until:
            self._quiet_then_close()  # websockets discards what a failed socket sends
        elif not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._refuse_handshake()
        elif self.conn.parser_exc is not None:
            self.handle_parser_exception()
        else:
            self.handle_events()

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.send":
            return await super().send(message)
        views = message.get(VIEWS_EXTENSION)
        data = message.get("bytes")
        text = message.get(TEXT_FIRST)
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self._direct(views, data):
            if text is not None:
                first: Any = {"type": "websocket.send", "text": text}
                await super().send(first)
            if views is not None:
                joined: Any = {"type": "websocket.send", "bytes": b"".join(views)}
                return await super().send(joined)
            return await super().send(message)
        self._write_message(views, data, text)
        return None

    def send_now(self, message: Any) -> bool:
        """Write a binary ``websocket.send`` message (and its text first) now, if that
        needs no waiting and it is written here (`_direct`); False: it was not (send
        it the usual way)."""
        if not self.writable.is_set() or self.disconnected:
            return False
        views = message.get(VIEWS_EXTENSION)
        data = message.get("bytes")
        if not self._direct(views, data):
            return False
        self._write_message(views, data, message.get(TEXT_FIRST))
        return True

    def _write_message(self, views: list[Any] | None, data: Any, text: str | None) -> None:
        head = list(self.conn.data_to_send())  # e.g. a pong websockets queued: it goes first
        if text is not None:
            encoded = text.encode()
            head += (frame_head(0x81, len(encoded)), encoded)
        if views is not None:
            self._write_views(head, views)
            return
        head.append(frame_head(0x82, memoryview(data).nbytes))
        self._write([b"".join(head), data])

    def _direct(self, views: list[Any] | None, data: Any) -> bool:
        """Whether a binary message is written here rather than by websockets: a large
        one or views, on an open socket without extensions (permessage-deflate, when
        turned on, encodes the frame) and not inside a fragmented message."""
        if views is None and (data is None or memoryview(data).nbytes < DIRECT_FRAME_BYTES):
            return False
        return self._frames_free()

    def _frames_free(self) -> bool:
        """Whether frames may be written past websockets: an open socket without
        extensions (permessage-deflate encodes frames), not in a fragmented message."""
        if self.close_sent or not self.handshake_complete:
            return False
        conn = self.conn
        return (
            conn.state is State.OPEN and not conn.expect_continuation_frame and not conn.extensions
        )

    def lease(
        self, on_close: Callable[[], None]
    ) -> tuple[socket.socket, Callable[[], bytes]] | None:
        """Lend the socket to a writer outside the loop (`fastredis.server.reads.
        splice_pump`): a duplicate of it, which the writer closes, and the function that
        takes the protocol's writes held meanwhile (pongs, keepalive pings), for the
        writer to send between its frames; None when not now (writes queued or paused,
        a TLS or closing socket). Until `unlease`, a close or abort of the socket calls
        `on_close()` (the writer then stops at once)."""
        if not self.writable.is_set() or self.disconnected or not self._frames_free():
            return None
        pending = b"".join(self.conn.data_to_send())  # e.g. a pong: before the lease
        if pending:
            self.transport.write(pending)
        sock = _plain_socket(self.transport)
        if sock is None or self.transport.get_write_buffer_size():
            return None
        held = _HeldTransport(self.transport, on_close)
        self.transport = held  # type: ignore[assignment]
        return sock.dup(), held.take

    def unlease(self, whole: bool) -> None:
        """End a lease: the held writes go out, then a close or abort asked meanwhile;
        `whole` False (the writer stopped within a frame): the socket is aborted."""
        held = self.transport
        if not isinstance(held, _HeldTransport):
            return
        self.transport = held.real
        if not whole:
            held.real.abort()
            return
        rest = held.take()
        if rest:
            held.real.write(rest)
        if held.aborting:
            held.real.abort()
        elif held.closing:
            held.real.close()

    def _write_views(self, head: list[bytes], views: list[Any]) -> None:
        """One binary message from `views`, written as they are (small ones joined)."""
        head.append(frame_head(0x82, sum(memoryview(v).nbytes for v in views)))
        out: list[Any] = []
        small: list[Any] = head
        for view in views:
            if memoryview(view).nbytes >= DIRECT_FRAME_BYTES:
                if small:
                    out.append(b"".join(small))
                    small = []
                out.append(view)
            else:
                small.append(view)
        if small:
            out.append(b"".join(small))
        self._write(out)

    def _write(self, bufs: list[Any]) -> None:
        """Write `bufs` in order: in one `sendmsg` when nothing is queued in the
        transport (one system call and one wake of the client per message, not one per
        buffer), the rest (what the socket did not take) through the transport, which
        queues it and pauses the app's writes (`writable`) past its high-water mark."""
        transport = self.transport
        sock = _plain_socket(transport)  # None while lent (`lease`)
        sent = 0
        if sock is not None and not transport.get_write_buffer_size():
            try:
                sent = sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0  # the transport's own write meets the error and reports it
        for buf in bufs:
            size = memoryview(buf).nbytes
            if sent >= size:
                sent -= size
                continue
            transport.write(memoryview(buf)[sent:] if sent else buf)
            sent = 0

    def _refuse_handshake(self) -> None:
        # websockets has queued its answer (414 or 431 with a one-line reason), or
        # only an end of stream for a request that is not HTTP at all.
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    def handle_parser_exception(self) -> None:
        close = self.conn.close_sent
        if close is not None:
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": close.code, "reason": close.reason}
            )
        # The close frame goes out, and the socket stays open for reading until the
        # client has read it and gone quiet (websockets' end of stream is b"", a no-op).
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.frames = []
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._drain_until = self.loop.time() + DRAIN_SECONDS
        if self.close_timer is None:  # also keeps run_asgi from closing at once
            self.close_timer = self.loop.call_later(DRAIN_SECONDS, self.transport.close)
        self._quiet_then_close()

    def _quiet_then_close(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        delay = min(QUIET_SECONDS, max(0.0, self._drain_until - self.loop.time()))
        self._drain_timer = self.loop.call_later(delay, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)


class _HeldTransport:
    """The transport while its socket is lent (`lease`): writes are held for the
    borrower to send between its frames (`take`, from its thread); a close or abort is
    noted and tells the borrower; the rest is the transport's."""

    def __init__(self, real: asyncio.Transport, on_close: Callable[[], None]) -> None:
        self.real = real
        self.data: list[bytes] = []
        self.held = 0
        self.closing = False
        self.aborting = False
        self._on_close = on_close
        self._lock = threading.Lock()

    def write(self, data: Any) -> None:
        with self._lock:
            self.data.append(bytes(data))
            self.held += len(self.data[-1])
            flood = self.held > MAX_HELD_BYTES
        if flood:  # a flood of pings while lent, not read: a hostile client
            self.abort()

    def take(self) -> bytes:
        """The writes held so far, in order (they are no longer held)."""
        with self._lock:
            out, self.data, self.held = b"".join(self.data), [], 0
        return out

    def close(self) -> None:
        self.closing = True
        self._on_close()

    def abort(self) -> None:
        self.aborting = True
        self._on_close()

    def is_closing(self) -> bool:
        return self.closing or self.aborting or self.real.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.held + self.real.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if name == "socket" else self.real.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _plain_socket(transport: Any) -> socket.socket | None:
    """The socket under a plain (not TLS) selector transport that is open, else None.
    asyncio hands out only a wrapper without send methods; its `_sock` is the socket."""
    if transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    wrapper = transport.get_extra_info("socket")
    sock = getattr(wrapper, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def frame_head(first: int, size: int) -> bytes:
    """The head of an unmasked frame of `size` bytes whose first byte is `first` (0x81:
    a final text frame, 0x82: a final binary frame; RFC 6455 5.2)."""
    if size < 126:
        return bytes((first, size))
    if size < 1 << 16:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The protocol arguments of uvicorn.Config for the fastredis app."""
    http = type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout": settings.handshake_timeout}
    )
    return {
        "http": http,
        "ws": GuardedWebSocketProtocol,
        "ws_per_message_deflate": False,  # payloads are mostly incompressible
        # X-Forwarded-* are read by the app (`fastredis.server.edge.proxy`), which also
        # takes the forwarded host; uvicorn's own reading would hide the proxy's address
        "proxy_headers": False,
        # the largest message: a payload of max_message_size or a header of
        # max_header_size, whichever is larger, plus framing
        "ws_max_size": max(settings.max_message_size, settings.max_header_size) + FRAME_OVERHEAD,
    }
