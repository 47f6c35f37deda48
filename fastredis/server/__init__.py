"""The server face: the Redis Streamer protocol (websocket push/pull, REST, GraphQL) over
Redis Streams, plus MJPEG, browser pages, health checks and metrics.

Its sub-packages follow the data: `endpoints` (the faces) hand requests to `reads` (the
hub's shared reads) or `writes` (the write lanes); `edge` is where a request enters
(protocol rules, access, origins, the error table); `run` assembles and runs it all.
`create_app(settings)` builds the Starlette app; `fastredis serve` (`run/serve.py`) runs it
with uvicorn. The names are imported on first use, so the `fastredis` command can list
`serve` without the server extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastredis.server.run.app import create_app
    from fastredis.server.run.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from fastredis.server.run.app import create_app

        return create_app
    if name == "Settings":
        from fastredis.server.run.settings import Settings

        return Settings
    raise AttributeError(f"module 'fastredis.server' has no attribute {name!r}")
