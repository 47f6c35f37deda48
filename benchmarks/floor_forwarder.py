"""The floor of the 1 MB pull: the bare layers under `fastredis serve`, nothing else.

    python benchmarks/floor_forwarder.py --port 8003 --redis-url redis://127.0.0.1:6390/0

One blocking thread per websocket, no asyncio, no websocket library, no Redis client:
a `WS /data/{sid}/pull?last_entry_id=ID` is answered by one raw `XREAD COUNT 1 STREAMS
sid ID` at a time (over TCP, or a unix socket with `--redis-url unix:///path`), the
reply received with `recv_into` into one reused buffer, and the entry's first field
sent as one binary message straight from that buffer, after its
text header `[[sid, id, 0]]`: header frame, binary frame head and payload go out in one
`sendmsg`. Every byte is received from Valkey once and sent once, as the server must do;
what `fastredis serve` spends per MB above this is its own (Python, asyncio, the
websocket and Redis layers), and what this spends above bare_ws_server.py is receiving
from Valkey. It is a benchmark yardstick: one stream, `count` 1, entries with one
field, other parameters ignored; a malformed reply ends the pull.

With `--splice` (Linux) the payload never enters the process: the reply is peeked
(MSG_PEEK) up to the value's length, exactly that prefix is received, the payload is
moved Valkey socket -> pipe -> client socket with splice(2) after the frame heads went
out with one `sendmsg(MSG_MORE)`, and the value's trailing CRLF is received last: the
lower bound of a zero-copy relay (docs/benchmarks/wire.md). `--pause-us N` sleeps N µs
before each entry (no CPU): a stand-in for the server's per-entry work, so the reader
waits for every entry as it does with `fastredis serve` (benchmarks/bench_splice.py).

With `--canned SIZE` there is no Valkey at all: a pull is answered with entries of SIZE
bytes made in memory (ids 1-0, 2-0, ...; each payload starting with its sequence number
as the load tool stamps them), each sent as the floor sends it, from one reused buffer.
It costs little more than the kernel's copy per MB, so what a client reads from it is
the client's own ceiling, where the bare `websockets` server is bound by its own CPU.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit

from replies import encode

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
# the head of one entry's reply, up to its first field's value length (RESP2)
_HEAD = re.compile(rb"\*1\r\n\*2\r\n\$\d+\r\n.*?\r\n\*1\r\n\*2\r\n\$\d+\r\n([0-9-]+)\r\n"
                   rb"\*\d+\r\n\$\d+\r\n.*?\r\n\$(\d+)\r\n", re.S)  # fmt: skip


def _frame_head(opcode: int, size: int) -> bytes:
    if size < 126:
        return struct.pack("!BB", 0x80 | opcode, size)
    if size < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, size)
    return struct.pack("!BBQ", 0x80 | opcode, 127, size)


class _Valkey:
    """One blocking connection; `next()` reads one entry into the reused buffer."""

    def __init__(self, address: str | tuple[str, int]) -> None:
        if isinstance(address, str):  # a unix socket's path
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(4 << 20)
        self.view = memoryview(self.buf)

    def next(self, sid: bytes, last: bytes) -> tuple[bytes, memoryview] | None:
        """The id and payload of the entry after `last`, or None at the stream's end."""
        self.sock.sendall(encode(b"XREAD", b"COUNT", b"1", b"STREAMS", sid, last))
        got = 0
        while True:
            n = self.sock.recv_into(self.view[got:])
            if not n:
                raise ConnectionError("Valkey closed the connection")
            got += n
            if self.buf.startswith(b"*-1\r\n"):
                return None
            match = _HEAD.match(self.buf, 0, got)
            if match is not None:
                break
        start, size = match.end(), int(match.group(2))
        end = start + size + 2
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf)))
            self.view = memoryview(self.buf)
        while got < end:
            n = self.sock.recv_into(self.view[got:end])
            if not n:
                raise ConnectionError("Valkey closed the connection")
            got += n
        return match.group(1), self.view[start : start + size]


class _SpliceValkey(_Valkey):
    """One blocking connection; `head()` receives one entry's reply up to its payload."""

    PEEK = 512

    def head(self, sid: bytes, last: bytes) -> tuple[bytes, int] | None:
        """The id and payload size of the entry after `last` (the payload and its CRLF
        left in the socket), or None at the stream's end."""
        self.sock.sendall(encode(b"XREAD", b"COUNT", b"1", b"STREAMS", sid, last))
        while True:
            peeked = self.sock.recv(self.PEEK, socket.MSG_PEEK)
            if not peeked:
                raise ConnectionError("Valkey closed the connection")
            if peeked.startswith(b"*-1\r\n"):
                self.sock.recv(5)
                return None
            match = _HEAD.match(peeked)
            if match is not None:
                break  # else: the head is still arriving (rare): peek again
        self.sock.recv_into(self.view, match.end(), socket.MSG_WAITALL)
        return match.group(1), int(match.group(2))

    def crlf(self) -> None:
        """Receive the CRLF after a spliced payload."""
        if self.sock.recv(2, socket.MSG_WAITALL) != b"\r\n":
            raise ConnectionError("malformed reply")


