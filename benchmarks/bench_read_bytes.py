"""Reads bounded in bytes: two ways, side by side in one run (issue 17.5).

* ``count``: what the server does (`fastredis.server.reads.sizes`): XREAD with a COUNT
  worked out from the stream's entry size (learned from reads; a new stream is measured
  by MEMORY USAGE over XLEN), so the reply fits the byte budget.
* ``lua``: a script that reads entries itself (XRANGE in steps) and stops at the byte
  budget, returning the same shape as XREAD.

Both read the same entries (a budget of 16 MiB) from a stream of 1 MB entries and of
100-byte entries. ``extra_info["redis_usec"]`` is Redis's own time per call (INFO
commandstats): the time every other client of Redis waits. Groups: ``read-1MB``,
``read-100B``.

Also the cost of storing a stream's epoch with each write (`fastredis.server.writes.
entries`): one 100-byte entry by a bare XADD and by the script the server sends
(group ``write-one``).

Run: pytest benchmarks/bench_read_bytes.py --benchmark-only
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fastredis.redis_io.lua import with_text
from fastredis.server.writes.entries import entry_commands

BUDGET = 16 << 20
CASES = {"1MB": (1 << 20, 40), "100B": (100, 200_000)}

# KEYS[1]: a stream; ARGV: after (exclusive "(id" or "-"), byte budget, step.
BUDGET_LUA = r"""
local start, left, step = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local got = {}
while left > 0 do
  local r = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', step)
  if #r == 0 then break end
  for _, e in ipairs(r) do
    local size = 0
    for _, v in ipairs(e[2]) do size = size + #v end
    if #got > 0 and size > left then left = 0 break end
    got[#got + 1] = e
    left = left - size
    start = '(' .. e[1]
  end
  if #r < step then break end
end
if #got == 0 then return {} end
return {{KEYS[1], got}}
"""


@pytest.fixture(scope="module")
def client(bench_server: Any) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(bench_server.url) as r:
        r.flushall()
        for name, (size, n) in CASES.items():
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd(name, {"d": (i % 256).to_bytes(1, "big") * size}, maxlen=None)
            pipe.execute()
        yield r
        r.flushall()


def _usec(r: redis.Redis, command: str) -> float:
    return float(r.info("commandstats").get(f"cmdstat_{command}", {}).get("usec_per_call", 0.0))


def _count(size: int) -> int:
    return max(1, BUDGET // (size + 64))  # as fastredis.server.reads.sizes.redis_count


def test_write_one_bare_xadd(benchmark: Any, client: redis.Redis) -> None:
    benchmark.group = "write-one"
    client.config_resetstat()
    benchmark(client.execute_command, "XADD", "w1", "MAXLEN", "~", 1000, "*", "d", b"x" * 100)
    benchmark.extra_info["redis_usec"] = _usec(client, "xadd")


def test_write_one_with_epoch(benchmark: Any, client: redis.Redis) -> None:
    benchmark.group = "write-one"
    client.config_resetstat()
    command = entry_commands([("w2", "*", b"x" * 100)], 1000)
    client.execute_command(*with_text(command))  # loads the script: EVALSHA from here
    benchmark(client.execute_command, *command)
    benchmark.extra_info["redis_usec"] = _usec(client, "evalsha")


@pytest.mark.parametrize("case", list(CASES))
def test_count_from_sizes(benchmark: Any, client: redis.Redis, case: str) -> None:
    benchmark.group = f"read-{case}"
    size, _n = CASES[case]
    client.config_resetstat()
    reply = benchmark(
        client.execute_command, "XREAD", "COUNT", _count(size), "STREAMS", case, "0-0"
    )
    got = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
    assert sum(len(v) for _id, f in got for v in f.values()) <= BUDGET
    benchmark.extra_info["redis_usec"] = _usec(client, "xread")


@pytest.mark.parametrize("case", list(CASES))
def test_lua_byte_budget(benchmark: Any, client: redis.Redis, case: str) -> None:
    benchmark.group = f"read-{case}"
    client.config_resetstat()
    script = client.register_script(BUDGET_LUA)
    reply = benchmark(script, keys=[case], args=["-", BUDGET, 1000])
    assert sum(len(v) for _id, f in reply[0][1] for v in f) <= BUDGET
    benchmark.extra_info["redis_usec"] = _usec(client, "evalsha")
