"""Reconnect storm: idle viewers that resume (``resume=1``) all reconnect at once after
their server is restarted. How long until every one is resumed, and how many XREADs
Redis served for it next to the distinct cursors the viewers came back with.

    python benchmarks/bench_storm.py                   # short: 1,000 viewers, both cases
    python benchmarks/bench_storm.py --viewers 10000   # the issue's 10,000
    python benchmarks/bench_storm.py --viewers 10000 --case distinct --base ../main --rounds 3

A private Valkey (EmbeddedRedis) and one `fastredis serve` (`ServeProcess`, a fixed port
so that it comes back where it was). Client processes (multiprocessing, as in
benchmarks/bench_idle.py: the `websockets` client, no compression, no pings) open the
viewers: ``/data/{sid}/pull?resume=1&last_entry_id=ID``. Each reads the ``{"resume"}``
frame, then the entries after its cursor up to the stream's last id (that done, it is
*resumed*), and keeps reading (its last id follows what it gets). Cases:

* distinct: every viewer pulls its own stream, at that stream's last id (idle at the
  tail): as many distinct cursors as viewers;
* shared: the viewers pull `--shared-streams` streams (10) of `depth` entries each, viewer
  k at entry (k // streams) % depth of stream k % streams: a few viewers per cursor, most
  behind the tail (they catch up, then sit idle).

Once every viewer is resumed, the server is killed (kill -9: every socket drops at
once) and started again on the same port; Valkey's statistics are reset
(CONFIG RESETSTAT) before it comes back. Then every client process reconnects all its
viewers at once, each from its own last id (``--concurrency`` handshakes in flight per
process, 1,000 by default). Measured from that moment: seconds until each viewer is
resumed (p50, p99, max; goal: all within 15 s), viewers resumed / failed / told
``recovered: false``, and XREAD calls (INFO commandstats, every XREAD the server
made, tail and parking reads included) against the distinct cursors (goal: <= 1 per
cursor), with the server's ``fastredis_stream_reads_total`` beside them, and the CPU
seconds (psutil) the server, the client processes and Valkey spent until all were
resumed. ``--base``: the server of another checkout (say main's) runs each case too,
in the same run, the two alternating over ``--rounds``; a summary gives the medians.
``--bare starlette|websockets`` (either or both): each round, the clients' ceiling
too: the same viewers against benchmarks/bare_ws_server.py, which only answers with
the resume frame.
Results go to benchmarks/results/ (`record.write_run`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import signal
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
import websockets
from procs import FD_SPARE, ClientProcs, next_command, raise_nofile, spawn_server
from record import write_run

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: ServeProcess

from support.serve_process import ServeProcess  # noqa: E402

from fastredis.embedded import EmbeddedRedis, free_port  # noqa: E402
from fastredis.ids import parse_id  # noqa: E402

VIEWERS = 1000
CASES = ("distinct", "shared")
SHARED_STREAMS = 10
PER_SHARED_CURSOR = 10  # viewers per cursor in the shared case (sets the depth)
PER_PROC = 2500
CONCURRENCY = 1000
GOAL_S = 15.0
TIMEOUT_S = 120.0


# -- the client processes ---------------------------------------------------------------


class _Viewer:
    """One resuming pull: its stream, its last id, the id it must reach to be resumed."""

    def __init__(self, base: str, sid: str, last_id: str, target: str) -> None:
        self.base, self.sid, self.last_id, self.target = base, sid, last_id, target
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None

    def uri(self) -> str:
        return f"{self.base}/data/{self.sid}/pull?resume=1&last_entry_id={self.last_id}"

    def _take(self, header: Any) -> None:
        for _sid, eid, _start in header:
            self.last_id = eid

    async def _frame(self) -> Any:
        header = json.loads(await self.ws.recv())
        if isinstance(header, list):
            await self.ws.recv()  # the entries' payloads
            self._take(header)
        return header

    async def resume(self, t0: float) -> dict[str, Any]:
        """Connect, read the resume frame and up to the target; the time it took."""
        self.ws = await websockets.connect(
            self.uri(), compression=None, ping_interval=None, open_timeout=TIMEOUT_S,
            max_size=None,
        )  # fmt: skip
        first = await self._frame()
        if not isinstance(first, dict) or "resume" not in first:
            raise ValueError(f"the first frame is not a resume frame: {first!r}")
        while parse_id(self.last_id) < parse_id(self.target):
            await self._frame()
        self.reader = asyncio.ensure_future(self._follow())
        return {"s": time.perf_counter() - t0, "recovered": first["resume"]["recovered"]}

    async def _follow(self) -> None:
        with contextlib.suppress(websockets.WebSocketException, OSError):
            while True:
                await self._frame()


async def _resume_all(viewers: list[_Viewer], concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    errors: list[str] = []

    async def one(v: _Viewer) -> dict[str, Any] | None:
        async with sem:
            try:
                return await asyncio.wait_for(v.resume(t0), TIMEOUT_S)
            except (OSError, ValueError, websockets.WebSocketException, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    done = [r for r in await asyncio.gather(*(one(v) for v in viewers)) if r is not None]
    return {
        "seconds": [r["s"] for r in done],
        "not_recovered": sum(1 for r in done if not r["recovered"]),
        "failed": len(errors),
        "errors": errors[:3],
    }


async def _wait_dropped(viewers: list[_Viewer]) -> int:
    """Until every viewer's socket is gone (the server was killed); how many were."""
    readers = [v.reader for v in viewers if v.reader is not None]
    await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), TIMEOUT_S)
    for v in viewers:
        with contextlib.suppress(Exception):
            await v.ws.close()
    return len(readers)


