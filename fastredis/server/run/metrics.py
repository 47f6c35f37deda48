"""Prometheus metrics of the server (``GET /metrics``): the counters, and the small
functions the endpoints call to move them.

The counters are plain numbers of the process (`COUNTS`), read by a collector in
prometheus-client's registry (with its process and Python collectors), so every app
of one process adds to the same ones; with ``--workers N`` each worker answers for
itself. Consumer groups are read from Redis
at scrape time (XINFO GROUPS of at most `MAX_GROUP_STREAMS` stream keys).

* ``fastredis_open_sockets{kind}``: push, pull, graphql, foxglove (websockets), mjpeg and sse;
* ``fastredis_entries_pushed_total{via}``, ``fastredis_pushed_bytes_total{via}``:
  entries Redis confirmed writing (ws, rest), and their payload bytes;
* ``fastredis_entries_pulled_total{via}``, ``fastredis_pulled_bytes_total{via}``:
  entries sent to clients (ws, rest, graphql, mjpeg), and their payload bytes;
* ``fastredis_push_latency_seconds``: from a pushed message (or POST) being queued to Redis
  confirming its write;
* ``fastredis_frames_dropped_total{via,reason}``: entries a viewer never got because
  of ``latest`` or ``max_fps``;
* ``fastredis_redis_errors_total{kind}``: Redis failures (unavailable, refused,
  other) that reached a client;
* ``fastredis_stream_reads_total{kind}``: the hub's stream reads: ``tail`` (one read
  shared by the subscribers at the tail), ``catch_up`` (a subscriber behind, by its
  cursor), ``shared`` (a catch-up read taken from another subscriber's, no Redis
  read) and ``spliced`` (a pull's catch-up by splice, one entry a read:
  `fastredis.server.reads.splice_pump`): with many viewers, reads per pushed entry
  show what the sharing saves;
* ``fastredis_group_pending{stream,group}``, ``fastredis_group_lag{stream,group}``,
  ``fastredis_group_consumers{stream,group}``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from fastredis._frames import values_nbytes
from fastredis._resp import StreamBatch
from fastredis.redis_io import AnyAsyncRedis
from fastredis.server.reads.stream_info import GroupInfo, consumer_groups, list_sids

__all__ = [
    "MetricsMiddleware",
    "dropped",
    "metrics_endpoint",
    "payload_bytes",
    "pulled",
    "pushed",
    "redis_error",
    "stream_read",
]

MAX_GROUP_STREAMS = 1000  # stream keys whose groups one scrape reports (sorted by name)
SOCKET_KINDS = ("push", "pull", "graphql", "mjpeg", "sse", "foxglove")
STREAM_READ_KINDS = ("tail", "catch_up", "shared", "spliced")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _Counts:
    """The numbers, as plain ints and floats that the event loop adds to, read by the
    collector at scrape time. prometheus-client's own Counter and Histogram take a
    lock per change (~10 us a pushed message here under load, most of it
    ``.labels()`` and the histogram); one thread moves these, so none is needed."""

    def __init__(self) -> None:
        self.sockets: Counter[str] = Counter(dict.fromkeys(SOCKET_KINDS, 0))
        self.pushed: dict[str, list[int]] = {"ws": [0, 0], "rest": [0, 0]}  # entries, bytes
        self.pulled: dict[str, list[int]] = {
            v: [0, 0] for v in ("ws", "rest", "graphql", "mjpeg", "sse", "foxglove")
        }
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last is +Inf
        self.latency_sum = 0.0
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.redis_errors: Counter[str] = Counter()
        self.stream_reads: Counter[str] = Counter(dict.fromkeys(STREAM_READ_KINDS, 0))


COUNTS = _Counts()


def payload_bytes(batch: StreamBatch) -> int:
    """The bytes of every field value of `batch` (its payloads)."""
    return values_nbytes(batch) if len(batch) else 0  # no numpy per batch: ~14 us per call


def pushed(via: str, entries: int, nbytes: int, seconds: float | None = None) -> None:
    """Redis confirmed writing `entries` (`nbytes` of payload), `seconds` after queueing."""
    totals = COUNTS.pushed[via]
    totals[0] += entries
    totals[1] += nbytes
    if seconds is not None:
        COUNTS.latency[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        COUNTS.latency_sum += seconds


def pulled(via: str, entries: int, nbytes: int) -> None:
    """`entries` (`nbytes` of payload) are being sent to a client over `via`."""
    if entries:
        totals = COUNTS.pulled[via]
        totals[0] += entries
        totals[1] += nbytes


def dropped(via: str, reason: str, entries: int = 1) -> None:
    """A viewer skipped `entries` because of `reason` ("latest" or "max_fps")."""
    if entries > 0:
        COUNTS.dropped[via, reason] += entries


def stream_read(kind: str, n: int = 1) -> None:
    """The hub made (or, ``shared``, took) `n` stream reads of `kind`
    (`STREAM_READ_KINDS`; ``spliced``: a splice pump's)."""
    COUNTS.stream_reads[kind] += n


def redis_error(exc: RedisError) -> None:
    """A Redis failure reached a client."""
    if isinstance(exc, ResponseError):
        kind = "refused"
    elif isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        kind = "unavailable"
    else:
        kind = "other"
    COUNTS.redis_errors[kind] += 1


class _CountsCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        c = COUNTS
        sockets = GaugeMetricFamily(
            "fastredis_open_sockets", "Open sockets by kind.", labels=["kind"]
        )
        for kind, n in c.sockets.items():
            sockets.add_metric([kind], n)
        yield sockets
        for name, doc, table in (
            ("entries_pushed", "Entries written to Redis.", c.pushed),
            ("entries_pulled", "Entries sent to clients.", c.pulled),
        ):
            entries = CounterMetricFamily(f"fastredis_{name}", doc, labels=["via"])
            nbytes = CounterMetricFamily(
                f"fastredis_{name.split('_')[1]}_bytes", f"Payload bytes of the e{doc[1:]}",
                labels=["via"],
            )  # fmt: skip
            for via, (n, b) in table.items():
                entries.add_metric([via], n)
                nbytes.add_metric([via], b)
            yield entries
            yield nbytes
        cumulative, buckets = 0, []
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), c.latency, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "fastredis_push_latency_seconds",
            "From a pushed message being queued to Redis confirming its write.",
            buckets=buckets,
            sum_value=c.latency_sum,
        )
        drops = CounterMetricFamily(
            "fastredis_frames_dropped",
            "Entries a viewer skipped because of latest or max_fps.",
            labels=["via", "reason"],
        )
        for (via, reason), n in sorted(c.dropped.items()):
            drops.add_metric([via, reason], n)
        yield drops
        errors = CounterMetricFamily(
            "fastredis_redis_errors", "Redis failures met by requests.", labels=["kind"]
        )
        for kind, n in sorted(c.redis_errors.items()):
            errors.add_metric([kind], n)
        yield errors
        reads = CounterMetricFamily(
            "fastredis_stream_reads", "Stream reads of the shared-read hub.", labels=["kind"]
        )
        for kind, n in c.stream_reads.items():
            reads.add_metric([kind], n)
        yield reads


