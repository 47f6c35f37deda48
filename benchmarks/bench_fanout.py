"""Fan-out: N viewers of ONE stream, against the broadcast ceiling and the per-puller design.

    pytest benchmarks/bench_fanout.py -s
    python benchmarks/bench_fanout.py            # the same, through pytest
    benchmarks/baseline.sh                       # once: builds the per-puller target

N = 1, 10, 100, 500 websocket pulls (`/data/{sid}/pull?last_entry_id=$&block=0`: count=1,
a text header then the payload) of one stream, with two pushers:

* 300k@30fps: one pusher of 300 KB frames at 30 fps (no ack);
* 1MB-max: one pusher of 1 MB frames as fast as the server takes them (`?ack=1`,
  at most `IN_FLIGHT` messages unacknowledged). The server acks once Redis holds a
  frame, not once viewers have it: when viewers are slower than the pusher, their
  latency is mostly the backlog.

A pusher closed with 1013 (try again later) connects again and goes on; the table's
notes say how often.

Targets, in the same run, each on its own stream:

* fastredis: `fastredis serve` of this checkout (the shared-read hub) on a private
  Valkey, `--maxlen MAXLEN`;
* bare: benchmarks/bare_broadcast.py, the same Starlette + uvicorn stack without Redis,
  sending the pushed bytes as they came to every viewer (the ceiling);
* per-puller: the server of the commit before the hub (04b4cf9^: one XREAD per pull),
  built by benchmarks/baseline.sh into FASTREDIS_BENCH_BASELINE (default
  .benchmarks/baseline), on the same Valkey. It holds one Redis connection per pull,
  so its redis-py pool gets `max_connections=4096` through the URL (its default, 100,
  refuses the 100th pull). Not built: its rows say so.

The viewers run in one or two processes of their own (benchmarks/fanout_viewers.py).
After every viewer is connected and has had a frame, a window of FASTREDIS_BENCH_FANOUT_S
seconds (5) is measured: frames received in it (total and per viewer), latency (receive
minus the send time stamped in the payload, CLOCK_MONOTONIC of this host), the server
process's CPU (psutil) per viewer, and XREAD calls per frame pushed in the window
(INFO commandstats; Valkey counts a blocked XREAD when it returns). FASTREDIS_BENCH_FANOUT_NS
("1,10,100,500") picks the viewer counts.

Timings are reported, never asserted. Asserted: every viewer got frames, in order and
without duplicates. Frames a viewer never got (a jump in the sequence numbers: the bare
ring, or a stream trimmed at MAXLEN, past a viewer far behind) are counted as skipped.
The table is printed and recorded in benchmarks/results/ (one dated file per run).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadtool
import psutil
import pytest
import redis.asyncio
import websockets
from fanout_viewers import STAMP, Viewers
from procs import _wait_http, spawn_server, stop_server
from record import write_run

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
WINDOW_S = float(os.environ.get("FASTREDIS_BENCH_FANOUT_S", "5"))
NS = [int(n) for n in os.environ.get("FASTREDIS_BENCH_FANOUT_NS", "1,10,100,500").split(",")]
BASELINE = Path(os.environ.get("FASTREDIS_BENCH_BASELINE") or ROOT / ".benchmarks" / "baseline")
BASELINE_REV = "04b4cf9^"
# entries kept per stream: a lagging viewer catches up without loss
MAXLEN = int(os.environ.get("FASTREDIS_BENCH_FANOUT_MAXLEN", "3000"))
IN_FLIGHT = 4
VIEWERS_PER_PROCESS = 250
CONNECTED_TIMEOUT = 60.0
MAX_REFUSALS = 50
TARGETS = ("fastredis", "bare", "per-puller")


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    size: int
    fps: float | None  # None: as fast as acks come back


PROFILES = {
    "300k@30fps": Profile("300k@30fps", "300 KB at 30 fps", 300_000, 30.0),
    "1MB-max": Profile(
        "1MB-max", f"1 MB as fast as it goes (ack, {IN_FLIGHT} in flight)", 1 << 20, None
    ),
}


@dataclass
class Stack:
    redis: EmbeddedRedis
    urls: dict[str, str]  # target -> ws:// base URL
    procs: dict[str, subprocess.Popen[bytes]]
    not_run: dict[str, str]  # target -> why
    results: dict[tuple[str, int, str], dict[str, Any]] = field(default_factory=dict)


def _baseline_python() -> Path | None:
    """The per-puller server's python when benchmarks/baseline.sh has built it."""
    if BASELINE.is_file():
        return BASELINE
    python = BASELINE / "venv" / "bin" / "python"
    return python if (BASELINE / "COMMIT").is_file() and python.exists() else None


