"""`fastredis serve`: the server with uvicorn, on an embedded Valkey unless told a Redis.

    fastredis serve [--host 127.0.0.1] [--port 8000] [--redis-url URL | --data-dir DIR]
                    [--api-key KEY ...] ...    (every option: docs/guides/options.md)

Without --redis-url (or REDIS_URL) an embedded Valkey is started, and stopped on exit
(Ctrl-C, SIGTERM). Nothing here imports the server extra until `serve()` runs, so the
`fastredis` command can list `serve` without it. SIGINT/SIGTERM must raise
KeyboardInterrupt (`fastredis.cli.main` arranges it): uvicorn re-raises them after its
own graceful shutdown, and the embedded server is stopped on the way out. If the
embedded Valkey dies first, the server stops and exits with status 1
(`fastredis.server.run.embedded_valkey.Watch`).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import signal
import socket
import ssl
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from fastredis.server.run.options import OPTIONS, add_arguments
from fastredis.server.run.process import bind_port, run_uvicorn
from fastredis.server.run.settings import Settings, redacted

if TYPE_CHECKING:
    from fastredis.embedded import EmbeddedRedis
    from fastredis.server.run.embedded_valkey import Watch

__all__ = ["NEEDS", "register", "serve"]

# what `serve` imports (the server extra), probed before it runs
NEEDS = ("uvicorn", "starlette", "strawberry", "websockets", "multipart", "sse_starlette")


def _fail(message: str) -> int:
    print(f"fastredis serve: {message}", file=sys.stderr, flush=True)
    return 1


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


def _browser_host(host: str, sock: socket.socket) -> str:
    """How a browser on this machine names the server: localhost for a loopback or
    every-interface address, else the host as given."""
    if host in ("", "0.0.0.0", "::", "localhost") or _loopback(sock):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def _loopback(sock: socket.socket) -> bool:
    try:
        return ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except ValueError:
        return False


def _banner(host: str, sock: socket.socket, settings: Settings) -> None:
    base = f"{_browser_host(host, sock)}:{sock.getsockname()[1]}"
    http, ws = ("https", "wss") if settings.ssl_certfile else ("http", "ws")
    print(
        f"API: {http}://{base}  ({ws}://{base}/data/{{sid}}/push, "
        f"{ws}://{base}/data/{{sid}}/pull, GET/POST {http}://{base}/data/{{sid}})",
        flush=True,
    )
    print(f"GraphQL playground: {http}://{base}/graphql", flush=True)
    if settings.root_path:
        print(
            f"Root path: {settings.root_path} (the pages link to it: open them through "
            "the reverse proxy that serves this server there)",
            flush=True,
        )


def _check_tls(settings: Settings) -> str | None:
    """None when the certificate (and key) load, else why not."""
    if not settings.ssl_certfile:
        return None
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        files = settings.ssl_certfile + (
            f" / {settings.ssl_keyfile}" if settings.ssl_keyfile else ""
        )
        return f"cannot use the TLS certificate {files}: {exc.strerror or exc}"
    return None


def _warn_if_open(settings: Settings, sock: socket.socket) -> None:
    """A warning when other machines can reach a server that asks nobody for a token."""
    if settings.access_control or _loopback(sock):
        return
    print(
        f"fastredis serve: warning: listening on {sock.getsockname()[0]} with no access "
        "control: anyone who can reach this port can read and write every stream. Set "
        "--api-key (or a JWT option), or listen on 127.0.0.1",
        file=sys.stderr,
        flush=True,
    )


class _Valkey:
    """The embedded Valkey of this run, if any, and its watch."""

    def __init__(self) -> None:
        self.server: EmbeddedRedis | None = None
        self.watch: Watch | None = None

    def start(self, settings: Settings, args: argparse.Namespace) -> Settings:
        """Start it; `settings` pointed at it (EmbeddedServerError, OSError: it did not)."""
        from fastredis.server.run.embedded_valkey import Watch, embedded_valkey, server_url

        # assigned first: stopped even if a signal arrives while it starts
        self.server = embedded_valkey(settings, args.embedded_port, args.data_dir)
        self.server.start()
        self.watch = Watch(self.server)
        kept = f", data kept in {args.data_dir}" if args.data_dir else ", data not kept"
        print(
            f"Redis: embedded Valkey (pid {self.server.pid}) at {redacted(self.server.url)}{kept}",
            flush=True,
        )
        if self.server.socket_path is not None:
            print(f"Redis: the server reaches it by {self.server.socket_path}", flush=True)
        return replace(settings, redis_url=server_url(self.server))

    @property
    def died(self) -> bool:
        return self.watch is not None and self.watch.died is not None

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.server is not None:
            was_running = self.server.pid is not None
            self.server.close()
            if was_running and not self.died:
                print("embedded Valkey stopped", flush=True)


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT/SIGTERM (exit status 0), a startup failure or the
    embedded Valkey's death (1)."""
    from fastredis.cli import stopped

    valkey = _Valkey()
    try:
        code = _serve(args, valkey)
    except KeyboardInterrupt:  # SIGINT/SIGTERM: a normal end, at any moment
        code = 0
    except Exception:
        # the signal's KeyboardInterrupt, raised inside a library while it starts (e.g.
        # logging's lock in uvicorn's log setup), can come out as another error
        if not stopped():
            raise
        code = 0
    return 1 if valkey.died else code


def _serve(args: argparse.Namespace, valkey: _Valkey) -> int:
    try:
        given = vars(args)
        settings = Settings.from_env(
            **{opt.setting: given[opt.dest] for opt in OPTIONS if opt.setting}
        )
    except ValueError as exc:
        return _fail(str(exc))
    problem = _check_tls(settings)
    if problem:
        return _fail(problem)
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
            from fastredis.embedded import EmbeddedServerError
            from fastredis.server.run.embedded_valkey import why_not_started

            try:
                settings = valkey.start(settings, args)
            except EmbeddedServerError as exc:
                port = valkey.server.port if valkey.server else args.embedded_port
                return _fail(f"cannot start the embedded Valkey: {why_not_started(exc, port)}")
            except OSError as exc:
                return _fail(f"cannot start the embedded Valkey: {exc}")
        return _run(args, settings, sock)
    finally:
        # no second interruption while cleaning up; the process ends next
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sock.close()
        valkey.stop()


def _run(args: argparse.Namespace, settings: Settings, sock: socket.socket) -> int:
    """Serve on `sock` (one process or `--workers`) until a signal."""
    from fastredis.server.run.app import create_app

    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. an unreadable --jwt-public-key
        return _fail(str(exc))
    _warn_if_open(settings, sock)
    _banner(args.host, sock, settings)
    if args.workers > 1:
        from fastredis.server.run.workers import run_workers

        del app  # validated here; each worker builds its own
        return run_workers(settings, sock, args.workers, args.log_level, args.balance)
    run_uvicorn(app, settings, sock, args.log_level)
    return 0


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand to a subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="run the websocket/REST/GraphQL server (embedded Valkey unless --redis-url)",
        description="Run the server. Without --redis-url (or REDIS_URL) an embedded "
        'Valkey is started and stopped with it. Needs pip install "fastredis[server]".',
    )
    add_arguments(p)
    p.set_defaults(func=serve, needs=NEEDS, extra="server")
