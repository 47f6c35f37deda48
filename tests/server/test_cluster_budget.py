"""--redis-max-connections on a Redis Cluster: requests take turns instead of meeting
redis-py's per-node "Too many connections", and the server's connections to each node
stay within the budget."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis
from support.live_server import LiveServer
from support.redis_clients import PeakConnections

from fastredis.embedded import EmbeddedCluster
from fastredis.server import Settings, create_app

LIMIT = 8
NAME = "fastredis-cluster-budget"
DEADLINE = 60.0
REQUESTS = 150  # at once: past redis-py's 100 connections per node


@pytest.fixture(scope="module")
def server(redis_cluster: EmbeddedCluster) -> Iterator[LiveServer]:
    settings = Settings(
        redis_url=redis_cluster.url,
        redis_params={"client_name": NAME},
        redis_max_connections=LIMIT,
    )
    with LiveServer(create_app(settings)) as live:
        yield live


class NodePeaks:
    """The most connections the server held to each primary, sampled in threads."""

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.clients = [redis.Redis.from_url(n.url) for n in cluster.live_nodes()]
        self.peaks = [PeakConnections(c, NAME) for c in self.clients]

    def __enter__(self) -> NodePeaks:
        for peak in self.peaks:
            peak.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for peak in self.peaks:
            peak.__exit__()
        for client in self.clients:
            client.close()


async def test_more_requests_than_a_node_pool_holds_all_complete(
    server: LiveServer, redis_cluster: EmbeddedCluster
) -> None:
    """150 GraphQL `sids` queries (a SCAN of every primary each) and 150 REST GETs at
    once: every one answers 200, none says "Too many connections", and the server never
    holds more than the budget to any node."""
    limits = httpx.Limits(max_connections=2 * REQUESTS)

    async def graphql(http: httpx.AsyncClient) -> None:
        r = await http.post("/graphql", json={"query": "{ sids }"})
        assert r.status_code == 200 and "errors" not in r.json(), r.text

    async def rest(http: httpx.AsyncClient, k: int) -> None:
        got = await http.get(f"/data/none{k}")
        assert got.status_code == 200, got.text

    with NodePeaks(redis_cluster) as nodes:
        async with httpx.AsyncClient(
            base_url=server.http_url, timeout=DEADLINE, limits=limits
        ) as http:
            await asyncio.gather(
                *(graphql(http) for _ in range(REQUESTS)),
                *(rest(http, k) for k in range(REQUESTS)),
            )
    assert all(peak.samples > 0 for peak in nodes.peaks)
    most = [peak.most for peak in nodes.peaks]
    assert max(most) <= LIMIT, f"connections per node: {most}"
    assert sum(most) > 0  # the sampling saw the server's connections at all
