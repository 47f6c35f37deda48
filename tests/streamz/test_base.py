"""What every source shares: key type checks, a missing server, stop and cleanup, client_params."""

from __future__ import annotations

import threading

import pytest
import redis
from streamz import Stream
from support.redis_clients import connections_named
from support.streamz_helpers import Collector, collect, sources_fixture  # noqa: F401
from support.waiting import wait_until

from fastredis.embedded import free_port


def test_wrong_key_type_names_the_key(redis_url: str, plain_redis: redis.Redis) -> None:
    plain_redis.rpush("a-list", "x")
    plain_redis.xadd("a-stream", {"x": 1})
    with pytest.raises(TypeError, match="'a-list' holds a list, not a stream"):
        Stream.from_redis_streams(["ok", "a-list"], url=redis_url).start()
    with pytest.raises(TypeError, match="'a-list' holds a list, not a stream"):
        Stream.from_redis_consumer_group("a-list", "g", "c", url=redis_url).start()
    with pytest.raises(TypeError, match="'a-stream' holds a stream, not a list"):
        Stream.from_redis_lists("a-stream", url=redis_url).start()


def test_missing_server_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for source in (
        Stream.from_redis_streams("s", url=url),
        Stream.from_redis_lists("q", url=url),
        Stream.from_redis_consumer_group("s", "g", "c", url=url),
    ):
        with pytest.raises(
            redis.exceptions.ConnectionError, match=r"cannot reach Redis at 127\.0\.0\.1"
        ):
            source.start()
        assert source.stopped


@pytest.mark.parametrize("kind", ["streams", "lists", "group"])
def test_stop_cancels_a_blocking_read_and_closes_connections(
    redis_url: str, plain_redis: redis.Redis, kind: str
) -> None:
    name = f"stop-test-{kind}"
    params = {"client_name": name}  # tells this source's connections from anybody else's
    threads = threading.active_count()
    make = {
        "streams": lambda: Stream.from_redis_streams("s", url=redis_url, client_params=params),
        "lists": lambda: Stream.from_redis_lists("q", url=redis_url, client_params=params),
        "group": lambda: Stream.from_redis_consumer_group(
            "s", "g", "c", url=redis_url, client_params=params,
            heartbeat_interval=0.1, claim_timeout=1,
        ),
    }[kind]  # fmt: skip
    for _ in range(2):  # start again after stop
        source = make()
        got = Collector()
        source.sink(got)
        source.start()
        wait_until(lambda: connections_named(plain_redis, name) > 0, what="the source's connection")
        if kind == "group":  # reading, heartbeats and the pub/sub listener
            wait_until(lambda: connections_named(plain_redis, name) >= 3, what="3 connections")
        source.stop()  # the read blocks forever (timeout=0): stop() must cut it
        assert source.stopped
        wait_until(lambda: connections_named(plain_redis, name) == 0, what="connections closed")
        # (streamz's IO loop thread may start with the first source; nothing beyond that)
        assert threading.active_count() <= threads + 1


@pytest.mark.parametrize(
    "params", [{"decode_responses": True}, {"protocol": 3}], ids=["decode_responses", "resp3"]
)
def test_client_params_decode_responses_and_resp3(
    redis_url: str, plain_redis: redis.Redis, sources: list, params: dict
) -> None:
    """decode_responses=True or RESP3 in client_params changes nothing the sources emit."""
    plain_redis.xadd("s", {"a": 1})
    plain_redis.rpush("q", "x")
    streams = collect(
        Stream.from_redis_streams("s", url=redis_url, client_params=params, default_start_id="0"),
        sources,
    )
    group = collect(
        Stream.from_redis_consumer_group(
            "s", "g", "c", url=redis_url, client_params=params, heartbeat_interval=0.1,
            claim_timeout=1,
        ),
        sources,
    )  # fmt: skip
    lists = collect(Stream.from_redis_lists("q", url=redis_url, client_params=params), sources)
    assert streams.wait_for(1)[0][2] == {"a": "1"}
    assert group.wait_for(1)[0][2] == {"a": "1"}
    assert lists.wait_for(1) == ["x"]
    wait_until(lambda: plain_redis.xpending("s", "g")["pending"] == 0, what="acks")
