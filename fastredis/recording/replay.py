"""Replaying an MCAP recording into streams, with the entries' relative timing.

Each channel goes to the stream ``PREFIX + topic``. Entries keep the ids they were
recorded with when the target stream's ids are all below the file's; otherwise the
stream gets new ids (Redis's ``*``) and the replay says so. Entries due at the same
moment are written in one round trip (the payloads referenced by the core's writer, not
copied). A file that is not whole (a recording cut short) is refused with the byte
offset where it breaks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from mcap.reader import make_reader

from fastredis._frames import pack_commands
from fastredis.ids import parse_id
from fastredis.recording.files import RecordingError, entry_id_of, find_break
from fastredis.redis_io import is_cluster
from fastredis.server.reads.stream_info import pairs, text

__all__ = ["BATCH_BYTES", "replay"]

BATCH_BYTES = 8 << 20  # a pipelined round trip holds about this much payload
BATCH_ENTRIES = 256


def _first_ids(reader: Any) -> dict[str, tuple[int, int]]:
    """The first entry id of every channel of the file (topic -> id)."""
    summary = reader.get_summary()
    topics = {c.topic for c in summary.channels.values()} if summary else set()
    first: dict[str, tuple[int, int]] = {}
    for topic in topics:
        for _schema, _channel, message in reader.iter_messages(topics=[topic]):
            first[topic] = parse_id(entry_id_of(message.log_time, message.sequence))
            break
    return first


def _keep_ids(
    client: redis.Redis, first: dict[str, tuple[int, int]], into: str, log: Callable[[str], None]
) -> dict[str, bool]:
    """Per topic: whether its entries can keep their ids in the target stream."""
    pipe = client.pipeline(transaction=False)
    for topic in first:
        pipe.execute_command("XINFO", "STREAM", into + topic)
    keep: dict[str, bool] = {}
    for (topic, file_first), reply in zip(
        first.items(), pipe.execute(raise_on_error=False), strict=True
    ):
        if isinstance(reply, Exception):
            if "no such key" not in str(reply):
                raise RecordingError(f"cannot replay into {into + topic!r}: {reply}")
            keep[topic] = True
            continue
        newest = parse_id(str(text(pairs(reply).get("last-generated-id"))))
        keep[topic] = newest < file_first
        if not keep[topic]:
            log(
                f"replay: {into + topic!r} already has ids up to {newest[0]}-{newest[1]}, "
                f"not below the file's first ({file_first[0]}-{file_first[1]}): "
                "its entries get new ids"
            )
    return keep


def replay(
    client: redis.Redis,
    path: str,
    speed: float = 1.0,
    into: str = "",
    log: Callable[[str], None] = lambda _: None,
    maxlen: int | None = None,
) -> dict[str, int]:
    """Write the entries of the MCAP file `path` into their streams; the entries
    written per target stream. `speed`: 1 real time, 2 twice as fast, 0 at once;
    `maxlen`: trim each stream to about that many entries as it goes (MAXLEN ~)."""
    broken = find_break(path)
    if broken is not None:
        raise RecordingError(
            f"{path} is not a whole MCAP file: it breaks at byte {broken} "
            "(a recording cut short?); nothing was replayed"
        )
    counts: dict[str, int] = {}
    trim = ["MAXLEN", "~", maxlen] if maxlen else []
    with open(path, "rb") as f:
        reader = make_reader(f)
        keep = _keep_ids(client, _first_ids(reader), into, log)
        start_wall = time.monotonic()
        first_time: int | None = None
        commands: list[list[Any]] = []
        queued_bytes = 0
        for _schema, channel, message in reader.iter_messages(log_time_order=True):
            if first_time is None:
                first_time = message.log_time
            due = start_wall + (message.log_time - first_time) / 1e9 / speed if speed else 0.0
            full = len(commands) >= BATCH_ENTRIES or queued_bytes >= BATCH_BYTES
            if commands and (full or due > time.monotonic()):
                _send(client, commands)
                commands, queued_bytes = [], 0
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sid = into + channel.topic
            eid = entry_id_of(message.log_time, message.sequence) if keep[channel.topic] else "*"
            commands.append(["XADD", sid, *trim, eid, "d", message.data])
            queued_bytes += len(message.data)
            counts[sid] = counts.get(sid, 0) + 1
        if commands:
            _send(client, commands)
    return counts


def _send(client: redis.Redis, commands: list[list[Any]]) -> None:
    """Run `commands` in one round trip, payloads referenced, not copied (the core's
    writer); on a Redis Cluster, as a redis-py pipeline (it routes each key)."""
    if is_cluster(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        pipe.execute()
        return
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(pack_commands(commands), check_health=False)
        for _ in commands:
            conn.read_response()  # an error reply raises (the connection is dropped)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
