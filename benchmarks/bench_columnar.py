"""Stream batches into Polars / Arrow: fastredis's view columns against what a user
writes today with redis-py + hiredis, every case with its alternative in the same run.

Cases (issue 19):
  1mb-polars    100 x 1 MB entries, a parsed reply -> Polars frame (conversion only).
                fastredis: pl.DataFrame(batch), 0 payload bytes copied (asserted by
                address every run). Alternative: hiredis-parsed rows -> pl.DataFrame(rows).
  small-polars  10,000 entries x 3 fields, a parsed reply -> Polars frame (conversion only).
  small-e2e     the same from Valkey, whole call: xread_batch + pl.DataFrame(batch) against
                redis-py + hiredis xread + pl.DataFrame(rows); the raw socket floor (send
                the command, receive the reply bytes, nothing parsed) beside them.
  100k-e2e      100,000 small entries from Valkey to a pyarrow Table: xread_batch +
                pa.table(batch) against redis-py + hiredis xread into per-column lists
                then pa.array (the best a user can write with pyarrow's Python API).

Both sides read bytes (no decoding). Each contender runs `--runs` times, interleaved
round by round; a run of a sub-millisecond conversion is the mean of several calls.
Medians and spread go to stdout and to benchmarks/results/columnar-<date>.json.

Run: python benchmarks/bench_columnar.py [--runs 7]
The machine may be shared: compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import redis
from replies import (
    LARGE_ENTRIES,
    LARGE_STREAM,
    SMALL_ENTRIES,
    SMALL_FIELDS,
    SMALL_STREAM,
    RawClient,
    encode,
    fill,
)

from fastredis._resp import READ, batch_from_reply
from fastredis.embedded import EmbeddedRedis
from fastredis.redis_io import make_client, xread_batch

HUGE_STREAM = "bench:100k"
HUGE_ENTRIES = 100_000
RESULTS = Path(__file__).resolve().parent / "results"


def fill_huge(url: str) -> None:
    with redis.Redis.from_url(url) as r:
        if r.xlen(HUGE_STREAM) == HUGE_ENTRIES:
            return
        r.delete(HUGE_STREAM)
        for start in range(0, HUGE_ENTRIES, 10_000):
            pipe = r.pipeline(transaction=False)
            for _ in range(start, start + 10_000):
                pipe.xadd(HUGE_STREAM, SMALL_FIELDS)
            pipe.execute()


# -- what is timed ------------------------------------------------------------------


def rows_of(reply: Any) -> list[dict[Any, Any]]:
    """redis-py's XREAD result as one dict per entry (what users feed pl.DataFrame,
    whose column names must be str)."""
    return [
        {"stream": name, "id": entry_id, **{k.decode(): v for k, v in fields.items()}}
        for name, entries in reply
        for entry_id, fields in entries
    ]


def arrow_from_reply(reply: Any) -> pa.Table:
    """redis-py's XREAD result into per-column lists, then one pa.array per column."""
    names: list[Any] = []
    ids: list[Any] = []
    cols: dict[Any, list[Any]] = {}
    n = 0
    for name, entries in reply:
        for entry_id, fields in entries:
            names.append(name)
            ids.append(entry_id)
            for k, v in fields.items():
                col = cols.get(k)
                if col is None:
                    col = cols[k] = [None] * n
                col.append(v)
            n += 1
            for col in cols.values():
                if len(col) < n:
                    col.append(None)
    arrays = {"stream": pa.array(names, pa.binary()), "id": pa.array(ids, pa.binary())}
    for k, col in cols.items():
        arrays[k.decode()] = pa.array(col, pa.binary())
    return pa.table(arrays)


def address(obj: Any) -> int:
    return int(np.frombuffer(memoryview(obj), np.uint8).ctypes.data)


def copied_payload_bytes(batch: Any, frame: pl.DataFrame, field: str) -> int:
    """Payload bytes of `field` that the frame does NOT read in place in the batch's
    reply buffer, found by address: each view's target against the value's own bytes."""
    col = frame.to_arrow(compat_level=pl.CompatLevel.newest()).column(field).combine_chunks()
    bufs = col.buffers()
    views = np.frombuffer(bufs[1], dtype=np.int32).reshape(-1, 4)[col.offset :][: len(col)]
    copied = 0
    for value, (n, _prefix, index, offset) in zip(batch.field(field), views, strict=True):
        if value is None or n <= 12:  # inline by the layout: not payload buffer bytes
            continue
        if bufs[2 + int(index)].address + int(offset) != address(value):
            copied += len(value)
    return copied


# -- measuring ------------------------------------------------------------------------


