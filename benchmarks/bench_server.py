"""The websocket server next to its two limits, in one run.

    pytest benchmarks/bench_server.py -s --benchmark-json=server.json
    python benchmarks/bench_server.py            # the same, through pytest
    python benchmarks/bench_server.py --yardsticks [--short]   # see `yardsticks`

Starts a private Valkey (the `bench_server` fixture), `fastredis serve` on it (a
subprocess, `--maxlen 1000000` so nothing pulled is trimmed) and the two bare websocket
servers of benchmarks/bare_ws_server.py (no Redis): one on the same Starlette + uvicorn
stack as the server, one on the `websockets` library's asyncio server. Every case runs
against four targets:

* server: benchmarks/loadtool.py against `fastredis serve`;
* direct: redis-py (+hiredis) talking to the same Valkey: pipelined XADD of the same
  entries (one XADD per entry, however the websocket push batches them); XREAD of the
  same entries with the same count;
* bare: the same load tool against the bare Starlette/uvicorn server;
* bare-ws: the same load tool against the bare `websockets`-library server.

A gateway's limit is the lower of its limits; which targets are a case's limits is
part of the case (`Case.limits`): direct and bare Starlette for the cases the table has
always had, direct alone for the batched push, direct and bare websockets for the
second row of the 1 MB pull (the same runs, the issue's yardstick). The table gives
every target's rate, the limit (and which target it is) and server / limit. A push
counts as done when Redis holds every entry (entries-added of XINFO STREAM; a bare
server: when its close handshake is done); a pull when the last entry arrived, checked
for duplicates, losses, order and size.
Latency: one pusher of 300 KB frames at 30 fps, one puller, receive minus send.
Memory: the server's RSS while 200 x 1 MB frames are pushed and a slow puller reads
with latest=1.

Timings are reported, never asserted; only correctness (counts) is. The table is
printed at the end and recorded in benchmarks/results/ (one dated file per run).
Environment: FASTREDIS_BENCH_ROUNDS (3), FASTREDIS_BENCH_LATENCY_S (5).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadtool
import psutil
import pytest
import redis
import redis.asyncio
from procs import spawn_server, stop_server
from record import write_run

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("FASTREDIS_BENCH_ROUNDS", "3"))
LATENCY_S = float(os.environ.get("FASTREDIS_BENCH_LATENCY_S", "5"))
MAXLEN = 1_000_000
MB = 1 << 20
SMALL = (20_000, 100)  # messages, bytes
LARGE = (100, MB)
BATCH = 100  # entries per message of the batched 100-byte push
LATENCY = (300_000, 30.0)  # bytes, fps
MEMORY_FRAMES = 200
TARGETS = ("server", "direct", "bare", "bare-ws")
LABELS = {
    "server": "fastredis server",
    "direct": "redis-py direct",
    "bare": "bare Starlette",
    "bare-ws": "bare websockets",
}


@dataclass
class Stack:
    redis: EmbeddedRedis
    server: subprocess.Popen[bytes]
    server_url: str
    bare: subprocess.Popen[bytes]
    bare_url: str
    bare_ws: subprocess.Popen[bytes]
    bare_ws_url: str
    results: dict[tuple[str, str], list[loadtool.Result]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    sids: dict[tuple[str, str], str] = field(default_factory=dict)  # last pushed stream

    def url(self, target: str) -> str:
        return {"server": self.server_url, "bare": self.bare_url, "bare-ws": self.bare_ws_url}[
            target
        ]

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each process of the run."""
        procs = {
            "client": psutil.Process(),
            "server": psutil.Process(self.server.pid),
            "bare": psutil.Process(self.bare.pid),
            "bare-ws": psutil.Process(self.bare_ws.pid),
            "valkey": psutil.Process(self.redis.pid),
        }
        return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}


@pytest.fixture(scope="module")
def stack(bench_server: EmbeddedRedis) -> Iterator[Stack]:
    sport, bport, wport = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(spawn_server(
            ["-m", "fastredis", "serve", "--port", str(sport), "--redis-url", bench_server.url,
             "--maxlen", str(MAXLEN), "--log-level", "warning"],
            sport,
        ))  # fmt: skip
        for port, impl in ((bport, "starlette"), (wport, "websockets")):
            args = ["benchmarks/bare_ws_server.py", "--port", str(port), "--impl", impl]
            procs.append(spawn_server(args, port))
        server, bare, bare_ws = procs
        yield Stack(
            bench_server,
            server,
            f"ws://127.0.0.1:{sport}",
            bare,
            f"ws://127.0.0.1:{bport}",
            bare_ws,
            f"ws://127.0.0.1:{wport}",
        )
    finally:
        for proc in procs:
            stop_server(proc)


# -- redis-py direct: the Redis limit ------------------------------------------------------


def direct_push(url: str, sid: str, datas: list[bytes], size: int) -> loadtool.Result:
    res = loadtool.Result("push", "redis-py", sid, entries=len(datas), messages=len(datas))
    res.payload_bytes = len(datas) * size
    with redis.Redis.from_url(url) as r:
        r.ping()
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for data in datas:
            pipe.xadd(sid, {"d": data}, maxlen=MAXLEN, approximate=True)
        ids = pipe.execute()
        res.seconds = time.perf_counter() - t0
    res.lost = len(datas) - len(ids)
    return res


