"""Prometheus metrics of the server (``GET /metrics``): the counters, and the small
functions the endpoints call to move them.

The counters live in prometheus-client's process registry (with its process and
Python collectors), so every app of one process adds to the same ones; with
``--workers N`` each worker answers for itself. Consumer groups are read from Redis
at scrape time (XINFO GROUPS of at most `MAX_GROUP_STREAMS` stream keys).

* ``fastredis_open_sockets{kind}``: push, pull, graphql (websockets) and mjpeg;
* ``fastredis_entries_pushed_total{via}``, ``fastredis_pushed_bytes_total{via}``:
  entries Redis confirmed writing (ws, rest), and their payload bytes;
* ``fastredis_entries_pulled_total{via}``, ``fastredis_pulled_bytes_total{via}``:
  entries sent to clients (ws, rest, graphql, mjpeg), and their payload bytes;
* ``fastredis_push_latency_seconds``: from a pushed message being queued to Redis
  confirming its write;
* ``fastredis_frames_dropped_total{via,reason}``: entries a viewer never got because
  of ``latest`` or ``max_fps``;
* ``fastredis_redis_errors_total{kind}``: Redis failures (unavailable, refused,
  other) that reached a client;
* ``fastredis_group_pending{stream,group}``, ``fastredis_group_lag{stream,group}``,
  ``fastredis_group_consumers{stream,group}``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fastredis._resp import StreamBatch
from fastredis.server.streams import GroupInfo, consumer_groups, list_sids

__all__ = [
    "MetricsMiddleware",
    "dropped",
    "metrics_endpoint",
    "payload_bytes",
    "pulled",
    "pushed",
    "redis_error",
]

MAX_GROUP_STREAMS = 1000  # stream keys whose groups one scrape reports (sorted by name)

OPEN_SOCKETS = Gauge("fastredis_open_sockets", "Open sockets by kind.", ["kind"])
ENTRIES_PUSHED = Counter("fastredis_entries_pushed", "Entries written to Redis.", ["via"])
BYTES_PUSHED = Counter("fastredis_pushed_bytes", "Payload bytes written to Redis.", ["via"])
ENTRIES_PULLED = Counter("fastredis_entries_pulled", "Entries sent to clients.", ["via"])
BYTES_PULLED = Counter("fastredis_pulled_bytes", "Payload bytes sent to clients.", ["via"])
PUSH_LATENCY = Histogram(
    "fastredis_push_latency_seconds",
    "From a pushed message being queued to Redis confirming its write.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
)
FRAMES_DROPPED = Counter(
    "fastredis_frames_dropped",
    "Entries a viewer skipped because of latest or max_fps.",
    ["via", "reason"],
)
REDIS_ERRORS = Counter("fastredis_redis_errors", "Redis failures met by requests.", ["kind"])

for _kind in ("push", "pull", "graphql", "mjpeg"):
    OPEN_SOCKETS.labels(_kind)  # every kind shows, at 0, before its first socket
_PUSH_LATENCY_OBSERVE = PUSH_LATENCY.observe


def payload_bytes(batch: StreamBatch) -> int:
    """The bytes of every field value of `batch` (its payloads)."""
    return int(batch.offsets()["val_len"].sum()) if len(batch) else 0


def pushed(via: str, entries: int, nbytes: int, seconds: float | None = None) -> None:
    """Redis confirmed writing `entries` (`nbytes` of payload), `seconds` after queueing."""
    ENTRIES_PUSHED.labels(via).inc(entries)
    BYTES_PUSHED.labels(via).inc(nbytes)
    if seconds is not None:
        _PUSH_LATENCY_OBSERVE(seconds)


def pulled(via: str, batch: StreamBatch) -> None:
    """`batch` is being sent to a client over `via`."""
    n = len(batch)
    if n:
        ENTRIES_PULLED.labels(via).inc(n)
        BYTES_PULLED.labels(via).inc(payload_bytes(batch))


def dropped(via: str, reason: str, entries: int = 1) -> None:
    """A viewer skipped `entries` because of `reason` ("latest" or "max_fps")."""
    if entries > 0:
        FRAMES_DROPPED.labels(via, reason).inc(entries)


def redis_error(exc: RedisError) -> None:
    """A Redis failure reached a client."""
    if isinstance(exc, ResponseError):
        kind = "refused"
    elif isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        kind = "unavailable"
    else:
        kind = "other"
    REDIS_ERRORS.labels(kind).inc()


def socket_kind(scope: Scope) -> str | None:
    """Which kind of long-lived socket `scope` opens, if any."""
    path: str = scope.get("path", "")
    if scope["type"] == "websocket":
        if path.startswith("/data/"):
            if path.endswith("/push"):
                return "push"
            if path.endswith("/pull"):
                return "pull"
        elif path.rstrip("/") == "/graphql":
            return "graphql"
    elif scope["type"] == "http" and path.startswith("/mjpeg/"):
        return "mjpeg"
    return None


class MetricsMiddleware:
    """Counts the open sockets by kind (an ASGI wrapper: nothing per message)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = socket_kind(scope) if scope["type"] != "lifespan" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        gauge = OPEN_SOCKETS.labels(kind)
        gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            gauge.dec()


class _GroupsCollector(Collector):
    def __init__(self, groups: dict[str, list[GroupInfo] | Exception]) -> None:
        self.groups = groups

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["stream", "group"]
        pending = GaugeMetricFamily(
            "fastredis_group_pending", "Entries delivered to a group, not acked.", labels=labels
        )
        lag = GaugeMetricFamily(
            "fastredis_group_lag", "Entries of the stream a group has not read yet.", labels=labels
        )
        consumers = GaugeMetricFamily(
            "fastredis_group_consumers", "Consumers of a group.", labels=labels
        )
        for sid, groups in self.groups.items():
            if isinstance(groups, Exception):
                continue  # the key went away (or changed type) since the SCAN
            for g in groups:
                pending.add_metric([sid, g.name], g.pending)
                consumers.add_metric([sid, g.name], g.consumers)
                if g.lag is not None:
                    lag.add_metric([sid, g.name], g.lag)
        return [pending, lag, consumers]


async def render(client: AsyncRedis) -> bytes:
    """The Prometheus text of the process's counters and of the consumer groups."""
    text = generate_latest(REGISTRY)
    try:
        sids = await list_sids(client, MAX_GROUP_STREAMS)
        groups = await consumer_groups(client, sids)
    except RedisError as exc:
        redis_error(exc)
        return text  # the counters still tell what happened
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_GroupsCollector(groups))
    return text + generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text format."""
    return Response(await render(request.app.state.redis), media_type=CONTENT_TYPE_LATEST)
