"""Writing pushed entries to Redis: every message all or none, pipelined.

One entry is one ``XADD sid MAXLEN ~ N <id> d <payload>`` (in `ADD_ONE_LUA`). A
message of several entries runs as one Lua script (`ADD_ENTRIES_LUA`, in
`fastredis.redis_io.stream_scripts`) that first checks everything Redis could
refuse, and only then writes. A producer's message (``producer=``) is one
`fastredis.redis_io.producers.PRODUCE_LUA`: its entries and the producer's count
(and, from the server, the epoch of a stream it creates, as here).

A write that creates a stream also stores its epoch (`fastredis.server.edge.epoch`)
in the same script, so one entry is a small script too (`ADD_ONE_LUA`), not a bare XADD.
To a stream its writer has already written to, one entry goes as a plain ``XADD
NOMKSTREAM`` instead (`existing_stream_command`): Lua copies the payload in and out
(~0.12 ms per 300 KB entry, on every frame's path). Its reply is nil when the stream is
gone (deleted since): the write lane then sends the script instead, which makes it anew
with its epoch.

The commands are sent by the write lanes (`fastredis.server.writes.write_lanes`), a few
pipelined connections shared by every push socket and REST POST.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastredis.ids import parse_add_id
from fastredis.redis_io import is_cluster
from fastredis.redis_io.lua import LuaScript
from fastredis.redis_io.producers import ProducerEntry
from fastredis.redis_io.stream_scripts import ADD_ENTRIES_LUA
from fastredis.server.edge.epoch import epoch_key, new_epoch
from fastredis.server.edge.protocol import CLOSE_INVALID_DATA, CLOSE_POLICY, BadInput

__all__ = [
    "ADD_ENTRIES_LUA",
    "ADD_ONE_LUA",
    "Entry",
    "entry_commands",
    "existing_stream_command",
    "one_slot_key",
    "producer_entries",
]

Entry = tuple[str, str, Any]  # (sid, id or "*", payload buffer)

# KEYS[1]: the stream, KEYS[2]: its epoch key. ARGV: MAXLEN (0: no trimming), id,
# payload, a new epoch (stored when this XADD creates the stream).
ADD_ONE_LUA = r"""
local created = redis.call('EXISTS', KEYS[1]) == 0
local id
if ARGV[1] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2], 'd', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], ARGV[2], 'd', ARGV[3])
end
if created then redis.call('SET', KEYS[2], ARGV[4]) end
return id
"""
_ONE = LuaScript(ADD_ONE_LUA)
_ANY = LuaScript(ADD_ENTRIES_LUA)


def _canonical_id(eid: Any) -> str:
    try:
        parsed = parse_add_id(str(eid))
    except ValueError as exc:
        raise BadInput(f"bad entry id in header: {exc}", CLOSE_INVALID_DATA) from None
    if parsed is None:
        return "*"
    ms, seq = parsed
    return f"{ms}-{'*' if seq is None else seq}"


def entry_commands(entries: Sequence[Entry], maxlen: int) -> list[Any]:
    """The one command that writes `entries` atomically (an EVALSHA, see
    `fastredis.redis_io.lua`; a stream it creates gets its epoch in the same step)."""
    if len(entries) == 1:
        sid, eid, payload = entries[0]
        if eid != "*":
            eid = _canonical_id(eid)
        key = epoch_key(sid)
        if key is None:  # a sid that cannot have an epoch: a bare XADD
            return _xadd(sid, eid, payload, maxlen)
        return _ONE.command(2, sid, key, maxlen, eid, payload, new_epoch())
    keys: dict[str, int] = {}
    argv: list[Any] = [maxlen, new_epoch()]
    for sid, eid, payload in entries:
        index = keys.get(sid)
        if index is None:
            index = keys[sid] = len(keys) + 1
        argv.append(index)
        argv.append(eid if eid == "*" else _canonical_id(eid))
        argv.append(payload)
    return _ANY.command(2 * len(keys), *keys, *(epoch_key(k) or k for k in keys), *argv)


def existing_stream_command(entries: Sequence[Entry], maxlen: int) -> list[Any] | None:
    """A one-entry message to a stream that exists as a plain XADD that creates nothing
    (its reply is nil if the stream is gone: send `entry_commands` then); None for other
    messages, which are written by their script."""
    if len(entries) != 1:
        return None
    sid, eid, payload = entries[0]
    if epoch_key(sid) is None:
        return None  # entry_commands makes it a bare XADD already
    if eid != "*":
        eid = _canonical_id(eid)
    return _xadd(sid, eid, payload, maxlen, b"NOMKSTREAM")


def _xadd(sid: str, eid: str, payload: Any, maxlen: int, *flags: bytes) -> list[Any]:
    """XADD of one entry (field ``d``), trimmed to about `maxlen` (0: not trimmed)."""
    trim = (b"MAXLEN", b"~", maxlen) if maxlen else ()
    return [b"XADD", sid, *flags, *trim, eid, b"d", payload]


def one_slot_key(client: Any, entries: Sequence[Entry]) -> Any:
    """The key that routes `entries` on a cluster: all must be in one slot (one atomic
    write), else BadInput (close 1008 / HTTP 400) and nothing is written."""
    key = entries[0][0]
    if is_cluster(client):
        slots = {client.keyslot(sid) for sid, _eid, _payload in entries}
        if len(slots) > 1:
            names = sorted({str(sid) for sid, _eid, _payload in entries})
            raise BadInput(
                f"one message's entries go to streams in different Redis Cluster slots "
                f"({', '.join(names)}): a message is written atomically, so its streams "
                f"must share a hash tag, as {{cam1}}:rgb and {{cam1}}:depth do",
                CLOSE_POLICY,
            )
    return key


def producer_entries(entries: Sequence[Entry]) -> tuple[list[str], list[ProducerEntry]]:
    """The streams and `ProducerEntry` list of a pushed message, for `produce_command`."""
    if len(entries) == 1:  # the common case, without the grouping
        sid, eid, payload = entries[0]
        return [sid], [(1, eid if eid == "*" else _canonical_id(eid), (b"d", payload))]
    streams: dict[str, int] = {}
    out: list[ProducerEntry] = []
    for sid, eid, payload in entries:
        index = streams.get(sid)
        if index is None:
            index = streams[sid] = len(streams) + 1
        out.append((index, eid if eid == "*" else _canonical_id(eid), (b"d", payload)))
    return list(streams), out
