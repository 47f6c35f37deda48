"""A stream's id or time range as a Dask DataFrame, one partition per slice of time.

Entry ids are ``<milliseconds>-<sequence>``, so a time range is an id range and a
slice of milliseconds is exactly one XRANGE: partition k holds the entries whose
time lies in ``[t_k, t_k+1)``, and the frame's index (``id_ms``) has known
divisions. Each partition is read where it runs (a Dask worker), in XRANGE pages of
``page`` entries, as Arrow (one copy into ``large_binary``/``large_string``:
pandas has no view types), then pandas with Arrow-backed columns. Needs the
``dask`` and ``columnar`` extras.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from fastredis._resp import RANGE, batch_from_reply
from fastredis.columnar import FieldNames, _require, to_arrow
from fastredis.ids import format_id, parse_id
from fastredis.redis_io import xrange_batch, xrevrange_batch
from fastredis.streamz.descriptors import Descriptor, client_for

__all__ = ["read_dask", "read_partition", "time_slices"]

MAX_SEQ = 2**64 - 1
Bound = str | int | datetime


def _bound(x: Bound, end: bool) -> str:
    """An XRANGE bound from an entry id, milliseconds or a datetime (naive = UTC)."""
    if isinstance(x, datetime):
        when = x if x.tzinfo is not None else x.replace(tzinfo=timezone.utc)
        x = int(when.timestamp() * 1000)
    if isinstance(x, int):
        return format_id(x, MAX_SEQ if end else 0)
    if x in ("-", "+"):
        return x
    ms, seq = parse_id(x)
    return format_id(ms, seq if "-" in x else (MAX_SEQ if end else 0))


def time_slices(first: str, last: str, n: int) -> list[tuple[str, str, int]]:
    """Split the ids ``first``..``last`` into at most n id ranges of equal time:
    ``(lo, hi, t_k)`` each, disjoint, together exactly the range."""
    (t0, _), (t1, _) = parse_id(first), parse_id(last)
    n = max(1, min(n, t1 - t0 + 1))
    cuts = [t0 + (t1 - t0 + 1) * k // n for k in range(n)]
    out = []
    for k, t in enumerate(cuts):
        lo = first if k == 0 else format_id(t, 0)
        hi = last if k == n - 1 else format_id(cuts[k + 1] - 1, MAX_SEQ)
        out.append((lo, hi, t))
    return out


def read_partition(part: Descriptor, fields: list[str], page: int = 10_000) -> Any:
    """One id range as a pandas frame indexed by ``id_ms`` (what each task runs)."""
    pa = _require("pyarrow")
    pd = _require("pandas", "dask")
    client = client_for(part)
    batches = []
    lo = part.first
    while True:
        batch = xrange_batch(client, part.stream, lo, part.last, page, part.encoding)
        batches.append(to_arrow(batch, "large_binary", fields, part.stream))
        if len(batch) < page:
            break
        lo = "(" + format_id(*batch.id_at(-1))
    table = pa.Table.from_batches(batches)
    wide = (pa.large_binary(), pa.large_string())
    frame = table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if t in wide else None)
    return frame.set_index("id_ms")


def read_dask(
    stream: str,
    start: Bound = "-",
    end: Bound = "+",
    *,
    url: str | None = None,
    client_params: Mapping[str, Any] | None = None,
    npartitions: int = 8,
    fields: FieldNames | None = None,
    encoding: str | None = "utf-8",
    page: int = 10_000,
) -> Any:
    """The entries of `stream` from `start` to `end` (entry ids, milliseconds or
    datetimes; inclusive) as a Dask DataFrame indexed by ``id_ms`` with known
    divisions, in at most `npartitions` partitions of equal time.

    Columns: ``stream`` (categorical), ``id_seq``, then `fields` (default: the
    fields of the range's first entry; a field an entry lacks is null), binary or,
    with an `encoding`, text. Nothing is read here but the range's first and last
    entry; the partitions are read by the tasks."""
    dd = _require("dask.dataframe", "dask")
    params = dict(client_params or {})
    lo, hi = _bound(start, False), _bound(end, True)
    client = client_for(Descriptor(stream, lo, hi, 1, url, params, encoding))
    first = xrange_batch(client, stream, lo, hi, 1, encoding)
    last = xrevrange_batch(client, stream, hi, lo, 1, encoding)
    names = _field_names(first, fields)
    empty = to_arrow(batch_from_reply(b"", RANGE, encoding), "large_binary", names, stream)
    if not len(first):
        parts = [Descriptor(stream, "1", "0", 0, url, params, encoding)]  # reads nothing
        divisions: tuple[Any, ...] = (None, None)
    else:
        ids = format_id(*first.id_at(0)), format_id(*last.id_at(0))
        slices = time_slices(*ids, npartitions)
        parts = [Descriptor(stream, a, b, 0, url, params, encoding) for a, b, _ in slices]
        divisions = (*(t for _, _, t in slices), last.id_at(0)[0])
    meta = _meta(empty)
    return dd.from_map(
        read_partition, parts, fields=names, page=page, meta=meta, divisions=divisions
    )


def _field_names(first: Any, fields: Iterable[Any] | None) -> list[str]:
    if fields is not None:
        return [f.decode() if isinstance(f, bytes) else f for f in fields]
    if not len(first) or not first[0][2]:
        return []
    return [k.decode() if isinstance(k, bytes) else k for k in first[0][2]]


def _meta(empty: Any) -> Any:
    pa = _require("pyarrow")
    pd = _require("pandas", "dask")
    wide = (pa.large_binary(), pa.large_string())
    frame = pa.Table.from_batches([empty]).to_pandas(
        types_mapper=lambda t: pd.ArrowDtype(t) if t in wide else None
    )
    return frame.set_index("id_ms")
