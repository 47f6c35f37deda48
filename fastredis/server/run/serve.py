"""`fastredis serve`: the server with uvicorn, on an embedded Valkey unless told a Redis.

    fastredis serve [--host 127.0.0.1] [--port 8000] [--redis-url URL | --data-dir DIR]
                    [--embedded-port PORT] [--maxlen N]
                    [--max-message-size BYTES] [--cors-origin ORIGIN ...]
                    [--api-key KEY ...] [--jwt-secret SECRET] [--jwt-public-key FILE]

Without --redis-url (or REDIS_URL) an embedded Valkey is started, and stopped on exit
(Ctrl-C, SIGTERM). Nothing here imports the server extra until `serve()` runs, so the
`fastredis` command can list `serve` without it. SIGINT/SIGTERM must raise
KeyboardInterrupt (`fastredis.cli.main` arranges it): uvicorn re-raises them after its
own graceful shutdown, and the embedded server is stopped on the way out.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastredis.server.run.process import bind_port, run_uvicorn
from fastredis.server.run.settings import Settings, parse_size

__all__ = ["NEEDS", "redacted", "register", "serve"]

# what `serve` imports (the server extra), probed before it runs
NEEDS = ("uvicorn", "starlette", "strawberry", "websockets", "multipart", "sse_starlette")


def _fail(message: str) -> int:
    print(f"fastredis serve: {message}", file=sys.stderr, flush=True)
    return 1


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be in [0, 3600]: {text!r}")
    return value


def _positive(text: str) -> int:
    value = _nonnegative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0-65535 (0: any free port), not {text!r}")
    return value


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


def _has_password(url: str) -> bool:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    return parts.password is not None or any(k.lower() == "password" for k, _ in query)


def _check_redis(url: str) -> str | None:
    """None when Redis at `url` answers PING, else why not, in the user's terms."""
    import redis

    shown = redacted(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except (ValueError, redis.RedisError) as exc:
        return f"bad Redis URL {shown}: {exc}"
    try:
        client.ping()
    except redis.AuthenticationError:
        if not _has_password(url):
            return (
                f"Redis at {shown} needs a password: put it in the URL, "
                "redis://:PASSWORD@HOST:PORT/0 (redis://USER:PASSWORD@... for an ACL "
                "user), with --redis-url or REDIS_URL"
            )
        return f"Redis at {shown} refused the user name or password given in the URL"
    except redis.RedisError as exc:
        return f"cannot reach Redis at {shown}: {exc}"
    finally:
        client.close()
    return None


def _banner(host: str, port: int) -> None:
    base = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(
        f"API: http://{base}  (ws://{base}/data/{{sid}}/push, "
        f"ws://{base}/data/{{sid}}/pull, GET/POST http://{base}/data/{{sid}})",
        flush=True,
    )
    print(f"GraphQL playground: http://{base}/graphql", flush=True)


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM (exit status 0) or a startup failure (1)."""
    try:
        return _serve(args)
    except KeyboardInterrupt:  # SIGINT/SIGTERM: a normal end, at any moment
        return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            redis_url=args.redis_url,
            redis_cluster=args.redis_cluster,
            maxlen=args.maxlen,
            max_message_size=args.max_message_size,
            max_entries_per_message=args.max_entries_per_message,
            max_sockets=args.max_sockets,
            redis_max_connections=args.redis_max_connections,
            max_header_size=args.max_header_size,
            max_read_bytes=args.max_read_bytes,
            drain_seconds=args.drain_seconds,
            cors_origins=args.cors_origin,
            api_keys=args.api_key,
            jwt_secret=args.jwt_secret,
            jwt_public_key=args.jwt_public_key,
            offsets=args.offsets,
        )
    except ValueError as exc:
        return _fail(str(exc))
    try:
        # one process listens itself; workers share the parent's socket or bind their own
        sock = bind_port(args.host, args.port, args.balance if args.workers > 1 else "shared")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(
                f"port {args.port} on {args.host} is already in use "
                "(another server is running there; pick one with --port)"
            )
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    embedded = None
    if settings.redis_url and (args.data_dir or args.embedded_port is not None):
        sock.close()
        return _fail("--data-dir and --embedded-port are for the embedded Valkey, not --redis-url")
    try:
        if settings.redis_url:
            problem = _check_redis(settings.redis_url)
            if problem:
                return _fail(problem)
            print(f"Redis: {redacted(settings.redis_url)}", flush=True)
        else:
            from fastredis.embedded import EmbeddedRedis, EmbeddedServerError

            try:
                # assigned first: stopped even if a signal arrives while it starts
                embedded = EmbeddedRedis(port=args.embedded_port, data_dir=args.data_dir)
                embedded.start()
            except (EmbeddedServerError, OSError) as exc:
                return _fail(f"cannot start the embedded Valkey: {exc}")
            settings = replace(settings, redis_url=embedded.url)
            kept = f", data kept in {args.data_dir}" if args.data_dir else ", data not kept"
            print(
                f"Redis: embedded Valkey (pid {embedded.pid}) at {embedded.url}{kept}",
                flush=True,
            )
        from fastredis.server.run.app import create_app

        try:
            app = create_app(settings)
        except ValueError as exc:  # e.g. an unreadable --jwt-public-key
            return _fail(str(exc))
        _banner(args.host, sock.getsockname()[1])
        if args.workers > 1:
            from fastredis.server.run.workers import run_workers

            del app  # validated here; each worker builds its own
            return run_workers(settings, sock, args.workers, args.log_level, args.balance)
        run_uvicorn(app, settings, sock, args.log_level)
    finally:
        # no second interruption while cleaning up; the process ends next
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sock.close()
        if embedded is not None:
            was_running = embedded.pid is not None
            embedded.close()
            if was_running:
                print("embedded Valkey stopped", flush=True)
    return 0


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand to a subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="run the websocket/REST/GraphQL server (embedded Valkey unless --redis-url)",
        description="Run the server. Without --redis-url (or REDIS_URL) an embedded "
        'Valkey is started and stopped with it. Needs pip install "fastredis[server]".',
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=8000, help="port to listen on (8000; 0: any free port)"
    )
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
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="N server processes on the port, sharing one Redis (the embedded Valkey is "
        "started once, by the parent); default 1",
    )
    p.add_argument(
        "--balance",
        choices=["reuseport", "shared"],
        default="shared",
        help="with --workers: one accept socket for all (shared, the default, as uvicorn "
        "--workers), or one SO_REUSEPORT listener per worker, the kernel spreading "
        "connections by address hash (reuseport)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="the embedded Valkey keeps its data in DIR (saved on exit and hourly, loaded "
        "at the next start); without it the embedded server forgets everything on exit",
    )
    p.add_argument(
        "--embedded-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="port of the embedded Valkey on 127.0.0.1 (default: a free one)",
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
        help="largest websocket message / REST body, e.g. 64MiB (the default; "
        "or FASTREDIS_MAX_MESSAGE_SIZE)",
    )
    p.add_argument(
        "--max-entries-per-message",
        type=_nonnegative,
        default=None,
        help="most entries one push message or POST may add (1000)",
    )
    p.add_argument(
        "--max-sockets",
        type=_nonnegative,
        default=None,
        help="most websockets and MJPEG streams open at once; past it 1013 / 503 (10000)",
    )
    p.add_argument(
        "--redis-max-connections",
        type=_nonnegative,
        default=None,
        help="most Redis connections per server process, however many sockets; a "
        "request finding all busy waits its turn (32; or FASTREDIS_REDIS_MAX_CONNECTIONS)",
    )
    p.add_argument(
        "--max-header-size",
        type=_size,
        default=None,
        help="largest push header (JSON text), e.g. 256KiB (the default)",
    )
    p.add_argument(
        "--max-read-bytes",
        type=_size,
        default=None,
        help="about the most one Redis reply of a read may hold, e.g. 16MiB (the default; "
        "or FASTREDIS_MAX_READ_BYTES); a REST GET cut short says more-entries: 1",
    )
    p.add_argument(
        "--drain-seconds",
        type=_seconds,
        default=None,
        help="on SIGTERM, close pulls (1012, with a retry hint) spread over this many "
        "seconds, after pushes got their acks (5)",
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
        "--offsets",
        choices=["start", "end"],
        default=None,
        help="offsets in pull headers and REST GETs by default: start (the protocol "
        "specification, the default) or end (for clients of the Redis Streamer protocol "
        "that read end offsets and x-offsets / x-last-entry-id); or FASTREDIS_OFFSETS",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (info)",
    )
    p.set_defaults(func=serve, needs=NEEDS, extra="server")
