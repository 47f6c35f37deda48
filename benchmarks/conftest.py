"""Benchmark fixtures: a private server per session (never 127.0.0.1:6379)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastredis.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def bench_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server
