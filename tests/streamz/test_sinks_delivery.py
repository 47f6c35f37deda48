"""Sinks that keep what they were given: flushed at interpreter exit (or loudly not),
and exactly-once stream writes with ``producer=`` across cut connections."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import redis
from streamz import Stream
from support.waiting import wait_until

from fastredis.embedded import free_port
from fastredis.redis_io.producers import parse_state, producer_keys

ROOT = Path(__file__).resolve().parents[2]
RUNS = 10

ONE_ITEM_SCRIPT = textwrap.dedent(
    """
    import sys
    from streamz import Stream
    import fastredis.streamz  # registers the sinks

    source = Stream()
    source.sink_to_redis_stream("out", url=sys.argv[1], exit_timeout=float(sys.argv[3]))
    source.sink_to_redis_list("out-list", url=sys.argv[1], exit_timeout=float(sys.argv[3]))
    source.emit(sys.argv[2])
    """
)


def _run_scripts(url: str, values: list[str], exit_timeout: float = 30) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ONE_ITEM_SCRIPT, url, v, str(exit_timeout)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in values
    ]
    errors = []
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        errors.append(err)
    return errors


def test_a_script_that_emits_one_item_and_ends_keeps_it(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    values = [f"item-{k}" for k in range(RUNS)]
    _run_scripts(redis_url, values)
    stored = sorted(f[b"d"].decode() for _id, f in plain_redis.xrange("out"))
    assert stored == sorted(values)  # 0 lost in 10 runs
    assert sorted(v.decode() for v in plain_redis.lrange("out-list", 0, -1)) == sorted(values)


def test_what_cannot_be_written_at_exit_is_reported() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    [err] = _run_scripts(dead, ["lost"], exit_timeout=1)
    assert "sink_to_redis_list('out-list'): 1 items NOT written to Redis at exit" in err


def test_flush_waits_for_items_emitted_from_another_thread(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    source = Stream()
    sink = source.sink_to_redis_stream("out", url=redis_url)
    threads = [
        threading.Thread(target=lambda k=k: [source.emit(f"{k}-{i}") for i in range(100)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.flush()
    assert plain_redis.xlen("out") == 400
    sink.close()


def test_producer_sink_writes_each_item_once_across_cut_connections(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    n = 10_000
    source = Stream()
    sink = source.sink_to_redis_stream(
        "out",
        producer="etl-1",
        url=redis_url,
        max_batch=500,
        client_params={"client_name": "cut-me"},
    )
    stop = threading.Event()
    cuts: list[int] = []

    def cut() -> None:  # kill the sink's connection each time it made progress
        # (cutting on a clock instead starves it on a busy machine: no batch completes)
        with redis.Redis.from_url(redis_url) as r:
            seen = -1
            while not stop.is_set():
                if sink.written == seen:
                    time.sleep(0.005)
                    continue
                seen = sink.written
                for c in r.client_list():
                    if c["name"] == "cut-me":
                        r.client_kill_filter(_id=c["id"])
                        cuts.append(seen)

    cutter = threading.Thread(target=cut)
    cutter.start()
    try:
        for i in range(n):
            source.emit(str(i))
        wait_until(lambda: sink.written == n, 120, what="every item written")
    finally:
        stop.set()
        cutter.join()
    sink.flush()
    assert len(cuts) >= 5, cuts  # the connection was cut while items were being written
    stored = [int(f[b"d"]) for _id, f in plain_redis.xrange("out")]
    assert stored == list(range(n))  # none doubled, none lost, in order
    state, _index = producer_keys(["out"], "etl-1")
    assert parse_state(plain_redis.get(state))[0] == n
    assert sink.committed == 0
    sink.close()


def test_a_second_producer_sink_numbers_after_the_committed_count(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    for run in range(2):
        source = Stream()
        sink = source.sink_to_redis_stream("out", producer="p", url=redis_url)
        for i in range(3):
            source.emit(f"{run}-{i}")
        sink.flush()
        assert sink.committed == 3 * run
        sink.close()
    assert plain_redis.xlen("out") == 6
    assert parse_state(plain_redis.get(producer_keys(["out"], "p")[0]))[0] == 6


def test_producer_sink_after_a_script_flush_writes_each_item_once(
    redis_url: str, plain_redis: redis.Redis
) -> None:
    # The sink calls its script by hash: after SCRIPT FLUSH (as on a Redis restart)
    # the NOSCRIPT reply sends the rest again with the script's text.
    source = Stream()
    sink = source.sink_to_redis_stream("out", producer="p", url=redis_url)
    for run in range(3):
        plain_redis.script_flush()
        for i in range(3):
            source.emit(f"{run}-{i}")
        sink.flush()
    sink.close()
    stored = [f[b"d"].decode() for _id, f in plain_redis.xrange("out")]
    assert stored == [f"{run}-{i}" for run in range(3) for i in range(3)]
    assert parse_state(plain_redis.get(producer_keys(["out"], "p")[0]))[0] == 9
