"""Delivery counts, retries and dead letters: a poison entry ends in the dead-letter stream
after exactly max_deliveries deliveries, with its provenance, and nothing stays pending."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import pytest
import redis
from support.streamz_helpers import (  # noqa: F401
    Collector,
    collect,
    consumer_pending,
    group_source,
    pending_count,
    sources_fixture,
)
from support.waiting import wait_until

from fastredis.streamz.deadletters import PROVENANCE


def _dead(client: redis.Redis, stream: str = "dlq") -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)
    ]


class Worker:
    """A map function that raises on entries whose field `poison` is set, and records the
    delivery count of every Message it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, m):
        with self.lock:
            self.seen.append((m.data["i"], m.deliveries))
        if m.data.get("poison"):
            raise ValueError(f"cannot digest {m.data['i']}")
        return m

    def deliveries_of(self, i: str) -> list[int]:
        return [n for j, n in self.seen if j == i]


def test_poison_entry_dead_lettered_after_exactly_n_deliveries(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    work = Worker()
    source = group_source(
        redis_url, "s", max_deliveries=3, dead_letter_stream="dlq", retry_after=0.05
    )
    done = collect(source, sources, node=source.map(work))
    ids = [
        plain_redis.xadd("s", {"i": i, **({"poison": "yes"} if i == 2 else {})}).decode()
        for i in range(5)
    ]
    done.wait_for(4)
    wait_until(lambda: plain_redis.xlen("dlq") == 1, what="the poison entry in the DLQ")
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="nothing pending")
    assert work.deliveries_of("2") == [1, 2, 3]  # exactly 3 deliveries, each counted
    assert all(work.deliveries_of(str(i)) == [1] for i in (0, 1, 3, 4))
    (dead,) = _dead(plain_redis)
    assert dead == {
        "i": "2",
        "poison": "yes",
        "_stream": "s",
        "_id": ids[2],
        "_group": "g",
        "_consumer": "c",
        "_deliveries": "3",
        "_error": "ValueError: cannot digest 2",
    }
    assert set(PROVENANCE) <= set(dead)
    wait_until(lambda: source.dead_letters.moved == 1, what="the script's reply counted")
    assert sorted(m[1] for m in done.items) == sorted(ids[:2] + ids[3:])


def test_failed_entry_retried_then_succeeds(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """A transient failure is retried by the consumer itself; no dead letter."""
    failures = {"left": 1}

    def flaky(m):
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("downstream service away")
        return m

    source = group_source(
        redis_url, "s", max_deliveries=3, dead_letter_stream="dlq", retry_after=0.05
    )
    done = collect(source, sources, node=source.map(flaky))
    entry_id = plain_redis.xadd("s", {"i": 0}).decode()
    (m,) = done.wait_for(1)
    assert m[1] == entry_id and m.deliveries == 2
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acked")
    assert plain_redis.xlen("dlq") == 0


@pytest.mark.parametrize("batch", [True, "messages"])
def test_batch_mode_failed_batch_retried_entry_by_entry(
    redis_url: str, plain_redis: redis.Redis, sources: list, batch
) -> None:
    seen: list[list[str]] = []

    def work(entries):
        items = [m[2]["i"] for m in entries]
        seen.append(items)
        if "7" in items:
            raise ValueError("poison 7")
        return entries

    source = group_source(
        redis_url, "s", batch=batch, count=10, max_deliveries=2, dead_letter_stream="dlq",
        retry_after=0.05,
    )  # fmt: skip
    for i in range(10):  # before the start: one read of 10
        plain_redis.xadd("s", {"i": i})
    done = collect(source, sources, node=source.map(work).flatten())
    wait_until(lambda: plain_redis.xlen("dlq") == 1, what="entry 7 in the DLQ")
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="nothing pending")
    assert seen[0] == [str(i) for i in range(10)]  # the whole batch failed once...
    assert sorted(seen[1:]) == sorted([str(i)] for i in range(10))  # ...then one by one
    assert sorted(m[2]["i"] for m in done.items) == [str(i) for i in range(10) if i != 7]
    assert all(m.deliveries == 2 for m in done.items)
    (dead,) = _dead(plain_redis)
    assert (
        dead["i"] == "7" and dead["_deliveries"] == "2" and dead["_error"] == "ValueError: poison 7"
    )


