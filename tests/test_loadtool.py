"""The load tool (benchmarks/loadtool.py) against the real server: counts stay honest.

Only correctness is asserted (entries, duplicates, losses, order, sizes), never timing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


loadtool = _load("loadtool")
procs = _load("procs")


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[str]:
    """`fastredis serve` on the session's Redis; its base ws:// URL."""
    port = free_port()
    args = ["-m", "fastredis", "serve", "--port", str(port), "--redis-url", redis_server.url]
    proc = procs.spawn_server([*args, "--maxlen", "100000", "--log-level", "warning"], port)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        procs.stop_server(proc)


@pytest.fixture(scope="module", params=["starlette", "websockets"])
def bare(request: pytest.FixtureRequest) -> Iterator[str]:
    """benchmarks/bare_ws_server.py on either websocket layer; its base ws:// URL."""
    port = free_port()
    args = ["benchmarks/bare_ws_server.py", "--port", str(port), "--impl", request.param]
    proc = procs.spawn_server(args, port)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        procs.stop_server(proc)


async def test_push_then_pull_counts(server: str, redis_server: EmbeddedRedis) -> None:
    sid = "loadtool:small"
    with redis.Redis.from_url(redis_server.url) as r:
        r.delete(sid)
        pushed = await loadtool.push(
            server, sid, 300, 100, confirm="redis", redis_url=redis_server.url
        )
        assert pushed.ok, pushed.text()
        assert pushed.entries == 300
        assert r.xlen(sid) == 300
        first = r.xrange(sid, count=1)[0][1][b"d"]
    assert int.from_bytes(first[:8], "big") == 0 and len(first) == 100
    for count in (1, 7, 100):  # 7: the last batch is short
        res = await loadtool.pull(server, sid, 300, count, size=100)
        assert res.ok, res.text()
        assert (res.entries, res.duplicates, res.lost, res.out_of_order) == (300, 0, 0, 0)
        assert res.payload_bytes == 300 * 100
        assert res.messages == -(-300 // count)


async def test_batched_push_acked(server: str) -> None:
    sid = "loadtool:batched"
    pushed = await loadtool.push(server, sid, 40, 64, batch=5, confirm="ack")
    assert pushed.ok, pushed.text()
    assert pushed.entries == 200
    res = await loadtool.pull(server, sid, 200, 50, size=64)
    assert res.ok, res.text()
    assert (res.entries, res.duplicates, res.lost) == (200, 0, 0)


async def test_pull_reports_missing_entries(server: str) -> None:
    sid = "loadtool:short"
    pushed = await loadtool.push(server, sid, 10, 32, confirm="ack")
    assert pushed.ok, pushed.text()
    res = await loadtool.pull(server, sid, 15, 4, size=32, idle_timeout=0.5)
    assert not res.ok
    assert (res.entries, res.lost, res.duplicates) == (10, 5, 0)


async def test_latency_counts_every_frame(server: str) -> None:
    res = await loadtool.latency(server, "loadtool:latency", size=2000, fps=50, duration=0.4)
    assert res.ok, res.text()
    assert res.entries == 20
    assert set(res.latency_ms) >= {"p50", "p99"}
    assert 0 < res.latency_ms["p50"] <= res.latency_ms["p99"] <= res.latency_ms["max"]


async def test_bare_server_speaks_the_same_protocol(bare: str) -> None:
    pushed = await loadtool.push(bare, "s", 50, 100, batch=2, confirm="ack")
    assert pushed.ok, pushed.text()
    for count in (1, 3):
        res = await loadtool.pull(bare, "s", 100, count, size=100)
        assert res.ok, res.text()
        assert (res.entries, res.duplicates, res.lost) == (100, 0, 0)
    res = await loadtool.latency(bare, "lat", size=1000, fps=50, duration=0.2)
    assert res.ok, res.text()
    assert res.entries == 10


async def test_bare_server_refuses_offsets_that_do_not_fit(bare: str) -> None:
    import websockets

    async with websockets.connect(f"{bare}/data/bad/push", compression=None) as ws:
        await ws.send("[10, 200]")
        await ws.send(bytes(100))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1007
    assert "does not fit" in (ws.close_reason or "")


def _frame(entries: list[tuple[str, int]], size: int = 16) -> tuple[list[list[object]], bytes]:
    header, data = [], b""
    for entry_id, seq in entries:
        header.append(["s", entry_id, len(data)])
        data += seq.to_bytes(8, "big") + bytes(size - 8)
    return header, data


def test_checker_compares_ids_as_numbers() -> None:
    res = loadtool.Result("pull", "x", "s")
    check = loadtool._Checker(res, 16, check_seq=True)
    # '5-10' > '5-9' as numbers, not as strings; '10-0' > '9-5'.
    check.batch(*_frame([("5-9", 0), ("5-10", 1), ("9-5", 2), ("10-0", 3)]))
    check.finish(4)
    assert res.ok, res.text()


def test_checker_counts_duplicates_losses_and_sizes() -> None:
    res = loadtool.Result("pull", "x", "s")
    check = loadtool._Checker(res, 16, check_seq=True)
    check.batch(*_frame([("1-0", 0), ("1-1", 1)]))
    check.batch(*_frame([("1-1", 1)]))  # delivered twice
    check.batch(*_frame([("1-3", 3)]))  # 2 never came
    header, data = _frame([("1-4", 4)], size=20)  # wrong size
    check.batch(header, data)
    check.finish(5)
    assert (res.out_of_order, res.duplicates, res.lost, res.bad_size) == (1, 1, 1, 1)
    assert not res.ok


def test_make_payloads_is_the_readme_form() -> None:
    headers, datas = loadtool.make_payloads(3, 10, batch=2, seq_start=7)
    assert [json.loads(h) for h in headers] == [[10, 20]] * 3
    assert [len(d) for d in datas] == [20] * 3
    seqs = [int.from_bytes(d[i : i + 8], "big") for d in datas for i in (0, 10)]
    assert seqs == [7, 8, 9, 10, 11, 12]
