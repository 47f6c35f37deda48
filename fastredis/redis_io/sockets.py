"""Sending prebuilt RESP buffers over a redis-py asyncio connection."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["JOIN_BELOW", "send_buffers"]

# Below this many bytes a batch of buffers is joined and sent in one write; above,
# each large buffer is written as it is (Python 3.11's writelines joins, a copy of
# every payload: ~0.5 ms per MB on a busy 2-core machine).
JOIN_BELOW = 256 * 1024


async def send_buffers(conn: Any, bufs: list[Any]) -> None:
    """Send RESP buffers over a redis-py asyncio connection: small ones joined in one
    write, large payloads written as they are (never copied).

    Not redis-py's send_packed_command: with a socket_timeout it wraps the write in
    asyncio.wait_for, which costs a task per command and, before Python 3.12, can
    swallow a cancellation that arrives as the write completes (a pull that goes on
    after its client left). Relies on redis-py's `Connection._writer` (its asyncio
    StreamWriter; there is no public write path).
    """
    if not conn.is_connected:
        await conn.connect()
    writer = conn._writer
    try:
        small: list[Any] = []
        for buf in bufs:
            if len(buf) < JOIN_BELOW:
                small.append(buf)
                continue
            if small:
                writer.write(b"".join(small))
                small = []
            writer.write(buf)
        if small:
            writer.write(small[0] if len(small) == 1 else b"".join(small))
        await writer.drain()
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"error while writing to Redis: {exc}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
