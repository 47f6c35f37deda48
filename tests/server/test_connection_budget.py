"""--redis-max-connections: however many sockets and requests, one server process holds
at most that many Redis connections, and every socket waits its turn instead of being
told "Too many connections"; on a Redis Cluster, requests take turns instead of meeting
redis-py's per-node "Too many connections", and each node sees at most the budget."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import websockets
from support.live_server import LiveServer
from support.redis_clients import PeakConnections

from fastredis.embedded import EmbeddedCluster, EmbeddedRedis
from fastredis.server import Settings, create_app

LIMIT = 8  # the smallest budget the server takes
NAME = "fastredis-budget"
DEADLINE = 60.0
SOCKETS = 150  # pushers, and as many pullers
MESSAGES = 5


def serve_with_budget(url: str, name: str) -> Iterator[LiveServer]:
    """A live server on `url` allowed LIMIT connections, its connections named `name`."""
    settings = Settings(
        redis_url=url, redis_params={"client_name": name}, redis_max_connections=LIMIT
    )
    with LiveServer(create_app(settings)) as live:
        yield live


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    yield from serve_with_budget(redis_server.url, NAME)


def connect(url: str) -> Any:
    return websockets.connect(url, open_timeout=DEADLINE, max_size=None)


async def push(ws_url: str, sid: str) -> list[str]:
    """MESSAGES pushes with acks: the new ids."""
    ids: list[str] = []
    async with connect(f"{ws_url}/data/{sid}/push?ack=1") as ws:
        for i in range(MESSAGES):
            payload = f"{sid}:{i}".encode()
            await ws.send(json.dumps([len(payload)]))
            await ws.send(payload)
        for _ in range(MESSAGES):
            ids.extend(json.loads(await asyncio.wait_for(ws.recv(), DEADLINE)))
    return ids


async def pull(ws_url: str, sid: str) -> list[str]:
    """Pull `sid` from the start until MESSAGES entries came: their ids."""
    ids: list[str] = []
    async with connect(f"{ws_url}/data/{sid}/pull?last_entry_id=0&block=0") as ws:
        while len(ids) < MESSAGES:
            header = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
            payload = await asyncio.wait_for(ws.recv(), DEADLINE)
            ids.extend(item[1] for item in header)
            assert isinstance(payload, bytes)
    return ids


async def test_hundreds_of_sockets_and_requests_share_the_connection_limit(
    server: LiveServer, redis_url: str
) -> None:
    """150 pushers and 150 pullers of their own streams, 40 REST POST+GETs and 40
    GraphQL queries, all at once, on a server allowed 8 Redis connections: every one
    completes, with every entry, and the server never holds more than 8."""
    ws_url, http_url = server.ws_url, server.http_url
    limits = httpx.Limits(max_connections=100)

    async def rest(http: httpx.AsyncClient, k: int) -> None:
        posted = await http.post(f"/data/rest{k}", content=b"x" * k)
        assert posted.status_code == 200, posted.text
        got = await http.get(f"/data/rest{k}", params={"last_entry_id": "0"})
        assert (got.status_code, got.content) == (200, b"x" * k)

    async def graphql(http: httpx.AsyncClient) -> None:
        r = await http.post("/graphql", json={"query": "{ a: sids b: sids c: sids }"})
        assert r.status_code == 200 and "errors" not in r.json(), r.text

    with redis.Redis.from_url(redis_url) as r, PeakConnections(r, NAME) as peak:
        async with httpx.AsyncClient(base_url=http_url, timeout=DEADLINE, limits=limits) as http:
            results = await asyncio.gather(
                *(push(ws_url, f"s{k}") for k in range(SOCKETS)),
                *(pull(ws_url, f"s{k}") for k in range(SOCKETS)),
                *(rest(http, k) for k in range(1, 41)),
                *(graphql(http) for _ in range(40)),
            )
    pushed, pulled = results[:SOCKETS], results[SOCKETS : 2 * SOCKETS]
    assert pulled == pushed
    assert all(len(ids) == MESSAGES for ids in pushed)
    assert peak.samples > 0
    assert peak.most <= LIMIT, f"the server held {peak.most} Redis connections"


# -- on a Redis Cluster ------------------------------------------------------------------

CLUSTER_NAME = "fastredis-cluster-budget"
REQUESTS = 150  # at once: past redis-py's 100 connections per node


@pytest.fixture(scope="module")
def cluster_server(redis_cluster: EmbeddedCluster) -> Iterator[LiveServer]:
    yield from serve_with_budget(redis_cluster.url, CLUSTER_NAME)


class NodePeaks:
    """The most connections the server held to each primary, sampled in threads."""

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.clients = [redis.Redis.from_url(n.url) for n in cluster.live_nodes()]
        self.peaks = [PeakConnections(c, CLUSTER_NAME) for c in self.clients]

    def __enter__(self) -> NodePeaks:
        for peak in self.peaks:
            peak.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for peak in self.peaks:
            peak.__exit__()
        for client in self.clients:
            client.close()


async def test_on_a_cluster_more_requests_than_a_node_pool_holds_all_complete(
    cluster_server: LiveServer, redis_cluster: EmbeddedCluster
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
            base_url=cluster_server.http_url, timeout=DEADLINE, limits=limits
        ) as http:
            await asyncio.gather(
                *(graphql(http) for _ in range(REQUESTS)),
                *(rest(http, k) for k in range(REQUESTS)),
            )
    assert all(peak.samples > 0 for peak in nodes.peaks)
    most = [peak.most for peak in nodes.peaks]
    assert max(most) <= LIMIT, f"connections per node: {most}"
    assert sum(most) > 0  # the sampling saw the server's connections at all
