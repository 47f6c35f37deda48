"""streamz sources on 100,000 small entries, next to what they are measured against.

Every variant consumes the same 100,000 pre-filled entries (three small fields each) into a
counting sink and is timed until the sink has seen them all (the consumer group: also until
XPENDING says 0, i.e. everything acknowledged).

Groups (compare within a group):
  streamz-per-message: streamz's own ceiling, `Stream().sink(count)` fed the same 100k
      prebuilt Message tuples with emit(), next to from_redis_streams and
      from_redis_consumer_group emitting one Message per entry. The sources emit with a
      leaner loop than Stream.emit() (the downstream node set is walked once per 1024
      entries, not per entry), so one more row pushes the prebuilt Messages through that
      same loop without Redis: the floor the source itself can approach.
  streamz-batch: a hand-written redis-py + hiredis XREAD loop producing the same decoded
      (stream, id, fields) tuples, next to the sources in batch mode.
Reads use COUNT 10000 everywhere. Goals: per-message >= 75% of the ceiling; batch >= 4x the
hand-written loop; the group fully acknowledged within 1.2x the time to receive.

    pytest benchmarks/bench_streamz.py --benchmark-only -s
The summary at the end prints msgs/s per variant and the three ratios.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from record import write_run
from streamz import Stream

from fastredis.embedded import EmbeddedRedis
from fastredis.redis_io import make_client, xrange_batch
from fastredis.streamz.emission import emit_each
from fastredis.streamz.message import messages_from

N = 100_000
COUNT = 10_000
STREAM = "bench:streamz"
FIELDS = {"sensor": "temp-01", "value": "21.5", "unit": "C"}
ROUNDS = 3
WAIT = 60.0
DLQ = "bench:streamz:dlq"
DEAD_LETTERS = {"max_deliveries": 3, "dead_letter_stream": DLQ}
POISON_EVERY = 100  # 1% poison entries in the poison case

RESULTS: dict[str, float] = {}  # variant -> best msgs/s
EXTRA: dict[str, float] = {}
CPU: dict[str, list[float]] = {}  # variant -> this process's CPU seconds per round
_cpu_rounds: list[float] = []  # of the variant running now


@pytest.fixture(scope="module")
def server(bench_server: EmbeddedRedis) -> EmbeddedRedis:
    with redis.Redis.from_url(bench_server.url) as r:
        if r.xlen(STREAM) != N:
            r.delete(STREAM)
            for start in range(0, N, 10_000):
                pipe = r.pipeline(transaction=False)
                for _ in range(start, min(N, start + 10_000)):
                    pipe.xadd(STREAM, FIELDS)
                pipe.execute()
    return bench_server


class Counter:
    """A counting sink: sets `done` when `target` items (or batch entries) have arrived."""

    def __init__(self, target: int = N) -> None:
        self.n = 0
        self.target = target
        self.done = threading.Event()

    def one(self, _x: Any) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()

    def many(self, xs: Any) -> None:
        self.n += len(xs)
        if self.n >= self.target:
            self.done.set()

    def wait(self) -> None:
        if not self.done.wait(WAIT):
            raise TimeoutError(f"only {self.n} of {self.target} arrived")


def _cpu_timed(target: Callable[[], None]) -> Callable[[], None]:
    """`target`, noting this process's CPU time (every thread: the sources' loop too)."""

    def timed() -> None:
        c0 = time.process_time()
        target()
        _cpu_rounds.append(time.process_time() - c0)

    return timed


def _record(benchmark: Any, name: str) -> None:
    best = benchmark.stats.stats.min
    RESULTS[name] = N / best
    CPU[name] = list(_cpu_rounds)
    _cpu_rounds.clear()
    benchmark.extra_info["entries"] = N
    benchmark.extra_info["msgs_per_s"] = round(N / best)


def _run_source(
    benchmark: Any, make: Callable[[], tuple[Any, Counter]], after: Callable[[], None] | None = None
) -> None:
    state: dict[str, Any] = {}

    def setup() -> None:
        if "source" in state:
            state["source"].stop()
        state["source"], state["counter"] = make()

    def target() -> None:
        state["source"].start()
        state["counter"].wait()
        if after is not None:
            after()

    try:
        benchmark.pedantic(_cpu_timed(target), setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        if "source" in state:
            state["source"].stop()


# -- per message ------------------------------------------------------------------------


@pytest.mark.benchmark(group="streamz-per-message")
@pytest.mark.parametrize("variant", ["streamz-emit (ceiling)"])
def test_streamz_emit_ceiling(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    client = make_client(url=server.url)
    msgs = messages_from(xrange_batch(client, STREAM).to_messages())
    client.close()
    assert len(msgs) == N

    def target() -> None:
        counter = Counter()
        s = Stream()
        s.sink(counter.one)
        emit = s.emit
        for m in msgs:
            emit(m)
        counter.wait()

    benchmark.pedantic(_cpu_timed(target), rounds=ROUNDS, iterations=1)
    _record(benchmark, "ceiling")


@pytest.mark.benchmark(group="streamz-per-message")
@pytest.mark.parametrize("variant", ["source emission loop, no Redis (floor)"])
def test_source_emission_floor(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    """The same prebuilt Messages pushed through the sources' own per-entry emission loop:
    what from_redis_streams would reach if reading and parsing cost nothing."""
    client = make_client(url=server.url)
    msgs = messages_from(xrange_batch(client, STREAM).to_messages())
    client.close()

    def target() -> None:
        counter = Counter()
        source = Stream.from_redis_streams(STREAM, url=server.url)  # never started:
        source.stopped = False  # emits as a running source would (a stopped one stops)
        source.sink(counter.one)
        asyncio.run(emit_each(source, msgs))
        counter.wait()

    benchmark.pedantic(_cpu_timed(target), rounds=ROUNDS, iterations=1)
    _record(benchmark, "floor")


@pytest.mark.benchmark(group="streamz-per-message")
@pytest.mark.parametrize("variant", ["from_redis_streams"])
def test_from_redis_streams(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    def make() -> tuple[Any, Counter]:
        counter = Counter()
        source = Stream.from_redis_streams(
            STREAM, url=server.url, default_start_id="0", count=COUNT
        )
        source.sink(counter.one)
        return source, counter

    _run_source(benchmark, make)
    _record(benchmark, "streams")


def _group_maker(
    server: EmbeddedRedis, batch: bool, key: str, **options: Any
) -> tuple[Callable, Callable]:
    plain = redis.Redis.from_url(server.url)
    received: list[float] = []
    acked: list[float] = []
    t0: list[float] = [0.0]

    def make() -> tuple[Any, Counter]:
        plain.xgroup_destroy(STREAM, "bench")
        plain.xgroup_create(STREAM, "bench", id="0")
        plain.delete(DLQ)
        counter = Counter()
        source = Stream.from_redis_consumer_group(
            STREAM, "bench", "c1", url=server.url, count=COUNT, batch=batch, **options
        )
        source.sink(counter.many if batch else counter.one)
        orig_start = source.start

        def start() -> None:
            t0[0] = time.perf_counter()
            orig_start()

        source.start = start  # type: ignore[method-assign]
        orig_wait = counter.wait

        def wait() -> None:
            orig_wait()
            received.append(time.perf_counter() - t0[0])

        counter.wait = wait  # type: ignore[method-assign]
        return source, counter

    def after() -> None:
        deadline = time.monotonic() + WAIT
        while plain.xpending(STREAM, "bench")["pending"]:
            if time.monotonic() > deadline:
                raise TimeoutError("not all acknowledged")
            time.sleep(0.001)
        acked.append(time.perf_counter() - t0[0])
        EXTRA[f"{key}-received"] = min(received)
        EXTRA[f"{key}-acked"] = min(acked)
        EXTRA[f"{key}-ratio"] = max(a / r for a, r in zip(acked, received, strict=False))

    return make, after


@pytest.mark.benchmark(group="streamz-per-message")
@pytest.mark.parametrize("variant", ["from_redis_consumer_group (until all acked)"])
def test_from_redis_consumer_group(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    make, after = _group_maker(server, batch=False, key="group")
    _run_source(benchmark, make, after)
    _record(benchmark, "group")
    benchmark.extra_info["acked/received"] = round(EXTRA["group-ratio"], 3)


@pytest.mark.benchmark(group="streamz-per-message")
@pytest.mark.parametrize("variant", ["from_redis_consumer_group, 1% poison (until all in the DLQ)"])
def test_from_redis_consumer_group_poison(
    benchmark: Any, server: EmbeddedRedis, variant: str
) -> None:
    """Every 100th entry raises downstream: retried after 50 ms up to 3 deliveries, then
    moved to the dead-letter stream. Timed until the other 99% are acknowledged and every
    poison entry is in the DLQ."""
    plain = redis.Redis.from_url(server.url)
    ids = xrange_batch(make_client(url=server.url), STREAM).ids()
    poison = set(ids[::POISON_EVERY])
    good = N - len(poison)
    until_dead: list[float] = []

    def make() -> tuple[Any, Counter]:
        plain.xgroup_destroy(STREAM, "bench")
        plain.xgroup_create(STREAM, "bench", id="0")
        plain.delete(DLQ)
        counter = Counter(good)

        def work(m: Any) -> Any:
            if m[1] in poison:
                raise ValueError("poison")
            return m

        source = Stream.from_redis_consumer_group(
            STREAM, "bench", "c1", url=server.url, count=COUNT, retry_after=0.05, **DEAD_LETTERS
        )
        source.map(work).sink(counter.one)
        return source, counter

    def after() -> None:
        t0 = time.perf_counter()
        deadline = time.monotonic() + WAIT
        while plain.xlen(DLQ) < len(poison) or plain.xpending(STREAM, "bench")["pending"]:
            if time.monotonic() > deadline:
                raise TimeoutError("poison entries not all dead-lettered")
            time.sleep(0.001)
        until_dead.append(time.perf_counter() - t0)

    logging.getLogger("streamz.core").setLevel(logging.CRITICAL)  # 3,000 logged tracebacks
    logging.getLogger("fastredis.streamz").setLevel(logging.CRITICAL)
    try:
        _run_source(benchmark, make, after)
    finally:
        logging.getLogger("streamz.core").setLevel(logging.NOTSET)
        logging.getLogger("fastredis.streamz").setLevel(logging.NOTSET)
    assert plain.xlen(DLQ) == len(poison)
    _record(benchmark, "group-poison")
    EXTRA["poison-dead-after-last-good"] = min(until_dead)
    benchmark.extra_info["poison_in_dlq_after_last_good_s"] = round(min(until_dead), 3)


# -- batch ------------------------------------------------------------------------------


@pytest.mark.benchmark(group="streamz-batch")
@pytest.mark.parametrize("variant", ["handwritten redis-py+hiredis XREAD loop"])
def test_handwritten_xread_loop(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.connection_pool.get_connection().__class__  # hiredis is used when installed

    def target() -> None:
        counter = Counter()
        last = "0"
        while counter.n < N:
            reply = client.xread({STREAM: last}, count=COUNT)
            out = []
            for stream, entries in reply:
                for entry_id, fields in entries:
                    out.append((stream, entry_id, fields))
            counter.many(out)
            last = out[-1][1]
        counter.wait()

    benchmark.pedantic(_cpu_timed(target), rounds=ROUNDS, iterations=1)
    client.close()
    _record(benchmark, "handwritten")


@pytest.mark.benchmark(group="streamz-batch")
@pytest.mark.parametrize(
    "variant",
    ["from_redis_streams batch=True (StreamBatch)", "from_redis_streams batch='messages'"],
)
def test_from_redis_streams_batch(benchmark: Any, server: EmbeddedRedis, variant: str) -> None:
    mode: Any = "messages" if "messages" in variant else True

    def make() -> tuple[Any, Counter]:
        counter = Counter()
        source = Stream.from_redis_streams(
            STREAM, url=server.url, default_start_id="0", count=COUNT, batch=mode
        )
        source.sink(counter.many)
        return source, counter

    _run_source(benchmark, make)
    _record(benchmark, f"streams-batch-{mode}")


@pytest.mark.benchmark(group="streamz-batch")
@pytest.mark.parametrize("variant", ["from_redis_consumer_group batch=True (until all acked)"])
def test_from_redis_consumer_group_batch(
    benchmark: Any, server: EmbeddedRedis, variant: str
) -> None:
    make, after = _group_maker(server, batch=True, key="group-batch")
    _run_source(benchmark, make, after)
    _record(benchmark, "group-batch")
    benchmark.extra_info["acked/received"] = round(EXTRA["group-batch-ratio"], 3)


@pytest.mark.benchmark(group="streamz-batch")
@pytest.mark.parametrize(
    "variant",
    [
        "from_redis_consumer_group batch=True, max_deliveries=3 + DLQ (until all acked)",
        "from_redis_consumer_group batch=True, max_in_flight=None (until all acked)",
    ],
)
def test_from_redis_consumer_group_batch_options(
    benchmark: Any, server: EmbeddedRedis, variant: str
) -> None:
    """The cost of tracking deliveries (nothing fails: the tracking alone), and of the
    default max_in_flight=10,000 (against no bound)."""
    key = "group-batch-dlq" if "DLQ" in variant else "group-batch-unbounded"
    options = DEAD_LETTERS if "DLQ" in variant else {"max_in_flight": None}
    make, after = _group_maker(server, batch=True, key=key, **options)
    _run_source(benchmark, make, after)
    _record(benchmark, key)
    benchmark.extra_info["acked/received"] = round(EXTRA[f"{key}-ratio"], 3)


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    if not RESULTS:
        return
    print("\n\nstreamz, 100,000 entries of 3 small fields (best of rounds; CPU: median):")
    for name, rate in RESULTS.items():
        cpu = statistics.median(CPU[name]) * 1e3 if CPU.get(name) else float("nan")
        print(f"  {name:28s} {rate:>12,.0f} msgs/s  {cpu:6.0f} ms CPU")
    if "ceiling" in RESULTS and "streams" in RESULTS:
        ratio = RESULTS["streams"] / RESULTS["ceiling"]
        print(f"  per-message / ceiling         {ratio:.2f}  (goal >= 0.75)")
    if "floor" in RESULTS and "streams" in RESULTS:
        ratio = RESULTS["streams"] / RESULTS["floor"]
        print(f"  per-message / no-Redis floor  {ratio:.2f}")
    if "handwritten" in RESULTS and "streams-batch-True" in RESULTS:
        ratio = RESULTS["streams-batch-True"] / RESULTS["handwritten"]
        print(f"  batch / handwritten loop      {ratio:.2f}  (goal >= 4)")
    if "handwritten" in RESULTS and "streams-batch-messages" in RESULTS:
        ratio = RESULTS["streams-batch-messages"] / RESULTS["handwritten"]
        print(f"  batch='messages' / handwritten {ratio:.2f}")
    if "group-batch" in RESULTS:
        for key, what in (
            ("group-batch-dlq", "max_deliveries + DLQ"),
            ("group-batch-unbounded", "max_in_flight=None"),
        ):
            if key in RESULTS:
                ratio = RESULTS[key] / RESULTS["group-batch"]
                print(f"  group batch, {what} / default  {ratio:.3f}")
    if "group-poison" in RESULTS and "group" in RESULTS:
        ratio = RESULTS["group-poison"] / RESULTS["group"]
        dead = EXTRA["poison-dead-after-last-good"]
        print(
            f"  group 1% poison / group        {ratio:.2f}  (all 1,000 in the DLQ "
            f"{dead * 1e3:.0f} ms after the last good entry)"
        )
    for key in ("group", "group-batch", "group-batch-dlq", "group-batch-unbounded"):
        if f"{key}-ratio" in EXTRA:
            print(
                f"  {key}: received {EXTRA[f'{key}-received'] * 1e3:.0f} ms, all acked "
                f"{EXTRA[f'{key}-acked'] * 1e3:.0f} ms, worst ratio {EXTRA[f'{key}-ratio']:.2f}"
                "  (goal <= 1.2)"
            )
    _write_results()


def _write_results() -> None:
    """The run's table and every round's figures to benchmarks/results/."""
    lines = ["| variant | best msgs/s | x ceiling | CPU ms per round, median (min-max) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    ceiling = RESULTS.get("ceiling")
    for name, rate in RESULTS.items():
        x = f"{rate / ceiling:.2f}" if ceiling else "-"
        cpu = [c * 1e3 for c in CPU.get(name, [])]
        spread = f"{statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f})" if cpu else "-"
        lines.append(f"| {name} | {rate:,.0f} | {x} | {spread} |")
    rows = {"results_msgs_per_s": RESULTS, "cpu_s_per_round": CPU, "extra": EXTRA}
    path = write_run("streamz", "\n".join(lines), rows)
    print(f"  written to {path}")
