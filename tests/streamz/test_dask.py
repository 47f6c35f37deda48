"""Consumer groups on a Dask cluster: scatter/map/buffer/gather acknowledges an entry only
once its result is through gather() and downstream; descriptor mode fetches on the
workers; a worker killed mid-task loses no entry."""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from distributed import Client, LocalCluster
from streamz import Stream
from support.dask_work import burn, burn_all, pid
from support.streamz_helpers import pending_count, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.streamz.descriptors import Descriptor, fetch
from fastredis.streamz.message import Message


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


def _group(redis_url: str, client: Client, consumer: str = "c", **kw: Any) -> Any:
    return Stream.from_redis_consumer_group(
        "s", "g", consumer, url=redis_url, loop=client.loop, **kw
    )


def _fill(plain: redis.Redis, n: int) -> list[str]:
    return [plain.xadd("s", {"i": i}).decode() for i in range(n)]


def _out(plain: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in plain.xrange("out")]


def test_message_pickles_with_its_deliveries() -> None:
    m = Message("s", "1-0", {"a": "1"})
    m.deliveries = 3
    back = pickle.loads(pickle.dumps(m))
    assert back == m and type(back) is Message and back.deliveries == 3


def test_acked_only_after_gather_and_downstream(
    redis_url: str, plain_redis: redis.Redis, sources: list, dask_client: Client
) -> None:
    ids = _fill(plain_redis, 20)
    source = _group(redis_url, dask_client)
    sink = (
        source.scatter().map(burn, seconds=0.05).buffer(4).gather()
        .sink_to_redis_stream("out", url=redis_url)
    )  # fmt: skip
    source.start()
    sources.append(source)

    def acks_never_ahead() -> bool:
        (info,) = plain_redis.xinfo_groups("s")
        acked = (info["entries-read"] or 0) - info["pending"]  # delivered, then acknowledged
        written = plain_redis.xlen("out")  # read after: may only have grown
        assert acked <= written, (acked, written)
        return acked == 20

    wait_until(acks_never_ahead, timeout=60, what="all 20 through the cluster and acked")
    out = _out(plain_redis)
    assert sorted(r["id"] for r in out) == sorted(ids) and sink.written == 20
    assert len({r["pid"] for r in out} - {str(os.getpid())}) >= 1  # ran on the workers


def test_descriptor_mode_fetches_on_the_workers(
    redis_url: str, plain_redis: redis.Redis, sources: list, dask_client: Client
) -> None:
    ids = _fill(plain_redis, 30)
    plain_redis.config_resetstat()
    source = _group(redis_url, dask_client, descriptors=True, count=10)
    got: list[Any] = []
    source.sink(got.append)
    (
        source.scatter().map(fetch).map(burn_all).buffer(4).gather().flatten()
        .sink_to_redis_stream("out", url=redis_url)
    )  # fmt: skip
    source.start()
    sources.append(source)
    wait_until(
        lambda: plain_redis.xlen("out") == 30 and pending_count(plain_redis, "s", "g") == 0,
        timeout=60,
        what="30 entries fetched, processed and acked",
    )
    assert all(type(d) is Descriptor for d in got)  # only id ranges went to the workers
    assert sum(d.count for d in got) == 30 and max(d.count for d in got) <= 10
    assert sorted(r["id"] for r in _out(plain_redis)) == sorted(ids)
    assert plain_redis.info("commandstats")["cmdstat_xrange"]["calls"] >= len(got)


def test_killed_worker_loses_no_entry(
    redis_url: str, plain_redis: redis.Redis, sources: list, dask_client: Client
) -> None:
    ids = _fill(plain_redis, 12)
    source = _group(redis_url, dask_client, "doomed")
    source.scatter().map(burn, seconds=0.5).buffer(4).gather().sink_to_redis_stream(
        "out", url=redis_url
    )
    source.start()
    sources.append(source)
    wait_until(lambda: plain_redis.xlen("out") >= 2, timeout=60, what="2 results")
    victim = next(iter(dask_client.run(pid).values()))
    os.kill(victim, signal.SIGKILL)  # mid-task: its tasks and scattered entries are lost
    # Whatever did not come back stays pending (never acknowledged), and is redelivered:
    # here XAUTOCLAIM by a second consumer on the same cluster.
    rescuer = _group(redis_url, dask_client, "rescuer", autoclaim_idle=2.0)
    rescuer.scatter().map(burn).buffer(4).gather().sink_to_redis_stream("out", url=redis_url)
    rescuer.start()
    sources.append(rescuer)
    wait_until(
        lambda: (
            pending_count(plain_redis, "s", "g") == 0
            and {r["id"] for r in _out(plain_redis)} == set(ids)
        ),
        timeout=90,
        what="every entry processed and acked",
    )
