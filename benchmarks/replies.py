"""Captured reply bytes and a raw-socket client: the floor every parser is measured against."""

from __future__ import annotations

import os
import socket

import hiredis
import redis

SMALL_STREAM = "bench:small"
SMALL_ENTRIES = 10_000
SMALL_FIELDS = {"sensor": "temp-01", "value": "21.5", "unit": "C"}
LARGE_STREAM = "bench:large"
LARGE_ENTRIES = 100
LARGE_SIZE = 1 << 20


def fill(url: str) -> None:
    """Fill both benchmark streams once (idempotent)."""
    with redis.Redis.from_url(url) as r:
        if r.xlen(SMALL_STREAM) != SMALL_ENTRIES:
            r.delete(SMALL_STREAM)
            pipe = r.pipeline(transaction=False)
            for _ in range(SMALL_ENTRIES):
                pipe.xadd(SMALL_STREAM, SMALL_FIELDS)
            pipe.execute()
        if r.xlen(LARGE_STREAM) != LARGE_ENTRIES:
            r.delete(LARGE_STREAM)
            for _ in range(LARGE_ENTRIES):
                r.xadd(LARGE_STREAM, {"d": os.urandom(LARGE_SIZE)})


def encode(*args: str | int | bytes) -> bytes:
    """One command in RESP."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RawClient:
    """Sends a pre-encoded command and reads exactly `size` reply bytes: no parsing at all."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(1 << 20)

    def call(self, command: bytes, size: int) -> int:
        self.sock.sendall(command)
        view, got = memoryview(self.buf), 0
        while got < size:
            n = self.sock.recv_into(view)
            if not n:
                raise ConnectionError("server closed the connection")
            got += n
        return got

    def capture(self, command: bytes) -> bytes:
        """The whole reply to `command`; hiredis tells when it is complete."""
        self.sock.sendall(command)
        reader, chunks = hiredis.Reader(), []
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            chunks.append(chunk)
            reader.feed(chunk)
            if reader.gets() is not False:
                return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()
