"""Lua that writes stream entries all or none, shared by the server and the streamz sinks.

Redis does not roll back the commands of a MULTI/EXEC before one that fails, so a
message of several entries is one script: `CHECK_IDS_LUA` first checks everything
Redis could refuse (a key that is not a stream, an explicit id not above the
stream's last id), and only then are the entries written.

* `ADD_ENTRIES_LUA`: a message of ``d``-field entries (the server's push and POST),
  storing the epoch of each stream it creates;
* `fastredis.redis_io.producers.PRODUCE_LUA`: the same, plus a producer's count.
"""

from __future__ import annotations

__all__ = ["ADD_ENTRIES_LUA", "CHECK_IDS_LUA"]

# Defines refuse(msg) and check_ids(keys, entries), entries = {{key index, id}, ...}
# with id "*", "ms-*" or canonical "ms-seq": nil when every entry can be written in
# order, else the error reply (nothing is written by then).
CHECK_IDS_LUA = r"""
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local function refuse(msg)
  return redis.error_reply(msg .. '; nothing written')
end
local function check_ids(keys, entries)
  local last = {}
  for i, k in ipairs(keys) do
    local t = redis.call('TYPE', k)['ok']
    if t ~= 'stream' and t ~= 'none' then
      return refuse('WRONGTYPE key ' .. k .. ' holds a ' .. t .. ', not a stream')
    end
    last[i] = t
  end
  for _, e in ipairs(entries) do
    local i, id = e[1], e[2]
    local l = last[i]
    if id == '*' then
      last[i] = 'auto'
    else
      if l == 'auto' then
        return refuse('ERR stream ' .. keys[i] ..
          ': an explicit id cannot follow a * id of the same stream in one message')
      elseif l == 'none' then
        l = {'0', '0'}
      elseif l == 'stream' then
        local info = redis.call('XINFO', 'STREAM', keys[i])
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
          return refuse('ERR stream ' .. keys[i] .. ': id ' .. id ..
            ' is not above the last id ' .. l[1] .. '-' .. l[2])
        end
        if c > 0 then l = {ms, '0'} else l = {ms, '?'} end
      else
        if c < 0 or (c == 0 and (l[2] == '?' or cmp(seq, l[2]) <= 0)) then
          return refuse('ERR stream ' .. keys[i] .. ': id ' .. id ..
            ' is not above the last id ' .. l[1] .. '-' .. l[2])
        end
        l = {ms, seq}
      end
      last[i] = l
    end
  end
  return nil
end
"""

# KEYS: the n distinct streams, then their epoch keys in the same order (a stream's
# own key where it cannot have one). ARGV[1]: MAXLEN (0: no trimming), ARGV[2]: a new
# epoch, stored for each stream this message creates; then per entry: index into the
# streams, id ("*", "ms-*" or canonical "ms-seq"), payload (field "d").
ADD_ENTRIES_LUA = (
    CHECK_IDS_LUA
    + r"""
local n = #KEYS / 2
local streams, entries = {}, {}
for i = 1, n do streams[i] = KEYS[i] end
for j = 3, #ARGV, 3 do
  entries[#entries + 1] = {tonumber(ARGV[j]), ARGV[j + 1]}
end
local bad = check_ids(streams, entries)
if bad then return bad end
for i = 1, n do
  if KEYS[n + i] ~= KEYS[i] and redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SET', KEYS[n + i], ARGV[2])
  end
end
local ids = {}
local maxlen = ARGV[1]
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
)
