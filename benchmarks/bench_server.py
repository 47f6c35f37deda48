"""The websocket server next to its two limits, in one run.

    pytest benchmarks/bench_server.py -s --benchmark-json=server.json
    python benchmarks/bench_server.py            # the same, through pytest

Starts a private Valkey (the `bench_server` fixture), `fastredis serve` on it (a
subprocess, `--maxlen 1000000` so nothing pulled is trimmed) and the bare websocket
server of benchmarks/bare_ws_server.py (the same Starlette + uvicorn stack, no Redis).
Every case runs against three targets:

* server: benchmarks/loadtool.py against `fastredis serve`;
* direct: redis-py (+hiredis) talking to the same Valkey: pipelined XADD of the same
  messages; XREAD of the same entries with the same count;
* bare: the same load tool against the bare websocket server.

A gateway's limit is the lower of the two limits; the table gives the server's rate,
both limits and server / limit. A push counts as done when Redis holds every entry
(entries-added of XINFO STREAM; the bare server: when its close handshake is done);
a pull when the last entry arrived, checked for duplicates, losses, order and size.
Latency: one pusher of 300 KB frames at 30 fps, one puller, receive minus send.
Memory: the server's RSS while 200 x 1 MB frames are pushed and a slow puller reads
with latest=1.

Timings are reported, never asserted; only correctness (counts) is. The table is
printed at the end and written to .benchmarks/bench_server.md (JSON next to it).
Environment: FASTREDIS_BENCH_ROUNDS (3), FASTREDIS_BENCH_LATENCY_S (5).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
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

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("FASTREDIS_BENCH_ROUNDS", "3"))
LATENCY_S = float(os.environ.get("FASTREDIS_BENCH_LATENCY_S", "5"))
MAXLEN = 1_000_000
MB = 1 << 20
SMALL = (20_000, 100)  # messages, bytes
LARGE = (100, MB)
LATENCY = (300_000, 30.0)  # bytes, fps
MEMORY_FRAMES = 200
TARGETS = ("server", "direct", "bare")


@dataclass
class Stack:
    redis: EmbeddedRedis
    server: subprocess.Popen[bytes]
    server_url: str
    bare: subprocess.Popen[bytes]
    bare_url: str
    results: dict[tuple[str, str], list[loadtool.Result]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    sids: dict[tuple[str, str], str] = field(default_factory=dict)  # last pushed stream

    def url(self, target: str) -> str:
        return self.server_url if target == "server" else self.bare_url

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each process of the run."""
        procs = {
            "client": psutil.Process(),
            "server": psutil.Process(self.server.pid),
            "bare": psutil.Process(self.bare.pid),
            "valkey": psutil.Process(self.redis.pid),
        }
        return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}


@pytest.fixture(scope="module")
def stack(bench_server: EmbeddedRedis) -> Iterator[Stack]:
    sport, bport = free_port(), free_port()
    server = spawn_server(
        ["-m", "fastredis", "serve", "--port", str(sport), "--redis-url", bench_server.url,
         "--maxlen", str(MAXLEN), "--log-level", "warning"],
        sport,
    )  # fmt: skip
    try:
        bare = spawn_server(["benchmarks/bare_ws_server.py", "--port", str(bport)], bport)
    except BaseException:
        stop_server(server)
        raise
    st = Stack(bench_server, server, f"ws://127.0.0.1:{sport}", bare, f"ws://127.0.0.1:{bport}")
    try:
        yield st
    finally:
        stop_server(server)
        stop_server(bare)


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
    note: str = ""


CASES = {
    "push-100B": Case("push-100B", "push 20,000 x 100 B (header + data each)", "entries/s", 0.6),
    "pull-100B-c1": Case("pull-100B-c1", "pull 20,000 x 100 B, count=1", "entries/s"),
    "pull-100B-c100": Case("pull-100B-c100", "pull 20,000 x 100 B, count=100", "entries/s"),
    "push-1MB": Case("push-1MB", "push 100 x 1 MB", "MB/s", 0.8),
    "pull-1MB": Case("pull-1MB", "pull 100 x 1 MB, count=1", "MB/s", 0.8),
}