def direct_pull(url: str, sid: str, entries: int, count: int) -> loadtool.Result:
    res = loadtool.Result("pull", "redis-py", sid, params={"count": count})
    with redis.Redis.from_url(url) as r:
        r.ping()
        last: Any = "0"
        t0 = time.perf_counter()
        while res.entries < entries:
            reply = r.xread({sid: last}, count=count)
            if not reply:
                res.errors.append(f"XREAD returned nothing after {res.entries} entries")
                break
            batch = reply[0][1]
            res.entries += len(batch)
            res.messages += 1
            res.payload_bytes += sum(len(fields[b"d"]) for _id, fields in batch)
            last = batch[-1][0]
        res.seconds = time.perf_counter() - t0
    res.lost = max(0, entries - res.entries)
    return res


async def direct_latency(
    url: str, sid: str, size: int, fps: float, duration: float
) -> loadtool.Result:
    """redis-py asyncio: one XADD pusher at `fps`, one XREAD BLOCK puller."""
    frames = max(1, round(fps * duration))
    res = loadtool.Result("latency", "redis-py", sid, params={"size": size, "fps": fps})
    stamp = struct.Struct(">QQ")
    samples: list[float] = []
    frame = bytearray(os.urandom(size))
    pusher = redis.asyncio.Redis.from_url(url)
    puller = redis.asyncio.Redis.from_url(url)
    try:
        await pusher.ping()
        await puller.ping()

        async def pull_loop() -> None:
            last: Any = "0"
            while res.entries < frames:
                reply = await puller.xread({sid: last}, count=1, block=1000)
                now = time.monotonic_ns()
                for entry_id, fields in reply[0][1] if reply else ():
                    samples.append((now - stamp.unpack_from(fields[b"d"])[1]) / 1e6)
                    res.entries += 1
                    last = entry_id

        reader = asyncio.create_task(pull_loop())
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(frames):
            delay = t0 + i / fps - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stamp.pack_into(frame, 0, i, time.monotonic_ns())
            await pusher.xadd(sid, {"d": bytes(frame)}, maxlen=MAXLEN, approximate=True)
        await asyncio.wait_for(reader, 10)
        res.seconds = loop.time() - t0
    finally:
        await pusher.aclose()
        await puller.aclose()
    samples.sort()
    res.latency_ms = {q: loadtool.percentile(samples, float(q[1:])) for q in ("p50", "p99")}
    res.payload_bytes = res.entries * size
    res.lost = frames - res.entries
    return res


def _rate(res: loadtool.Result, unit: str) -> float:
    return res.entries_per_s if unit == "entries/s" else res.mb_per_s


# -- the cases ---------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    title: str
    unit: str  # "entries/s", "MB/s" or "ms"
    goal: float | None = None  # server / limit at least this
    limits: tuple[str, ...] = ("direct", "bare")  # the limit: the lowest of these
    runs_of: str = ""  # a second view on another case's runs (no runs of its own)
    note: str = ""


_WS = ("direct", "bare-ws")
CASES = {
    "push-100B": Case("push-100B", "push 20,000 x 100 B (header + data each)", "entries/s", 0.6),
    "push-100B-b100": Case(
        "push-100B-b100",
        f"push 20,000 x 100 B, {BATCH} per message (limit: direct XADD)",
        "entries/s",
        0.8,
        limits=("direct",),
    ),
    "pull-100B-c1": Case("pull-100B-c1", "pull 20,000 x 100 B, count=1", "entries/s"),
    "pull-100B-c100": Case("pull-100B-c100", "pull 20,000 x 100 B, count=100", "entries/s"),
    "push-1MB": Case("push-1MB", "push 100 x 1 MB", "MB/s", 0.8),
    "pull-1MB": Case("pull-1MB", "pull 100 x 1 MB, count=1", "MB/s", 0.8),
    "pull-1MB-ws": Case(
        "pull-1MB-ws",
        "pull 100 x 1 MB, count=1 (limit: direct or bare websockets)",
        "MB/s",
        0.8,
        limits=_WS,
        runs_of="pull-1MB",
    ),
}


_PAYLOADS: dict[tuple[int, int], tuple[list[str], list[bytes]]] = {}


