"""Client of the fastredis server's websocket protocol, asyncio and blocking, and the
test-client verbs of the `fastredis` command.

    from fastredis.client import AsyncClient, Client

| module | what |
|---|---|
| `async_client` | AsyncClient, AsyncPusher, AsyncPuller |
| `sync_client` | Client, Pusher, Puller (the blocking twins) |
| `protocol` | endpoint URLs, push frames, pull-frame splitting |
| `errors` | ClientError, ServerUnreachable, ServerClosed |
| `reconnect` | Gap, the backoff, the pull cursor, a producer's unacked messages |
| `verbs` | push-increment, pull-raw, push-image, pull-image |

A server that cannot be reached raises `ServerUnreachable`, naming the URL; a server
that closes a socket with an error code raises `ServerClosed`. The sockets need the
`client` extra (websockets); the names are imported on first use, so `fastredis --help`
works without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastredis.client.async_client import AsyncClient, AsyncPuller, AsyncPusher
    from fastredis.client.errors import ClientError, ServerClosed, ServerUnreachable
    from fastredis.client.protocol import DEFAULT_URL, Entry, pull_url, push_url, split_frame
    from fastredis.client.reconnect import Gap
    from fastredis.client.sync_client import Client, Puller, Pusher

_WHERE = {
    "AsyncClient": "async_client",
    "AsyncPuller": "async_client",
    "AsyncPusher": "async_client",
    "Client": "sync_client",
    "Puller": "sync_client",
    "Pusher": "sync_client",
    "ClientError": "errors",
    "ServerClosed": "errors",
    "ServerUnreachable": "errors",
    "Gap": "reconnect",
    "DEFAULT_URL": "protocol",
    "Entry": "protocol",
    "pull_url": "protocol",
    "push_url": "protocol",
    "split_frame": "protocol",
}

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AsyncPuller",
    "AsyncPusher",
    "Client",
    "ClientError",
    "Entry",
    "Gap",
    "Puller",
    "Pusher",
    "ServerClosed",
    "ServerUnreachable",
    "pull_url",
    "push_url",
    "split_frame",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fastredis.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fastredis.client.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
