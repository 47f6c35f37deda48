"""`fastredis record` and `fastredis replay` against a real server: the file opens with the
mcap reader with one channel per stream and as many messages as the streams hold,
compressed chunks and a summary with indexes; --from/--to; a Redis restart in the
middle of a --follow recording; replays with timing, with kept or new ids; and bad
input (a missing stream, a truncated file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from mcap.reader import make_reader
from support.redis_clients import blocked_xreads
from support.waiting import wait_until

from fastredis.embedded import EmbeddedRedis
from fastredis.recording.files import entry_id_of
from fastredis.recording.record import record
from fastredis.recording.replay import replay
from fastredis.redis_io import make_client

ROOT = Path(__file__).resolve().parents[2]


def fastredis(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "fastredis", *args],
        capture_output=True, text=True, timeout=120, env=env, **kw,  # type: ignore[call-overload]
    )  # fmt: skip


def messages(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    """(entry id, payload) per topic, in the file's order."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    with open(path, "rb") as f:
        for _schema, channel, message in make_reader(f).iter_messages(log_time_order=False):
            entry = entry_id_of(message.log_time, message.sequence)
            out.setdefault(channel.topic, []).append((entry, message.data))
    return out


def entries(client: redis.Redis, sid: str) -> list[tuple[str, bytes]]:
    return [(eid.decode(), fields[b"d"]) for eid, fields in client.xrange(sid)]