def _payloads(size: int) -> tuple[list[str], list[bytes]]:
    messages = SMALL[0] if size == SMALL[1] else LARGE[0]
    return loadtool.make_payloads(messages, size)


_PAYLOADS: dict[int, tuple[list[str], list[bytes]]] = {}


def payloads(size: int) -> tuple[list[str], list[bytes]]:
    if size not in _PAYLOADS:
        _PAYLOADS[size] = _payloads(size)
    return _PAYLOADS[size]


def run_push(st: Stack, target: str, size: int, rnd: int) -> loadtool.Result:
    headers, datas = payloads(size)
    sid = f"bench:push:{size}:{target}:{rnd}"
    if target == "direct":
        res = direct_push(st.redis.url, sid, datas, size)
    else:
        confirm = "redis" if target == "server" else "close"
        res = asyncio.run(
            loadtool.push(
                st.url(target),
                sid,
                len(datas),
                size,
                confirm=confirm,
                redis_url=st.redis.url,
                payloads=(headers, datas),
            )
        )
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
    "pull-100B-c1": lambda st, t, _r: run_pull(st, t, SMALL[1], 1),
    "pull-100B-c100": lambda st, t, _r: run_pull(st, t, SMALL[1], 100),
    "push-1MB": lambda st, t, r: run_push(st, t, LARGE[1], r),
    "pull-1MB": lambda st, t, _r: run_pull(st, t, LARGE[1], 1),
}


