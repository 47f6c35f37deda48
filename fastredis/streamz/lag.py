"""How far behind a consumer group is, per stream: XINFO GROUPS `lag` and `pending`, and the
age of the oldest pending entry (from its id, against the server's clock)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis
import redis.asyncio

from fastredis.ids import parse_id
from fastredis.redis_io import AnyAsyncRedis
from fastredis.streamz.connection import TRANSIENT_ERRORS, as_str, log

__all__ = ["Lag", "group_lag", "watch_lag"]


@dataclass(frozen=True)
class Lag:
    """One stream's backlog for a group."""

    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell)
    pending: int  # delivered, not acknowledged
    oldest_pending_age: float | None  # seconds since the oldest pending entry was added


async def group_lag(client: AnyAsyncRedis, streams: list[str], group: str) -> dict[str, Lag]:
    """The group's Lag on each stream, in one pipelined round trip."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, group)
        replies = await pipe.execute()
    seconds, micros = replies[0]
    now_ms = seconds * 1000 + micros // 1000
    out: dict[str, Lag] = {}
    for i, stream in enumerate(streams):
        groups, summary = replies[1 + 2 * i], replies[2 + 2 * i]
        info = next(
            ({as_str(k): v for k, v in g.items()} for g in groups if as_str(g["name"]) == group),
            {},
        )
        pending = int(summary["pending"])
        age = None
        if pending and summary["min"] is not None:
            age = max(0.0, (now_ms - parse_id(summary["min"])[0]) / 1000)
        lag = info.get("lag")
        out[stream] = Lag(None if lag is None else int(lag), pending, age)
    return out


async def watch_lag(
    client: AnyAsyncRedis, streams: list[str], group: str, threshold: int,
    every: float, what: str,
) -> None:  # fmt: skip
    """Log a warning when a stream's lag (undelivered + pending) passes `threshold`, and
    when it is back below; check every `every` seconds until cancelled."""
    above: set[str] = set()
    while True:
        try:
            lags = await group_lag(client, streams, group)
        except (*TRANSIENT_ERRORS, redis.exceptions.ResponseError):
            lags = {}  # the reading loop reports outages and missing groups
        for stream, lag in lags.items():
            behind = (lag.lag or 0) + lag.pending
            if behind > threshold and stream not in above:
                above.add(stream)
                log.warning(
                    "%s: %r is %d entries behind (lag %s, pending %d; oldest pending %ss), "
                    "past lag_warning=%d",
                    what, stream, behind, lag.lag, lag.pending, lag.oldest_pending_age,
                    threshold,
                )  # fmt: skip
            elif behind <= threshold and stream in above:
                above.discard(stream)
                log.warning("%s: %r is back within lag_warning=%d", what, stream, threshold)
        await asyncio.sleep(every)
