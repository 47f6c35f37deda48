"""The seed-003 server face: websocket push/pull, REST and GraphQL over Redis Streams.

`create_app(settings)` builds the Starlette app; `fastredis serve` runs it with
uvicorn. The protocol is described in README.md ("The server").
"""

from fastredis.server.app import create_app
from fastredis.server.settings import Settings

__all__ = ["Settings", "create_app"]
