"""The `fastredis` command: assembles the subcommands of each face.

    fastredis serve ...                        # fastredis.server.run.serve (the server extra)
    fastredis push-increment|pull-raw|...      # fastredis.client.verbs (the client extra)
    fastredis record|replay ...                # fastredis.recording.cli (the record extra)

Every face registers its subcommands without importing its optional dependencies, so
`fastredis --help` works with the base install. Each subcommand names the packages it
needs (`needs=`, `extra=` parser defaults); they are imported before it runs, as
uvicorn's `protocols/http/auto.py` probes httptools, and a missing one is a one-line
error naming the extra. SIGINT and SIGTERM become `Stop` from the first line of
`main()` on, so a Ctrl-C at any moment ends without a traceback. A stdout whose reader
went away (`fastredis ... | head -1`) ends the command quietly with status 0, as it
ends a Unix tool: `discard_stdout()` points it at /dev/null.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys
from typing import Any

from fastredis import __version__

__all__ = [
    "FACES",
    "Stop",
    "build_parser",
    "discard_stdout",
    "main",
    "missing_packages",
    "parse",
    "unrecognized",
]

# the modules whose register(subparsers) adds subcommands, in --help order
FACES = ("fastredis.server.run.serve", "fastredis.client.verbs", "fastredis.recording.cli")


class Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (a KeyboardInterrupt, so code that cleans up after a
    Ctrl-C does the same after SIGTERM); `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# the signals that arrived (a Stop raised inside a library may come out as another
# error: `stopped()` tells that the program is ending on a signal)
_ARRIVED: list[int] = []


def _raise_stop(signum: int, _frame: Any) -> None:
    _ARRIVED.append(signum)
    raise Stop(signum)


def stopped() -> bool:
    """Whether SIGINT or SIGTERM arrived since `stop_on_signals`."""
    return bool(_ARRIVED)


def stop_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise Stop."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stop)


def discard_stdout() -> None:
    """Point stdout at /dev/null, once its reader has gone: what is still buffered, and
    the flush at exit, then go nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _flush_stdout() -> None:
    """Flush stdout now, so a reader gone is found here rather than at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()


def missing_packages(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that cannot be imported (an optional dependency absent)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastredis",
        description="Move data through Redis Streams fast.",
        epilog='serve needs the server extra (pip install "fastredis[server]"), the '
        'test-client verbs the client extra (pip install "fastredis[client]").',
    )
    parser.add_argument("--version", action="version", version=f"fastredis {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for face in FACES:
        importlib.import_module(face).register(subparsers)
    for sub in subparsers.choices.values():  # its own usage for its own mistakes
        sub.set_defaults(parser=sub)
    return parser


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's "unrecognized arguments" message, with a guess for each mistyped flag."""
    known = [s for action in parser._actions for s in action.option_strings]
    guesses = []
    for arg in extras:
        if arg.startswith("-"):
            guesses += difflib.get_close_matches(arg.split("=", 1)[0], known, n=1)
    message = f"unrecognized arguments: {' '.join(extras)}"
    return message + (f" (did you mean {' / '.join(guesses)}?)" if guesses else "")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed; a mistake ends the program (status 2) with the usage of
    the subcommand it was made in."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        where = getattr(args, "parser", parser)
        where.error(unrecognized(extras, where))
    return args


def _run(args: argparse.Namespace) -> int:
    needs: tuple[str, ...] = getattr(args, "needs", ())
    missing = missing_packages(needs)
    if missing:
        print(
            f"fastredis {args.command}: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed; {args.command} needs "
            f'the {args.extra} extra: pip install "fastredis[{args.extra}]"',
            file=sys.stderr,
        )
        return 1
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    stop_on_signals()
    try:
        try:
            args = parse(argv)
        except BrokenPipeError:  # --help or --version into a closed pipe (no network here)
            discard_stdout()
            return 0
        return _run(args)
    except Stop as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:  # raise_signal by a library, or before stop_on_signals
        return 128 + signal.SIGINT
    finally:
        _flush_stdout()  # also after argparse's SystemExit


if __name__ == "__main__":
    sys.exit(main())
