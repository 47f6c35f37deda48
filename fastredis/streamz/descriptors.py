"""Descriptor mode of a consumer group (for Dask): the source delivers entries to itself
without fetching them, and emits a ``Descriptor`` per stream and read, an id range. Whoever
processes it (a Dask worker) fetches the range with ``fetch()``: one XRANGE, parsed into a
StreamBatch where it runs. The source keeps the ids and acknowledges them, by reference
counting, once the descriptor's result is through the pipeline.

The model is streamz's ``from_kafka_batched(dask=True)``, which emits offset ranges.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastredis._batch import StreamBatch
from fastredis.redis_io import AnyRedis, make_client, xrange_batch

__all__ = [
    "READ_IDS_SCRIPT",
    "Descriptor",
    "DescriptorRead",
    "client_for",
    "fetch",
    "fetch_arrow",
]

# KEYS[1] a stream; ARGV group, consumer, count. XREADGROUP '>' inside the script, so the
# entries are delivered (pending at the consumer) but only their ids leave Redis, with the
# stream's last id (to block on when there was nothing new). The entries of one
# XREADGROUP '>' are consecutive: [first, last] holds exactly them.
READ_IDS_SCRIPT = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                     'STREAMS', KEYS[1], '>')
local ids = {}
if r then
  for j, e in ipairs(r[1][2]) do ids[j] = e[1] end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {ids, last[1] and last[1][1] or '0-0'}
"""


@dataclass(frozen=True)
class Descriptor:
    """The entries ``first``..``last`` (``count`` of them) of ``stream``, and where to
    fetch them. Small and picklable: this is what goes to a worker."""

    stream: str
    first: str
    last: str
    count: int
    url: str | None = None
    client_params: Mapping[str, Any] = field(default_factory=dict)
    encoding: str | None = "utf-8"


class DescriptorRead(list[tuple[Descriptor, list[str]]]):
    """One descriptor-mode read: (Descriptor, ids) per stream; len() counts entries."""

    def __len__(self) -> int:
        return sum(d.count for d, _ in self)


_clients: dict[Any, AnyRedis] = {}
_lock = threading.Lock()


def client_for(d: Descriptor) -> AnyRedis:
    """One client per process and server (workers fetch many descriptors)."""
    key = (d.url, tuple(sorted((k, repr(v)) for k, v in d.client_params.items())))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make_client(dict(d.client_params), url=d.url)
        return client


def fetch(x: Any) -> Any:
    """A Descriptor's entries as a StreamBatch (one XRANGE); anything else (the entries a
    group replays or claims, already fetched) is returned as it is. Either way: a sequence
    of (stream, id, data) entries."""
    if not isinstance(x, Descriptor):
        return x
    client = client_for(x)
    return xrange_batch(client, x.stream, x.first, x.last, count=x.count, encoding=x.encoding)


def fetch_arrow(x: Any, fields: Iterable[str | bytes] | None = None) -> Any:
    """``fetch(x)`` as a ``pyarrow.RecordBatch`` (fastredis.columnar.to_arrow), made where
    it runs: a Descriptor's reply is viewed (no payload copied on the worker), with its
    stream named; entries replayed or claimed (Messages) are copied into the same
    columns. ``fields``: the field columns, the same for every batch (else each
    batch has the fields its entries have). Process it where it is made: Arrow
    serializes each view column with the whole reply it views."""
    from fastredis.columnar import messages_to_arrow, to_arrow

    got = fetch(x)
    if isinstance(x, Descriptor):
        return to_arrow(got, fields=fields, stream=x.stream)
    if isinstance(got, StreamBatch):
        return to_arrow(got, fields=fields)
    text = bool(got) and isinstance(got[0][1], str)
    return messages_to_arrow(got, text=text, fields=fields)
