"""The seed-003 server face: websocket push/pull, REST and GraphQL over Redis Streams.

`create_app(settings)` builds the Starlette app; `fastredis serve` (`serve.py`) runs it
with uvicorn. The protocol is described in README.md ("The server"). The names are
imported on first use, so the `fastredis` command can list `serve` without the server
extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastredis.server.app import create_app
    from fastredis.server.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from fastredis.server.app import create_app

        return create_app
    if name == "Settings":
        from fastredis.server.settings import Settings

        return Settings
    raise AttributeError(f"module 'fastredis.server' has no attribute {name!r}")
