"""StreamBatch as Arrow columns through the PyCapsule interface: pyarrow, Polars and
DuckDB read it; payload columns view the batch's own reply buffer (checked by
address); the exported arrays keep the batch alive; nulls, repeated names, bad
UTF-8, empty batches; fuzzed replies and arguments never crash."""

from __future__ import annotations

import gc
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastredis import _columns
from fastredis._resp import AUTOCLAIM, RANGE, READ, StreamBatch, batch_from_reply
from fastredis.redis_io import make_client, xrange_batch, xread_batch, xreadgroup_batch

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def bulk(x: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(x), x)


def arr(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def entry(eid: bytes, fields: list[tuple[bytes, bytes]] | None) -> bytes:
    if fields is None:
        return arr([bulk(eid), b"*-1\r\n"])
    return arr([bulk(eid), arr([bulk(x) for kv in fields for x in kv])])


def xread(streams: list[tuple[bytes, list[bytes]]]) -> bytes:
    return arr([arr([bulk(name), arr(entries)]) for name, entries in streams])


def address(obj) -> int:
    """Address of the first byte of a buffer-protocol object."""
    view = memoryview(obj)
    if view.nbytes == 0:
        return 0
    return np.frombuffer(view, np.uint8).ctypes.data


def expected_rows(batch: StreamBatch) -> list[dict]:
    """What the table must hold, from the batch's Python API (last value wins)."""
    rows = []
    names: list = []
    for _stream, _eid, fields in batch:
        for key in fields or {}:
            if key not in names:
                names.append(key)
    for k, (stream, _eid, fields) in enumerate(batch):
        ms, seq = batch.id_at(k)
        s = stream.decode() if isinstance(stream, bytes) else stream
        row = {"stream": s, "id_ms": ms, "id_seq": seq}
        for key in names:
            col = key.decode() if isinstance(key, bytes) else key
            row[col] = None if fields is None else fields.get(key)
        rows.append(row)
    return rows


BIG = b"p" * 1000


@pytest.fixture
def mixed() -> StreamBatch:
    """Two streams; a long value, a missing field, a repeated name, a nil entry."""
    reply = xread(
        [
            (
                b"cam",
                [
                    entry(b"5-1", [(b"img", BIG), (b"t", b"1")]),
                    entry(b"5-2", [(b"t", b"2"), (b"t", b"3")]),
                    entry(b"6-0", None),
                ],
            ),
            (b"imu", [entry(b"7-0", [(b"x", b"0.5" * 10)])]),
        ]
    )
    return batch_from_reply(reply, READ)


# --------------------------------------------------------------------------
# the layout
# --------------------------------------------------------------------------


def test_schema_and_values(mixed):
    t = pa.table(mixed)
    t.validate(full=True)
    assert t.schema == pa.schema(
        [
            pa.field("stream", pa.dictionary(pa.int32(), pa.utf8())),
            pa.field("id_ms", pa.uint64(), nullable=False),
            pa.field("id_seq", pa.uint64(), nullable=False),
            ("img", pa.binary_view()),
            ("t", pa.binary_view()),
            ("x", pa.binary_view()),
        ]
    )
    assert t.to_pylist() == expected_rows(mixed)
    assert t.column("t").to_pylist() == [b"1", b"3", None, None]  # the last "t" wins
    assert t.column("img").null_count == 3  # absent, absent, nil entry


def test_text_batches_give_string_view(mixed):
    text = batch_from_reply(mixed.buf, READ, "utf-8")
    t = pa.table(text)
    t.validate(full=True)
    assert t.schema.field("img").type == pa.string_view()
    assert t.to_pylist() == expected_rows(text)
    assert pl.DataFrame(text)["x"].to_list() == [None, None, None, "0.5" * 10]
    got = duckdb.from_arrow(text).query("t", "SELECT length(x) FROM t WHERE x IS NOT NULL")
    assert got.fetchall() == [(30,)]


def test_schema_capsule_and_record_batch(mixed):
    assert pa.schema(mixed) == pa.table(mixed).schema
    rb = pa.record_batch(mixed)
    rb.validate(full=True)
    assert rb.num_rows == 4


def test_polars_and_duckdb(mixed):
    df = pl.DataFrame(mixed)
    assert df.columns == ["stream", "id_ms", "id_seq", "img", "t", "x"]
    assert df["stream"].to_list() == ["cam", "cam", "cam", "imu"]
    assert df["t"].to_list() == [b"1", b"3", None, None]
    assert pl.from_arrow(pa.table(mixed)).equals(df)
    # Polars makes a struct Series of any capsule object given to from_arrow
    assert pl.from_arrow(mixed).struct.unnest().equals(df)
    rel = duckdb.from_arrow(mixed)  # the capsule stream, read by DuckDB itself
    got = rel.query(
        "batch", "SELECT stream, id_ms, octet_length(img) FROM batch WHERE img IS NOT NULL"
    ).fetchall()
    assert got == [("cam", 5, len(BIG))]
    counts = duckdb.from_arrow(mixed).query(
        "b", "SELECT count(*) FROM b GROUP BY stream ORDER BY 1"
    )
    assert counts.fetchall() == [(1,), (3,)]


def test_range_batches_have_a_null_stream_column():
    reply = arr([entry(b"1-0", [(b"a", b"v")]), entry(b"2-0", [(b"a", BIG)])])
    for kind, data in [(RANGE, reply), (AUTOCLAIM, arr([bulk(b"0-0"), reply, arr([])]))]:
        t = pa.table(batch_from_reply(data, kind))
        t.validate(full=True)
        assert t.column("stream").to_pylist() == [None, None]
        assert t.column("a").to_pylist() == [b"v", BIG]
        assert pl.DataFrame(batch_from_reply(data, kind))["stream"].null_count() == 2


def test_a_stream_named_twice_is_one_dictionary_value():
    reply = xread([(b"s", [entry(b"1-0", [(b"a", b"1")])]), (b"s", [entry(b"2-0", [])])])
    t = pa.table(batch_from_reply(reply, READ))
    t.validate(full=True)
    col = t.column("stream").chunks[0]
    assert col.dictionary.to_pylist() == ["s"]
    assert col.to_pylist() == ["s", "s"]


def test_empty_batches():
    for batch in [StreamBatch(), batch_from_reply(b"", READ), batch_from_reply(b"", RANGE)]:
        t = pa.table(batch)
        t.validate(full=True)
        assert t.column_names == ["stream", "id_ms", "id_seq"]
        assert t.num_rows == 0
        assert pl.DataFrame(batch).shape == (0, 3)
    batch = batch_from_reply(xread([(b"s", [])]), READ)
    assert pa.table(batch).num_rows == 0


# --------------------------------------------------------------------------
# no payload copied; the arrays keep the batch alive
# --------------------------------------------------------------------------


def view_targets(col: pa.Array) -> list[int | None]:
    """For each value longer than 12 bytes, the address its view points at."""
    bufs = col.buffers()
    views = np.frombuffer(bufs[1], dtype=np.int32).reshape(-1, 4)[col.offset :]
    out = []
    for k, (n, _prefix, index, offset) in enumerate(views[: len(col)]):
        if col.is_null().to_pylist()[k] or n <= 12:
            out.append(None)
        else:
            out.append(bufs[2 + int(index)].address + int(offset))
    return out


def test_payload_columns_point_into_the_reply_buffer(mixed):
    t = pa.table(mixed)
    img = t.column("img").chunks[0]
    base, end = address(mixed.buf), address(mixed.buf) + mixed.nbytes
    assert img.buffers()[2].address == base  # the variadic buffer IS the reply
    field = mixed.field("img")
    for k, target in enumerate(view_targets(img)):
        if field[k] is not None and len(field[k]) > 12:
            assert target == address(field[k])  # the very bytes batch.field() shows
            assert base <= target < end
    x = t.column("x").chunks[0]
    assert view_targets(x)[3] == address(mixed.field("x")[3])


def test_polars_keeps_the_same_bytes(mixed):
    df = pl.DataFrame(mixed)
    back = df.to_arrow(compat_level=pl.CompatLevel.newest()).column("img").chunks[0]
    assert view_targets(back)[0] == address(mixed.field("img")[0])


def test_ids_are_the_batch_arrays(mixed):
    t = pa.table(mixed)
    offsets = mixed.offsets()
    assert t.column("id_ms").chunks[0].buffers()[1].address == offsets["id_ms"].ctypes.data
    assert t.column("id_seq").chunks[0].buffers()[1].address == offsets["id_seq"].ctypes.data


def test_exported_arrays_keep_the_batch_alive(mixed):
    before = sys.getrefcount(mixed)
    t = pa.table(mixed)
    assert sys.getrefcount(mixed) > before  # held by the arrays, not by us
    want = t.to_pylist()
    del mixed
    gc.collect()
    junk = [bytes(len(BIG)) for _ in range(1000)]  # reuse freed memory, if any was freed
    assert t.to_pylist() == want
    del junk


def test_releasing_the_arrays_releases_the_batch(mixed):
    before = sys.getrefcount(mixed)
    df = pl.DataFrame(mixed)
    t = pa.table(mixed)
    rb = pa.record_batch(mixed)
    del df, t, rb
    gc.collect()
    assert sys.getrefcount(mixed) == before
    cap = mixed.__arrow_c_stream__()
    assert sys.getrefcount(mixed) > before
    del cap  # never imported: the capsule's destructor releases it
    assert sys.getrefcount(mixed) == before


# --------------------------------------------------------------------------
# documented choices and errors
# --------------------------------------------------------------------------


def test_bad_utf8_under_text_decoding_is_an_error_naming_field_and_entry():
    reply = xread([(b"s", [entry(b"1-0", [(b"ok", b"fine")]), entry(b"9-3", [(b"v", b"a\xff")])])])
    text = batch_from_reply(reply, READ, "utf-8")
    with pytest.raises(UnicodeDecodeError, match=r"field 'v' of entry 9-3.*encoding=None"):
        pa.table(text)
    binary = batch_from_reply(reply, READ)
    assert pa.table(binary).column("v").to_pylist() == [None, b"a\xff"]


@pytest.mark.parametrize(
    "value", [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"x" * 20 + b"\x80"]
)
def test_utf8_check_is_strict(value):
    text = batch_from_reply(xread([(b"s", [entry(b"1-0", [(b"v", value)])])]), READ, "utf-8")
    with pytest.raises(UnicodeDecodeError):
        pa.table(text)


def test_utf8_check_accepts_every_plane():
    value = "aé€😀 long enough to be out of line".encode()
    text = batch_from_reply(xread([(b"s", [entry(b"1-0", [(b"v", value)])])]), READ, "utf-8")
    assert pa.table(text).column("v").to_pylist() == [value.decode()]


@pytest.mark.parametrize("name", [b"stream", b"id_ms", b"id_seq"])
def test_a_field_named_like_a_fixed_column_is_refused(name):
    batch = batch_from_reply(xread([(b"s", [entry(b"1-0", [(name, b"v")])])]), READ)
    with pytest.raises(ValueError, match="clashes with the column"):
        pa.table(batch)
    t = pa.table(_Pick(batch, []))  # fields=[...] leaves it out
    assert t.column_names == ["stream", "id_ms", "id_seq"]


def test_field_names_must_be_text():
    batch = batch_from_reply(xread([(b"s", [entry(b"1-0", [(b"\xff", b"v")])])]), READ)
    with pytest.raises(ValueError, match="not valid text"):
        pa.table(batch)
    batch = batch_from_reply(xread([(b"s", [entry(b"1-0", [(b"a\0b", b"v")])])]), READ)
    with pytest.raises(ValueError, match="NUL"):
        pa.table(batch)


def test_a_mostly_null_table_is_refused():
    entries = [entry(b"%d-0" % i, [(b"k%d" % i, b"v")]) for i in range(3000)]
    batch = batch_from_reply(xread([(b"s", entries)]), READ)
    with pytest.raises(ValueError, match="mostly nulls"):
        pa.table(batch)
    assert pa.table(_Pick(batch, ["k7"])).column("k7").null_count == 2999


class _Pick:
    """A batch with chosen columns, through the core's `fields` argument."""

    def __init__(self, batch: StreamBatch, fields: list) -> None:
        self.batch, self.fields = batch, fields

    def __arrow_c_stream__(self, requested_schema=None):
        return _columns.stream_capsule(self.batch, self.fields)


def test_chosen_fields_keep_their_order_and_absent_ones_are_null(mixed):
    t = pa.table(_Pick(mixed, ["x", b"nope", "t"]))
    assert t.column_names == ["stream", "id_ms", "id_seq", "x", "nope", "t"]
    assert t.column("nope").null_count == 4
    schema, _array = _columns.array_capsules(mixed, ["t"])
    assert pa.schema(_Capsule(schema)).names == ["stream", "id_ms", "id_seq", "t"]
    with pytest.raises(ValueError, match="twice"):
        _columns.stream_capsule(mixed, ["t", b"t"])
    with pytest.raises(TypeError, match="bytes or str"):
        _columns.stream_capsule(mixed, [1])


class _Capsule:
    def __init__(self, cap) -> None:
        self.cap = cap

    def __arrow_c_schema__(self):
        return self.cap


# --------------------------------------------------------------------------
# real replies from Valkey
# --------------------------------------------------------------------------


def test_real_xread_xrange_and_xreadgroup(redis_url):
    r = make_client(url=redis_url)
    r.xadd("cam", {"img": BIG, "t": "1"})
    r.xadd("cam", {"t": "2"})
    r.execute_command("XADD", "cam", "*", "t", "3", "t", "4")  # a repeated name
    r.xadd("imu", {"x": "é" * 10})
    batch = xread_batch(r, {"cam": "0", "imu": "0"}, encoding=None)
    t = pa.table(batch)
    t.validate(full=True)
    assert t.to_pylist() == expected_rows(batch)
    assert t.column("t").to_pylist() == [b"1", b"2", b"4", None]
    assert t.column("img").chunks[0].buffers()[2].address == address(batch.buf)
    text = xread_batch(r, {"cam": "0", "imu": "0"}, encoding="utf-8")
    assert pl.DataFrame(text)["x"].to_list() == [None, None, None, "é" * 10]
    ranged = xrange_batch(r, "cam", encoding=None)
    assert pa.table(ranged).column("stream").null_count == 3

    r.xgroup_create("cam", "g", id="0")
    first = r.xrange("cam", count=1)[0][0]
    xreadgroup_batch(r, "g", "c", {"cam": ">"})
    r.xdel("cam", first)
    pending = xreadgroup_batch(r, "g", "c", {"cam": "0"}, encoding=None)  # a nil entry
    pt = pa.table(pending)
    assert pt.num_rows == 3
    assert pt.column("t").to_pylist()[0] is None
    r.close()


# --------------------------------------------------------------------------
# fuzz
# --------------------------------------------------------------------------

KEYS = st.sampled_from([b"a", b"b", b"long-field-name-x", b"", b"\xff", b"stream", "é".encode()])
VALUES = st.one_of(st.binary(max_size=30), st.sampled_from([b"\xff" * 13, BIG, "é".encode()]))
ENTRY = st.one_of(st.none(), st.lists(st.tuples(KEYS, VALUES), max_size=5))
ENCODING = st.sampled_from([None, "utf-8", "latin-1"])


def _fuzz_settings(n: int):
    return settings(
        max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )


def test_a_batch_decoding_another_codec_is_refused_by_name() -> None:
    reply = xread([(b"s", [entry(b"1-1", [(b"a", b"\xc2\x80")])])])
    batch = batch_from_reply(reply, READ, "latin-1")
    assert batch[0][2] == {"a": "\u00c2\x80"}  # what the Python API gives
    with pytest.raises(ValueError, match="decodes text with 'latin-1' and Arrow strings are UTF-8"):
        pa.table(batch)
    binary = pa.table(batch_from_reply(reply, READ, None))
    assert binary.column("a")[0].as_py() == b"\xc2\x80"


def export_or_refuse(batch: StreamBatch, fields=None) -> pa.Table | None:
    """The table, or None when the export refused with its documented errors."""
    try:
        if fields is None:
            return pa.table(batch)
        return pa.table(_Pick(batch, fields))
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        return None


@_fuzz_settings(300)
@given(
    streams=st.lists(
        st.tuples(st.sampled_from([b"s", b"t", b"\xff"]), st.lists(ENTRY, max_size=6)),
        max_size=3,
    ),
    encoding=ENCODING,
)
def test_random_xread_batches_match_the_python_api(streams, encoding):
    n = 0
    parts = []
    for name, entries in streams:
        eids = []
        for fields in entries:
            n += 1
            eids.append(entry(b"%d-%d" % (n, n % 3), fields))
        parts.append((name, eids))
    try:
        batch = batch_from_reply(xread(parts), READ, encoding)
    except UnicodeDecodeError:
        return  # names that the codec refuses: the reader already says so
    t = export_or_refuse(batch)
    if t is None:
        return
    t.validate(full=True)
    try:
        want = expected_rows(batch)
    except UnicodeDecodeError:
        return
    assert t.to_pylist() == want
    assert pl.from_arrow(t).height == len(batch)


@_fuzz_settings(300)
@given(
    entries=st.lists(ENTRY, max_size=8),
    kind=st.sampled_from([RANGE, READ, AUTOCLAIM]),
    encoding=ENCODING,
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    fields=st.one_of(st.none(), st.lists(st.one_of(KEYS, st.text(max_size=3), st.integers()))),
)
def test_mutated_replies_and_arguments_never_crash(entries, kind, encoding, flips, fields):
    body = arr([entry(b"%d-0" % i, f) for i, f in enumerate(entries)])
    data = body
    if kind == READ:
        data = arr([arr([bulk(b"s"), body])])
    elif kind == AUTOCLAIM:
        data = arr([bulk(b"0-0"), body, arr([])])
    raw = bytearray(data)
    for pos, byte in flips:
        if raw:
            raw[pos % len(raw)] = byte
    try:
        batch = batch_from_reply(bytes(raw), kind, encoding)
    except Exception:
        return  # the reader refused the bytes: not this module's concern
    t = export_or_refuse(batch, fields)
    if t is not None:
        t.validate(full=True)
        t.to_pylist()