def test_replayed_and_claimed_entries_carry_their_count(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    first = group_source(redis_url, "s", "worker")
    held = Collector()
    first.sink(held)
    collect(first, sources, node=first.partition(10**6))  # holds everything: never done
    ids = [plain_redis.xadd("s", {"i": i}).decode() for i in range(5)]
    assert all(m.deliveries == 1 for m in held.wait_for(5))
    first.stop()
    second = group_source(redis_url, "s", "worker")
    again = collect(second, sources)  # replays its pending list
    assert [(m[1], m.deliveries) for m in again.wait_for(5)] == [(i, 2) for i in ids]
    wait_until(lambda: pending_count(plain_redis, "s", "g") == 0, what="acked")
    second.stop()

    late = plain_redis.xadd("s", {"i": 5}).decode()
    plain_redis.xreadgroup("g", "gone", {"s": ">"})  # delivered once, never acked
    rescuer = collect(group_source(redis_url, "s", "rescuer", autoclaim_idle=0.2), sources)
    (m,) = rescuer.wait_for(1)
    assert m[1] == late and m.deliveries == 2  # XAUTOCLAIM counted the second delivery


def test_claimed_entry_past_the_limit_is_dead_lettered_not_emitted(
    redis_url: str, plain_redis: redis.Redis, sources: list
) -> None:
    """An entry whose consumer died on its last allowed delivery goes to the DLQ at the
    claim, without being emitted again."""
    entry_id = plain_redis.xadd("s", {"i": 0}).decode()
    plain_redis.xgroup_create("s", "g", id="0")
    plain_redis.xreadgroup("g", "crashed", {"s": ">"})
    plain_redis.xclaim("s", "g", "crashed", 0, [entry_id])  # 2 deliveries, never acked
    got = collect(
        group_source(
            redis_url, "s", "rescuer", autoclaim_idle=0.2, max_deliveries=2,
            dead_letter_stream="dlq",
        ),
        sources,
    )  # fmt: skip
    wait_until(lambda: plain_redis.xlen("dlq") == 1, what="the DLQ entry")
    (dead,) = _dead(plain_redis)
    assert dead["_id"] == entry_id and dead["_deliveries"] == "3" and "_error" not in dead
    assert dead["_consumer"] == "rescuer"  # pending at the rescuer when moved
    assert got.items == [] and pending_count(plain_redis, "s", "g") == 0


def test_move_is_atomic_and_never_doubled(redis_url: str, plain_redis: redis.Redis) -> None:
    """The move script moves an entry only while it is pending: a repeated move (a retry
    after a lost reply, a second consumer) writes no second dead letter."""
    from fastredis.streamz.deadletters import MOVE_SCRIPT

    entry_id = plain_redis.xadd("s", {"i": 0}).decode()
    plain_redis.xgroup_create("s", "g", id="0")
    plain_redis.xreadgroup("g", "c", {"s": ">"})
    move = plain_redis.register_script(MOVE_SCRIPT)
    assert move(keys=["s", "dlq"], args=["g", entry_id, "boom"]) == 1
    assert move(keys=["s", "dlq"], args=["g", entry_id, "boom"]) == 0
    assert plain_redis.xlen("dlq") == 1 and pending_count(plain_redis, "s", "g") == 0
    plain_redis.rpush("not-a-stream", "x")
    other = plain_redis.xadd("s", {"i": 1}).decode()
    plain_redis.xreadgroup("g", "c", {"s": ">"})
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        move(keys=["s", "not-a-stream"], args=["g", other, ""])
    assert pending_count(plain_redis, "s", "g") == 1  # refused: still pending, not lost


CONSUMER = """
import sys, time
from streamz import Stream

def work(m):
    if m.data.get("poison"):
        raise ValueError("poison")
    time.sleep(0.002)  # slow enough for the kill to land while entries are in flight
    return m

source = Stream.from_redis_consumer_group(
    "jobs", "g", "worker", url=sys.argv[1], count=20, max_deliveries=5,
    dead_letter_stream="dlq", retry_after=0.05,
)
source.map(work).sink_to_redis_stream("done", url=sys.argv[1])
source.start()
print("ready", flush=True)
time.sleep(600)
"""


def _consumer(redis_url: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CONSUMER), redis_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    if child.stdout is not None:
        child.stdout.close()


def test_sigkill_between_delivery_and_ack_never_loses_or_doubles(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    """A consumer SIGKILLed three times while entries are in flight and being dead-lettered:
    every good entry is processed (at least once), every poison entry is in the DLQ exactly
    once, nothing else is, and nothing stays pending."""
    pipe = plain_redis.pipeline(transaction=False)
    for i in range(400):
        pipe.xadd("jobs", {"i": i, **({"poison": "1"} if i % 20 == 7 else {})})
    pipe.execute()
    poison = {str(i) for i in range(400) if i % 20 == 7}
    for kill_at in (60, 160, 260):
        child = _consumer(redis_url)
        try:
            wait_until(
                lambda n=kill_at: plain_redis.xlen("done") + plain_redis.xlen("dlq") >= n,
                timeout=30,
                what=f"{kill_at} entries handled",
            )
        finally:
            _kill(child)  # mid-stream: entries delivered and not yet acknowledged
        assert pending_count(plain_redis, "jobs", "g") > 0
    child = _consumer(redis_url)  # the same consumer, back: replays its pending list
    try:
        wait_until(
            lambda: (
                pending_count(plain_redis, "jobs", "g") == 0
                and plain_redis.xinfo_groups("jobs")[0]["lag"] == 0
            ),
            timeout=60,
            what="everything acknowledged or dead-lettered",
        )
    finally:
        _kill(child)
    done = {fields["i"] for fields in _dead(plain_redis, "done")}
    dead = Counter(fields["i"] for fields in _dead(plain_redis))
    assert done == {str(i) for i in range(400)} - poison  # no good entry lost
    assert set(dead) == poison and max(dead.values()) == 1  # each poison entry, once