REGISTRY.register(_CountsCollector())


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
        elif path.rstrip("/") == "/foxglove":
            return "foxglove"
    elif scope["type"] == "http" and path.startswith("/mjpeg/"):
        return "mjpeg"
    elif scope["type"] == "http" and path.startswith("/sse/"):
        return "sse"
    return None


class MetricsMiddleware:
    """Counts the open sockets by kind and refuses those past `max_sockets` (an ASGI
    wrapper: nothing per message)."""

    def __init__(self, app: ASGIApp, max_sockets: int) -> None:
        self.app = app
        self.max_sockets = max_sockets
        self.open = 0  # this app's own, whatever other apps of the process hold

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = socket_kind(scope) if scope["type"] != "lifespan" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        if self.open >= self.max_sockets:
            await _refuse_socket(scope, receive, send, self.max_sockets)
            return
        self.open += 1
        sockets = COUNTS.sockets
        sockets[kind] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            sockets[kind] -= 1
            self.open -= 1


async def _refuse_socket(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """A websocket past the limit is accepted and closed with 1013 (try again later), so
    the client learns why; an MJPEG request gets 503."""
    reason = f"the server holds its limit of {limit} open sockets (max_sockets); try again later"
    if scope["type"] == "websocket":
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1013, "reason": reason})
        return
    await JSONResponse({"error": reason}, status_code=503)(scope, receive, send)


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


async def render(client: AnyAsyncRedis) -> bytes:
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
