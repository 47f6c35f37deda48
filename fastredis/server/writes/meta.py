"""Stream metadata: JSON text at ``XMETA:{sid}``, never written over other data.

A sid that starts with ``XMETA:`` names a metadata key, so it is refused as a
stream everywhere (push, pull, REST, GraphQL). Setting or deleting metadata is one
Lua script that first checks the key holds a string (or nothing): a stream, list or
hash that happens to have that name stays untouched. Metadata is at most
`MAX_META_BYTES` of JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from redis.exceptions import ResponseError

from fastredis.redis_io import AnyAsyncRedis

__all__ = [
    "MAX_META_BYTES",
    "META_PREFIX",
    "MetaError",
    "delete_meta",
    "is_meta_key",
    "meta_key",
    "set_meta",
]

META_PREFIX = "XMETA:"
MAX_META_BYTES = 64 * 1024

# KEYS[1]: the metadata key; ARGV[1]: the JSON to store, or nothing to delete.
_SET_META_LUA = r"""
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. t)
end
if #ARGV == 0 then
  return redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


_WRONGTYPE = re.compile(r"WRONGTYPE (\w+)")


class MetaError(ValueError):
    """Metadata that cannot be stored; the message says why."""


def is_meta_key(sid: str) -> bool:
    return sid.startswith(META_PREFIX)


def meta_key(sid: str) -> str:
    """The metadata key of stream `sid` (refusing sids that are metadata keys)."""
    if is_meta_key(sid):
        raise MetaError(
            f"{sid!r} is a metadata key ({META_PREFIX}...), not a stream: "
            f"stream ids may not start with {META_PREFIX}"
        )
    return META_PREFIX + sid


async def set_meta(client: AnyAsyncRedis, sid: str, meta: Any) -> None:
    """Store `meta` (JSON-serialisable) for `sid`, unless its key holds other data."""
    key = meta_key(sid)
    text = json.dumps(meta, separators=(",", ":"))
    if len(text.encode()) > MAX_META_BYTES:
        raise MetaError(
            f"metadata of {len(text.encode())} bytes (as JSON) is over the limit of "
            f"{MAX_META_BYTES}"
        )
    await _run(client, key, text)


async def delete_meta(client: AnyAsyncRedis, sid: str) -> None:
    """Delete the metadata of `sid`, unless its key holds other data."""
    await _run(client, meta_key(sid))


async def _run(client: AnyAsyncRedis, key: str, *args: str) -> None:
    try:
        await client.eval(_SET_META_LUA, 1, key, *args)
    except ResponseError as exc:
        found = _WRONGTYPE.match(str(exc))
        if found is None:
            raise
        raise MetaError(
            f"{key!r} holds a {found.group(1)}, not metadata: it was left untouched"
        ) from None
