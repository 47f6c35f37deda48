"""What access control costs: push and pull through `fastredis serve` with and without
tokens, in one run.

    flock /tmp/fastredis-bench.lock pytest benchmarks/bench_access.py -s

Two `fastredis serve` subprocesses on one private Valkey: `open` (no access options)
and `jwt` (``--jwt-secret`` and ``--api-key``; the load tool passes a JWT whose
``streams`` claim lists three glob patterns for read and for write). The token is
checked once per socket at the handshake, so the websocket cases should not differ
beyond noise; REST GET checks it on every request (one keep-alive client, so the
HTTP round trip is the ceiling). Rounds alternate which server goes first. Timings
are printed, never asserted; only correctness (counts) is.
Environment: FASTREDIS_BENCH_ROUNDS (3).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import loadtool
import pytest
import redis
from procs import spawn_server, stop_server

from fastredis.embedded import EmbeddedRedis, free_port

ROUNDS = int(os.environ.get("FASTREDIS_BENCH_ROUNDS", "3"))
SECRET = "bench-access-secret-0123456789abcdef"
SMALL = (10_000, 100)  # messages, bytes
LARGE = (50, 1 << 20)
GETS = 2000
SCOPE = {"read": ["other:*", "bench:*", "cam:?"], "write": ["other:*", "bench:*", "cam:?"]}
TARGETS = ("open", "jwt")


@pytest.fixture(scope="module")
def servers(bench_server: EmbeddedRedis) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """target -> (ws base URL, the query parameters carrying its token)."""
    common = ["-m", "fastredis", "serve", "--redis-url", bench_server.url,
              "--maxlen", "1000000", "--log-level", "warning"]  # fmt: skip
    oport, jport = free_port(), free_port()
    procs = [spawn_server([*common, "--port", str(oport)], oport)]
    try:
        auth = ["--jwt-secret", SECRET, "--api-key", "bench-key"]
        procs.append(spawn_server([*common, "--port", str(jport), *auth], jport))
        token = jwt.encode({"streams": SCOPE, "exp": int(time.time()) + 3600}, SECRET)
        yield {
            "open": (f"ws://127.0.0.1:{oport}", {}),
            "jwt": (f"ws://127.0.0.1:{jport}", {"token": token}),
        }
    finally:
        for proc in procs:
            stop_server(proc)


def _push(url: str, query: dict[str, str], sid: str, size: int, redis_url: str) -> float:
    n = SMALL[0] if size == SMALL[1] else LARGE[0]
    res = asyncio.run(
        loadtool.push(url, sid, n, size, confirm="redis", redis_url=redis_url, query=query)
    )
    assert res.ok, res.text()
    return res.entries_per_s if size == SMALL[1] else res.mb_per_s


def _pull(url: str, query: dict[str, str], sid: str, size: int) -> float:
    n = SMALL[0] if size == SMALL[1] else LARGE[0]
    res = asyncio.run(loadtool.pull(url, sid, n, 1, size=size, query=query))
    assert res.ok, res.text()
    return res.entries_per_s if size == SMALL[1] else res.mb_per_s


def _gets(url: str, query: dict[str, str], sid: str) -> float:
    http = url.replace("ws://", "http://")
    with httpx.Client() as client:
        t0 = time.perf_counter()
        for _ in range(GETS):
            resp = client.get(f"{http}/data/{sid}", params=query)
            assert resp.status_code == 200, resp.text
        return GETS / (time.perf_counter() - t0)


CASES = {
    "push 10,000 x 100 B": "entries/s",
    "pull 10,000 x 100 B, count=1": "entries/s",
    "push 50 x 1 MB": "MB/s",
    "pull 50 x 1 MB, count=1": "MB/s",
    "REST GET x 2,000 (1 x 100 B each)": "requests/s",
}


def _round(servers: dict[str, Any], redis_url: str, r: int, out: dict[str, Any]) -> None:
    order = TARGETS if r % 2 == 0 else TARGETS[::-1]
    for target in order:
        url, query = servers[target]
        small, large = f"bench:{target}:{r}:small", f"bench:{target}:{r}:large"
        rates = [
            _push(url, query, small, SMALL[1], redis_url),
            _pull(url, query, small, SMALL[1]),
            _push(url, query, large, LARGE[1], redis_url),
            _pull(url, query, large, LARGE[1]),
            _gets(url, query, small),
        ]
        for case, rate in zip(CASES, rates, strict=True):
            out.setdefault((case, target), []).append(rate)


def test_access_cost(
    benchmark: Any,
    servers: dict[str, Any],
    bench_server: EmbeddedRedis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    rounds = iter(range(ROUNDS))
    benchmark.pedantic(
        lambda: _round(servers, bench_server.url, next(rounds), results), rounds=ROUNDS
    )
    with redis.Redis.from_url(bench_server.url) as r:
        r.flushall()
    lines = [
        "| case | no access control | JWT (3 read + 3 write globs) | JWT / open |",
        "|---|---|---|---|",
    ]
    for case, unit in CASES.items():
        open_, jwt_ = (statistics.median(results[(case, t)]) for t in TARGETS)
        lines.append(f"| {case} | {open_:,.0f} {unit} | {jwt_:,.0f} {unit} | {jwt_ / open_:.2f} |")
    benchmark.extra_info["table"] = lines
    with capsys.disabled():
        print("\n" + "\n".join(lines))
