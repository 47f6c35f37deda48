"""What `producer=` costs: ack=1 pushes with and without it, in the same run.

    python benchmarks/bench_producer.py [--rounds 5] [--messages 2000] [--size 100]

One `fastredis serve` (subprocess) on a private Valkey; one websocket client sends a
message and waits for its ack, `--messages` times per round. Rounds alternate plain and
producer sockets so drift on a shared machine hits both. Writes the medians, spreads and
the ratio to benchmarks/results/producer_<date>.json. The pytest entry runs a short round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from typing import Any

import redis
import websockets
from procs import ROOT, spawn_server, stop_server

from fastredis.embedded import EmbeddedRedis, free_port

RESULTS = ROOT / "benchmarks" / "results"


async def _round(url: str, messages: int, size: int) -> float:
    """Messages per second of one socket, each waiting for its ack."""
    payload = b"x" * size
    header = f"[{size}]"
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        if "producer=" in url:
            await ws.recv()  # the hello
        start = time.perf_counter()
        for _ in range(messages):
            await ws.send(header)
            await ws.send(payload)
            await ws.recv()
        return messages / (time.perf_counter() - start)


async def _measure(port: int, rounds: int, messages: int, size: int) -> dict[str, list[float]]:
    base = f"ws://127.0.0.1:{port}/data/bench/push"
    out: dict[str, list[float]] = {"plain": [], "producer": []}
    await _round(f"{base}?ack=1", 200, size)  # warm up
    for k in range(rounds):
        out["plain"].append(await _round(f"{base}?ack=1", messages, size))
        out["producer"].append(await _round(f"{base}?producer=bench{k}", messages, size))
    return out


def run(rounds: int = 5, messages: int = 2000, size: int = 100) -> dict[str, Any]:
    """Start a server, measure both kinds, write and return the result."""
    with EmbeddedRedis() as redis_server:
        port = free_port()
        args = ["-m", "fastredis", "serve", "--port", str(port), "--maxlen", "100000"]
        proc = spawn_server([*args, "--redis-url", redis_server.url], port)
        try:
            rates = asyncio.run(_measure(port, rounds, messages, size))
        finally:
            stop_server(proc)
        with redis.Redis.from_url(redis_server.url) as r:
            stats = r.info("commandstats")
    # Redis CPU per message: a plain push is one XADD; a producer's is one EVAL (its
    # XADD included in the EVAL's time too).
    plain, producer = statistics.median(rates["plain"]), statistics.median(rates["producer"])
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": f"{platform.node()} (2 cores shared with other work: noisy)",
        "messages_per_round": messages,
        "payload_bytes": size,
        "rounds": rounds,
        "plain_ack1_msgs_per_s": rates["plain"],
        "producer_msgs_per_s": rates["producer"],
        "plain_median": round(plain),
        "producer_median": round(producer),
        "producer_cost_pct": round(100 * (plain / producer - 1), 1),
        "redis_usec_per_plain_push": stats["cmdstat_xadd"]["usec_per_call"],
        "redis_usec_per_producer_push": stats["cmdstat_eval"]["usec_per_call"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"producer_{time.strftime('%Y%m%d_%H%M%S')}.json").write_text(
        json.dumps(result, indent=1) + "\n"
    )
    return result


def test_producer_push_cost() -> None:
    result = run(rounds=2, messages=300)
    assert result["plain_median"] > 0 and result["producer_median"] > 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=100)
    a = parser.parse_args()
    r = run(a.rounds, a.messages, a.size)
    print(
        f"plain ack=1: {r['plain_median']} msg/s, producer=: {r['producer_median']} msg/s "
        f"(cost {r['producer_cost_pct']}%); Redis us/message {r['redis_usec_per_plain_push']}"
        f" / {r['redis_usec_per_producer_push']}; spreads {r['plain_ack1_msgs_per_s']} / "
        f"{r['producer_msgs_per_s']}"
    )
