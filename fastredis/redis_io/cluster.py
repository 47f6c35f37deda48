"""Redis Cluster: redis-py cluster clients with the fastredis parser on every node
connection, and what the sync and asyncio cluster reads share.

A multi-stream read is split by slot (Redis refuses one command over several slots
with CROSSSLOT, even on one node): one command per slot (streams sharing a hash tag,
``{cam1}:rgb`` / ``{cam1}:depth``, share a slot and so one command). The commands for
one node are pipelined on one connection, the nodes read concurrently, and the replies
merged into one StreamBatch (each stream's entries come from one node, in id order).
A blocking read over several slots blocks on all of them at once, one connection
each; the first reply ends the wait and the others are woken with CLIENT UNBLOCK
(their replies, entries or not, are merged too: an XREADGROUP's delivered entries are
never dropped). MOVED patches the slot map, ASK is followed with ASKING, and a lost
node, CLUSTERDOWN or TRYAGAIN refreshes the topology and retries for up to
`FAILOVER_WAIT` seconds.

Internals relied on: redis-py's `NodesManager` (`get_node_from_slot`, `get_node`,
`move_slot`, `initialize`), the sync cluster's per-node `Redis` clients, the asyncio
`ClusterNode.acquire_connection`/`release`, `Connection._sock` and `_parser`.
"""

from __future__ import annotations

import codecs
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
import redis.asyncio
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import REDIS_ALLOWED_KEYS, RedisCluster

from fastredis._frames import pack_commands
from fastredis._resp import READ, StreamBatch, join_read_batches
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.bounded_cluster import BoundedRedisCluster
from fastredis.redis_io.commands import StreamIds
from fastredis.redis_io.parser import FastParser

__all__ = [
    "FAILOVER_WAIT",
    "AsyncRedisCluster",
    "Call",
    "RedisCluster",
    "cluster_enabled",
    "is_cluster",
    "lanes",
    "make_async_cluster_client",
    "make_cluster_client",
    "mark_stale",
    "merge_read_batches",
    "next_round",
    "pack_lane",
    "reroute",
    "slot_groups",
]

# How long a read keeps retrying through a failover (node lost, CLUSTERDOWN, TRYAGAIN).
FAILOVER_WAIT = 15.0
RETRY_PAUSE = 0.1
RETRIABLE = (
    rexc.MovedError,
    rexc.AskError,
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
    rexc.SlotNotCoveredError,
)
_PROBE_KEYS = set(REDIS_ALLOWED_KEYS) - {
    "connection_class", "connection_pool", "connection_pool_class", "redis_connect_func",
    "retry", "cache", "cache_config", "maint_notifications_config",
} | {"ssl_min_version", "ssl_ciphers", "unix_socket_path", "path"}  # fmt: skip
Build = Callable[[StreamIds], list[Any]]


def is_cluster(client: Any) -> bool:
    """Whether `client` is a redis-py cluster client (sync or asyncio)."""
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def mark_stale(client: Any) -> None:
    """Cluster: reload the slot map before the next routed command (no-op otherwise)."""
    if isinstance(client, AsyncRedisCluster):
        client._initialize = True


def cluster_enabled(client_params: Mapping[str, Any] | None = None, url: str | None = None) -> bool:
    """Whether the server at `url` / `client_params` runs in cluster mode
    (``INFO cluster`` says ``cluster_enabled:1``); False when it cannot be asked."""
    # connection settings only: a pool, an (asyncio) Retry or hooks are not the probe's
    params = {k: v for k, v in (client_params or {}).items() if k in _PROBE_KEYS}
    params = {"socket_connect_timeout": 5, "socket_timeout": 5, **params}
    try:
        probe = redis.Redis.from_url(url, **params) if url else redis.Redis(**params)
        with probe:
            return bool(probe.info("cluster").get("cluster_enabled"))
    except (rexc.RedisError, OSError, TypeError, ValueError):
        return False