def test_the_file_holds_every_entry_with_its_id_and_time(
    tmp_path: Path, redis_url: str, plain_redis: redis.Redis
) -> None:
    for i in range(300):
        plain_redis.xadd("cam", {"d": os.urandom(2000)})
        if i % 3 == 0:
            plain_redis.xadd("log", {"d": json.dumps({"i": i})})
    plain_redis.xadd("raw", {"d": b"\x00\xff"}, id="5-7")
    plain_redis.set("XMETA:log", json.dumps({"encoding": "json"}))
    out = tmp_path / "run.mcap"
    result = fastredis("record", "cam", "log", "raw", "-o", str(out), "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "401 entries" in result.stderr
    got = messages(out)
    for sid in ("cam", "log", "raw"):
        assert got[sid] == entries(plain_redis, sid)  # every entry, its id, its bytes
    with open(out, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None
        assert summary.statistics.message_count == 401
        assert {c.topic: c.message_encoding for c in summary.channels.values()} == {
            "cam": "", "log": "json", "raw": "",
        }  # fmt: skip
        assert summary.chunk_indexes and all(c.compression == "zstd" for c in summary.chunk_indexes)
        assert all(c.message_index_offsets for c in summary.chunk_indexes)  # indexed
        times = [m.log_time for _s, c, m in reader.iter_messages(topics=["raw"])]
    assert times == [5 * 1_000_000 + 7]  # the entry id's time, in ns


def test_from_and_to_bound_the_recording(tmp_path: Path, redis_url: str) -> None:
    client = make_client(url=redis_url)
    for i in range(1, 11):
        client.xadd("s", {"d": str(i)}, id=f"{i}-0")
    out = tmp_path / "part.mcap"
    counts = record(client, ["s"], str(out), start="3-0", to="6-0")
    assert counts == {"s": 4}
    assert [e for e, _ in messages(out)["s"]] == ["3-0", "4-0", "5-0", "6-0"]


def test_a_missing_stream_is_a_one_line_error(
    tmp_path: Path, redis_url: str, plain_redis: redis.Redis
) -> None:
    plain_redis.xadd("here", {"d": b"1"})
    out = tmp_path / "none.mcap"
    result = fastredis("record", "here", "nowhere", "-o", str(out), "--redis-url", redis_url)
    assert result.returncode == 1
    assert result.stderr == "fastredis record: stream 'nowhere' does not exist\n"
    assert not out.exists()


def test_recording_goes_on_across_a_redis_restart(
    tmp_path: Path, private_redis: EmbeddedRedis
) -> None:
    client = redis.Redis.from_url(private_redis.url)
    before = [client.xadd("cam", {"d": f"b{i}"}).decode() for i in range(5)]
    out = tmp_path / "follow.mcap"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastredis", "record", "cam", "-o", str(out), "--follow",
         "--redis-url", private_redis.url],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip

    def waiting() -> bool:
        """The recorder waits in a blocking XREAD: it has read all there is."""
        try:
            return blocked_xreads(client, "") > 0
        except redis.ConnectionError:
            return False

    try:
        wait_until(waiting, 30, what="the recorder to read and wait for more")
        private_redis.restart()  # no persistence: the stream is gone
        client = redis.Redis.from_url(private_redis.url)
        wait_until(waiting, 30, what="the recorder to be back")
        after = [client.xadd("cam", {"d": f"a{i}"}).decode() for i in range(5)]
        wait_until(waiting, 30, what="the recorder to read the new entries")
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr  # Ctrl-C is how a --follow recording ends
    assert "Redis connection lost" in stderr and "gap in 'cam'" in stderr
    assert "record: 10 entries into" in stderr
    assert [e for e, _ in messages(out)["cam"]] == before + after
    with open(out, "rb") as f:
        gaps = [m.metadata for m in make_reader(f).iter_metadata() if m.name == "gap"]
    assert len(gaps) == 1
    assert gaps[0]["stream"] == "cam" and gaps[0]["after"] == before[-1]
    assert gaps[0]["reason"] == "the stream no longer exists"


def test_replay_keeps_ids_and_timing_or_says_it_cannot(
    tmp_path: Path, redis_url: str, plain_redis: redis.Redis
) -> None:
    base = int(time.time() * 1000) - 10_000
    for i in range(5):
        plain_redis.xadd("cam", {"d": f"f{i}"}, id=f"{base + 100 * i}-0")
    out = tmp_path / "run.mcap"
    client = make_client(url=redis_url)
    record(client, ["cam"], str(out))
    started = time.monotonic()
    assert replay(client, str(out), speed=2.0, into="copy:") == {"copy:cam": 5}
    took = time.monotonic() - started
    assert entries(plain_redis, "copy:cam") == entries(plain_redis, "cam")  # same ids
    assert took >= 0.4 / 2  # 400 ms of recording at twice the speed: spread, not at once
    said: list[str] = []
    assert replay(client, str(out), speed=0, log=said.append) == {"cam": 5}
    assert len(said) == 1 and "'cam' already has ids up to" in said[0] and "new ids" in said[0]
    replayed = entries(plain_redis, "cam")[5:]
    assert [d for _, d in replayed] == [f"f{i}".encode() for i in range(5)]
    assert all(e > f"{base + 400}-0" for e, _ in replayed)


def test_a_truncated_file_is_refused_with_where_it_breaks(
    tmp_path: Path, redis_url: str, plain_redis: redis.Redis
) -> None:
    for _ in range(50):
        plain_redis.xadd("cam", {"d": os.urandom(50_000)})
    whole = tmp_path / "whole.mcap"
    record(make_client(url=redis_url), ["cam"], str(whole))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    result = fastredis("replay", str(cut), "--into", "x:", "--redis-url", redis_url)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "is not a whole MCAP file: it breaks at byte" in result.stderr
    offset = int(result.stderr.split("at byte ")[1].split()[0])
    assert 0 < offset <= len(data) // 2
    assert plain_redis.exists("x:cam") == 0  # nothing replayed


@pytest.mark.parametrize("args", [["--speed", "-1"], ["--speed", "fast"]])
def test_replay_options_are_checked(args: list[str], tmp_path: Path) -> None:
    result = fastredis("replay", str(tmp_path / "x.mcap"), *args)
    assert result.returncode == 2 and "--speed is a number >= 0" in result.stderr
