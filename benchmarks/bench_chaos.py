"""Chaos: a producer and reconnecting viewers through two `fastredis serve` on one
Valkey (AOF on), while servers are killed, stopped, cut off and Redis is restarted.

    python benchmarks/bench_chaos.py                 # short: 10 faults, < 2 min
    python benchmarks/bench_chaos.py --faults 100    # the long run
    python benchmarks/bench_chaos.py --cluster       # on a 3+3 Redis Cluster
    python benchmarks/bench_chaos.py --kinds kill9   # one kind of fault only

Load: one producer pushing 30 fps of 1 MB frames (stream ``cam``) plus 5,000 msg/s
of 100 B (``tele``: 100 messages of 50 entries a second), both with ``producer=``;
10 viewers pulling ``cam+tele`` from the start with ``reconnect=True``, each given
both servers. Faults, in turn: kill -9 of a server, SIGTERM of a server (each
started again 1 s later), the server's sockets cut (``ss -K``), Valkey restarted
(SIGTERM, so the AOF is complete), both streams trimmed (XTRIM MAXLEN ~ 2000).

Result (benchmarks/results/chaos_<date>.json): entries written twice (by payload
number, over what each viewer saw), entries acked but never seen by a viewer and not
covered by a Gap it was told of, and the stall per fault kind: the longest time a
viewer went without a frame around the fault (its reconnect and resume; p50, p99 over
viewers x faults; 10 ms is the normal spacing of ``tele`` messages), and the
resume: from when what the fault broke is back (the server answers /healthz, Valkey
has loaded its AOF) to the viewer's next frame. Each viewer's reconnects are recorded
(socket opened, failed: server, error, the attempt count and the wait drawn); the
timeline of every stall longer than ``--slow`` seconds is in the results.

``--cluster``: the same load and faults on a real Redis Cluster of 3 primaries with a
replica each (`EmbeddedCluster`, no persistence), but for Valkey restarted: a
**failover** in its place (kill -9 of the primary serving ``cam``, then of the one
serving ``telemetry``, in turn; its replica takes over; the killed node is started
again and rejoins as a replica). The short run has 2. ``tele`` is named ``telemetry``
there, so that the two streams are served by two shards: a viewer's pull reads both.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers: ServeProcess

from support.serve_process import ServeProcess  # noqa: E402

from fastredis.client import AsyncClient, Gap  # noqa: E402
from fastredis.embedded import EmbeddedCluster, EmbeddedRedis  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FAULTS = ["kill9", "sigterm", "cut", "redis", "trim"]
CLUSTER_FAULTS = ["kill9", "sigterm", "cut", "failover", "trim"]
STREAMS = ("cam", "tele")
# on a cluster, in two shards of the three (slots 1835 and 5926): a failover of each
CLUSTER_STREAMS = ("cam", "telemetry")
FAILOVER_S = 60.0  # at most, for a replica to take over (about 3-5 s here)
Valkey = EmbeddedRedis | EmbeddedCluster
# seconds each Valkey restart's SIGTERM took to end it (it saves its RDB too; at 10 s
# EmbeddedRedis.stop kills it instead, and the AOF may miss the last second)
VALKEY_STOPS: list[float] = []


class Viewer:
    """One reconnecting pull of cam+tele, recording what it saw and when."""

    def __init__(self, urls: list[str], sids: tuple[str, str] = STREAMS) -> None:
        self.urls, self.sids = urls, sids
        self.ids: dict[str, list[str]] = {s: [] for s in sids}
        self.numbers: dict[str, list[int]] = {s: [] for s in sids}
        self.gaps: list[Gap] = []
        self.times: list[float] = []
        self.events: list[tuple[float, str, str, str, int, float]] = []
        # an id received twice: (sid, id, time, server, time again, server)
        self.seen_at: dict[tuple[str, str], tuple[float, str]] = {}
        self.doubles: list[tuple[str, str, float, str, float, str]] = []

    async def run(self) -> None:
        async with AsyncClient(self.urls) as c:
            puller = c.pull("+".join(self.sids), last_entry_id="0", count=50, reconnect=True)
            self._record(puller)
            async for batch in puller.batches():
                if isinstance(batch, Gap):
                    self.gaps.append(batch)
                    continue
                now = time.monotonic()
                self.times.append(now)
                for sid, eid, data in batch:
                    self.ids[sid].append(eid)
                    self.numbers[sid].append(int(data[:12]))
                    first = self.seen_at.setdefault((sid, eid), (now, puller.base))
                    if first[0] != now and len(self.doubles) < 100:
                        self.doubles.append((sid, eid, *first, now, puller.base))

    def _record(self, puller: Any) -> None:
        """Log the puller's sockets: (time, "open"/"fail", server, error, attempt, wait)."""
        connect, retry_delay = puller.connect, puller._retry_delay

        async def logged_connect() -> Any:
            if puller._ws is None:
                self.events.append(
                    (time.monotonic(), "open", puller.base, "", puller.backoff.rounds, 0)
                )
            return await connect()

        def logged_retry_delay(exc: Exception) -> float | None:
            base = puller.base
            delay = retry_delay(exc)
            code = getattr(exc, "code", None)
            error = f"{code}: {exc.reason}" if code else f"{type(exc).__name__}: {exc}"
            error = error[:160]
            self.events.append(
                (time.monotonic(), "fail", base, error, puller.backoff.rounds, delay or 0.0)
            )
            return delay

        puller.connect, puller._retry_delay = logged_connect, logged_retry_delay