class _FastPool(redis.ConnectionPool):
    """A node's connection pool whose connections use the fastredis parser."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["parser_class"] = FastParser
        super().__init__(**kwargs)


def make_cluster_client(
    client_params: Mapping[str, Any] | None = None, url: str | None = None
) -> RedisCluster:
    """A redis-py RedisCluster whose node connections use the fastredis parser;
    `client_params` go to redis-py unchanged (`host`/`port` name a startup node)."""
    params = dict(client_params or {})
    if url is None:  # node pools take connection_pool_class on the URL path only
        scheme = "rediss" if params.pop("ssl", False) else "redis"
        url = f"{scheme}://{params.pop('host', 'localhost')}:{params.pop('port', 6379)}"
    return RedisCluster.from_url(url, connection_pool_class=_FastPool, **params)


def make_async_cluster_client(
    client_params: Mapping[str, Any] | None = None,
    url: str | None = None,
    requests: int | None = None,
    wait: float | None = None,
) -> AsyncRedisCluster:
    """A redis.asyncio RedisCluster whose node connections use the fastredis parser.

    `requests`: at most that many commands and pipelines run at once, and a caller
    waits up to `wait` s (None: forever) for its turn (`BoundedRedisCluster`)."""
    params = dict(client_params or {})
    cls = AsyncRedisCluster if requests is None else BoundedRedisCluster
    client = cls.from_url(url, **params) if url else cls(**params)
    if isinstance(client, BoundedRedisCluster) and requests is not None:
        client.bound(requests, wait)
    # Every node is made from these kwargs (the NodesManager shares the dict); the
    # startup nodes already copied them. No connection exists before the first command.
    client.connection_kwargs["parser_class"] = AsyncFastParser
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_kwargs["parser_class"] = AsyncFastParser
    return client


# -- grouping and merging -------------------------------------------------------------


def slot_groups(client: Any, streams: StreamIds) -> list[tuple[Any, dict[Any, Any]]]:
    """`streams` split by slot, each group with the primary serving it (first-seen order)."""
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError("streams must be a non-empty mapping of stream name -> id")
    manager = client.nodes_manager
    groups: dict[int, tuple[Any, dict[Any, Any]]] = {}
    for name, start in streams.items():
        slot = client.keyslot(name)
        if slot not in groups:
            groups[slot] = (manager.get_node_from_slot(slot), {})
        groups[slot][1][name] = start
    return list(groups.values())


def _read_header(buf: bytes) -> tuple[bytes, int, int]:
    """(type byte, element count, header length) of an XREAD reply buffer."""
    end = buf.index(b"\r\n")
    return buf[:1], int(buf[1:end]), end + 2


def merge_read_batches(batches: list[StreamBatch], encoding: str | None) -> StreamBatch:
    """XREAD/XREADGROUP batches of disjoint streams as one batch (streams in order):
    their bytes copied once behind one header, their offsets moved (no parsing)."""
    parts = [b for b in batches if b.buf[:1] in (b"*", b"%") and b.buf[1:2] != b"-"]
    if len(parts) <= 1:
        return parts[0] if parts else batches[0]
    kind, total, starts = b"", 0, []
    for batch in parts:
        kind, count, start = _read_header(batch.buf)
        total += count
        starts.append(start)
    return join_read_batches(kind + b"%d\r\n" % total, parts, starts)


# -- one round of commands, and the next ----------------------------------------------


PENDING: Any = object()  # a call's outcome before its reply


class Call:
    """One command for one slot's streams (`streams`, kept for retries) on `node`."""

    __slots__ = ("args", "asking", "client_id", "node", "outcome", "streams")

    def __init__(self, node: Any, streams: dict[Any, Any], args: list[Any], asking: bool) -> None:
        self.node, self.streams, self.args, self.asking = node, streams, args, asking
        self.client_id: int | None = None
        self.outcome: Any = PENDING


def calls_for(client: Any, build: Build, streams: StreamIds) -> list[Call]:
    return [Call(node, group, build(group), False) for node, group in slot_groups(client, streams)]


def lanes(calls: list[Call], block: int | None) -> list[list[Call]]:
    """Calls sharing a connection: a node's calls pipelined on one, except blocking calls
    over several slots, which block side by side on a connection each."""
    if block is not None and len(calls) > 1:
        return [[call] for call in calls]
    by_node: dict[str, list[Call]] = {}
    for call in calls:
        by_node.setdefault(call.node.name, []).append(call)
    return list(by_node.values())


