"""Behind a reverse proxy (fastredis.server.edge.proxy): a trusted peer's X-Forwarded-*
give the client, scheme and host; anybody else's are ignored; the same-origin check
uses what the browser used; --root-path reaches every request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support.live_server import LiveServer
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from fastredis.embedded import EmbeddedRedis
from fastredis.server import Settings, create_app
from fastredis.server.edge.proxy import ProxyMiddleware

PUBLIC = {"x-forwarded-proto": "https", "x-forwarded-host": "example.com"}


async def _echo(request: Request) -> JSONResponse:
    scope = request.scope
    return JSONResponse(
        {
            "client": scope["client"][0],
            "scheme": scope["scheme"],
            "host": request.headers["host"],
            "root_path": scope["root_path"],
            "path": scope["path"],
        }
    )


def _echo_server(trusted: tuple[str, ...]) -> LiveServer:
    app = ProxyMiddleware(Starlette(routes=[Route("/echo", _echo)]), "/sub", trusted)
    return LiveServer(app, proxy_headers=False)  # as `fastredis serve` runs uvicorn


def _seen(server: LiveServer, **headers: str) -> dict[str, Any]:
    """What the app behind the middleware saw of a GET /echo with `headers`."""
    return httpx.get(server.http_url + "/echo", headers=headers, timeout=10).json()


def test_a_trusted_proxy_gives_the_client_scheme_and_host() -> None:
    with _echo_server(("127.0.0.0/8",)) as server:
        seen = _seen(server, **PUBLIC, **{"x-forwarded-for": "203.0.113.7, 127.0.0.2"})
    # 127.0.0.2 is a trusted proxy on the way; the first address not trusted is the client
    assert seen == {
        "client": "203.0.113.7",
        "scheme": "https",
        "host": "example.com",
        "root_path": "/sub",
        "path": "/echo",  # as received: the proxy stripped the sub-path
    }


@pytest.mark.parametrize("trusted", [(), ("10.0.0.0/8",), ("::1",)])
def test_anybody_elses_forwarded_headers_are_ignored(trusted: tuple[str, ...]) -> None:
    with _echo_server(trusted) as server:
        seen = _seen(server, **PUBLIC, **{"x-forwarded-for": "203.0.113.7"})
    assert seen["client"] == "127.0.0.1" and seen["scheme"] == "http"
    assert seen["host"] == f"127.0.0.1:{server.port}" and seen["root_path"] == "/sub"


@pytest.fixture(scope="module")
def behind_proxy(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    """The app trusting 127.0.0.1 (the default), as behind a proxy on this machine."""
    with LiveServer(create_app(Settings(redis_url=redis_server.url))) as live:
        yield live


@pytest.fixture(scope="module")
def not_behind_proxy(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_server.url, forwarded_allow_ips=("10.1.2.3",))
    with LiveServer(create_app(settings)) as live:
        yield live


def _handshake(server: LiveServer, origin: str, headers: dict[str, str]) -> int | str:
    try:
        with connect(f"{server.ws_url}/data/o/pull", origin=origin, additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return f"{exc.response.status_code} {exc.response.body.decode()}"


def test_the_origin_check_uses_the_forwarded_scheme_and_host(
    behind_proxy: LiveServer, not_behind_proxy: LiveServer, redis_url: str
) -> None:
    assert _handshake(behind_proxy, "https://example.com", PUBLIC) == 101
    # the same host on another scheme (or port) is another origin
    refused = _handshake(behind_proxy, "http://example.com", PUBLIC)
    assert str(refused).startswith("403 ") and "own is https://example.com" in str(refused)
    assert str(_handshake(behind_proxy, "https://example.com:8443", PUBLIC)).startswith("403")
    # from a peer not listed in --forwarded-allow-ips the headers count for nothing
    refused = _handshake(not_behind_proxy, "https://example.com", PUBLIC)
    assert str(refused).startswith("403 ")
    assert f"own is http://127.0.0.1:{not_behind_proxy.port}" in str(refused)
    assert "--forwarded-allow-ips" in str(refused)


def test_the_pages_link_under_the_root_path(redis_server: EmbeddedRedis) -> None:
    settings = Settings(redis_url=redis_server.url, root_path="/fastredis")
    with LiveServer(create_app(settings)) as live:
        page = httpx.get(live.http_url + "/view/cam", timeout=10).text
        playground = httpx.get(
            live.http_url + "/graphql", headers={"Accept": "text/html"}, timeout=10
        ).text
    for html in (page, playground):
        assert '{"root": "/fastredis"' in html
