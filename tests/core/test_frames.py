"""The compiled frame packer (fastredis._frames): pull frames out of a StreamBatch,
push frames into (sid, id, view) entries, and RESP encoding of XADD commands.

No Redis server is needed: batches are parsed from hand-written reply bytes."""

from __future__ import annotations

import json
import random
from itertools import pairwise

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from fastredis._frames import (
    REFERENCE_MIN,
    FrameError,
    json_string,
    pack_commands,
    pull_header,
    pull_payload,
    pull_views,
    push_entries,
    values_nbytes,
)
from fastredis._resp import AUTOCLAIM, RANGE, READ, Reader, StreamBatch
from fastredis.ids import is_entry_id, parse_id

# --------------------------------------------------------------------------
# building batches from RESP2 reply bytes
# --------------------------------------------------------------------------

Fields = list[tuple[bytes, bytes]] | None  # None: a nil (deleted) entry
Entry = tuple[bytes, Fields]


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _entries(entries: list[Entry]) -> bytes:
    out = [b"*%d\r\n" % len(entries)]
    for eid, fields in entries:
        out.append(b"*2\r\n" + _bulk(eid))
        if fields is None:
            out.append(b"*-1\r\n")
        else:
            out.append(b"*%d\r\n" % (2 * len(fields)))
            out.extend(_bulk(k) + _bulk(v) for k, v in fields)
    return b"".join(out)


def xread_reply(streams: list[tuple[bytes, list[Entry]]]) -> bytes:
    body = b"".join(b"*2\r\n" + _bulk(name) + _entries(es) for name, es in streams)
    return b"*%d\r\n" % len(streams) + body


def batch_of(reply: bytes, kind: int) -> StreamBatch:
    reader = Reader()
    reader.expect_batch(kind)
    reader.feed(reply)
    batch = reader.gets()
    assert isinstance(batch, StreamBatch)
    return batch


def read_batch(streams: list[tuple[bytes, list[Entry]]]) -> StreamBatch:
    return batch_of(xread_reply(streams), READ)


def range_batch(entries: list[Entry]) -> StreamBatch:
    return batch_of(_entries(entries), RANGE)


def expected_value(fields: Fields, key: bytes = b"d") -> bytes:
    """The value the frame carries: the last `key` field, b"" if none or nil."""
    value = b""
    for k, v in fields or ():
        if k == key:
            value = v
    return value


def readme_slices(header_bytes: bytes, entries: bytes) -> list[tuple[str, str, bytes]]:
    """The client code of the Redis Streamer README (Receive: /data/{stream_id}/pull); only
    `offsets[1:] + (None,)` is spelled `(*offsets[1:], None)` for the linter."""
    header = json.loads(header_bytes)
    out = []
    sids, ts, offsets = tuple(zip(*header, strict=True)) or ((),) * 3
    for sid, t, start, end in zip(sids, ts, offsets, (*offsets[1:], None), strict=False):
        out.append((sid, t, entries[start:end]))
    return out


def check_round_trip(
    batch: StreamBatch,
    streams: list[tuple[bytes, list[Entry]]],
    key: bytes = b"d",
) -> None:
    expected = [
        (name.decode("utf-8", "replace"), eid.decode(), expected_value(fields, key))
        for name, es in streams
        for eid, fields in es
    ]
    header = pull_header(batch, key)
    payload = pull_payload(batch, key)
    assert readme_slices(header, payload) == expected
    assert payload == b"".join(v for _, _, v in expected)
    views = pull_views(batch, key)
    assert len(views) == len(expected)
    assert [bytes(v) for v in views] == [v for _, _, v in expected]
    for v in views:
        assert v.obj is batch.buf  # views into the batch buffer, not copies
    # start offsets are the running sums of the value lengths
    starts = [start for _, _, start in json.loads(header)]
    sums = np.cumsum([0] + [len(v) for _, _, v in expected])[:-1].tolist()
    assert starts == sums


# --------------------------------------------------------------------------
# pull: header, payload, views
# --------------------------------------------------------------------------


