"""fastredis.columnar: to_arrow (view and large_binary layouts, chosen fields) and
to_polars (typed columns), on replies from a real Valkey; the core works without
pyarrow and Polars, and the module names the extra when they are missing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from fastredis.columnar import Columns, to_arrow, to_polars
from fastredis.redis_io import make_client, xread_batch

BIG = b"v" * 5000


def address(obj) -> int:
    return np.frombuffer(memoryview(obj), np.uint8).ctypes.data


@pytest.fixture
def client(redis_url):
    r = make_client(url=redis_url)
    yield r
    r.close()


@pytest.fixture
def readings(client):
    for i in range(5):
        fields = {"temp": f"{i}.5", "n": str(i), "ok": "true" if i % 2 else "0"}
        fields["meta"] = json.dumps({"room": f"r{i}", "tags": [i, i + 1]})
        if i != 3:
            fields["img"] = BIG
        client.xadd("sensors", fields)
    return xread_batch(client, {"sensors": "0"}, encoding=None)


def test_to_arrow_views_the_reply(readings):
    rb = to_arrow(readings)
    assert isinstance(rb, pa.RecordBatch)
    assert rb.schema.field("img").type == pa.binary_view()
    img = rb.column("img")
    assert img.buffers()[2].address == address(readings.buf)
    assert img.to_pylist() == [BIG, BIG, BIG, None, BIG]


def test_large_binary_copies_the_values_once_back_to_back(readings):
    rb = to_arrow(readings, layout="large_binary")
    rb.validate(full=True)
    assert rb.schema.field("img").type == pa.large_binary()
    img = rb.column("img")
    values = img.buffers()[2]
    assert values.size >= 4 * len(BIG)
    assert np.frombuffer(values, np.uint8)[: 4 * len(BIG)].tobytes() == BIG * 4
    lo, hi = address(readings.buf), address(readings.buf) + readings.nbytes
    assert not lo <= values.address < hi  # a copy, not the reply
    assert rb.to_pylist() == to_arrow(readings).to_pylist()


def test_large_string_for_text_batches(client, readings):
    text = xread_batch(client, {"sensors": "0"}, encoding="utf-8")
    rb = to_arrow(text, layout="large_binary")
    assert rb.schema.field("temp").type == pa.large_string()
    assert rb.column("temp").to_pylist() == ["0.5", "1.5", "2.5", "3.5", "4.5"]


def test_fields_choose_and_order_the_columns(readings):
    rb = to_arrow(readings, fields=["n", "absent"])
    assert rb.schema.names == ["stream", "id_ms", "id_seq", "n", "absent"]
    assert rb.column("absent").null_count == 5
    assert pa.table(Columns(readings, ["temp"])).column_names[3:] == ["temp"]
    with pytest.raises(ValueError, match="layout"):
        to_arrow(readings, layout="binary")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="StreamBatch"):
        Columns([1, 2])  # type: ignore[arg-type]


def test_to_polars_types_the_fields(readings):
    meta = pl.Struct({"room": pl.String, "tags": pl.List(pl.Int64)})
    df = to_polars(
        readings,
        schema={"temp": pl.Float64, "n": pl.Int32, "ok": pl.Boolean, "meta": meta, "x": pl.Int64},
    )
    assert df.columns == ["stream", "id_ms", "id_seq", "temp", "n", "ok", "meta", "x", "img"]
    assert df["temp"].to_list() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert df["n"].dtype == pl.Int32
    assert df["ok"].to_list() == [False, True, False, True, False]
    assert df["meta"].struct.field("room").to_list() == ["r0", "r1", "r2", "r3", "r4"]
    assert df["meta"].struct.field("tags").to_list()[2] == [2, 3]
    assert df["x"].dtype == pl.Int64 and df["x"].null_count() == 5
    assert df["img"].dtype == pl.Binary
    inferred = to_polars(readings, schema={"meta": pl.Struct}, fields=["meta"])
    assert inferred.columns == ["stream", "id_ms", "id_seq", "meta"]
    assert inferred["meta"].struct.field("room").to_list()[0] == "r0"


def test_to_polars_refuses_values_that_do_not_parse(readings):
    with pytest.raises(pl.exceptions.InvalidOperationError):
        to_polars(readings, schema={"meta": pl.Int64})
    with pytest.raises(pl.exceptions.InvalidOperationError):
        to_polars(readings, schema={"temp": pl.Boolean})


def test_to_polars_without_schema_is_the_frame(readings):
    assert to_polars(readings).equals(pl.DataFrame(readings))


BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyarrow", "polars"):
            raise ImportError(f"{name} is blocked for this test")
sys.meta_path.insert(0, Block())
"""


def test_the_core_needs_neither_pyarrow_nor_polars():
    code = BLOCKED + textwrap.dedent(
        """
        from fastredis._resp import READ, batch_from_reply
        from fastredis import columnar
        entry = b"*2\\r\\n$3\\r\\n1-0\\r\\n*2\\r\\n$1\\r\\na\\r\\n$1\\r\\nb\\r\\n"
        batch = batch_from_reply(b"*1\\r\\n*2\\r\\n$1\\r\\ns\\r\\n*1\\r\\n" + entry, READ)
        assert type(batch.__arrow_c_stream__()).__name__ == "PyCapsule"
        try:
            columnar.to_arrow(batch)
        except ImportError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'fastredis[columnar]'" in out.stdout
