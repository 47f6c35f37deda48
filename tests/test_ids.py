"""The one entry-id grammar (fastredis.ids), as Redis accepts ids."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fastredis.ids import (
    MAX_PART,
    format_id,
    id_datetime,
    id_ms,
    is_entry_id,
    parse_add_id,
    parse_id,
    previous_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5-10", (5, 10)),
        ("7", (7, 0)),
        (b"1700000000000-3", (1700000000000, 3)),
        (f"{MAX_PART}-{MAX_PART}", (MAX_PART, MAX_PART)),
        ("0-0", (0, 0)),
    ],
)
def test_parse_id_accepts_what_redis_accepts(text: str | bytes, expected: tuple[int, int]) -> None:
    assert parse_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "1_000-0",
        "+5",
        " 5",
        "5 ",
        "5\n",
        "5-",
        "-5",
        "5--1",
        "x-1",
        "",
        "٣-0",
        "5-*",
        "*",
        f"{MAX_PART + 1}-0",
        f"0-{MAX_PART + 1}",
        "1" * 21,
    ],
)
def test_parse_id_refuses_what_redis_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream entry id"):
        parse_id(text)
    assert not is_entry_id(text)


def test_parse_id_refuses_non_text() -> None:
    with pytest.raises(TypeError):
        parse_id(5)  # type: ignore[arg-type]
    assert not is_entry_id(5)


def test_ids_compare_as_numbers() -> None:
    assert parse_id("5-10") > parse_id("5-9")
    assert parse_id("10-0") > parse_id("9-99")


def test_parse_add_id_allows_generated_parts() -> None:
    assert parse_add_id("*") is None
    assert parse_add_id("5-*") == (5, None)
    assert parse_add_id("5") == (5, 0)
    with pytest.raises(ValueError):
        parse_add_id("*-5")
    with pytest.raises(ValueError):
        parse_add_id("1_0-*")


def test_previous_id_is_the_greatest_id_below() -> None:
    assert previous_id(5, 3) == "5-2"
    assert previous_id(5, 0) == f"4-{MAX_PART}"
    assert previous_id(0, 0) == "0-0"
    assert format_id(1, 2) == "1-2"


def test_id_time() -> None:
    assert id_ms("1638125133432-7") == 1638125133432
    assert id_ms(b"5-0") == 5
    assert id_datetime("1000-0") == datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
