"""One server process: its socket on the port, and uvicorn serving the app on that socket.

`fastredis serve` uses both in its own process; with ``--workers N`` the parent binds the
port and each worker runs uvicorn (`fastredis.server.run.workers`).
"""

from __future__ import annotations

import signal
import socket
from typing import Any

from fastredis.server.run.settings import Settings

__all__ = ["LISTEN_BACKLOG", "bind_port", "how_it_ended", "run_uvicorn"]

# Connections the kernel holds for the server to accept (capped by net.core.somaxconn,
# 4096 by default since Linux 5.4). uvicorn's 2048 overflowed when thousands of viewers
# reconnected at once: each connection dropped then waited a 1 s SYN-ACK retransmit
# (TcpExtListenOverflows; benchmarks/bench_storm.py).
LISTEN_BACKLOG = 65_535


def how_it_ended(code: int | None) -> str:
    """A child process's end in words, from its exit code (negative: the signal)."""
    if code is not None and code < 0:
        try:
            return f"was killed ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed (signal {-code})"
    return f"exited with status {code}"


def bind_port(host: str, port: int, balance: str) -> socket.socket:
    """The parent's socket on host:port: listening (shared) or only bound (reuseport)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if balance == "reuseport":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if balance == "shared":
            sock.listen(LISTEN_BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def run_uvicorn(app: Any, settings: Settings, sock: socket.socket, log_level: str) -> None:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn, stopped by draining first (`fastredis.server.edge.drain`): no new
        connections, then pushes acked and pulls closed with 1012 over the window."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            drain = getattr(getattr(app, "state", None), "drain", None)
            if drain is not None:
                await drain.run()
            AppStatus.should_exit = True  # SSE streams still open end now
            await super().shutdown(sockets)

    from sse_starlette.sse import AppStatus

    # sse-starlette would end every SSE stream at the signal, all at once: the drain
    # ends them instead, spread over its window
    AppStatus.disable_automatic_graceful_drain()

    from fastredis.server.edge.uvicorn_guard import uvicorn_options

    config = uvicorn.Config(
        app,
        **uvicorn_options(settings),  # hardened websockets-sansio
        # not "auto": with uvloop installed, 1 MB pulls measured 293 MB/s
        # against 704 MB/s on asyncio's loop (benchmarks/bench_server.py)
        loop="asyncio",
        ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile,
        lifespan="on",
        backlog=LISTEN_BACKLOG,  # asyncio listens again with it
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )
    DrainingServer(config).run(sockets=[sock])
