"""Load generator for any server speaking the Redis Streamer websocket protocol.

    python benchmarks/loadtool.py --url ws://127.0.0.1:8000 push --sid s --messages 20000 --size 100
    python benchmarks/loadtool.py --url ws://127.0.0.1:8000 pull --sid s --entries 20000 --count 100
    python benchmarks/loadtool.py --url ws://127.0.0.1:8000 pull --sid s --entries 400 --client raw
    python benchmarks/loadtool.py --url ws://127.0.0.1:8000 latency --sid lat --size 300000 --fps 30

Modes:

* push: `messages` messages in the README form (a text JSON header, then one binary
  message) of `batch` entries of `size` bytes each (header `[end1, end2, ...]`;
  `[len(data)]` for one entry). Every payload starts with its sequence number
  (8 bytes, big endian), so a puller can tell lost, repeated or mis-sliced entries.
  When is a push done? `--confirm close` (any server): the close handshake completed;
  `--confirm ack`: the server acknowledges every message (`?ack=1`, fastredis and
  the bare servers); `--confirm redis --redis-url URL`: the stream's entries-added
  counter (XINFO STREAM) reached the pushed count, i.e. Redis holds every entry.
* pull: reads from `last_entry_id` (default 0) with `count` until `entries` entries
  arrived; checks ids strictly increase per stream (compared as (ms, seq) integers,
  never as strings), every payload has `size` bytes and the sequence numbers follow
  each other: duplicates and lost entries are counted, never hidden.
* latency: one pusher sends `size`-byte frames at `fps` for `duration` seconds, each
  carrying its send time (CLOCK_MONOTONIC ns at bytes 8..16); one puller on its own
  connection reports receive-minus-send percentiles.

Results are printed as text, or JSON with --json. Compression is never negotiated
(`compression=None`): payloads are mostly incompressible.

The API (`push`, `pull`, `latency`, `Result`) is what benchmarks/bench_server.py and
tests/test_loadtool.py use.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import websockets

__all__ = ["Result", "latency", "make_payloads", "percentile", "pull", "push", "raw_pull"]

_SEQ = struct.Struct(">Q")
_SEQ_TIME = struct.Struct(">QQ")
STAMP_BYTES = _SEQ_TIME.size  # sequence number + send time: the smallest latency payload


@dataclass
class Result:
    """What one run measured; `ok` is true when nothing was lost, repeated or malformed."""

    mode: str
    url: str
    sid: str
    entries: int = 0  # entries pushed, or received
    messages: int = 0  # websocket data messages (push) / batches (pull)
    payload_bytes: int = 0
    seconds: float = 0.0
    duplicates: int = 0
    lost: int = 0
    out_of_order: int = 0
    bad_size: int = 0
    errors: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def entries_per_s(self) -> float:
        return self.entries / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.duplicates or self.lost or self.out_of_order or self.bad_size or self.errors
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            entries_per_s=round(self.entries_per_s, 1),
            mb_per_s=round(self.mb_per_s, 2),
            ok=self.ok,
        )
        return out

    def text(self) -> str:
        line = (
            f"{self.mode} {self.sid} @ {self.url}: {self.entries} entries, "
            f"{self.payload_bytes / 1e6:.2f} MB in {self.seconds:.3f} s = "
            f"{self.entries_per_s:,.0f} entries/s, {self.mb_per_s:,.1f} MB/s"
        )
        if self.latency_ms:
            line += "; latency ms " + ", ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items())
        line += (
            f"; duplicates {self.duplicates}, lost {self.lost}, out of order "
            f"{self.out_of_order}, bad size {self.bad_size}"
        )
        if self.errors:
            line += "; errors: " + "; ".join(self.errors)
        return line


def _endpoint(url: str, sid: str, kind: str, query: dict[str, Any]) -> str:
    q = {k: v for k, v in query.items() if v is not None}
    return f"{url.rstrip('/')}/data/{sid}/{kind}" + (f"?{urlencode(q)}" if q else "")


def _connect(uri: str) -> Any:
    # No compression (incompressible payloads), no size limit (1 MB entries, 100 per
    # batch), no keepalive pings that could land inside a measurement.
    return websockets.connect(
        uri, compression=None, max_size=None, ping_interval=None, open_timeout=10
    )


def make_payloads(
    messages: int, size: int, batch: int = 1, seq_start: int = 0
) -> tuple[list[str], list[bytes]]:
    """The README-form headers and the binary messages of a push, built before timing.

    Entry k (counting from `seq_start`) is `size` bytes: its sequence number (8 bytes,
    big endian, when size >= 8) and then random bytes shared by every entry.
    """
    body = os.urandom(size)
    ends = json.dumps([size * (i + 1) for i in range(batch)], separators=(",", ":"))
    headers, datas = [], []
    seq = seq_start
    for _ in range(messages):
        if size >= _SEQ.size:
            parts = [_SEQ.pack(seq + i) + body[_SEQ.size :] for i in range(batch)]
        else:
            parts = [body] * batch
        seq += batch
        headers.append(ends)
        datas.append(b"".join(parts) if batch > 1 else parts[0])
    return headers, datas


async def _entries_added(redis_url: str, sid: str) -> Any:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)

    async def read() -> int:
        try:
            info = await client.xinfo_stream(sid)
        except redis.ResponseError:  # no such key yet
            return 0
        return int(info.get("entries-added", info.get("length", 0)))

    return client, read


async def push(
    url: str,
    sid: str,
    messages: int,
    size: int,
    batch: int = 1,
    *,
    confirm: str = "close",
    redis_url: str | None = None,
    seq_start: int = 0,
    payloads: tuple[list[str], list[bytes]] | None = None,
    timeout: float = 120.0,
    query: dict[str, Any] | None = None,
) -> Result:
    """Push `messages` README-form messages of `batch` entries of `size` bytes.
    `query`: more query parameters for the server (e.g. token)."""
    if confirm not in ("close", "ack", "redis"):
        raise ValueError(f"confirm must be close, ack or redis, not {confirm!r}")
    if confirm == "redis" and not redis_url:
        raise ValueError("confirm='redis' needs redis_url")
    headers, datas = payloads or make_payloads(messages, size, batch, seq_start)
    entries = messages * batch
    res = Result(
        "push",
        url,
        sid,
        entries=entries,
        messages=messages,
        payload_bytes=entries * size,
        params={"size": size, "batch": batch, "confirm": confirm},
    )
    uri = _endpoint(url, sid, "push", {**({"ack": 1} if confirm == "ack" else {}), **(query or {})})
    rclient, added = None, None
    if confirm == "redis":
        rclient, added = await _entries_added(redis_url, sid)  # type: ignore[arg-type]
        base = await added()
    try:
        async with _connect(uri) as ws:
            acked = 0
            done = asyncio.get_running_loop().create_future()

            async def read_acks() -> None:
                nonlocal acked
                async for _reply in ws:
                    acked += 1
                    if acked == messages:
                        break
                if not done.done():
                    done.set_result(None)

            reader = asyncio.create_task(read_acks()) if confirm == "ack" else None
            t0 = time.perf_counter()
            for header, data in zip(headers, datas, strict=True):
                await ws.send(header)
                await ws.send(data)
            if reader is not None:
                await asyncio.wait_for(reader, timeout)
                if acked < messages:
                    res.lost = (messages - acked) * batch
                    res.errors.append(f"only {acked} of {messages} messages acknowledged")
            elif added is not None:
                deadline = time.perf_counter() + timeout
                while (n := await added()) - base < entries:
                    if time.perf_counter() > deadline:
                        res.lost = entries - (n - base)
                        res.errors.append(f"Redis holds {n - base} of {entries} entries")
                        break
                    await asyncio.sleep(0.0005)
            else:
                await ws.close()
            res.seconds = time.perf_counter() - t0
            if ws.close_code not in (None, 1000):
                res.errors.append(f"server closed {ws.close_code}: {ws.close_reason}")
    except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if rclient is not None:
            await rclient.aclose()
    return res


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class _Checker:
    """Per-entry checks shared by pull and latency: ids, sizes, sequence numbers."""

    def __init__(self, res: Result, size: int | None, check_seq: bool) -> None:
        self.res = res
        self.size = size
        self.check_seq = check_seq and (size is None or size >= _SEQ.size)
        self.last_id: dict[str, tuple[int, int]] = {}
        self.seen: set[int] = set()
        self.first_seq: int | None = None

    def batch(self, header: list[list[Any]], data: bytes) -> None:
        res = self.res
        n = len(header)
        for i, (sid, entry_id, start) in enumerate(header):
            end = header[i + 1][2] if i + 1 < n else len(data)
            key = _parse_id(entry_id)
            prev = self.last_id.get(sid)
            if prev is not None and key <= prev:
                res.out_of_order += 1
            self.last_id[sid] = key
            length = end - start
            if self.size is not None and length != self.size:
                res.bad_size += 1
            if self.check_seq and length >= _SEQ.size:
                (seq,) = _SEQ.unpack_from(data, start)
                if seq in self.seen:
                    res.duplicates += 1
                else:
                    self.seen.add(seq)
                    if self.first_seq is None:
                        self.first_seq = seq
            res.payload_bytes += length
        res.entries += n
        res.messages += 1

    def finish(self, expected: int) -> None:
        res = self.res
        if self.check_seq and self.seen:
            # The sequence numbers pushed were first_seq .. first_seq + expected - 1.
            first = self.first_seq if self.first_seq is not None else 0
            res.lost = sum(1 for s in range(first, first + expected) if s not in self.seen)
        else:
            res.lost = max(0, expected - res.entries)


async def _recv_batch(ws: Any, timeout: float) -> tuple[list[list[Any]], bytes]:
    header = await asyncio.wait_for(ws.recv(), timeout)
    data = await asyncio.wait_for(ws.recv(), timeout)
    if not isinstance(header, str) or isinstance(data, str):
        raise ValueError("expected a text header and then a binary message")
    return json.loads(header), data


async def pull(
    url: str,
    sid: str,
    entries: int,
    count: int = 1,
    *,
    size: int | None = None,
    last_entry_id: str = "0",
    latest: bool = False,
    check_seq: bool = True,
    idle_timeout: float = 10.0,
    query: dict[str, Any] | None = None,
) -> Result:
    """Pull until `entries` entries arrived (or nothing came for `idle_timeout` s).
    `query`: more query parameters for the server (e.g. block, max_fps)."""
    res = Result(
        "pull",
        url,
        sid,
        params={"count": count, "size": size, "last_entry_id": last_entry_id, "latest": latest},
    )
    params: dict[str, Any] = {"last_entry_id": last_entry_id, "count": count}
    if latest:
        params["latest"] = 1
    params.update(query or {})
    check = _Checker(res, size, check_seq)
    try:
        async with _connect(_endpoint(url, sid, "pull", params)) as ws:
            t0 = time.perf_counter()
            while res.entries < entries:
                header, data = await _recv_batch(ws, idle_timeout)
                check.batch(header, data)
            res.seconds = time.perf_counter() - t0
    except (OSError, websockets.WebSocketException, asyncio.TimeoutError, ValueError) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    check.finish(entries)
    return res


class _RawSocket:
    """The lightest websocket client for a pull: a blocking socket, the handshake by
    hand, frames received with recv_into into one reused buffer (no per-message
    object, no copy after the kernel's). Server frames are unmasked; a ping is
    answered; fragmented messages are joined."""

    def __init__(self, uri: str, timeout: float) -> None:
        parts = urlsplit(uri)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        head, _, self.pending = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)

    def _exactly(self, n: int, into: memoryview) -> None:
        got = 0
        if self.pending:
            got = min(n, len(self.pending))
            into[:got] = self.pending[:got]
            self.pending = self.pending[got:]
        while got < n:
            k = self.sock.recv_into(into[got:n])
            if k == 0:
                raise ConnectionError("closed mid-frame")
            got += k

    def message(self) -> tuple[int, memoryview]:
        """(opcode, payload view valid until the next call) of the next data message."""
        size, opcode, hdr = 0, 0, memoryview(bytearray(8))
        while True:
            self._exactly(2, hdr)
            fin, op, n = hdr[0] & 0x80, hdr[0] & 0x0F, hdr[1] & 0x7F
            if hdr[1] & 0x80:
                raise ValueError("a masked frame from the server")
            if n >= 126:
                k = 2 if n == 126 else 8
                self._exactly(k, hdr)
                n = int.from_bytes(hdr[:k], "big")
            if op >= 8:  # control frames, between fragments too
                payload = bytearray(n)
                self._exactly(n, memoryview(payload))
                if op == 8:
                    raise ConnectionError(f"closed by the server: {bytes(payload[2:])!r}")
                if op == 9:
                    self._send(10, bytes(payload))
                continue
            if size + n > len(self.buf):
                bigger = bytearray(max(size + n, 2 * len(self.buf)))
                bigger[:size] = self.view[:size]
                self.buf, self.view = bigger, memoryview(bigger)
            self._exactly(n, self.view[size : size + n])
            size += n
            opcode = opcode or op
            if fin:
                return opcode, self.view[:size]

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(8, struct.pack(">H", 1000))
        self.sock.close()


def raw_pull(
    url: str,
    sid: str,
    entries: int,
    count: int = 1,
    *,
    size: int | None = None,
    last_entry_id: str = "0",
    check_seq: bool = True,
    idle_timeout: float = 10.0,
) -> Result:
    """`pull` with the lightest client (`_RawSocket`, blocking, no asyncio): the same
    checks of ids, sizes and sequence numbers, the payloads never copied. Its own
    ceiling is what it reads from benchmarks/bare_ws_server.py --impl websockets."""
    res = Result("pull", url, sid, params={"count": count, "size": size, "client": "raw"})
    params = {"last_entry_id": last_entry_id, "count": count}
    check = _Checker(res, size, check_seq)
    try:
        ws = _RawSocket(_endpoint(url, sid, "pull", params), idle_timeout)
        try:
            t0 = time.perf_counter()
            while res.entries < entries:
                op, header = ws.message()
                if op != 1:
                    raise ValueError("expected a text header")
                items = json.loads(bytes(header))
                op, data = ws.message()
                if op != 2:
                    raise ValueError("expected a binary message after the header")
                check.batch(items, data)
            res.seconds = time.perf_counter() - t0
        finally:
            ws.close()
    except (OSError, ValueError) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    check.finish(entries)
    return res


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


async def latency(
    url: str,
    sid: str,
    size: int = 300_000,
    fps: float = 30.0,
    duration: float = 5.0,
    *,
    latest: bool = False,
    settle: float = 0.2,
    timeout: float = 10.0,
) -> Result:
    """One pusher at `fps` and one puller; percentiles of receive-minus-send in ms.

    The puller reads the (fresh) stream from 0, so no frame is missed while it starts.
    """
    if size < STAMP_BYTES:
        raise ValueError(f"latency frames need at least {STAMP_BYTES} bytes")
    frames = max(1, round(fps * duration))
    res = Result(
        "latency",
        url,
        sid,
        params={"size": size, "fps": fps, "duration": duration, "frames": frames},
    )
    query: dict[str, Any] = {"last_entry_id": "0", "count": 1}
    if latest:
        query["latest"] = 1
    check = _Checker(res, size, check_seq=True)
    samples: list[float] = []
    frame = bytearray(os.urandom(size))
    header = json.dumps([size])
    try:
        async with (
            _connect(_endpoint(url, sid, "pull", query)) as puller,
            _connect(_endpoint(url, sid, "push", {})) as pusher,
        ):

            async def pull_loop() -> None:
                while res.entries < frames:
                    head, data = await _recv_batch(puller, timeout)
                    now = time.monotonic_ns()
                    for _sid, _id, start in head:
                        _seq, sent = _SEQ_TIME.unpack_from(data, start)
                        samples.append((now - sent) / 1e6)
                    check.batch(head, data)
                    if latest and head and _SEQ.unpack_from(data, head[-1][2])[0] == frames - 1:
                        break

            reader = asyncio.create_task(pull_loop())
            await asyncio.sleep(settle)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(frames):
                delay = t0 + i / fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                _SEQ_TIME.pack_into(frame, 0, i, time.monotonic_ns())
                await pusher.send(header)
                await pusher.send(frame)
            await asyncio.wait_for(reader, timeout)
            res.seconds = loop.time() - t0
    except (OSError, websockets.WebSocketException, asyncio.TimeoutError, ValueError) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")
    if latest:
        res.lost = 0  # frame dropping is the point of latest=1
        res.params["received"] = res.entries
    else:
        check.finish(frames)
    samples.sort()
    if samples:
        res.latency_ms = {
            "p50": percentile(samples, 50),
            "p90": percentile(samples, 90),
            "p99": percentile(samples, 99),
            "max": samples[-1],
            "mean": sum(samples) / len(samples),
        }
    return res


# -- command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loadtool", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--url", default="ws://127.0.0.1:8000", help="server base URL (ws://...)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = p.add_subparsers(dest="mode", required=True)

    ps = sub.add_parser("push", help="push messages in the README form")
    ps.add_argument("--sid", required=True)
    ps.add_argument("--messages", type=int, default=20_000)
    ps.add_argument("--size", type=int, default=100, help="bytes per entry")
    ps.add_argument("--batch", type=int, default=1, help="entries per message")
    ps.add_argument("--confirm", choices=("close", "ack", "redis"), default="close")
    ps.add_argument("--redis-url", help="for --confirm redis")
    ps.add_argument("--seq-start", type=int, default=0)

    pl = sub.add_parser("pull", help="pull and verify entries")
    pl.add_argument("--sid", required=True)
    pl.add_argument("--entries", type=int, default=20_000)
    pl.add_argument("--count", type=int, default=1)
    pl.add_argument("--size", type=int, help="expected bytes per entry (checked)")
    pl.add_argument("--last-entry-id", default="0")
    pl.add_argument("--latest", action="store_true")
    pl.add_argument(
        "--client",
        choices=("websockets", "raw"),
        default="websockets",
        help="raw: the lightest client (blocking socket, no copies; no --latest/--query)",
    )
    pl.add_argument("--no-check-seq", action="store_true", help="payloads carry no seq")
    pl.add_argument("--idle-timeout", type=float, default=10.0)
    pl.add_argument(
        "--query", action="append", default=[], metavar="K=V", help="more query parameters"
    )

    la = sub.add_parser("latency", help="one pusher at --fps, one puller")
    la.add_argument("--sid", required=True)
    la.add_argument("--size", type=int, default=300_000)
    la.add_argument("--fps", type=float, default=30.0)
    la.add_argument("--duration", type=float, default=5.0)
    la.add_argument("--latest", action="store_true")
    return p


async def _main(args: argparse.Namespace) -> Result:
    if args.mode == "push":
        return await push(
            args.url,
            args.sid,
            args.messages,
            args.size,
            args.batch,
            confirm=args.confirm,
            redis_url=args.redis_url,
            seq_start=args.seq_start,
        )
    if args.mode == "pull" and args.client == "raw":
        return raw_pull(
            args.url,
            args.sid,
            args.entries,
            args.count,
            size=args.size,
            last_entry_id=args.last_entry_id,
            check_seq=not args.no_check_seq,
            idle_timeout=args.idle_timeout,
        )
    if args.mode == "pull":
        return await pull(
            args.url,
            args.sid,
            args.entries,
            args.count,
            size=args.size,
            last_entry_id=args.last_entry_id,
            latest=args.latest,
            check_seq=not args.no_check_seq,
            idle_timeout=args.idle_timeout,
            query=dict(kv.split("=", 1) for kv in args.query),
        )
    return await latency(args.url, args.sid, args.size, args.fps, args.duration, latest=args.latest)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        res = asyncio.run(_main(args))
        print(json.dumps(res.to_dict(), indent=2) if args.json else res.text())
        return 0 if res.ok else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
