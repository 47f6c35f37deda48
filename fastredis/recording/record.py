"""Recording streams into an MCAP file: one batch read of every stream per round.

Without ``follow`` a recording ends at the entries there when it started (or at
``to``); with it, it goes on until stopped (Ctrl-C, SIGTERM), and the file is always
finished with its summary and indexes. When Redis goes away, the recorder retries until
it answers again, then resumes after the last id it wrote; entries it can no longer
read (trimmed meanwhile, or the stream made anew) are noted in a ``gap`` metadata record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from mcap.writer import CompressionType, Writer

from fastredis.ids import parse_id, previous_id
from fastredis.recording.files import RecordingError, stamp_of
from fastredis.redis_io import xread_batch
from fastredis.server.reads.resume import lost_reason, state_commands, states_of
from fastredis.server.reads.stream_info import pairs, text

__all__ = ["COMPRESSION", "Recorder", "infos_of", "record"]

COMPRESSION = {
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
    "none": CompressionType.NONE,
}
READ_COUNT = 64  # entries per stream per read
READ_BLOCK_MS = 1000  # a following read's wait; then it simply reads again
RETRY_S = (0.1, 0.2, 0.5, 1.0, 2.0)  # waits between tries while Redis is away
CHUNK_BYTES = 4 << 20
_LOST = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class Recorder:
    """Writes entries of `sids` into an open MCAP `writer` (see `record`)."""

    def __init__(
        self,
        client: redis.Redis,
        sids: Sequence[str],
        writer: Writer,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.client, self.sids, self.writer, self.log = client, list(sids), writer, log
        self.cursors: dict[str, str] = {}
        self.ends: dict[str, tuple[int, int] | None] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = dict.fromkeys(self.sids, 0)
        self.gaps = 0

    def open(self, infos: dict[str, Any], start: str | None, to: str | None, follow: bool) -> None:
        """Register the channels, set where to start and end (`infos`: `infos_of`'s)."""
        metas = self.client.mget([f"XMETA:{sid}" for sid in self.sids])
        for sid, meta in zip(self.sids, metas, strict=True):
            self.channels[sid] = self._channel(sid, meta)
            self.cursors[sid] = previous_id(*parse_id(start)) if start else "0-0"
            end = parse_id(to) if to else None
            if not follow:
                newest = parse_id(str(text(infos[sid]["last-generated-id"])))
                end = newest if end is None else min(end, newest)
            self.ends[sid] = end

    def _channel(self, sid: str, meta: Any) -> int:
        """One channel per stream: its encoding and schema from the stream's metadata
        (``encoding``, ``schemaName``, ``schema``, ``schemaEncoding``), if any."""
        fields: dict[str, Any] = {}
        if meta is not None:
            try:
                loaded = json.loads(meta)
                fields = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                pass
        schema_id = 0
        if isinstance(fields.get("schemaName"), str) and fields["schemaName"]:
            schema_id = self.writer.register_schema(
                fields["schemaName"],
                str(fields.get("schemaEncoding") or fields.get("encoding") or ""),
                str(fields.get("schema") or "").encode(),
            )
        extra = {"fastredis.meta": meta.decode()} if isinstance(meta, bytes) else {}
        encoding = fields.get("encoding")
        return self.writer.register_channel(
            sid, encoding if isinstance(encoding, str) else "", schema_id, extra
        )

    @property
    def done(self) -> bool:
        return not self.cursors

    def round(self, block: int | None) -> int:
        """One batch read of every stream still recorded; the entries written."""
        cursors: dict[str | bytes, str | bytes | int] = {k: v for k, v in self.cursors.items()}
        batch = xread_batch(self.client, cursors, READ_COUNT, block, encoding=None)
        n = len(batch)
        if n:
            names = batch.streams
            streams = batch.offsets()["entry_stream"]
            payloads = batch.field(b"d")
            for i in range(n):
                raw = names[int(streams[i])]
                sid = raw.decode() if isinstance(raw, bytes) else str(raw)
                self._write(sid, batch.id_at(i), payloads[i])
        self._finish_ended(caught_up=block is None and n == 0)
        return n

    def _write(self, sid: str, eid: tuple[int, int], payload: Any) -> None:
        end = self.ends[sid]
        if sid not in self.cursors:
            return
        if end is not None and eid > end:
            del self.cursors[sid]  # past --to: this stream is done
            return
        stamp = stamp_of(*eid)
        data = b"" if payload is None else payload
        self.writer.add_message(self.channels[sid], stamp, data, stamp, eid[1] & 0xFFFFFFFF)
        self.cursors[sid] = f"{eid[0]}-{eid[1]}"
        self.counts[sid] += 1

    def _finish_ended(self, caught_up: bool) -> None:
        for sid in list(self.cursors):
            end = self.ends[sid]
            if (end is not None and parse_id(self.cursors[sid]) >= end) or caught_up:
                del self.cursors[sid]

    def resume(self) -> None:
        """After Redis came back: note what can no longer be read, and go on."""
        sids = list(self.cursors)
        pipe = self.client.pipeline(transaction=False)
        for command in state_commands(sids, self.cursors):
            pipe.execute_command(*command)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, _LOST):
                raise reply
        states = states_of(sids, replies)
        for sid in sids:
            reason = lost_reason(self.cursors[sid], states[sid])
            if reason is None:
                continue
            self.writer.add_metadata(
                "gap",
                {
                    "stream": sid,
                    "after": self.cursors[sid],
                    "reason": reason,
                    "first_id": states[sid].first_id or "",
                    "noticed_at_ms": str(int(time.time() * 1000)),
                },
            )
            self.gaps += 1
            self.log(f"record: gap in {sid!r} after {self.cursors[sid]}: {reason}")
            if "made anew" in reason:
                self.cursors[sid] = "0-0"  # the new stream's ids start below the cursor


