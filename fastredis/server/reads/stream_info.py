"""What Redis says about streams, for GraphQL, the metrics and the pages: the stream keys
(SCAN TYPE stream) and their consumer groups (XINFO GROUPS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastredis.redis_io import AnyAsyncRedis, aread_each

__all__ = [
    "GroupInfo",
    "consumer_groups",
    "first_sids",
    "list_sids",
    "pairs",
    "stream_infos",
    "text",
]


def text(value: Any) -> str | None:
    """A reply value as str (bytes decoded as UTF-8); None stays None."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def pairs(reply: Any) -> dict[str, Any]:
    """An XINFO reply (RESP2 flat list or RESP3 map) as a dict with str keys."""
    if isinstance(reply, dict):
        return {str(text(k)): v for k, v in reply.items()}
    it = iter(reply)
    return {str(text(k)): v for k, v in zip(it, it, strict=False)}


async def list_sids(client: AnyAsyncRedis, limit: int | None = None) -> list[str]:
    """Every stream key (SCAN TYPE stream), sorted; the first `limit` of them when given."""
    keys = {text(k) async for k in client.scan_iter(count=1000, _type="stream")}
    sids = sorted(k for k in keys if k is not None)
    return sids if limit is None else sids[:limit]


async def first_sids(client: AnyAsyncRedis, limit: int) -> list[str]:
    """At most `limit` stream keys (SCAN TYPE stream, stopping once it has them), sorted."""
    found: set[str] = set()
    async for key in client.scan_iter(count=1000, _type="stream"):
        found.add(str(text(key)))
        if len(found) >= limit:
            break
    return sorted(found)


async def stream_infos(
    client: AnyAsyncRedis, sids: Sequence[str]
) -> dict[str, dict[str, Any] | None]:
    """XINFO STREAM of each stream (None: no such key), in one round trip."""
    # "XINFO", "STREAM" as two words: the raw reply, not redis-py's reshaped one
    replies = await aread_each(client, [(sid, ["XINFO", "STREAM", sid]) for sid in sids])
    return {
        sid: None if isinstance(reply, Exception) else pairs(reply)
        for sid, reply in zip(sids, replies, strict=True)
    }


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group of a stream (XINFO GROUPS). `lag` is None when Redis cannot
    tell (before 7.0, or after entries were deleted in the group's range)."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None

    @classmethod
    def from_reply(cls, reply: Any) -> GroupInfo:
        d = pairs(reply)
        entries_read, lag = d.get("entries-read"), d.get("lag")
        return cls(
            name=str(text(d.get("name"))),
            consumers=int(d.get("consumers") or 0),
            pending=int(d.get("pending") or 0),
            last_delivered_id=str(text(d.get("last-delivered-id"))),
            entries_read=None if entries_read is None else int(entries_read),
            lag=None if lag is None else int(lag),
        )


async def consumer_groups(
    client: AnyAsyncRedis, sids: Sequence[str]
) -> dict[str, list[GroupInfo] | Exception]:
    """The consumer groups of each stream, in one round trip; a key that is missing or
    not a stream maps to Redis's error."""
    if not sids:
        return {}
    # "XINFO", "GROUPS" as two words: the raw reply, not redis-py's reshaped one
    replies = await aread_each(client, [(sid, ["XINFO", "GROUPS", sid]) for sid in sids])
    out: dict[str, list[GroupInfo] | Exception] = {}
    for sid, reply in zip(sids, replies, strict=True):
        out[sid] = (
            reply if isinstance(reply, Exception) else [GroupInfo.from_reply(g) for g in reply]
        )
    return out
