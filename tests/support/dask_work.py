"""Functions the Dask tests run on workers (importable there: not a test module)."""

from __future__ import annotations

import os
import time
from typing import Any


def burn(m: Any, seconds: float = 0.0) -> dict[str, Any]:
    """A Message in, the fields to store out: its id, the worker's pid; `seconds` of work."""
    if seconds:
        time.sleep(seconds)
    return {"id": m[1], "i": m[2]["i"], "pid": os.getpid()}


def burn_all(entries: Any, seconds: float = 0.0) -> list[dict[str, Any]]:
    """The same for a sequence of entries (a fetched StreamBatch, a list of Messages)."""
    return [burn(m, seconds) for m in entries]


def pid() -> int:
    return os.getpid()