def measure(contenders: dict[str, Callable[[], Any]], runs: int, inner: int) -> dict[str, Any]:
    """Each contender `runs` times, interleaved; a run is the mean of `inner` calls."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm up
    for _ in range(runs):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {name: summary(ts) for name, ts in times.items()}


def summary(ts: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
    return {
        "median_s": statistics.median(ts),
        "min_s": min(ts),
        "max_s": max(ts),
        "iqr_s": q[2] - q[0],
        "runs_s": ts,
    }


def run(server: EmbeddedRedis, runs: int) -> dict[str, Any]:
    url = server.url
    fill(url)
    fill_huge(url)
    fast = make_client(url=url)
    plain = redis.Redis.from_url(url)  # hiredis parser: installed
    raw = RawClient(server.host, server.port)
    big_cmd = encode("XREAD", "COUNT", LARGE_ENTRIES, "STREAMS", LARGE_STREAM, "0")
    small_cmd = encode("XREAD", "COUNT", SMALL_ENTRIES, "STREAMS", SMALL_STREAM, "0")
    big_bytes, small_bytes = raw.capture(big_cmd), raw.capture(small_cmd)
    big = batch_from_reply(big_bytes, READ)
    small = batch_from_reply(small_bytes, READ)
    big_rows = rows_of(plain.xread({LARGE_STREAM: 0}, count=LARGE_ENTRIES))
    small_rows = rows_of(plain.xread({SMALL_STREAM: 0}, count=SMALL_ENTRIES))
    out: dict[str, Any] = {}

    copied = copied_payload_bytes(big, pl.DataFrame(big), "d")
    assert copied == 0, f"{copied} payload bytes copied"
    out["1mb-polars"] = measure(
        {
            "fastredis pl.DataFrame(batch)": lambda: pl.DataFrame(big),
            "hiredis rows -> pl.DataFrame(rows)": lambda: pl.DataFrame(big_rows),
        },
        runs,
        inner=1,
    )
    out["1mb-polars"]["fastredis 100x1MB conversion (mean of 200 calls)"] = measure(
        {"x": lambda: pl.DataFrame(big)}, runs, inner=200
    )["x"]
    out["1mb-polars"]["payload_bytes_copied"] = copied

    out["small-polars"] = measure(
        {
            "fastredis pl.DataFrame(batch)": lambda: pl.DataFrame(small),
            "hiredis rows -> pl.DataFrame(rows)": lambda: pl.DataFrame(small_rows),
        },
        runs,
        inner=20,
    )

    out["small-e2e"] = measure(
        {
            "fastredis xread_batch + pl.DataFrame": lambda: pl.DataFrame(
                xread_batch(fast, {SMALL_STREAM: "0"}, count=SMALL_ENTRIES, encoding=None)
            ),
            "redis-py+hiredis xread + pl.DataFrame(rows)": lambda: pl.DataFrame(
                rows_of(plain.xread({SMALL_STREAM: 0}, count=SMALL_ENTRIES))
            ),
            "raw socket floor (reply bytes only)": lambda: raw.call(small_cmd, len(small_bytes)),
        },
        runs,
        inner=3,
    )

    huge_cmd = encode("XREAD", "COUNT", HUGE_ENTRIES, "STREAMS", HUGE_STREAM, "0")
    huge_len = len(raw.capture(huge_cmd))
    out["100k-e2e"] = measure(
        {
            "fastredis xread_batch + pa.table": lambda: pa.table(
                xread_batch(fast, {HUGE_STREAM: "0"}, count=HUGE_ENTRIES, encoding=None)
            ),
            "redis-py+hiredis xread + column lists -> pa.array": lambda: arrow_from_reply(
                plain.xread({HUGE_STREAM: 0}, count=HUGE_ENTRIES)
            ),
            "raw socket floor (reply bytes only)": lambda: raw.call(huge_cmd, huge_len),
        },
        runs,
        inner=1,
    )
    raw.close()
    fast.close()
    plain.close()
    return out


def report(results: dict[str, Any]) -> str:
    lines = [
        "| case | contender | median | spread (min-max) | vs fastredis |",
        "|---|---|---|---|---|",
    ]
    for case, contenders in results.items():
        rows = {k: v for k, v in contenders.items() if isinstance(v, dict)}
        base = next(iter(rows.values()))["median_s"]
        for name, s in rows.items():
            spread = f"{fmt(s['min_s'])}-{fmt(s['max_s'])}"
            ratio = s["median_s"] / base
            lines.append(f"| {case} | {name} | {fmt(s['median_s'])} | {spread} | {ratio:.1f}x |")
    return "\n".join(lines)


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per contender (>= 5)")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    with EmbeddedRedis() as server:
        results = run(server, args.runs)
    table = report(results)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc)
    path = RESULTS / f"columnar-{stamp:%Y-%m-%d}.json"
    meta = {
        "date": stamp.isoformat(timespec="seconds"),
        "runs": args.runs,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "pyarrow": pa.__version__,
        "polars": pl.__version__,
        "note": "the machine was shared with other work: compare ratios within this run",
    }
    path.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