class Producer:
    def __init__(
        self,
        urls: list[str],
        frame_bytes: int,
        fps: float,
        small_rate: int,
        sids: tuple[str, str] = STREAMS,
    ) -> None:
        self.urls, self.frame_bytes, self.fps, self.small_rate = urls, frame_bytes, fps, small_rate
        self.cam, self.tele = sids
        self.acked: dict[str, list[str]] = {s: [] for s in sids}
        self.running = True
        # the pushers' reconnects: (time, "fail", server, error, rounds, wait)
        self.events: list[tuple[float, str, str, str, int, float]] = []

    def _record(self, client: AsyncClient, sid: str) -> None:
        """Log the producer pusher of `sid`'s failed sockets (as `Viewer._record`)."""
        pusher = client.pusher(sid, producer=sid)
        client._pushers[(sid, False, sid)] = pusher
        failed = pusher._failed

        def logged(exc: BaseException) -> float:
            base, delay = pusher.base, failed(exc)
            self.events.append(
                (
                    time.monotonic(),
                    "fail",
                    base,
                    f"{sid}: {exc}"[:160],
                    pusher.backoff.rounds,
                    delay,
                )
            )
            return delay

        pusher._failed = logged  # type: ignore[method-assign]

    async def frames(self) -> None:
        body = bytes(self.frame_bytes)
        async with AsyncClient(self.urls) as c:
            self._record(c, self.cam)
            k = 0
            while self.running:
                start = time.monotonic()
                ids = await c.push(self.cam, b"%012d" % k + body[12:], producer="cam")
                self.acked[self.cam].extend(ids or [])
                k += 1
                await asyncio.sleep(max(0.0, 1 / self.fps - (time.monotonic() - start)))

    async def small(self) -> None:
        per_message = 50
        pad = b"x" * 88
        async with AsyncClient(self.urls) as c:
            self._record(c, self.tele)
            k = 0
            while self.running:
                start = time.monotonic()
                msg = [b"%012d" % (k + j) + pad for j in range(per_message)]
                ids = await c.push(self.tele, msg, producer="tele")
                self.acked[self.tele].extend(ids or [])
                k += per_message
                wait = per_message / self.small_rate - (time.monotonic() - start)
                await asyncio.sleep(max(0.0, wait))


