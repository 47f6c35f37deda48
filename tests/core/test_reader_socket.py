"""Reader.recv_from(sock): receiving straight into the reader's buffer gives the same
replies as feed(); EOF, timeouts and misbehaving sockets; FastParser.read_from_socket."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import redis.exceptions

from fastredis._resp import READ, ProtocolError, Reader
from fastredis.redis_io import FastParser


def bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def arr(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def xread_reply(stream: bytes, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> bytes:
    """An XREAD reply (RESP2) of one stream."""
    es = [arr(bulk(i), arr(*(bulk(x) for kv in f.items() for x in kv))) for i, f in entries]
    return arr(arr(bulk(stream), arr(*es)))


GENERIC = (
    b"+OK\r\n:42\r\n" + bulk(b"hello") + b"$-1\r\n-ERR bad\r\n"
    + arr(bulk(b"a"), b":1\r\n", arr(bulk(b"nested")))
    + b"%2\r\n+k\r\n:1\r\n+k2\r\n,1.5\r\n>2\r\n+message\r\n+x\r\n"
)  # fmt: skip


def drain(reader: Reader, limit: int = 100) -> list:
    out = []
    for _ in range(limit):
        try:
            r = reader.gets()
        except Exception as e:  # compared as data
            out.append(("exc", type(e).__name__, e.args))
            continue
        if r is False:
            break
        out.append(("exc", type(r).__name__, r.args) if isinstance(r, Exception) else r)
    return out


def by_feed(data: bytes, batch: tuple | None = None) -> list:
    r = Reader()
    if batch:
        r.expect_batch(*batch)
    r.feed(data)
    return drain(r)


def by_socket(data: bytes, piece: int, batch: tuple | None = None) -> list:
    """Send `data` in `piece`-byte sends from a thread; recv_from until all arrived."""
    a, b = socket.socketpair()
    try:
        sender = threading.Thread(
            target=lambda: [b.sendall(data[i : i + piece]) for i in range(0, len(data), piece)]
        )
        sender.start()
        r, got, out = Reader(), 0, []
        if batch:
            r.expect_batch(*batch)
        while got < len(data):
            n = r.recv_from(a)
            assert n > 0
            got += n
            out += drain(r)
        sender.join()
        assert not r.has_data()
        return out
    finally:
        a.close()
        b.close()


def batch_rows(results: list) -> list:
    return [
        (len(x), x.to_messages(), x.nbytes) if hasattr(x, "to_messages") else x for x in results
    ]


@pytest.mark.parametrize("piece", [1, 3, 7, 4096])
def test_generic_replies_split_across_sends(piece: int) -> None:
    assert by_socket(GENERIC, piece) == by_feed(GENERIC)


@pytest.mark.parametrize("piece", [1000, 65536 + 3, 1 << 20])
def test_large_bulk_in_pieces(piece: int) -> None:
    big = os.urandom(8 << 20)
    data = arr(bulk(big), bulk(b"tail")) + b"+after\r\n"
    got = by_socket(data, piece)
    assert got == by_feed(data) == [[big, b"tail"], b"after"]


@pytest.mark.parametrize("piece", [999, 1 << 20])
def test_large_batch_in_pieces(piece: int) -> None:
    entries = [(b"1-%d" % i, {b"d": os.urandom(8 << 20 if i == 1 else 100)}) for i in range(3)]
    data = xread_reply(b"s", entries) + b"+OK\r\n"
    got = batch_rows(by_socket(data, piece, (READ, None)))
    assert got == batch_rows(by_feed(data, (READ, None)))
    assert got[0][1] == [(b"s", i, f) for i, f in entries]


def test_batch_buffer_is_the_reply_when_it_ends_with_a_large_bulk() -> None:
    entries = [(b"1-0", {b"d": os.urandom(8 << 20)})]
    data = xread_reply(b"s", entries)
    [batch] = by_socket(data, 1 << 20, (READ, None))
    assert batch.nbytes == len(data) and batch.buf == data


def test_batch_replies_of_changing_sizes_on_one_reader() -> None:
    """A batch reply starts in a buffer as large as the previous one: smaller and larger
    replies after it, and generic ones in between, still come out whole, each batch
    holding exactly its own reply."""
    a, b = socket.socketpair()
    r = Reader()
    try:
        for n in (2000, 50, 5000, 1, 3000):
            entries = [(b"1-%d" % i, {b"k": b"v" * (i % 7)}) for i in range(n)]
            reply = xread_reply(b"s", entries)
            sender = threading.Thread(target=b.sendall, args=(reply + b"+OK\r\n",))
            sender.start()
            r.expect_batch(READ, None)
            got: list = []
            while len(got) < 2:
                assert r.recv_from(a) > 0
                got += drain(r)
            sender.join()
            batch, ok = got
            assert batch.to_messages() == [(b"s", i, f) for i, f in entries]
            assert batch.buf == reply and ok == b"OK"
    finally:
        a.close()
        b.close()


def test_eof_returns_zero_and_keeps_pending_bytes() -> None:
    a, b = socket.socketpair()
    r = Reader()
    b.sendall(b"+partial")
    b.close()
    assert r.recv_from(a) == 8
    assert r.recv_from(a) == 0
    assert r.gets() is False and r.has_data()
    r.feed(b"\r\n")
    assert r.gets() == b"partial"
    a.close()


def test_timeout_raises_and_the_reader_stays_usable() -> None:
    a, b = socket.socketpair()
    try:
        r = Reader()
        b.sendall(b"*2\r\n$5\r\nhel")
        assert r.recv_from(a) > 0
        assert r.gets() is False
        a.settimeout(0.05)
        with pytest.raises(socket.timeout):
            r.recv_from(a)
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            r.recv_from(a)
        a.setblocking(True)
        b.sendall(b"lo\r\n:7\r\n")
        assert r.recv_from(a) > 0
        assert r.gets() == [b"hello", 7]
    finally:
        a.close()
        b.close()


def test_oserror_propagates_unchanged() -> None:
    a, b = socket.socketpair()
    a.close()
    b.close()
    r = Reader()
    r.feed(b"+x")
    with pytest.raises(OSError):
        r.recv_from(a)
    r.feed(b"\r\n")
    assert r.gets() == b"x"


def test_a_reset_connection_raises_connection_reset_error() -> None:
    # the receive that reads what is already there reports the reset as recv_into does
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        client.settimeout(5)
        peer.sendall(b"+ok\r\n")
        r = Reader()
        while r.gets() is False:
            assert r.recv_from(client) > 0
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # linger 0: an RST
        with pytest.raises(ConnectionResetError):
            while True:
                assert r.recv_from(client) > 0
    finally:
        client.close()
        server.close()


_CLEARED_VIEW_CHILD = """
import ctypes
from fastredis._resp import Reader
slot = ctypes.pythonapi.PyType_GetSlot
slot.restype, slot.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_int]
clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(slot(memoryview, 51))  # tp_clear
reader = Reader()
view = reader.get_buffer()
clear(view)  # what the garbage collector does first when both are in a freed cycle
del view
del reader  # frees the reader with its pending view already cleared
print("freed")
"""


def test_a_pending_view_cleared_by_the_garbage_collector_first_is_no_crash() -> None:
    # a dropped asyncio connection: the reader and the view get_buffer gave it die in
    # one cycle, and the collector may clear the view before the reader is freed
    # (this crashed pytest's last collection in the cluster tests); in a child process,
    # so that a crash is a failure here and not the end of the run
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, "-c", _CLEARED_VIEW_CHILD], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "freed"


class FakeSock:
    def __init__(self, data: bytes, keep=None) -> None:
        self.data, self.keep, self.kept = data, keep, None

    def recv_into(self, view: memoryview) -> int:
        n = min(len(view), len(self.data))
        view[:n] = self.data[:n]
        self.data = self.data[n:]
        if self.keep is not None:
            self.kept = self.keep(view)
        return n


@pytest.mark.parametrize(
    "keep",
    [
        lambda v: v[:4],
        lambda v: memoryview(v),
        lambda v: v.cast("B"),
        lambda v: np.frombuffer(v, np.uint8),
    ],
    ids=["slice", "view", "cast", "buffer"],
)
def test_an_export_kept_by_recv_into_is_a_buffer_error(keep) -> None:
    r = Reader()
    r.feed(b"*2\r\n+a\r\n")
    sock = FakeSock(b"+bc\r\n+next\r\n", keep)
    with pytest.raises(BufferError):
        r.recv_from(sock)
    # the kept export still reads the received bytes (that memory is never freed) ...
    assert bytes(sock.kept[:4]) == b"+bc\r"
    # ... and the reader kept them too
    assert r.gets() == [b"a", b"bc"]
    assert r.gets() == b"next"
    assert bytes(sock.kept[:4]) == b"+bc\r"


def test_a_kept_released_view_is_harmless() -> None:
    r = Reader()
    sock = FakeSock(b"+ok\r\n", keep=lambda v: v)
    assert r.recv_from(sock) == 5
    assert r.gets() == b"ok"
    with pytest.raises(ValueError):
        sock.kept[0]


def test_recv_into_returning_nonsense_is_refused() -> None:
    class Liar:
        def recv_into(self, view):
            return len(view) + 1

    r = Reader()
    with pytest.raises(ValueError):
        r.recv_from(Liar())
    assert r.gets() is False and not r.has_data()


def test_reentrancy_is_refused() -> None:
    holder = {}

    class Reentrant:
        def recv_into(self, view):
            with pytest.raises(RuntimeError, match="recv_from"):
                holder["r"].feed(b"+x\r\n")
            with pytest.raises(RuntimeError, match="recv_from"):
                holder["r"].gets()
            view[:4] = b"+y\r\n"
            return 4

    r = holder["r"] = Reader()
    assert r.recv_from(Reentrant()) == 4
    assert r.gets() == b"y"

    def reply_error(msg):
        holder["r"].recv_from(FakeSock(b"+z\r\n"))
        return msg

    r = holder["r"] = Reader(replyError=reply_error)
    r.feed(b"-E\r\n")
    with pytest.raises(RuntimeError, match="being built"):
        r.gets()


def test_in_protocol_error_bytes_are_received_and_dropped() -> None:
    r = Reader()
    r.feed(b"?bad\r\n")
    with pytest.raises(ProtocolError):
        r.gets()
    assert r.recv_from(FakeSock(b"+ok\r\n")) == 5
    with pytest.raises(ProtocolError):
        r.gets()


def test_adopted_bytes_then_recv_from() -> None:
    r = Reader()
    r.feed(b"*2\r\n+a\r\n")  # bytes adopted without a copy
    assert r.recv_from(FakeSock(b"+b\r\n")) == 4
    assert r.gets() == [b"a", b"b"]


# -- FastParser.read_from_socket: redis-py's exception mapping ------------------------


@pytest.fixture
def parser_pair():
    a, b = socket.socketpair()
    p = FastParser(65536)
    p._sock, p._reader, p._socket_timeout = a, Reader(notEnoughData=False), None
    yield p, a, b
    a.close()
    b.close()


def test_read_from_socket_timeouts(parser_pair) -> None:
    p, a, b = parser_pair
    assert p.read_from_socket(timeout=0.01, raise_on_timeout=False) is False
    with pytest.raises(redis.exceptions.TimeoutError):
        p.read_from_socket(timeout=0.01)
    assert a.gettimeout() is None  # restored
    assert p.read_from_socket(timeout=0, raise_on_timeout=False) is False
    with pytest.raises(redis.exceptions.TimeoutError):
        p.read_from_socket(timeout=0)
    b.sendall(b"+ok\r\n")
    assert p.read_from_socket() is True
    assert p._reader.gets() == b"ok"


def test_read_from_socket_eof_and_disconnect(parser_pair) -> None:
    p, _a, b = parser_pair
    b.close()
    with pytest.raises(redis.exceptions.ConnectionError):
        p.read_from_socket()
    p._sock = None
    with pytest.raises(redis.exceptions.ConnectionError):
        p.read_from_socket()
