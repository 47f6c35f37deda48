"""The seed README's test-client verbs as `fastredis` subcommands.

    fastredis push-increment counter            # 0, 1, 2, ... (1000 entries)
    fastredis pull-raw counter                  # print entries as they arrive
    fastredis push-image blah --shape 700,700,3 [--fps 30]   # random-noise JPEGs
    fastredis push-image blah_gray --shape '[400,200]'       # greyscale
    fastredis pull-image blah --latest [--save last.jpg]     # decode, show fps/latency

Every verb takes `--url` (default $FASTREDIS_URL or ws://localhost:8000), `--token`
(default $FASTREDIS_TOKEN) and
`--count N` (stop after N entries; 0 = never). Progress goes to stderr through tqdm;
pull-raw prints entries to stdout. Nothing opens a window (headless-safe). When the
server cannot be reached, the verb prints one line naming the URL and exits with 1.
The underscore spellings of the seed (`push_increment`, ...) are accepted too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastredis.client.errors import ClientError
from fastredis.client.protocol import DEFAULT_URL
from fastredis.client.sync_client import Puller, Pusher
from fastredis.ids import id_ms

__all__ = ["parse_shape", "register"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _default_url() -> str:
    return os.environ.get("FASTREDIS_URL") or DEFAULT_URL


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


def _progress(unit: str, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(unit=unit, total=total or None, dynamic_ncols=True, file=sys.stderr)


def _run(func: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    """Turn client errors and Ctrl-C into a message and an exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args) or 0
        except ClientError as exc:
            print(f"fastredis {args.verb}: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except ModuleNotFoundError as exc:
            print(
                f"fastredis {args.verb}: error: {exc.name} is not installed; the test-client "
                'verbs need the client extra: pip install "fastredis[client]"',
                file=sys.stderr,
            )
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED

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
    pacer = _Pacer(args.fps)
    with Pusher(args.url, args.sid, token=args.token) as pusher:
        print(f"pushing to {pusher.url}", file=sys.stderr)
        with _progress("entry", args.count) as bar:
            i = args.start
            while not args.count or i - args.start < args.count:
                pusher.push(json.dumps(i).encode())
                bar.update()
                i += 1
                pacer.wait()
    return 0


def _show(data: bytes, limit: int = 200) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(data)} bytes)"


