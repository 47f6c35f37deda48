"""The Redis Streamer README's test-client verbs as `fastredis` subcommands.

    fastredis push-increment counter            # 0, 1, 2, ... (1000 entries)
    fastredis pull-raw counter                  # print entries as they arrive
    fastredis push-image blah --shape 700,700,3 [--fps 30]   # random-noise JPEGs
    fastredis push-image blah_gray --shape '[400,200]'       # greyscale
    fastredis pull-image blah --latest [--save last.jpg]     # decode, show fps/latency

Every verb takes `--url` (default $FASTREDIS_URL or ws://localhost:8000), `--token`
(default $FASTREDIS_TOKEN), `--count N` (stop after N entries; 0 = never) and `--quiet`.
A progress bar goes to stderr only when it is a terminal; otherwise one status line at
the start and a summary at the end.
pull-raw prints entries to stdout, one line at a time even into a pipe; a pipe closed
by its reader (`| head -1`) ends it quietly, status 0. Nothing opens a window
(headless-safe). A push counts only once the server acknowledged it (its entry id), so
a refused write (a key of another type) is an error, exit status 1, as is a server
that cannot be reached. SIGINT and SIGTERM end a verb with its summary (and
pull-image's --save) and status 128+signal.
The underscore spellings of the Redis Streamer README (`push_increment`, ...) are accepted too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastredis.cli import discard_stdout
from fastredis.client.errors import ClientError
from fastredis.client.protocol import DEFAULT_URL, base_url
from fastredis.ids import id_ms

__all__ = ["parse_shape", "register"]

EXIT_ERROR = 1
EXIT_USAGE = 2  # as argparse's errors
# what the verbs import (the client extra), probed before one runs
NEEDS = ("websockets", "tqdm")
NEEDS_IMAGES = (*NEEDS, "PIL")


def _default_url() -> str:
    return os.environ.get("FASTREDIS_URL") or DEFAULT_URL


def _server_url(text: str) -> str:
    try:
        base_url(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a server URL: use ws://, wss://, http:// or https://"
        ) from None
    return text


def _at_least(low: float, kind: Callable[[str], Any], meaning: str) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, refused below `low` with `meaning` as the reason."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value >= low:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{meaning}, not {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


def _quality(text: str) -> int:
    value = _at_least(1, int, "JPEG quality is 1-100")(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"JPEG quality is 1-100, not {text}")
    return int(value)


def parse_shape(text: str) -> tuple[int, ...]:
    """'700,700,3', '[700,700,3]', '(400, 200)' or '700x700x3' -> a tuple of ints.
    Two numbers make a greyscale image, three (channels 1 or 3) a colour one."""
    parts = [p for p in re.split(r"[,x\s]+", text.strip().strip("[]()").strip()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must be numbers, e.g. 700,700,3: {text!r}"
        ) from None
    if len(shape) not in (2, 3) or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"shape must be HEIGHT,WIDTH[,CHANNELS]: {text!r}")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise argparse.ArgumentTypeError(f"JPEG needs 1 or 3 channels, not {shape[2]}")
    return shape


def _say(args: argparse.Namespace, message: str) -> None:
    """A status line on stderr (none with --quiet), above the bar if one is drawn."""
    if not args.quiet:
        tqdm_write(message)


@contextmanager
def _progress(args: argparse.Namespace, unit: str) -> Iterator[Any]:
    """A tqdm bar on stderr, only when stderr is a terminal and not --quiet (a bar
    redrawn into a file or pipe is noise)."""
    from tqdm import tqdm

    shown = not args.quiet and sys.stderr.isatty()
    with tqdm(
        unit=unit,
        total=args.count or None,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not shown,
    ) as bar:
        yield bar


class _OutputClosed(Exception):
    """The reader of stdout went away (told apart from a socket's BrokenPipeError)."""


def _print(line: str) -> None:
    """One line on stdout (above the bar), flushed now: a pipe's reader sees each line
    as it comes."""
    from tqdm import tqdm

    try:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError as exc:
        raise _OutputClosed from exc


def _run(func: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Turn client errors, SIGINT/SIGTERM and a closed stdout into a message and an exit
    code."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args) or 0
        except _OutputClosed:
            discard_stdout()
            return 0
        except ClientError as exc:
            print(f"fastredis {args.verb}: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt as exc:  # fastredis.cli.Stop carries the signal
            return 128 + getattr(exc, "signum", signal.SIGINT)

    wrapper.__name__ = func.__name__
    return wrapper


class _Pacer:
    """Sleeps so that calls to wait() happen at most `fps` times a second."""

    def __init__(self, fps: float | None):
        self.period = 1.0 / fps if fps else 0.0
        self.next = time.perf_counter()

    def wait(self) -> None:
        if not self.period:
            return
        self.next += self.period
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next = time.perf_counter()  # fell behind: do not burst to catch up


class _Rate:
    """Events per second over the last `window` seconds, and latency percentiles."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self.times: deque[float] = deque()
        self.latencies: list[float] = []

    def add(self, latency_ms: float) -> None:
        now = time.perf_counter()
        self.times.append(now)
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        self.latencies.append(latency_ms)

    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- verbs -------------------------------------------------------------------------


@_run
def push_increment(args: argparse.Namespace) -> int:
    """Every push is acknowledged by the server (its entry ids) before it counts."""
    from fastredis.client.sync_client import Pusher

    pacer = _Pacer(args.fps)
    sent = 0
    with Pusher(args.url, args.sid, ack=True, token=args.token) as pusher:
        _say(args, f"pushing to {pusher.url}")
        try:
            with _progress(args, "entry") as bar:
                while not args.count or sent < args.count:
                    pusher.push(json.dumps(args.start + sent).encode())
                    sent += 1
                    bar.update()
                    pacer.wait()
        finally:
            _say(args, f"{sent} entries written to {args.sid}")
    return 0


def _show(data: bytes, limit: int = 200) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


@_run
def pull_raw(args: argparse.Namespace) -> int:
    from fastredis.client.sync_client import Puller

    options = {"last_entry_id": args.last_entry_id, "count": args.batch_size}
    seen = 0
    with Puller(args.url, args.sid, latest=args.latest, token=args.token, **options) as puller:
        _say(args, f"pulling from {puller.url}")
        try:
            with _progress(args, "entry") as bar:
                for sid, entry_id, data in puller:
                    _print(f"{sid}: {entry_id} | {_show(data)}")
                    bar.update()
                    seen += 1
                    if args.count and seen >= args.count:
                        break
        finally:
            _say(args, f"{seen} entries read")
    return 0


def _noise_jpeg(rng: Any, shape: tuple[int, ...], quality: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@_run
def push_image(args: argparse.Namespace) -> int:
    """Every frame is acknowledged by the server before it counts."""
    import numpy as np

    from fastredis.client.sync_client import Pusher

    rng = np.random.default_rng()
    pacer = _Pacer(args.fps)
    sent = nbytes = 0
    with Pusher(args.url, args.sid, ack=True, token=args.token) as pusher:
        _say(args, f"pushing {args.shape} noise JPEGs to {pusher.url}")
        try:
            with _progress(args, "frame") as bar:
                while not args.count or sent < args.count:
                    frame = _noise_jpeg(rng, args.shape, args.quality)
                    pusher.push(frame)
                    sent += 1
                    nbytes += len(frame)
                    bar.update()
                    if sent % 10 == 0:
                        bar.set_postfix(kb_per_frame=round(nbytes / sent / 1024, 1), refresh=False)
                    pacer.wait()
        finally:
            _say(args, f"{sent} frames ({nbytes / 1024:.0f} KiB) written to {args.sid}")
    return 0


def _save_problem(path: str) -> str | None:
    """Why the last frame could not be saved at `path` (None: it can), found before
    pulling rather than after."""
    from PIL import Image

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in ("", ".jpg", ".jpeg"):
        Image.init()
        if Image.registered_extensions().get(suffix) not in Image.SAVE:
            return f"Pillow cannot write {suffix} files (use .jpg, .png, .webp, ...)"
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):  # appends nothing: only asks whether it can be written
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    if not existed:
        os.remove(path)
    return None


def _save_frame(path: str, data: bytes, image: Any) -> None:
    """The JPEG bytes as received for .jpg/.jpeg (or no suffix), else re-encoded."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in ("", ".jpg", ".jpeg"):
        with open(path, "wb") as f:
            f.write(data)
    else:
        image.save(path)


class _Frames:
    """What pull-image saw: the rate, the last image, entries that were not images."""

    def __init__(self) -> None:
        self.rate = _Rate()
        self.last: tuple[bytes, Any] | None = None
        self.count = self.bad = 0
        self.shown = 0.0
        self.first = True

    def describe(self) -> str:
        """The last image's size and mode."""
        image = self.last[1] if self.last else None
        return f"{image.width}x{image.height} {image.mode}" if image else "none"

    def add(self, entry_id: str, data: bytes, bar: Any) -> None:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
            image.load()  # decode now: keeping up with decoding is the point
        except (UnidentifiedImageError, OSError) as exc:
            if not self.bad:
                tqdm_write(f"skipping an entry that is not an image ({exc})")
            self.bad += 1
            return
        self.last = (data, image)
        self.rate.add(time.time() * 1000 - id_ms(entry_id))
        self.count += 1
        bar.update()
        now = time.perf_counter()
        if now - self.shown > 0.5:
            self.shown = now
            bar.set_postfix(
                fps=round(self.rate.fps(), 1),
                latency_ms=round(self.rate.latencies[-1], 1),
                size=self.describe(),
            )

    def summary(self, save: str | None) -> str:
        rate = self.rate
        return (
            f"{self.count} frames, {rate.fps():.1f} fps, latency p50 "
            f"{rate.percentile(50):.1f} ms p99 {rate.percentile(99):.1f} ms"
            + (f", {self.bad} entries were not images" if self.bad else "")
            + (f", last frame saved to {save}" if save and self.last else "")
        )


@_run
def pull_image(args: argparse.Namespace) -> int:
    """Decodes every frame; on exit (the count reached, SIGINT or SIGTERM) saves the
    last one (--save) and prints the summary."""
    from fastredis.client.sync_client import Puller

    problem = _save_problem(args.save) if args.save else None
    if problem:
        print(f"fastredis {args.verb}: error: --save {args.save}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    frames = _Frames()
    options = {"last_entry_id": args.last_entry_id, "count": args.batch_size}
    try:
        with Puller(args.url, args.sid, latest=args.latest, token=args.token, **options) as puller:
            _say(args, f"pulling images from {puller.url}")
            with _progress(args, "frame") as bar:
                for _sid, entry_id, data in puller:
                    frames.add(entry_id, data, bar)
                    if frames.count == 1 and frames.first:
                        frames.first = False
                        _say(args, f"first frame: {frames.describe()}")
                    if args.count and frames.count >= args.count:
                        break
    finally:
        if args.save and frames.last is not None:
            _save_frame(args.save, *frames.last)
        if frames.count or frames.bad:
            _say(args, frames.summary(args.save))
    return 0


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


# -- parser ------------------------------------------------------------------------

_COUNT = _at_least(0, int, "a count is >= 0 (0: never stop)")
_FPS = _at_least(0, float, "a rate is >= 0 (0: as fast as possible)")
_BATCH = _at_least(1, int, "a batch size is >= 1")


def _common(parser: argparse.ArgumentParser, count_default: int, count_help: str) -> None:
    parser.add_argument("sid", help="stream id (the Redis key); a+b for several streams")
    parser.add_argument(
        "--url",
        type=_server_url,
        default=_default_url(),
        help="server URL (ws://, wss://, http:// or https://); default $FASTREDIS_URL "
        f"or {DEFAULT_URL}",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FASTREDIS_TOKEN") or None,
        help="API key or JWT for a server with access control (sent as Authorization: "
        "Bearer); default $FASTREDIS_TOKEN",
    )
    parser.add_argument("--count", type=_COUNT, default=count_default, help=count_help)
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress bar and no status lines"
    )


def _pull_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--last-entry-id",
        default=None,
        help="where to start: $ (new entries only; the server default), 0, or an id",
    )
    parser.add_argument(
        "--batch-size", type=_BATCH, default=None, help="entries per frame (the server's count)"
    )
    parser.add_argument(
        "--latest", action="store_true", help="skip to the newest entry (drop frames)"
    )


def _verb(subparsers: Any, name: str, func: Any, needs: tuple[str, ...], summary: str) -> Any:
    p = subparsers.add_parser(
        name,
        aliases=[name.replace("-", "_")],
        help=summary,
        description=f'{summary[0].upper()}{summary[1:]}. Needs pip install "fastredis[client]".',
    )
    p.set_defaults(func=func, verb=name, needs=needs, extra="client")
    return p


def register(subparsers: Any) -> None:
    """Add push-increment, pull-raw, push-image and pull-image to a subparsers object."""
    p = _verb(subparsers, "push-increment", push_increment, NEEDS,
              "push 0, 1, 2, ... (JSON integers) to a stream")  # fmt: skip
    _common(p, 1000, "how many integers to push (default 1000; 0 = forever)")
    p.add_argument("--start", type=int, default=0, help="first integer (default 0)")
    p.add_argument("--fps", type=_FPS, default=None, help="entries per second (default: max)")

    p = _verb(subparsers, "pull-raw", pull_raw, NEEDS,
              "print the entries of a stream as they arrive")  # fmt: skip
    _common(p, 0, "stop after N entries (default 0 = never)")
    _pull_options(p)

    p = _verb(subparsers, "push-image", push_image, NEEDS_IMAGES,
              "push random-noise JPEG frames")  # fmt: skip
    _common(p, 0, "stop after N frames (default 0 = never)")
    p.add_argument(
        "--shape",
        type=parse_shape,
        default=(700, 700, 3),
        help="HEIGHT,WIDTH[,CHANNELS]: 700,700,3 (RGB, the default) or 400,200 (grey); "
        "'[700,700,3]' works too",
    )
    p.add_argument("--fps", type=_FPS, default=30.0, help="frames per second (default 30; 0: max)")
    p.add_argument("--quality", type=_quality, default=75, help="JPEG quality 1-100 (75)")

    p = _verb(subparsers, "pull-image", pull_image, NEEDS_IMAGES,
              "decode JPEG frames, show fps and latency (headless)")  # fmt: skip
    _common(p, 0, "stop after N frames (default 0 = never)")
    _pull_options(p)
    p.add_argument(
        "--save",
        metavar="PATH",
        help="save the latest frame there on exit (.jpg: as received; .png, .webp, ...: "
        "re-encoded); checked before pulling",
    )