def payloads(size: int, batch: int = 1) -> tuple[list[str], list[bytes]]:
    """The push messages of `size`-byte entries, `batch` per message (built once): the
    same entries (sequence numbers 0, 1, ...) however they are batched."""
    if (size, batch) not in _PAYLOADS:
        entries = SMALL[0] if size == SMALL[1] else LARGE[0]
        _PAYLOADS[(size, batch)] = loadtool.make_payloads(entries // batch, size, batch)
    return _PAYLOADS[(size, batch)]


def run_push(st: Stack, target: str, size: int, rnd: int, batch: int = 1) -> loadtool.Result:
    headers, datas = payloads(size, batch)
    sid = f"bench:push:{size}:{batch}:{target}:{rnd}"
    if target == "direct":
        # One XADD per entry: the entries of the unbatched payloads.
        res = direct_push(st.redis.url, sid, payloads(size)[1], size)
    else:
        confirm = "redis" if target == "server" else "close"
        res = asyncio.run(
            loadtool.push(
                st.url(target),
                sid,
                len(datas),
                size,
                batch,
                confirm=confirm,
                redis_url=st.redis.url,
                payloads=(headers, datas),
            )
        )
    if batch == 1:
        st.sids[(f"{size}", target)] = sid
    return res


def pushed_sid(st: Stack, target: str, size: int) -> str:
    """The stream the push case filled for `target`, filled now when that case did not run."""
    key = (f"{size}", target)
    if key not in st.sids:
        res = run_push(st, target, size, rnd=-1)
        assert res.ok, res.text()
    return st.sids[key]


def run_pull(st: Stack, target: str, size: int, count: int) -> loadtool.Result:
    sid = pushed_sid(st, target, size)
    n = len(payloads(size)[1])
    if target == "direct":
        return direct_pull(st.redis.url, sid, n, count)
    return asyncio.run(loadtool.pull(st.url(target), sid, n, count, size=size))


RUNNERS: dict[str, Callable[[Stack, str, int], loadtool.Result]] = {
    "push-100B": lambda st, t, r: run_push(st, t, SMALL[1], r),
    "push-100B-b100": lambda st, t, r: run_push(st, t, SMALL[1], r, BATCH),
    "pull-100B-c1": lambda st, t, _r: run_pull(st, t, SMALL[1], 1),
    "pull-100B-c100": lambda st, t, _r: run_pull(st, t, SMALL[1], 100),
    "push-1MB": lambda st, t, r: run_push(st, t, LARGE[1], r),
    "pull-1MB": lambda st, t, _r: run_pull(st, t, LARGE[1], 1),
}


def _median(results: list[loadtool.Result]) -> loadtool.Result:
    return sorted(results, key=lambda r: r.seconds)[len(results) // 2]


@pytest.mark.parametrize("case", list(RUNNERS))
def test_throughput(benchmark: Any, stack: Stack, case: str) -> None:
    """One case, all targets, rounds interleaved (round r starts with target r mod 4) so
    a noisy neighbour hurts every target alike. pytest-benchmark times whole rounds;
    the numbers that count are the load tool's own, in extra_info and the table."""
    benchmark.group = "server"
    results: dict[str, list[loadtool.Result]] = {t: [] for t in TARGETS}
    rounds = iter(range(ROUNDS))

    def one_round() -> None:
        r = next(rounds)
        k = r % len(TARGETS)
        for target in TARGETS[k:] + TARGETS[:k]:
            before = stack.cpu()
            res = RUNNERS[case](stack, target, r)
            after = stack.cpu()
            res.params["cpu_ms"] = {k: round((after[k] - v) * 1e3) for k, v in before.items()}
            results[target].append(res)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    unit = CASES[case].unit
    for target, runs in results.items():
        stack.results[(case, target)] = runs
        mid = _median(runs)
        benchmark.extra_info[target] = {
            "seconds": [round(r.seconds, 4) for r in runs],
            "entries_per_s": round(mid.entries_per_s),
            "mb_per_s": round(mid.mb_per_s, 1),
            unit: _rate(mid, unit),
        }
    expected = SMALL[0] if "100B" in case else LARGE[0]
    for target, runs in results.items():
        for res in runs:
            assert res.ok, f"{target}: {res.text()}"
            assert res.entries == expected, f"{target}: {res.text()}"
    if case == "pull-1MB":
        # Every target has read the 1 MB streams: give Valkey its memory back.
        with redis.Redis.from_url(stack.redis.url) as r:
            keys = list(r.scan_iter(match=f"bench:push:{LARGE[1]}:*"))
            if keys:
                r.delete(*keys)


@pytest.mark.parametrize("target", TARGETS)
def test_latency(benchmark: Any, stack: Stack, target: str) -> None:
    benchmark.group = "server-latency"
    size, fps = LATENCY
    sid = f"bench:latency:{target}"
    out: list[loadtool.Result] = []

    def once() -> None:
        if target == "direct":
            out.append(asyncio.run(direct_latency(stack.redis.url, sid, size, fps, LATENCY_S)))
        else:
            out.append(asyncio.run(loadtool.latency(stack.url(target), sid, size, fps, LATENCY_S)))

    benchmark.pedantic(once, rounds=1, iterations=1)
    res = out[0]
    stack.results[("latency", target)] = [res]
    benchmark.extra_info.update(latency_ms=res.latency_ms, frames=res.entries)
    assert res.ok, res.text()
    assert res.entries == round(fps * LATENCY_S), res.text()


async def _memory(st: Stack) -> dict[str, Any]:
    """Server RSS while MEMORY_FRAMES x 1 MB are pushed as fast as the server takes
    them and a slow puller (10 batches/s) uses latest=1; and how long after the push
    that puller sees the last frame (what queues between server and puller)."""
    proc = psutil.Process(st.server.pid)
    sid = "bench:memory"
    seqs: list[tuple[float, int]] = []
    stop = asyncio.Event()
    seq = struct.Struct(">Q")

    async def slow_puller() -> None:
        uri = f"{st.server_url}/data/{sid}/pull?latest=1"
        async with loadtool._connect(uri) as ws:
            while not stop.is_set():
                try:
                    head = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except asyncio.TimeoutError:
                    continue
                data = await ws.recv()
                if head:
                    seqs.append((time.perf_counter(), seq.unpack_from(data, head[-1][2])[0]))
                await asyncio.sleep(0.1)

    peak = 0

    async def sampler() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.02)

    puller = asyncio.create_task(slow_puller())
    await asyncio.sleep(0.3)
    # Warm up: the first large messages size the allocator's pools.
    warm = 20
    await loadtool.push(st.server_url, sid, warm, MB, confirm="redis", redis_url=st.redis.url)
    await asyncio.sleep(1.0)
    before = proc.memory_info().rss
    pulled_before = len(seqs)
    sampling = asyncio.create_task(sampler())
    t0 = time.perf_counter()
    res = await loadtool.push(
        st.server_url,
        sid,
        MEMORY_FRAMES,
        MB,
        confirm="redis",
        redis_url=st.redis.url,
        seq_start=warm,
    )
    pushed_at = time.perf_counter()
    last = warm + MEMORY_FRAMES - 1
    while not (seqs and seqs[-1][1] == last) and time.perf_counter() - pushed_at < 15:
        await asyncio.sleep(0.01)
    caught_up = seqs[-1][0] - pushed_at if seqs and seqs[-1][1] == last else None
    await asyncio.sleep(0.5)
    after = proc.memory_info().rss
    stop.set()
    await sampling
    await puller
    with redis.Redis.from_url(st.redis.url) as r:
        r.delete(sid)
    return {
        "ok": res.ok,
        "push_errors": res.errors,
        "frames": MEMORY_FRAMES,
        "push_s": pushed_at - t0,
        "rss_before_mb": before / 1e6,
        "rss_peak_mb": max(peak, after) / 1e6,
        "rss_after_mb": after / 1e6,
        "frames_pulled": len(seqs) - pulled_before,
        "last_frame_after_s": caught_up,
    }


def test_memory_slow_latest_puller(benchmark: Any, stack: Stack) -> None:
    benchmark.group = "server-memory"
    out: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: out.append(asyncio.run(_memory(stack))), rounds=1, iterations=1)
    info = out[0]
    stack.extra["memory"] = info
    benchmark.extra_info.update(info)
    assert info["ok"], info["push_errors"]


