"""What `producer=` costs: ack=1 pushes with and without it, in the same run.

    python benchmarks/bench_producer.py [--rounds 5] [--messages 2000] [--size 100]
        [--base /path/to/other/checkout]

One `fastredis serve` (subprocess) on a private Valkey; one websocket client sends a
message and waits for its ack, `--messages` times per round. Rounds alternate plain and
producer sockets so drift on a shared machine hits both. Per round it records messages
a second, the server process's CPU time per message and Valkey's (``INFO cpu``, all
of Valkey's time in the round): the CPU figures hold up on a busy machine where wall
time does not. ``--base``: a second server from another checkout (say the main
branch) on the same Valkey, its rounds interleaved with this one's (rotated order), to
compare two versions in one run. Writes medians, spreads and ratios to
benchmarks/results/producer_<date>.json. The pytest entry runs a short round.

``--callgrind``: instead, the instructions per message of the server process and of
Valkey, both run under valgrind's callgrind (counts a busy machine does not move):
per tree, a plain and a producer socket, each counted over `--messages` messages after
50 unmeasured ones (its opening and hello not counted), twice. To
benchmarks/results/producer_ir-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import websockets
from abrounds import write
from procs import (
    ROOT,
    callgrind_count,
    callgrind_prefix,
    callgrind_valkey,
    spawn_server,
    stop_server,
)

from fastredis.embedded import EmbeddedRedis, free_port

RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("plain", "producer")


async def _round(url: str, messages: int, size: int) -> float:
    """Messages per second of one socket, each waiting for its ack."""
    payload = b"x" * size
    header = f"[{size}]"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        if "producer=" in url:
            await ws.recv()  # the hello
        start = time.perf_counter()
        for _ in range(messages):
            await ws.send(header)
            await ws.send(payload)
            await ws.recv()
        return messages / (time.perf_counter() - start)


def _valkey_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _proc_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


async def _measured(
    url: str, messages: int, size: int, server: psutil.Process, r: redis.Redis
) -> dict[str, float]:
    """One round of one kind: rate, and server / Valkey CPU microseconds per message."""
    s0, v0 = _proc_cpu(server), _valkey_cpu(r)
    rate = await _round(url, messages, size)
    s1, v1 = _proc_cpu(server), _valkey_cpu(r)
    return {
        "rate": rate,
        "server_us": 1e6 * (s1 - s0) / messages,
        "valkey_us": 1e6 * (v1 - v0) / messages,
    }


async def _measure(
    ports: dict[str, int], pids: dict[str, int], r: redis.Redis, rounds: int, messages: int,
    size: int,
) -> dict[str, dict[str, dict[str, list[float]]]]:  # fmt: skip
    """{tree: {kind: {rate|server_us|valkey_us: per round}}}."""
    procs = {tree: psutil.Process(pid) for tree, pid in pids.items()}
    out: dict[str, dict[str, dict[str, list[float]]]] = {
        t: {k: {"rate": [], "server_us": [], "valkey_us": []} for k in KINDS} for t in ports
    }
    trees = list(ports)
    for tree, port in ports.items():  # warm up
        await _round(f"ws://127.0.0.1:{port}/data/{tree}/push?ack=1", 200, size)
    for k in range(rounds):
        for tree in trees[k % len(trees) :] + trees[: k % len(trees)]:
            base = f"ws://127.0.0.1:{ports[tree]}/data/bench-{tree}/push"
            urls = {"plain": f"{base}?ack=1", "producer": f"{base}?producer=bench{k}"}
            for kind in KINDS:
                got = await _measured(urls[kind], messages, size, procs[tree], r)
                for name, value in got.items():
                    out[tree][kind][name].append(value)
    return out


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def _summary(runs: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Medians and spreads of one tree, and the producer's cost per round (ratios of
    rounds run moments apart)."""
    plain, prod = runs["plain"], runs["producer"]
    out: dict[str, Any] = {kind: {m: _spread(v) for m, v in runs[kind].items()} for kind in KINDS}
    out["runs"] = runs
    out["cost_pct_wall"] = _spread(
        [100 * (a / b - 1) for a, b in zip(plain["rate"], prod["rate"], strict=True)]
    )
    for cpu in ("server_us", "valkey_us"):
        out[f"cost_pct_{cpu}"] = _spread(
            [100 * (b / a - 1) for a, b in zip(plain[cpu], prod[cpu], strict=True)]
        )
    return out


