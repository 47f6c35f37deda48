"""Health checks for orchestrators: ``GET /healthz`` (the process answers) and
``GET /readyz`` (and Redis answers a PING). 200 or 503, always with a JSON body."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from fastredis.server.run.settings import redacted

__all__ = ["READY_TIMEOUT", "healthz", "readyz"]

READY_TIMEOUT = 2.0  # seconds a PING may take before the server is called not ready


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when Redis answers PING within `READY_TIMEOUT` s; 503 says why not."""
    url = request.app.state.settings.redis_url
    where = redacted(url) if url else "the embedded Valkey"
    try:
        await asyncio.wait_for(request.app.state.redis.ping(), READY_TIMEOUT)
    except (RedisError, OSError) as exc:
        reason = f"Redis at {where} unavailable: {exc}"
    except asyncio.TimeoutError:
        reason = f"Redis at {where} did not answer PING within {READY_TIMEOUT:g} s"
    else:
        return JSONResponse({"status": "ready", "redis": "ok"})
    return JSONResponse({"status": "unavailable", "redis": reason}, status_code=503)
