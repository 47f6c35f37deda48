"""Command building for batch reads, and the blocking-read timeout rule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "StreamIds",
    "blocking_read_timeout",
    "xautoclaim_args",
    "xclaim_args",
    "xrange_args",
    "xread_args",
    "xread_command",
    "xreadgroup_args",
]

# Extra seconds to wait past BLOCK before calling a blocking read dead.
_BLOCK_MARGIN = 5.0
_Id = str | bytes | int
# stream name -> id; read only, so str-keyed and bytes-keyed mappings are taken as they are
# (a Mapping's key type is invariant: dict[str, str] is no Mapping[str | bytes, ...])
StreamIds = Mapping[str, _Id] | Mapping[bytes, _Id] | Mapping[str | bytes, _Id]


def _stream_args(streams: StreamIds) -> list[Any]:
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError("streams must be a non-empty mapping of stream name -> id")
    return ["STREAMS", *streams.keys(), *streams.values()]


def _count_args(count: int | None) -> list[Any]:
    if count is None:
        return []
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive int, not {count!r}")
    return ["COUNT", count]


def _block_args(block: int | None) -> list[Any]:
    if block is None:
        return []
    if not isinstance(block, int) or isinstance(block, bool) or block < 0:
        raise ValueError(f"block must be a non-negative int of milliseconds, not {block!r}")
    return ["BLOCK", block]


def xread_args(streams: StreamIds, count: int | None, block: int | None) -> list[Any]:
    return ["XREAD", *_count_args(count), *_block_args(block), *_stream_args(streams)]


def xreadgroup_args(
    group: str, consumer: str, streams: StreamIds, count: int | None, block: int | None, noack: bool
) -> list[Any]:
    return [
        "XREADGROUP", "GROUP", group, consumer,
        *_count_args(count), *_block_args(block), *(["NOACK"] if noack else []),
        *_stream_args(streams),
    ]  # fmt: skip


def xrange_args(cmd: str, name: str, first: Any, second: Any, count: int | None) -> list[Any]:
    return [cmd, name, first, second, *_count_args(count)]


def xclaim_args(
    name: str, group: str, consumer: str, idle_ms: int, ids: Iterable[Any]
) -> list[Any]:
    ids = list(ids)
    if not ids:
        raise ValueError("xclaim needs at least one id")
    return ["XCLAIM", name, group, consumer, idle_ms, *ids]


def xautoclaim_args(
    name: str, group: str, consumer: str, idle_ms: int, start_id: Any, count: int | None
) -> list[Any]:
    return ["XAUTOCLAIM", name, group, consumer, idle_ms, start_id, *_count_args(count)]


def blocking_read_timeout(
    socket_timeout: float | None, block_ms: float | None, forever: float | None = None
) -> float | None:
    """How long to wait for the reply of a command with BLOCK `block_ms` (None: not a
    blocking command): it must outlive the client's socket_timeout. `forever` is what
    this caller's redis-py API takes for no limit (sync: None, asyncio: math.inf)."""
    if block_ms is None:
        return socket_timeout
    if block_ms == 0:
        return forever
    wait = block_ms / 1000 + _BLOCK_MARGIN
    return wait if socket_timeout is None else max(socket_timeout, wait)


def xread_command(streams: Mapping[Any, Any], count: int | None, block: int | None) -> list[Any]:
    """XREAD as bytes-ready arguments for `fastredis._frames.pack_commands` (no checks:
    for callers that built `streams` themselves)."""
    args: list[Any] = [b"XREAD"]
    if count is not None:
        args += [b"COUNT", count]
    if block is not None:
        args += [b"BLOCK", block]
    args.append(b"STREAMS")
    args.extend(streams.keys())
    args.extend(streams.values())
    return args
