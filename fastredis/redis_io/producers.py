"""Exactly-once writes for producers that resend: the producer table and its script.

A producer (an id the client picks) numbers its messages 1, 2, 3, ... per stream set.
Its state is one hash beside the streams, in their hash slot:

* ``n``: how many of its messages are committed;
* ``r<k % PRODUCER_WINDOW>``: ``"k id id ..."``, the ids message k was given, for the
  last `PRODUCER_WINDOW` messages, so a resent message is answered with its original
  ids instead of being written again.

`PRODUCE_LUA` writes a message's entries and the count in one atomic step (nothing
is written when Redis would refuse an entry); `PRODUCE_ONE_LUA` is its short form for
a message of one entry of one field (the common case, and a third of the cost). The
state expires `ttl` after the producer's last write, and at most `MAX_PRODUCERS`
producers of one stream set hold state at once (an index set beside it counts them).
The server's ``producer=`` pushes and ``sink_to_redis_stream(producer=...)`` both
write through this module.

Redis >= 8.6 has ``XADD ... IDMP`` (a per-stream idempotency window), detectable with
``COMMAND DOCS XADD``. It keys on one stream and one entry, not on a message of
several entries to several streams, and it does not tell a reconnecting producer how
many of its messages are committed, so the script is used on every server (only
Valkey 8.1 and Redis 7.0 / 8.2 were at hand to test on).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastredis.redis_io.lua import LuaScript
from fastredis.redis_io.stream_scripts import CHECK_IDS_LUA

__all__ = [
    "DEFAULT_PRODUCER_TTL",
    "MAX_PRODUCERS",
    "MAX_PRODUCER_ID",
    "PRODUCER_WINDOW",
    "PRODUCE_LUA",
    "PRODUCE_ONE_LUA",
    "ProducerEntry",
    "check_producer_id",
    "hash_tag",
    "parse_state",
    "produce_command",
    "producer_keys",
]

DEFAULT_PRODUCER_TTL = 3600.0  # seconds a producer's state outlives its last write
PRODUCER_WINDOW = 16  # messages whose ids are kept, per producer
MAX_PRODUCERS = 1024  # producers with state at once, per stream set
MAX_PRODUCER_ID = 128  # characters
_PRODUCER_ID = re.compile(r"[A-Za-z0-9._:@-]+")

ProducerEntry = tuple[int, str, Sequence[Any]]  # (stream index from 1, id, field/value list)

# KEYS[1]: the producer's state hash, KEYS[2]: the stream set's index of producers,
# KEYS[3..]: the streams, then (when ARGV[8] is an epoch) their epoch keys in the same
# order (a stream's own key where it cannot have one). ARGV: producer id, the
# message's number, ttl (ms), window, most producers, trimming ('~' or '=') and MAXLEN
# (0: none), a new epoch stored for each stream the message creates ('': none, and no
# epoch keys), then per entry: stream index (1 = KEYS[3]), id, number of fields,
# field, value, ...
# Message k's ids are kept in field r<k % window> as "k id id ...".
_PRODUCE_HEAD = r"""
local state, index = KEYS[1], KEYS[2]
local producer, seq = ARGV[1], tonumber(ARGV[2])
local window = tonumber(ARGV[4])
local n = tonumber(redis.call('HGET', state, 'n') or '0')
if seq <= n then
  local kept = redis.call('HGET', state, 'r' .. (seq % window)) or ''
  local ids = {}
  for id in string.gmatch(kept, '%S+') do ids[#ids + 1] = id end
  if tonumber(ids[1]) ~= seq then
    return redis.error_reply('ERR producer ' .. producer .. ': message ' .. seq ..
      ' was committed, but only the ids of the last ' .. window .. ' are kept')
  end
  table.remove(ids, 1)
  return ids
end
if n == 0 and redis.call('EXISTS', state) == 0 then
  local most = tonumber(ARGV[5])
  if redis.call('SCARD', index) >= most then
    for _, p in ipairs(redis.call('SMEMBERS', index)) do
      if redis.call('EXISTS', state:sub(1, #state - #producer) .. p) == 0 then
        redis.call('SREM', index, p)
      end
    end
    if redis.call('SCARD', index) >= most then
      return redis.error_reply('ERR this stream set has state for ' .. most ..
        ' producers already, the most it keeps; retry once idle ones expire')
    end
  end
  redis.call('SADD', index, producer)
  redis.call('PEXPIRE', index, ARGV[3])
end
"""
_PRODUCE_TAIL = r"""
redis.call('HSET', state, 'n', seq, 'r' .. (seq % window), seq .. ' ' .. table.concat(ids, ' '))
redis.call('PEXPIRE', state, ARGV[3])
return ids
"""
# One entry of one field: XADD is all or none by itself.
PRODUCE_ONE_LUA = (
    _PRODUCE_HEAD
    + r"""
local created = ARGV[8] ~= '' and KEYS[4] ~= KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0
local ids
if ARGV[7] ~= '0' then
  ids = {redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[6], ARGV[7], ARGV[10], ARGV[12], ARGV[13])}
else
  ids = {redis.call('XADD', KEYS[3], ARGV[10], ARGV[12], ARGV[13])}
end
if created then redis.call('SET', KEYS[4], ARGV[8]) end
"""
    + _PRODUCE_TAIL
)
# Any message: everything Redis could refuse is checked before the first write.
PRODUCE_LUA = (
    CHECK_IDS_LUA
    + _PRODUCE_HEAD
    + r"""
local streams, entries, at = {}, {}, 9
local n = ARGV[8] ~= '' and (#KEYS - 2) / 2 or #KEYS - 2
for i = 3, 2 + n do streams[#streams + 1] = KEYS[i] end
while at <= #ARGV do
  entries[#entries + 1] = {tonumber(ARGV[at]), ARGV[at + 1], at + 3, tonumber(ARGV[at + 2])}
  at = at + 3 + 2 * tonumber(ARGV[at + 2])
end
local bad = check_ids(streams, entries)
if bad then return bad end
if ARGV[8] ~= '' then
  for i = 1, n do
    local key = KEYS[2 + n + i]
    if key ~= streams[i] and redis.call('EXISTS', streams[i]) == 0 then
      redis.call('SET', key, ARGV[8])
    end
  end
end
local ids = {}
for _, e in ipairs(entries) do
  local args = {streams[e[1]]}
  if ARGV[7] ~= '0' then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = ARGV[6]
    args[#args + 1] = ARGV[7]
  end
  args[#args + 1] = e[2]
  for f = e[3], e[3] + 2 * e[4] - 1 do args[#args + 1] = ARGV[f] end
  ids[#ids + 1] = redis.call('XADD', unpack(args))
end
"""
    + _PRODUCE_TAIL
)
_ONE = LuaScript(PRODUCE_ONE_LUA)
_ANY = LuaScript(PRODUCE_LUA)


def check_producer_id(producer: str) -> str:
    """`producer` if it is a usable producer id, else ValueError saying why."""
    if not isinstance(producer, str) or not producer:
        raise ValueError("a producer id must be a non-empty string")
    if len(producer) > MAX_PRODUCER_ID:
        raise ValueError(
            f"producer id of {len(producer)} characters is over the limit of {MAX_PRODUCER_ID}"
        )
    if not _PRODUCER_ID.fullmatch(producer):
        raise ValueError(f"producer id {producer!r} may only hold letters, digits and . _ : @ -")
    return producer


def hash_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: its {hash tag}, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def producer_keys(sids: Sequence[str], producer: str) -> tuple[str, str]:
    """(state hash, index set) of `producer` on the stream set `sids`, in the slot of
    ``sids[0]`` (on a cluster, a stream without a hash tag must not hold braces)."""
    names = "+".join(sids)
    tag = hash_tag(sids[0])
    return f"XPROD:{{{tag}}}:{names}|{producer}", f"XPRODS:{{{tag}}}:{names}|"


def produce_command(
    keys: tuple[str, str],
    sids: Sequence[str],
    producer: str,
    seq: int,
    entries: Sequence[ProducerEntry],
    ttl: float,
    maxlen: int = 0,
    approximate: bool = True,
    epochs: tuple[Sequence[str], str] | None = None,
) -> list[Any]:
    """The EVALSHA that writes message `seq` of `producer` (its `entries`) once (on
    NOSCRIPT, send it again as `fastredis.redis_io.lua.with_text`).
    `epochs`: (each stream's epoch key, or the stream's own key where it has none; a
    new epoch), stored for each stream the message creates (the server's pushes; None:
    no epoch is stored, the stream gets one when a reader first asks)."""
    epoch_keys, epoch = epochs if epochs is not None else ((), "")
    argv: list[Any] = [
        producer,
        seq,
        max(1, int(ttl * 1000)),
        PRODUCER_WINDOW,
        MAX_PRODUCERS,
        "~" if approximate else "=",
        maxlen,
        epoch,
    ]
    for index, eid, fields in entries:
        argv.append(index)
        argv.append(eid)
        argv.append(len(fields) // 2)
        argv.extend(fields)
    one = len(entries) == 1 and len(entries[0][2]) == 2
    script = _ONE if one else _ANY
    return script.command(2 + len(sids) + len(epoch_keys), *keys, *sids, *epoch_keys, *argv)


def parse_state(raw: dict[Any, Any]) -> tuple[int, dict[int, list[str]]]:
    """(committed count, {message number: ids}) from an HGETALL of a state hash."""
    text = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
    committed = int(text.get("n", "0"))
    recent = {}
    for k, v in text.items():
        if k[:1] == "r":
            seq, *ids = v.split()
            if int(seq) > committed - PRODUCER_WINDOW:
                recent[int(seq)] = ids
    return committed, recent
