"""Message: the 3-tuple every stream source emits; entry ids compared as numbers."""

from __future__ import annotations

import pytest
from support.streamz_helpers import Collector, collect, sources_fixture  # noqa: F401

from fastredis.streamz.message import Message, parse_id


def test_message_is_a_tuple_with_copy() -> None:
    m = Message("s", "1-0", {"a": "1"})
    assert m == ("s", "1-0", {"a": "1"}) and isinstance(m, tuple) and len(m) == 3
    assert (m.stream, m.id, m.data) == ("s", "1-0", {"a": "1"})
    _stream, _entry_id, data = m.copy()
    data["b"] = "2"
    assert m.data == {"a": "1"}  # the copy's dict is a new one
    assert m.copy() == m and type(m.copy()) is Message
    assert Message("s", "1-0", None).copy().data is None


def test_parse_id_is_numeric() -> None:
    assert parse_id("5-10") > parse_id("5-9")
    assert parse_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_id("7") == (7, 0)
    with pytest.raises(ValueError):
        parse_id("x-1")
