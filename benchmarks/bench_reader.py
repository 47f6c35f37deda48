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

Or the whole call next to the raw-socket floor in one command, 5 runs of interleaved
rounds (wall and CPU time per call; per run the median, then the median and spread of
the runs), plus instruction counts of parsing under valgrind's callgrind (noise-free:
the figure to trust on a shared machine), written to benchmarks/results/reader-*.json:
    python benchmarks/bench_reader.py [--short] [--instructions]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
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


# -- one command: runs of interleaved rounds, and instruction counts ---------------------

CALL_VARIANTS = ("fastredis", "hiredis+redis-py", "raw-socket-floor")


def _call_runs(url: str, host: str, port: int, runs: int, per_run: int) -> dict[str, Any]:
    """Per case and variant: the median wall/CPU seconds of each run's calls."""
    from abrounds import rounds

    fill(url)
    raw = RawClient(host, port)
    fast = make_client(url=url)
    stock = redis.Redis.from_url(url)
    out: dict[str, Any] = {}
    try:
        for case, (stream, n, _payload) in CASES.items():
            command = encode("XREAD", "COUNT", n, "STREAMS", stream, "0")
            size = len(raw.capture(command))
            variants = {
                "fastredis": lambda s=stream, n=n: xread_batch(fast, {s: "0"}, n, encoding=None),
                "hiredis+redis-py": lambda s=stream, n=n: stock.xread({s: "0"}, count=n),
                "raw-socket-floor": lambda c=command, z=size: raw.call(c, z),
            }  # fmt: skip
            per: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
            for _ in range(runs):
                got = rounds(variants, per_run)
                for v, r in got.items():
                    per[v]["wall"].append(statistics.median(r["wall"]))
                    per[v]["cpu"].append(statistics.median(r["cpu"]))
            out[case] = per
    finally:
        fast.close()
        stock.close()
        raw.close()
    return out


_PARSE_CHILD = """
import sys
from bench_reader import PARSERS
data = open(sys.argv[1], "rb").read()
parse = PARSERS[sys.argv[2]]
for _ in range(int(sys.argv[3])):
    parse(data)
"""


def _instructions(data: bytes, parser: str, times: int) -> int:
    """Instructions (callgrind Ir) of a child that parses `data` `times` times."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reply")
        with open(path, "wb") as f:
            f.write(data)
        out = os.path.join(tmp, "cg.out")
        here = os.path.dirname(os.path.abspath(__file__))
        path_ = os.pathsep.join([os.path.dirname(here), here, os.environ.get("PYTHONPATH", "")])
        # one OpenBLAS thread: numpy's idle pool threads spin, and their instructions
        # (tens of millions, varying) would be counted as the parse's
        env = dict(os.environ, PYTHONPATH=path_, OPENBLAS_NUM_THREADS="1")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, "-c", _PARSE_CHILD, path, parser, str(times)],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def _parse_instructions(captured: dict[str, bytes]) -> dict[str, dict[str, float]]:
    """Instructions per parse: (parse 1 + k times) - (parse once), divided by k."""
    out: dict[str, dict[str, float]] = {}
    for case, data in captured.items():
        k = 5 if case == "small" else 3
        out[case] = {}
        for parser in ("fastredis", "hiredis+redis-py"):
            once = _instructions(data, parser, 1)
            out[case][parser] = (_instructions(data, parser, 1 + k) - once) / k
    return out


def main(argv: list[str]) -> None:
    from abrounds import fmt, loadavg, spread, write

    from fastredis.embedded import EmbeddedRedis

    short = "--short" in argv
    runs, per_run = (5, 3) if short else (5, 8)
    load_before = loadavg()
    with EmbeddedRedis() as server:
        calls = _call_runs(server.url, server.host, server.port, runs, per_run)
        captured = {}
        if "--instructions" in argv:
            raw = RawClient(server.host, server.port)
            captured = {
                case: raw.capture(encode("XREAD", "COUNT", n, "STREAMS", stream, "0"))
                for case, (stream, n, _p) in CASES.items()
            }
            raw.close()
    doc: dict[str, Any] = {"runs": runs, "calls_per_run": per_run, "load_before": load_before}
    print(f"{runs} runs x {per_run} interleaved calls; load average before {load_before}")
    for case, per in calls.items():
        floor = per["raw-socket-floor"]
        doc[case] = {
            v: {
                "wall_s": spread(r["wall"]),
                "cpu_s": spread(r["cpu"]),
                "floor_over_this": spread(
                    [f / w for f, w in zip(floor["wall"], r["wall"], strict=True)]
                ),
            }
            for v, r in per.items()
        }
        print(f"\n{case}: per-call wall ms, CPU ms, raw-socket floor / this (1.0 = the floor)")
        for v, row in doc[case].items():
            print(f"  {v:18} {fmt(row['wall_s'], 1e3, 2):24} cpu {fmt(row['cpu_s'], 1e3, 2):24}"
                  f" {fmt(row['floor_over_this'], digits=2)}")  # fmt: skip
    if captured:
        doc["parse_instructions"] = ins = _parse_instructions(captured)
        for case, row in ins.items():
            f, h = row["fastredis"], row["hiredis+redis-py"]
            print(f"parse {case}: fastredis {f:,.0f} instructions, hiredis+redis-py {h:,.0f} "
                  f"({h / f:.1f}x)")  # fmt: skip
    doc["load_after"] = loadavg()
    print(f"\nload average after {doc['load_after']}; written to {write('reader', doc)}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1:])
