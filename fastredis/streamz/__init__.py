"""streamz sources and sinks for Redis lists, streams and consumer groups (the `streamz` extra).

Installing fastredis registers them with streamz through its entry points, so
``from streamz import Stream`` is all a pipeline needs::

    source = Stream.from_redis_streams("my-stream", url="redis://...")

One module per part: ``lists``, ``streams`` and ``groups`` (the sources), ``claims``
(heartbeats and taking over silent consumers' entries), ``acks`` (reference counts and
batched XACK), ``sinks``, ``emission`` (the one loop every source emits with) and
``message`` (``Message``, which needs neither streamz nor a connection: importing it does
not import the rest).
"""

from __future__ import annotations

from typing import Any

from fastredis.streamz.message import Message

__all__ = [
    "Message",
    "from_redis_consumer_group",
    "from_redis_lists",
    "from_redis_streams",
    "sink_to_redis_list",
    "sink_to_redis_stream",
]

_WHERE = {
    "from_redis_lists": "lists",
    "from_redis_streams": "streams",
    "from_redis_consumer_group": "groups",
    "sink_to_redis_list": "sinks",
    "sink_to_redis_stream": "sinks",
}


def __getattr__(name: str) -> Any:
    # The sources need streamz; Message (e.g. unpickled on a Dask worker) does not.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
