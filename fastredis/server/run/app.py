"""The Starlette app: websocket push/pull, REST, GraphQL (when its module is there)."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute, websocket_session

from fastredis.redis_io import make_async_client
from fastredis.server.edge.auth import AccessMiddleware, TokenChecker, install_log_redaction
from fastredis.server.edge.drain import Drain, DrainedWebSocket
from fastredis.server.edge.proxy import ProxyMiddleware
from fastredis.server.edge.rawpath import RawPathGuard
from fastredis.server.endpoints.foxglove import foxglove_endpoint
from fastredis.server.endpoints.mjpeg import mjpeg_endpoint
from fastredis.server.endpoints.pages import dashboard, viewer, wants_html
from fastredis.server.endpoints.pull import pull_endpoint
from fastredis.server.endpoints.push import push_endpoint
from fastredis.server.endpoints.rest import get_data, post_data
from fastredis.server.endpoints.sse import EventCache, sse_endpoint
from fastredis.server.reads.hub import Hub
from fastredis.server.reads.splice_pump import PumpSlots, redis_address
from fastredis.server.run.embedded_valkey import embedded_valkey, server_url
from fastredis.server.run.health import healthz, readyz
from fastredis.server.run.metrics import MetricsMiddleware, metrics_endpoint
from fastredis.server.run.settings import REDIS_POOL_WAIT_S, Settings
from fastredis.server.writes.write_lanes import WriteLanes

__all__ = ["create_app"]

log = logging.getLogger("fastredis.server")

# The garbage collector's youngest generation is collected every GC_YOUNG new objects
# (Python's default: 700). An open pull keeps about 250 (the coroutines of the ASGI
# stack, its tasks and futures), so at 700 each few sockets opened made a pass, and a
# full pass followed each time the heap grew by a quarter: in a storm of 10,000
# reconnecting viewers, 17 full passes were 70% of the server's CPU, pausing every
# socket for up to 2 s (benchmarks/bench_storm.py). Garbage in cycles waits longer to
# be freed: at most GC_YOUNG * 10 objects' worth before a middle pass.
GC_YOUNG = 10_000

GRAPHQL_MODULE = "fastredis.server.endpoints.graphql_api"


def _graphql_routes() -> list[BaseRoute]:
    if importlib.util.find_spec(GRAPHQL_MODULE) is None:
        return []
    from fastredis.server.endpoints.graphql_api import make_graphql_app

    gql = make_graphql_app()
    return [
        Route("/graphql", gql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", DrainedWebSocket(gql)),  # closed 1012 on SIGTERM
    ]


async def index(request: Request) -> Response:
    """Browsers get the dashboard; API clients the endpoints as JSON."""
    if wants_html(request):
        return await dashboard(request)
    has_graphql = any(getattr(r, "path", None) == "/graphql" for r in request.app.routes)
    return JSONResponse(
        {
            "name": "fastredis",
            "push": "ws /data/{sid}/push",
            "pull": "ws /data/{sid}/pull",
            "rest": "GET|POST /data/{sid}",
            "graphql": "/graphql" if has_graphql else None,
            "mjpeg": "GET /mjpeg/{sid}",
            "sse": "GET /sse/{sid}",
            "foxglove": "ws /foxglove (foxglove.websocket.v1)",
            "view": "GET /view/{sid}",
            "health": ["GET /healthz", "GET /readyz", "GET /metrics"],
        }
    )


def create_app(settings: Settings | None = None) -> Starlette:
    """The server app. Its lifespan opens ``app.state.redis`` (a redis.asyncio client
    with the fastredis parser, bytes replies, at most ``redis_max_connections``) on
    ``settings.redis_url``, the shared reads (``app.state.hub``) and the write lanes
    (``app.state.writers``); with no URL it starts an embedded Valkey for the app's
    lifetime."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis_url
        params = settings.client_params
        if url is None:
            embedded = await asyncio.to_thread(lambda: embedded_valkey(settings).start())
            url = server_url(embedded)
            params = replace(settings, redis_url=url).client_params  # a unix socket's
            log.info("started an embedded Valkey on port %s", embedded.port)
        install_log_redaction()
        app.state.settings = settings
        budget = settings.budget
        app.state.redis = make_async_client(
            params,
            url=url,
            cluster=settings.redis_cluster,
            max_connections=settings.redis_max_connections,
            pool_wait=REDIS_POOL_WAIT_S,
            cluster_requests=budget.other,
        )
        app.state.hub = Hub(app.state.redis, budget.tail, budget.catch_up, settings.max_read_bytes)
        app.state.writers = WriteLanes(app.state.redis, budget.writers, settings.maxlen)
        app.state.embedded = embedded
        app.state.pumps = PumpSlots(budget.pumps)
        app.state.pump_address = (
            redis_address(app.state.redis) if settings.splice_pulls == "on" else None
        )
        # Everything loaded so far (Starlette, Strawberry, redis-py ...) lives as long
        # as the server: keep it out of the garbage collector's full passes, which
        # otherwise stall every socket for milliseconds now and then (p99 latency).
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG, 10, 10)
        try:
            yield
        finally:
            await app.state.hub.close()
            await app.state.writers.close()
            await app.state.redis.aclose()
            if embedded is not None:
                await asyncio.to_thread(embedded.close)

    routes: list[BaseRoute] = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Route("/view/{sid}", viewer),
        Route("/mjpeg/{sid}", mjpeg_endpoint),
        Route("/sse/{sid}", sse_endpoint),
        WebSocketRoute("/data/{sid}/push", push_endpoint),
        WebSocketRoute("/data/{sid}/pull", pull_endpoint),
        WebSocketRoute("/foxglove", DrainedWebSocket(websocket_session(foxglove_endpoint))),
        Route("/data/{sid}", get_data, methods=["GET"]),
        Route("/data/{sid}", post_data, methods=["POST"]),
        *_graphql_routes(),
    ]
    # metrics count every request; then paths that are not UTF-8 are refused
    middleware = [
        # first: everything after sees the scheme, host and client the browser used
        Middleware(ProxyMiddleware, settings.root_path, settings.forwarded_allow_ips),
        Middleware(MetricsMiddleware, max_sockets=settings.max_sockets),
        Middleware(RawPathGuard),
    ]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=[
                    "entry-offset",
                    "last-entry-id",
                    "more-entries",
                    "x-offsets",
                    "x-last-entry-id",
                ],
            )
        )
    # inside CORS: preflights are answered without a token, refusals carry CORS headers
    checker = TokenChecker.from_settings(settings)
    middleware.append(Middleware(AccessMiddleware, checker, settings.cors_origins))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.drain = Drain(settings.drain_seconds)  # run on SIGTERM (run.process)
    app.state.sse_events = EventCache()  # SSE events encoded once for every viewer
    return app