# -- the table ---------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


SHORT = {"direct": "direct", "bare": "Starlette", "bare-ws": "websockets"}


def _goal_text(ratio: float, goal: float | None) -> str:
    if goal is None:
        return ""
    return f">= {goal:.0%}: " + ("met" if ratio >= goal else "MISSED")


def _throughput_rows(st: Stack, lines: list[str], rows: list[dict[str, Any]]) -> None:
    for name, case in CASES.items():
        got = {t: st.results.get((case.runs_of or name, t)) for t in TARGETS}
        if not all(got.values()):
            continue
        rates = {t: _rate(_median(rs), case.unit) for t, rs in got.items() if rs}
        by = min(case.limits, key=lambda t: rates[t])
        limit = rates[by]
        ratio = rates["server"] / limit if limit else float("nan")
        server_runs = got["server"] or []
        dups = sum(r.duplicates + r.out_of_order for r in server_runs)
        lost = sum(r.lost for r in server_runs)
        cells = " | ".join(_fmt(rates[t], case.unit) for t in TARGETS)
        lines.append(
            f"| {case.title} | {case.unit} | {cells} | {_fmt(limit, case.unit)} ({SHORT[by]}) "
            f"| {ratio:.0%} | {_goal_text(ratio, case.goal)} | {dups} / {lost} |"
        )
        rows.append(
            {"case": name, "unit": case.unit, **rates, "limit": limit, "limit_by": by,
             "ratio": ratio, "goal": case.goal}
        )  # fmt: skip


def _latency_rows(st: Stack, lines: list[str], rows: list[dict[str, Any]]) -> None:
    lat = {t: st.results.get(("latency", t)) for t in TARGETS}
    if not all(lat.values()):
        return
    size, fps = LATENCY
    server_res = lat["server"][0]  # type: ignore[index]
    for q in ("p50", "p99"):
        vals = {t: rs[0].latency_ms.get(q, float("nan")) for t, rs in lat.items() if rs}
        by = max(("direct", "bare"), key=lambda t: vals[t])
        limit = vals[by]
        goal = ""
        if q == "p99":
            goal = "<= 3 ms: " + ("met" if vals["server"] <= 3.0 else "MISSED")
        cells = " | ".join(f"{vals[t]:.2f}" for t in TARGETS)
        lines.append(
            f"| latency {size // 1000} KB at {fps:.0f} fps, {q} | ms | {cells} "
            f"| {limit:.2f} ({SHORT[by]}) | {limit / vals['server']:.0%} | {goal} "
            f"| {server_res.duplicates + server_res.out_of_order} / {server_res.lost} |"
        )
        rows.append({"case": f"latency-{q}", "unit": "ms", **vals, "limit": limit})


