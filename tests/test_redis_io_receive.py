"""Zero-copy receive: the asyncio client's bytes land straight in the reader's buffer
(`ReceiveProtocol` over `Reader.get_buffer`/`buffer_updated`), against a real Valkey."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from fastredis._resp import READ, Reader
from fastredis.redis_io import axread_batch, make_async_client
from fastredis.redis_io.async_parser import ReceiveProtocol

BIG = 3 << 20


def _raw_reply(url: str, *args: bytes) -> bytes:
    """The exact bytes Valkey sends for one command (RESP2), read off a plain socket."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(command)
        reader, got = Reader(), bytearray()
        while reader.gets() is False:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed before its reply ended"
            got += chunk
            reader.feed(chunk)
        assert not reader.has_data()
        return bytes(got)


def _receive(reader: Reader, data: bytes) -> None:
    """What a transport does: get_buffer, write what fits, buffer_updated."""
    while data:
        view = reader.get_buffer(-1)
        n = min(len(view), len(data))
        view[:n] = data[:n]
        reader.buffer_updated(n)
        data = data[n:]


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = make_async_client(url=redis_url)
    yield client
    await client.aclose()


async def test_the_async_client_receives_into_the_reader(
    aclient: redis.asyncio.Redis, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("big", {"f": b"\x07" * BIG})
    for i in range(2000):
        plain_redis.xadd("small", {"i": i, "s": "x" * 10})
    big = await axread_batch(aclient, {"big": 0}, encoding=None)
    small = await axread_batch(aclient, {"small": 0})
    assert big.to_messages() == [(b"big", e[0], e[1]) for e in plain_redis.xread({"big": 0})[0][1]]
    assert [m[2] for m in small] == [{"i": str(i), "s": "x" * 10} for i in range(2000)]
    assert await aclient.ping() is True
    # the connection that did it has the receiving protocol on its transport
    conn = await aclient.connection_pool.get_connection()
    try:
        assert isinstance(conn._writer.transport.get_protocol(), ReceiveProtocol)
    finally:
        await aclient.connection_pool.release(conn)


@pytest.mark.parametrize("size", [0, 1, 100, 70_000])
def test_a_real_reply_split_at_every_boundary(
    redis_url: str, plain_redis: redis.Redis, size: int
) -> None:
    plain_redis.xadd("s", {"a": b"x" * size, "b": "1"})
    plain_redis.xadd("s", {"c": "2"})
    raw = _raw_reply(redis_url, b"XREAD", b"STREAMS", b"s", b"0")
    whole = Reader()
    whole.expect_batch(READ, None)
    whole.feed(raw)
    expected = whole.gets().to_messages()
    step = 1 if len(raw) < 2000 else 97  # every boundary of the small ones
    for cut in range(1, len(raw), step):
        reader = Reader()
        reader.expect_batch(READ, None)
        _receive(reader, raw[:cut])
        assert reader.gets() is False
        _receive(reader, raw[cut:])
        assert reader.gets().to_messages() == expected


def test_a_pending_view_is_released_before_the_buffer_moves() -> None:
    reader = Reader()
    stale = reader.get_buffer(-1)  # a transport that then got no bytes
    reader.feed(b"+one\r\n")  # may move the buffer: the stale view is released first
    with pytest.raises(ValueError):
        stale[0] = 1
    assert reader.gets() == b"one"
    with pytest.raises(RuntimeError):
        reader.buffer_updated(1)  # its view is gone: nothing to account


def test_buffer_updated_refuses_more_than_the_view() -> None:
    reader = Reader()
    view = reader.get_buffer(-1)
    with pytest.raises(ValueError):
        reader.buffer_updated(len(view) + 1)
    assert reader.len() == 0


def test_a_kept_export_of_the_view_is_reported_and_stays_valid() -> None:
    reader = Reader()
    view = reader.get_buffer(-1)
    view[:6] = b"+abc\r\n"
    kept = view[:6]  # an export of the reader's memory
    with pytest.raises(BufferError):
        reader.buffer_updated(6)
    assert reader.gets() == b"abc"
    assert bytes(kept) == b"+abc\r\n"  # its memory is never freed


class _CuttingProxy:
    """A TCP proxy to the real server that, once `cut_after` is set, forwards only that
    many more reply bytes and then drops both connections."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut_after: int | None = None
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(*self.target)

        async def up() -> None:
            while data := await cr.read(1 << 16):
                sw.write(data)
            sw.close()

        async def down() -> None:
            while data := await sr.read(1 << 16):
                if self.cut_after is not None:
                    cw.write(data[: self.cut_after])
                    self.cut_after -= min(self.cut_after, len(data))
                    if self.cut_after == 0:
                        await cw.drain()
                        cw.transport.abort()
                        sw.transport.abort()
                        return
                else:
                    cw.write(data)
            cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("cut", [1, 1000, 1 << 20])
async def test_a_connection_dropped_mid_reply_raises_and_the_next_read_works(
    redis_url: str, plain_redis: redis.Redis, cut: int
) -> None:
    plain_redis.xadd("big", {"f": b"\x01" * BIG})
    host, port = redis_url.split("//")[1].split("/")[0].split(":")
    proxy = _CuttingProxy(host, int(port))
    client = make_async_client(url=f"redis://127.0.0.1:{await proxy.start()}")
    try:
        assert await client.ping() is True
        proxy.cut_after = cut
        with pytest.raises(redis.exceptions.ConnectionError):
            await axread_batch(client, {"big": 0})
        proxy.cut_after = None
        batch = await axread_batch(client, {"big": 0}, encoding=None)
        assert batch[0][2] == {b"f": b"\x01" * BIG}
    finally:
        await client.aclose()
        await proxy.close()
