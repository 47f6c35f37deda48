"""A rolling restart of two `fastredis serve` processes on one Redis (each stopped with
SIGTERM and started again, one after the other), under a producer pushing with
``producer=`` and reconnecting viewers: nothing lost, nothing doubled, no gap."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
import redis
from support.serve_process import ServeProcess
from support.waiting import wait_until

from fastredis.client import Client, Gap

VIEWERS = 3
TAIL = 200  # messages pushed after the restarts are done


@pytest.fixture
def servers(redis_url: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    with (
        ServeProcess(redis_url, "--maxlen", "0") as a,
        ServeProcess(redis_url, "--maxlen", "0") as b,
    ):
        yield a, b


class Viewer(threading.Thread):
    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.client = Client(urls)
        self.ids: list[str] = []
        self.gaps: list[Gap] = []
        self.want: int | None = None

    def run(self) -> None:
        for item in self.client.pull("s", last_entry_id="0", count=100, reconnect=True):
            if isinstance(item, Gap):
                self.gaps.append(item)
                continue
            self.ids.append(item[1])
            if self.want is not None and len(self.ids) >= self.want:
                return


def test_rolling_restart_loses_and_doubles_nothing(
    servers: tuple[ServeProcess, ServeProcess], plain_redis: redis.Redis
) -> None:
    a, b = servers
    urls = [a.ws_url, b.ws_url]
    viewers = [Viewer(urls if k % 2 else urls[::-1]) for k in range(VIEWERS)]
    for v in viewers:
        v.start()
    restarted = threading.Event()
    acked: list[str] = []

    def produce() -> None:
        with Client(urls) as c:
            i = 0
            left = TAIL
            while left:
                ids = c.push("s", b"%d" % i, producer="camera")
                assert ids is not None
                acked.extend(ids)
                i += 1
                if restarted.is_set():
                    left -= 1

    producer = threading.Thread(target=produce)
    producer.start()
    for server in (a, b):  # one after the other, as a deploy would
        wait_until(lambda: len(acked) > 100 + len(acked) // 2, 60, "pushes before the restart")
        server.stop(signal.SIGTERM)
        server.start()
    restarted.set()
    producer.join(120)
    assert not producer.is_alive()
    stored = [(i.decode(), f[b"d"]) for i, f in plain_redis.xrange("s")]
    assert [d for _i, d in stored] == [b"%d" % k for k in range(len(stored))]  # once, in order
    assert [i for i, _d in stored] == acked
    for v in viewers:
        v.want = len(acked)
    for v in viewers:
        wait_until(lambda v=v: len(v.ids) >= len(acked), 60, "the viewer to catch up")
        assert v.ids == acked  # every viewer: all of it, once, in order
        assert v.gaps == []
        v.client.close()
