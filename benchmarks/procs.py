"""Processes for the benchmarks: server subprocesses (`fastredis serve` or
benchmarks/bare_ws_server.py, started from a checkout's root and stopped again; also
tests/test_loadtool.py's), and forked client processes that hold many websockets
(`ClientProcs`: bench_idle.py's and bench_storm.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import http.client
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fastredis.embedded import find_server_binary

ROOT = Path(__file__).resolve().parent.parent


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.args} did not answer on port {port} within {timeout}s")


def spawn_server(
    args: list[str],
    port: int,
    timeout: float = 30.0,
    root: Path = ROOT,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`python ARGS` (checkout `root`, this one by default, first on PYTHONPATH), once
    it answers HTTP on `port`; killed again if it exits or does not answer in `timeout` s.
    `prefix`: a command that runs it, say `callgrind_prefix`'s."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    command = [*prefix, sys.executable, *args]
    proc = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL)
    try:
        _wait_http(port, proc, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def callgrind_prefix(out: str) -> list[str]:
    """Run under valgrind's callgrind, its counts dumped to `out`.<n> (`callgrind_count`)."""
    return ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out}"]


def callgrind_count(pid: int, out: str) -> int:
    """Instructions (Ir) process `pid` (run with `callgrind_prefix(out)`) executed since
    the last call (or since it started): dumped, and counted from zero again."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    newest = max(glob.glob(out + ".*"), key=os.path.getmtime)
    with open(newest) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in the callgrind dump {newest}")


def callgrind_valkey(tmp: str, out: str) -> str:
    """An executable in `tmp` that runs the Valkey binary under `callgrind_prefix(out)`."""
    wrapper = os.path.join(tmp, "valkey-callgrind")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {" ".join(callgrind_prefix(out))} {find_server_binary()} "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


FD_SPARE = 200  # descriptors a process needs besides its sockets
CommandLoop = Callable[[Connection], Coroutine[Any, Any, None]]


def raise_nofile(need: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to `need` (never lowers it); the
    new soft limit. RuntimeError when the hard limit is below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and need > hard:
        raise RuntimeError(
            f"{need} file descriptors needed, the hard limit (ulimit -Hn) is {hard}: "
            "use fewer sockets or more client processes"
        )
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        soft = need
    return soft


async def next_command(conn: Connection) -> tuple[str, Any]:
    """A client process's next (command, argument) from its parent (the loop runs on)."""
    cmd, arg = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    return cmd, arg


def _client_main(conn: Connection, fds: int, loop: CommandLoop) -> None:
    raise_nofile(fds)
    asyncio.run(loop(conn))


class ClientProcs:
    """`n` client processes (forked before any event loop runs in the parent), each
    running `loop` on the commands `ask` sends it, until ``quit`` (`close`)."""

    def __init__(self, n: int, per_proc: int, loop: CommandLoop) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(child, per_proc + FD_SPARE, loop))
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def ask(self, cmd: str, args: list[Any]) -> list[Any]:
        """Send `cmd` with one argument per process; their replies, in order."""
        for conn, arg in zip(self.conns, args, strict=True):
            conn.send((cmd, arg))
        return [conn.recv() for conn in self.conns]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("quit", None))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
