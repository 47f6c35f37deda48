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
    group_source,
    pending_count,
    sources_fixture,
)
from support.waiting import wait_until

from fastredis import StreamBatch


def test_creates_stream_and_group(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    collect(group_source(redis_url, ["new-1", "new-2"], "c"), sources)
    for stream in ("new-1", "new-2"):
        assert plain_redis.exists(stream)
        assert [g["name"] for g in plain_redis.xinfo_groups(stream)] == [b"g"]
    # A second consumer (or a restart) finds the group there: BUSYGROUP is fine.
    collect(group_source(redis_url, ["new-1", "new-2"], "c2"), sources)


def test_group_start_id(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    old = plain_redis.xadd("s", {"old": 1}).decode()
    from_zero = collect(group_source(redis_url, "s", "c", group="g0"), sources)
    from_new = collect(
        group_source(redis_url, "s", "c", group="g-new", group_start_id="$"), sources
    )
    new = plain_redis.xadd("s", {"new": 1}).decode()
    assert [m[1] for m in from_zero.wait_for(2)] == [old, new]
    assert [m[1] for m in from_new.wait_for(1)] == [new]


def test_ids_5_9_and_5_10_once_each_in_order(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    plain_redis.xadd("s", {"n": "a"}, id="5-9")
    plain_redis.xadd("s", {"n": "b"}, id="5-10")
    got = collect(group_source(redis_url, "s", "c", count=1), sources)
    plain_redis.xadd("s", {"n": "c"}, id="5-11")
    wait_until(lambda: len(got) >= 3, what="3 entries")
    assert [m[1] for m in got.items] == ["5-9", "5-10", "5-11"]
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_consumers_share_work_no_loss_no_duplicates(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    streams = ["jobs-a", "jobs-b"]
    got = {
        c: collect(group_source(redis_url, streams, c, count=10), sources)
        for c in ("c1", "c2", "c3")
    }
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
    source = group_source(redis_url, "s", "c")
    emitted = Collector()
    source.sink(emitted)
    flushed = collect(source, sources, node=source.partition(10))
    for i in range(5):
        plain_redis.xadd("s", {"i": i})
    emitted.wait_for(5)
    # The partition holds the 5 entries: emitted, not finished, so not acknowledged (an
    # entry is marked in flight once its emit returned, just after the sink saw it).
    wait_until(lambda: len(source.acker.inflight.get("s", ())) == 5, what="5 in flight")
    assert source.acker.pending == {}
    assert pending_count(plain_redis, "s", "g") == 5
    for i in range(5, 10):
        plain_redis.xadd("s", {"i": i})
    flushed.wait_for(1)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks after the flush")


def test_held_entries_stay_pending_between_finished_ones(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    # One read where every other entry is held downstream: those finished at once are
    # acknowledged, the held ones only when the hold ends.
    for i in range(10):
        plain_redis.xadd("s", {"i": i})
    source = group_source(redis_url, "s", "c")
    emitted = Collector()
    source.sink(emitted)
    held = source.filter(lambda m: int(m[2]["i"]) % 2 == 0).partition(6)
    flushed = collect(source, sources, node=held)
    emitted.wait_for(10)
    evens = emitted.items[::2]
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 5, what="acks of the odd ones")
    pending = plain_redis.xpending_range("s", "g", min="-", max="+", count=10)
    assert [r["message_id"].decode() for r in pending] == [m[1] for m in evens]
    assert source.acker.inflight["s"] == {m[1] for m in evens}
    plain_redis.xadd("s", {"i": 10})  # the sixth even entry: the partition is flushed
    flushed.wait_for(1)
    assert flushed.items == [(*evens, emitted.items[10])]
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks after the flush")


def test_acks_are_batched(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(2000):
        pipe.xadd("s", {"i": i})
    pipe.execute()
    plain_redis.config_resetstat()
    got = collect(group_source(redis_url, "s", "c", count=500), sources)
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

    source = group_source(redis_url, "s", "c")
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
    source = group_source(redis_url, ["s1", "s2"], "c", batch=True, count=7)
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
    source = group_source(redis_url, "s", "c", batch="messages", count=1)
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
    first = group_source(redis_url, "s", "worker")
    seen = Collector()
    first.sink(seen)
    collect(first, sources, node=first.partition(10**6))  # holds everything: never done
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(20)]
    seen.wait_for(20)
    first.stop()
    assert consumer_pending(plain_redis, "s", "g", "worker") == 20

    without = group_source(redis_url, "s", "worker", replay_pending=False)
    got = collect(without, sources)
    later = plain_redis.xadd("s", {"i": 20}).decode()
    assert [m[1] for m in got.wait_for(1)] == [later]
    without.stop()
    assert consumer_pending(plain_redis, "s", "g", "worker") == 20

    again = collect(group_source(redis_url, "s", "worker", count=6), sources)  # replay_pending=True
    assert [m[1] for m in again.wait_for(20)] == ids  # its own pending entries first, in order
    last = plain_redis.xadd("s", {"i": 21}).decode()
    assert again.wait_for(21)[20][1] == last
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acks")


def test_sink_refusal_keeps_entries_pending(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """Entries are acknowledged once the sink wrote them; a refused write leaves them pending."""
    plain_redis.rpush("not-a-stream", "x")
    source = group_source(redis_url, "s", "c")
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
    source = group_source(redis_url, "s", "c", batch=batch)
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
    source = group_source(redis_url, "s", "c")
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


class _SlowSink(Stream):
    """Holds every entry and finishes them one at a time in a thread (a slow sink); keeps
    the most entries its source had in flight at any arrival."""

    def __init__(self, upstream, source, per_entry: float):
        super().__init__(upstream)
        self.source = source
        self.per_entry = per_entry
        self.queue: list = []
        self.lock = threading.Lock()
        self.finished = 0
        self.peak_in_flight = 0
        threading.Thread(target=self._work, daemon=True).start()

    def update(self, x, who=None, metadata=None):
        self._retain_refs(metadata)
        self.peak_in_flight = max(self.peak_in_flight, self.source.acker.in_flight())
        with self.lock:
            self.queue.append(metadata)

    def _work(self):
        while True:
            with self.lock:
                md = self.queue.pop(0) if self.queue else None
            if md is None:
                threading.Event().wait(0.001)
                continue
            threading.Event().wait(self.per_entry)
            self._release_refs(md)
            self.finished += 1


@pytest.mark.parametrize("batch", [False, "messages"])
def test_max_in_flight_bounds_a_slow_sink(
    redis_url: str, plain_redis: redis.Redis, sources: list, batch
) -> None:
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(2000):
        pipe.xadd("s", {"i": i})
    pipe.execute()
    source = group_source(redis_url, "s", "c", max_in_flight=100, batch=batch)
    slow = _SlowSink(source.flatten() if batch else source, source, per_entry=0.0002)
    source.start()
    sources.append(source)
    peak_pending = 0

    def all_done() -> bool:
        nonlocal peak_pending
        peak_pending = max(peak_pending, pending_count(plain_redis, "s", "g"))
        return slow.finished == 2000 and pending_count(plain_redis, "s", "g") == 0

    wait_until(all_done, timeout=60, what="2000 entries through the slow sink")
    assert 0 < slow.peak_in_flight <= 100  # never more held than max_in_flight
    assert peak_pending <= 100  # nor more delivered-and-unacknowledged in Redis


def test_without_max_in_flight_a_slow_sink_buffers_the_stream(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """What the bound prevents: with max_in_flight=None everything is read at once."""
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(2000):
        pipe.xadd("s", {"i": i})
    pipe.execute()
    source = group_source(redis_url, "s", "c", max_in_flight=None)
    slow = _SlowSink(source, source, per_entry=0.0002)
    source.start()
    sources.append(source)
    wait_until(lambda: slow.finished == 2000, timeout=60, what="2000 entries")
    assert slow.peak_in_flight > 1000


def test_lag_matches_xinfo(redis_url: str, plain_redis: redis.Redis, sources: list) -> None:
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(50)]
    source = group_source(redis_url, "s", "c", count=10, max_in_flight=10)
    held = Collector()
    source.sink(held)
    collect(source, sources, node=source.partition(10**6))  # holds what it reads
    held.wait_for(10)
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 10, what="10 delivered")
    before = plain_redis.time()
    lag = source.lag()
    after = plain_redis.time()
    (info,) = plain_redis.xinfo_groups("s")
    assert set(lag) == {"s"}
    assert lag["s"].lag == info["lag"] == 40
    assert lag["s"].pending == info["pending"] == 10
    oldest_ms = int(ids[0].split("-")[0])
    low = before[0] + before[1] / 1e6 - oldest_ms / 1000
    high = after[0] + after[1] / 1e6 - oldest_ms / 1000
    assert low - 0.001 <= lag["s"].oldest_pending_age <= high + 0.001


def test_lag_warning_is_logged(
    redis_url: str, plain_redis: redis.Redis, sources: list, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(30):
        plain_redis.xadd("s", {"i": i})
    source = group_source(redis_url, "s", "c", max_in_flight=10, lag_warning=20, lag_interval=0.05)
    collect(source, sources, node=source.partition(10**6))
    wait_until(
        lambda: any("past lag_warning=20" in r.getMessage() for r in caplog.records),
        what="the lag warning",
    )
    (record,) = [r for r in caplog.records if "lag_warning" in r.getMessage()]
    assert record.levelname == "WARNING" and "'s' is 30 entries behind" in record.getMessage()
