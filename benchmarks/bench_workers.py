"""`fastredis serve --workers N`: push and pull throughput with 1 and 2 workers, in one run,
next to their limits (redis-py straight to the same Valkey), and how the connections
spread over the workers (SO_REUSEPORT listeners vs uvicorn's shared accept socket).

    flock /tmp/fastredis-bench.lock pytest benchmarks/bench_workers.py -s

Every case uses CLIENTS concurrent websocket clients (one asyncio loop in this process),
so two workers have something to share. Valkey, the load client and the workers all run
on the same 2 cores: the scaling factor printed is what this machine gives, not what
two machines would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import loadtool
import psutil
import pytest
import redis
from bench_server import direct_pull, direct_push
from procs import spawn_server, stop_server
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis, free_port

CLIENTS = 4
PUSH_MESSAGES, PUSH_SIZE = 5000, 100  # per client
PULL_ENTRIES, PULL_SIZE = 200, 256 * 1024  # read by every client
MAXLEN = 1_000_000


def _serve(redis_url: str, workers: int, balance: str = "reuseport") -> tuple[object, int]:
    port = free_port()
    proc = spawn_server(
        ["-m", "fastredis", "serve", "--port", str(port), "--redis-url", redis_url,
         "--maxlen", str(MAXLEN), "--log-level", "warning", "--workers", str(workers),
         "--balance", balance],
        port,
    )  # fmt: skip
    return proc, port


def _workers(proc: object) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children()  # type: ignore[attr-defined]
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    return workers or [psutil.Process(proc.pid)]  # --workers 1: the server itself


def _spread(proc: object, port: int, n: int = 40) -> list[int]:
    """Connections each worker holds after `n` connections opened while pushing."""
    socks = []
    for _ in range(n):
        ws = connect(f"ws://127.0.0.1:{port}/data/spread/push?ack=1", compression=None,
                     legacy=True)  # fmt: skip
        ws.send("[1]")
        ws.send(b"x")
        ws.recv(timeout=10)
        socks.append(ws)
    try:
        return sorted(
            sum(c.status == "ESTABLISHED" and c.laddr.port == port for c in w.net_connections())
            for w in _workers(proc)
        )
    finally:
        for ws in socks:
            ws.close()


async def _concurrent_push(url: str, redis_url: str, run: int) -> tuple[float, int]:
    payloads = loadtool.make_payloads(PUSH_MESSAGES, PUSH_SIZE)
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(loadtool.push(url, f"push-{run}-{i}", PUSH_MESSAGES, PUSH_SIZE, confirm="redis",
                        redis_url=redis_url, payloads=payloads) for i in range(CLIENTS))
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.text() for r in results if not r.ok]
    return seconds, sum(r.entries for r in results)


async def _concurrent_pull(url: str, sid: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(loadtool.pull(url, sid, PULL_ENTRIES, count=10, size=PULL_SIZE) for _ in range(CLIENTS))
    )
    seconds = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.text() for r in results if not r.ok]
    return seconds, sum(r.payload_bytes for r in results)


@pytest.fixture(scope="module")
def valkey(bench_server: EmbeddedRedis) -> Iterator[str]:
    with redis.Redis.from_url(bench_server.url) as r:
        r.flushall()
        _headers, datas = loadtool.make_payloads(PULL_ENTRIES, PULL_SIZE)
        pipe = r.pipeline(transaction=False)
        for data in datas:
            pipe.xadd("pull-src", {"d": data})
        pipe.execute()
    yield bench_server.url


def test_workers_scaling(valkey: str) -> None:
    rows = []
    push_limit = direct_push(valkey, "direct-push", [b"x" * PUSH_SIZE] * 20000, PUSH_SIZE)
    pull_limit = direct_pull(valkey, "pull-src", PULL_ENTRIES, 10)
    for workers in (1, 2):
        proc, port = _serve(valkey, workers)
        try:
            url = f"ws://127.0.0.1:{port}"
            push_s, pushed = asyncio.run(_concurrent_push(url, valkey, workers))
            pull_s, pulled = asyncio.run(_concurrent_pull(url, "pull-src"))
            rows.append((workers, pushed / push_s, pulled / pull_s / 1e6))
        finally:
            stop_server(proc)
    print(f"\n{CLIENTS} clients; push {PUSH_SIZE} B entries, pull {PULL_SIZE // 1024} KiB")
    print(f"limit: redis-py pipelined XADD {push_limit.entries_per_s:,.0f} entries/s, "
          f"XREAD {pull_limit.mb_per_s:,.0f} MB/s (one client)")  # fmt: skip
    for workers, push_rate, pull_rate in rows:
        print(f"workers {workers}: push {push_rate:,.0f} entries/s "
              f"({push_rate / push_limit.entries_per_s:.0%} of the limit), pull "
              f"{pull_rate:,.0f} MB/s ({pull_rate / pull_limit.mb_per_s:.0%})")  # fmt: skip
    print(f"scaling 2/1: push {rows[1][1] / rows[0][1]:.2f}x, pull {rows[1][2] / rows[0][2]:.2f}x")


@pytest.mark.parametrize("balance", ["reuseport", "shared"])
def test_connection_spread(valkey: str, balance: str) -> None:
    """40 connections opened one after the other while 4 clients push."""
    proc, port = _serve(valkey, 2, balance)
    try:
        url = f"ws://127.0.0.1:{port}"

        async def load_and_spread() -> list[int]:
            pushing = asyncio.ensure_future(_concurrent_push(url, valkey, 100))
            await asyncio.sleep(0.3)
            spread = await asyncio.to_thread(_spread, proc, port)
            await pushing
            return spread

        spread = asyncio.run(load_and_spread())
        print(f"\n{balance}: 40 connections over 2 workers under load: {spread}")
        assert sum(spread) >= 40
    finally:
        stop_server(proc)