CLIENT_GC_YOUNG = 10_000  # as the server's (fastredis.server.run.app.GC_YOUNG)


async def _client_loop(conn: Connection) -> None:
    # A viewer keeps some 100 objects: at Python's default of 700 the collector's full
    # passes over 2,500 of them took much of the client processes' CPU in a storm.
    gc.freeze()
    gc.set_threshold(CLIENT_GC_YOUNG, 10, 10)
    viewers: list[_Viewer] = []
    while True:
        cmd, arg = await next_command(conn)
        if cmd == "resume":
            specs, targets, concurrency = arg
            if specs is not None:
                viewers = [_Viewer(*s) for s in specs]
            for v in viewers:
                v.target = targets.get(v.sid, v.target)
            conn.send(await _resume_all(viewers, concurrency))
        elif cmd == "dropped":
            conn.send(await _wait_dropped(viewers))
        else:
            for v in viewers:
                if v.reader is not None:
                    v.reader.cancel()
            return


class Clients(ClientProcs):
    """Client processes holding the viewers (`per_proc` at most each)."""

    def __init__(self, n: int, per_proc: int) -> None:
        super().__init__(n, per_proc, _client_loop)

    def resume(
        self,
        specs: list[tuple[str, str, str, str]] | None,
        concurrency: int,
        targets: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Every viewer (re)connects and resumes (`specs`: new viewers; None: the same
        ones, from their last ids, `targets`: new last ids of streams). Times are from
        the command, per process."""
        n = len(self.conns)
        args = [(None if specs is None else specs[i::n], targets or {}, concurrency)
                for i in range(n)]  # fmt: skip
        parts = self.ask("resume", args)
        return {
            "seconds": sorted(s for p in parts for s in p["seconds"]),
            "not_recovered": sum(p["not_recovered"] for p in parts),
            "failed": sum(p["failed"] for p in parts),
            "errors": [e for p in parts for e in p["errors"]][:5],
        }

    def dropped(self) -> int:
        return sum(self.ask("dropped", [None] * len(self.conns)))


# -- the streams, the cursors -----------------------------------------------------------


def shared_depth(viewers: int, streams: int) -> int:
    """Entries per shared stream: about PER_SHARED_CURSOR viewers per cursor."""
    return max(1, math.ceil(viewers / streams / PER_SHARED_CURSOR))


def populate(r: redis.Redis, case: str, viewers: int, streams: int) -> list[tuple[str, str, str]]:
    """Write the streams of `case`; per viewer (stream, its cursor, the stream's last id)."""
    r.flushall()
    if case == "distinct":
        pipe = r.pipeline(transaction=False)
        for k in range(viewers):
            pipe.xadd(f"storm{k}", {"v": b"x" * 100})
        ids = [i.decode() for i in pipe.execute()]
        return [(f"storm{k}", ids[k], ids[k]) for k in range(viewers)]
    depth = shared_depth(viewers, streams)
    ids: dict[int, list[str]] = {}
    for j in range(streams):
        pipe = r.pipeline(transaction=False)
        for _ in range(depth):
            pipe.xadd(f"storm{j}", {"v": b"x" * 100})
        ids[j] = [i.decode() for i in pipe.execute()]
    specs = []
    for k in range(viewers):
        j = k % streams
        specs.append((f"storm{j}", ids[j][(k // streams) % depth], ids[j][-1]))
    return specs


def xread_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def stream_reads(http_url: str) -> dict[str, float]:
    """The server's fastredis_stream_reads_total by kind."""
    text = httpx.get(f"{http_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fastredis_stream_reads_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


# -- one case ---------------------------------------------------------------------------


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each group of processes."""
    out = {}
    for name, group in pids.items():
        times = [psutil.Process(pid).cpu_times() for pid in group]
        out[name] = sum(t.user + t.system for t in times)
    return out


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped with a full accept queue (Linux's
    TcpExtListenOverflows, machine-wide; None elsewhere)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return None


def _resume_metered(clients: Clients, pids: dict[str, list[int]], *args: Any) -> dict[str, Any]:
    """`clients.resume(*args)`, with the CPU seconds each group of processes spent
    while it ran (the server, the client processes, Valkey)."""
    before, dropped = _cpu(pids), listen_overflows()
    result = clients.resume(*args)
    after = _cpu(pids)
    result["cpu_s"] = {k: after[k] - before[k] for k in pids}
    if dropped is not None:
        result["listen_overflows"] = (listen_overflows() or 0) - dropped
    return result


def by_cursor(reads: dict[str, float]) -> int:
    """The server's XREADs made for a cursor (catch-up and tail reads; ``shared`` ones
    were taken from another's read, and the parking read is not counted there)."""
    return int(reads.get("catch_up", 0) + reads.get("tail", 0))


def _quiet(r: redis.Redis, settle: float = 1.0, limit: float = 30.0) -> None:
    """Until no XREAD is made for `settle` s but the parked read's own (at most 2)."""
    deadline = time.monotonic() + limit
    last = xread_calls(r)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = xread_calls(r)
        if now - last <= 2:
            return
        last = now


def _written_while_down(r: redis.Redis, sids: set[str], depth: int) -> dict[str, str]:
    """`depth` entries added to each of `sids` (a producer writing to Redis while the
    server is down); each stream's new last id."""
    pipe = r.pipeline(transaction=False)
    for sid in sorted(sids):
        for _ in range(depth):
            pipe.xadd(sid, {"v": b"y" * 100})
    ids = [i.decode() for i in pipe.execute()]
    return {sid: ids[(k + 1) * depth - 1] for k, sid in enumerate(sorted(sids))}


def run_case(
    clients: Clients, valkey: EmbeddedRedis, case: str, viewers: int, **opts: Any
) -> dict[str, Any]:
    """The viewers arrive at once at their cursors (a fresh server), then the server is
    killed and started again, and they all come back at once: both measured."""
    out: dict[str, Any] = {"case": case, "viewers": viewers, **opts}
    with redis.Redis.from_url(valkey.url) as r:
        cursors = populate(r, case, viewers, opts["shared_streams"])
        out["first_cursors"] = len({(s, c) for s, c, _ in cursors})
        server = ServeProcess(valkey.url, "--max-sockets", str(viewers + 100),
                              root=opts.get("server_root", ROOT))  # fmt: skip
        http_url = f"http://127.0.0.1:{server.port}"
        r.config_resetstat()
        server.start()
        try:
            base = server.ws_url
            specs = [(base, s, c, t) for s, c, t in cursors]
            out["first"] = clients.resume(specs, opts["concurrency"])
            _quiet(r)
            out["first_xread_calls"] = xread_calls(r)
            out["first_stream_reads"] = stream_reads(http_url)
            server.stop(signal.SIGKILL)
            out["dropped"] = clients.dropped()
            # idle viewers are at their streams' last ids; in the shared case entries
            # come while the server is down, so each cursor has entries to catch up
            out["distinct_cursors"] = len({(s, t) for s, _c, t in cursors})
            targets: dict[str, str] = {}
            if case == "shared":
                targets = _written_while_down(r, {s for s, _c, _t in cursors}, opts["depth"])
            r.config_resetstat()
            server.start()
            assert server.proc is not None and valkey.pid is not None
            pids = {"server": [server.proc.pid], "clients": [p.pid for p in clients.procs],
                    "valkey": [valkey.pid]}  # fmt: skip
            out["storm"] = _resume_metered(clients, pids, None, opts["concurrency"], targets)
            _quiet(r)
            out["xread_calls"] = xread_calls(r)
            out["stream_reads"] = stream_reads(http_url)
        finally:
            server.stop(signal.SIGKILL)
            with contextlib.suppress(Exception):
                clients.dropped()
    return out


def run_bare(clients: Clients, viewers: int, impl: str, concurrency: int) -> dict[str, Any]:
    """The ceiling of the client processes: the same viewers (each at the end of its own
    stream) against benchmarks/bare_ws_server.py (`impl`), which answers a pull with the
    resume frame and nothing else (no Redis, no checks); it is killed and started again
    on its port, as the server is, and the storm after it measured the same way."""
    port = free_port()
    argv = ["benchmarks/bare_ws_server.py", "--port", str(port), "--impl", impl]
    base = f"ws://127.0.0.1:{port}"
    specs = [(base, f"storm{k}", "1-0", "1-0") for k in range(viewers)]
    out: dict[str, Any] = {"case": "distinct", "viewers": viewers, "tree": f"bare {impl}"}
    proc = spawn_server(argv, port)
    try:
        out["first"] = clients.resume(specs, concurrency)
        proc.kill()
        proc.wait()
        out["dropped"] = clients.dropped()
        proc = spawn_server(argv, port)
        pids = {"server": [proc.pid], "clients": [p.pid for p in clients.procs]}
        out["storm"] = _resume_metered(clients, pids, None, concurrency)
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(Exception):
            clients.dropped()
    return out


# -- the table, the entry points --------------------------------------------------------


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _phase(o: dict[str, Any], phase: str, prefix: str, cursors: str) -> dict[str, str]:
    s = o[phase]
    secs = s["seconds"]
    resumed = len(secs)
    per = o[f"{prefix}xread_calls"] / o[cursors]
    mine = by_cursor(o[f"{prefix}stream_reads"])
    reads = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(o[f"{prefix}stream_reads"].items()))
    within = resumed == o["viewers"] and secs and secs[-1] <= GOAL_S
    name = "after the restart" if phase == "storm" else "arriving at a fresh server"
    return {
        f"{name}: viewers resumed / failed / recovered false": (
            f"{resumed:,} / {s['failed']} / {s['not_recovered']}"
        ),
        f"{name}: seconds to resume, p50 / p99 / max": (
            f"{_q(secs, 0.5):.2f} / {_q(secs, 0.99):.2f} / {secs[-1] if secs else 0:.2f}"
        ),
        f"{name}: all within {GOAL_S:.0f} s": "met" if within else "MISSED",
        f"{name}: distinct cursors": f"{o[cursors]:,}",
        f"{name}: XREADs for cursors (server: catch-up + tail) / per distinct cursor": (
            f"{mine:,} / {mine / o[cursors]:.2f} ({'met' if mine <= o[cursors] else 'MISSED'})"
        ),
        f"{name}: all XREADs (Valkey, the parking read too) / per distinct cursor": (
            f"{o[f'{prefix}xread_calls']:,} / {per:.2f}"
        ),
        f"{name}: server stream reads by kind": reads or "none",
    }


def _cpu_cell(o: dict[str, Any]) -> dict[str, str]:
    cpu, k = o["storm"]["cpu_s"], o["viewers"] / 1000
    return {
        "after the restart: CPU s per 1,000 viewers, server / clients / Valkey": (
            f"{cpu['server'] / k:.2f} / {cpu['clients'] / k:.2f} / {cpu['valkey'] / k:.2f}"
        ),
        "after the restart: accept queue overflows (the machine's, during the storm)": str(
            o["storm"].get("listen_overflows", "-")
        ),
    }


def _cells(o: dict[str, Any]) -> dict[str, str]:
    return {
        **_phase(o, "storm", "", "distinct_cursors"),
        **_cpu_cell(o),
        **_phase(o, "first", "first_", "first_cursors"),
    }


def _name(o: dict[str, Any]) -> str:
    tree = f", {o['tree']} r{o['round']}" if "tree" in o else ""
    return f"{o['case']} ({o['viewers']:,} viewers{tree})"


def build_table(results: list[dict[str, Any]]) -> str:
    columns = [_cells(o) for o in results]
    lines = ["| | " + " | ".join(_name(o) for o in results) + " |",
             "|---|" + "---:|" * len(results)]  # fmt: skip
    for label in columns[0] if columns else ():
        lines.append(f"| {label} | " + " | ".join(c[label] for c in columns) + " |")
    for o in results:
        for err in o["storm"]["errors"]:
            lines.append(f"* {_name(o)}: {err}")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]]) -> str:
    """After the restart, per case and tree: medians over the rounds (and their range)."""
    lines = [
        "| after the restart, median (min-max) over rounds | seconds p50 | p99 | max "
        "| server CPU s / 1,000 | clients CPU s / 1,000 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in dict.fromkeys((o["case"], o["tree"]) for o in results):
        runs = [o for o in results if (o["case"], o["tree"]) == key]
        secs = [o["storm"]["seconds"] for o in runs]
        k = runs[0]["viewers"] / 1000
        cols = [[_q(x, 0.5) for x in secs], [_q(x, 0.99) for x in secs],
                [x[-1] if x else float("nan") for x in secs],
                [o["storm"]["cpu_s"]["server"] / k for o in runs],
                [o["storm"]["cpu_s"]["clients"] / k for o in runs]]  # fmt: skip
        cells = [f"{statistics.median(c):.2f} ({min(c):.2f}-{max(c):.2f})" for c in cols]
        lines.append(f"| {key[0]}, {key[1]} ({len(runs)} rounds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(
    viewers: int = VIEWERS,
    cases: tuple[str, ...] = CASES,
    shared_streams: int = SHARED_STREAMS,
    concurrency: int = CONCURRENCY,
    record: bool = True,
    base: Path | None = None,
    rounds: int = 1,
    bare: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], str]:
    """Each case `rounds` times; with `base`, the server of that checkout too, the two
    alternating (this one first in even rounds, the base first in odd ones); with
    `bare`, the clients' ceiling each round too (`run_bare`)."""
    procs = max(1, math.ceil(viewers / PER_PROC))
    raise_nofile(viewers + FD_SPARE)  # the server inherits it
    clients = Clients(procs, math.ceil(viewers / procs))
    trees = [("this", ROOT)] + ([("base", base)] if base is not None else [])
    results = []
    try:
        with EmbeddedRedis() as valkey:
            for n in range(rounds):
                for case in cases:
                    for tree, root in trees if n % 2 == 0 else trees[::-1]:
                        o = run_case(clients, valkey, case, viewers,
                                     shared_streams=shared_streams, concurrency=concurrency,
                                     depth=shared_depth(viewers, shared_streams),
                                     server_root=root)  # fmt: skip
                        o.update(tree=tree, round=n)
                        results.append(o)
                for impl in bare:
                    results.append(run_bare(clients, viewers, impl, concurrency))
    finally:
        clients.close()
    table = summary(results) + "\n\n" + build_table([o for o in results if "first_cursors" in o])
    if record:
        write_run("storm", table, [compact(o) for o in results])
    return results, table


QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)


def compact(o: Any) -> Any:
    """`o` as recorded: each list of every viewer's seconds becomes its count, quantiles
    and max (10,000 numbers per phase made megabytes per run file)."""
    if isinstance(o, dict):
        out = {k: compact(v) for k, v in o.items()}
        secs = o.get("seconds")
        if isinstance(secs, list) and secs and isinstance(secs[0], float):
            out["seconds"] = {
                "count": len(secs),
                "max": secs[-1],
                **{f"q{q:g}": _q(secs, q) for q in QUANTILES},
            }
        return out
    if isinstance(o, list):
        return [compact(v) for v in o]
    return o


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=VIEWERS)
    p.add_argument("--case", action="append", choices=CASES, help="(both)")
    p.add_argument("--shared-streams", type=int, default=SHARED_STREAMS)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY, help="per client process")
    p.add_argument("--base", type=Path, help="another checkout whose server runs too")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--bare",
        choices=("starlette", "websockets"),
        action="append",
        help="the clients' ceiling too: a bare server of that kind (run_bare; repeatable)",
    )
    args = p.parse_args(argv)
    results, table = run(args.viewers, tuple(args.case or CASES), args.shared_streams,
                         args.concurrency, base=args.base, rounds=args.rounds,
                         bare=tuple(args.bare or ()))  # fmt: skip
    print(table)
    print("median resume s:", [statistics.median(o["storm"]["seconds"] or [0]) for o in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
