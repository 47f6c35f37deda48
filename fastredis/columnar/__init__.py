"""Stream batches as Arrow record batches and Polars frames.

A :class:`~fastredis.StreamBatch` already speaks the Arrow PyCapsule interface
(``pa.table(batch)``, ``pl.DataFrame(batch)``, DuckDB): its payload columns are
``binary_view`` (``string_view`` when the batch decodes text) viewing the reply
buffer, with no payload byte copied. This module adds what needs pyarrow or Polars
(the ``columnar`` extra, ``pip install 'fastredis[columnar]'``):

* :func:`to_arrow`: a ``pyarrow.RecordBatch``, choosing the columns, and a
  ``large_binary`` layout (values back to back: exactly one copy) for consumers
  without view types;
* :func:`to_polars`: a Polars frame with typed columns (numbers parsed from text,
  JSON decoded);
* :func:`fastredis.columnar.dask.read_dask`: a stream's id or time range as a Dask
  DataFrame, partitioned by entry id (the ``dask`` extra as well).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fastredis import _columns
from fastredis._batch import StreamBatch
from fastredis.ids import parse_id

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["Columns", "messages_to_arrow", "to_arrow", "to_polars"]

Layout = Literal["binary_view", "large_binary"]
FieldNames = Iterable[str | bytes]
_TRUE = ["1", "true", "True", "TRUE", "yes", "on"]
_FALSE = ["0", "false", "False", "FALSE", "no", "off"]


def _require(module: str, extra: str = "columnar") -> Any:
    """Import an optional module (pyarrow, polars, ...), or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{module} is needed for columnar reads: pip install 'fastredis[{extra}]'"
        ) from e


class Columns:
    """A batch restricted to some field columns (in that order; a field no entry
    has is an all-null column), as an Arrow PyCapsule stream. With ``fields=None``
    every field, in order of first appearance. Batches read with the same
    ``fields`` share one schema, so they concatenate."""

    def __init__(self, batch: StreamBatch, fields: FieldNames | None = None) -> None:
        if not isinstance(batch, StreamBatch):
            raise TypeError(f"expected a StreamBatch, not {type(batch).__name__}")
        self.batch = batch
        self.fields = None if fields is None else list(fields)

    def __arrow_c_schema__(self) -> Any:
        return _columns.schema_capsule(self.batch, self.fields)

    def __arrow_c_array__(self, requested_schema: Any = None) -> tuple[Any, Any]:
        return _columns.array_capsules(self.batch, self.fields)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return _columns.stream_capsule(self.batch, self.fields)


def to_arrow(
    batch: StreamBatch,
    layout: Layout = "binary_view",
    fields: FieldNames | None = None,
    stream: str | None = None,
) -> pa.RecordBatch:
    """The batch as one ``pyarrow.RecordBatch``.

    ``layout="binary_view"`` (default): the payload columns view the batch's reply
    buffer (no copy; the record batch keeps the StreamBatch alive).
    ``layout="large_binary"``: ``large_binary`` / ``large_string`` columns, the
    values copied once, back to back, for consumers without view types.
    ``fields``: only those field columns, in that order (see :class:`Columns`).
    ``stream``: the name for the ``stream`` column of an XRANGE/XCLAIM batch, whose
    reply names none (otherwise that column is null)."""
    pa = _require("pyarrow")
    if layout not in ("binary_view", "large_binary"):
        raise ValueError(f"layout must be 'binary_view' or 'large_binary', not {layout!r}")
    rb = pa.record_batch(Columns(batch, fields))
    if stream is not None and not batch.streams:
        names = pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(rb.num_rows, np.int32)), pa.array([stream], pa.string())
        )
        rb = rb.set_column(0, rb.schema.field(0), names)
    if layout == "binary_view":
        return rb
    wide = {pa.binary_view(): pa.large_binary(), pa.string_view(): pa.large_string()}
    schema = pa.schema([f.with_type(wide.get(f.type, f.type)) for f in rb.schema])
    return rb.cast(schema)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else x