@_run
def pull_raw(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    options = {"last_entry_id": args.last_entry_id, "count": args.batch_size}
    with Puller(args.url, args.sid, latest=args.latest, token=args.token, **options) as puller:
        print(f"pulling from {puller.url}", file=sys.stderr)
        seen = 0
        with _progress("entry", args.count) as bar:
            for sid, entry_id, data in puller:
                tqdm.write(f"{sid}: {entry_id} | {_show(data)}", file=sys.stdout)
                bar.update()
                seen += 1
                if args.count and seen >= args.count:
                    break
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
    import numpy as np

    rng = np.random.default_rng()
    pacer = _Pacer(args.fps)
    with Pusher(args.url, args.sid, token=args.token) as pusher:
        print(f"pushing {args.shape} noise JPEGs to {pusher.url}", file=sys.stderr)
        with _progress("frame", args.count) as bar:
            sent = nbytes = 0
            while not args.count or sent < args.count:
                frame = _noise_jpeg(rng, args.shape, args.quality)
                pusher.push(frame)
                sent += 1
                nbytes += len(frame)
                bar.update()
                if sent % 10 == 0:
                    bar.set_postfix(kb_per_frame=round(nbytes / sent / 1024, 1), refresh=False)
                pacer.wait()
    return 0


def _save_frame(path: str, data: bytes, image: Any) -> None:
    """The JPEG bytes as received for .jpg/.jpeg (or no suffix), else re-encoded."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in ("", ".jpg", ".jpeg"):
        with open(path, "wb") as f:
            f.write(data)
    else:
        image.save(path)


@_run
def pull_image(args: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    rate = _Rate()
    last: tuple[bytes, Any] | None = None
    frames = bad = 0
    options = {"last_entry_id": args.last_entry_id, "count": args.batch_size}
    try:
        with Puller(args.url, args.sid, latest=args.latest, token=args.token, **options) as puller:
            print(f"pulling images from {puller.url}", file=sys.stderr)
            with _progress("frame", args.count) as bar:
                shown = 0.0
                for _sid, entry_id, data in puller:
                    try:
                        image = Image.open(io.BytesIO(data))
                        image.load()  # decode now: keeping up with decoding is the point
                    except (UnidentifiedImageError, OSError) as exc:
                        if not bad:
                            tqdm_write(f"skipping an entry that is not an image ({exc})")
                        bad += 1
                        continue
                    last = (data, image)
                    rate.add(time.time() * 1000 - id_ms(entry_id))
                    frames += 1
                    bar.update()
                    now = time.perf_counter()
                    if now - shown > 0.5:
                        shown = now
                        bar.set_postfix(
                            fps=round(rate.fps(), 1),
                            latency_ms=round(rate.latencies[-1], 1),
                            size=f"{image.width}x{image.height} {image.mode}",
                        )
                    if args.count and frames >= args.count:
                        break
    finally:
        if args.save and last is not None:
            _save_frame(args.save, *last)
        if frames:
            print(
                f"{frames} frames, {rate.fps():.1f} fps, latency p50 {rate.percentile(50):.1f} ms"
                f" p99 {rate.percentile(99):.1f} ms"
                + (f", {bad} entries were not images" if bad else "")
                + (f", last frame saved to {args.save}" if args.save and last else ""),
                file=sys.stderr,
            )
    return 0


def tqdm_write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


# -- parser ------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, count_default: int, count_help: str) -> None:
    parser.add_argument("sid", help="stream id (the Redis key); a+b for several streams")
    parser.add_argument(
        "--url",
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
    parser.add_argument("--count", type=int, default=count_default, help=count_help)


def _pull_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--last-entry-id",
        default=None,
        help="where to start: $ (new entries only; the server default), 0, or an id",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="entries per frame (the server's count)"
    )
    parser.add_argument(
        "--latest", action="store_true", help="skip to the newest entry (drop frames)"
    )


def register(subparsers: Any) -> None:
    """Add push-increment, pull-raw, push-image and pull-image to a subparsers object."""
    p = subparsers.add_parser(
        "push-increment",
        aliases=["push_increment"],
        help="push 0, 1, 2, ... (JSON integers) to a stream",
    )
    _common(p, 1000, "how many integers to push (default 1000; 0 = forever)")
    p.add_argument("--start", type=int, default=0, help="first integer (default 0)")
    p.add_argument("--fps", type=float, default=None, help="entries per second (default: max)")
    p.set_defaults(func=push_increment, verb="push-increment")

    p = subparsers.add_parser(
        "pull-raw", aliases=["pull_raw"], help="print the entries of a stream as they arrive"
    )
    _common(p, 0, "stop after N entries (default 0 = never)")
    _pull_options(p)
    p.set_defaults(func=pull_raw, verb="pull-raw")

    p = subparsers.add_parser(
        "push-image", aliases=["push_image"], help="push random-noise JPEG frames"
    )
    _common(p, 0, "stop after N frames (default 0 = never)")
    p.add_argument(
        "--shape",
        type=parse_shape,
        default=(700, 700, 3),
        help="HEIGHT,WIDTH[,CHANNELS]: 700,700,3 (RGB, the default) or 400,200 (grey); "
        "'[700,700,3]' works too",
    )
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75)")
    p.set_defaults(func=push_image, verb="push-image")

    p = subparsers.add_parser(
        "pull-image",
        aliases=["pull_image"],
        help="decode JPEG frames, show fps and latency (headless)",
    )
    _common(p, 0, "stop after N frames (default 0 = never)")
    _pull_options(p)
    p.add_argument("--save", metavar="PATH", help="save the latest frame there on exit")
    p.set_defaults(func=pull_image, verb="pull-image")
