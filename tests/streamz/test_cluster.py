"""The streamz tutorial's pipelines against a Redis Cluster: the pipelines
as written, with client_params naming one node of the cluster; the producer is redis-py's
RedisCluster (a plain client would get MOVED)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis
from streamz import Stream
from support.streamz_helpers import Collector, pending_count, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.embedded import EmbeddedCluster


def convert_message(message):  # the tutorial's, verbatim
    stream, _id, data = message.copy()
    data["_redis_stream"] = stream
    data["_redis_message_id"] = _id
    return data


def _params(cluster: EmbeddedCluster) -> dict[str, Any]:
    node = cluster.live_nodes()[0]
    return dict(host=node.host, port=node.port)


def _producer(cluster: EmbeddedCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.url)


def _start(source: Any, sources: list) -> Collector:
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    return got


def test_streams_example_convert_message(
    redis_cluster: EmbeddedCluster, cluster_url: str, tmp_path: Path, sources: list
) -> None:
    producer = _producer(redis_cluster)
    producer.xadd("my-stream", {"before": "start"})  # "$": not read
    source = Stream.from_redis_streams(streams="my-stream", client_params=_params(redis_cluster))
    batches = (
        source.map(convert_message)
        .map(json.dumps)
        .partition(100, timeout=3)
        .map(lambda x: "\n".join(x) + "\n")
    )
    written = Collector()
    batches.sink(written)
    source.start()
    sources.append(source)
    ids = [producer.xadd("my-stream", {"n": i}).decode() for i in range(100)]
    text = written.wait_for(1)[0]
    assert [json.loads(line) for line in text.splitlines()] == [
        {"n": str(i), "_redis_stream": "my-stream", "_redis_message_id": ids[i]} for i in range(100)
    ]


def test_streams_over_several_slots_with_dollar(
    redis_cluster: EmbeddedCluster, cluster_url: str, sources: list
) -> None:
    producer = _producer(redis_cluster)
    names = ["stream-1", "stream-2", "stream-3", "{cam1}:rgb", "{cam1}:depth"]
    assert len({producer.keyslot(n) for n in names}) == 4
    producer.xadd("stream-1", {"old": 1})
    source = Stream.from_redis_streams(
        dict.fromkeys(names, "$"), client_params=_params(redis_cluster)
    )
    got = _start(source, sources)
    wait_until(lambda: source.started, what="the source reading")
    expected = [(n, producer.xadd(n, {"new": n}).decode(), {"new": n}) for n in names]
    assert sorted(got.wait_for(len(names))) == sorted(expected)


def test_consumer_group_example(
    redis_cluster: EmbeddedCluster, cluster_url: str, sources: list
) -> None:
    producer = _producer(redis_cluster)
    streams = ["stream-1", "stream-2", "stream-3"]
    source = Stream.from_redis_consumer_group(
        streams=streams,
        group_name="streaming",
        consumer_name=str(uuid4()),
        client_params=_params(redis_cluster),
        heartbeat_interval=5,
        claim_timeout=50,
    )
    got = _start(source, sources)
    expected = []
    for i in range(30):
        stream = streams[i % 3]
        expected.append((stream, producer.xadd(stream, {"i": i}).decode(), {"i": str(i)}))
    assert sorted(got.wait_for(30)) == sorted(expected)
    for stream in streams:
        wait_until(lambda s=stream: pending_count(producer, s, "streaming") == 0, what="acked")


def test_lists_several_keys_and_sinks(
    redis_cluster: EmbeddedCluster, cluster_url: str, sources: list
) -> None:
    producer = _producer(redis_cluster)
    params = _params(redis_cluster)
    assert producer.keyslot("list-1") != producer.keyslot("list-2")  # one BLMPOP per slot
    source = Stream.from_redis_lists(["list-1", "list-2"], client_params=params)
    source.sink_to_redis_list("copied", client_params=params)
    source.map(lambda x: {"x": x}).sink_to_redis_stream("copied-stream", client_params=params)
    got = _start(source, sources)
    producer.rpush("list-1", "a1", "a2")
    producer.rpush("list-2", "b1")
    assert sorted(got.wait_for(3)) == ["a1", "a2", "b1"]
    wait_until(lambda: producer.llen("copied") == 3, what="the list sink")
    wait_until(lambda: producer.xlen("copied-stream") == 3, what="the stream sink")
    assert sorted(producer.lrange("copied", 0, -1)) == [b"a1", b"a2", b"b1"]


def test_consumer_group_resumes_after_a_failover(
    private_cluster: EmbeddedCluster, sources: list
) -> None:
    """The primary of one of the group's streams is killed mid-stream: once its replica
    took over, the source reads and acknowledges on, and every entry the promoted
    primary holds is delivered."""
    producer = _producer(private_cluster)
    streams = ["{cam1}:rgb", "other"]
    source = Stream.from_redis_consumer_group(
        streams=streams,
        group_name="g",
        consumer_name="c",
        client_params=_params(private_cluster),
        heartbeat_interval=1,
        claim_timeout=50,
    )
    got = _start(source, sources)
    before = [producer.xadd(streams[i % 2], {"i": i}).decode() for i in range(20)]
    got.wait_for(20, timeout=30)
    killed = private_cluster.kill_primary(streams[0])
    private_cluster.wait_failover(streams[0], killed)
    with redis.RedisCluster.from_url(private_cluster.url) as after_failover:
        after = [after_failover.xadd(streams[i % 2], {"i": i}).decode() for i in range(20, 40)]
        ids = {i for _s, i, _f in got.wait_for(40, timeout=30)}
        assert set(before + after) <= ids
        for stream in streams:
            wait_until(
                lambda s=stream: pending_count(after_failover, s, "g") == 0,
                timeout=30,
                what=f"{stream} acknowledged after the failover",
            )
