"""Every example of the streamz_redis tutorial, run as written against a real server.

Only the connection details differ (the tutorial's redis.example.com is the test server) and
`Source.` is read as `Stream.`. The pipelines, TextFileWriter and convert_message are the
tutorial's own; a second sink observes what the file writer gets so the test can wait for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis
from streamz import Stream
from support.streamz_helpers import Collector, pending_count, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis

# -- the tutorial's code, verbatim --------------------------------------------------------


class TextFileWriter:
    def __init__(self, filename):
        self.fp = open(filename, "a")  # noqa: SIM115
        weakref.finalize(self, self.fp.close)  # make sure the file is closed

    def __call__(self, x):
        self.fp.write(x)


def convert_message(message):
    stream, _id, data = message.copy()
    data["_redis_stream"] = stream
    data["_redis_message_id"] = _id
    return data


# -------------------------------------------------------------------------------------------


def _params(server: EmbeddedRedis, **extra: Any) -> dict[str, Any]:
    return dict(host=server.host, port=server.port, **extra)


def test_lists_example_partition_to_file(
    redis_server: EmbeddedRedis, redis_url: str, tmp_path: Path, sources: list
) -> None:
    client_params = dict(host=redis_server.host, port=redis_server.port, db=1)
    producer = redis.Redis(**client_params)
    records = [json.dumps({"n": i, "text": f"item {i}"}) for i in range(1000)]
    producer.rpush("my-list", *records)

    data_json = tmp_path / "data.json"
    source = Stream.from_redis_lists("my-list", client_params=client_params)
    writer = TextFileWriter(str(data_json))
    written = Collector()
    batches = source.partition(1000, timeout=3).map(lambda x: "\n".join(x) + "\n")
    batches.sink(writer)
    batches.sink(written)

    source.start()
    sources.append(source)
    written.wait_for(1)
    source.stop()
    writer.fp.flush()
    lines = data_json.read_text().splitlines()
    assert lines == records  # FIFO: RPUSH'ed, popped from the left
    assert producer.llen("my-list") == 0


def test_lists_partition_timeout_flushes_incomplete_batch(
    redis_server: EmbeddedRedis, redis_url: str, sources: list
) -> None:
    """Fewer than 1000 items: the partition's 3 s timeout delivers them anyway."""
    client_params = _params(redis_server)
    source = Stream.from_redis_lists("my-list", client_params=client_params)
    got = Collector()
    source.partition(1000, timeout=3).map(lambda x: "\n".join(x) + "\n").sink(got)
    source.start()
    sources.append(source)
    redis.Redis(**client_params).rpush("my-list", "a", "b", "c")
    assert got.wait_for(1, timeout=10) == ["a\nb\nc\n"]


def test_lists_several_keys(redis_server: EmbeddedRedis, redis_url: str, sources: list) -> None:
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    source = Stream.from_redis_lists(["list-1", "list-2"], client_params=client_params)
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    producer.rpush("list-1", "a1", "a2")
    producer.rpush("list-2", "b1")
    assert sorted(got.wait_for(3)) == ["a1", "a2", "b1"]


def test_lists_left_right_fifo_lifo(
    redis_server: EmbeddedRedis, redis_url: str, sources: list
) -> None:
    """Reading the side items are added to is LIFO; the other side is FIFO."""
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    items = [f"x{i}" for i in range(50)]
    cases = {  # (push command, left) -> expected order
        ("rpush", True): items,  # FIFO
        ("rpush", False): items[::-1],  # LIFO
        ("lpush", True): items[::-1],  # LIFO
        ("lpush", False): items,  # FIFO
    }
    for (push, left), expected in cases.items():
        key = f"q-{push}-{left}"
        getattr(producer, push)(key, *items)  # all queued before the source starts
        source = Stream.from_redis_lists(key, left=left, client_params=client_params)
        got = Collector()
        source.sink(got)
        source.start()
        sources.append(source)
        assert got.wait_for(len(items)) == expected, (push, left)
        source.stop()


def test_lists_one_at_a_time_uses_blpop(
    redis_server: EmbeddedRedis, redis_url: str, sources: list
) -> None:
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    producer.rpush("q", "1", "2", "3")
    source = Stream.from_redis_lists("q", left=False, count=1, client_params=client_params)
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    assert got.wait_for(3) == ["3", "2", "1"]


