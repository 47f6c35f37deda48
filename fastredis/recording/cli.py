"""`fastredis record` and `fastredis replay`: the subcommands over `fastredis.recording`.

fastredis record SID... -o run.mcap [--from ID] [--to ID] [--follow] [--redis-url URL]
fastredis replay run.mcap [--speed X] [--into PREFIX] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fastredis.ids import is_entry_id

__all__ = ["NEEDS", "register"]

NEEDS = ("mcap", "zstandard", "lz4")  # the record extra, probed before a subcommand runs


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _entry_id(text: str) -> str:
    if not is_entry_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream entry id (MS-SEQ or MS)")
    return text


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--speed is a number >= 0 (0: at once), not {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--maxlen is a whole number >= 1, not {text!r}")
    return int(text)


def _client(args: argparse.Namespace) -> Any:
    from fastredis.redis_io import make_client

    return make_client({"socket_connect_timeout": 5}, url=args.redis_url)


def _run(command: str, work: Any) -> int:
    import redis

    from fastredis.recording.files import RecordingError

    try:
        work()
    except RecordingError as exc:
        _say(f"fastredis {command}: {exc}")
        return 1
    except redis.RedisError as exc:
        _say(f"fastredis {command}: Redis: {exc}")
        return 1
    except OSError as exc:
        _say(f"fastredis {command}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1
    return 0


def record_command(args: argparse.Namespace) -> int:
    from fastredis.recording.record import record

    def work() -> None:
        counts: dict[str, int] = {}
        try:
            counts = record(
                _client(args), args.sids, args.output, args.start, args.to, args.follow,
                args.compression, _say,
            )  # fmt: skip
        finally:
            if counts or os.path.exists(args.output):
                _say(f"record: {sum(counts.values())} entries into {args.output}")

    return _run("record", work)


def replay_command(args: argparse.Namespace) -> int:
    from fastredis.recording.replay import replay

    def work() -> None:
        counts = replay(_client(args), args.file, args.speed, args.into, _say, args.maxlen)
        for sid, n in sorted(counts.items()):
            _say(f"replay: {n} entries into {sid!r}")

    return _run("replay", work)


def register(subparsers: Any) -> None:
    """Add `record` and `replay` to a subparsers object."""
    url = {
        "default": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "help": "the Redis to use (default: REDIS_URL, else redis://127.0.0.1:6379/0)",
    }
    p = subparsers.add_parser(
        "record",
        help="record streams into an MCAP file",
        description="Record streams into an MCAP file: one channel per stream, compressed "
        "chunks, a summary with indexes. Without --follow it stops at the entries there "
        'when it starts. Needs pip install "fastredis[record]".',
    )
    p.add_argument("sids", nargs="+", metavar="SID", help="the streams to record")
    p.add_argument("-o", "--output", required=True, help="the MCAP file to write")
    p.add_argument("--from", dest="start", type=_entry_id, help="start at this entry id")
    p.add_argument("--to", type=_entry_id, help="stop after this entry id")
    p.add_argument("--follow", action="store_true", help="go on recording until stopped")
    p.add_argument("--compression", choices=["zstd", "lz4", "none"], default="zstd",
                   help="chunk compression (zstd)")  # fmt: skip
    p.add_argument("--redis-url", **url)
    p.set_defaults(func=record_command, needs=NEEDS, extra="record")

    p = subparsers.add_parser(
        "replay",
        help="write a recorded MCAP file back into streams",
        description="Write the entries of an MCAP recording back into their streams with "
        "their relative timing, keeping their ids where the streams allow it.",
    )
    p.add_argument("file", help="the MCAP file")
    p.add_argument("--speed", type=_speed, default=1.0,
                   help="1: real time (default), 2: twice as fast, 0: at once")  # fmt: skip
    p.add_argument("--into", default="", metavar="PREFIX",
                   help="write stream SID into PREFIX+SID (default: SID itself)")  # fmt: skip
    p.add_argument("--maxlen", type=_count, default=None, metavar="N",
                   help="trim each stream to about N entries (default: keep all)")  # fmt: skip
    p.add_argument("--redis-url", **url)
    p.set_defaults(func=replay_command, needs=NEEDS, extra="record")
