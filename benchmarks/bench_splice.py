"""Zero-copy relay by splice(2): does it lower the floor's CPU per MB? (issue #21)

    python benchmarks/bench_splice.py [--pause-us 0 300] [--runs 9] [--entries 400]

Interleaved rounds of the 1 MB pull (loadtool.raw_pull, `count` 1) against the floor
(benchmarks/floor_forwarder.py: raw XREAD, one sendmsg per entry), the same floor with
`--splice` (the payload moved Valkey socket -> pipe -> client socket in the kernel,
never entering the process) and the bare `websockets` server, for each `--pause-us`:
both floors sleep that long before each entry, a stand-in for the server's per-entry
work (the reader then waits for every entry, as it does with `fastredis serve`).
Gateway CPU per MB as in bench_server.py --yardsticks; per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import loadtool
import psutil
from abrounds import loadavg, spread, write
from bench_server import MB, _fill_mb, _pull_round
from procs import spawn_server, stop_server

from fastredis.embedded import EmbeddedRedis, free_port

TARGETS = ("floor", "splice-floor", "bare-ws")
FLOOR = "benchmarks/floor_forwarder.py"


def _argv(target: str, port: int, url: str, pause_us: int) -> list[str]:
    if target == "bare-ws":
        return ["benchmarks/bare_ws_server.py", "--port", str(port), "--impl", "websockets"]
    splice = ["--splice"] if target == "splice-floor" else []
    return [FLOOR, *splice, "--pause-us", str(pause_us), "--port", str(port), "--redis-url", url]


def _study(url: str, pid: int | None, pause_us: int, runs: int, n: int) -> dict[str, Any]:
    """`runs` interleaved rounds with both floors pausing `pause_us` per entry."""
    ports = {t: free_port() for t in TARGETS}
    started = []
    try:
        procs = {"valkey": psutil.Process(pid)}
        for t in TARGETS:
            started.append(spawn_server(_argv(t, ports[t], url, pause_us), ports[t]))
            procs[t] = psutil.Process(started[-1].pid)
        urls = {t: f"ws://127.0.0.1:{ports[t]}" for t in TARGETS}
        pushed = asyncio.run(loadtool.push(urls["bare-ws"], "yard", n, MB, confirm="ack"))
        if not pushed.ok:
            raise RuntimeError(f"push to the bare server: {pushed.text()}")
        _pull_round(urls, procs, "yard", min(n, 50), list(TARGETS))  # warm-up
        rounds = []
        for r in range(runs):
            order = list(TARGETS[r % 3 :] + TARGETS[: r % 3])
            rounds.append(_pull_round(urls, procs, "yard", n, order))
    finally:
        for proc in started:
            stop_server(proc)

    def cpu(t: str) -> list[float]:
        return [r[t]["gateway_cpu_ms_per_mb"] for r in rounds]

    def ratio(a: str, b: str) -> dict[str, float]:
        return spread([x / y for x, y in zip(cpu(a), cpu(b), strict=True)])

    return {
        "pause_us": pause_us,
        "gateway_cpu_ms_per_mb": {t: spread(cpu(t)) for t in TARGETS},
        "mb_per_s": {t: spread([r[t]["mb_per_s"] for r in rounds]) for t in TARGETS},
        "splice_floor_vs_floor": ratio("splice-floor", "floor"),
        "splice_floor_vs_bare_ws": ratio("splice-floor", "bare-ws"),
        "floor_vs_bare_ws": ratio("floor", "bare-ws"),
        "rounds": rounds,
    }


def main() -> None:
    from abrounds import fmt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pause-us", type=int, nargs="+", default=[0, 300])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--entries", type=int, default=400)
    args = parser.parse_args()
    load_before = loadavg()
    with EmbeddedRedis() as valkey:
        _fill_mb(valkey.url, "yard", args.entries)
        studies = [_study(valkey.url, valkey.pid, p, args.runs, args.entries)
                   for p in args.pause_us]  # fmt: skip
    doc = {"entries": args.entries, "runs": args.runs, "load_before": load_before,
           "load_after": loadavg(), "studies": studies}  # fmt: skip
    print(f"1 MB pull, {args.entries} entries, {args.runs} interleaved rounds; "
          f"load {load_before} -> {doc['load_after']}")  # fmt: skip
    for s in studies:
        cells = "  ".join(f"{t} {fmt(s['gateway_cpu_ms_per_mb'][t], digits=3)}" for t in TARGETS)
        print(f"pause {s['pause_us']} µs: CPU ms/MB {cells}")
        for key in ("splice_floor_vs_floor", "splice_floor_vs_bare_ws", "floor_vs_bare_ws"):
            print(f"  {key}: {fmt(s[key], digits=2)}")
    print("written to", write("splice-floor", doc))


if __name__ == "__main__":
    main()