def test_streams_example_convert_message_to_file(
    redis_server: EmbeddedRedis, redis_url: str, tmp_path: Path, sources: list
) -> None:
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    producer.xadd("my-stream", {"before": "start"})  # "$": not read

    data_json = tmp_path / "data.json"
    writer = TextFileWriter(str(data_json))
    written = Collector()
    source = Stream.from_redis_streams(streams="my-stream", client_params=client_params)
    batches = (
        source.map(convert_message)
        .map(json.dumps)
        .partition(1000, timeout=3)
        .map(lambda x: "\n".join(x) + "\n")
    )
    batches.sink(writer)
    batches.sink(written)
    source.start()
    sources.append(source)

    pipe = producer.pipeline(transaction=False)
    for i in range(1000):
        pipe.xadd("my-stream", {"n": i, "name": f"item-{i}"})
    ids = [i.decode() for i in pipe.execute()]
    written.wait_for(1)
    source.stop()
    writer.fp.flush()
    records = [json.loads(line) for line in data_json.read_text().splitlines()]
    assert records == [
        {
            "n": str(i),
            "name": f"item-{i}",
            "_redis_stream": "my-stream",
            "_redis_message_id": ids[i],
        }
        for i in range(1000)
    ]


def test_streams_notations_are_equivalent(
    redis_server: EmbeddedRedis, redis_url: str, sources: list
) -> None:
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    ids = [producer.xadd("my-stream", {"i": i}).decode() for i in range(5)]
    variants = [
        Stream.from_redis_streams({"my-stream": "0"}, client_params=client_params),
        Stream.from_redis_streams("my-stream", default_start_id="0", client_params=client_params),
        Stream.from_redis_streams(["my-stream"], default_start_id="0", client_params=client_params),
        Stream.from_redis_streams(
            "my-stream", default_start_id=ids[1], client_params=client_params
        ),
    ]
    got = []
    for source in variants:
        c = Collector()
        source.sink(c)
        got.append(c)
        source.start()
        sources.append(source)
    expected = [("my-stream", i, {"i": str(n)}) for n, i in enumerate(ids)]
    for c in got[:3]:
        assert c.wait_for(5) == expected
    assert got[3].wait_for(3) == expected[2:]


def test_streams_dict_with_dollar(
    redis_server: EmbeddedRedis, redis_url: str, sources: list
) -> None:
    client_params = _params(redis_server)
    producer = redis.Redis(**client_params)
    producer.xadd("stream-1", {"old": 1})
    source = Stream.from_redis_streams(
        {"stream-1": "$", "stream-2": "$"}, client_params=client_params
    )
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    a = producer.xadd("stream-1", {"new": 1}).decode()
    b = producer.xadd("stream-2", {"new": 2}).decode()
    assert sorted(got.wait_for(2)) == [("stream-1", a, {"new": "1"}), ("stream-2", b, {"new": "2"})]


def test_consumer_group_example(redis_server: EmbeddedRedis, redis_url: str, sources: list) -> None:
    client_params = _params(redis_server)
    name = str(uuid4())
    source = Stream.from_redis_consumer_group(
        streams=["stream-1", "stream-2"],
        group_name="streaming",
        consumer_name=name,
        client_params=client_params,
        heartbeat_interval=5,
        claim_timeout=50,
    )
    got = Collector()
    source.sink(got)
    source.start()
    sources.append(source)
    producer = redis.Redis(**client_params)
    expected = []
    for i in range(20):
        stream = f"stream-{i % 2 + 1}"
        expected.append((stream, producer.xadd(stream, {"i": i}).decode(), {"i": str(i)}))
    assert sorted(got.wait_for(20)) == sorted(expected)
    for stream in ("stream-1", "stream-2"):
        wait_until(lambda s=stream: pending_count(producer, s, "streaming") == 0, what="all acked")


def test_entry_points_register_without_importing_fastredis(redis_url: str) -> None:
    """`from streamz import Stream` alone gives the sources and sinks (entry points)."""
    code = textwrap.dedent(
        f"""
        import sys
        from streamz import Stream
        assert "fastredis" not in sys.modules
        for name in ("from_redis_lists", "from_redis_streams", "from_redis_consumer_group",
                     "sink_to_redis_list", "sink_to_redis_stream"):
            assert hasattr(Stream, name), name
        src = Stream.from_redis_streams("s", url={redis_url!r}, default_start_id="0")
        out = src.sink_to_redis_list("copied", url={redis_url!r})
        assert type(src).__module__ == "fastredis.streamz.streams", type(src)
        print(type(src).__name__, type(out).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["from_redis_streams", "sink_to_redis_list"]
