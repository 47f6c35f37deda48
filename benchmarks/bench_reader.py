"""The reader: parsing captured reply bytes, and the whole client call, in one run.

Groups (compare within a group):
  parse-small / parse-1MB: the same captured XREAD reply bytes parsed by
      fastredis -> StreamBatch, hiredis + redis-py's XREAD callback, and redis-py's
      pure-Python parser + callback.
  call-small / call-1MB: the whole client call against the server: fastredis
      xread_batch, redis-py + hiredis `xread`, redis-py pure Python `xread`, and a raw
      socket that only sends the command and receives the reply bytes (the floor).
Small = XREAD COUNT 10000 of entries with three small fields; 1MB = 100 entries of
one 1 MB field. Run: pytest benchmarks/bench_reader.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import hiredis
import pytest
import redis
from redis._parsers import _RESP2Parser
from redis._parsers.encoders import Encoder
from redis._parsers.helpers import parse_xread
from redis._parsers.socket import SocketBuffer
from replies import (
    LARGE_ENTRIES,
    LARGE_SIZE,
    LARGE_STREAM,
    SMALL_ENTRIES,
    SMALL_STREAM,
    RawClient,
    encode,
    fill,
)

from fastredis import READ, Reader
from fastredis.redis_io import make_client, xread_batch

CASES = {
    "small": (SMALL_STREAM, SMALL_ENTRIES, SMALL_ENTRIES * 3 * 12),
    "1MB": (LARGE_STREAM, LARGE_ENTRIES, LARGE_ENTRIES * LARGE_SIZE),
}


@pytest.fixture(scope="module")
def captured(bench_server) -> dict[str, bytes]:
    """The XREAD reply bytes of each case, captured once from the server."""
    fill(bench_server.url)
    raw = RawClient(bench_server.host, bench_server.port)
    try:
        return {
            case: raw.capture(encode("XREAD", "COUNT", n, "STREAMS", stream, "0"))
            for case, (stream, n, _payload) in CASES.items()
        }
    finally:
        raw.close()


def _fastredis_parse(data: bytes) -> Any:
    reader = Reader()
    reader.feed(data)
    reader.expect_batch(READ, "utf-8")
    return reader.gets()


def _hiredis_parse(data: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(data)
    return parse_xread(reader.gets())


class _MemorySocket:
    """Just enough of a socket for redis-py's SocketBuffer to read captured bytes."""

    def __init__(self, data: bytes) -> None:
        self.view, self.pos = memoryview(data), 0

    def recv(self, n: int) -> bytes:
        chunk = bytes(self.view[self.pos : self.pos + n])
        self.pos += len(chunk)
        return chunk

    def settimeout(self, _timeout: float | None) -> None:
        pass

    def gettimeout(self) -> None:
        return None


def _python_parse(data: bytes) -> Any:
    parser = _RESP2Parser(socket_read_size=65536)
    parser._buffer = SocketBuffer(_MemorySocket(data), 65536, None)
    parser.encoder = Encoder("utf-8", "strict", False)
    return parse_xread(parser.read_response())


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "fastredis": _fastredis_parse,
    "hiredis+redis-py": _hiredis_parse,
    "redis-py-python": _python_parse,
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("parser", list(PARSERS))
def test_parse(benchmark, captured: dict[str, bytes], case: str, parser: str) -> None:
    benchmark.group = f"parse-{case}"
    data = captured[case]
    benchmark.extra_info.update(reply_bytes=len(data), entries=CASES[case][1])
    result = benchmark.pedantic(PARSERS[parser], args=(data,), rounds=15, warmup_rounds=2)
    # a StreamBatch counts entries; redis-py's XREAD result counts streams
    assert len(result) == (CASES[case][1] if parser == "fastredis" else 1)


@pytest.fixture(scope="module")
def clients(bench_server, captured) -> Iterator[dict[str, Callable[[str, int], Any]]]:
    fast = make_client(url=bench_server.url)
    stock = redis.Redis.from_url(bench_server.url)
    python = redis.Redis.from_url(bench_server.url, parser_class=_RESP2Parser)
    raw = RawClient(bench_server.host, bench_server.port)
    sizes = {CASES[case][0]: len(data) for case, data in captured.items()}
    commands = {
        stream: encode("XREAD", "COUNT", n, "STREAMS", stream, "0")
        for stream, n, _payload in CASES.values()
    }
    yield {
        "fastredis": lambda s, n: xread_batch(fast, {s: "0"}, count=n, encoding=None),
        "hiredis+redis-py": lambda s, n: stock.xread({s: "0"}, count=n),
        "redis-py-python": lambda s, n: python.xread({s: "0"}, count=n),
        "raw-socket-floor": lambda s, _n: raw.call(commands[s], sizes[s]),
    }
    for client in (fast, stock, python):
        client.close()
    raw.close()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "client", ["fastredis", "hiredis+redis-py", "redis-py-python", "raw-socket-floor"]
)
def test_call(benchmark, clients, case: str, client: str) -> None:
    benchmark.group = f"call-{case}"
    stream, n, payload = CASES[case]
    benchmark.extra_info.update(entries=n, payload_bytes=payload)
    rounds = 10 if case == "small" else 8
    result = benchmark.pedantic(clients[client], args=(stream, n), rounds=rounds, warmup_rounds=1)
    assert result