def _memory_row(st: Stack, lines: list[str], rows: list[dict[str, Any]]) -> None:
    mem = st.extra.get("memory")
    if not mem:
        return
    growth = mem["rss_peak_mb"] - mem["rss_before_mb"]
    flat = growth < 0.1 * mem["frames"] * MB / 1e6
    late = mem["last_frame_after_s"]
    late_text = "never" if late is None else f"{late:.2f} s after the push"
    lines.append(
        f"| server RSS, {mem['frames']} x 1 MB pushed in {mem['push_s']:.2f} s, slow "
        f"puller latest=1 ({mem['frames_pulled']} frames pulled, the last {late_text}) | MB "
        f"| {mem['rss_before_mb']:.0f} -> peak {mem['rss_peak_mb']:.0f} -> "
        f"{mem['rss_after_mb']:.0f} | | | | | | flat (growth < 10% of data pushed): "
        f"{'met' if flat else 'MISSED'} (+{growth:.0f} MB) | |"
    )
    rows.append({"case": "memory", **mem})


def build_table(st: Stack) -> tuple[str, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    lines = [
        f"Median of {ROUNDS} rounds; limit = the lower of the case's limits (named in "
        "the cell; redis-py direct and bare Starlette unless the case says otherwise); "
        "ratio = server / limit.",
        "",
        "| case | unit | " + " | ".join(LABELS[t] for t in TARGETS)
        + " | limit | ratio | goal | dups / lost |",
        "|---|---|" + "---:|" * (len(TARGETS) + 2) + "---|---|",
    ]  # fmt: skip
    _throughput_rows(st, lines, rows)
    _latency_rows(st, lines, rows)
    _memory_row(st, lines, rows)
    lines += [
        "",
        "Latency: limit = the higher of the latencies of redis-py direct and bare "
        "Starlette; ratio = limit / server.",
    ]
    cpu_lines = _cpu_table(st)
    if cpu_lines:
        lines += ["", *cpu_lines]
    return "\n".join(lines), rows


CPU_PROCS = {
    "server": ("client", "server", "valkey"),
    "direct": ("client", "valkey"),
    "bare": ("client", "bare"),
    "bare-ws": ("client", "bare-ws"),
}


def _cpu_table(st: Stack) -> list[str]:
    """CPU ms each process used in the median run of every case and target: unlike
    wall time, hardly moved by other load on the machine."""
    lines = [
        "CPU time of the median run, ms (user + system): load client / gateway process "
        "/ Valkey; wall ms for comparison.",
        "",
        "| case | "
        + " | ".join(f"{t}: {' / '.join(p)} (wall)" for t, p in CPU_PROCS.items())
        + " |",
        "|---|" + "---|" * len(CPU_PROCS),
    ]
    for name, case in CASES.items():
        if case.runs_of:
            continue
        got = {t: st.results.get((name, t)) for t in TARGETS}
        if not all(got.values()):
            continue
        cells = []
        for target, procs in CPU_PROCS.items():
            mid = _median(got[target])  # type: ignore[arg-type]
            cpu = mid.params.get("cpu_ms", {})
            used = " / ".join(str(cpu.get(p, "?")) for p in procs)
            cells.append(f"{used} ({mid.seconds * 1e3:.0f})")
        lines.append(f"| {case.title} | " + " | ".join(cells) + " |")
    return lines


def test_zz_table(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the table of this run and record it in benchmarks/results/."""
    table, rows = build_table(stack)
    write_run("server", table, rows)
    with capsys.disabled():
        print("\n\n" + table + "\n")


# -- yardsticks: the 1 MB pull next to the simplest relay, CPU per MB next to bare ---------

YARD_ENTRIES = 400  # 1 MB entries per pull (--short: 100)
# "-unix": the same process reaching Valkey by its unix socket instead of loopback TCP
YARD_TARGETS = ("server", "server-unix", "server-hub", "server-unix-hub", "relay", "bare-ws",
                "bare-raw", "floor", "floor-unix", "splice-floor")  # fmt: skip
# FASTREDIS_BENCH_BASE_TREE=DIR adds "server-base" and "server-unix-base": `fastredis
# serve` imported from DIR
# (another checkout, its extensions built), for an A/B of a change in the same run.
BASE_TREE = os.environ.get("FASTREDIS_BENCH_BASE_TREE")


def _fill_mb(url: str, sid: str, n: int) -> None:
    """`n` entries of 1 MB in field `d`, each starting with its sequence number."""
    _headers, payloads = loadtool.make_payloads(n, MB)
    with redis.Redis.from_url(url) as r:
        r.delete(sid)
        for start in range(0, n, 50):
            pipe = r.pipeline(transaction=False)
            for data in payloads[start : start + 50]:
                pipe.xadd(sid, {"d": data})
            pipe.execute()


def _scratch_file() -> str:
    with tempfile.NamedTemporaryFile(prefix="perf-", delete=False) as f:
        return f.name


class _TaskClock:
    """The CPU time (s) of each watched process from start to stop: `perf stat -e
    task-clock` (ns, every thread, also those that ended) with FASTREDIS_BENCH_PERF=1,
    else psutil (clock ticks: 10 ms, coarse for a floor's ~100 ms a pull)."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.perf = os.environ.get("FASTREDIS_BENCH_PERF") == "1"

    def __enter__(self) -> _TaskClock:
        if self.perf:
            self._outs = {k: _scratch_file() for k in self.procs}
            perf = ["perf", "stat", "-e", "task-clock", "-x,"]
            self._perfs = [
                subprocess.Popen([*perf, "-o", self._outs[k], "-p", str(p.pid)])
                for k, p in self.procs.items()
            ]
            time.sleep(0.3)  # attached
        else:
            self._before = {k: sum(p.cpu_times()[:2]) for k, p in self.procs.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.perf:
            self.used = {k: sum(p.cpu_times()[:2]) - self._before[k] for k, p in self.procs.items()}
            return
        for perf in self._perfs:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
        self.used = {}
        for k, path in self._outs.items():
            with open(path) as f:
                line = next(x for x in f if "task-clock" in x)
            os.unlink(path)
            self.used[k] = float(line.split(",")[0]) / 1e3  # msec -> s


def _pull_round(urls: dict[str, str], procs: dict[str, psutil.Process], sid: str, n: int,
                order: list[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    """One pull of `n` x 1 MB per target (in `order`), with the CPU each process used."""
    out = {}
    me = psutil.Process()
    for target in order:
        watched = {"client": me, "gateway": procs[target], **({"valkey": procs["valkey"]})}
        with _TaskClock(watched) as clock:
            res = loadtool.raw_pull(urls[target], sid, n, 1, size=MB)
        if not res.ok:
            raise RuntimeError(f"{target}: {res.text()}")
        used = clock.used
        mb = res.payload_bytes / 1e6
        out[target] = {
            "mb_per_s": res.mb_per_s,
            "gateway_cpu_ms_per_mb": used["gateway"] * 1e3 / mb,
            "client_cpu_ms_per_mb": used["client"] * 1e3 / mb,
            "valkey_cpu_ms_per_mb": used["valkey"] * 1e3 / mb,
        }
    return out


def yardsticks(runs: int = 5, entries: int = YARD_ENTRIES) -> dict[str, Any]:
    """`runs` interleaved rounds of the 1 MB pull against `fastredis serve`, the relay
    (benchmarks/relay_yardstick.py), the bare `websockets` server (the load tool's
    own ceiling: no Redis) and the floor (benchmarks/floor_forwarder.py: raw XREAD
    COUNT 1 to one sendmsg, no library), all read by loadtool.raw_pull; per-round
    ratios."""
    from abrounds import loadavg, spread

    load_before = loadavg()
    sid = "yard"
    targets = (*YARD_TARGETS, "server-base", "server-unix-base") if BASE_TREE else YARD_TARGETS
    started: list[subprocess.Popen[bytes]] = []
    with EmbeddedRedis(unix_socket=True) as valkey:
        unix_url = valkey.unix_url or ""
        try:
            _fill_mb(valkey.url, sid, entries)
            ports = {t: free_port() for t in targets}
            argv = {
                "server": _server_argv(ports["server"], valkey.url),
                "relay": ["benchmarks/relay_yardstick.py", "--port", str(ports["relay"]),
                          "--redis-url", valkey.url],
                "bare-ws": ["benchmarks/bare_ws_server.py", "--port", str(ports["bare-ws"]),
                            "--impl", "websockets"],
                "floor": ["benchmarks/floor_forwarder.py", "--port", str(ports["floor"]),
                          "--redis-url", valkey.url],
                "floor-unix": ["benchmarks/floor_forwarder.py", "--port", str(ports["floor-unix"]),
                               "--redis-url", unix_url],
                # the load tool's own ceiling: frames from memory, no websocket library
                "bare-raw": ["benchmarks/floor_forwarder.py", "--canned", str(MB),
                             "--port", str(ports["bare-raw"])],
                "splice-floor": ["benchmarks/floor_forwarder.py", "--splice",
                                 "--port", str(ports["splice-floor"]), "--redis-url", valkey.url],
            }  # fmt: skip
            argv["server-unix"] = _server_argv(ports["server-unix"], unix_url)
            # the same server with the catch-up through the hub (no splice pump)
            hub = ["--splice-pulls", "off"]
            argv["server-hub"] = _server_argv(ports["server-hub"], valkey.url) + hub
            argv["server-unix-hub"] = _server_argv(ports["server-unix-hub"], unix_url) + hub
            if BASE_TREE:
                argv["server-base"] = _server_argv(ports["server-base"], valkey.url, BASE_TREE)
                argv["server-unix-base"] = _server_argv(
                    ports["server-unix-base"], unix_url, BASE_TREE
                )
            procs: dict[str, psutil.Process] = {"valkey": psutil.Process(valkey.pid)}
            for target in targets:
                started.append(spawn_server(argv[target], ports[target]))
                procs[target] = psutil.Process(started[-1].pid)
            urls = {t: f"ws://127.0.0.1:{ports[t]}" for t in targets}
            # the bare server answers pulls with frames cut from what was pushed to it
            pushed = asyncio.run(loadtool.push(urls["bare-ws"], sid, entries, MB, confirm="ack"))
            if not pushed.ok:
                raise RuntimeError(f"push to the bare server: {pushed.text()}")
            _pull_round(urls, procs, sid, min(entries, 50), list(targets))  # warm-up
            rounds = []
            for r in range(runs):
                k = r % len(targets)
                order = list(targets[k:] + targets[:k])
                rounds.append(_pull_round(urls, procs, sid, entries, order))
        finally:
            for proc in started:
                stop_server(proc)

    def col(target: str, key: str) -> list[float]:
        return [r[target][key] for r in rounds]

    summary = {t: {k: spread(col(t, k)) for k in rounds[0][t]} for t in targets}

    def ratio(a: str, b: str, key: str = "gateway_cpu_ms_per_mb") -> dict[str, float]:
        """Target `a`'s `key` over target `b`'s, per round."""
        return spread([r[a][key] / r[b][key] for r in rounds])

    summary["ratios"] = {
        # Valkey by its unix socket instead of loopback TCP
        "server_unix_cpu_per_mb_vs_server": ratio("server-unix", "server"),
        "server_unix_cpu_per_mb_vs_bare_ws": ratio("server-unix", "bare-ws"),
        "floor_unix_cpu_per_mb_vs_floor": ratio("floor-unix", "floor"),
        "floor_unix_cpu_per_mb_vs_bare_ws": ratio("floor-unix", "bare-ws"),
        "server_vs_relay_mb_per_s": ratio("server", "relay", "mb_per_s"),
        "bare_ws_vs_server_mb_per_s (load tool headroom)": ratio("bare-ws", "server", "mb_per_s"),
        # the load tool's own ceiling (no websocket library in the server) over the server
        "bare_raw_vs_server_mb_per_s": ratio("bare-raw", "server", "mb_per_s"),
        "bare_raw_vs_server_unix_mb_per_s": ratio("bare-raw", "server-unix", "mb_per_s"),
        "server_cpu_per_mb_vs_bare_ws": ratio("server", "bare-ws"),
        # the splice pump against the catch-up through the hub (--splice-pulls off)
        "server_cpu_per_mb_vs_server_hub": ratio("server", "server-hub"),
        "server_unix_cpu_per_mb_vs_server_unix_hub": ratio("server-unix", "server-unix-hub"),
        "server_vs_server_hub_mb_per_s": ratio("server", "server-hub", "mb_per_s"),
        "server_unix_vs_server_unix_hub_mb_per_s": ratio(
            "server-unix", "server-unix-hub", "mb_per_s"
        ),
        "server_hub_cpu_per_mb_vs_bare_ws": ratio("server-hub", "bare-ws"),
        # the bare layers under the server (benchmarks/floor_forwarder.py): receiving
        # every byte from Valkey too, which bare-ws never does
        "server_cpu_per_mb_vs_floor": ratio("server", "floor"),
        "floor_cpu_per_mb_vs_bare_ws": ratio("floor", "bare-ws"),
        # the floor with the payload moved by splice(2), never entering the process
        "splice_floor_cpu_per_mb_vs_floor": ratio("splice-floor", "floor"),
        "splice_floor_cpu_per_mb_vs_bare_ws": ratio("splice-floor", "bare-ws"),
        **(
            {
                "server_cpu_per_mb_vs_server_base": ratio("server", "server-base"),
                "server_unix_cpu_per_mb_vs_server_unix_base": ratio(
                    "server-unix", "server-unix-base"
                ),
            }
            if BASE_TREE
            else {}
        ),
        "relay_cpu_per_mb_vs_bare_ws": ratio("relay", "bare-ws"),
    }
    return {"entries": entries, "runs": runs, "load_before": load_before,
            "load_after": loadavg(), "rounds": rounds, "summary": summary}  # fmt: skip


def _print_yardsticks(doc: dict[str, Any]) -> None:
    from abrounds import fmt

    s = doc["summary"]
    print(f"1 MB pull, {doc['entries']} entries, {doc['runs']} interleaved rounds; "
          f"load average {doc['load_before']} -> {doc['load_after']}")  # fmt: skip
    print("target       MB/s median (min-max)       gateway CPU ms/MB     client ms/MB   valkey")
    for t in [t for t in s if t != "ratios"]:
        row = s[t]
        print(
            f"{t:12} {fmt(row['mb_per_s'], digits=0):26} "
            f"{fmt(row['gateway_cpu_ms_per_mb'], digits=3):22}"
            f"{fmt(row['client_cpu_ms_per_mb'], digits=3):18}"
            f"{fmt(row['valkey_cpu_ms_per_mb'], digits=3)}"
        )
    for name, val in s["ratios"].items():
        print(f"  {name}: {fmt(val, digits=2)}")


def test_yardsticks() -> None:
    """The yardstick run, short (2 rounds of 200 MB: 50 MB can take 0 ticks of CPU in a
    floor, a division by zero): runs, checks, prints."""
    doc = yardsticks(runs=2, entries=200)
    assert set(doc["summary"]) >= set(YARD_TARGETS)
    _print_yardsticks(doc)


LATENCY_TARGETS = ("server", "bare", "bare-ws", "direct")


def _server_argv(port: int, redis_url: str, base: str | None = None) -> list[str]:
    """`fastredis serve` of this checkout, or of the checkout `base` (an A/B target)."""
    args = ["serve", "--port", str(port), "--redis-url", redis_url, "--maxlen", str(MAXLEN),
            "--log-level", "warning"]  # fmt: skip
    if base is None:
        return ["-m", "fastredis", *args]
    code = (f"import sys; sys.path.insert(0, {base!r}); "
            "from fastredis.cli import main; sys.exit(main())")  # fmt: skip
    return ["-c", code, *args]


def latency_rounds(runs: int = 5, seconds: float = LATENCY_S) -> dict[str, Any]:
    """`runs` interleaved rounds of the latency case (one pusher of 300 KB at 30 fps, one
    puller, receive minus send) against `fastredis serve`, the two bare servers and
    redis-py direct (XADD, XREAD BLOCK), plus `server-base` with
    FASTREDIS_BENCH_BASE_TREE; p50/p99 per round, medians and spreads over rounds."""
    from abrounds import loadavg, spread

    size, fps = LATENCY
    load_before = loadavg()
    targets = (*LATENCY_TARGETS, "server-base") if BASE_TREE else LATENCY_TARGETS
    started: list[subprocess.Popen[bytes]] = []
    rounds: list[dict[str, dict[str, float]]] = []
    with EmbeddedRedis() as valkey:
        try:
            ports = {t: free_port() for t in targets}
            argv = {
                "server": _server_argv(ports["server"], valkey.url),
                "bare": ["benchmarks/bare_ws_server.py", "--port", str(ports["bare"])],
                "bare-ws": ["benchmarks/bare_ws_server.py", "--port", str(ports["bare-ws"]),
                            "--impl", "websockets"],
            }  # fmt: skip
            if BASE_TREE:
                argv["server-base"] = _server_argv(ports["server-base"], valkey.url, BASE_TREE)
            for target in argv:
                started.append(spawn_server(argv[target], ports[target]))
            for r in range(runs + 1):  # the first round warms up
                k = r % len(targets)
                one: dict[str, dict[str, float]] = {}
                for target in targets[k:] + targets[:k]:
                    sid = f"lat:{target}:{r}"
                    if target == "direct":
                        coro = direct_latency(valkey.url, sid, size, fps, seconds)
                    else:
                        url = f"ws://127.0.0.1:{ports[target]}"
                        coro = loadtool.latency(url, sid, size, fps, seconds)
                    res = asyncio.run(coro)
                    if not res.ok or res.lost:
                        raise RuntimeError(f"{target}: {res.text()}")
                    one[target] = dict(res.latency_ms)
                if r:
                    rounds.append(one)
        finally:
            for proc in started:
                stop_server(proc)
    summary = {t: {q: spread([r[t][q] for r in rounds]) for q in ("p50", "p99")} for t in targets}
    bare_p99 = [max(r["bare"]["p99"], r["bare-ws"]["p99"]) for r in rounds]
    summary["server p99 - higher bare p99 (ms)"] = spread(
        [r["server"]["p99"] - b for r, b in zip(rounds, bare_p99, strict=True)]
    )
    return {"size": size, "fps": fps, "seconds": seconds, "runs": runs,
            "load_before": load_before, "load_after": loadavg(), "rounds": rounds,
            "summary": summary}  # fmt: skip


def _print_latency(doc: dict[str, Any]) -> None:
    from abrounds import fmt

    print(f"latency, {doc['runs']} rounds of {doc['seconds']:g} s, "
          f"load {doc['load_before']} -> {doc['load_after']}")  # fmt: skip
    for name, row in doc["summary"].items():
        if "p50" in row:
            p50, p99 = fmt(row["p50"], digits=2), fmt(row["p99"], digits=2)
            print(f"  {name:12s} p50 {p50}  p99 {p99} ms")
        else:
            print(f"  {name}: {fmt(row, digits=2)}")


if __name__ == "__main__" and "--latency" in sys.argv:
    from abrounds import write

    short = "--short" in sys.argv
    result = latency_rounds(runs=2 if short else 5, seconds=2.0 if short else LATENCY_S)
    _print_latency(result)
    print("written to", write("server-latency", result))
    sys.exit(0)


if __name__ == "__main__" and "--yardsticks" in sys.argv:
    from abrounds import write

    short = "--short" in sys.argv
    result = yardsticks(runs=5, entries=100 if short else YARD_ENTRIES)
    _print_yardsticks(result)
    print("written to", write("server-yardsticks", result))
    sys.exit(0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
