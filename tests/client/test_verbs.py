"""The seed README's test-client verbs, end to end: `python -m fastredis VERB ...`
subprocesses against the real app under uvicorn and a real Redis."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from PIL import Image
from support.live_server import server_fixture, url_fixture  # noqa: F401
from support.waiting import wait_until

import fastredis
from fastredis.client.verbs import parse_shape
from fastredis.embedded import free_port

ROOT = Path(fastredis.__file__).resolve().parent.parent
TIMEOUT = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("FASTREDIS_URL", None)
    return env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastredis", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
        cwd=ROOT,
    )


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastredis", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=TIMEOUT)


def test_parse_shape() -> None:
    assert parse_shape("700,700,3") == (700, 700, 3)
    assert parse_shape("[700,700,3]") == (700, 700, 3)
    assert parse_shape("[400,200]") == (400, 200)
    assert parse_shape("(400, 200)") == (400, 200)
    assert parse_shape("64x48x1") == (64, 48, 1)
    for bad in ("", "700", "1,2,3,4", "a,b", "10,10,4", "0,10"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shape(bad)


def test_help_lists_the_verbs() -> None:
    out = run("--help")
    assert out.returncode == 0, out.stderr
    for verb in ("push-increment", "pull-raw", "push-image", "pull-image", "serve"):
        assert verb in out.stdout


def test_push_increment_then_pull_raw(url: str, plain_redis: redis.Redis) -> None:
    out = run("push-increment", "counter", "--count", "20", "--url", url)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: plain_redis.xlen("counter") == 20, what="20 entries")
    entries = plain_redis.xrange("counter")
    assert [f[b"d"] for _, f in entries] == [str(i).encode() for i in range(20)]

    out = run("pull-raw", "counter", "--last-entry-id", "0", "--count", "20", "--url", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [f"counter: {i.decode()} | {n}" for n, (i, _) in enumerate(entries)]


def test_seed_forms_live(url: str, plain_redis: redis.Redis) -> None:
    """`push_increment counter` and `pull_raw counter` (the seed's spelling, new
    entries only) running side by side; the pusher runs until the puller has 5."""
    pusher = start("push_increment", "counter", "--count", "0", "--fps", "100", "--url", url)
    try:
        out = run("pull_raw", "counter", "--count", "5", "--url", url)
    finally:
        stop(pusher)
    assert out.returncode == 0, out.stderr
    values = [int(line.rsplit("| ", 1)[1]) for line in out.stdout.splitlines()]
    assert len(values) == 5 and values == list(range(values[0], values[0] + 5))


@pytest.mark.parametrize(
    ("shape", "size", "mode"),
    [
        ("[700,700,3]", (700, 700), "RGB"),
        ("[400,200]", (200, 400), "L"),
        ("64,48,1", (48, 64), "L"),
    ],
)
def test_push_image_shapes(
    shape: str, size: tuple[int, int], mode: str, url: str, plain_redis: redis.Redis
) -> None:
    out = run("push-image", "blah", "--shape", shape, "--count", "3", "--fps", "0", "--url", url)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: plain_redis.xlen("blah") == 3, what="3 frames")
    frames = [f[b"d"] for _, f in plain_redis.xrange("blah")]
    assert len(frames) == 3
    for data in frames:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == size and image.mode == mode
    assert frames[0] != frames[1]  # noise, not one frame repeated


def test_pull_image_latest_saves_the_last_frame(
    url: str, plain_redis: redis.Redis, tmp_path: Path
) -> None:
    saved = tmp_path / "last.jpg"
    as_png = tmp_path / "grey.png"
    pusher = start("push-image", "blah", "--shape", "[700,700,3]", "--fps", "30", "--url", url)
    grey = start("push-image", "blah_gray", "--shape", "[400,200]", "--fps", "30", "--url", url)
    try:
        out = run("pull-image", "blah", "--latest", "--count", "3", "--save", str(saved),
                  "--url", url)  # fmt: skip
        out_grey = run("pull_image", "blah_gray", "--latest", "--count", "2", "--save",
                       str(as_png), "--url", url)  # fmt: skip
    finally:
        stop(pusher)
        stop(grey)
    assert out.returncode == 0, out.stderr
    assert "3 frames" in out.stderr and "fps" in out.stderr and "latency p50" in out.stderr
    image = Image.open(saved)
    assert image.format == "JPEG" and image.size == (700, 700)
    stored = {f[b"d"] for _, f in plain_redis.xrange("blah")}
    assert saved.read_bytes() in stored  # the frame as received, not re-encoded
    assert out_grey.returncode == 0, out_grey.stderr
    png = Image.open(as_png)
    assert png.format == "PNG" and png.size == (200, 400) and png.mode == "L"


def test_pull_image_skips_entries_that_are_not_images(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.xadd("mixed", {"d": b"not a jpeg"})
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    plain_redis.xadd("mixed", {"d": buf.getvalue()})
    out = run("pull-image", "mixed", "--last-entry-id", "0", "--count", "1", "--url", url)
    assert out.returncode == 0, out.stderr
    assert "not an image" in out.stderr and "1 entries were not images" in out.stderr


@pytest.mark.parametrize(
    "verb",
    [
        ["push-increment", "s"],
        ["pull-raw", "s"],
        ["push-image", "s", "--shape", "8,8"],
        ["pull-image", "s", "--latest"],
    ],
)
def test_unreachable_server(verb: list[str]) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    out = run(*verb, "--url", dead)
    assert out.returncode == 1
    assert "cannot reach the fastredis server" in out.stderr and dead in out.stderr
    assert "Traceback" not in out.stderr


def test_default_url_comes_from_the_environment(url: str, plain_redis: redis.Redis) -> None:
    env = {**_env(), "FASTREDIS_URL": url.replace("ws://", "http://")}
    out = subprocess.run(
        [sys.executable, "-m", "fastredis", "push-increment", "env", "--count", "2"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_until(lambda: plain_redis.xlen("env") == 2, what="two entries")
