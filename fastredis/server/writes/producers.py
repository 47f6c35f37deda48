"""A push socket's producer (``producer=ID``): its count, and each message's write.

The socket first tells the client how many of its messages are committed to the
stream set (``{"producer": ID, "committed": N, "recent": {...}}``); the k-th message
after that is the producer's message N+k. `recent` holds the ids of the last few
committed messages (the numbers as strings), so a client that lost an ack learns them.
The table and its script live in `fastredis.redis_io.producers` (the streamz sink
uses them too). Like every write of the server, a message that creates a stream
stores its epoch in the same step (`fastredis.server.edge.epoch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastredis.redis_io import AnyAsyncRedis, aread_each, is_cluster
from fastredis.redis_io.producers import (
    hash_tag,
    one_entry_head,
    parse_state,
    produce_command,
    produce_one,
    producer_keys,
    ttl_ms,
)
from fastredis.server.edge.epoch import epoch_key, new_epoch
from fastredis.server.edge.protocol import BadInput
from fastredis.server.writes.entries import Entry, producer_entries

__all__ = ["ProducerSession"]


class ProducerSession:
    """One push socket's producer: numbers its messages and builds their writes."""

    def __init__(self, sids: Sequence[str], producer: str, ttl: float) -> None:
        self.producer = producer
        self.keys = producer_keys(sids, producer)
        self.ttl = ttl
        self.next_seq = 1
        self.epoch = new_epoch()  # a stream a message creates gets "<epoch>-<number>"
        self._ttl_ms = ttl_ms(ttl)
        # the path's streams: a one-entry message to one of them is the common write
        self._heads = {s: one_entry_head(self.keys, s, epoch_key(s) or s) for s in sids}

    @classmethod
    async def open(
        cls, client: AnyAsyncRedis, sids: Sequence[str], producer: str, ttl: float
    ) -> tuple[ProducerSession, dict[str, Any]]:
        """The session and the hello frame to send, from the state in Redis."""
        braces = "{" in sids[0] or "}" in sids[0]
        if is_cluster(client) and braces and hash_tag(sids[0]) == sids[0]:
            raise BadInput(
                f"producer= on a Redis Cluster needs stream {sids[0]!r} to have a hash tag "
                "or no braces (its producer count is kept in its slot)"
            )
        session = cls(sids, producer, ttl)
        key = session.keys[0]
        # on a cluster, waits out a failover as the pulls' state reads do
        [state] = await aread_each(client, [(key, ["GET", key])])
        if isinstance(state, Exception):
            raise state
        committed, recent = parse_state(state)
        session.next_seq = committed + 1
        hello = {
            "producer": producer,
            "committed": committed,
            "recent": {str(k): v for k, v in sorted(recent.items())},
        }
        return session, hello

    def command(self, entries: Sequence[Entry], maxlen: int) -> list[Any]:
        """The write of the next message: its entries and the count, in one step."""
        seq = self.next_seq
        self.next_seq += 1
        if len(entries) == 1:
            sid, eid, payload = entries[0]
            head = self._heads.get(sid)
            if head is not None and eid == "*":
                epoch, ttl = self.epoch, self._ttl_ms
                return produce_one(head, seq, ttl, "~", maxlen, epoch, "*", b"d", payload)
        streams, items = producer_entries(entries)
        epochs = ([epoch_key(s) or s for s in streams], self.epoch)
        return produce_command(self.keys, streams, seq, items, self.ttl, maxlen, True, epochs)
