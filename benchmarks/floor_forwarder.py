"""The floor of the 1 MB pull: the bare layers under `fastredis serve`, nothing else.

    python benchmarks/floor_forwarder.py --port 8003 --redis-url redis://127.0.0.1:6390/0

One blocking thread per websocket, no asyncio, no websocket library, no Redis client:
a `WS /data/{sid}/pull?last_entry_id=ID` is answered by one raw `XREAD COUNT 1 STREAMS
sid ID` at a time, the reply received with `recv_into` into one reused buffer, and the
entry's first field sent as one binary message straight from that buffer, after its
text header `[[sid, id, 0]]`: header frame, binary frame head and payload go out in one
`sendmsg`. Every byte is received from Valkey once and sent once, as the server must do;
what `fastredis serve` spends per MB above this is its own (Python, asyncio, the
websocket and Redis layers), and what this spends above bare_ws_server.py is receiving
from Valkey. It is a benchmark yardstick: one stream, `count` 1, entries with one
field, other parameters ignored; a malformed reply ends the pull.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import socket
import struct
import threading
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

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
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


def _serve(conn: socket.socket, redis: tuple[str, int]) -> None:
    with conn:
        target = _handshake(conn)
        match = re.fullmatch(r"/data/([^/]+)/pull", urlsplit(target or "").path)
        if match is None:
            return
        sid = unquote(match.group(1))
        query = dict(parse_qsl(urlsplit(target or "").query))
        last = query.get("last_entry_id", "0").encode()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        valkey = _Valkey(*redis)
        try:
            while True:
                entry = valkey.next(sid.encode(), last)
                if entry is None:
                    conn.recv(65536)  # the load tool closes once it has all it wanted
                    return
                last, payload = entry
                text = json.dumps([[sid, last.decode(), 0]]).encode()
                head = _frame_head(1, len(text)) + text + _frame_head(2, payload.nbytes)
                _send_all(conn, [memoryview(head), payload])
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            valkey.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    url = urlsplit(args.redis_url)
    redis = (url.hostname or "127.0.0.1", url.port or 6379)
    server = socket.create_server(("127.0.0.1", args.port))
    print(f"floor forwarder on ws://127.0.0.1:{args.port}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn, redis), daemon=True).start()


if __name__ == "__main__":
    main()
