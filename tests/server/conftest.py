"""Fixtures of the server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.serve_process import Serve, tracked_serves


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    """`serve(*args, **env)` runs `fastredis serve` (killed after the test if still up)."""
    yield from tracked_serves()
