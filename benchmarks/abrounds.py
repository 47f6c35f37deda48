"""Interleaved A/B rounds for a shared, noisy machine (not a test module).

Every round runs every variant once, in a rotated order, so a burst of load from
elsewhere hits all of them alike; each call records wall time and this process's CPU
time. Figures are medians with their spread (min-max) over rounds; ratios are taken
per round and then summarised, so they compare calls made moments apart. Results go
to benchmarks/results/<name>-<UTC date-time>.json with the load average before and
after.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def spread(values: list[float]) -> dict[str, float]:
    """median, min, max of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def rounds(
    variants: dict[str, Callable[[], Any]], n: int, warmup: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Run every variant once per round for `n` rounds (after `warmup` rounds): per
    variant, the wall and CPU seconds of each call."""
    names = list(variants)
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in names}
    for r in range(warmup + n):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name]()
            t1, c1 = time.perf_counter(), time.process_time()
            if r >= warmup:
                out[name]["wall"].append(t1 - t0)
                out[name]["cpu"].append(c1 - c0)
    return out


def ratios(a: list[float], b: list[float]) -> dict[str, float]:
    """Per-round b/a (how many times faster a is than b when these are times)."""
    return spread([y / x for x, y in zip(a, b, strict=True)])


def write(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` with the date, machine and load averages to results/."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    doc = {
        "benchmark": name,
        "utc": stamp,
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def _commit() -> str:
    """The checkout's commit, '+dirty' when files differ from it ('' outside git)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""
    return rev + ("+dirty" if dirty.strip() else "")  # fmt: skip


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fmt(s: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    """'median (min-max)' of a spread, times `scale`."""
    return (
        f"{s['median'] * scale:.{digits}f} "
        f"({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})"
    )