def infos_of(
    client: redis.Redis, sids: Sequence[str], strict: bool = False
) -> dict[str, dict[str, Any] | None]:
    """XINFO STREAM of every stream in one round trip (None: no such stream; with
    `strict`, RecordingError instead). A lost connection raises."""
    pipe = client.pipeline(transaction=False)
    for sid in sids:
        pipe.execute_command("XINFO", "STREAM", sid)
    replies = pipe.execute(raise_on_error=False)
    infos: dict[str, dict[str, Any] | None] = {}
    for sid, reply in zip(sids, replies, strict=True):
        if isinstance(reply, _LOST):
            raise reply
        if not isinstance(reply, Exception):
            infos[sid] = pairs(reply)
        elif not strict:
            infos[sid] = None
        elif "no such key" in str(reply):
            raise RecordingError(f"stream {sid!r} does not exist")
        else:
            raise RecordingError(f"stream {sid!r} cannot be recorded: {reply}")
    return infos


def _wait_for_redis(recorder: Recorder) -> None:
    """Try until Redis answers again (or the user stops), then resume."""
    recorder.log("record: Redis connection lost; retrying until it is back")
    tries = 0
    while True:
        time.sleep(RETRY_S[min(tries, len(RETRY_S) - 1)])
        tries += 1
        try:
            recorder.resume()
        except _LOST:
            continue
        recorder.log("record: Redis is back; resuming after the last ids written")
        return


def record(
    client: redis.Redis,
    sids: Sequence[str],
    output: str,
    start: str | None = None,
    to: str | None = None,
    follow: bool = False,
    compression: str = "zstd",
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, int]:
    """Record `sids` into the MCAP file `output`; the entries written per stream.
    RecordingError (nothing written) for a stream that does not exist. With `follow`,
    a KeyboardInterrupt (Ctrl-C, SIGTERM under the CLI) is its normal end."""
    if not sids:
        raise RecordingError("name at least one stream to record")
    infos = infos_of(client, sids, strict=True)  # before the file is made
    with open(output, "wb") as f:
        writer = Writer(f, chunk_size=CHUNK_BYTES, compression=COMPRESSION[compression])
        writer.start(profile="", library="fastredis")
        recorder = Recorder(client, sids, writer, log)
        try:
            recorder.open(infos, start, to, follow)
            while not recorder.done:
                try:
                    recorder.round(READ_BLOCK_MS if follow else None)
                except _LOST:
                    _wait_for_redis(recorder)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM (fastredis.cli.Stop)
            if not follow:
                raise
            # the end of a --follow recording: the file is finished, as at --to
        finally:
            writer.finish()
    return recorder.counts