def lane_commands(lane: list[Call], want_id: bool) -> list[tuple[Any, ...]]:
    """What a lane sends: per call, ASKING if redirected, CLIENT ID if it may need
    waking, then the command."""
    commands: list[tuple[Any, ...]] = []
    for call in lane:
        if call.asking:
            commands.append(("ASKING",))
        if want_id:
            commands.append(("CLIENT", "ID"))
        commands.append(tuple(call.args))
    return commands


@functools.lru_cache(maxsize=16)
def _is_utf8(encoding: str) -> bool:
    """Whether `encoding` names UTF-8 (looked up once per name, not per lane)."""
    return codecs.lookup(encoding).name == "utf-8"


def pack_lane(conn: Any, lane: list[Call], want_id: bool) -> list[Any]:
    """What a lane sends, packed for `conn.send_packed_command`: by the Cython packer
    (the same bytes, ~30x less CPU than redis-py's Python one) when the connection
    encodes str as strict UTF-8, as by default; by redis-py's otherwise."""
    commands = lane_commands(lane, want_id)
    encoder = conn.encoder
    if encoder.encoding_errors != "strict" or not _is_utf8(encoder.encoding):
        return list(conn.pack_commands(commands))
    try:
        return pack_commands(commands)
    except TypeError as error:  # an argument of another type: redis-py's error
        raise rexc.DataError(str(error)) from error


def check_parser(conn: Any, parser: type) -> None:
    if not isinstance(conn._parser, parser):
        raise TypeError(
            "cluster batch reads need a client made by fastredis.redis_io "
            "(make_client / make_async_client)"
        )


def next_round(
    client: Any,
    calls: list[Call],
    done: list[Any],
    deadline: float,
    errors_answer: bool = False,
) -> tuple[list[Call], list[rexc.MovedError], bool]:
    """After a round: replies go to `done` (with `errors_answer`, so does an error reply
    that is neither a redirect nor an outage: it answers its command); returns (the
    calls to make again, those redirected by ASK with their node set, the others with
    none; the MOVED errors to patch the slot map with; whether to refresh the topology
    first). `reroute` then sends the others to their slots' nodes. Other errors, or any
    error past `deadline`, raise."""
    again: list[Call] = []
    moved: list[rexc.MovedError] = []
    refresh = False
    for call in calls:
        error = call.outcome
        retriable = isinstance(error, RETRIABLE)
        if not isinstance(error, BaseException) or (
            errors_answer and not retriable and isinstance(error, rexc.ResponseError)
        ):
            done.append(error)
            continue
        if not retriable or time.monotonic() > deadline:
            raise error
        again.append(call)
        call.client_id = None  # the new round's connection tells its own
        node = None
        if isinstance(error, rexc.AskError):
            node = client.nodes_manager.get_node(error.host, error.port)
        call.node, call.asking = node, node is not None
        if node is not None:
            continue
        if isinstance(error, rexc.MovedError):
            moved.append(error)
        else:
            refresh = True
    return again, moved, refresh


def reroute(client: Any, calls: list[Call]) -> None:
    """Send the calls that have no node (after MOVED or a lost node) to the node
    serving their slot now (all of a call's streams share it)."""
    manager = client.nodes_manager
    for call in calls:
        if call.node is None:
            call.node = manager.get_node_from_slot(client.keyslot(next(iter(call.streams))))


def finish(done: list[Any], kind: int | None, encoding: str | None) -> Any:
    """The answer: READ batches merged, another batch as it is, plain replies as a list."""
    if kind is None:
        return done
    return merge_read_batches(done, encoding) if kind == READ else done[0]


def settled(calls: list[Call], done: list[StreamBatch], block: int | None) -> bool:
    """Whether to answer now: nothing to retry, or a blocking read already got entries
    (the failed slots are read again by the next call)."""
    return not calls or (
        block is not None
        and any(len(b) if isinstance(b, StreamBatch) else b is not None for b in done)
    )
