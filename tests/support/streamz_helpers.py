"""Helpers for the streamz tests: collecting, counting pending entries, cleaning up sources."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from support.waiting import wait_until


class Collector:
    """A thread-safe sink function that keeps what it gets."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, x: Any) -> None:
        with self.lock:
            self.items.append(x)

    def __len__(self) -> int:
        return len(self.items)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Any]:
        wait_until(lambda: len(self.items) >= n, timeout, f"{n} items (have {len(self.items)})")
        return list(self.items)


def pending_count(client: redis.Redis, stream: str, group: str) -> int:
    return int(client.xpending(stream, group)["pending"])


def consumer_pending(client: redis.Redis, stream: str, group: str, consumer: str) -> int:
    for row in client.xpending(stream, group)["consumers"]:
        name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
        if name == consumer:
            return int(row["pending"])
    return 0


def client_count(client: redis.Redis) -> int:
    """Connections the server has open, this client's own included."""
    return len(client.client_list())


@pytest.fixture(name="sources")
def sources_fixture() -> Iterator[list[Any]]:
    """Append started sources here: they are stopped after the test, whatever happens."""
    started: list[Any] = []
    yield started
    for source in started:
        source.stop()


def collect(source: Any, sources: list[Any], node: Any = None) -> Collector:
    """Sink `node` (default: the source) into a Collector, start the source, and register
    it with the `sources` fixture to be stopped after the test."""
    got = Collector()
    (node if node is not None else source).sink(got)
    source.start()
    sources.append(source)
    return got


def group_source(redis_url: str, streams: Any, consumer: str = "c", group: str = "g", **kw: Any):
    """`Stream.from_redis_consumer_group` on the test's server."""
    from streamz import Stream

    return Stream.from_redis_consumer_group(streams, group, consumer, url=redis_url, **kw)
