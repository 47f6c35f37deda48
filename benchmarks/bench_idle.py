"""Many idle pull sockets on one `fastredis serve`: memory, Redis connections, and
whether a push and a pull still complete promptly while they are held.

    python benchmarks/bench_idle.py                        # 10,000 sockets, both scenarios
    python benchmarks/bench_idle.py --sockets 1000 --scenario distinct
    pytest benchmarks/bench_idle.py -s                     # the same, through pytest

A private Valkey (EmbeddedRedis) and `fastredis serve` on it (a subprocess,
`--max-sockets` a little above the count). Client processes (multiprocessing, the
`websockets` client, no compression, no keepalive pings) open `--sockets` websockets
`/data/{sid}/pull?block=0` and hold them; nothing is ever pushed to those streams.
Scenarios, each on a fresh server process:

* distinct: every socket pulls its own stream `idle{k}` (the worst case: as many
  streams at the tail as sockets);
* shared: the sockets pull `--shared-streams` streams (10), `idle{k % 10}`.

Reported per scenario: server RSS (psutil) before the sockets, while held and after
they are closed, and bytes per held socket; Redis client connections (`INFO clients`:
connected_clients, blocked_clients, less this benchmark's own); server CPU while the
sockets sit idle; and how long one push (`ack=1`, one 100-byte entry) and one pull (that
entry, from `last_entry_id=0`) take from connect to done, before the sockets and while
they are held (median and max of `--probes`). Goal from issue 7: RSS under about 1 GB
with 10,000 sockets.

Every process raises its RLIMIT_NOFILE soft limit as far as it needs (the server gets
the parent's, which is raised before it starts); the clients are split over processes
so that none needs more descriptors than the hard limit. Timings are reported, never
asserted; the test asserts only that every socket opened and stayed open. The table is
printed and recorded in benchmarks/results/ (one dated file per run).
Environment for pytest: FASTREDIS_IDLE_SOCKETS (10000), FASTREDIS_IDLE_PROCS (auto).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import loadtool
import psutil
import pytest
import redis
import websockets
from procs import FD_SPARE, ClientProcs, next_command, raise_nofile, spawn_server, stop_server
from record import write_run
from websockets.protocol import State

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
SOCKETS = int(os.environ.get("FASTREDIS_IDLE_SOCKETS", "10000"))
PROCS = int(os.environ.get("FASTREDIS_IDLE_PROCS", "0"))  # 0: one per PER_PROC sockets
PER_PROC = 2500  # sockets per client process, by default
SCENARIOS = ("distinct", "shared")
SHARED_STREAMS = 10
CONCURRENCY = 64  # handshakes in flight per client process, by default
SETTLE_S = 2.0
CPU_WINDOW_S = 3.0
QUIET_PCT = 10.0  # % of a core: the server has settled
PROBES = 5
GOAL_RSS = 1e9


# -- the client processes ---------------------------------------------------------------


async def _open_all(uris: list[str], concurrency: int) -> tuple[list[Any], dict[str, Any]]:
    """Open every websocket (`concurrency` handshakes at a time); the open ones and a
    summary (opened, failed, the first errors, seconds)."""
    sem = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(uri: str) -> Any:
        async with sem:
            try:
                return await websockets.connect(
                    uri, compression=None, ping_interval=None, open_timeout=60, max_size=None
                )
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    t0 = time.perf_counter()
    got = await asyncio.gather(*(one(u) for u in uris))
    socks = [ws for ws in got if ws is not None]
    summary = {
        "opened": len(socks),
        "failed": len(errors),
        "errors": errors[:3],
        "seconds": time.perf_counter() - t0,
    }
    return socks, summary


async def _close_all(socks: list[Any]) -> dict[str, Any]:
    """How many were still open (and the close codes of those that were not); then
    close them all."""
    still = sum(1 for ws in socks if ws.state is State.OPEN)
    codes: dict[str, int] = {}
    for ws in socks:
        if ws.state is not State.OPEN:
            key = f"{ws.close_code} {ws.close_reason or ''}".strip()
            codes[key] = codes.get(key, 0) + 1
    await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)
    return {"still_open": still, "closed_by_server": codes}


async def _client_loop(conn: Connection) -> None:
    socks: list[Any] = []
    while True:
        cmd, arg = await next_command(conn)
        if cmd == "open":
            socks, summary = await _open_all(*arg)
            conn.send(summary)
        elif cmd == "release":
            conn.send(await _close_all(socks))
            socks = []
        else:
            return


class Clients(ClientProcs):
    """`n` client processes, each holding up to `per_proc` websockets when told."""

    def __init__(self, n: int, per_proc: int) -> None:
        super().__init__(n, per_proc, _client_loop)

    def open(self, uris: list[str], concurrency: int) -> dict[str, Any]:
        """Open `uris` spread over the processes, `concurrency` handshakes at a time in
        each; wait until all are open (or failed)."""
        n = len(self.conns)
        parts = self.ask("open", [(uris[i::n], concurrency) for i in range(n)])
        return {
            "opened": sum(p["opened"] for p in parts),
            "failed": sum(p["failed"] for p in parts),
            "errors": [e for p in parts for e in p["errors"]][:5],
            "seconds": max(p["seconds"] for p in parts),
        }

    def release(self) -> dict[str, Any]:
        parts = self.ask("release", [None] * len(self.conns))
        codes: dict[str, int] = {}
        for p in parts:
            for k, v in p["closed_by_server"].items():
                codes[k] = codes.get(k, 0) + v
        return {"still_open": sum(p["still_open"] for p in parts), "closed_by_server": codes}


# -- what is measured --------------------------------------------------------------------


def redis_clients(r: redis.Redis) -> dict[str, int]:
    """connected_clients and blocked_clients of INFO, less this benchmark's own."""
    info = r.info("clients")
    return {
        "connected": int(info["connected_clients"]) - 1,
        "blocked": int(info["blocked_clients"]),
    }


