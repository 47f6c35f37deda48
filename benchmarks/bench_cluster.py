"""Reads over a Redis Cluster (3 primaries + 3 replicas, embedded), in one run:
fastredis `xread_batch` of every stream in one call (one XREAD per slot, pipelined per
node, the nodes concurrently) next to redis-py's RedisCluster + hiredis doing the same
reads: an XREAD per stream (RedisCluster refuses one over several slots), one after
another or in a cluster pipeline (redis-py groups it by node).

Groups (compare within a group):
  cluster-small: 12 streams over every primary (two pairs sharing a hash tag),
      1,000 entries of three small fields each: 12,000 entries per read.
  cluster-1MB: 6 streams of 8 entries of one 1 MB field: 48 MB per read.
Run: flock /tmp/fastredis-bench.lock pytest benchmarks/bench_cluster.py --benchmark-only
Or, A/B rounds with wall and CPU time, medians and spreads, written to
benchmarks/results/cluster-*.json (one command, `--short` for 5 rounds):
    python benchmarks/bench_cluster.py [--short]
It measures every variant in a fresh interpreter per case per round (rounds rotating the
order; in each, one warm-up read and 5 timed ones), as a user's program runs one client:
in one process the variants share malloc's state (glibc raises its mmap threshold when
a big block is freed), so one's frees change the other's page faults. The former
in-process rounds follow, labelled `in_process` in the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from fastredis.embedded import EmbeddedCluster
from fastredis.redis_io import make_client, slot_groups, xread_batch

SMALL = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "{a}:x", "{a}:y", "{b}:x", "{b}:y"]
LARGE = ["l0", "l1", "l2", "l3", "{c}:x", "{c}:y"]
CASES = {"small": (SMALL, 1000, 12 * 1000), "1MB": (LARGE, 8, 6 * 8)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster() as c:
        with RedisCluster.from_url(c.url) as client:
            pipe = client.pipeline()
            for name in SMALL:
                for i in range(1000):
                    pipe.xadd(name, {"a": i, "b": "x" * 8, "c": "yz"})
            pipe.execute()
            payload = b"\x01" * (1 << 20)
            for name in LARGE:
                for _ in range(8):
                    client.xadd(name, {"d": payload})
        yield c


@pytest.fixture(scope="module")
def fast(cluster: EmbeddedCluster) -> Iterator[Any]:
    with make_client({"socket_read_size": 1 << 20}, url=cluster.url) as client:
        yield client


@pytest.fixture(scope="module")
def stock(cluster: EmbeddedCluster) -> Iterator[RedisCluster]:
    # redis-py picks hiredis when it is installed (it is a fastredis dependency)
    with RedisCluster.from_url(cluster.url) as client:
        yield client


def _check_spread(client: Any, names: list[str]) -> None:
    nodes = {node.name for node, _ in slot_groups(client, dict.fromkeys(names, 0))}
    assert len(nodes) == 3, "the streams must live on every primary"


@pytest.mark.parametrize("case", list(CASES))
def test_fastredis_xread_batch(benchmark: Any, fast: Any, case: str) -> None:
    names, per, total = CASES[case]
    _check_spread(fast, names)
    benchmark.group = f"cluster-{case}"
    batch = benchmark(xread_batch, fast, dict.fromkeys(names, 0), count=per)
    assert len(batch) == total


@pytest.mark.parametrize("case", list(CASES))
def test_redis_py_cluster_xread_per_stream(benchmark: Any, stock: RedisCluster, case: str) -> None:
    names, per, total = CASES[case]
    benchmark.group = f"cluster-{case}"

    def read() -> int:
        return sum(len(stock.xread({name: 0}, count=per)[0][1]) for name in names)

    assert benchmark(read) == total


@pytest.mark.parametrize("case", list(CASES))
def test_redis_py_cluster_pipeline(benchmark: Any, stock: RedisCluster, case: str) -> None:
    names, per, total = CASES[case]
    benchmark.group = f"cluster-{case}"

    def read() -> int:
        pipe = stock.pipeline()
        for name in names:
            pipe.xread({name: 0}, count=per)
        return sum(len(reply[0][1]) for reply in pipe.execute())

    assert benchmark(read) == total


def test_redis_py_refuses_one_xread_over_slots(stock: RedisCluster) -> None:
    with pytest.raises(redis.exceptions.RedisClusterException):
        stock.xread(dict.fromkeys(SMALL, 0), count=1)


def _fill(url: str) -> None:
    with RedisCluster.from_url(url) as client:
        pipe = client.pipeline()
        for name in SMALL:
            for i in range(1000):
                pipe.xadd(name, {"a": i, "b": "x" * 8, "c": "yz"})
        pipe.execute()
        payload = b"\x01" * (1 << 20)
        for name in LARGE:
            for _ in range(8):
                client.xadd(name, {"d": payload})


def _variants(
    fast: Any, stock: RedisCluster, case: str, only: str | None = None
) -> dict[str, Callable[[], int]]:
    """The reads of `case` (only the one named `only` when given), each checked once."""
    names, per, total = CASES[case]

    def fastredis() -> int:
        return len(xread_batch(fast, dict.fromkeys(names, 0), count=per))

    def per_stream() -> int:
        return sum(len(stock.xread({name: 0}, count=per)[0][1]) for name in names)

    def pipeline() -> int:
        pipe = stock.pipeline()
        for name in names:
            pipe.xread({name: 0}, count=per)
        return sum(len(reply[0][1]) for reply in pipe.execute())

    variants = {
        "fastredis": fastredis,
        "redis-py per stream": per_stream,
        "redis-py pipeline": pipeline,
    }
    if only is not None:
        variants = {only: variants[only]}
    for name, read in variants.items():
        assert read() == total, name
    return variants


def _settle(window: float = 0.05, most: float = 3.0) -> None:
    """Wait until this process is idle: numpy (which every variant's process loads, with
    fastredis) starts OpenBLAS's worker threads, and they spin for ~0.1 s after it
    loads, using a core beside the timed reads (and counted as their CPU)."""
    import time

    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window)
        if time.process_time() - c0 < 0.05 * (time.perf_counter() - t0):
            return


def _child(url: str, case: str, variant: str, reads: int) -> None:
    """One variant in a fresh interpreter, as a user's program running one client:
    connect, one warm-up read, then `reads` timed reads; print per-read figures."""
    import json
    import resource
    import time

    with make_client({"socket_read_size": 1 << 20}, url=url) as fast, \
            RedisCluster.from_url(url) as stock:  # fmt: skip
        _settle()
        read = _variants(fast, stock, case, variant)[variant]  # checked: the warm-up read
        wall, cpu = [], []
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(reads):
            c0, t0 = time.process_time(), time.perf_counter()
            read()
            t1, c1 = time.perf_counter(), time.process_time()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = (usage.ru_minflt - faults0) / reads
    print(json.dumps({"wall": wall, "cpu": cpu, "faults": faults, "maxrss_kb": usage.ru_maxrss}))


def _separate_rounds(url: str, case: str, n: int, reads: int) -> dict[str, dict[str, list[float]]]:
    """Every variant in its own interpreter, `n` rounds in a rotated order (as
    abrounds.rounds); per variant and round, the median of its `reads` reads."""
    import json
    import statistics
    import subprocess

    names = ["fastredis", "redis-py per stream", "redis-py pipeline"]
    out: dict[str, dict[str, list[float]]] = {
        k: {"wall": [], "cpu": [], "faults": [], "maxrss_kb": []} for k in names
    }
    for r in range(n):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            argv = [sys.executable, __file__, "--child", url, case, name, str(reads)]
            got = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
            out[name]["wall"].append(statistics.median(got["wall"]))
            out[name]["cpu"].append(statistics.median(got["cpu"]))
            out[name]["faults"].append(got["faults"])
            out[name]["maxrss_kb"].append(got["maxrss_kb"])
    return out


def _summary(got: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    from abrounds import ratios, spread

    base = got["redis-py per stream"]["wall"]
    return {
        name: {
            **{f"{k}_s" if k in ("wall", "cpu") else k: spread(v) for k, v in r.items()},
            "speed_vs_per_stream": ratios(r["wall"], base),
        }
        for name, r in got.items()
    }


def main(argv: list[str]) -> None:
    from abrounds import fmt, loadavg, rounds, write

    n = 5 if "--short" in argv else 15
    reads = 5
    load_before = loadavg()
    separate: dict[str, Any] = {}
    in_process: dict[str, Any] = {}
    with EmbeddedCluster() as cluster:
        _fill(cluster.url)
        for case in CASES:
            separate[case] = _summary(_separate_rounds(cluster.url, case, n, reads))
        with make_client({"socket_read_size": 1 << 20}, url=cluster.url) as fast, \
                RedisCluster.from_url(cluster.url) as stock:  # fmt: skip
            for case in CASES:
                _check_spread(fast, CASES[case][0])
                in_process[case] = _summary(rounds(_variants(fast, stock, case), n))
    payload = {
        "rounds": n,
        "method": f"separate: each variant in a fresh interpreter per case per round "
        f"(1 warm-up + {reads} timed reads, their median); in_process: all variants "
        "in one process, one read each per round (shares malloc state)",
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "load_before": load_before,
        "load_after": loadavg(),
        "cases": separate,
        "in_process": in_process,
    }
    path = write("cluster", payload)
    print(f"load average before {load_before}, after {loadavg()}; {n} rounds")
    for label, cases in (("separate processes", separate), ("in one process", in_process)):
        for case, rows in cases.items():
            print(f"\n{case}, {label}: wall ms median (min-max), CPU ms, x vs per stream")
            for name, row in rows.items():
                print(
                    f"  {name:22} {fmt(row['wall_s'], 1e3)}  cpu {fmt(row['cpu_s'], 1e3)}"
                    f"  x {fmt(row['speed_vs_per_stream'], digits=2)}"
                )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main(sys.argv[1:])
