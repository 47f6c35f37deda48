"""Stream metadata against the real app under uvicorn: `streamMeta` never writes over,
or deletes, a key of another type; sids naming metadata keys (XMETA:...) are refused
as streams by push, pull, REST and GraphQL; metadata size is bounded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from support.live_server import LiveServer, make_server_app
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server.writes.meta import MAX_META_BYTES

DEADLINE = 10.0


@pytest.fixture(scope="module")
def server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    with LiveServer(make_server_app(redis_server.url)) as live:
        yield live


def gql(server: LiveServer, query: str) -> Any:
    resp = httpx.post(f"{server.http_url}/graphql", json={"query": query})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_stream_meta_leaves_a_stream_at_its_key_untouched(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("XMETA:cam", {"d": b"precious"})
    for meta in ('{format: "mp4"}', "null"):  # neither set nor delete touches it
        answer = gql(server, f'mutation {{ streamMeta(sid: "cam", meta: {meta}) }}')
        assert answer["errors"][0]["message"] == (
            "'XMETA:cam' holds a stream, not metadata: it was left untouched"
        )
    assert plain_redis.type("XMETA:cam") == b"stream"
    assert plain_redis.xrange("XMETA:cam")[0][1] == {b"d": b"precious"}


def test_stream_meta_sets_and_deletes_its_own_key(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    assert gql(server, 'mutation { streamMeta(sid: "cam", meta: {a: 1}) }')["data"] == {
        "streamMeta": {"a": 1}
    }
    assert json.loads(plain_redis.get("XMETA:cam")) == {"a": 1}
    gql(server, 'mutation { streamMeta(sid: "cam", meta: null) }')
    assert plain_redis.exists("XMETA:cam") == 0


def test_metadata_size_is_bounded(server: LiveServer, plain_redis: redis.Redis) -> None:
    big = json.dumps("x" * MAX_META_BYTES)
    answer = gql(server, f'mutation {{ streamMeta(sid: "cam", meta: {big}) }}')
    assert "over the limit of 65536" in answer["errors"][0]["message"]
    assert plain_redis.exists("XMETA:cam") == 0


@pytest.mark.parametrize(
    "query",
    [
        'mutation { streamMeta(sid: "XMETA:cam", meta: {a: 1}) }',
        '{ streams(sids: ["XMETA:cam"]) { sid } }',
    ],
)
def test_graphql_refuses_metadata_keys_as_streams(
    server: LiveServer, plain_redis: redis.Redis, query: str
) -> None:
    plain_redis.set("XMETA:cam", b'{"a": 1}')
    answer = gql(server, query)
    assert "is a metadata key" in answer["errors"][0]["message"]
    assert plain_redis.get("XMETA:cam") == b'{"a": 1}'
    assert plain_redis.exists("XMETA:XMETA:cam") == 0


def test_a_stream_named_like_metadata_is_not_listed(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("XMETA:cam", {"d": b"x"})
    plain_redis.xadd("cam", {"d": b"x"})
    assert gql(server, "{ sids }")["data"] == {"sids": ["cam"]}


def test_rest_refuses_metadata_keys_as_streams(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.set("XMETA:cam", b"{}")
    for resp in (
        httpx.get(f"{server.http_url}/data/XMETA:cam"),
        httpx.post(f"{server.http_url}/data/XMETA:cam", content=b"x"),
        httpx.post(f"{server.http_url}/data/cam+XMETA:cam", content=b"x"),
    ):
        assert resp.status_code == 400
        assert "XMETA:... keys hold metadata" in resp.json()["error"]
    assert plain_redis.get("XMETA:cam") == b"{}" and plain_redis.exists("cam") == 0


@pytest.mark.parametrize("verb", ["push", "pull"])
def test_websockets_refuse_metadata_keys_as_streams(
    server: LiveServer, plain_redis: redis.Redis, verb: str
) -> None:
    with (
        connect(f"{server.ws_url}/data/XMETA:cam/{verb}") as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(DEADLINE)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "XMETA:... keys hold metadata" in info.value.rcvd.reason


def test_a_push_header_naming_a_metadata_key_writes_nothing(
    server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.set("XMETA:cam", b"{}")
    with connect(f"{server.ws_url}/data/cam/push") as ws:
        ws.send(json.dumps([["cam", 1], ["XMETA:cam", 2]]))
        ws.send(b"ab")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(DEADLINE)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert "metadata key" in info.value.rcvd.reason
    assert plain_redis.get("XMETA:cam") == b"{}" and plain_redis.exists("cam") == 0