def _median(results: list[loadtool.Result]) -> loadtool.Result:
    return sorted(results, key=lambda r: r.seconds)[len(results) // 2]


@pytest.mark.parametrize("case", list(CASES))
def test_throughput(benchmark: Any, stack: Stack, case: str) -> None:
    """One case, all targets, rounds interleaved (round r starts with target r mod 3) so
    a noisy neighbour hurts every target alike. pytest-benchmark times whole rounds;
    the numbers that count are the load tool's own, in extra_info and the table."""
    benchmark.group = "server"
    results: dict[str, list[loadtool.Result]] = {t: [] for t in TARGETS}
    rounds = iter(range(ROUNDS))

    def one_round() -> None:
        r = next(rounds)
        for target in TARGETS[r % 3 :] + TARGETS[: r % 3]:
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
    expected = len(payloads(SMALL[1] if "100B" in case else LARGE[1])[1])
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


def build_table(st: Stack) -> tuple[str, list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    lines = [
        f"Median of {ROUNDS} rounds; limit = the lower of redis-py direct and the bare "
        "websocket server; ratio = server / limit.",
        "",
        "| case | unit | fastredis server | redis-py direct | bare websocket | limit "
        "| ratio | goal | dups / lost |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, case in CASES.items():
        got = {t: st.results.get((name, t)) for t in TARGETS}
        if not all(got.values()):
            continue
        mids = {t: _median(rs) for t, rs in got.items() if rs}
        rates = {t: _rate(r, case.unit) for t, r in mids.items()}
        limit = min(rates["direct"], rates["bare"])
        ratio = rates["server"] / limit if limit else float("nan")
        server_runs = got["server"] or []
        dups = sum(r.duplicates + r.out_of_order for r in server_runs)
        lost = sum(r.lost for r in server_runs)
        goal = (
            ""
            if case.goal is None
            else f">= {case.goal:.0%}: " + ("met" if ratio >= case.goal else "MISSED")
        )
        lines.append(
            f"| {case.title} | {case.unit} | {_fmt(rates['server'], case.unit)} "
            f"| {_fmt(rates['direct'], case.unit)} | {_fmt(rates['bare'], case.unit)} "
            f"| {_fmt(limit, case.unit)} | {ratio:.0%} | {goal} | {dups} / {lost} |"
        )
        rows.append({"case": name, "unit": case.unit, **rates, "limit": limit, "ratio": ratio})
    lat = {t: st.results.get(("latency", t)) for t in TARGETS}
    if all(lat.values()):
        size, fps = LATENCY
        for q in ("p50", "p99"):
            vals = {t: rs[0].latency_ms.get(q, float("nan")) for t, rs in lat.items() if rs}
            limit = max(vals["direct"], vals["bare"])
            goal = ""
            if q == "p99":
                goal = "<= 3 ms: " + ("met" if vals["server"] <= 3.0 else "MISSED")
            server_res = lat["server"][0]  # type: ignore[index]
            lines.append(
                f"| latency {size // 1000} KB at {fps:.0f} fps, {q} | ms "
                f"| {vals['server']:.2f} | {vals['direct']:.2f} | {vals['bare']:.2f} "
                f"| {limit:.2f} | {limit / vals['server']:.0%} | {goal} "
                f"| {server_res.duplicates + server_res.out_of_order} / {server_res.lost} |"
            )
            rows.append({"case": f"latency-{q}", "unit": "ms", **vals, "limit": limit})
    mem = st.extra.get("memory")
    if mem:
        growth = mem["rss_peak_mb"] - mem["rss_before_mb"]
        flat = growth < 0.1 * mem["frames"] * MB / 1e6
        late = mem["last_frame_after_s"]
        late_text = "never" if late is None else f"{late:.2f} s after the push"
        lines.append(
            f"| server RSS, {mem['frames']} x 1 MB pushed in {mem['push_s']:.2f} s, slow "
            f"puller latest=1 ({mem['frames_pulled']} frames pulled, the last {late_text}) | MB "
            f"| {mem['rss_before_mb']:.0f} -> peak {mem['rss_peak_mb']:.0f} -> "
            f"{mem['rss_after_mb']:.0f} | | | | | flat (growth < 10% of data pushed): "
            f"{'met' if flat else 'MISSED'} (+{growth:.0f} MB) | |"
        )
        rows.append({"case": "memory", **mem})
    lines += [
        "",
        "Latency: limit = the higher of the two limits' latencies; ratio = limit / server.",
    ]
    cpu_lines = _cpu_table(st)
    if cpu_lines:
        lines += ["", *cpu_lines]
    return "\n".join(lines), rows


def _cpu_table(st: Stack) -> list[str]:
    """CPU ms each process used in the median run of every case and target: unlike
    wall time, hardly moved by other load on the machine."""
    lines = [
        "CPU time of the median run, ms (user + system): load client / gateway process "
        "/ Valkey; wall ms for comparison.",
        "",
        "| case | server: client / server / valkey (wall) | direct: client / valkey (wall) "
        "| bare: client / bare (wall) |",
        "|---|---|---|---|",
    ]
    for name, case in CASES.items():
        got = {t: st.results.get((name, t)) for t in TARGETS}
        if not all(got.values()):
            continue
        cells = []
        for target, procs in (
            ("server", ("client", "server", "valkey")),
            ("direct", ("client", "valkey")),
            ("bare", ("client", "bare")),
        ):
            mid = _median(got[target])  # type: ignore[arg-type]
            cpu = mid.params.get("cpu_ms", {})
            used = " / ".join(str(cpu.get(p, "?")) for p in procs)
            cells.append(f"{used} ({mid.seconds * 1e3:.0f})")
        lines.append(f"| {case.title} | " + " | ".join(cells) + " |")
    return lines


def test_zz_table(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the table of this run and write it to .benchmarks/bench_server.md."""
    table, rows = build_table(stack)
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    (out / "bench_server.md").write_text(table + "\n")
    (out / "bench_server.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    with capsys.disabled():
        print("\n\n" + table + "\n")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
