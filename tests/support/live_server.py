"""A real uvicorn server in a thread, for tests that need a socket (not a test module);
the `server` and `url` fixtures that serve the fastredis app with it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from fastredis.embedded import EmbeddedRedis, free_port
from support.waiting import wait_until


def _ws_options(app: Any) -> dict[str, Any]:
    """The websocket options `fastredis serve` gives uvicorn, for the app's settings."""
    from fastredis.server.edge.uvicorn_guard import uvicorn_options

    settings = getattr(getattr(app, "state", None), "settings", None)
    if settings is None:  # not the fastredis app
        return {"ws": "websockets-sansio", "ws_per_message_deflate": False}
    return uvicorn_options(settings)


class LiveServer:
    """uvicorn serving `app` on a free port of 127.0.0.1 until stop()."""

    def __init__(self, app: Any, host: str = "127.0.0.1", **options: Any):
        """`options`: uvicorn.Config arguments over those `fastredis serve` gives."""
        self.host = host
        self.port = free_port(host)
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            **(_ws_options(app) | options),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> LiveServer:
        self.thread.start()
        wait_until(
            lambda: self.server.started or not self.thread.is_alive(),
            timeout,
            what="uvicorn to start",
        )
        if not self.server.started:
            raise RuntimeError("uvicorn did not start (see the log above)")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_server_app(redis_url: str) -> Any:
    """The fastredis server app on `redis_url` (GraphQL mounted at /graphql)."""
    from fastredis.server.run.app import create_app
    from fastredis.server.run.settings import Settings

    return create_app(Settings(redis_url=redis_url))


@pytest.fixture(name="server", scope="module")
def server_fixture(redis_server: EmbeddedRedis) -> Iterator[LiveServer]:
    """The fastredis server app on the session's Redis, one per test module."""
    with LiveServer(make_server_app(redis_server.url)) as live:
        yield live


@pytest.fixture(name="url")
def url_fixture(server: LiveServer, redis_url: str) -> str:
    """The server's ws:// base URL, with Redis flushed."""
    return server.ws_url
