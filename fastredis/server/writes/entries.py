"""Writing pushed entries to Redis: every message all or none, pipelined.

One entry is one ``XADD sid MAXLEN ~ N <id> d <payload>``, atomic by itself. A
message of several entries runs as one Lua script (`ADD_ENTRIES_LUA`) that first
checks everything Redis could refuse -- a key that is not a stream, an explicit id
not above the stream's last id -- and only then writes. MULTI/EXEC would not do:
Redis does not roll back the commands before one that fails inside EXEC.

A write that creates a stream also stores its epoch (`fastredis.server.edge.epoch`)
in the same script, so one entry is a small script too (`ADD_ONE_LUA`), not a bare XADD.

The commands are sent by the write lanes (`fastredis.server.writes.write_lanes`), a few
pipelined connections shared by every push socket and REST POST.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastredis.ids import parse_add_id
from fastredis.redis_io import is_cluster
from fastredis.server.edge.epoch import epoch_key, new_epoch
from fastredis.server.edge.protocol import CLOSE_INVALID_DATA, CLOSE_POLICY, BadInput

__all__ = ["ADD_ENTRIES_LUA", "ADD_ONE_LUA", "Entry", "entry_commands", "one_slot_key"]

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
_ONE_BYTES = ADD_ONE_LUA.encode()

# KEYS: the distinct streams, then their epoch keys in the same order (a stream's own
# key where it cannot have one). ARGV[1]: MAXLEN
# (0: no trimming), ARGV[2]: a new epoch, then per entry: index into the streams, id
# ("*", "ms-*" or canonical "ms-seq"), payload.
ADD_ENTRIES_LUA = r"""
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function refuse(msg)
  return redis.error_reply(msg .. '; nothing written')
end
local n = #KEYS / 2
local last = {}
for i = 1, n do
  local k = KEYS[i]
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'stream' and t ~= 'none' then
    return refuse('WRONGTYPE key ' .. k .. ' holds a ' .. t .. ', not a stream')
  end
  last[i] = t
end
for j = 3, #ARGV, 3 do
  local i = tonumber(ARGV[j])
  local id = ARGV[j + 1]
  local l = last[i]
  if id == '*' then
    last[i] = 'auto'
  else
    if l == 'auto' then
      return refuse('ERR stream ' .. KEYS[i] ..
        ': an explicit id cannot follow a * id of the same stream in one message')
    elseif l == 'none' then
      l = {'0', '0'}
    elseif l == 'stream' then
      local info = redis.call('XINFO', 'STREAM', KEYS[i])
      for x = 1, #info, 2 do
        if info[x] == 'last-generated-id' then
          local ms, seq = string.match(info[x + 1], '^(%d+)-(%d+)$')
          l = {ms, seq}
        end
      end
    end
    local ms, seq = string.match(id, '^(%d+)-(.+)$')
    local c = cmp(ms, l[1])
    if seq == '*' then
      if c < 0 or (c == 0 and l[2] == '18446744073709551615') then
        return refuse('ERR stream ' .. KEYS[i] .. ': id ' .. id ..
          ' is not above the last id ' .. l[1] .. '-' .. l[2])
      end
      if c > 0 then l = {ms, '0'} else l = {ms, '?'} end
    else
      if c < 0 or (c == 0 and (l[2] == '?' or cmp(seq, l[2]) <= 0)) then
        return refuse('ERR stream ' .. KEYS[i] .. ': id ' .. id ..
          ' is not above the last id ' .. l[1] .. '-' .. l[2])
      end
      l = {ms, seq}
    end
    last[i] = l
  end
end
local ids = {}
local maxlen = ARGV[1]
for i = 1, n do
  if KEYS[n + i] ~= KEYS[i] and redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SET', KEYS[n + i], ARGV[2])
  end
end
for j = 3, #ARGV, 3 do
  local k = KEYS[tonumber(ARGV[j])]
  if maxlen ~= '0' then
    ids[#ids + 1] = redis.call('XADD', k, 'MAXLEN', '~', maxlen, ARGV[j + 1], 'd', ARGV[j + 2])
  else
    ids[#ids + 1] = redis.call('XADD', k, ARGV[j + 1], 'd', ARGV[j + 2])
  end
end
return ids
"""
_LUA_BYTES = ADD_ENTRIES_LUA.encode()


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
    """The one command that writes `entries` atomically (an EVAL; a stream it creates
    gets its epoch in the same step)."""
    if len(entries) == 1:
        sid, eid, payload = entries[0]
        if eid != "*":
            eid = _canonical_id(eid)
        key = epoch_key(sid)
        if key is None:  # a sid that cannot have an epoch: a bare XADD
            if maxlen:
                return [b"XADD", sid, b"MAXLEN", b"~", maxlen, eid, b"d", payload]
            return [b"XADD", sid, eid, b"d", payload]
        return [b"EVAL", _ONE_BYTES, 2, sid, key, maxlen, eid, payload, new_epoch()]
    keys: dict[str, int] = {}
    argv: list[Any] = [maxlen, new_epoch()]
    for sid, eid, payload in entries:
        index = keys.get(sid)
        if index is None:
            index = keys[sid] = len(keys) + 1
        argv.append(index)
        argv.append(eid if eid == "*" else _canonical_id(eid))
        argv.append(payload)
    return [
        b"EVAL", _LUA_BYTES, 2 * len(keys), *keys, *(epoch_key(k) or k for k in keys), *argv
    ]  # fmt: skip


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
