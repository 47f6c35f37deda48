"""The CPU-bound work bench_streamz_dask.py runs on Dask workers (a module of its own, so
workers import it by name instead of unpickling a benchmark module they cannot import)."""

from __future__ import annotations

import hashlib
from typing import Any

ROUNDS_PER_ENTRY = 800  # SHA-256 rounds: ~1 ms of CPU holding the GIL


def work(m: Any) -> int:
    """Hash one entry's payload (the sources decode values: convert=True)."""
    h = m[2]["d"].encode()
    for _ in range(ROUNDS_PER_ENTRY):
        h = hashlib.sha256(h).digest()
    return len(h)


def work_all(entries: Any) -> list[int]:
    """`work` over a fetched StreamBatch or a list of Messages."""
    return [work(m) for m in entries]
