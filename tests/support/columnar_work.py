"""Functions the columnar Dask tests run on workers (importable there: not a test module)."""

from __future__ import annotations

import os
from typing import Any


def arrow_summary(rb: Any) -> dict[str, Any]:
    """What a worker saw: the record batch's type, rows, columns and the worker's pid."""
    return {
        "type": type(rb).__name__,
        "rows": rb.num_rows,
        "names": rb.schema.names,
        "ids": [
            f"{ms}-{seq}"
            for ms, seq in zip(rb["id_ms"].to_pylist(), rb["id_seq"].to_pylist(), strict=True)
        ],
        "streams": rb["stream"].to_pylist(),
        "pid": os.getpid(),
    }