def _splice_payload(valkey: socket.socket, conn: socket.socket, size: int,
                    pipe: tuple[int, int]) -> None:  # fmt: skip
    """Move `size` bytes from `valkey` to `conn` through `pipe`, in the kernel."""
    read_end, write_end = pipe
    while size:
        moved = os.splice(valkey.fileno(), write_end, size, flags=os.SPLICE_F_MOVE)
        if not moved:
            raise ConnectionError("Valkey closed the connection")
        size -= moved
        # the frame's last bytes go out at once (MSG_MORE would hold them back)
        flags = os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if size else 0)
        while moved:
            moved -= os.splice(read_end, conn.fileno(), moved, flags=flags)


def _pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
    return read_end, write_end


def _pull_spliced(conn: socket.socket, redis: str | tuple[str, int], sid: str, last: bytes,
                  pause: float) -> None:  # fmt: skip
    valkey = _SpliceValkey(redis)
    pipe = _pipe()
    try:
        while True:
            entry = valkey.head(sid.encode(), last)
            if entry is None:
                conn.recv(65536)
                return
            last, size = entry
            if pause:
                time.sleep(pause)
            text = json.dumps([[sid, last.decode(), 0]]).encode()
            head = _frame_head(1, len(text)) + text + _frame_head(2, size)
            conn.sendmsg([head], [], socket.MSG_MORE)  # blocking: all of it
            _splice_payload(valkey.sock, conn, size, pipe)
            valkey.crlf()
    finally:
        valkey.sock.close()
        os.close(pipe[0])
        os.close(pipe[1])


def _handshake(conn: socket.socket) -> str | None:
    """The request head; answers it (101 for a websocket, else 404); the target."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        head += chunk
    lines = head.split(b"\r\n")
    target = lines[0].split(b" ")[1].decode()
    headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
    key = headers.get(b"Sec-WebSocket-Key") or headers.get(b"sec-websocket-key")
    if key is None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        return None
    accept = base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return target


def _send_all(conn: socket.socket, views: list[memoryview]) -> None:
    """sendmsg until every view is sent (a blocking socket sends all but on a signal)."""
    while views:
        sent = conn.sendmsg(views)
        while views and sent >= views[0].nbytes:
            sent -= views[0].nbytes
            views.pop(0)
        if views:
            views[0] = views[0][sent:]


def _pull_copied(conn: socket.socket, redis: str | tuple[str, int], sid: str, last: bytes,
                 pause: float) -> None:  # fmt: skip
    valkey = _Valkey(redis)
    try:
        while True:
            entry = valkey.next(sid.encode(), last)
            if entry is None:
                conn.recv(65536)  # the load tool closes once it has all it wanted
                return
            last, payload = entry
            if pause:
                time.sleep(pause)
            text = json.dumps([[sid, last.decode(), 0]]).encode()
            head = _frame_head(1, len(text)) + text + _frame_head(2, payload.nbytes)
            _send_all(conn, [memoryview(head), payload])
    finally:
        valkey.sock.close()


def _pull_canned(conn: socket.socket, sid: str, size: int) -> None:
    """Entries of `size` bytes made in memory, sent until the client goes."""
    payload = bytearray(size)
    view = memoryview(payload)
    seq = 0
    while True:
        seq += 1
        struct.pack_into(">Q", payload, 0, seq)
        text = json.dumps([[sid, f"{seq}-0", 0]]).encode()
        head = _frame_head(1, len(text)) + text + _frame_head(2, size)
        _send_all(conn, [memoryview(head), view])


def _serve(conn: socket.socket, redis: str | tuple[str, int], splice: bool, pause: float,
           canned: int = 0) -> None:  # fmt: skip
    with conn:
        target = _handshake(conn)
        match = re.fullmatch(r"/data/([^/]+)/pull", urlsplit(target or "").path)
        if match is None:
            return
        sid = unquote(match.group(1))
        query = dict(parse_qsl(urlsplit(target or "").query))
        last = query.get("last_entry_id", "0").encode()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pull = _pull_spliced if splice else _pull_copied
        try:
            if canned:
                _pull_canned(conn, sid, canned)
            else:
                pull(conn, redis, sid, last, pause)
        except (BrokenPipeError, ConnectionResetError):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", help="the Valkey to read (not with --canned)")
    parser.add_argument(
        "--canned",
        type=int,
        default=0,
        metavar="SIZE",
        help="no Valkey: entries of SIZE bytes made in memory",
    )
    parser.add_argument("--splice", action="store_true", help="payloads by splice(2)")
    parser.add_argument("--pause-us", type=int, default=0, help="sleep before each entry")
    args = parser.parse_args()
    if not args.canned and not args.redis_url:
        parser.error("--redis-url is needed (or --canned SIZE)")
    url = urlsplit(args.redis_url or "")
    redis: str | tuple[str, int] = (
        url.path if url.scheme == "unix" else (url.hostname or "127.0.0.1", url.port or 6379)
    )
    server = socket.create_server(("127.0.0.1", args.port))
    print(f"floor forwarder on ws://127.0.0.1:{args.port}", flush=True)
    while True:
        conn, _ = server.accept()
        job = (conn, redis, args.splice, args.pause_us / 1e6, args.canned)
        threading.Thread(target=_serve, args=job, daemon=True).start()


if __name__ == "__main__":
    main()