def _cut(port: int) -> None:
    subprocess.run(["ss", "-K", "sport", "=", f":{port}"], capture_output=True, check=False)


def _failover(cluster: EmbeddedCluster, key: str) -> None:
    """kill -9 the primary serving `key`; when its replica has taken over, start the
    killed node again (it rejoins as a replica, and syncs in the background: a full
    sync of these streams takes longer than the faults are apart)."""
    killed = cluster.kill_primary(key)
    cluster.wait_failover(key, killed, FAILOVER_S)
    killed.start()


def _loaded(valkey: EmbeddedRedis) -> None:
    """Wait until a restarted Valkey has loaded its AOF (it answers PING before)."""
    deadline = time.monotonic() + 300
    with redis.Redis.from_url(valkey.url) as r:
        while r.info("persistence").get("loading") and time.monotonic() < deadline:
            time.sleep(0.05)


def _trim(valkey: Valkey, sids: tuple[str, str]) -> None:
    client: Any
    if isinstance(valkey, EmbeddedCluster):
        client = redis.RedisCluster.from_url(valkey.url)
    else:
        client = redis.Redis.from_url(valkey.url)
    deadline = time.monotonic() + 120
    with client as r:
        for sid in sids:
            while True:
                try:
                    r.xtrim(sid, maxlen=2000, approximate=True)
                    break
                except redis.BusyLoadingError:  # right after a restart: still loading its AOF
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


async def _fault(
    kind: str,
    k: int,
    servers: list[ServeProcess],
    valkey: Valkey,
    sids: tuple[str, str],
    redis_down: float = 0.0,
) -> str:
    """Inflict one fault; return when what it broke is back (a Valkey restarted: once it
    loaded its AOF, after `redis_down` seconds stopped)."""
    server = servers[k % len(servers)]
    if kind in ("kill9", "sigterm"):
        sig = signal.SIGKILL if kind == "kill9" else signal.SIGTERM
        await asyncio.to_thread(server.stop, sig)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(server.start)
    elif kind == "cut":
        await asyncio.to_thread(_cut, server.port)
    elif kind == "redis" and isinstance(valkey, EmbeddedRedis):
        stopping = time.monotonic()
        await asyncio.to_thread(valkey.stop)  # SIGTERM; SIGKILL after 10 s
        VALKEY_STOPS.append(round(time.monotonic() - stopping, 2))
        await asyncio.sleep(redis_down)
        await asyncio.to_thread(valkey.start)
        await asyncio.to_thread(_loaded, valkey)
    elif kind == "failover" and isinstance(valkey, EmbeddedCluster):
        await asyncio.to_thread(_failover, valkey, sids[k % 2])
    elif kind == "trim":
        await asyncio.to_thread(_trim, valkey, sids)
    return kind


def _id_key(eid: str) -> tuple[int, int]:
    ms, seq = eid.split("-")
    return int(ms), int(seq)


def _unreported(v: Viewer, sid: str, acked: list[str]) -> int:
    """Acked entries of `sid` the viewer never saw and no Gap of its covered."""
    seen = set(v.ids[sid])
    gaps = [g for g in v.gaps if g.sid == sid]
    lost = 0
    for eid in acked:
        if eid in seen:
            continue
        key = _id_key(eid)
        covered = any(
            (g.after is None or _id_key(g.after) < key)
            and (g.first is None or key < _id_key(g.first))
            for g in gaps
        )
        lost += not covered
    return lost


