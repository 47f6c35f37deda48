"""join_read_batches: READ batches of disjoint streams as one, checked against parsing
the joined reply bytes."""

from __future__ import annotations

import pickle

import pytest

from fastredis._resp import RANGE, READ, Reader, join_read_batches


def _entry(i: int, value: bytes) -> bytes:
    return b"*2\r\n$3\r\n1-%d\r\n*4\r\n$1\r\nk\r\n$%d\r\n%s\r\n$1\r\nz\r\n$0\r\n\r\n" % (
        i,
        len(value),
        value,
    )


def _stream(name: bytes, values: list[bytes]) -> bytes:
    body = b"".join(_entry(i + 1, v) for i, v in enumerate(values))
    return b"*2\r\n$%d\r\n%s\r\n*%d\r\n" % (len(name), name, len(values)) + body


def _parse(raw: bytes, kind: int = READ, encoding: str | None = None):
    reader = Reader()
    reader.expect_batch(kind, encoding)
    reader.feed(raw)
    return reader.gets()


@pytest.mark.parametrize("encoding", [None, "utf-8"])
def test_joined_batch_equals_the_parsed_joined_reply(encoding: str | None) -> None:
    a = _stream(b"a", [b"x", b"y" * 300_000])
    b1, b2 = _stream(b"b1", [b"1", b"2", b"3"]), _stream(b"b2", [b""])
    parts = [
        _parse(b"*1\r\n" + a, encoding=encoding),
        _parse(b"*2\r\n" + b1 + b2, encoding=encoding),
    ]
    joined = join_read_batches(b"*3\r\n", parts, [4, 4])
    expected = _parse(b"*3\r\n" + a + b1 + b2, encoding=encoding)
    assert joined.buf == expected.buf
    assert joined.to_messages() == expected.to_messages()
    assert joined.streams == expected.streams
    assert joined.last_ids() == expected.last_ids()
    assert joined.field("k") == expected.field("k")
    for name, arr in joined.offsets().items():
        assert arr.tolist() == expected.offsets()[name].tolist(), name
    assert pickle.loads(pickle.dumps(joined)).to_messages() == expected.to_messages()


def test_bad_joins_raise() -> None:
    one = _parse(b"*1\r\n" + _stream(b"a", [b"x"]))
    with pytest.raises(ValueError):
        join_read_batches(b"*1\r\n", [one], [len(one.buf) + 1])
    with pytest.raises(ValueError):
        join_read_batches(b"*1\r\n", [one], [-1])
    with pytest.raises(ValueError):  # an offset before the start: would point elsewhere
        join_read_batches(b"*1\r\n", [one], [20])
    with pytest.raises(ValueError):
        join_read_batches(b"*1\r\n", [one], [])
    with pytest.raises(ValueError):
        join_read_batches(b"*1\r\n", [_parse(b"*1\r\n" + _entry(1, b"x"), RANGE)], [4])
    with pytest.raises(ValueError):
        join_read_batches(
            b"*2\r\n", [one, _parse(b"*1\r\n" + _stream(b"b", [b"x"]), encoding="utf-8")], [4, 4]
        )
    with pytest.raises(TypeError):
        join_read_batches(b"*1\r\n", [b"not a batch"], [0])
