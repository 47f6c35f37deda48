"""Server settings: one dataclass, filled from arguments or the environment (the option
table, `fastredis.server.run.options`, gives the defaults and the variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastredis.server.run.options import OPTIONS, option

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_SOCKETS",
    "DEFAULT_REDIS_MAX_CONNECTIONS",
    "ConnectionBudget",
    "Settings",
    "redacted",
]

DEFAULT_MAXLEN: int = option("--maxlen").default
DEFAULT_MAX_MESSAGE_SIZE: int = option("--max-message-size").default
DEFAULT_MAX_ENTRIES: int = option("--max-entries-per-message").default
DEFAULT_MAX_SOCKETS: int = option("--max-sockets").default
DEFAULT_REDIS_MAX_CONNECTIONS: int = option("--redis-max-connections").default
DEFAULT_MAX_HEADER_SIZE: int = option("--max-header-size").default
MIN_REDIS_CONNECTIONS = 8
MAX_PUMPS = 2  # pulls catching up by splice at once, per process (a thread each)
# How long a request waits for a free Redis connection before it is told to try again
# (1013 / 503); the fixed users (write lanes, hub reads) never wait on the pool.
REDIS_POOL_WAIT_S = 60.0

# redis-py defaults for the server's client. No socket_timeout (redis-py's default
# is 5 s): blocking reads set their own wait anyway, and with a timeout redis-py
# wraps every send in asyncio.wait_for, a task per command. Dead peers are found by
# TCP keepalive; connecting fails fast.
DEFAULT_REDIS_PARAMS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 0,
    # Read replies in chunks of up to 1 MiB (redis-py's 64 KiB default costs
    # ~2x on 1 MB entries); it is a cap, nothing is allocated up front.
    "socket_read_size": 1 << 20,
}


def redacted(url: str) -> str:
    """`url` with its password, in the user part or as ?password=, shown as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        netloc = user + netloc.rsplit("@", 1)[-1]
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in query):
        hidden = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class ConnectionBudget:
    """How one server process splits its `redis_max_connections`.

    * ``writers``: write lanes, shared by every push socket and REST POST;
    * ``tail`` / ``catch_up``: the hub's shared tail reads and catch-up reads;
    * ``parking``: the one blocking read of idle streams;
    * ``pumps``: pulls catching up by splice, a connection each
      (`fastredis.server.reads.splice_pump`; one per 16, at most two);
    * ``other``: the rest, for requests (REST GETs, GraphQL, metrics, health).
    """

    writers: int
    tail: int
    catch_up: int
    parking: int
    other: int
    pumps: int

    @classmethod
    def split(cls, total: int) -> ConnectionBudget:
        writers = max(1, total // 8)
        catch_up = max(1, total // 8)
        tail = max(1, total // 2)
        pumps = min(MAX_PUMPS, total // 16)
        return cls(writers, tail, catch_up, 1, total - writers - catch_up - tail - 1 - pumps, pumps)


@dataclass
class Settings:
    """What the server needs to run.

    * ``redis_url``: the Redis to use (``None``: the CLI starts an embedded Valkey).
    * ``redis_cluster``: True: it is a node of a Redis Cluster; None: ask it.
    * ``maxlen``: each XADD trims with ``MAXLEN ~ maxlen`` (approximate); 0 disables.
    * ``max_message_size``: the largest websocket message (and REST body) accepted,
      in bytes; larger ones close the socket with 1009 (REST: 413).
    * ``max_entries_per_message``: the most entries one push message (or POST) may
      add; more close the socket with 1009 (REST: 413). A message is written as one
      atomic script, so this bounds how long it holds Redis.
    * ``max_header_size``: the largest push header (its JSON text), in bytes; a
      larger one closes the socket with 1009.
    * ``max_read_bytes``: about the most one Redis reply of a read may hold (REST GET,
      pull, GraphQL, MJPEG, the hub's shared reads); a REST GET cut short by it says
      ``more-entries: 1``.
    * ``max_sockets``: the most long-lived sockets (websockets, MJPEG streams) open at
      once; past it a websocket is closed with 1013 (try again later), MJPEG gets 503.
    * ``redis_max_connections``: the most Redis connections the process opens (see
      `ConnectionBudget`); a request finding them all busy waits its turn, up to
      `REDIS_POOL_WAIT_S` s, then gets 1013 / 503.
    * ``handshake_timeout``: seconds a client has to send a request head (or a
      websocket handshake); a slower one gets 408 and is closed.
    * ``cors_origins``: origins allowed by CORS for HTTP; when set, websocket
      handshakes whose ``Origin`` is not listed are closed with 1008 as well.
    * ``redis_params``: extra redis-py client arguments (passed unchanged).
    * ``pull_block_ms``: the default ``block`` of a websocket pull.
    * ``producer_ttl``: seconds a producer's state (``producer=`` pushes) is kept after
      its last write.
    * ``drain_seconds``: on SIGTERM, pulls are closed (1012, with a retry hint) spread
      over this many seconds, after pushes have had their acks.
    * ``offsets``: what the pull header and REST GET put as each entry's offset by
      default: ``start`` (the specification) or ``end`` (the Redis Streamer protocol's
      deployed clients; REST then also names its headers ``x-offsets`` and
      ``x-last-entry-id``). The ``offsets`` query parameter picks per request.
    * ``splice_pulls``: ``on`` lets a pull catch up by splice(2)
      (`fastredis.server.reads.splice_pump`); ``off``: every pull reads through the hub.
    * ``api_keys``, ``jwt_secret`` (HS256), ``jwt_public_key`` (a PEM file, RS256 or
      ES256): with any of them set, every endpoint but the health checks needs a
      token (see `fastredis.server.edge.auth`).
    * ``ssl_certfile``, ``ssl_keyfile``: serve TLS (https://, wss://).
    * ``forwarded_allow_ips``, ``root_path``: behind a reverse proxy (see
      `fastredis.server.edge.proxy`).
    """

    # A field filled by an option has the option table's default (test_options.py
    # checks that they agree); handshake_timeout, redis_params and pull_block_ms have
    # no option.
    redis_url: str | None = None
    redis_cluster: bool | None = None  # None: ask the server (INFO cluster)
    maxlen: int = DEFAULT_MAXLEN
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_entries_per_message: int = DEFAULT_MAX_ENTRIES
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    max_read_bytes: int = option("--max-read-bytes").default
    max_sockets: int = DEFAULT_MAX_SOCKETS
    redis_max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    handshake_timeout: float = 10.0
    cors_origins: list[str] = field(default_factory=list)
    redis_params: dict[str, Any] = field(default_factory=dict)
    pull_block_ms: int = 5000
    producer_ttl: float = option("--producer-ttl").default
    drain_seconds: float = option("--drain-seconds").default
    offsets: str = "start"
    splice_pulls: str = option("--splice-pulls").default
    api_keys: list[str] = field(default_factory=list, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    forwarded_allow_ips: tuple[str, ...] = option("--forwarded-allow-ips").default
    root_path: str = ""

    def __post_init__(self) -> None:
        if self.maxlen < 0:
            raise ValueError(f"maxlen must be >= 0, not {self.maxlen}")
        for name in (
            "max_message_size",
            "max_entries_per_message",
            "max_header_size",
            "max_read_bytes",
            "max_sockets",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.redis_max_connections < MIN_REDIS_CONNECTIONS:
            raise ValueError(
                f"redis_max_connections must be >= {MIN_REDIS_CONNECTIONS} (write lanes, "
                f"hub reads and requests share them), not {self.redis_max_connections}"
            )
        if not self.handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, not {self.handshake_timeout}")
        if not 0 < self.producer_ttl < 10**9:
            raise ValueError(f"producer_ttl must be > 0 seconds, not {self.producer_ttl}")
        if self.offsets not in ("start", "end"):
            raise ValueError(f"offsets must be start or end, not {self.offsets!r}")
        if self.splice_pulls not in ("on", "off"):
            raise ValueError(f"splice_pulls must be on or off, not {self.splice_pulls!r}")
        if not 0 <= self.drain_seconds <= 3600:
            raise ValueError(f"drain_seconds must be 0 to 3600, not {self.drain_seconds}")
        if self.pull_block_ms < 0:
            raise ValueError(f"pull_block_ms must be >= 0, not {self.pull_block_ms}")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("--ssl-keyfile needs --ssl-certfile (the certificate it belongs to)")
        if any(not key or key != key.strip() or "," in key for key in self.api_keys):
            raise ValueError("an API key must be non-empty, without spaces around or commas")

    @property
    def access_control(self) -> bool:
        """Every endpoint but the health checks needs a token."""
        return bool(self.api_keys or self.jwt_secret or self.jwt_public_key)

    @property
    def budget(self) -> ConnectionBudget:
        return ConnectionBudget.split(self.redis_max_connections)

    @property
    def client_params(self) -> dict[str, Any]:
        """redis-py arguments of the server's client (decode_responses is always off)."""
        params = {**DEFAULT_REDIS_PARAMS, **self.redis_params, "decode_responses": False}
        if (self.redis_url or "").startswith("unix:"):
            # TCP-only options that redis-py's unix socket connection refuses
            for name in ("socket_keepalive", "socket_keepalive_options"):
                params.pop(name, None)
        return params

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment variables of the option table (REDIS_URL,
        FASTREDIS_STREAM_MAXLEN, ...; docs/guides/options.md), with `overrides` (None
        values ignored) on top."""
        env = os.environ if env is None else env
        values = {opt.setting: opt.from_env(env) for opt in OPTIONS if opt.setting}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
