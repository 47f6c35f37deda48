"""GraphQL limits against the real app under uvicorn: a query past the depth, alias
or token limit gets an error naming the limit and causes no Redis work; the issue's
50-alias query no longer answers thousands of times its size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from support.live_server import LiveServer, make_server_app
from support.redis_clients import connections_named

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.endpoints.graphql_api import MAX_ALIASES, MAX_SIDS

FIELDS = "sid entriesAdded firstEntryId firstEntryData lastEntryId lastEntryData length meta"


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(make_server_app(redis_server.url)) as live:
        yield live


@pytest.fixture
def streams(plain_redis: redis.Redis) -> redis.Redis:
    for i in range(5):
        for _ in range(3):
            plain_redis.xadd(f"cam:{i}", {"d": b"x" * 100})
    plain_redis.config_resetstat()
    return plain_redis


def post(server: LiveServer, query: str, variables: dict[str, Any] | None = None) -> Any:
    resp = httpx.post(
        f"{server.http_url}/graphql", json={"query": query, "variables": variables or {}}
    )
    assert resp.status_code in (200, 400), resp.text
    return resp


def redis_work(r: redis.Redis) -> list[str]:
    """The commands the server ran since the stats were reset (our own INFO aside)."""
    ours = ("cmdstat_info", "cmdstat_config")
    return [c for c in r.info("commandstats") if not c.startswith(ours)]


def aliased(n: int) -> str:
    return "{ " + " ".join(f"a{i}: streams {{ {FIELDS} }}" for i in range(n)) + " }"


def test_too_many_aliases_are_refused_before_any_redis_work(
    server: LiveServer, streams: redis.Redis
) -> None:
    body = post(server, aliased(50)).json()
    assert body["errors"][0]["message"] == f"50 aliases found. Allowed: {MAX_ALIASES}"
    assert "data" not in body or body["data"] is None
    assert redis_work(streams) == []


def test_a_query_at_the_alias_limit_runs(server: LiveServer, streams: redis.Redis) -> None:
    body = post(server, aliased(MAX_ALIASES)).json()
    assert "errors" not in body
    assert len(body["data"]) == MAX_ALIASES
    assert [s["sid"] for s in body["data"]["a0"]] == [f"cam:{i}" for i in range(5)]
    assert "cmdstat_scan" in redis_work(streams)  # what the refused queries did not do


def test_the_issues_query_no_longer_amplifies_a_thousandfold(
    server: LiveServer, streams: redis.Redis
) -> None:
    """The issue measured 50 aliases answering 5,470 times the request's size; the
    largest query now allowed over the same kind of data stays far below 1000x."""
    query = aliased(MAX_ALIASES)
    answer = post(server, query).content
    assert len(answer) / len(json.dumps({"query": query})) < 100


def test_too_deep_a_query_is_refused(server: LiveServer, streams: redis.Redis) -> None:
    body = post(server, "{ streams { sid { a { b { c { d { e { f } } } } } } } }").json()
    messages = [e["message"] for e in body["errors"]]
    assert "'anonymous' exceeds maximum operation depth of 6" in messages
    assert redis_work(streams) == []


def test_too_many_tokens_are_refused(server: LiveServer, streams: redis.Redis) -> None:
    names = ", ".join(f'"s{i}"' for i in range(2500))
    body = post(server, f"{{ streams(sids: [{names}]) {{ sid }} }}").json()
    assert "more than 2000 tokens" in body["errors"][0]["message"]
    assert redis_work(streams) == []


def test_too_many_sids_in_variables_are_refused(server: LiveServer, streams: redis.Redis) -> None:
    query = "query ($s: [String!]) { streams(sids: $s) { sid } }"
    body = post(server, query, {"s": [f"s{i}" for i in range(MAX_SIDS + 1)]}).json()
    assert body["errors"][0]["message"] == f"{MAX_SIDS + 1} sids in one field: the limit is 1000"
    assert redis_work(streams) == []


def test_the_playground_introspection_passes_the_limits(server: LiveServer) -> None:
    from graphql import get_introspection_query

    query = get_introspection_query(descriptions=True, specified_by_url=True)
    body = post(server, query).json()
    assert "errors" not in body and body["data"]["__schema"]["queryType"]["name"] == "Query"


def test_one_request_holds_one_redis_connection(
    redis_server: EmbeddedRedis, streams: redis.Redis
) -> None:
    """Eight aliases, each listing five streams with their consumer groups: without the
    per-request turn these resolvers ran side by side, each on a pool connection."""
    name = "fastredis-gql-limits"
    settings = Settings(redis_url=redis_server.url, redis_params={"client_name": name})
    query = (
        "{ "
        + " ".join(f"a{i}: streams {{ sid consumerGroups {{ name }} }}" for i in range(MAX_ALIASES))
        + " }"
    )
    with LiveServer(create_app(settings)) as live:
        body = post(live, query).json()
        assert "errors" not in body and len(body["data"]["a7"]) == 5
        used = connections_named(streams, name)
    assert used == 1
