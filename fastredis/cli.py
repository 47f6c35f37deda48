"""The `fastredis` command: assembles the subcommands of each face.

fastredis serve ...                        # fastredis.server.serve
fastredis push-increment|pull-raw|...      # fastredis.client.verbs
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

__all__ = ["build_parser", "main"]

CLIENT_VERBS_MODULE = "fastredis.client.verbs"


def build_parser() -> argparse.ArgumentParser:
    from fastredis.server import serve

    parser = argparse.ArgumentParser(
        prog="fastredis", description="Move data through Redis Streams fast."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(subparsers)
    if importlib.util.find_spec(CLIENT_VERBS_MODULE) is not None:
        from fastredis.client import verbs

        verbs.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
