"""`fastredis serve`: the server with uvicorn, on an embedded Valkey unless told a Redis.

    fastredis serve [--host 127.0.0.1] [--port 8000] [--redis-url URL] [--maxlen N]
                    [--max-message-size BYTES] [--cors-origin ORIGIN ...]
                    [--api-key KEY ...] [--jwt-secret SECRET] [--jwt-public-key FILE]

Without --redis-url (or REDIS_URL) an embedded Valkey is started, and stopped on exit
(Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["register", "serve"]


def _fail(message: str) -> int:
    print(f"fastredis serve: {message}", file=sys.stderr, flush=True)
    return 1


def _size(text: str) -> int:
    """A byte count: 1048576, 64MiB, 64M, 512k ..."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = 1
    if raw and raw[-1] in units:
        factor = units[raw[-1]]
        raw = raw[:-1]
    try:
        value = int(raw) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _redacted(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (raises OSError naming the problem)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signum)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into _Stop (uvicorn re-raises them after its own graceful
    shutdown), so the embedded server is always stopped on the way out."""
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        signal.signal(sig, _raise_stop)
    try:
        yield
    finally:
        for sig in handled:  # no second interruption while cleaning up
            signal.signal(sig, signal.SIG_IGN)


def _check_redis(url: str) -> str | None:
    """None when Redis at `url` answers PING, else why not."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except (ValueError, redis.RedisError) as exc:
        return f"bad Redis URL {_redacted(url)}: {exc}"
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"cannot reach Redis at {_redacted(url)}: {exc}"
    finally:
        client.close()
    return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from fastredis.server.app import create_app
    from fastredis.server.settings import Settings
    from fastredis.server.uvicorn_guard import uvicorn_options

    try:
        settings = Settings.from_env(
            redis_url=args.redis_url,
            redis_cluster=args.redis_cluster,
            maxlen=args.maxlen,
            max_message_size=args.max_message_size,
            max_entries_per_message=args.max_entries_per_message,
            max_header_size=args.max_header_size,
            cors_origins=args.cors_origin,
            api_keys=args.api_key,
            jwt_secret=args.jwt_secret,
            jwt_public_key=args.jwt_public_key,
        )
    except ValueError as exc:
        return _fail(str(exc))

    try:
        sock = _listen(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(
                f"port {args.port} on {args.host} is already in use "
                "(another server is running there; pick one with --port)"
            )
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")

    embedded = None
    try:
        with _stop_on_signals():
            try:
                if settings.redis_url:
                    problem = _check_redis(settings.redis_url)
                    if problem:
                        return _fail(problem)
                    print(f"Redis: {_redacted(settings.redis_url)}", flush=True)
                else:
                    from fastredis.embedded import EmbeddedRedis, EmbeddedServerError

                    try:
                        embedded = EmbeddedRedis()  # assigned first: stopped even if a
                        embedded.start()  # signal arrives while it starts
                    except EmbeddedServerError as exc:
                        return _fail(f"cannot start the embedded Valkey: {exc}")
                    settings = replace(settings, redis_url=embedded.url)
                    print(
                        f"Redis: embedded Valkey (pid {embedded.pid}) at {embedded.url}",
                        flush=True,
                    )
                try:
                    app = create_app(settings)
                except ValueError as exc:  # e.g. an unreadable --jwt-public-key
                    return _fail(str(exc))
                host = f"[{args.host}]" if ":" in args.host else args.host
                base = f"{host}:{args.port}"
                print(
                    f"API: http://{base}  (ws://{base}/data/{{sid}}/push, "
                    f"ws://{base}/data/{{sid}}/pull, GET/POST http://{base}/data/{{sid}})",
                    flush=True,
                )
                print(f"GraphQL playground: http://{base}/graphql", flush=True)
                config = uvicorn.Config(
                    app,
                    **uvicorn_options(settings),  # hardened websockets-sansio
                    # not "auto": with uvloop installed, 1 MB pulls measured 293 MB/s
                    # against 704 MB/s on asyncio's loop (benchmarks/bench_server.py)
                    loop="asyncio",
                    lifespan="on",
                    log_level=args.log_level,
                    timeout_graceful_shutdown=5,
                )
                uvicorn.Server(config).run(sockets=[sock])
            except _Stop:
                pass
    finally:
        sock.close()
        if embedded is not None:
            was_running = embedded.pid is not None
            embedded.close()
            if was_running:
                print("embedded Valkey stopped", flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return 0


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand to a subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="run the websocket/REST/GraphQL server (embedded Valkey unless --redis-url)",
        description="Run the server. Without --redis-url (or REDIS_URL) an embedded "
        "Valkey is started and stopped with it.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    p.add_argument(
        "--redis-url",
        default=None,
        help="Redis to use, e.g. redis://host:6379/0 (default: REDIS_URL, else embedded)",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=None,
        help="the Redis URL is a node of a Redis Cluster (default: ask it, INFO cluster)",
    )
    p.add_argument(
        "--maxlen",
        type=_nonnegative,
        default=None,
        help="trim streams to about N entries (MAXLEN ~ N; 0: never); default "
        "FASTREDIS_STREAM_MAXLEN or 1000",
    )
    p.add_argument(
        "--max-message-size",
        type=_size,
        default=None,
        help="largest websocket message / REST body, e.g. 64MiB (the default)",
    )
    p.add_argument(
        "--max-entries-per-message",
        type=_nonnegative,
        default=None,
        help="most entries one push message or POST may add (1000)",
    )
    p.add_argument(
        "--max-header-size",
        type=_size,
        default=None,
        help="largest push header (JSON text), e.g. 256KiB (the default)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow this browser origin (repeatable; '*' for any); default "
        "FASTREDIS_CORS_ORIGINS or none",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="a token granting full access (repeatable); default FASTREDIS_API_KEYS "
        "(comma-separated). With any of these three set, every endpoint but the health "
        "checks needs a token",
    )
    p.add_argument(
        "--jwt-secret",
        default=None,
        metavar="SECRET",
        help="accept HS256 JWTs signed with SECRET, scoped by their `streams` claim; "
        "default FASTREDIS_JWT_SECRET (safer: command lines are visible to other users)",
    )
    p.add_argument(
        "--jwt-public-key",
        default=None,
        metavar="FILE",
        help="accept RS256/ES256 JWTs verified with this PEM public key; default "
        "FASTREDIS_JWT_PUBLIC_KEY",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (info)",
    )
    p.set_defaults(func=serve)
