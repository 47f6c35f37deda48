"""Browser origins against the real app under uvicorn: a websocket or POST from a page
of another origin is refused (HTTP 403, nothing written) unless --cors-origin lists
it; the server's own origin and clients that send no Origin are unaffected."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
from support.live_server import LiveServer, make_server_app
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app

FOREIGN = "http://evil.example"
LISTED = "http://dashboard.example"
API_KEY = "origin-tests-key"
DEADLINE = 10.0


@pytest.fixture(scope="module")
def open_server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    """The default server: no tokens, no --cors-origin."""
    with LiveServer(make_server_app(redis_server.url)) as live:
        yield live


@pytest.fixture(scope="module")
def cors_server(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_server.url, cors_origins=[LISTED], api_keys=[API_KEY])
    with LiveServer(create_app(settings)) as live:
        yield live


def ws_status(url: str, origin: str | None) -> int:
    try:
        with connect(url, origin=origin, open_timeout=DEADLINE):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def own_origin(server: LiveServer) -> str:
    return server.http_url  # http://127.0.0.1:PORT, the Host the browser would send


@pytest.mark.parametrize("path", ["/data/cam/pull", "/data/cam/push", "/graphql"])
def test_a_foreign_page_cannot_open_a_websocket(
    open_server: LiveServer, redis_url: str, path: str
) -> None:
    url = open_server.ws_url + path
    assert ws_status(url, FOREIGN) == 403
    assert ws_status(url, own_origin(open_server)) == 101
    assert ws_status(url, None) == 101  # scripts and the CLI send no Origin


def test_the_refusal_names_the_origin(open_server: LiveServer, redis_url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"{open_server.ws_url}/data/cam/pull", origin=FOREIGN)
    assert b"origin http://evil.example is not allowed" in info.value.response.body


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_foreign_simple_post_writes_nothing(
    open_server: LiveServer, plain_redis: redis.Redis, content_type: str
) -> None:
    url = f"{open_server.http_url}/data/cam"
    headers = {"content-type": content_type}
    resp = httpx.post(url, content=b"x", headers={**headers, "origin": FOREIGN})
    assert resp.status_code == 403
    assert plain_redis.exists("cam") == 0
    resp = httpx.post(url, content=b"x", headers={**headers, "origin": own_origin(open_server)})
    assert resp.status_code == 200
    assert httpx.post(url, content=b"x", headers=headers).status_code == 200
    assert plain_redis.xlen("cam") == 2


def test_a_foreign_graphql_mutation_is_refused(
    open_server: LiveServer, plain_redis: redis.Redis
) -> None:
    resp = httpx.post(
        f"{open_server.http_url}/graphql",
        json={"query": 'mutation { streamMeta(sid: "cam", meta: {a: 1}) }'},
        headers={"origin": FOREIGN},
    )
    assert resp.status_code == 403
    assert plain_redis.exists("XMETA:cam") == 0


def test_reads_from_any_page_stay_governed_by_cors(
    open_server: LiveServer, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("cam", {"d": b"x"})
    resp = httpx.get(f"{open_server.http_url}/data/cam", headers={"origin": FOREIGN})
    assert resp.status_code == 200  # the browser hides it: no access-control-allow-origin
    assert "access-control-allow-origin" not in resp.headers


def test_cors_origin_lists_the_pages_that_may(
    cors_server: LiveServer, plain_redis: redis.Redis
) -> None:
    url = f"{cors_server.http_url}/data/cam"
    auth = {"authorization": f"Bearer {API_KEY}", "content-type": "text/plain"}
    resp = httpx.post(url, content=b"x", headers={**auth, "origin": FOREIGN})
    assert resp.status_code == 403
    resp = httpx.post(url, content=b"x", headers={**auth, "origin": LISTED})
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == LISTED
    # the server's own origin needs no listing, even with --cors-origin set
    resp = httpx.post(url, content=b"x", headers={**auth, "origin": own_origin(cors_server)})
    assert resp.status_code == 200
    assert plain_redis.xlen("cam") == 2
    pull = f"{cors_server.ws_url}/data/cam/pull?token={API_KEY}"
    assert ws_status(pull, FOREIGN) == 403
    assert ws_status(pull, LISTED) == 101
    assert ws_status(pull, own_origin(cors_server)) == 101


def test_a_listed_page_gets_its_preflight_without_a_token(cors_server: LiveServer) -> None:
    resp = httpx.options(
        f"{cors_server.http_url}/data/cam",
        headers={
            "origin": LISTED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        },
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == LISTED
