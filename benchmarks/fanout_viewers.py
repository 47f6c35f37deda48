"""Viewer load processes for benchmarks/bench_fanout.py: many websocket pulls of one
stream, in a process of their own so their CPU does not sit with the server's.

`Viewers(url, n)` starts a process (multiprocessing, spawn) holding `n` pulls made with
the `websockets` client and answers over a pipe: `connect()` (all open), `seen()` (how
many have had a frame), `window(t0, t1)` (count frames and latency samples received
between two CLOCK_MONOTONIC times, in ns), `report()` and `close()`.

Every payload starts with its sequence number and send time (`>QQ`, as the load tool
stamps them). Each viewer checks its frames follow each other: a sequence number not
above the previous one is a duplicate or out of order; a jump is counted as skipped.
Text headers are taken as bytes (`decode=False`): only the start offset is parsed.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import struct
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import websockets
from websockets.asyncio.client import connect

__all__ = ["Viewers"]

STAMP = struct.Struct(">QQ")  # sequence number, send time (monotonic ns)
HANDSHAKES_AT_ONCE = 50


@dataclass
class _Viewer:
    frames: int = 0
    in_window: int = 0
    last_seq: int = -1
    duplicates: int = 0  # sequence number not above the previous one
    skipped: int = 0  # sequence numbers jumped over
    error: str = ""


@dataclass
class _State:
    uri: str
    viewers: list[_Viewer] = field(default_factory=list)
    t0: int = 1 << 62
    t1: int = 1 << 62
    samples: array = field(default_factory=lambda: array("d"))  # ms, in the window
    sockets: list[Any] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _offset(header: Any) -> int:
    """The start offset of a `[[sid, id, start]]` header (text, as bytes)."""
    if isinstance(header, (bytes, bytearray)) and header.endswith(b",0]]"):
        return 0
    return int(json.loads(header)[0][2])


async def _view(st: _State, v: _Viewer, ws: Any, with_header: bool) -> None:
    recv = ws.recv
    try:
        while True:
            start = _offset(await recv(decode=False)) if with_header else 0
            data = await recv(decode=False)
            now = time.monotonic_ns()
            seq, sent = STAMP.unpack_from(data, start)
            if seq <= v.last_seq:
                v.duplicates += 1
            else:
                if v.last_seq >= 0:
                    v.skipped += seq - v.last_seq - 1
                v.last_seq = seq
            v.frames += 1
            if st.t0 <= now < st.t1:
                v.in_window += 1
                st.samples.append((now - sent) / 1e6)
    except websockets.ConnectionClosedOK:
        pass
    except Exception as exc:  # reported, not raised: one viewer's end is data
        v.error = f"{type(exc).__name__}: {exc}"[:200]


async def _connect_all(st: _State, n: int, with_header: bool) -> list[str]:
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def one() -> None:
        async with gate:
            ws = await connect(
                st.uri, compression=None, max_size=None, ping_interval=None, open_timeout=30
            )
        v = _Viewer()
        st.viewers.append(v)
        st.sockets.append(ws)
        st.tasks.append(asyncio.get_running_loop().create_task(_view(st, v, ws, with_header)))

    done = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    return [f"{type(e).__name__}: {e}" for e in done if isinstance(e, BaseException)]


def _report(st: _State) -> dict[str, Any]:
    return {
        "in_window": [v.in_window for v in st.viewers],
        "samples": st.samples.tobytes(),
    }


def _checks(st: _State) -> list[dict[str, Any]]:
    return [
        {"frames": v.frames, "duplicates": v.duplicates, "skipped": v.skipped, "error": v.error}
        for v in st.viewers
    ]


async def _close(st: _State) -> None:
    await asyncio.gather(*(ws.close() for ws in st.sockets), return_exceptions=True)
    if st.tasks:
        await asyncio.wait(st.tasks, timeout=10)


async def _serve(conn: Connection, uri: str, n: int, with_header: bool) -> None:
    """Answer the parent's commands until `close`."""
    st = _State(uri)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    while True:
        cmd, *args = await commands.get()
        if cmd == "connect":
            conn.send(await _connect_all(st, n, with_header))
        elif cmd == "seen":
            conn.send(sum(1 for v in st.viewers if v.frames or v.error))
        elif cmd == "window":
            st.t0, st.t1 = args
            conn.send(None)
        elif cmd == "report":
            conn.send(_report(st))
        elif cmd == "close":
            await _close(st)
            conn.send(_checks(st))
            loop.remove_reader(conn.fileno())
            return


def _main(conn: Connection, uri: str, n: int, with_header: bool) -> None:
    asyncio.run(_serve(conn, uri, n, with_header))


class Viewers:
    """`n` pulls of `uri` in a process of their own; the methods block on its answer."""

    def __init__(self, uri: str, n: int, with_header: bool = True) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_main, args=(child, uri, n, with_header), daemon=True)
        self.proc.start()
        child.close()
        self.n = n

    def ask(self, *cmd: Any, timeout: float = 60.0) -> Any:
        self.conn.send(cmd)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"viewer process gave no answer to {cmd[0]!r} in {timeout} s")
        return self.conn.recv()

    def connect(self) -> list[str]:
        return self.ask("connect")

    def seen(self) -> int:
        return self.ask("seen")

    def window(self, t0: int, t1: int) -> None:
        self.ask("window", t0, t1)

    def report(self) -> dict[str, Any]:
        return self.ask("report")

    def close(self) -> list[dict[str, Any]]:
        try:
            return self.ask("close")
        finally:
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
