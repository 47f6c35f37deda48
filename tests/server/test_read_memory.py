"""Reads bounded in bytes (issue 17.5), against a real `fastredis serve` whose memory is
watched from outside: greedy REST GETs and pulls that never read make the server hold a
bounded amount, and pulls that differ only in ``count`` share one tail read."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator

import psutil
import pytest
import redis
import websockets
from support.serve_process import Serve, started

MIB = 1 << 20
DEADLINE = 60.0


class PeakRss:
    """The most resident memory process `pid` had, sampled every 5 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


@pytest.fixture
def server(redis_url: str) -> Iterator[Serve]:
    for s in started(REDIS_URL=redis_url):
        s.wait_ready()
        yield s


def xreads(r: redis.Redis) -> int:
    return int(r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def fill(r: redis.Redis, sid: str, size: int, n: int) -> list[bytes]:
    ids = []
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(sid, {"d": i.to_bytes(4, "big") * (size // 4)}, maxlen=None)
        if len(pipe) == 1000:
            ids += pipe.execute()
    return ids + pipe.execute()


def raw_get(port: int, target: str) -> tuple[dict[str, str], bytes]:
    """GET over a plain socket (its header holds one [sid, id, start] per entry: more
    than HTTP client libraries take), read to the end: (headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return {k.lower(): v for k, v in headers.items()}, body


def test_four_greedy_gets_of_a_96_mib_stream(server: Serve, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    fill(r, "big", 1024, 96 * 1024)  # 96 MiB
    raw_get(server.port, "/data/big?count=1")  # warm: code paths loaded
    target = "/data/big?count=100000&last_entry_id=0"
    answers: list[tuple[dict[str, str], bytes]] = []
    with PeakRss(server.proc.pid) as rss:
        threads = [
            threading.Thread(target=lambda: answers.append(raw_get(server.port, target)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE)
    print(f"4 GETs: server RSS +{rss.growth / MIB:.1f} MiB")
    assert len(answers) == 4
    for headers, body in answers:
        assert headers["more-entries"] == "1"  # cut by --max-read-bytes: read on
        entries = json.loads(headers["entry-offset"])
        assert 0 < len(body) <= 17 * MIB and len(entries) < 96 * 1024
        assert entries[-1][1] == headers["last-entry-id"]
    assert rss.growth <= 64 * MIB


async def test_thirty_counts_share_one_read_and_never_reading_is_bounded(
    server: Serve, redis_url: str
) -> None:
    r = redis.Redis.from_url(redis_url)
    r.xadd("busy", {"d": b"start"})
    pulls = [
        await websockets.connect(
            f"{server.http_url.replace('http', 'ws')}/data/busy/pull?count={count}",
            max_queue=1, max_size=None,
        )
        for count in range(1, 31)
    ]  # fmt: skip
    n, size = 800, 64 * 1024
    try:
        before = xreads(r)
        with PeakRss(server.proc.pid) as rss:
            url = f"{server.http_url.replace('http', 'ws')}/data/busy/push?ack=1&header=0"
            async with websockets.connect(url) as push:
                for i in range(n):
                    await push.send(i.to_bytes(4, "big") * (size // 4))
                    await asyncio.wait_for(push.recv(), DEADLINE)
            await asyncio.sleep(1.0)  # the server sends what it can to the pulls
        per_entry = (xreads(r) - before) / n
    finally:
        for ws in pulls:
            await ws.close()
    print(f"30 counts: server RSS +{rss.growth / MIB:.1f} MiB, {per_entry:.2f} XREAD per entry")
    assert rss.growth <= 128 * MIB
    assert per_entry <= 1.2


@pytest.mark.parametrize(
    ("query", "bound"),
    [
        # count=100: about two of its batches (each within --max-read-bytes) and the
        # socket's buffer
        ("count=100&last_entry_id=0", 2 * 16 * MIB + 16 * MIB),
        # count=1: each read is one entry, read when the last one's write returned: an
        # entry or two and the socket's buffer
        ("last_entry_id=0", 16 * MIB),
    ],
    ids=["count=100", "count=1"],
)
async def test_a_slow_pull_of_large_entries_holds_a_bounded_few(
    server: Serve, redis_url: str, query: str, bound: int
) -> None:
    """A pull of 1 MB entries that stops reading: the server holds a few of its batches,
    not the stream."""
    r = redis.Redis.from_url(redis_url)
    sid = f"large-{bound}"  # a stream of its own per case
    fill(r, sid, 1 << 20, 150)
    url = f"{server.http_url.replace('http', 'ws')}/data/{sid}/pull?{query}"
    with PeakRss(server.proc.pid) as rss:
        async with websockets.connect(url, max_queue=1, max_size=None) as ws:
            await asyncio.wait_for(ws.recv(), DEADLINE)  # the first header; then it stalls
            await asyncio.sleep(2.0)  # the server sends and reads what it can meanwhile
    print(f"slow pull ({query}) of 1 MB entries: server RSS +{rss.growth / MIB:.1f} MiB")
    assert rss.growth <= bound
