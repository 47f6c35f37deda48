"""A cluster none of whose nodes answers is "Redis unavailable" (a ConnectionError, a
RedisError) to the server's bounded cluster client: redis-py raises
RedisClusterUnreachableError, not a RedisError, while it looks for the topology (a
failover), and the faces catch RedisError to answer with their close code or status."""

from __future__ import annotations

import pytest
import redis

from fastredis.embedded import EmbeddedCluster
from fastredis.redis_io import make_async_client
from fastredis.redis_io.bounded_cluster import BoundedRedisCluster


async def test_no_node_answering_is_a_connection_error(private_cluster: EmbeddedCluster) -> None:
    client = make_async_client(url=private_cluster.url, cluster_requests=8)
    assert isinstance(client, BoundedRedisCluster)
    await client.set("k", "v")
    fresh = make_async_client(url=private_cluster.url, cluster_requests=8)  # not used yet
    private_cluster.close()
    try:
        with pytest.raises(redis.ConnectionError):
            await client.get("k")
        with pytest.raises(redis.ConnectionError):
            async with fresh.pipeline(transaction=False) as pipe:  # the topology first
                pipe.get("k")
                await pipe.execute()
    finally:
        await client.aclose()
        await fresh.aclose()
