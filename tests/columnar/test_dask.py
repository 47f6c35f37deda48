"""Columnar reads on a real Dask LocalCluster: descriptor mode makes Arrow record
batches on the workers (acknowledged after gather), and read_dask gives a stream's id
or time range as a DataFrame partitioned exactly by entry time."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from distributed import Client, LocalCluster
from streamz import Stream
from support.columnar_work import arrow_summary
from support.streamz_helpers import pending_count, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.columnar.dask import read_dask, time_slices
from fastredis.ids import parse_id
from fastredis.streamz.descriptors import fetch_arrow


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Client]:
    """One LocalCluster for the module (starting one takes seconds)."""
    with (
        LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_descriptor_mode_makes_arrow_on_the_workers(
    redis_url: str, plain_redis: redis.Redis, sources: list, dask_client: Client
) -> None:
    ids = [plain_redis.xadd("s", {"i": i, "extra": "x" * 30}).decode() for i in range(25)]
    source = Stream.from_redis_consumer_group(
        "s", "g", "c", url=redis_url, loop=dask_client.loop, descriptors=True, count=10
    )
    seen: list[Any] = []
    source.scatter().map(fetch_arrow, fields=["i"]).map(arrow_summary).buffer(4).gather().sink(
        seen.append
    )
    source.start()
    sources.append(source)
    wait_until(
        lambda: sum(s["rows"] for s in seen) == 25 and pending_count(plain_redis, "s", "g") == 0,
        timeout=60,
        what="25 entries as record batches, acknowledged",
    )
    assert {s["type"] for s in seen} == {"RecordBatch"}
    assert all(s["names"] == ["stream", "id_ms", "id_seq", "i"] for s in seen)
    assert sorted(i for s in seen for i in s["ids"]) == sorted(ids)
    assert {x for s in seen for x in s["streams"]} == {
        "s"
    }  # XRANGE names none: the descriptor does
    assert {s["pid"] for s in seen} - {os.getpid()}  # made on the workers


def test_time_slices_cover_the_range_exactly() -> None:
    slices = time_slices("1000-5", "1999-2", 4)
    assert [t for _, _, t in slices] == [1000, 1250, 1500, 1750]
    assert slices[0][0] == "1000-5" and slices[-1][1] == "1999-2"
    for (_, hi, _), (lo, _, _) in itertools.pairwise(slices):
        assert parse_id(hi)[0] + 1 == parse_id(lo)[0] and parse_id(lo)[1] == 0
    assert len(time_slices("7-0", "7-9", 8)) == 1  # one millisecond: one partition


@pytest.fixture
def timeline(plain_redis: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    """Entries at 1000..1999 ms, three per millisecond every 10 ms; some lack `v`."""
    out = []
    for ms in range(1000, 2000, 10):
        for seq in range(3):
            fields = {"k": f"{ms}.{seq}"}
            if seq != 1:
                fields["v"] = str(ms * 10 + seq)
            plain_redis.xadd("t", fields, id=f"{ms}-{seq}")
            out.append((f"{ms}-{seq}", fields))
    return out


def test_read_dask_partitions_by_time(redis_url: str, timeline: list, dask_client: Client) -> None:
    ddf = read_dask("t", url=redis_url, npartitions=4, fields=["k", "v"])
    assert ddf.npartitions == 4 and ddf.known_divisions
    assert ddf.divisions == (1000, 1247, 1495, 1743, 1990)
    frame = ddf.compute()
    ids = [f"{ms}-{seq}" for ms, seq in zip(frame.index, frame["id_seq"], strict=True)]
    assert ids == [entry_id for entry_id, _ in timeline]
    assert frame["v"].isna().sum() == 100
    assert list(frame.columns) == ["stream", "id_seq", "k", "v"]
    divisions = ddf.divisions
    for k, part in enumerate(ddf.to_delayed()):
        got = dask_client.compute(part).result()
        if len(got):
            assert divisions[k] <= got.index.min() and got.index.max() <= divisions[k + 1]
            if k < 3:
                assert got.index.max() < divisions[k + 1]  # [t_k, t_k+1): exact


def test_read_dask_by_time_and_by_id(redis_url: str, timeline: list, dask_client: Client) -> None:
    start = datetime.fromtimestamp(1.2, timezone.utc)
    frame = read_dask("t", start, 1299, url=redis_url, npartitions=3).compute()
    assert frame.index.min() == 1200 and frame.index.max() == 1290 and len(frame) == 30
    assert list(frame.columns) == ["stream", "id_seq", "k", "v"]  # the first entry's fields
    by_id = read_dask("t", "1500-1", "1510-1", url=redis_url, encoding=None).compute()
    assert [(int(i), int(s)) for i, s in zip(by_id.index, by_id["id_seq"], strict=True)] == [
        (1500, 1),
        (1500, 2),
        (1510, 0),
        (1510, 1),
    ]
    assert by_id["k"].iloc[0] == b"1500.1"


def test_read_dask_pages_through_large_partitions(
    redis_url: str, timeline: list, dask_client: Client
) -> None:
    frame = read_dask("t", url=redis_url, npartitions=2, page=7).compute()
    assert len(frame) == len(timeline) and frame.index.is_monotonic_increasing


def test_read_dask_of_an_empty_range(redis_url: str, timeline: list, dask_client: Client) -> None:
    frame = read_dask("t", 5000, 6000, url=redis_url, fields=["k"]).compute()
    assert len(frame) == 0 and list(frame.columns) == ["stream", "id_seq", "k"]
