"""Valkey's CPU per push write: EVAL (the script's text each time) against EVALSHA.

    python benchmarks/bench_push_valkey_cpu.py [--rounds 5] [--calls 3000] [--callgrind]

The one-entry write of a plain ``ack=1`` push (`ADD_ONE_LUA`) and of a ``producer=``
push (`PRODUCE_ONE_LUA`), each sent as EVAL and as EVALSHA, one call at a time (as
an ack=1 socket does) from one connection to a private Valkey. Per call: Valkey's own
CPU time (``INFO cpu``, reading the command included) and its time in the command
(``INFO commandstats``). Variants run in a rotated order every round; medians and
spreads over rounds go to benchmarks/results/push_valkey_cpu-<date>.json.
``--callgrind``: instead, Valkey's instructions per call (callgrind Ir, counted from
a reset to a dump around each variant's calls), which a busy machine does not move.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from typing import Any

import redis
from abrounds import spread, write
from procs import callgrind_count, callgrind_valkey

import fastredis
from fastredis.embedded import EmbeddedRedis
from fastredis.redis_io.lua import with_text
from fastredis.redis_io.producers import producer_keys
from fastredis.server.writes.entries import entry_commands
from fastredis.server.writes.producers import ProducerSession

PAYLOAD = b"x" * 100


def _commands(kind: str) -> Callable[[int], list[Any]]:
    """The k-th write of `kind` (plain or producer), as EVALSHA."""
    if kind == "plain":
        return lambda k: entry_commands([("plain", "*", PAYLOAD)], 100000)
    session = ProducerSession(["prod"], "p", 3600)
    return lambda k: session.command([("prod", "*", PAYLOAD)], 100000)


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _one(r: redis.Redis, kind: str, text: bool, calls: int) -> dict[str, float]:
    make = _commands(kind)
    r.delete("plain", "prod", *producer_keys(["prod"], "p"))
    r.execute_command(*with_text(make(0)))  # loads the script
    make = _commands(kind)  # a fresh producer count
    r.delete("plain", "prod", *producer_keys(["prod"], "p"))
    r.config_resetstat()
    c0 = _cpu(r)
    for k in range(calls):
        command = make(k)
        r.execute_command(*(with_text(command) if text else command))
    c1 = _cpu(r)
    stats = r.info("commandstats")[f"cmdstat_{'eval' if text else 'evalsha'}"]
    return {"cpu_us": 1e6 * (c1 - c0) / calls, "command_us": float(stats["usec_per_call"])}


def run(rounds: int = 5, calls: int = 3000) -> dict[str, Any]:
    variants = [(kind, text) for kind in ("plain", "producer") for text in (True, False)]
    out: dict[str, dict[str, list[float]]] = {}
    with EmbeddedRedis() as server, redis.Redis.from_url(server.url) as r:
        for n in range(rounds):
            for kind, text in variants[n % 4 :] + variants[: n % 4]:
                got = _one(r, kind, text, calls)
                name = f"{kind} {'EVAL' if text else 'EVALSHA'}"
                for metric, value in got.items():
                    out.setdefault(name, {}).setdefault(metric, []).append(value)
    summary = {name: {m: spread(v) for m, v in ms.items()} for name, ms in out.items()}
    extra = {
        kind: statistics.median(
            p - q
            for p, q in zip(
                out[f"producer {kind}"]["cpu_us"], out[f"plain {kind}"]["cpu_us"], strict=True
            )
        )
        for kind in ("EVAL", "EVALSHA")
    }
    result = {"rounds": rounds, "calls": calls, "summary": summary, "runs": out,
              "producer_extra_cpu_us": extra}  # fmt: skip
    write("push_valkey_cpu", result)
    return result


def run_callgrind(calls: int = 2000) -> dict[str, Any]:
    """Valkey's instructions per call of each variant, Valkey run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        per_call: dict[str, float] = {}
        with EmbeddedRedis(callgrind_valkey(tmp, out), startup_timeout=120) as server:
            assert server.pid is not None
            with redis.Redis.from_url(server.url) as r:
                for kind in ("plain", "producer"):
                    make = _commands(kind)
                    r.execute_command(*with_text(make(0)))  # loads the script
                    for k in range(100):  # warm
                        r.execute_command(*make(k))
                    callgrind_count(server.pid, out)
                    for k in range(calls):
                        r.execute_command(*make(k))
                    per_call[f"{kind} EVALSHA"] = callgrind_count(server.pid, out) / calls
    tree = os.path.dirname(os.path.dirname(fastredis.__file__))  # the checkout measured
    result = {"calls": calls, "tree": tree, "valkey_ir_per_call": per_call}
    write("push_valkey_ir", result)
    return result


def test_push_valkey_cpu() -> None:
    result = run(rounds=1, calls=200)
    assert result["summary"]["producer EVALSHA"]["cpu_us"]["median"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--callgrind", action="store_true", help="instructions per call")
    a = parser.parse_args()
    if a.callgrind:
        for name, ir in run_callgrind(a.calls)["valkey_ir_per_call"].items():
            print(f"{name}: Valkey {ir:,.0f} instructions per call")
        raise SystemExit(0)
    res = run(a.rounds, a.calls)
    for name, ms in res["summary"].items():
        print(
            f"{name}: Valkey CPU {ms['cpu_us']['median']:.1f} us/call "
            f"({ms['cpu_us']['min']:.1f}..{ms['cpu_us']['max']:.1f}), in the command "
            f"{ms['command_us']['median']:.1f} us"
        )
    print("producer's extra Valkey CPU per message:", res["producer_extra_cpu_us"])