async def _probe_once(url: str, sid: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    pushed = await loadtool.push(url, sid, 1, 100, confirm="ack", timeout=60)
    t1 = time.perf_counter()
    pulled = await loadtool.pull(url, sid, 1, 1, size=100, idle_timeout=60)
    t2 = time.perf_counter()
    if not (pushed.ok and pulled.ok and pulled.entries == 1):
        raise RuntimeError(f"probe failed: {pushed.text()} / {pulled.text()}")
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3


def probe(url: str, tag: str, probes: int) -> dict[str, float]:
    """`probes` times: one push (ack=1) of one entry to a new stream, then one pull of
    it from 0; ms from connect to done. Median and max of each."""
    push_ms, pull_ms = [], []
    for i in range(probes):
        a, b = asyncio.run(_probe_once(url, f"probe:{tag}:{i}"))
        push_ms.append(a)
        pull_ms.append(b)
    return {
        "push_ms": statistics.median(push_ms),
        "push_max_ms": max(push_ms),
        "pull_ms": statistics.median(pull_ms),
        "pull_max_ms": max(pull_ms),
    }


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _paths(scenario: str, sockets: int, shared_streams: int) -> list[str]:
    n = sockets if scenario == "distinct" else shared_streams
    return [f"/data/idle{k % n}/pull?block=0" for k in range(sockets)]


def _start_server(redis_url: str, sockets: int) -> tuple[Any, str]:
    port = free_port()
    args = ["-m", "fastredis", "serve", "--port", str(port), "--redis-url", redis_url,
            "--max-sockets", str(sockets + 100), "--log-level", "warning"]  # fmt: skip
    return spawn_server(args, port), f"ws://127.0.0.1:{port}"


def _until_quiet(proc: psutil.Process, limit_s: float = 120.0) -> float | None:
    """Seconds until the server spends under QUIET_PCT of a core over half a second
    (the subscribers have all joined their reads); None if never within `limit_s`."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        cpu0 = _cpu(proc)
        time.sleep(0.5)
        if (_cpu(proc) - cpu0) / 0.5 * 100 < QUIET_PCT:
            return time.monotonic() - start
    return None


def _held(
    out: dict[str, Any], proc: psutil.Process, r: redis.Redis, url: str, tag: str, probes: int
) -> None:
    """What is measured while the sockets are held, into `out`."""
    out["quiet_after_s"] = _until_quiet(proc)
    out["rss_held"] = proc.memory_info().rss
    out["redis_held"] = redis_clients(r)
    cpu0 = _cpu(proc)
    time.sleep(CPU_WINDOW_S)
    out["idle_cpu_pct"] = (_cpu(proc) - cpu0) / CPU_WINDOW_S * 100
    out["probe_held"] = probe(url, f"{tag}:held", probes)
    out["rss_held_max"] = max(out["rss_held"], proc.memory_info().rss)
    out["redis_held_after_probe"] = redis_clients(r)


def run_scenario(
    clients: Clients, embedded: EmbeddedRedis, scenario: str, sockets: int, **opts: Any
) -> dict[str, Any]:
    """One scenario on a fresh server process: everything the table reports."""
    out: dict[str, Any] = {"scenario": scenario, "sockets": sockets, **opts}
    server, url = _start_server(embedded.url, sockets)
    proc = psutil.Process(server.pid)
    try:
        with redis.Redis.from_url(embedded.url) as r:
            r.flushall()
            probe(url, f"{scenario}:warm-up", 1)  # first connections, first XADD
            out["probe_before"] = probe(url, f"{scenario}:before", opts["probes"])
            time.sleep(SETTLE_S)
            out["rss_before"] = proc.memory_info().rss
            out["redis_before"] = redis_clients(r)
            uris = [url + p for p in _paths(scenario, sockets, opts["shared_streams"])]
            out["open"] = clients.open(uris, opts["concurrency"])
            try:
                _held(out, proc, r, url, scenario, opts["probes"])
            finally:
                out["release"] = clients.release()
            time.sleep(SETTLE_S)
            out["rss_after"] = proc.memory_info().rss
            out["redis_after"] = redis_clients(r)
    finally:
        stop_server(server)
    opened = out["open"]["opened"]
    grown = out["rss_held_max"] - out["rss_before"]
    out["bytes_per_socket"] = grown / opened if opened else float("nan")
    return out


# -- the table and the entry points ----------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def _ms(probe: dict[str, float], kind: str) -> str:
    return f"{probe[f'{kind}_ms']:.1f} / {probe[f'{kind}_max_ms']:.1f}"


def _cells(o: dict[str, Any]) -> dict[str, str]:
    """The table's column of one scenario: row label -> cell."""
    opened, rel = o["open"], o["release"]
    rate = opened["opened"] / opened["seconds"] if opened["seconds"] else 0.0
    rc = {k: o[f"redis_{k}"]["connected"] for k in ("before", "held", "after")}
    return {
        "sockets opened / failed": f"{opened['opened']:,} / {opened['failed']}",
        "still open at the end / closed by the server": (
            f"{rel['still_open']:,} / {sum(rel['closed_by_server'].values())}"
        ),
        "time to open them all, s (sockets/s)": f"{opened['seconds']:.1f} ({rate:,.0f})",
        "server RSS MB: before / held / after closing": (
            f"{_mb(o['rss_before'])} / {_mb(o['rss_held_max'])} / {_mb(o['rss_after'])}"
        ),
        "server RSS per held socket, KB": f"{o['bytes_per_socket'] / 1e3:.1f}",
        "goal: RSS held < 1 GB": "met" if o["rss_held_max"] < GOAL_RSS else "MISSED",
        "Redis connections: before / held / after closing": (
            f"{rc['before']} / {rc['held']} / {rc['after']}"
        ),
        "Redis blocked clients while held": f"{o['redis_held']['blocked']}",
        "server busy after the last socket opened, s (until < 10% of a core)": (
            "never" if o["quiet_after_s"] is None else f"{o['quiet_after_s']:.1f}"
        ),
        "server CPU while held idle, % of a core": f"{o['idle_cpu_pct']:.1f}",
        "push ack=1, ms (median / max): no sockets": _ms(o["probe_before"], "push"),
        "push ack=1, ms (median / max): sockets held": _ms(o["probe_held"], "push"),
        "pull of it, ms (median / max): no sockets": _ms(o["probe_before"], "pull"),
        "pull of it, ms (median / max): sockets held": _ms(o["probe_held"], "pull"),
    }


def build_table(results: list[dict[str, Any]]) -> str:
    """Rows: what was measured; one column per scenario."""
    columns = [_cells(o) for o in results]
    names = [f"{o['scenario']} ({o['sockets']:,} sockets)" for o in results]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(results)]
    for label in columns[0] if columns else ():
        lines.append(f"| {label} | " + " | ".join(c[label] for c in columns) + " |")
    lines += [
        "",
        "distinct: every socket pulls its own stream; shared: the sockets pull "
        f"{SHARED_STREAMS} streams. Opened {results[0]['concurrency'] if results else ''} "
        "handshakes at a time per client process. Push and pull times run from connect "
        "to done, one new 100-byte entry each; the push with ack=1, the pull from "
        "last_entry_id=0.",
    ]
    for o in results:
        for reason, n in o["release"]["closed_by_server"].items():
            lines.append(f"* {o['scenario']}: {n} sockets closed by the server: {reason}")
        for err in o["open"]["errors"]:
            lines.append(f"* {o['scenario']}: failed to open: {err}")
    return "\n".join(lines)


