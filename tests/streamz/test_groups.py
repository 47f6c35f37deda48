"""from_redis_consumer_group: sharing, acknowledgement by reference counting, replay, batches."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import redis
from streamz import Stream
from support.streamz_helpers import (  # noqa: F401
    Collector,
    collect,
    consumer_pending,
    pending_count,
    sources_fixture,
)
from support.waiting import wait_until

from fastredis import StreamBatch


def _group(redis_url: str, streams, consumer: str, group: str = "g", **kw):
    return Stream.from_redis_consumer_group(streams, group, consumer, url=redis_url, **kw)


def test_creates_stream_and_group(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    collect(_group(redis_url, ["new-1", "new-2"], "c"), sources)
    for stream in ("new-1", "new-2"):
        assert plain_redis.exists(stream)
        assert [g["name"] for g in plain_redis.xinfo_groups(stream)] == [b"g"]
    # A second consumer (or a restart) finds the group there: BUSYGROUP is fine.
    collect(_group(redis_url, ["new-1", "new-2"], "c2"), sources)


def test_group_start_id(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    old = plain_redis.xadd("s", {"old": 1}).decode()
    from_zero = collect(_group(redis_url, "s", "c", group="g0"), sources)
    from_new = collect(_group(redis_url, "s", "c", group="g-new", group_start_id="$"), sources)
    new = plain_redis.xadd("s", {"new": 1}).decode()
    assert [m[1] for m in from_zero.wait_for(2)] == [old, new]
    assert [m[1] for m in from_new.wait_for(1)] == [new]


def test_ids_5_9_and_5_10_once_each_in_order(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.xadd("s", {"n": "a"}, id="5-9")
    plain_redis.xadd("s", {"n": "b"}, id="5-10")
    got = collect(_group(redis_url, "s", "c", count=1), sources)
    plain_redis.xadd("s", {"n": "c"}, id="5-11")
    wait_until(lambda: len(got) >= 3, what="3 entries")
    assert [m[1] for m in got.items] == ["5-9", "5-10", "5-11"]
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_consumers_share_work_no_loss_no_duplicates(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    streams = ["jobs-a", "jobs-b"]
    got = {c: collect(_group(redis_url, streams, c, count=10), sources) for c in ("c1", "c2", "c3")}
    expected = set()
    for start in range(0, 3000, 100):
        pipe = plain_redis.pipeline(transaction=False)
        for i in range(start, start + 100):
            pipe.xadd(streams[i % 2], {"i": i})
        expected.update(
            (streams[i % 2], entry_id.decode())
            for i, entry_id in zip(range(start, start + 100), pipe.execute(), strict=True)
        )
    wait_until(lambda: sum(map(len, got.values())) >= 3000, what="3000 entries")
    delivered = Counter((m[0], m[1]) for c in got.values() for m in c.items)
    assert set(delivered) == expected
    assert max(delivered.values()) == 1  # nobody got an entry another one got
    assert sum(1 for c in got.values() if len(c)) >= 2  # the work was shared
    for stream in streams:
        wait_until(lambda s=stream: pending_count(plain_redis, s, "g") == 0, what="all acked")


def test_ack_only_when_downstream_is_done(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = _group(redis_url, "s", "c")
    emitted = Collector()
    source.sink(emitted)
    flushed = collect(source, sources, node=source.partition(10))
    for i in range(5):
        plain_redis.xadd("s", {"i": i})
    emitted.wait_for(5)
    # The partition holds the 5 entries: emitted, not finished, so not acknowledged.
    assert source.acker.pending == {} and len(source.acker.inflight["s"]) == 5
    assert pending_count(plain_redis, "s", "g") == 5
    for i in range(5, 10):
        plain_redis.xadd("s", {"i": i})
    flushed.wait_for(1)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks after the flush")


def test_acks_are_batched(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(2000):
        pipe.xadd("s", {"i": i})
    pipe.execute()
    plain_redis.config_resetstat()
    got = collect(_group(redis_url, "s", "c", count=500), sources)
    got.wait_for(2000)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")
    calls = plain_redis.info("commandstats")["cmdstat_xack"]["calls"]
    assert calls <= 20, calls  # one XACK per flush, many ids each; never one per entry


def test_failed_entry_stays_pending(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    def work(m):
        if m[2]["i"] == "2":
            raise RuntimeError("cannot process")
        return m

    source = _group(redis_url, "s", "c")
    done = collect(source, sources, node=source.map(work))
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(5)]
    done.wait_for(4)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 1, what="4 acks")
    assert [
        r["message_id"].decode() for r in plain_redis.xpending_range("s", "g", "-", "+", 10)
    ] == [ids[2]]


def test_batch_mode_emits_stream_batches_acked_as_a_whole(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = _group(redis_url, ["s1", "s2"], "c", batch=True, count=7)
    got = collect(source, sources)
    for i in range(30):
        plain_redis.xadd(f"s{i % 2 + 1}", {"i": i})
    wait_until(lambda: sum(map(len, got.items)) == 30, what="30 entries")
    assert all(isinstance(b, StreamBatch) for b in got.items)
    assert sorted(int(m[2]["i"]) for b in got.items for m in b) == list(range(30))
    for s in ("s1", "s2"):
        wait_until(lambda s=s: pending_count(plain_redis, s, "g") == 0, what="acks")


def test_batch_mode_held_batch_is_not_acked(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = _group(redis_url, "s", "c", batch="messages", count=1)
    held = Collector()
    source.sink(held)
    collect(source, sources, node=source.partition(2))  # flushes every second batch
    for i in range(3):
        plain_redis.xadd("s", {"i": i})
    held.wait_for(3)
    assert all(type(b) is list and len(b) == 1 for b in held.items)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 1, what="2 batches acked, 1 held")
    plain_redis.xadd("s", {"i": 3})
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_replay_pending_at_start(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    first = _group(redis_url, "s", "worker")
    seen = Collector()
    first.sink(seen)
    collect(first, sources, node=first.partition(10**6))  # holds everything: never done
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(20)]
    seen.wait_for(20)
    first.stop()
    assert consumer_pending(plain_redis, "s", "g", "worker") == 20

    without = _group(redis_url, "s", "worker", replay_pending=False)
    got = collect(without, sources)
    later = plain_redis.xadd("s", {"i": 20}).decode()
    assert [m[1] for m in got.wait_for(1)] == [later]
    without.stop()
    assert consumer_pending(plain_redis, "s", "g", "worker") == 20

    again = collect(_group(redis_url, "s", "worker", count=6), sources)  # replay_pending=True
    assert [m[1] for m in again.wait_for(20)] == ids  # its own pending entries first, in order
    last = plain_redis.xadd("s", {"i": 21}).decode()
    assert again.wait_for(21)[20][1] == last
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_sink_refusal_keeps_entries_pending(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """Entries are acknowledged once the sink wrote them; a refused write leaves them pending."""
    plain_redis.rpush("not-a-stream", "x")
    source = _group(redis_url, "s", "c")
    good = source.sink_to_redis_stream("copy", url=redis_url)
    bad = source.sink_to_redis_stream("not-a-stream", url=redis_url)
    source.start()
    sources.append(source)
    for i in range(3):
        plain_redis.xadd("s", {"i": i})
    wait_until(lambda: good.written == 3 and bad.error is not None, what="writes")
    assert "WRONGTYPE" in str(bad.error)
    assert pending_count(plain_redis, "s", "g") == 3  # not processed everywhere: not acked
    bad.destroy()


@pytest.mark.parametrize("batch", [False, True])
def test_group_to_stream_sink_acks_after_write(
    redis_url: str, plain_redis: redis.Redis, sources: list, batch: bool
) -> None:
    source = _group(redis_url, "s", "c", batch=batch)
    node = source.flatten() if batch else source
    sink = node.sink_to_redis_stream("copy", url=redis_url)
    source.start()
    sources.append(source)
    for i in range(50):
        plain_redis.xadd("s", {"i": i})
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0 and sink.written == 50, what="all")
    assert [e[1] for e in plain_redis.xrange("copy")] == [
        {b"i": str(i).encode()} for i in range(50)
    ]


class _ThreadedDone(Stream):
    """A node that finishes its items in another thread (as a thread-pool sink would)."""

    def update(self, x, who=None, metadata=None):
        self._retain_refs(metadata)
        threading.Timer(0.01, self._release_refs, args=(metadata,)).start()


def test_release_from_another_thread_is_acked(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    source = _group(redis_url, "s", "c")
    _ThreadedDone(source)
    source.start()
    sources.append(source)
    for i in range(20):
        plain_redis.xadd("s", {"i": i})
    wait_until(lambda: plain_redis.xlen("s") == 20, what="20 entries")
    wait_until(
        lambda: (
            pending_count(plain_redis, "s", "g") == 0
            and plain_redis.xinfo_groups("s")[0]["entries-read"] == 20
        ),
        what="all 20 read and acked",
    )