def messages_to_arrow(
    messages: Iterable[Any], text: bool, fields: FieldNames | None = None
) -> pa.RecordBatch:
    """``(stream, id, fields)`` entries already made into Python objects (the entries
    a consumer group replays or claims) as a record batch with the columns of
    :func:`to_arrow`: values copied into ``string_view`` (``text``) or
    ``binary_view`` columns, a repeated name impossible (fields are dicts).
    ``fields``: those field columns, in that order (absent ones null)."""
    pa = _require("pyarrow")
    rows = list(messages)
    names: dict[Any, None] = {}
    if fields is not None:
        want = [_text(f) for f in fields]
        names = dict.fromkeys(f.encode() if not text else f for f in want)
    for _, _, data in rows if fields is None else ():
        names.update(dict.fromkeys(data or ()))
    ids = [parse_id(entry_id) for _, entry_id, _ in rows]
    kind = pa.string_view() if text else pa.binary_view()
    streams = pa.array([None if s is None else _text(s) for s, _, _ in rows], pa.string())
    columns = [
        streams.dictionary_encode(),
        pa.array([ms for ms, _ in ids], pa.uint64()),
        pa.array([seq for _, seq in ids], pa.uint64()),
        *(pa.array([(f or {}).get(k) for _, _, f in rows], kind) for k in names),
    ]
    schema = [
        pa.field("stream", columns[0].type),
        pa.field("id_ms", pa.uint64(), nullable=False),
        pa.field("id_seq", pa.uint64(), nullable=False),
        *(pa.field(_text(k), kind) for k in names),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(schema))


def _typed(column: pl.Series, dtype: Any, pl: Any) -> pl.Series:
    """A binary or text column as `dtype`: JSON decoded for nested types (a bare
    ``pl.Struct``/``pl.List`` infers the fields), booleans from 1/0, true/false,
    yes/no, on/off; anything else cast strictly from its text."""
    if dtype == pl.Binary:
        return column.cast(pl.Binary)
    text = column.cast(pl.String)
    if dtype in (pl.Struct, pl.List):
        return text.str.json_decode()
    if isinstance(dtype, (pl.Struct, pl.List, pl.Array)):
        return text.str.json_decode(dtype)
    if dtype == pl.Boolean:
        mapping = dict.fromkeys(_TRUE, True) | dict.fromkeys(_FALSE, False)
        return text.replace_strict(mapping, return_dtype=pl.Boolean)
    return text.cast(dtype, strict=True)


def to_polars(
    batch: StreamBatch,
    schema: Mapping[str, Any] | None = None,
    fields: FieldNames | None = None,
) -> pl.DataFrame:
    """The batch as a Polars frame, columns typed by ``schema``.

    ``schema`` maps field names to Polars dtypes: numbers and booleans are parsed
    from the values' text (an unparsable value raises), ``pl.Struct``/``pl.List``
    (a class or a full dtype) decode JSON, ``pl.String`` decodes UTF-8. Fields
    not in ``schema`` stay as they are (binary, or text when the batch decodes
    text). ``fields`` chooses the columns as in :func:`to_arrow`; by default the
    schema's fields come first, in the schema's order, then any others."""
    pl = _require("polars")
    df = pl.DataFrame(Columns(batch, fields))
    if not schema:
        return df
    if fields is None:  # every field: the schema's first (absent ones null), then the rest
        absent = [pl.lit(None, pl.Binary).alias(n) for n in schema if n not in df.columns]
        df = df.with_columns(absent)
        rest = [c for c in df.columns[3:] if c not in schema]
        df = df.select([*df.columns[:3], *schema, *rest])
    elif any(name not in df.columns[3:] for name in schema):
        raise ValueError("every field in schema must be one of fields")
    return df.with_columns([_typed(df[name], dtype, pl) for name, dtype in schema.items()])
