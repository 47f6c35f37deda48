"""batch="arrow": the stream and consumer-group sources emit pyarrow RecordBatches whose
payload columns view the reply; a group acknowledges a record batch once streamz's
reference count of it is released."""

from __future__ import annotations

import pyarrow as pa
import pytest
import redis
from streamz import Stream
from support.streamz_helpers import (  # noqa: F401
    Collector,
    collect,
    consumer_pending,
    group_source,
    pending_count,
    sources_fixture,
)
from support.waiting import wait_until

BIG = b"f" * 4096


def rows(batches: list[pa.RecordBatch]) -> list[dict]:
    return [row for b in batches for row in b.to_pylist()]


def test_streams_emit_record_batches_viewing_the_reply(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    for i in range(6):
        plain_redis.xadd("cam", {"i": i, "frame": BIG})
    source = Stream.from_redis_streams(
        "cam", url=redis_url, default_start_id="0", count=4, batch="arrow", convert=False
    )
    got = collect(source, sources)
    wait_until(lambda: sum(b.num_rows for b in got.items) == 6, what="6 entries")
    assert all(isinstance(b, pa.RecordBatch) for b in got.items)
    assert [b.num_rows for b in got.items] == [4, 2]
    assert [r["i"] for r in rows(got.items)] == [str(i).encode() for i in range(6)]
    frame = got.items[0].column("frame")
    assert frame.type == pa.binary_view()
    reply = bytes(frame.buffers()[2])  # the variadic buffer is the XREAD reply itself,
    assert reply.count(b"$4096\r\n" + BIG) == 4  # RESP framing included: no copy was made
    assert frame.to_pylist() == [BIG] * 4


def test_text_sources_give_string_views(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.xadd("s", {"name": "é" * 20})
    got = collect(
        Stream.from_redis_streams("s", url=redis_url, default_start_id="0", batch="arrow"),
        sources,
    )
    (b,) = got.wait_for(1)
    assert b.schema.field("name").type == pa.string_view()
    assert b.to_pylist()[0]["stream"] == "s"


def test_group_acknowledges_a_record_batch_once_released(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = group_source(redis_url, "s", "c", batch="arrow", count=1)
    held = Collector()
    source.sink(held)
    collect(source, sources, node=source.partition(2))  # done with every second batch
    for i in range(3):
        plain_redis.xadd("s", {"i": i})
    held.wait_for(3)
    assert all(isinstance(b, pa.RecordBatch) and b.num_rows == 1 for b in held.items)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 1, what="2 batches acked, 1 held")
    plain_redis.xadd("s", {"i": 3})
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_group_replays_pending_entries_as_record_batches(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    first = group_source(redis_url, "s", "w", batch="arrow")
    seen = Collector()
    first.sink(seen)
    collect(first, sources, node=first.partition(10**6))  # never done: nothing acked
    ids = [plain_redis.xadd("s", {"i": i, "big": BIG}).decode() for i in range(5)]
    wait_until(lambda: sum(b.num_rows for b in seen.items) == 5, what="5 entries")
    live_schema = seen.items[0].schema
    first.stop()
    assert consumer_pending(plain_redis, "s", "g", "w") == 5

    again = collect(group_source(redis_url, "s", "w", batch="arrow"), sources)
    wait_until(lambda: sum(b.num_rows for b in again.items) == 5, what="the replay")
    replayed = again.items
    assert all(isinstance(b, pa.RecordBatch) for b in replayed)
    assert replayed[0].schema == live_schema  # same columns as a live read
    got = rows(replayed)
    assert [f"{r['id_ms']}-{r['id_seq']}" for r in got] == ids
    assert [r["big"] for r in got] == [BIG.decode()] * 5
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks of the replay")


def test_unknown_batch_modes_are_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match="'arrow'"):
        Stream.from_redis_streams("s", url=redis_url, batch="parquet")