def run(
    sockets: int = SOCKETS,
    scenarios: tuple[str, ...] = SCENARIOS,
    procs: int = PROCS,
    shared_streams: int = SHARED_STREAMS,
    probes: int = PROBES,
    concurrency: int = CONCURRENCY,
    embedded: EmbeddedRedis | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Every scenario; the results and the table (also recorded in benchmarks/results/)."""
    procs = procs or max(1, math.ceil(sockets / PER_PROC))
    raise_nofile(sockets + FD_SPARE)  # the server inherits it
    raise_nofile(math.ceil(sockets / procs) + FD_SPARE)  # each client (checked here too)
    clients = Clients(procs, math.ceil(sockets / procs))
    results = []
    try:
        own = embedded is None
        server = EmbeddedRedis() if own else embedded
        try:
            if own:
                server.start()
            for scenario in scenarios:
                results.append(
                    run_scenario(clients, server, scenario, sockets,
                                 probes=probes, shared_streams=shared_streams,
                                 concurrency=concurrency)
                )  # fmt: skip
        finally:
            if own:
                server.stop()
    finally:
        clients.close()
    table = build_table(results)
    write_run("idle", table, results)
    return results, table


@pytest.mark.timeout(1800)
def test_idle_sockets(bench_server: EmbeddedRedis, capsys: Any) -> None:
    """FASTREDIS_IDLE_SOCKETS idle pulls per scenario; asserts only that every one
    opened and stayed open, and that the probes completed."""
    results, table = run(embedded=bench_server)
    with capsys.disabled():
        print("\n\n" + table + "\n")
    for o in results:
        assert o["open"]["opened"] == o["sockets"], o["open"]
        assert o["release"]["still_open"] == o["sockets"], o["release"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sockets", type=int, default=SOCKETS)
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="(both)")
    p.add_argument("--procs", type=int, default=PROCS, help="client processes (auto)")
    p.add_argument("--shared-streams", type=int, default=SHARED_STREAMS)
    p.add_argument("--probes", type=int, default=PROBES)
    p.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="handshakes at a time per process"
    )
    args = p.parse_args(argv)
    results, table = run(
        args.sockets,
        tuple(args.scenario or SCENARIOS),
        args.procs,
        args.shared_streams,
        args.probes,
        args.concurrency,
    )
    print(table)
    ok = all(o["release"]["still_open"] == o["sockets"] for o in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