def _stall(times: list[float], start: float, end: float) -> float:
    """The longest a viewer went without a frame between `start` and `end` (the fault
    and the time after it): how long its reconnect and resume took."""
    before = [t for t in times if t < start][-1:]
    seen = before + [t for t in times if start <= t <= end]
    if not seen:
        return end - start
    edges = [*seen, end] if seen[0] < start else [start, *seen, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def _resume(times: list[float], back: float, end: float) -> float:
    """From `back` (what the fault broke answers again) to the viewer's next frame."""
    after = [t for t in times if back <= t <= end][:1]
    return (after[0] if after else end) - back


def _timeline(v: Viewer, start: float, end: float) -> list[list[Any]]:
    """The viewer's reconnects around a stall, times relative to the fault's start."""
    before = [t for t in v.times if t < start][-1:]
    since = min([start, *before]) - 1.0
    rows = [[round(e[0] - start, 3), *e[1:]] for e in v.events if since <= e[0] <= end]
    last = [round(t - start, 3) for t in before]
    first = [round(t - start, 3) for t in v.times if start <= t <= end][:1]
    return [["last frame before", *last], *rows, ["first frame after", *first]]


def _doubles(viewers: list[Viewer], starts: list[tuple[float, str]]) -> list[list[Any]]:
    """Ids a viewer received twice: when (seconds after the last fault) and from which
    server, each time."""

    def at(t: float) -> str:
        before = [(t - s, kind) for s, kind in starts if s <= t][-1:]
        return f"{before[0][0]:.3f} s after {before[0][1]}" if before else "before any fault"

    return [
        [i, sid, eid, at(t1), base1, at(t2), base2]
        for i, v in enumerate(viewers)
        for sid, eid, t1, base1, t2, base2 in v.doubles
    ]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _chaos(args: argparse.Namespace, valkey: Valkey) -> dict[str, Any]:
    servers = [ServeProcess(valkey.url, "--maxlen", "0") for _ in range(2)]
    for s in servers:
        await asyncio.to_thread(s.start)
    urls = [s.ws_url for s in servers]
    sids = CLUSTER_STREAMS if args.cluster else STREAMS
    producer = Producer(urls, args.frame_bytes, args.fps, args.small_rate, sids)
    viewers = [Viewer(urls if k % 2 else urls[::-1], sids) for k in range(args.viewers)]
    tasks = [asyncio.ensure_future(t) for t in (producer.frames(), producer.small())]
    tasks += [asyncio.ensure_future(v.run()) for v in viewers]
    stalls: dict[str, list[float]] = {}
    resumes: dict[str, list[float]] = {}
    slow: list[dict[str, Any]] = []
    starts: list[tuple[float, str]] = []
    done: Counter[str] = Counter()
    try:
        await asyncio.sleep(args.settle)
        faults = args.kinds or (CLUSTER_FAULTS if args.cluster else FAULTS)
        for k in range(args.faults):
            kind = faults[k % len(faults)]
            start = time.monotonic()
            await _fault(kind, k // len(faults), servers, valkey, sids, args.redis_down)
            back = time.monotonic()
            done[kind] += 1
            await asyncio.sleep(args.between)
            end = time.monotonic()
            starts.append((start, kind))
            for i, v in enumerate(viewers):
                stall = _stall(v.times, start, end)
                stalls.setdefault(kind, []).append(stall)
                resumes.setdefault(kind, []).append(_resume(v.times, back, end))
                if stall > args.slow:
                    slow.append(
                        {"fault": k, "kind": kind, "viewer": i, "stall_s": round(stall, 3),
                         "back_s": round(back - start, 3),
                         "timeline": _timeline(v, start, end),
                         "producer": [[round(e[0] - start, 3), *e[1:]] for e in producer.events
                                      if start - 1 <= e[0] <= end]}
                    )  # fmt: skip
        producer.running = False
        await asyncio.sleep(1.0)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            if not any(_unreported(v, s, producer.acked[s]) for v in viewers for s in v.ids):
                break
            await asyncio.sleep(0.5)
    finally:
        producer.running = False
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in servers:
            await asyncio.to_thread(s.stop, signal.SIGKILL)
    result = _summary(args, producer, viewers, stalls, done)
    result["resume_s"] = {kind: _quantiles(v) for kind, v in resumes.items()}
    result["slow_stalls"] = slow
    result["doubled_detail"] = _doubles(viewers, starts)
    result["valkey_stop_s"] = list(VALKEY_STOPS)
    return result


def _summary(
    args: argparse.Namespace,
    producer: Producer,
    viewers: list[Viewer],
    stalls: dict[str, list[float]],
    done: Counter[str],
) -> dict[str, Any]:
    doubled = sum(
        sum(c - 1 for c in Counter(v.numbers[s]).values() if c > 1)
        for v in viewers
        for s in v.numbers
    )
    doubled_ids = sum(
        sum(c - 1 for c in Counter(v.ids[s]).values() if c > 1) for v in viewers for s in v.ids
    )
    unreported = sum(_unreported(v, s, producer.acked[s]) for v in viewers for s in producer.acked)
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "redis": "Redis Cluster, 3 primaries + 3 replicas" if args.cluster else "Valkey, AOF",
        "machine": f"{platform.node()} (2 cores shared with other work: noisy)",
        "faults": dict(done),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "argv": sys.argv[1:],
        "viewers": len(viewers),
        "frame_bytes": args.frame_bytes,
        "fps": args.fps,
        "small_msgs_per_s": args.small_rate,
        "acked": {s: len(ids) for s, ids in producer.acked.items()},
        "doubled_payloads_seen": doubled,
        "doubled_ids_seen": doubled_ids,
        "lost_not_reported": unreported,
        "gaps_reported": sum(len(v.gaps) for v in viewers),
        # per fault kind, over viewers x faults: the longest time without a frame
        "stall_s": {kind: _quantiles(v) for kind, v in stalls.items()},
    }


def _quantiles(values: list[float]) -> dict[str, Any]:
    return {"p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99), "n": len(values)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.cluster:
        with EmbeddedCluster() as cluster:
            result = asyncio.run(_chaos(args, cluster))
        return _record(result, "chaos_cluster")
    with (
        tempfile.TemporaryDirectory(prefix="chaos-") as data,
        EmbeddedRedis(
            data_dir=data, extra_args=("--appendonly", "yes", "--appendfsync", "everysec")
        ) as valkey,
    ):
        result = asyncio.run(_chaos(args, valkey))
    return _record(result, "chaos")


def _record(result: dict[str, Any], name: str) -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=10)
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--frame-bytes", type=int, default=1 << 20)
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--small-rate", type=int, default=5000, help="100 B messages per second")
    p.add_argument("--between", type=float, default=4.0, help="seconds between faults")
    p.add_argument("--settle", type=float, default=3.0, help="seconds before the first fault")
    p.add_argument("--drain", type=float, default=30.0, help="most seconds to catch up")
    p.add_argument("--cluster", action="store_true", help="on a 3+3 Redis Cluster")
    p.add_argument(
        "--kinds",
        type=lambda text: text.split(","),
        help="the faults to inflict in turn, comma-separated (default: every kind): "
        f"{', '.join(FAULTS)}; with --cluster {', '.join(CLUSTER_FAULTS)}",
    )
    p.add_argument(
        "--redis-down", type=float, default=0.0, help="seconds Valkey stays stopped when restarted"
    )
    p.add_argument("--slow", type=float, default=2.0, help="record the timeline of longer stalls")
    args = p.parse_args(argv)
    known = CLUSTER_FAULTS if args.cluster else FAULTS
    if args.kinds and not set(args.kinds) <= set(known):
        p.error(f"--kinds: not among {', '.join(known)}: {', '.join(set(args.kinds) - set(known))}")
    return args


def test_chaos_short() -> None:
    result = run(parse_args(["--faults", "5", "--viewers", "3", "--frame-bytes", "65536"]))
    assert result["acked"]["cam"] > 0


if __name__ == "__main__":
    r = run(parse_args())
    print(json.dumps(r, indent=1))