def test_pull_one_entry() -> None:
    streams = [(b"cam", [(b"1638125133432-0", [(b"d", b"hello")])])]
    batch = read_batch(streams)
    assert pull_header(batch) == b'[["cam","1638125133432-0",0]]'
    assert pull_payload(batch) == b"hello"
    check_round_trip(batch, streams)


def test_pull_empty_batch() -> None:
    for batch in (batch_of(b"*-1\r\n", READ), batch_of(b"*0\r\n", READ), range_batch([])):
        assert pull_header(batch) == b"[]"
        assert pull_payload(batch) == b""
        assert pull_views(batch) == []
        assert readme_slices(pull_header(batch), pull_payload(batch)) == []


def test_pull_ten_thousand_binary_entries() -> None:
    rng = random.Random(3)
    entries: list[Entry] = [
        (b"%d-%d" % (1700000000000 + i // 3, i % 3), [(b"d", rng.randbytes(rng.randrange(0, 64)))])
        for i in range(10_000)
    ]
    streams = [(b"s", entries)]
    check_round_trip(read_batch(streams), streams)


def test_pull_binary_values_with_crlf_and_zero_bytes() -> None:
    values = [bytes(range(256)), b"\r\n", b"", b"\x00" * 10, b"$3\r\nabc\r\n", b""]
    entries: list[Entry] = [(b"%d-0" % (i + 1), [(b"d", v)]) for i, v in enumerate(values)]
    streams = [(b"bin", entries)]
    batch = read_batch(streams)
    check_round_trip(batch, streams)
    header = json.loads(pull_header(batch))
    # a 0-byte value starts where the next one starts
    assert header[2][2] == header[3][2] == 258
    assert header[5][2] == len(pull_payload(batch))


def test_pull_only_empty_values() -> None:
    streams = [(b"z", [(b"1-0", [(b"d", b"")]), (b"2-0", [(b"d", b"")])])]
    batch = read_batch(streams)
    assert pull_header(batch) == b'[["z","1-0",0],["z","2-0",0]]'
    assert pull_payload(batch) == b""
    check_round_trip(batch, streams)


def test_pull_missing_field_nil_entry_and_other_fields() -> None:
    entries: list[Entry] = [
        (b"1-0", [(b"d", b"aa")]),
        (b"2-0", [(b"x", b"not me")]),  # no d
        (b"3-0", None),  # deleted entry (XCLAIM/XREADGROUP history)
        (b"4-0", []),
        (b"5-0", [(b"x", b"1"), (b"d", b"bbb"), (b"y", b"2")]),
        (b"6-0", [(b"d", b"first"), (b"d", b"last")]),  # the last value wins
    ]
    streams = [(b"s", entries)]
    batch = read_batch(streams)
    check_round_trip(batch, streams)
    assert json.loads(pull_header(batch)) == [
        ["s", "1-0", 0],
        ["s", "2-0", 2],
        ["s", "3-0", 2],
        ["s", "4-0", 2],
        ["s", "5-0", 2],
        ["s", "6-0", 5],
    ]
    assert pull_payload(batch) == b"aabbblast"
    # another field, given as bytes or str
    check_round_trip(batch, streams, key=b"x")
    assert pull_payload(batch, "x") == b"not me1"
    assert pull_header(batch, "x") == pull_header(batch, b"x")
    assert pull_payload(batch, b"nope") == b""
    # every field value counts (the pulled-bytes metric), not only `d`
    assert values_nbytes(batch) == 2 + 6 + 1 + 3 + 1 + 5 + 4


def test_pull_multi_stream_batch() -> None:
    streams = [
        (b"a", [(b"1-0", [(b"d", b"A1")]), (b"1-1", [(b"d", b"A22")])]),
        (b"b", [(b"5-10", [(b"d", b"B1")])]),
        (b"c", []),
        (b"d", [(b"7-0", [(b"d", b"")]), (b"8-0", [(b"d", b"D")])]),
    ]
    batch = read_batch(streams)
    check_round_trip(batch, streams)
    assert json.loads(pull_header(batch)) == [
        ["a", "1-0", 0],
        ["a", "1-1", 2],
        ["b", "5-10", 5],
        ["d", "7-0", 7],
        ["d", "8-0", 7],
    ]


@pytest.mark.parametrize(
    "name",
    [
        b'quo"te',
        b"back\\slash",
        b"ctl\x00\x01\x07\x08\x09\x0a\x0c\x0d\x1b\x1f\x7f",
        "ünïcödé ☃ 𝄞".encode(),
        b"\xff\xfe bad utf-8 \xc3",
        b"\xed\xa0\x80 surrogate, \xe0\x80 overlong, \xf4\x90\x80\x80 too big",
        "</script>\u2028".encode(),
        b"",
    ],
)
def test_pull_escaped_names(name: bytes) -> None:
    streams = [(name, [(b"1-0", [(b"d", b"v")])]), (b"plain", [(b"2-0", [(b"d", b"w")])])]
    batch = read_batch(streams)
    header = pull_header(batch)
    header.decode("utf-8")  # always valid UTF-8
    check_round_trip(batch, streams)
    assert json.loads(header)[0][0] == name.decode("utf-8", "replace")


@given(st.binary(max_size=40))
def test_json_string_matches_replace_decoding(raw: bytes) -> None:
    encoded = json_string(raw)
    encoded.decode("utf-8")
    assert json.loads(encoded) == raw.decode("utf-8", "replace")


@given(st.text(max_size=40))
def test_json_string_of_text(text: str) -> None:
    try:
        expected = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be encoded
        return
    assert json.loads(json_string(text)) == expected.decode()


def test_json_string_escapes() -> None:
    assert json_string(b'a"b\\c\nd\te\x01') == b'"a\\"b\\\\c\\nd\\te\\u0001"'
    assert json_string(b"\xff") == b'"\\ufffd"'
    assert json_string("é") == '"é"'.encode()


def test_pull_range_batch_needs_sid() -> None:
    entries: list[Entry] = [(b"1-0", [(b"d", b"ab")]), (b"2-0", [(b"d", b"c")])]
    batch = range_batch(entries)
    with pytest.raises(ValueError, match="sid"):
        pull_header(batch)
    assert pull_payload(batch) == b"abc"
    header = pull_header(batch, sid="cam 1")
    assert header == b'[["cam 1","1-0",0],["cam 1","2-0",2]]'
    assert pull_header(batch, b"d", b"cam 1") == header
    assert readme_slices(header, pull_payload(batch)) == [
        ("cam 1", "1-0", b"ab"),
        ("cam 1", "2-0", b"c"),
    ]
    assert json.loads(pull_header(batch, sid='q"\\')) [0][0] == 'q"\\'  # fmt: skip


def test_pull_resp3_map_and_autoclaim_batches() -> None:
    resp3 = (
        b"%2\r\n"
        + _bulk(b"a")
        + _entries([(b"1-0", [(b"d", b"xy")])])
        + _bulk(b"b")
        + _entries([(b"2-0", [(b"d", b"z")])])
    )
    batch = batch_of(resp3, READ)
    assert pull_header(batch) == b'[["a","1-0",0],["b","2-0",2]]'
    assert pull_payload(batch) == b"xyz"
    autoclaim = (
        b"*3\r\n"
        + _bulk(b"0-0")
        + _entries([(b"1-0", [(b"d", b"xy")]), (b"2-0", None)])
        + b"*1\r\n"
        + _bulk(b"3-0")
    )
    batch = batch_of(autoclaim, AUTOCLAIM)
    with pytest.raises(ValueError, match="sid"):
        pull_header(batch)
    assert pull_header(batch, sid="s") == b'[["s","1-0",0],["s","2-0",2]]'
    assert pull_payload(batch) == b"xy"
    assert [bytes(v) for v in pull_views(batch)] == [b"xy", b""]


def test_pull_sid_overrides_read_names() -> None:
    batch = read_batch([(b"a", [(b"1-0", [(b"d", b"x")])]), (b"b", [(b"2-0", [(b"d", b"y")])])])
    assert json.loads(pull_header(batch, sid="z")) == [["z", "1-0", 0], ["z", "2-0", 1]]


def test_pull_large_payload_views_and_copy() -> None:
    big = [bytes([i]) * (1 << 20) for i in range(5)]
    streams = [(b"img", [(b"%d-0" % (i + 1), [(b"d", v)]) for i, v in enumerate(big)])]
    batch = read_batch(streams)
    payload = pull_payload(batch)
    assert payload == b"".join(big)
    assert b"".join(pull_views(batch)) == payload
    assert [s for _, _, s in json.loads(pull_header(batch))] == [i << 20 for i in range(5)]


def test_pull_rejects_bad_field_type() -> None:
    batch = read_batch([(b"a", [(b"1-0", [(b"d", b"x")])])])
    with pytest.raises(TypeError):
        pull_header(batch, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pull_payload(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sid must be str or bytes"):
        pull_header(batch, sid=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        json_string(3)  # type: ignore[arg-type]
    assert pull_header(batch, sid=bytearray(b"q")) == b'[["q","1-0",0]]'


entry_st = st.tuples(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(
        st.tuples(st.sampled_from([b"d", b"x", b"dd", b""]), st.binary(max_size=20)),
        max_size=4,
    )
    | st.none(),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.binary(max_size=12), st.lists(entry_st, max_size=6)),
        max_size=4,
    )
)
def test_pull_round_trip_random(raw: list) -> None:
    streams = [
        (name, [(b"%d-%d" % (ms, seq), fields) for ms, seq, fields in es]) for name, es in raw
    ]
    batch = read_batch(streams)
    check_round_trip(batch, streams)
    values = [len(v) for _, es in streams for _, fields in es for _, v in fields or []]
    assert values_nbytes(batch) == sum(values)


# --------------------------------------------------------------------------
# push: header validation
# --------------------------------------------------------------------------


def test_push_offsets_form() -> None:
    payload = b"aaabbbbc"
    entries = push_entries([3, 7, 8], payload, ["s"])
    assert [(sid, eid, bytes(v)) for sid, eid, v in entries] == [
        ("s", "*", b"aaa"),
        ("s", "*", b"bbbb"),
        ("s", "*", b"c"),
    ]
    for _, _, view in entries:
        assert isinstance(view, memoryview)
        assert view.obj is payload  # a slice of the payload, no copy


def test_push_offsets_form_goes_to_every_sid() -> None:
    entries = push_entries([1, 3], b"xyz", ["a", "b"])
    assert [(sid, eid, bytes(v)) for sid, eid, v in entries] == [
        ("a", "*", b"x"),
        ("b", "*", b"x"),
        ("a", "*", b"yz"),
        ("b", "*", b"yz"),
    ]


def test_push_readme_single_entry() -> None:
    data = bytes(range(256)) * 10
    [(sid, eid, view)] = push_entries(json.loads(json.dumps([len(data)])), data, ["counter"])
    assert (sid, eid, bytes(view)) == ("counter", "*", data)


def test_push_pair_and_triple_forms() -> None:
    payload = bytearray(b"0123456789")
    pairs = push_entries([["a", 4], ["b", 4], ["a", 10]], payload, ["ignored"])
    assert [(s, i, bytes(v)) for s, i, v in pairs] == [
        ("a", "*", b"0123"),
        ("b", "*", b""),
        ("a", "*", b"456789"),
    ]
    triples = push_entries(
        [["a", "5-1", 2], ["a", "*", 3], ["b", "17", 5], ["a", "5-2", 10]],
        memoryview(payload),
        [],
    )
    assert [(s, i, bytes(v)) for s, i, v in triples] == [
        ("a", "5-1", b"01"),
        ("a", "*", b"2"),
        ("b", "17", b"34"),
        ("a", "5-2", b"56789"),
    ]
    for _, _, view in triples:
        assert view.obj is payload


def test_push_empty_frames() -> None:
    assert push_entries([], b"", ["s"]) == []
    assert [(s, i, bytes(v)) for s, i, v in push_entries([0], b"", ["s"])] == [("s", "*", b"")]
    assert len(push_entries([0, 0, 0], b"", ["s"])) == 3


def test_push_numpy_payload() -> None:
    arr = np.arange(6, dtype=np.float64)
    [(_, _, a), (_, _, b)] = push_entries([16, 48], arr, ["s"])
    assert bytes(a) + bytes(b) == arr.tobytes()
    assert a.nbytes == 16


U64 = 2**64 - 1

BAD_HEADERS = [
    # (header, payload, sids, message fragment)
    ({"a": 1}, b"x", ["s"], "header must be a JSON array"),
    ("[1]", b"x", ["s"], "header must be a JSON array"),
    ([], b"abc", ["s"], "empty header but the payload has 3 bytes"),
    ([150], b"x" * 100, ["s"], "offset 0 (150) exceeds payload length 100"),
    ([10, 50, 150], b"x" * 100, ["s"], "offset 2 (150) exceeds payload length 100"),
    ([-1, 3], b"abc", ["s"], "offset 0 (-1) is negative"),
    ([2, 1, 3], b"abc", ["s"], "offset 1 (1) is less than offset 0 (2)"),
    ([1, 2], b"abc", ["s"], "offset 1 (2) does not reach the end of the payload (length 3)"),
    ([0], b"abc", ["s"], "offset 0 (0) does not reach the end"),
    ([1.0, 3], b"abc", ["s"], "entry 0: expected an end offset"),
    ([1, 3.0], b"abc", ["s"], "entry 1: expected an end offset like entry 0, got float 3.0"),
    ([True], b"x", ["s"], "entry 0"),
    ([1, True], b"xy", ["s"], "entry 1: expected an end offset like entry 0, got bool"),
    (["3"], b"abc", ["s"], "entry 0: expected an end offset"),
    ([None], b"abc", ["s"], "entry 0"),
    ([2**70], b"abc", ["s"], f"offset 0 ({2**70}) exceeds payload length 3"),
    ([-(2**70)], b"abc", ["s"], "is negative"),
    # mixing forms
    ([1, ["a", 3]], b"abc", ["s"], "entry 1: expected an end offset like entry 0, got an array"),
    ([["a", 1], 3], b"abc", ["s"], "entry 1: expected [sid, end] like entry 0, got an offset"),
    ([["a", 1], ["a", "*", 3]], b"abc", ["s"], "entry 1: expected [sid, end] like entry 0"),
    ([["a", "*", 1], ["a", 3]], b"abc", ["s"], "entry 1: expected [sid, id, end] like entry 0"),
    ([["a"]], b"abc", ["s"], "entry 0: expected an end offset, [sid, end] or [sid, id, end]"),
    ([["a", "*", "x", 3]], b"abc", ["s"], "got an array of 4"),
    # sids
    ([["", 3]], b"abc", ["s"], "entry 0: sid '' must be a non-empty string"),
    ([["a", 1], [7, 3]], b"abc", ["s"], "entry 1: sid 7 must be a non-empty string"),
    ([[None, "*", 3]], b"abc", ["s"], "entry 0: sid None"),
    ([["a", 1.5]], b"abc", ["s"], "offset 0 (1.5) is not an integer"),
    ([["a", False]], b"abc", ["s"], "offset 0 (False) is not an integer"),
    ([["a", 4]], b"abc", ["s"], "offset 0 (4) exceeds payload length 3"),
    ([3], b"abc", [], "no stream to push to"),
    ([3], b"abc", ["a", ""], "sid 1 ('') must be a non-empty string"),
    ([3], b"abc", [b"a"], "sid 0 (b'a') must be a non-empty string"),
    # ids
    ([["a", "x", 3]], b"abc", ["s"], "entry 0: id 'x' is not '*' or a stream id"),
    ([["a", 5, 3]], b"abc", ["s"], "entry 0: id 5 must be a string"),
    ([["a", "", 3]], b"abc", ["s"], "id '' is not '*' or a stream id"),
    ([["a", "1-", 3]], b"abc", ["s"], "id '1-' is not"),
    ([["a", "-1", 3]], b"abc", ["s"], "id '-1' is not"),
    ([["a", "1-2-3", 3]], b"abc", ["s"], "id '1-2-3' is not"),
    ([["a", "1-*", 3]], b"abc", ["s"], "id '1-*' is not"),
    ([["a", " 1", 3]], b"abc", ["s"], "id ' 1' is not"),
    ([["a", "\u0661", 3]], b"abc", ["s"], "is not '*' or a stream id"),  # Arabic-Indic digit
    ([["a", f"{U64 + 1}-0", 3]], b"abc", ["s"], "is not '*' or a stream id"),
    ([["a", f"1-{U64 + 1}", 3]], b"abc", ["s"], "is not '*' or a stream id"),
    ([["a", "0" * 20 + "1", 3]], b"abc", ["s"], "is not '*' or a stream id"),  # 21 digits
    ([["a", "1-" + "0" * 20 + "1", 3]], b"abc", ["s"], "is not '*' or a stream id"),
    ([["a", "0-0", 3]], b"abc", ["s"], "id '0-0' must be greater than 0-0"),
    ([["a", "0", 3]], b"abc", ["s"], "id '0' must be greater than 0-0"),
    (
        [["a", "5-2", 1], ["b", "1", 2], ["a", "5-2", 3]],
        b"abc",
        ["s"],
        "entry 2: id '5-2' is not greater than the id 5-2 given earlier for stream 'a'",
    ),
    ([["a", "5-10", 1], ["a", "5-9", 3]], b"abc", ["s"], "'5-9' is not greater than the id 5-10"),
    ([["a", "6", 1], ["a", "5-99", 3]], b"abc", ["s"], "is not greater than the id 6-0"),
]


@pytest.mark.parametrize(("header", "payload", "sids", "message"), BAD_HEADERS)
def test_push_rejects(header: object, payload: bytes, sids: list, message: str) -> None:
    with pytest.raises(FrameError) as info:
        push_entries(header, payload, sids)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_push_id_limits_accepted() -> None:
    entries = push_entries(
        [["a", "0-1", 0], ["a", f"{U64}", 0], ["a", f"{U64}-{U64}", 1], ["b", "007-1", 1]],
        b"x",
        [],
    )
    assert [i for _, i, _ in entries] == ["0-1", str(U64), f"{U64}-{U64}", "007-1"]


def _push_accepts_id(text: str) -> bool:
    try:
        push_entries([["a", text, 1]], b"x", [])
    except FrameError:
        return False
    return True


# an id part: a number around the u64 limit, with leading zeros around the 20-digit limit
_ID_PART = st.builds(
    lambda zeros, value: "0" * zeros + str(value),
    st.integers(0, 22),
    st.one_of(st.integers(0, 2**64 + 9), st.integers(U64 - 9, U64 + 9)),
)


@given(
    st.one_of(
        st.builds(lambda a, dash, b: a + dash + b, _ID_PART, st.sampled_from(["", "-"]), _ID_PART),
        st.text(alphabet="0123456789-*", max_size=45),
        st.text(max_size=45),
    )
)
@example("0" * 20 + "1")
@example("1-" + "0" * 19 + "1")
@example("1-" + "0" * 20 + "1")
@example(f"{U64}-{U64}")
@example(f"{U64 + 1}")
def test_push_ids_follow_the_one_grammar_of_fastredis_ids(text: str) -> None:
    """The push header accepts exactly the ids fastredis.ids.parse_id accepts, plus "*",
    minus 0-0 (which no XADD takes)."""
    expected = text == "*" or (is_entry_id(text) and parse_id(text) != (0, 0))
    assert _push_accepts_id(text) == expected


def test_push_payload_type_errors() -> None:
    with pytest.raises(TypeError):
        push_entries([1], "x", ["s"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        push_entries([2], memoryview(b"abcd")[::2], ["s"])
    with pytest.raises(TypeError):
        push_entries([1], b"x", "s")  # type: ignore[arg-type]


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[list[int], bytes]:
    payload = draw(st.binary(max_size=64))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=8)))
    return [*cuts, len(payload)], payload


@given(valid_frames(), st.sampled_from([1, 2, 3]))
def test_push_random_valid(frame: tuple[list[int], bytes], form: int) -> None:
    ends, payload = frame
    if form == 1:
        header: list = ends
    elif form == 2:
        header = [[f"s{i % 2}", e] for i, e in enumerate(ends)]
    else:
        header = [[f"s{i % 2}", f"{i + 1}-0" if i % 3 else "*", e] for i, e in enumerate(ends)]
    entries = push_entries(json.loads(json.dumps(header)), payload, ["s"])
    assert len(entries) == len(ends)
    assert b"".join(bytes(v) for _, _, v in entries) == payload
    starts = [0, *ends[:-1]]
    assert [bytes(v) for _, _, v in entries] == [
        payload[a:b] for a, b in zip(starts, ends, strict=True)
    ]


@given(
    st.binary(max_size=32),
    st.lists(st.integers(-5, 40) | st.floats(allow_nan=False) | st.booleans(), max_size=6),
)
def test_push_random_offsets_valid_iff_rules_hold(payload: bytes, header: list) -> None:
    n = len(payload)
    ints = [type(x) is int for x in header]
    ok = (not header and n == 0) or (
        bool(header)
        and all(ints)
        and all(0 <= x <= n for x in header)
        and all(a <= b for a, b in pairwise(header))
        and header[-1] == n
    )
    if ok:
        entries = push_entries(header, payload, ["s"])
        assert b"".join(bytes(v) for _, _, v in entries) == payload
    else:
        with pytest.raises(FrameError, match=r"offset|entry|header"):
            push_entries(header, payload, ["s"])


# --------------------------------------------------------------------------
# RESP encoding
# --------------------------------------------------------------------------

# redis-py packs with hiredis when it is installed, else in Python: check against both
_HIREDIS_CONN = redis.Connection()
_PYTHON_CONN = redis.Connection(
    command_packer=PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
)


def redis_py_bytes(*commands: list) -> bytes:
    results = set()
    for conn in (_HIREDIS_CONN, _PYTHON_CONN):
        chunks = (
            conn.pack_commands(commands) if len(commands) > 1 else conn.pack_command(*commands[0])
        )
        results.add(b"".join(bytes(c) for c in chunks))
    assert len(results) == 1
    return results.pop()


def ours(commands: list) -> bytes:
    return b"".join(bytes(c) for c in pack_commands(commands))


def test_pack_like_redis_py_simple() -> None:
    cmds = [
        ["SET", "key", "value"],
        ["SET", b"k", 123, "EX", 10],
        ["XADD", "cam", "MAXLEN", "~", 1000, "*", "d", b"\x00\r\n\xff"],
        ["PING"],
        ["ECHO", ""],
        ["ECHO", b""],
        ["INCRBYFLOAT", "f", 1.5],
        ["X", -7, 0, 2**63 - 1, -(2**63), 2**64, -(2**80), 1e20, 1e-7, float("inf")],
        ["SET", "ünï ☃", "𝄞"],
        ["SET", bytearray(b"ba"), memoryview(b"mv")],
    ]
    for cmd in cmds:
        assert ours([cmd]) == redis_py_bytes(cmd), cmd
    assert ours(cmds) == redis_py_bytes(*cmds)


def test_pack_first_argument_split_like_redis_py() -> None:
    for cmd in (["CONFIG GET", "maxmemory"], [b"CLIENT SETNAME", b"x"], [" PING "], ["A\tB", 1]):
        assert ours([cmd]) == redis_py_bytes(cmd), cmd
    assert ours([["CONFIG GET", "x"]]).startswith(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n")


def test_pack_transaction_of_xadds() -> None:
    payloads = [b"a" * 10, b"b" * REFERENCE_MIN, b"", b"c" * (REFERENCE_MIN - 1), b"d" * 10**6]
    cmds = [["MULTI"]]
    cmds += [["XADD", "s", "MAXLEN", "~", 1000, "*", "d", p] for p in payloads]
    cmds += [["EXEC"]]
    chunks = pack_commands(cmds)
    assert b"".join(bytes(c) for c in chunks) == redis_py_bytes(*cmds)
    # the two large payloads are referenced, everything else is in 3 header chunks
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert [v.obj for v in views] == [payloads[1], payloads[4]]
    assert views[0].obj is payloads[1] and views[1].obj is payloads[4]
    assert [type(c) for c in chunks] == [bytes, memoryview, bytes, memoryview, bytes]
    assert len(chunks[0]) + len(chunks[2]) + len(chunks[4]) < 600 + len(payloads[3])


def test_pack_large_arguments_are_referenced() -> None:
    big = bytes(REFERENCE_MIN)
    ba = bytearray(b"x" * REFERENCE_MIN * 2)
    mv = memoryview(b"y" * REFERENCE_MIN * 3)
    arr = np.arange(REFERENCE_MIN, dtype=np.int32)  # a 4-byte format, 64 KiB
    text = "é" * REFERENCE_MIN
    cmd = ["SET", big, ba, mv, arr, text]
    chunks = pack_commands([cmd])
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert len(views) == 5
    assert views[0].obj is big
    assert views[1].obj is ba
    assert views[2] is mv
    assert views[3].obj is arr and views[3].nbytes == arr.nbytes and views[3].format == "B"
    assert bytes(views[4]) == text.encode()
    expected = redis_py_bytes(["SET", big, ba, mv, arr.tobytes(), text])
    assert b"".join(bytes(c) for c in chunks) == expected


def test_pack_small_buffers_are_copied() -> None:
    small = b"z" * (REFERENCE_MIN - 1)
    chunks = pack_commands([["SET", "k", small], ["GET", "k"]])
    assert len(chunks) == 1 and isinstance(chunks[0], bytes)
    assert chunks[0] == redis_py_bytes(["SET", "k", small], ["GET", "k"])


def test_pack_edge_cases() -> None:
    assert pack_commands([]) == []
    assert ours([("GET", "k")]) == redis_py_bytes(["GET", "k"])  # tuples
    assert ours([iter(["GET", "k"])]) == redis_py_bytes(["GET", "k"])  # iterables
    with pytest.raises(TypeError, match="list of arguments"):
        pack_commands(["PING"])
    with pytest.raises(ValueError, match="empty command"):
        pack_commands([[]])
    with pytest.raises(TypeError, match="bool"):
        pack_commands([["SET", "k", True]])
    with pytest.raises(TypeError, match="NoneType"):
        pack_commands([["SET", "k", None]])
    with pytest.raises(TypeError, match="dict"):
        pack_commands([["SET", "k", {}]])
    with pytest.raises(UnicodeEncodeError):
        pack_commands([["SET", "k", "\ud800"]])
    with pytest.raises(BufferError):
        pack_commands([["SET", "k", memoryview(b"abcd")[::2]]])


arg_st = (
    st.binary(max_size=40)
    | st.text(max_size=20)
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.binary(min_size=REFERENCE_MIN - 2, max_size=REFERENCE_MIN + 2)
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["XADD", b"SET", "CONFIG GET"]), st.lists(arg_st, max_size=6)),
        min_size=1,
        max_size=4,
    )
)
def test_pack_random_like_redis_py(raw: list) -> None:
    cmds = [[name, *args] for name, args in raw]
    assert ours(cmds) == redis_py_bytes(*cmds)
