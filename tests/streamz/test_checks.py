"""Argument checks of the sources: each bad argument is refused with a reason."""

from __future__ import annotations

import pytest
from streamz import Stream
from support.streamz_helpers import Collector, collect, sources_fixture  # noqa: F401


@pytest.mark.parametrize(
    ("timeout", "block"), [(0, 0), (None, 0), (0.0005, 0), (0.001, 1), (0.25, 250), (2, 2000)]
)
def test_timeout_seconds_to_block_ms(timeout, block) -> None:
    assert Stream.from_redis_streams("s", timeout=timeout)._block == block


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"count": -1}, ValueError, "count must be a positive int"),
        ({"count": 0}, ValueError, "count must be a positive int"),
        ({"count": 2.5}, TypeError, "count must be a positive int"),
        ({"timeout": -1}, ValueError, "timeout must be >= 0"),
        ({"timeout": "1"}, TypeError, "timeout must be a number"),
        ({"default_start_id": "abc"}, ValueError, "start id"),
        ({"streams": 5}, TypeError, "streams must be"),
        ({"streams": []}, ValueError, "at least one stream"),
        ({"streams": {"s": "nope"}}, ValueError, "start id for stream 's'"),
        ({"batch": "yes"}, ValueError, "batch must be"),
        ({"client_params": "localhost"}, TypeError, "client_params"),
        ({"convert": True, "encoding": None}, ValueError, "encoding"),
    ],
)
def test_bad_arguments_streams(kwargs, error, match) -> None:
    kwargs = {"streams": "s", **kwargs}
    with pytest.raises(error, match=match):
        Stream.from_redis_streams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"group_name": ""}, ValueError, "group_name"),
        ({"consumer_name": None}, ValueError, "consumer_name"),
        ({"heartbeat_interval": 0}, ValueError, "heartbeat_interval"),
        ({"claim_timeout": -5}, ValueError, "claim_timeout"),
        ({"heartbeat_interval": 5, "claim_timeout": 5}, ValueError, "longer than heartbeat"),
        ({"autoclaim_idle": 0}, ValueError, "autoclaim_idle"),
        ({"count": -3}, ValueError, "count"),
        ({"max_deliveries": 3}, ValueError, "go together"),
        ({"dead_letter_stream": "dlq"}, ValueError, "go together"),
        ({"max_deliveries": 0, "dead_letter_stream": "dlq"}, ValueError, "max_deliveries"),
        ({"max_deliveries": 3, "dead_letter_stream": "s"}, ValueError, "is a stream read here"),
        ({"max_deliveries": 3, "dead_letter_stream": "d", "retry_after": 0}, ValueError, "retry"),
    ],
)
def test_bad_arguments_group(kwargs, error, match) -> None:
    kwargs = {"streams": "s", "group_name": "g", "consumer_name": "c", **kwargs}
    with pytest.raises(error, match=match):
        Stream.from_redis_consumer_group(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"keys": []}, TypeError), ({"keys": "q", "count": 0}, ValueError), ({"keys": 3}, TypeError)],
)
def test_bad_arguments_lists(kwargs, error) -> None:
    with pytest.raises(error):
        Stream.from_redis_lists(**kwargs)


@pytest.mark.parametrize("sink", ["sink_to_redis_list", "sink_to_redis_stream"])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_batch": None}, TypeError, "max_batch must be a positive int, not None"),
        ({"high_water": None}, TypeError, "high_water must be a positive int, not None"),
        ({"max_batch": 0}, ValueError, "max_batch must be a positive int, not 0"),
    ],
)
def test_bad_arguments_sinks(sink: str, kwargs, error, match) -> None:
    """Refused when made, not when the first write would divide its queue by None."""
    with pytest.raises(error, match=match):
        getattr(Stream(), sink)("k", url="redis://127.0.0.1:1", **kwargs)
