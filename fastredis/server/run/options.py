"""The options of `fastredis serve`, each defined once: flag, environment variable, type,
default and help.

The command line (`add_arguments`), `Settings` (its defaults and `Settings.from_env`)
and the reference page docs/guides/options.md (`reference`, checked by
tests/server/test_options.py) are all made from `OPTIONS`. A value given on the command
line wins over the environment, which wins over the default. Nothing here imports the
server extra.

Regenerate the page after changing the table::

    python -m fastredis.server.run.options > docs/guides/options.md
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OPTIONS",
    "Kind",
    "Option",
    "add_arguments",
    "option",
    "parse_addresses",
    "parse_root_path",
    "parse_size",
    "reference",
]

_SIZE = re.compile(r"([0-9]+)\s*(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_size(text: str) -> int:
    """A positive byte count: 1048576, 64MiB, 64MB, 64M, 512k, 1g (k/M/G are 1024-based)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size in bytes (e.g. 1048576, 64MiB, 512k): {text!r}")
    value = int(match[1]) * _UNITS[(match[2] or "").lower()]
    if value < 1:
        raise ValueError(f"a size must be positive: {text!r}")
    return value


def _show_size(value: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None
    if value < 0:
        raise ValueError(f"must be >= 0: {text!r}")
    return value


def _positive(text: str) -> int:
    value = _nonnegative(text)
    if value < 1:
        raise ValueError(f"must be >= 1: {text!r}")
    return value


def _seconds_in(text: str, ok: Callable[[float], bool], must: str) -> float:
    """`text` as seconds for which `ok` holds, else ValueError saying what it `must` be."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    if not ok(value):  # nan fails every comparison
        raise ValueError(f"must be {must}: {text!r}")
    return value


def _window(text: str) -> float:
    return _seconds_in(text, lambda v: 0 <= v <= 3600, "0 to 3600 seconds")


def _seconds(text: str) -> float:
    return _seconds_in(text, lambda v: 0 < v < 10**9, "> 0 seconds")  # inf refused too


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise ValueError(f"a TCP port is 0-65535 (0: any free port), not {text!r}")
    return value


def parse_addresses(text: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses and networks (10.0.0.0/8), or ``*``."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in items:
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
    return items


def parse_root_path(text: str) -> str:
    """A URL path prefix such as /fastredis (a trailing / dropped), or empty."""
    path = text.strip().rstrip("/")
    if path and (not path.startswith("/") or any(c in path for c in "?#% ")):
        raise ValueError(f"a root path looks like /fastredis (one or more /segments): {text!r}")
    return path


@dataclass(frozen=True)
class Kind:
    """What an option's value is: its name on the reference page, how text becomes the
    value (raising ValueError with a reason), how a value is shown."""

    name: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str


TEXT = Kind("text", str)
FILE = Kind("file", str)
DIRECTORY = Kind("directory", str)
COUNT = Kind("integer >= 0", _nonnegative)
POSITIVE = Kind("integer >= 1", _positive)
PORT = Kind("port", _port)
SIZE = Kind("size (64MiB, 512k, 1048576)", parse_size, _show_size)
SECONDS = Kind("seconds > 0", _seconds, lambda v: f"{v:g}")
SWITCH = Kind("switch", str)  # a flag without a value
ADDRESSES = Kind("IP addresses / networks, comma-separated", parse_addresses, ",".join)
ROOT_PATH = Kind("URL path", parse_root_path)
WINDOW = Kind("seconds, 0-3600", _window, lambda v: f"{v:g}")


@dataclass(frozen=True)
class Option:
    """One option of `fastredis serve`.

    * ``setting``: the `Settings` field it fills (None: only the command itself uses it).
    * ``env``: the environment variable read when the flag is not given.
    * ``many``: repeatable; the environment variable is comma-separated.
    """

    flag: str
    kind: Kind
    default: Any
    help: str
    env: str | None = None
    setting: str | None = None
    many: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def shown_default(self) -> str:
        if self.many:
            return ", ".join(self.default) or "none"
        if self.default is None or self.default == "":
            return "none"
        return self.kind.show(self.default)

    def from_env(self, env: Mapping[str, str]) -> Any:
        """The value the environment gives (the default when unset or blank)."""
        raw = env.get(self.env) if self.env else None
        if raw is None or raw.strip() == "":
            return list(self.default) if self.many else self.default
        try:
            if self.many:
                return [self.kind.parse(v.strip()) for v in raw.split(",") if v.strip()]
            if self.choices and raw not in self.choices:
                raise ValueError(f"{raw!r} is not one of: {', '.join(self.choices)}")
            return self.kind.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.env}: {exc}") from None


OPTIONS: tuple[Option, ...] = (
    Option("--host", TEXT, "127.0.0.1", "interface to listen on"),
    Option("--port", PORT, 8000, "port to listen on (0: any free port)"),
    Option(
        "--redis-url",
        TEXT,
        None,
        "Redis to use, e.g. redis://host:6379/0 (none: an embedded Valkey is started "
        "and stopped with the server)",
        env="REDIS_URL",
        setting="redis_url",
        metavar="URL",
    ),
    Option(
        "--redis-cluster",
        SWITCH,
        None,
        "the Redis URL is a node of a Redis Cluster (none: ask it, INFO cluster)",
        setting="redis_cluster",
    ),
    Option(
        "--workers",
        POSITIVE,
        1,
        "N server processes on the port, sharing one Redis (the embedded Valkey is "
        "started once, by the parent)",
        metavar="N",
    ),
    Option(
        "--balance",
        TEXT,
        "shared",
        "with --workers: one accept socket for all (shared, as uvicorn --workers), or "
        "one SO_REUSEPORT listener per worker, the kernel spreading connections by "
        "address hash (reuseport)",
        choices=("reuseport", "shared"),
    ),
    Option(
        "--data-dir",
        DIRECTORY,
        None,
        "the embedded Valkey keeps its data in DIR (saved on exit and hourly, loaded at "
        "the next start); without it the embedded server forgets everything on exit",
        metavar="DIR",
    ),
    Option(
        "--embedded-port",
        PORT,
        None,
        "port of the embedded Valkey on 127.0.0.1 (none: a free one)",
        metavar="PORT",
    ),
    Option(
        "--maxlen",
        COUNT,
        1000,
        "trim streams to about N entries (MAXLEN ~ N; 0: never)",
        env="FASTREDIS_STREAM_MAXLEN",
        setting="maxlen",
        metavar="N",
    ),
    Option(
        "--max-message-size",
        SIZE,
        64 * 2**20,
        "largest websocket message or REST body; larger ones close the socket with "
        "1009 (REST: 413)",
        env="FASTREDIS_MAX_MESSAGE_SIZE",
        setting="max_message_size",
        metavar="BYTES",
    ),
    Option(
        "--max-entries-per-message",
        COUNT,
        # One push message is one atomic Lua script, and Redis serves nobody else while
        # it runs; its cost grows with the count (benchmarks/bench_push_script.py), so
        # the default keeps every message's stall to milliseconds.
        1000,
        "most entries one push message or POST may add (it is written as one atomic "
        "script, so this bounds how long it holds Redis)",
        env="FASTREDIS_MAX_ENTRIES_PER_MESSAGE",
        setting="max_entries_per_message",
        metavar="N",
    ),
    Option(
        "--max-sockets",
        COUNT,
        10_000,
        "most websockets and MJPEG streams open at once; past it 1013 / 503",
        env="FASTREDIS_MAX_SOCKETS",
        setting="max_sockets",
        metavar="N",
    ),
    Option(
        "--redis-max-connections",
        COUNT,
        32,
        "most Redis connections per server process (at least 8), however many sockets; "
        "a request finding all busy waits its turn",
        env="FASTREDIS_REDIS_MAX_CONNECTIONS",
        setting="redis_max_connections",
        metavar="N",
    ),
    Option(
        "--max-header-size",
        SIZE,
        # 1,000 [sid, id, end] triples with long names fit with room to spare
        256 * 2**10,
        "largest push header (its JSON text)",
        env="FASTREDIS_MAX_HEADER_SIZE",
        setting="max_header_size",
        metavar="BYTES",
    ),
    Option(
        "--max-read-bytes",
        SIZE,
        16 * 2**20,
        "about the most one Redis reply of a read may hold, for every face and the "
        "shared reads (Redis bounds reads by entries only); a REST GET cut short by it "
        "says more-entries: 1",
        env="FASTREDIS_MAX_READ_BYTES",
        setting="max_read_bytes",
        metavar="BYTES",
    ),
    Option(
        "--drain-seconds",
        WINDOW,
        5.0,
        "on SIGTERM: pushes get their acks, then pulls are closed with 1012 and a retry "
        "hint, spread over this many seconds",
        env="FASTREDIS_DRAIN_SECONDS",
        setting="drain_seconds",
        metavar="SECONDS",
    ),
    Option(
        "--cors-origin",
        TEXT,
        (),
        "allow this browser origin ('*': any); websocket handshakes from other origins "
        "are refused too",
        env="FASTREDIS_CORS_ORIGINS",
        setting="cors_origins",
        many=True,
        metavar="ORIGIN",
    ),
    Option(
        "--api-key",
        TEXT,
        (),
        "a token granting full access. With an API key or a JWT option set, every "
        "endpoint but the health checks needs a token",
        env="FASTREDIS_API_KEYS",
        setting="api_keys",
        many=True,
        metavar="KEY",
    ),
    Option(
        "--jwt-secret",
        TEXT,
        None,
        "accept HS256 JWTs signed with SECRET, scoped by their `streams` claim (the "
        "environment variable is safer: command lines are visible to other users)",
        env="FASTREDIS_JWT_SECRET",
        setting="jwt_secret",
        metavar="SECRET",
    ),
    Option(
        "--jwt-public-key",
        FILE,
        None,
        "accept RS256/ES256 JWTs verified with this PEM public key",
        env="FASTREDIS_JWT_PUBLIC_KEY",
        setting="jwt_public_key",
        metavar="FILE",
    ),
    Option(
        "--producer-ttl",
        SECONDS,
        3600.0,
        "how long a producer's count (producer= pushes) is kept after its last write",
        env="FASTREDIS_PRODUCER_TTL",
        setting="producer_ttl",
        metavar="SECONDS",
    ),
    Option(
        "--offsets",
        TEXT,
        "start",
        "what pull headers and REST GETs give as each entry's offset by default: start "
        "(the protocol specification) or end (for clients of the Redis Streamer protocol "
        "that read end offsets and x-offsets / x-last-entry-id); the offsets query "
        "parameter picks per request",
        env="FASTREDIS_OFFSETS",
        setting="offsets",
        choices=("start", "end"),
    ),
    Option(
        "--splice-pulls",
        TEXT,
        "on",
        "on: a pull catching up on one stream, one entry per frame, moves payloads from "
        "Redis to its socket by splice(2) in a thread of its own, never copying them "
        "into the server (Linux, Redis by a plain socket); off: every pull reads "
        "through the hub",
        env="FASTREDIS_SPLICE_PULLS",
        setting="splice_pulls",
        choices=("on", "off"),
    ),
    Option(
        "--ssl-certfile",
        FILE,
        None,
        "serve https:// and wss:// with this PEM certificate (chain); its key too, "
        "unless --ssl-keyfile",
        env="FASTREDIS_SSL_CERTFILE",
        setting="ssl_certfile",
        metavar="FILE",
    ),
    Option(
        "--ssl-keyfile",
        FILE,
        None,
        "the PEM private key of --ssl-certfile",
        env="FASTREDIS_SSL_KEYFILE",
        setting="ssl_keyfile",
        metavar="FILE",
    ),
    Option(
        "--forwarded-allow-ips",
        ADDRESSES,
        ("127.0.0.1",),
        "the reverse proxies believed ('*': any): from them X-Forwarded-For, "
        "X-Forwarded-Proto and X-Forwarded-Host give the client's address, the scheme and "
        "the host the browser used (for the same-origin check); others' are ignored",
        env="FASTREDIS_FORWARDED_ALLOW_IPS",
        setting="forwarded_allow_ips",
        metavar="IPS",
    ),
    Option(
        "--root-path",
        ROOT_PATH,
        "",
        "the sub-path a reverse proxy serves the server at, e.g. /fastredis (the proxy "
        "strips it before forwarding); the pages' links and websocket URLs start with it",
        env="FASTREDIS_ROOT_PATH",
        setting="root_path",
        metavar="PATH",
    ),
    Option(
        "--log-level",
        TEXT,
        "info",
        "uvicorn's log level",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
    ),
)


def option(flag: str) -> Option:
    """The option with this flag (KeyError if there is none)."""
    for opt in OPTIONS:
        if opt.flag == flag:
            return opt
    raise KeyError(flag)


def _argparse_type(kind: Kind) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return kind.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = kind.name  # argparse names the type in some messages
    return convert


def _help(opt: Option) -> str:
    where = f"; or {opt.env}" + (", comma-separated" if opt.many else "") if opt.env else ""
    again = "repeatable; " if opt.many else ""
    return f"{opt.help} ({again}default: {opt.shown_default()}{where})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to `parser`. An option read from the environment defaults to
    None there, so `Settings.from_env` can tell "not given" from a value."""
    for opt in OPTIONS:
        fallback = None if opt.env or opt.setting else opt.default
        extra: dict[str, Any] = {"default": fallback, "help": _help(opt)}
        if opt.kind is SWITCH:
            parser.add_argument(opt.flag, action="store_true", **extra)
            continue
        if opt.choices:
            extra["choices"] = opt.choices
        else:
            extra["type"] = _argparse_type(opt.kind)
        if opt.many:
            extra["action"] = "append"
        parser.add_argument(opt.flag, metavar=opt.metavar, **extra)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference() -> str:
    """The option reference page (docs/guides/options.md) in Markdown."""
    lines = [
        "# Options of `fastredis serve`",
        "",
        "<!-- generated from fastredis/server/run/options.py by",
        "     python -m fastredis.server.run.options > docs/guides/options.md -->",
        "",
        "A flag wins over its environment variable, which wins over the default.",
        "Options marked *repeatable* may be given several times; their environment",
        "variable takes a comma-separated list. Sizes take 1024-based units: `64MiB`,",
        "`64MB`, `64M`, `512k` and `1048576` are all accepted.",
        "",
        "| option | environment | type | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for opt in OPTIONS:
        flag = f"`{opt.flag}`" + (f" {opt.metavar}" if opt.metavar else "")
        if opt.many:
            flag += " (repeatable)"
        kind = opt.kind.name
        if opt.choices:
            kind = "one of " + ", ".join(f"`{c}`" for c in opt.choices)
        env = f"`{opt.env}`" if opt.env else ""
        shown = opt.shown_default()
        default = shown if shown == "none" else f"`{shown}`"
        cells = [flag, env, kind, default, _cell(opt.help)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
