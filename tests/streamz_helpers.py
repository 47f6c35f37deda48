"""Helpers for the streamz tests: waiting with deadlines, collecting, cleaning up sources."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.005,
) -> Any:
    """Poll `condition` until it is truthy; fail the test with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(every)


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
