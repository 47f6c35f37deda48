"""Type contract of the Arrow export of StreamBatch (src_cython/fastredis/_columns.pyx)."""

from collections.abc import Iterable
from typing import Any

from fastredis._batch import StreamBatch

def schema_capsule(batch: StreamBatch, fields: Iterable[str | bytes] | None = None) -> Any:
    """The batch's Arrow schema as an "arrow_schema" capsule (`fields`: only those
    columns, in that order; absent ones are all null)."""

def array_capsules(
    batch: StreamBatch, fields: Iterable[str | bytes] | None = None
) -> tuple[Any, Any]:
    """(schema capsule, array capsule): the batch as one Arrow struct array."""

def stream_capsule(batch: StreamBatch, fields: Iterable[str | bytes] | None = None) -> Any:
    """An "arrow_array_stream" capsule giving the batch as one record batch."""
