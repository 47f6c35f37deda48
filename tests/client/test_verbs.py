"""The Redis Streamer README's test-client verbs, end to end: `python -m fastredis VERB ...`
subprocesses against the real app under uvicorn and a real Redis."""

from __future__ import annotations

import argparse
import io
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
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


def test_streamer_forms_live(url: str, plain_redis: redis.Redis) -> None:
    """`push_increment counter` and `pull_raw counter` (the Redis Streamer spelling, new
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


# -- rough edges ----------------------------------------------------------------------


def test_push_to_a_key_of_another_type_fails(url: str, plain_redis: redis.Redis) -> None:
    plain_redis.set("plainkey", "x")
    out = run("push-increment", "plainkey", "--count", "100", "--url", url)
    assert out.returncode == 1, out.stderr
    error = out.stderr.splitlines()[-1]  # the server's reason, whatever its wording
    assert error.startswith("fastredis push-increment: error: ") and "code 1008" in error
    assert "plainkey" in error and "Traceback" not in out.stderr
    assert "0 entries written to plainkey" in out.stderr
    assert plain_redis.get("plainkey") == b"x"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["push-image", "s", "--quality", "500"], "JPEG quality is 1-100, not 500"),
        (["push-image", "s", "--quality", "0"], "JPEG quality is 1-100, not 0"),
        (["push-increment", "s", "--count", "-1"], "a count is >= 0 (0: never stop), not -1"),
        (["pull-raw", "s", "--count", "-1"], "a count is >= 0"),
        (["push-increment", "s", "--fps", "-1"], "a rate is >= 0 (0: as fast as possible)"),
        (["push-image", "s", "--fps", "-1"], "a rate is >= 0"),
        (["pull-image", "s", "--batch-size", "0"], "a batch size is >= 1"),
        (["pull-raw", "s", "--url", "ftp://x"], "'ftp://x' is not a server URL: use ws://"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], reason: str) -> None:
    out = run(*args)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and reason in errors[0], out.stderr
    assert "Traceback" not in out.stderr


def test_a_bad_url_in_the_environment_is_refused() -> None:
    env = {**_env(), "FASTREDIS_URL": "ftp://x"}
    out = subprocess.run(
        [sys.executable, "-m", "fastredis", "pull-raw", "s"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "not a server URL" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("save", "reason"),
    [
        ("no-such-folder/last.jpg", "No such file or directory"),
        ("last.txt", "Pillow cannot write .txt files (use .jpg, .png, .webp, ...)"),
        ("last.psd", "Pillow cannot write .psd files (use .jpg, .png, .webp, ...)"),  # read-only
        (".", "Is a directory"),
    ],
)
def test_pull_image_checks_save_before_pulling(
    url: str, plain_redis: redis.Redis, tmp_path: Path, save: str, reason: str
) -> None:
    plain_redis.xadd("checked", {"d": _jpeg((0, 0, 0))})
    path = tmp_path / save
    out = run("pull-image", "checked", "--last-entry-id", "0", "--count", "1",
              "--save", str(path), "--url", url)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"fastredis pull-image: error: --save {path}: {reason}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_pull_image_on_sigterm_saves_and_sums_up(
    url: str, plain_redis: redis.Redis, tmp_path: Path
) -> None:
    frames = [_jpeg((i * 60, 0, 0)) for i in range(3)]
    for frame in frames:
        plain_redis.xadd("cam", {"d": frame})
    saved = tmp_path / "last.jpg"
    proc = start("pull-image", "cam", "--last-entry-id", "0", "--save", str(saved), "--url", url)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the status line comes after the first frame is decoded
        seen.append(line)
        if line.startswith("first frame: 16x8 RGB"):
            break
    assert seen and seen[-1].startswith("first frame"), "".join(seen)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in rest
    assert "frames," in rest and "latency p50" in rest and f"saved to {saved}" in rest
    assert saved.read_bytes() in frames


def _as_users_run_it() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: stdout into a pipe is block-buffered."""
    env = _env()
    env.pop("PYTHONUNBUFFERED", None)
    return env


def test_pull_raw_into_a_pipe_prints_each_entry_as_it_comes(
    url: str, plain_redis: redis.Redis
) -> None:
    first = plain_redis.xadd("lines", {"d": b"first"}).decode()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastredis", "pull-raw", "lines", "--last-entry-id", "0",
         "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=_as_users_run_it(), cwd=ROOT,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert lines.get(timeout=TIMEOUT) == f"lines: {first} | first\n"
        second = plain_redis.xadd("lines", {"d": b"second"}).decode()
        assert lines.get(timeout=TIMEOUT) == f"lines: {second} | second\n"
    finally:
        stop(proc)


def test_pull_raw_into_head_ends_quietly(url: str, plain_redis: redis.Redis) -> None:
    first = plain_redis.xadd("headed", {"d": b"0"}).decode()
    pull = shlex.join(
        [sys.executable, "-m", "fastredis", "pull-raw", "headed", "--last-entry-id", "0",
         "--url", url]
    )  # fmt: skip
    proc = subprocess.Popen(
        ["bash", "-c", f'{pull} | head -1; echo "pull-raw exit ${{PIPESTATUS[0]}}" >&2'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_as_users_run_it(), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    added = iter(range(1, 1_000_000))

    def ended() -> bool:  # a live stream: pull-raw finds the pipe closed at its next line
        plain_redis.xadd("headed", {"d": str(next(added))})
        return proc.poll() is not None

    try:
        wait_until(ended, timeout=TIMEOUT, interval=0.01, what="`pull-raw | head -1` to end")
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell, pull-raw and head
        raise
    finally:
        out, err = proc.communicate(timeout=TIMEOUT)
    assert out == f"headed: {first} | 0\n"
    assert "pull-raw exit 0" in err and "Traceback" not in err and "Broken" not in err, err


def test_no_progress_bar_into_a_file_and_quiet(url: str, plain_redis: redis.Redis) -> None:
    out = run("push-increment", "n", "--count", "1000", "--url", url)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and len(out.stderr) < 500, out.stderr
    assert out.stderr.splitlines()[-1] == "1000 entries written to n"
    assert plain_redis.xlen("n") == 1000  # acknowledged, so already there
    out = run("pull-raw", "n", "--last-entry-id", "0", "--count", "3", "--quiet", "--url", url)
    assert out.returncode == 0 and out.stderr == ""
    assert len(out.stdout.splitlines()) == 3


def test_progress_bar_on_a_terminal(url: str) -> None:
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastredis", "push-increment", "t", "--count", "50",
             "--url", url],
            stdout=subprocess.DEVNULL, stderr=follower, env=_env(), cwd=ROOT,
        )  # fmt: skip
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(TIMEOUT) == 0
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert "50/50" in shown and "entry/s" in shown
