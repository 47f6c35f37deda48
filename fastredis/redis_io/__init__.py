"""redis-py integration: the only code that touches redis-py's insides.

redis-py stays the connection layer (URLs, auth, TLS, unix sockets, pools, retries).
Modules, after redis-py's own ``redis/_parsers/``:

* `parser` / `async_parser`: the fastredis reader as redis-py's parser (sync / asyncio);
* `clients`: `make_client`, `make_async_client` (redis-py clients with those parsers);
* `commands`: building XREAD & co., `blocking_read_timeout`;
* `batch_reads` / `async_batch_reads`: replies parsed straight into a StreamBatch;
* `sockets`: sending prebuilt RESP buffers;
* `held`: connections held across commands (pull reads, pipelined writers and reads);
* `cluster`: Redis Cluster clients and batch reads grouped by slot and node.
"""

from fastredis.redis_io.async_batch_reads import (
    aread_each,
    axautoclaim_batch,
    axclaim_batch,
    axrange_batch,
    axread_batch,
    axreadgroup_batch,
    axrevrange_batch,
)
from fastredis.redis_io.async_cluster_reads import aslot_groups
from fastredis.redis_io.async_parser import AsyncFastParser
from fastredis.redis_io.batch_reads import (
    xautoclaim_batch,
    xclaim_batch,
    xrange_batch,
    xread_batch,
    xreadgroup_batch,
    xrevrange_batch,
)
from fastredis.redis_io.clients import (
    AnyAsyncRedis,
    AnyRedis,
    describe,
    make_async_client,
    make_client,
)
from fastredis.redis_io.cluster import cluster_enabled, is_cluster, slot_groups
from fastredis.redis_io.commands import StreamIds, blocking_read_timeout, xread_command
from fastredis.redis_io.held import HeldConnection, ReadPipeline, blocking_command
from fastredis.redis_io.parser import FastParser
from fastredis.redis_io.sockets import send_buffers

__all__ = [
    "AnyAsyncRedis",
    "AnyRedis",
    "AsyncFastParser",
    "FastParser",
    "HeldConnection",
    "ReadPipeline",
    "StreamIds",
    "aread_each",
    "aslot_groups",
    "axautoclaim_batch",
    "axclaim_batch",
    "axrange_batch",
    "axread_batch",
    "axreadgroup_batch",
    "axrevrange_batch",
    "blocking_command",
    "blocking_read_timeout",
    "cluster_enabled",
    "describe",
    "is_cluster",
    "make_async_client",
    "make_client",
    "send_buffers",
    "slot_groups",
    "xautoclaim_batch",
    "xclaim_batch",
    "xrange_batch",
    "xread_batch",
    "xread_command",
    "xreadgroup_batch",
    "xrevrange_batch",
]
