"""`fastredis serve --workers N`: N server processes on one port, one Redis.

The parent holds the port, starts the embedded Valkey (once, shared) and supervises;
each worker is a fresh interpreter (multiprocessing "spawn") running the app under
uvicorn. All state lives in Redis, so any worker can serve any request.

How connections reach the workers (`--balance`):

* `shared` (the default): one listening socket, inherited by every worker, as
  uvicorn's `--workers` does; whichever worker is awake first accepts.
* `reuseport`: every worker listens on its own SO_REUSEPORT socket and the kernel
  spreads new connections over them by a hash of the addresses. The parent keeps a
  bound, non-listening socket on the port so it stays ours.

benchmarks/bench_workers.py measures the spread of both: 40 connections opened under
load went 20/20 (shared) and 18/22 (reuseport) in the same run, so the default is
the shared socket; reuseport is there for loads where one worker hogs the accepts.

SIGINT/SIGTERM to the parent stop every worker (SIGTERM: uvicorn's graceful
shutdown, SIGKILL after `grace` s); a worker that dies stops the others, exit 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import socket
import sys
from multiprocessing.process import BaseProcess
from typing import Any

from fastredis.server.run.process import LISTEN_BACKLOG, how_it_ended, run_uvicorn
from fastredis.server.run.settings import Settings

__all__ = ["BALANCES", "run_workers"]

BALANCES = ("reuseport", "shared")
_PR_SET_PDEATHSIG = 1


def _listener(parent: socket.socket) -> socket.socket:
    """A worker's own SO_REUSEPORT listener on the parent's address."""
    sock = socket.socket(parent.family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(parent.getsockname()[:2])
    sock.listen(LISTEN_BACKLOG)
    return sock


def _worker(settings: Settings, log_level: str, sock: socket.socket, balance: str) -> None:
    """One worker process: the app under uvicorn until SIGTERM/SIGINT."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with the parent
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    from fastredis.server.run.app import create_app

    listener = _listener(sock) if balance == "reuseport" else sock
    if balance == "reuseport":
        sock.close()
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal it got
        run_uvicorn(create_app(settings), settings, listener, log_level)


def _stop(workers: list[BaseProcess], grace: float) -> None:
    for proc in workers:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    for proc in workers:
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run_workers(
    settings: Settings,
    sock: socket.socket,
    count: int,
    log_level: str,
    balance: str = "shared",
    grace: float = 10.0,
) -> int:
    """Run `count` workers on `sock` until a signal (0) or a worker's death (1)."""
    spawn: Any = multiprocessing.get_context("spawn")
    workers: list[BaseProcess] = []
    try:
        for _ in range(count):
            proc = spawn.Process(
                target=_worker, args=(settings, log_level, sock, balance), daemon=False
            )
            proc.start()
            workers.append(proc)
        print(f"workers: {count} ({balance}), pids {' '.join(str(p.pid) for p in workers)}",
              flush=True)  # fmt: skip
        from multiprocessing.connection import wait

        # ready when one exits; its sentinel closes before the exit can be reaped, so
        # take the worker from what wait() returned and join it (is_alive() may still
        # say True at this point)
        ready = wait([p.sentinel for p in workers])
        dead = next(p for p in workers if p.sentinel in ready)
        dead.join()
        number = workers.index(dead) + 1
        print(
            f"worker {number} of {count} (pid {dead.pid}) {how_it_ended(dead.exitcode)}: stopping "
            "the others",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:  # SIGINT/SIGTERM to the parent
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        _stop(workers, grace)
