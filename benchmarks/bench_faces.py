"""The faces that share the hub's read: record / replay to MCAP, SSE and Foxglove viewers.

    python benchmarks/bench_faces.py           # full: 60 s of recording, 10 s windows
    python benchmarks/bench_faces.py --short   # a noisy machine: 10 s, 5 s windows
    pytest benchmarks/bench_faces.py -s        # the same (FASTREDIS_BENCH_FACES_SHORT=1)

1. **record**: a pusher adds a 300 KB JPEG to each of 4 streams 30 times a second (one
   pipelined round trip per tick, MAXLEN ~ 900) for RECORD_S seconds while
   `fastredis record cam0 cam1 cam2 cam3 -o run.mcap --follow` runs in its own process.
   Reported: entries pushed, entries in the file (read back with the mcap reader),
   missing ones, and the recorder's CPU (its rusage, user + system) per second of
   recording, in cores. The alternative: what the pusher itself spent (the same bytes
   through redis-py).
2. **replay**: `fastredis replay run.mcap --speed 0 --into re: --maxlen 900` into an
   empty Valkey (trimmed as the recording's streams were): its wall time, process start
   included, against the recording's length (x real time).
3. **viewers**: `fastredis serve` on its own Valkey, one stream of 300 KB JPEGs at 30
   fps, and at once N websocket pulls (the fan-out, the reference), N SSE viewers
   (``data=base64``) and N Foxglove viewers (subscribed, ``latest`` as the app gets it),
   each kind in a process of its own (benchmarks/faces_viewers.py). After WARMUP_S, a
   window of WINDOW_S: frames each viewer received, each kind against the websocket
   pulls of the same run, and XREAD calls per frame pushed (INFO commandstats).

Nothing is asserted but that every part ran; the figures go to
benchmarks/results/DATE-faces.md and .json (`benchmarks/record.py`). The machine is
shared: rerun for spreads.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from mcap.reader import make_reader
from record import write_run

from fastredis.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
SHORT = "--short" in sys.argv or os.environ.get("FASTREDIS_BENCH_FACES_SHORT") == "1"
RECORD_S = 10.0 if SHORT else 60.0
WARMUP_S = 3.0
WINDOW_S = 5.0 if SHORT else 10.0
VIEWERS = 10
STREAMS = 4
FPS = 30
FRAME_BYTES = 300_000


def jpeg_frames(n: int) -> list[bytes]:
    """`n` different noise JPEGs of about FRAME_BYTES (noise does not compress)."""
    from PIL import Image

    frames = []
    for i in range(n):
        rng = random.Random(i)
        image = Image.frombytes("RGB", (580, 435), rng.randbytes(580 * 435 * 3))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=95)
        frames.append(buf.getvalue())
    return frames


class Pusher(threading.Thread):
    """Adds one frame to each stream FPS times a second until stopped."""

    def __init__(self, url: str, sids: list[str], frames: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.sids, self.frames = sids, frames
        self.stop = threading.Event()
        self.pushed = 0
        self.cpu = 0.0

    def run(self) -> None:
        start, tick = time.monotonic(), 0
        cpu0 = time.thread_time()
        while not self.stop.is_set():
            pipe = self.client.pipeline(transaction=False)
            for i, sid in enumerate(self.sids):  # no frame twice within a chunk of the file
                frame = self.frames[(tick * len(self.sids) + i) % len(self.frames)]
                pipe.xadd(sid, {"d": frame}, maxlen=900)
            pipe.execute()
            self.pushed += len(self.sids)
            tick += 1
            time.sleep(max(0.0, start + tick / FPS - time.monotonic()))
        self.cpu = time.thread_time() - cpu0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")])}


def bench_record(tmp: Path, frames: list[bytes]) -> dict[str, Any]:
    sids = [f"cam{i}" for i in range(STREAMS)]
    out = tmp / "run.mcap"
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for sid in sids:
            client.xadd(sid, {"d": b"start"})  # the streams exist before recording
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "record", *sids, "-o", str(out), "--follow",
             "--redis-url", server.url],
            env=_env(), stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)
        pusher = Pusher(server.url, sids, frames)
        started = time.monotonic()
        pusher.start()
        time.sleep(RECORD_S)
        pusher.stop.set()
        pusher.join()
        wall = time.monotonic() - started
        time.sleep(1.0)  # the recorder reads what is left
        proc.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        pushed_ids = {sid: [e.decode() for e, _ in client.xrange(sid)] for sid in sids}
        entries_added = sum(int(client.xinfo_stream(sid)["entries-added"]) for sid in sids)
    recorded: dict[str, set[str]] = {sid: set() for sid in sids}
    with open(out, "rb") as f:
        for _s, channel, message in make_reader(f).iter_messages(log_time_order=False):
            recorded[channel.topic].add(f"{message.log_time // 1_000_000}-{message.sequence}")
    in_file = sum(len(v) for v in recorded.values())
    still_there_missing = sum(len(set(pushed_ids[s]) - recorded[s]) for s in sids)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "seconds": round(wall, 2),
        "entries_added": entries_added,
        "entries_in_file": in_file,
        "missing": entries_added - in_file,
        "missing_of_those_still_in_redis": still_there_missing,
        "file_mb": round(out.stat().st_size / 1e6, 1),
        "recorder_cpu_cores": round(cpu / (wall + 2.0), 3),
        "pusher_cpu_cores": round(pusher.cpu / wall, 3),
        "recorder_said": stderr.strip().splitlines()[-1:] if stderr else [],
    }


def bench_replay(tmp: Path, recorded_s: float) -> dict[str, Any]:
    out = tmp / "run.mcap"
    with EmbeddedRedis() as server:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "fastredis", "replay", str(out), "--speed", "0", "--into",
             "re:", "--maxlen", "900", "--redis-url", server.url],
            env=_env(), capture_output=True, text=True,
        )  # fmt: skip
        took = time.monotonic() - started
        client = redis.Redis.from_url(server.url)
        replayed = sum(
            int(client.xinfo_stream(k)["entries-added"]) for k in client.scan_iter("re:*")
        )
    return {
        "ok": result.returncode == 0,
        "seconds": round(took, 2),
        "entries": replayed,
        "x_real_time": round(recorded_s / took, 1),
        "mb_per_s": round(out.stat().st_size / 1e6 / took, 1),
    }


def bench_viewers(frames: list[bytes]) -> dict[str, Any]:
    with EmbeddedRedis() as server:
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "serve", "--port", str(port), "--redis-url",
             server.url, "--log-level", "warning"],
            env=_env(),
        )  # fmt: skip
        client = redis.Redis.from_url(server.url)
        try:
            from procs import _wait_http

            _wait_http(port, serve, 30)
            client.xadd("cam", {"d": frames[0]})  # advertised to Foxglove from the start
            pusher = Pusher(server.url, ["cam"], frames)
            pusher.start()
            viewers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "benchmarks" / "faces_viewers.py"),
                        kind,
                        str(VIEWERS),
                        "127.0.0.1",
                        str(port),
                        "cam",
                        str(WARMUP_S),
                        str(WINDOW_S),
                    ],
                    env=_env(),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for kind in ("ws", "sse", "foxglove")
            ]
            time.sleep(WARMUP_S)
            client.config_resetstat()
            pushed0 = pusher.pushed
            time.sleep(WINDOW_S)
            xreads = client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
            pushed = pusher.pushed - pushed0
            results = [json.loads(v.communicate(timeout=60)[0]) for v in viewers]
            pusher.stop.set()
            pusher.join()
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(30)
    by_kind = {r["kind"]: r for r in results}
    ws_frames = sum(by_kind["ws"]["frames"]) or 1
    out: dict[str, Any] = {
        "frames_pushed": pushed,
        "xread_per_frame": round(xreads / max(pushed, 1), 2),
    }
    for kind, r in by_kind.items():
        out[kind] = {
            "frames_median": statistics.median(r["frames"]),
            "frames_min": min(r["frames"]),
            "frames_total": sum(r["frames"]),
            "of_ws": round(sum(r["frames"]) / ws_frames, 3),
            "mb_per_s": round(r["bytes"] / 1e6 / r["seconds"], 1),
            "failed": r["failed"],
        }
    return out


def _markdown(result: dict[str, Any]) -> str:
    rec, rep, view = result["record"], result["replay"], result["viewers"]
    lines = [
        f"# bench_faces {result['date']} ({'short' if result['short'] else 'full'}; "
        "a shared 2-core machine)",
        "",
        "| record | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rec.items()),
        "",
        "| replay | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rep.items()),
        "",
        f"Viewers: {VIEWERS} of each kind at once; frames pushed in the window: "
        f"{view['frames_pushed']}; XREAD per frame: {view['xread_per_frame']}",
        "",
        "| kind | frames per viewer (median) | min | of the websocket pulls' | MB/s |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {view[k]['frames_median']} | {view[k]['frames_min']} | {view[k]['of_ws']} "
            f"| {view[k]['mb_per_s']} |"
            for k in ("ws", "sse", "foxglove")
        ),
    ]
    return "\n".join(lines) + "\n"


def run(tmp: Path) -> dict[str, Any]:
    frames = jpeg_frames(48)
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "short": SHORT,
        "frame_bytes": statistics.mean(len(f) for f in frames),
        "load_before": os.getloadavg(),
    }
    result["record"] = bench_record(tmp, frames)
    result["replay"] = bench_replay(tmp, result["record"]["seconds"])
    result["viewers"] = bench_viewers(frames)
    path = write_run("faces-short" if SHORT else "faces", _markdown(result), result)
    print(_markdown(result), f"written to {path}", sep="\n")
    return result


def test_faces(tmp_path: Path) -> None:
    result = run(tmp_path)
    assert result["record"]["entries_in_file"] > 0
    assert result["replay"]["ok"] and result["replay"]["entries"] > 0
    assert all(result["viewers"][k]["frames_total"] > 0 for k in ("ws", "sse", "foxglove"))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp))