def run(
    rounds: int = 5, messages: int = 2000, size: int = 100, base: Path | None = None
) -> dict[str, Any]:
    """Start the server(s), measure both kinds, write and return the result."""
    roots = {"new": ROOT, **({"base": base} if base is not None else {})}
    with EmbeddedRedis() as redis_server, redis.Redis.from_url(redis_server.url) as r:
        ports = {tree: free_port() for tree in roots}
        procs = {}
        try:
            for tree, root in roots.items():
                args = ["-m", "fastredis", "serve", "--port", str(ports[tree])]
                args += ["--maxlen", "100000", "--redis-url", redis_server.url]
                procs[tree] = spawn_server(args, ports[tree], root=root)
            pids = {tree: p.pid for tree, p in procs.items()}
            measured = asyncio.run(_measure(ports, pids, r, rounds, messages, size))
        finally:
            for p in procs.values():
                stop_server(p)
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": f"{platform.node()} (2 cores shared with other work: noisy)",
        "load_average": list(psutil.getloadavg()),
        "messages_per_round": messages,
        "payload_bytes": size,
        "rounds": rounds,
        "trees": {tree: str(root) for tree, root in roots.items()},
        **{tree: _summary(m) for tree, m in measured.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"producer_{time.strftime('%Y%m%d_%H%M%S')}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    return result


async def _counted(
    url: str, messages: int, size: int, pids: dict[str, int], outs: dict[str, str]
) -> dict[str, float]:
    """Instructions per message of each process in `pids` (under callgrind, dumping to
    `outs`), over `messages` messages of one socket after 50 that are not counted."""
    payload, header = b"x" * size, f"[{size}]"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        if "producer=" in url:
            await ws.recv()  # the hello
        for k in range(50 + messages):
            if k == 50:
                for who, pid in pids.items():
                    callgrind_count(pid, outs[who])  # from zero
            await ws.send(header)
            await ws.send(payload)
            await ws.recv()
    return {who: callgrind_count(pid, outs[who]) / messages for who, pid in pids.items()}


def run_callgrind(messages: int = 500, size: int = 100, base: Path | None = None) -> dict[str, Any]:
    """Server and Valkey instructions per message, plain and producer, per tree."""
    roots = {"new": ROOT, **({"base": base} if base is not None else {})}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {"valkey": os.path.join(tmp, "valkey.cg"), "server": os.path.join(tmp, "server.cg")}
        with EmbeddedRedis(callgrind_valkey(tmp, outs["valkey"]), startup_timeout=120) as valkey:
            assert valkey.pid is not None
            for tree, root in roots.items():
                port = free_port()
                args = ["-m", "fastredis", "serve", "--port", str(port), "--maxlen", "100000",
                        "--redis-url", valkey.url, "--log-level", "warning"]  # fmt: skip
                proc = spawn_server(args, port, 300, root, callgrind_prefix(outs["server"]))
                try:
                    pids = {"server": proc.pid, "valkey": valkey.pid}
                    base_url = f"ws://127.0.0.1:{port}/data/ir-{tree}/push"
                    runs: dict[str, dict[str, list[float]]] = {}
                    for k in range(2):
                        for kind, query in (("plain", "ack=1"), ("producer", f"producer=ir{k}")):
                            got = asyncio.run(
                                _counted(f"{base_url}?{query}", messages, size, pids, outs)
                            )
                            for who, ir in got.items():
                                runs.setdefault(kind, {}).setdefault(who, []).append(ir)
                finally:
                    stop_server(proc)
                out[tree] = {
                    kind: {who: statistics.median(v) for who, v in whos.items()}
                    for kind, whos in runs.items()
                }
                out[tree]["runs"] = runs
    result = {"messages": messages, "payload_bytes": size,
              "trees": {tree: str(root) for tree, root in roots.items()}, **out}  # fmt: skip
    write("producer_ir", result)
    return result


def test_producer_push_cost() -> None:
    result = run(rounds=2, messages=300)
    assert result["new"]["plain"]["rate"]["median"] > 0
    assert result["new"]["producer"]["server_us"]["median"] > 0


def _line(tree: str, s: dict[str, Any]) -> str:
    def m(kind: str, metric: str) -> float:
        return float(s[kind][metric]["median"])

    def c(name: str) -> str:
        x = s[name]
        return f"{x['median']:+.1f}% ({x['min']:+.1f}..{x['max']:+.1f})"

    return (
        f"{tree}: msg/s plain {m('plain', 'rate'):.0f} / producer {m('producer', 'rate'):.0f}"
        f", cost {c('cost_pct_wall')}; server CPU us/msg {m('plain', 'server_us'):.0f} / "
        f"{m('producer', 'server_us'):.0f}, cost {c('cost_pct_server_us')}; Valkey CPU "
        f"us/msg {m('plain', 'valkey_us'):.1f} / {m('producer', 'valkey_us'):.1f}, cost "
        f"{c('cost_pct_valkey_us')}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--base", type=Path, help="another checkout, measured alongside")
    parser.add_argument("--callgrind", action="store_true", help="instructions per message")
    a = parser.parse_args()
    if a.callgrind:
        ir = run_callgrind(a.messages, a.size, a.base)
        for tree in ir["trees"]:
            p, q = ir[tree]["plain"], ir[tree]["producer"]
            print(
                f"{tree}: instructions per message, plain / producer: server "
                f"{p['server']:,.0f} / {q['server']:,.0f}, Valkey {p['valkey']:,.0f} / "
                f"{q['valkey']:,.0f}; producer's extra {q['server'] - p['server']:+,.0f} + "
                f"{q['valkey'] - p['valkey']:+,.0f} = "
                f"{100 * (q['server'] + q['valkey']) / (p['server'] + p['valkey']) - 100:+.1f}%"
            )
        raise SystemExit(0)
    res = run(a.rounds, a.messages, a.size, a.base)
    for tree in res["trees"]:
        print(_line(tree, res[tree]))
