"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from support.serve_process import Serve, tracked_serves

from fastredis.redis_io import make_async_client
from fastredis.server.reads.hub import Hub

HUB_CLIENT_NAME = "fastredis-hub-tests"  # the `hub` fixture's Redis connections


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[Hub]:
    """A hub on its own client of the test Valkey, closed after the test."""
    client = make_async_client({"client_name": HUB_CLIENT_NAME}, url=redis_url)
    hub = Hub(client)
    try:
        yield hub
    finally:
        await hub.close()
        await client.aclose()


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    """`serve(*args, **env)` runs `fastredis serve` (killed after the test if still up)."""
    yield from tracked_serves()
