"""What the Redis Streamer protocol accepts: stream ids, entry ids and query parameters.

Every rejection is a `BadInput` that carries both the websocket close code
and the HTTP status to answer with, and a reason that names the problem. (Not the
core reader's `fastredis._resp.ProtocolError`, which is about bytes from Redis.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fastredis.ids import format_id, parse_id
from fastredis.redis_io.producers import check_producer_id
from fastredis.server.edge.epoch import EPOCH_PREFIX, is_epoch_key
from fastredis.server.writes.meta import META_PREFIX, is_meta_key

__all__ = [
    "CLOSE_INTERNAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_LATER",
    "CLOSE_UNSUPPORTED",
    "BadInput",
    "SSEOptions",
    "close_reason",
    "end_offsets",
    "parse_query",
    "parse_sids",
    "parse_sse_query",
]

# Websocket close codes (RFC 6455, section 7.4.1).
CLOSE_UNSUPPORTED = 1003  # text where binary was expected, or the reverse
CLOSE_INVALID_DATA = 1007  # broken JSON, offsets that do not fit the payload
CLOSE_POLICY = 1008  # bad query parameters or stream ids, Redis refused the write
CLOSE_TOO_BIG = 1009  # message over max_message_size
CLOSE_INTERNAL = 1011  # Redis unreachable or another server-side failure
CLOSE_TRY_LATER = 1013  # the server is busy (Redis out of memory, loading): retry later

_CLOSE_REASON_BYTES = 123  # a close frame's reason is at most 123 bytes of UTF-8


class BadInput(Exception):
    """A request the server refuses: close with `code` / answer with `status`."""

    def __init__(self, reason: str, code: int = CLOSE_POLICY, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status


def close_reason(text: str) -> str:
    """`text` cut to fit a websocket close frame (123 bytes of UTF-8)."""
    data = text.encode("utf-8")
    if len(data) <= _CLOSE_REASON_BYTES:
        return text
    return data[: _CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def parse_sids(path_sid: str) -> list[str]:
    """`a+b` -> ["a", "b"]: several streams, in order, without repeats."""
    sids = path_sid.split("+")
    if any(not s for s in sids):
        raise BadInput(f"bad stream id {path_sid!r}: empty name between '+' signs")
    if len(set(sids)) != len(sids):
        raise BadInput(f"bad stream id {path_sid!r}: a stream is named twice")
    for sid in sids:
        if is_meta_key(sid):
            raise BadInput(f"bad stream id {sid!r}: {META_PREFIX}... keys hold metadata")
        if is_epoch_key(sid):
            raise BadInput(f"bad stream id {sid!r}: {EPOCH_PREFIX}... keys hold stream epochs")
    return sids


# -- query parameters ----------------------------------------------------------------


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadInput(f"query parameter {name}={raw!r} is not a boolean (use 1 or 0)")


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"query parameter {name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise BadInput(f"query parameter {name}={value} is out of range [{low}, {high}]")
    return value


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"query parameter {name}={raw!r} is not a number") from None
    if not low <= value <= high:  # also rejects nan
        raise BadInput(f"query parameter {name}={value} is out of range [{low}, {high}]")
    return value


MAX_COUNT = 100_000
MAX_BLOCK_MS = 2**31 - 1
_SPECIAL_IDS = {"$", "0", "-", "*"}


def _last_entry_ids(raw: str, n_streams: int) -> list[str]:
    """One start per stream: "$", "0" ("-" is the same), "*" or an id; either one for
    all streams or one per stream joined by '+' (a '+' decoded as a space is fine)."""
    parts = raw.replace(" ", "+").split("+") if raw else [""]
    if len(parts) == 1:
        parts = parts * n_streams
    elif len(parts) != n_streams:
        raise BadInput(
            f"query parameter last_entry_id={raw!r} names {len(parts)} ids for "
            f"{n_streams} streams (give one, or one per stream joined by '+')"
        )
    out = []
    for part in parts:
        if part in _SPECIAL_IDS:
            out.append("0" if part == "-" else part)
            continue
        try:
            ms, seq = parse_id(part)
        except ValueError as exc:
            raise BadInput(f"query parameter last_entry_id: {exc} (or $, 0, *)") from None
        out.append(format_id(ms, seq))
    return out


@dataclass
class ReadOptions:
    """Query parameters of a pull (websocket) or GET (REST)."""

    last_entry_ids: list[str]
    count: int = 1
    block: int | None = None  # ms; None: do not block (REST); 0: forever
    latest: bool = False
    max_fps: float = 0.0
    header: bool = True
    ack: bool = False
    resume: bool = False
    epochs: list[str | None] | None = None  # the epochs the client saw (resume)
    end_offsets: bool = False  # offsets=end: [sid, id, end] headers (the deployed clients')


@dataclass
class PushOptions:
    header: bool = True
    ack: bool = False
    producer: str | None = None  # exactly-once pushes (acks implied)


PULL_PARAMS = frozenset(
    {
        "last_entry_id", "count", "block", "latest", "max_fps", "header", "ack", "offsets",
        "resume", "epoch",
    }
)  # fmt: skip
GET_PARAMS = frozenset({"last_entry_id", "count", "block", "latest", "offsets"})
OFFSET_FORMS = ("start", "end")
PUSH_PARAMS = frozenset({"header", "ack", "producer"})
POST_PARAMS: frozenset[str] = frozenset()
FOXGLOVE_PARAMS = frozenset({"latest", "max_fps"})


def _producer(raw: str, ack: str | None) -> str:
    try:
        producer = check_producer_id(raw)
    except ValueError as exc:
        raise BadInput(f"query parameter producer: {exc}") from None
    if ack is not None and not _bool("ack", ack):
        raise BadInput("producer= needs its acks: leave out ack=0 (every message is acked)")
    return producer


def _check_names(query: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    for name, value in query:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadInput(f"unknown query parameter {name!r} (known: {known})")
        if name in seen:
            raise BadInput(f"query parameter {name!r} given twice")
        seen[name] = value
    return seen


def parse_query(
    kind: str,
    query: Iterable[tuple[str, str]],
    n_streams: int,
    default_block: int | None = None,
    default_offsets: str = "start",
) -> ReadOptions | PushOptions:
    """Validate the query of a `kind` ("pull", "get", "push", "post", "foxglove") request."""
    if kind == "push":
        q = _check_names(query, PUSH_PARAMS)
        push = PushOptions(
            header=_bool("header", q.get("header", "1")), ack=_bool("ack", q.get("ack", "0"))
        )
        if "producer" in q:
            push.producer = _producer(q["producer"], q.get("ack"))
            push.ack = True
        return push
    if kind == "foxglove":  # newest first; latest unless latest=0
        q = _check_names(query, FOXGLOVE_PARAMS)
        opts = ReadOptions(["*"] * n_streams, latest=_bool("latest", q.get("latest", "1")))
        if "max_fps" in q:
            opts.max_fps = _float("max_fps", q["max_fps"], 0.0, 1e6)
        return opts
    if kind == "post":
        _check_names(query, POST_PARAMS)
        return PushOptions(header=False, ack=True)
    allowed = PULL_PARAMS if kind == "pull" else GET_PARAMS
    q = _check_names(query, allowed)
    default_start = "$" if kind == "pull" else "*"
    opts = ReadOptions(
        last_entry_ids=_last_entry_ids(q.get("last_entry_id", default_start), n_streams)
    )
    if "count" in q:
        opts.count = _int("count", q["count"], 1, MAX_COUNT)
    opts.block = default_block
    if "block" in q:
        opts.block = _int("block", q["block"], 0, MAX_BLOCK_MS)
    if "latest" in q:
        opts.latest = _bool("latest", q["latest"])
    if "max_fps" in q:
        opts.max_fps = _float("max_fps", q["max_fps"], 0.0, 1e6)
    if "header" in q:
        opts.header = _bool("header", q["header"])
    if "ack" in q:
        opts.ack = _bool("ack", q["ack"])
    if "resume" in q:
        opts.resume = _bool("resume", q["resume"])
    if "epoch" in q:
        if not opts.resume:
            raise BadInput("query parameter epoch is for resume=1 pulls")
        opts.epochs = _epochs(q["epoch"], n_streams)
    offsets = q.get("offsets", default_offsets)
    if offsets not in OFFSET_FORMS:
        raise BadInput(f"query parameter offsets={offsets!r} is not one of: start, end")
    opts.end_offsets = offsets == "end"
    return opts


def end_offsets(header: str, total: int) -> str:
    """A pull header ``[[sid, id, start], ...]`` as ``[[sid, id, end], ...]`` (each entry's
    payload ends where the next starts; the last at `total`, the payload's size): what
    Redis Streamer's own server and clients put there."""
    rows = json.loads(header)
    if not rows:
        return header
    ends = [row[2] for row in rows[1:]] + [total]
    return json.dumps([[sid, eid, end] for (sid, eid, _), end in zip(rows, ends, strict=True)])


_EPOCH = re.compile(r"[0-9A-Za-z_-]{1,64}")


def _epochs(raw: str, n_streams: int) -> list[str | None]:
    """The epochs a resuming client saw: one per stream joined by '+' (empty: none)."""
    parts = raw.replace(" ", "+").split("+")
    if len(parts) == 1:
        parts = parts * n_streams
    if len(parts) != n_streams:
        raise BadInput(
            f"query parameter epoch names {len(parts)} epochs for {n_streams} streams "
            "(give one, or one per stream joined by '+')"
        )
    for part in parts:
        if part and not _EPOCH.fullmatch(part):
            raise BadInput(f"query parameter epoch: {part[:80]!r} is not an epoch token")
    return [part or None for part in parts]


def query_items(query_params: Mapping[str, str]) -> list[tuple[str, str]]:
    """(name, value) pairs of a mapping; of Starlette's QueryParams (a multi-dict), every
    value of a repeated name."""
    items = getattr(query_params, "multi_items", None)
    if items is not None:
        return list(items())
    return list(query_params.items())


# -- Server-Sent Events ------------------------------------------------------------

SSE_PARAMS = frozenset({"last_entry_id", "lastEventID", "latest", "max_fps", "data"})
SSE_DATA_FORMS = ("text", "base64")


@dataclass
class SSEOptions:
    """Query parameters (and ``Last-Event-ID``) of ``GET /sse/{sid}``."""

    last_entry_ids: list[str]
    latest: bool = False
    max_fps: float = 0.0
    base64: bool = False  # data=base64: every payload base64; else UTF-8 text


def parse_sse_query(
    query: Iterable[tuple[str, str]], n_streams: int, last_event_id: str | None
) -> SSEOptions:
    """Validate an SSE request. Where it starts, first found: the ``Last-Event-ID``
    header (an EventSource reconnecting), ``lastEventID``, ``last_entry_id``, else
    ``$`` (entries added from now on). An event id is the '+'-joined cursor list."""
    q = _check_names(query, SSE_PARAMS)
    start = last_event_id or q.get("lastEventID") or q.get("last_entry_id") or "$"
    opts = SSEOptions(last_entry_ids=_last_entry_ids(start, n_streams))
    if "latest" in q:
        opts.latest = _bool("latest", q["latest"])
    if "max_fps" in q:
        opts.max_fps = _float("max_fps", q["max_fps"], 0.0, 1e6)
    form = q.get("data", "text")
    if form not in SSE_DATA_FORMS:
        raise BadInput(f"query parameter data={form!r} is not one of: text, base64")
    opts.base64 = form == "base64"
    return opts
