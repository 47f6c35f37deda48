"""Exactly-once writes for producers that resend: the producer table and its script.

A producer (an id the client picks) numbers its messages 1, 2, 3, ... per stream set.
Its state is one string beside the streams, in their hash slot: a line
``"k id id ..."`` per message, newest first: the ids message k was given, so a resent
message among the last `PRODUCER_WINDOW` is answered with them instead of being
written again (the lines are cut to that window when k ends in 0, so 16 to 25 lines
are kept); the first number is how many of its messages are committed.

`PRODUCE_LUA` writes a message's entries and the count in one atomic step (nothing
is written when Redis would refuse an entry); `PRODUCE_ONE_LUA` is its short form for
a message of one entry of one field (the common case). Per message the script reads
the state (GET) and writes it back with its expiry (SET ... PX): two calls beside the
XADD, where a hash needed HGET, HSET and PEXPIRE, so the state expires `ttl` after
the producer's last write, and an active producer's never. At most `MAX_PRODUCERS`
producers of one stream set hold state at once (an index set beside it counts them;
it expires `INDEX_TTLS` ttls after it was last renewed, which a producer's first
message and every message whose k ends in 0 do, so it outlives every active producer's
state for one call per ten messages).
A stream a message creates gets the epoch ``<prefix>-<k>``, the prefix drawn once per
session, not per message. The server's ``producer=`` pushes and
``sink_to_redis_stream(producer=...)`` both write through this module (the server
makes the start of a one-entry write once per socket: `one_entry_head`).

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
    "INDEX_TTLS",
    "MAX_PRODUCERS",
    "MAX_PRODUCER_ID",
    "PRODUCER_WINDOW",
    "PRODUCE_LUA",
    "PRODUCE_ONE_LUA",
    "ProducerEntry",
    "check_producer_id",
    "hash_tag",
    "one_entry_head",
    "parse_state",
    "produce_command",
    "produce_one",
    "producer_keys",
    "ttl_ms",
]

DEFAULT_PRODUCER_TTL = 3600.0  # seconds a producer's state outlives its last write
PRODUCER_WINDOW = 16  # messages whose ids are kept, per producer
MAX_PRODUCERS = 1024  # producers with state at once, per stream set
INDEX_TTLS = 10  # the index's expiry, in ttls: renewed every 10 messages of a producer
MAX_PRODUCER_ID = 128  # characters
_PRODUCER_ID = re.compile(r"[A-Za-z0-9._:@-]+")

ProducerEntry = tuple[int, str, Sequence[Any]]  # (stream index from 1, id, field/value list)


def _constants(text: str) -> str:
    """`text` with the values of @WINDOW@, @LONG@ (bytes of state cut on every
    message) and @MOST@."""
    return (
        text.replace("@WINDOW@", str(PRODUCER_WINDOW))
        .replace("@LONG@", str(64 * PRODUCER_WINDOW))
        .replace("@MOST@", str(MAX_PRODUCERS))
        .replace("@TTLS@", str(INDEX_TTLS))
    )


# KEYS[1]: the producer's state (its name ends with "|<producer id>"), KEYS[2]: the
# stream set's index of producers, KEYS[3..]: the streams, then (when ARGV[5] is an
# epoch prefix) their epoch keys in the same order (a stream's own key where it cannot
# have one). ARGV: the message's number, ttl (ms), trimming ('~' or '=') and MAXLEN
# (0: none), the epoch prefix ('': no epoch, and no epoch keys), then the entries (see
# each script). The state is a string, one line "k id id ..." per message, newest
# first, the last WINDOW messages: its first number is the committed count. SET ... PX
# rewrites it with its expiry in one call (a hash needed HGET, HSET and PEXPIRE).
_PRODUCE_HEAD = r"""
local state, seq = KEYS[1], ARGV[1]
local kept = redis.call('GET', state)
if kept then
  local n = string.match(kept, '^%d+')
  if #seq < #n or (#seq == #n and seq <= n) then  -- as numbers (tonumber costs more)
    local at = tonumber(seq) > tonumber(n) - @WINDOW@
    at = at and string.find('\n' .. kept, '\n' .. seq .. ' ', 1, true)
    if not at then
      return redis.error_reply('ERR producer ' .. string.match(state, '[^|]*$') ..
        ': message ' .. seq ..
        ' was committed, but only the ids of the last @WINDOW@ are kept')
    end
    local ids = {}
    for id in string.gmatch(string.match(kept, '^[^\n]*', at), '%S+') do ids[#ids + 1] = id end
    table.remove(ids, 1)
    return ids
  end
else
  kept = ''
  local index, producer = KEYS[2], string.match(state, '[^|]*$')
  if redis.call('SCARD', index) >= @MOST@ then
    for _, p in ipairs(redis.call('SMEMBERS', index)) do
      if redis.call('EXISTS', state:sub(1, #state - #producer) .. p) == 0 then
        redis.call('SREM', index, p)
      end
    end
    if redis.call('SCARD', index) >= @MOST@ then
      return redis.error_reply('ERR this stream set has state for @MOST@' ..
        ' producers already, the most it keeps; retry once idle ones expire')
    end
  end
  redis.call('SADD', index, producer)
  redis.call('PEXPIRE', index, ARGV[2] * @TTLS@)
end
"""
# The new line, then the previous lines: cut to WINDOW - 1 when the message's number
# ends in 0 or the state is long, so the state holds 16 to 25 lines of one-entry
# messages (searching for the cut on every message cost more than the XADD). When it
# ends in 0 the index is renewed too: a producer alive writes 10 messages within
# @TTLS@ ttls, so the index never expires under it (the bound would not hold then).
_PRODUCE_TAIL = r"""
local tenth = string.byte(seq, -1) == 48
if tenth then redis.call('PEXPIRE', KEYS[2], ARGV[2] * @TTLS@) end
if tenth or #kept > @LONG@ then
  local cut = 0
  for _ = 1, @WINDOW@ - 1 do
    cut = string.find(kept, '\n', cut + 1, true)
    if not cut then break end
  end
  if cut then kept = string.sub(kept, 1, cut) end
end
redis.call('SET', state, seq .. ' ' .. @RECORD@ .. '\n' .. kept, 'PX', ARGV[2])
return @RESULT@
"""
# One entry of one field (ARGV[6..8]: id, field, value): XADD is all or none by itself,
# and its reply is the id (not a list of one).
PRODUCE_ONE_LUA = _constants(
    _PRODUCE_HEAD
    + r"""
-- With an epoch to store, XADD NOMKSTREAM first: nil when the stream is missing (then
-- made, with its epoch), one call fewer than EXISTS before every XADD.
local epoch, made, id = ARGV[5] ~= '' and KEYS[4] ~= KEYS[3], false, false
if ARGV[4] ~= '0' then
  id = epoch and redis.call('XADD', KEYS[3], 'NOMKSTREAM', 'MAXLEN', ARGV[3], ARGV[4], ARGV[6],
    ARGV[7], ARGV[8])
  if not id then
    made = epoch
    id = redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], ARGV[4], ARGV[6], ARGV[7], ARGV[8])
  end
else
  id = epoch and redis.call('XADD', KEYS[3], 'NOMKSTREAM', ARGV[6], ARGV[7], ARGV[8])
  if not id then
    made = epoch
    id = redis.call('XADD', KEYS[3], ARGV[6], ARGV[7], ARGV[8])
  end
end
if made then redis.call('SET', KEYS[4], ARGV[5] .. '-' .. seq) end
"""
    + _PRODUCE_TAIL.replace("@RECORD@", "id").replace("@RESULT@", "id")
)
# Any message (ARGV[6..]: per entry, stream index (1 = KEYS[3]), id, number of fields,
# field, value, ...): everything Redis could refuse is checked before the first write.
PRODUCE_LUA = _constants(
    CHECK_IDS_LUA
    + _PRODUCE_HEAD
    + r"""
local streams, entries, at = {}, {}, 6
local n = ARGV[5] ~= '' and (#KEYS - 2) / 2 or #KEYS - 2
for i = 3, 2 + n do streams[#streams + 1] = KEYS[i] end
while at <= #ARGV do
  entries[#entries + 1] = {tonumber(ARGV[at]), ARGV[at + 1], at + 3, tonumber(ARGV[at + 2])}
  at = at + 3 + 2 * tonumber(ARGV[at + 2])
end
local bad = check_ids(streams, entries)
if bad then return bad end
if ARGV[5] ~= '' then
  for i = 1, n do
    local key = KEYS[2 + n + i]
    if key ~= streams[i] and redis.call('EXISTS', streams[i]) == 0 then
      redis.call('SET', key, ARGV[5] .. '-' .. seq)
    end
  end
end
local ids = {}
for _, e in ipairs(entries) do
  local args = {streams[e[1]]}
  if ARGV[4] ~= '0' then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = ARGV[3]
    args[#args + 1] = ARGV[4]
  end
  args[#args + 1] = e[2]
  for f = e[3], e[3] + 2 * e[4] - 1 do args[#args + 1] = ARGV[f] end
  ids[#ids + 1] = redis.call('XADD', unpack(args))
end
"""
    + _PRODUCE_TAIL.replace("@RECORD@", "table.concat(ids, ' ')").replace("@RESULT@", "ids")
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
    """(state string, index set) of `producer` on the stream set `sids`, in the slot of
    ``sids[0]`` (on a cluster, a stream without a hash tag must not hold braces)."""
    names = "+".join(sids)
    tag = hash_tag(sids[0])
    return f"XPROD:{{{tag}}}:{names}|{producer}", f"XPRODS:{{{tag}}}:{names}|"


def produce_command(
    keys: tuple[str, str],
    sids: Sequence[str],
    seq: int,
    entries: Sequence[ProducerEntry],
    ttl: float,
    maxlen: int = 0,
    approximate: bool = True,
    epochs: tuple[Sequence[str], str] | None = None,
) -> list[Any]:
    """The EVALSHA that writes message `seq` (its `entries`) of the producer of `keys`
    (`producer_keys`) once (on NOSCRIPT, send it again as
    `fastredis.redis_io.lua.with_text`).
    `epochs`: (each stream's epoch key, or the stream's own key where it has none; an
    epoch prefix, say `fastredis.server.edge.epoch.new_epoch()` once per session): a
    stream the message creates gets the epoch ``<prefix>-<seq>`` (the server's pushes;
    None: no epoch is stored, the stream gets one when a reader first asks)."""
    epoch_keys, epoch = epochs if epochs is not None else ((), "")
    trim = "~" if approximate else "="
    if len(entries) == 1 and len(entries[0][2]) == 2:
        _index, eid, (field, value) = entries[0]
        head = one_entry_head(keys, sids[0], epoch_keys[0] if epoch_keys else None)
        return produce_one(head, seq, ttl_ms(ttl), trim, maxlen, epoch, eid, field, value)
    argv: list[Any] = [seq, ttl_ms(ttl), trim, maxlen, epoch]
    for index, eid, fields in entries:
        argv.append(index)
        argv.append(eid)
        argv.append(len(fields) // 2)
        argv.extend(fields)
    return _ANY.command(2 + len(sids) + len(epoch_keys), *keys, *sids, *epoch_keys, *argv)


def ttl_ms(ttl: float) -> int:
    """A state's `ttl` (seconds) as the scripts take it."""
    return max(1, int(ttl * 1000))


def one_entry_head(keys: tuple[str, str], sid: str, epoch_key: str | None) -> list[Any]:
    """The start of the write of a one-entry message to `sid` (`produce_one`), the same
    for every such message: made once, it spares a producer's writes the rest of
    `produce_command`. `epoch_key`: as in `produce_command` (None: no epoch)."""
    if epoch_key is None:
        return _ONE.command(3, *keys, sid)
    return _ONE.command(4, *keys, sid, epoch_key)


def produce_one(
    head: list[Any], seq: int, ttl: int, trim: str, maxlen: int, epoch: str, eid: str,
    field: Any, value: Any,
) -> list[Any]:  # fmt: skip
    """`produce_command` of a one-entry message of one field, from its `one_entry_head`
    (`ttl`: from `ttl_ms`, `trim`: '~' or '=', `epoch`: the prefix, '' for none)."""
    return [*head, seq, ttl, trim, maxlen, epoch, eid, field, value]


def parse_state(raw: bytes | str | None) -> tuple[int, dict[int, list[str]]]:
    """(committed count, {message number: ids}) from a GET of a state (None: none)."""
    if raw is None:
        return 0, {}
    text = raw.decode() if isinstance(raw, bytes) else raw
    lines = [line.split() for line in text.splitlines() if line]
    committed = int(lines[0][0]) if lines else 0
    recent = {int(seq): ids for seq, *ids in lines if int(seq) > committed - PRODUCER_WINDOW}
    return committed, recent