def spawn_baseline(python: Path, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    """The baseline's `fastredis serve`: its own venv, nothing of this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cwd = python.parent.parent.parent if python.parent.name == "bin" else python.parent
    proc = subprocess.Popen(
        [str(python), "-m", "fastredis", "serve", "--port", str(port),
         "--redis-url", f"{redis_url}?max_connections=4096", "--maxlen", str(MAXLEN),
         "--log-level", "warning"],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(port, proc, 60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(scope="module")
def stack(bench_server: EmbeddedRedis) -> Iterator[Stack]:
    _raise_fd_limit()  # 500 sockets a side, inherited by the servers and viewers
    ports = {t: free_port() for t in TARGETS}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    not_run: dict[str, str] = {}
    try:
        procs["fastredis"] = spawn_server(
            ["-m", "fastredis", "serve", "--port", str(ports["fastredis"]),
             "--redis-url", bench_server.url, "--maxlen", str(MAXLEN), "--log-level", "warning"],
            ports["fastredis"],
        )  # fmt: skip
        procs["bare"] = spawn_server(
            ["benchmarks/bare_broadcast.py", "--port", str(ports["bare"])], ports["bare"]
        )
        python = _baseline_python()
        if python is None:
            not_run["per-puller"] = (
                f"not built: run benchmarks/baseline.sh (builds {BASELINE_REV} into {BASELINE})"
            )
            print(f"\nbench_fanout: per-puller target {not_run['per-puller']}", flush=True)
        else:
            procs["per-puller"] = spawn_baseline(python, ports["per-puller"], bench_server.url)
        urls = {t: f"ws://127.0.0.1:{ports[t]}" for t in procs}
        yield Stack(bench_server, urls, procs, not_run)
    finally:
        for proc in procs.values():
            stop_server(proc)


# -- the pusher --------------------------------------------------------------------------


@dataclass
class Pushed:
    sent_ns: array = field(default_factory=lambda: array("q"))  # send time of each frame
    acked: int = 0
    refused: int = 0  # closes with 1013 (try again later), each followed by a reconnect
    error: str = ""

    def in_window(self, t0: int, t1: int) -> int:
        return sum(1 for t in self.sent_ns if t0 <= t < t1)


async def _push_on(
    ws: Any, out: Pushed, frame: bytearray, profile: Profile, stop: asyncio.Event, t0: float
) -> None:
    """Send stamped frames on `ws` until `stop`: at `fps` from `t0`, or as acks allow."""
    header = json.dumps([profile.size])
    ack = profile.fps is None
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def read_acks() -> None:
        async for _reply in ws:
            out.acked += 1
            slots.release()

    reader = asyncio.create_task(read_acks()) if ack else None
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            seq = len(out.sent_ns)
            if ack:
                await slots.acquire()
            else:
                delay = t0 + seq / profile.fps - loop.time()  # type: ignore[operator]
                if delay > 0:
                    await asyncio.sleep(delay)
            now = time.monotonic_ns()
            STAMP.pack_into(frame, 0, seq, now)
            await ws.send(header)
            await ws.send(frame)
            out.sent_ns.append(now)
    finally:
        if reader is not None:
            reader.cancel()


async def push_frames(url: str, sid: str, profile: Profile, stop: asyncio.Event) -> Pushed:
    """One pusher until `stop`. A close with 1013 (try again later) is counted and the
    pusher connects again, up to MAX_REFUSALS times; any other failure ends it."""
    out = Pushed()
    frame = bytearray(os.urandom(profile.size))
    uri = f"{url}/data/{sid}/push" + ("?ack=1" if profile.fps is None else "")
    t0 = asyncio.get_running_loop().time()
    while not stop.is_set():
        try:
            async with websockets.connect(
                uri, compression=None, max_size=None, ping_interval=None
            ) as ws:
                await _push_on(ws, out, frame, profile, stop, t0)
            return out
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1013 or out.refused >= MAX_REFUSALS:
                out.error = f"{type(exc).__name__}: {exc}"
                return out
            out.refused += 1
            await asyncio.sleep(0.1)
        except (OSError, websockets.WebSocketException) as exc:
            out.error = f"{type(exc).__name__}: {exc}"
            return out
    return out


# -- one case: one target, one profile, N viewers -----------------------------------------


def _groups(n: int) -> list[int]:
    """Viewers per load process: one process for a few, two (or more) for many."""
    procs = 1 if n < 20 else max(2, -(-n // VIEWERS_PER_PROCESS))
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


async def _each(viewers: list[Viewers], method: str, *args: Any) -> list[Any]:
    """Call `method` on every viewer process at once (each blocks on its pipe)."""
    calls = (asyncio.to_thread(getattr(v, method), *args) for v in viewers)
    return list(await asyncio.gather(*calls))


async def _wait_seen(viewers: list[Viewers], n: int, pusher: asyncio.Task[Pushed]) -> None:
    """Until each of the `n` viewers has had a frame (or failed): a condition, not a sleep."""
    deadline = time.monotonic() + CONNECTED_TIMEOUT
    while sum(await _each(viewers, "seen")) < n:
        if pusher.done():
            raise RuntimeError(f"the pusher stopped: {pusher.result().error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every viewer had a frame within {CONNECTED_TIMEOUT} s")
        await asyncio.sleep(0.02)


async def _sleep_until(t_ns: int) -> None:
    await asyncio.sleep(max(0.0, (t_ns - time.monotonic_ns()) / 1e9))


@dataclass
class Meter:
    """CPU seconds of the server and of Valkey, and Valkey's XREAD count, now."""

    server: psutil.Process
    valkey: psutil.Process
    client: redis.asyncio.Redis

    async def sample(self) -> dict[str, float]:
        stats = await self.client.info("commandstats")
        return {
            "t": time.monotonic(),
            "server": sum(self.server.cpu_times()[:2]),
            "valkey": sum(self.valkey.cpu_times()[:2]),
            "xread": float(stats.get("cmdstat_xread", {}).get("calls", 0)),
        }


async def _measure(
    viewers: list[Viewers], meter: Meter, pusher: asyncio.Task[Pushed]
) -> tuple[int, int, dict[str, float], dict[str, float]]:
    """The window: (t0, t1) handed to the viewers, and the meter read at both ends."""
    t0 = time.monotonic_ns() + 100_000_000
    t1 = t0 + int(WINDOW_S * 1e9)
    await _each(viewers, "window", t0, t1)
    await _sleep_until(t0)
    before = await meter.sample()
    await _sleep_until(t1)
    after = await meter.sample()
    if pusher.done():
        raise RuntimeError(f"the pusher stopped during the window: {pusher.result().error}")
    return t0, t1, before, after


def _summary(
    target: str, n: int, window: tuple[int, int, dict[str, float], dict[str, float]],
    pushed: Pushed, reports: list[dict[str, Any]], checks: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    t0, t1, before, after = window
    wall = after["t"] - before["t"]
    counts = [c for r in reports for c in r["in_window"]]
    samples = array("d")
    for r in reports:
        samples.frombytes(r["samples"])
    lat = sorted(samples)
    frames = pushed.in_window(t0, t1)
    redis_side = target != "bare"
    server_cpu = (after["server"] - before["server"]) / wall
    return {
        "target": target,
        "n": n,
        "seconds": wall,
        "pushed_fps": frames / wall,
        "delivered_fps": sum(counts) / wall,
        "per_viewer_fps": sum(counts) / wall / n,
        "slowest_viewer_fps": min(counts) / wall if counts else 0.0,
        "p50_ms": loadtool.percentile(lat, 50),
        "p99_ms": loadtool.percentile(lat, 99),
        "server_cores": server_cpu,
        "server_ms_per_s_per_viewer": server_cpu * 1e3 / n,
        "valkey_cores": (after["valkey"] - before["valkey"]) / wall if redis_side else None,
        "xread_per_frame": (after["xread"] - before["xread"]) / frames
        if redis_side and frames
        else None,
        "frames_min": min((c["frames"] for c in checks), default=0),
        "duplicates": sum(c["duplicates"] for c in checks),
        "skipped": sum(c["skipped"] for c in checks),
        "errors": sorted({c["error"] for c in checks if c["error"]}),
        "push_refused": pushed.refused,
    }


async def run_case(st: Stack, target: str, profile: Profile, n: int) -> dict[str, Any]:
    """N viewers of a fresh stream of `target`, one pusher, one measured window."""
    url = st.urls[target]
    sid = f"fanout:{profile.name}:{n}:{target}:{uuid.uuid4().hex[:8]}"
    uri = f"{url}/data/{sid}/pull?last_entry_id=%24&block=0"
    viewers = [Viewers(uri, k) for k in _groups(n)]
    client = redis.asyncio.Redis.from_url(st.redis.url)
    meter = Meter(psutil.Process(st.procs[target].pid), psutil.Process(st.redis.pid), client)
    stop = asyncio.Event()
    pusher: asyncio.Task[Pushed] | None = None
    reports: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    try:
        failed = [e for errs in await _each(viewers, "connect") for e in errs]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} viewers did not connect: {failed[0]}")
        pusher = asyncio.create_task(push_frames(url, sid, profile, stop))
        await _wait_seen(viewers, n, pusher)
        window = await _measure(viewers, meter, pusher)
        stop.set()
        pushed = await asyncio.wait_for(pusher, 30)
        reports = await _each(viewers, "report")
    finally:
        stop.set()
        if pusher is not None and not pusher.done():
            pusher.cancel()
        checks = [c for cs in await _each(viewers, "close") for c in cs]
        await client.delete(sid)
        await client.aclose()
    return _summary(target, n, window, pushed, reports, checks)


def _failed(target: str, n: int, exc: BaseException) -> dict[str, Any]:
    return {"target": target, "n": n, "errors": [f"{type(exc).__name__}: {exc}"[:300]]}


# -- the cases ---------------------------------------------------------------------------

CASES = [(p, n) for p in PROFILES for n in NS]


@pytest.mark.parametrize(("profile", "n"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_fanout(benchmark: Any, stack: Stack, profile: str, n: int) -> None:
    """Every target for one (profile, N), the order rotated from case to case so a noisy
    neighbour hurts them alike. pytest-benchmark times the whole case; the numbers that
    count are the window's, in extra_info and the table."""
    benchmark.group = "fanout"
    shift = CASES.index((profile, n)) % len(TARGETS)
    order = [t for t in TARGETS[shift:] + TARGETS[:shift] if t in stack.urls]

    def once() -> None:
        for target in order:
            try:
                res = asyncio.run(run_case(stack, target, PROFILES[profile], n))
            except Exception as exc:  # a target that fails gets its row, with the reason
                res = _failed(target, n, exc)
            stack.results[(profile, n, target)] = res

    benchmark.pedantic(once, rounds=1, iterations=1)
    for target in order:
        res = stack.results[(profile, n, target)]
        benchmark.extra_info[target] = {k: v for k, v in res.items() if k != "errors"}
    for target in order:
        res = stack.results[(profile, n, target)]
        assert not res["errors"], f"{target}: {res['errors']}"
        assert res["frames_min"] > 0, f"{target}: a viewer got no frame"
        assert res["duplicates"] == 0, f"{target}: frames repeated or out of order"


# -- the table ---------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:,.{digits}f}"


def _notes(res: dict[str, Any]) -> list[str]:
    refused = res.get("push_refused")
    return [f"push closed 1013 {refused}x, reconnected"] if refused else []


def _row(profile: Profile, res: dict[str, Any], bare: dict[str, Any] | None) -> str:
    cells = [profile.title, str(res["n"]), res["target"]]
    if res.get("errors") and "delivered_fps" not in res:
        return "| " + " | ".join(cells) + f" | failed: {res['errors'][0]} |" + " |" * 12
    ceiling = bare.get("delivered_fps") if bare else None
    vs_bare = res["delivered_fps"] / ceiling if ceiling else None
    cells += [
        _num(res["pushed_fps"], 1),
        _num(res["delivered_fps"]),
        _num(res["per_viewer_fps"], 1),
        _num(res["slowest_viewer_fps"], 1),
        "-" if vs_bare is None else f"{vs_bare:.0%}",
        _num(res["p50_ms"], 1),
        _num(res["p99_ms"], 1),
        _num(res["server_cores"], 2),
        _num(res["server_ms_per_s_per_viewer"], 2),
        _num(res["valkey_cores"], 2),
        _num(res["xread_per_frame"], 2),
        f"{res['duplicates']} / {res['skipped']}",
        "; ".join(res["errors"] + _notes(res)),
    ]
    return "| " + " | ".join(cells) + " |"


def build_table(st: Stack) -> str:
    lines = [
        f"Fan-out: N viewers of one stream, measured over {WINDOW_S:g} s per case after every "
        "viewer had a frame. Frames/s are frames received in the window (total over viewers, "
        "per viewer, the slowest viewer); vs bare = delivered / the bare broadcast server's "
        "in the same case. Latency: receive minus the send time stamped in the payload. "
        "CPU: cores used by the server process (and per viewer, ms of CPU per second); "
        "XREAD/frame: Valkey's XREAD calls / frames pushed in the window. With the 1 MB "
        "pusher, viewers slower than it see latency that is mostly the backlog.",
        "",
        "| pusher | N | target | pushed fps | delivered frames/s | per viewer | slowest "
        "| vs bare | p50 ms | p99 ms | server cores | server ms/s per viewer | Valkey cores "
        "| XREAD/frame | dups / skipped | errors, notes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for profile in PROFILES.values():
        for n in NS:
            bare = st.results.get((profile.name, n, "bare"))
            for target in TARGETS:
                if target in st.not_run:
                    lines.append(
                        f"| {profile.title} | {n} | {target} | not run: "
                        f"{st.not_run[target]} |" + " |" * 12
                    )
                    continue
                res = st.results.get((profile.name, n, target))
                if res is not None:
                    lines.append(_row(profile, res, bare))
    return "\n".join(lines)


def test_zz_table(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the table of this run and record it in benchmarks/results/."""
    table = build_table(stack)
    rows = [{"profile": p, **res} for (p, _n, _t), res in stack.results.items()]
    write_run("fanout", table, rows)
    with capsys.disabled():
        print("\n\n" + table + "\n")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
