"""What the reconnecting client sockets share: which failures are worth a retry, the
full-jitter backoff, the pull cursor that resumes from the last id seen, the gap event,
and the producer's unacknowledged messages.

A pull with ``reconnect=True`` resumes after the last entry it yielded, on the next
server of its list, with ``resume=1``; the server's ``{"resume": ...}`` and ``{"gap":
...}`` objects become `Gap` events when entries were lost (trimmed, deleted, the stream
recreated). A server that does not know ``resume=`` is asked again without it; a
stream the pull had seen nothing of yet (opened at ``$``) then gives a `Gap` saying
entries may have been missed, since nothing could say otherwise.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from fastredis.client.errors import ClientError, ServerClosed, ServerUnreachable

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "REDIS_DOWN_MAX",
    "Backoff",
    "Gap",
    "ProducerLog",
    "PullCursor",
    "backoff_delay",
    "redis_down",
    "retry_hint",
    "retryable",
]

BACKOFF_FIRST = 0.5  # seconds: the cap of the first wait
BACKOFF_MAX = 20.0  # seconds: the cap of every later wait
# seconds: the cap while the servers answer but their Redis does not (1011): they are up,
# so a client comes back within this of Redis, at about one try a second per client
REDIS_DOWN_MAX = 2.0
CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_TRY_LATER = 1011, 1012, 1013
_HINT = re.compile(r"retry in (\d+) ms")
# going away, lost, server error (Redis down), restarting, try later
RETRY_CODES = frozenset({1001, 1006, 1011, 1012, 1013})


class Gap(NamedTuple):
    """Entries of `sid` after `after` may be lost (`first`: the first one still there,
    when known); yielded by a reconnecting pull in place of silence."""

    sid: str
    after: str | None
    first: str | None
    reason: str


def backoff_delay(attempt: int, cap: float = BACKOFF_MAX) -> float:
    """Full jitter: uniform in [0, min(cap, BACKOFF_FIRST * 2**attempt)]."""
    return random.uniform(0, min(cap, BACKOFF_FIRST * 2 ** min(attempt, 16)))


def retry_hint(exc: BaseException) -> float | None:
    """The seconds a server restarting (1012, "retry in N ms") asked to wait."""
    if isinstance(exc, ServerClosed) and exc.code == CLOSE_RESTART:
        match = _HINT.search(exc.reason)
        if match:
            return min(BACKOFF_MAX, int(match[1]) / 1000)
    return None


def redis_down(exc: BaseException) -> bool:
    """The server is up but its Redis is not (1011), or is loading its data (1013 with
    "loading"; not 1013 for a server out of connections, which wants the longer wait)."""
    if not isinstance(exc, ServerClosed):
        return False
    return exc.code == CLOSE_INTERNAL or (exc.code == CLOSE_TRY_LATER and "loading" in exc.reason)


class Backoff:
    """How long a reconnecting socket waits before its next try, over `servers` servers.

    A round tries each server once, and the full-jitter cap (0.5 s, doubled up to 20 s)
    grows only once a whole round failed: a server that goes away sends its clients to
    the next one within 0.5 s, however many faults came before. A server that answered
    (a socket opened and its first frame read) starts afresh. When the round is done:
    a server restarting (1012) is tried again after its retry hint, and while Redis is
    unavailable or loading (`redis_down`: the servers are up) the cap stays at
    `REDIS_DOWN_MAX`.
    """

    def __init__(self, servers: int) -> None:
        self.servers = servers
        self.rounds = 0  # whole rounds failed since a server last answered
        self.tried = 0  # servers that failed in this round

    def answered(self) -> None:
        self.rounds = self.tried = 0

    def failed(self, exc: BaseException) -> float:
        """The socket failed with `exc` (retryable): seconds until the next server's."""
        cap = REDIS_DOWN_MAX if redis_down(exc) else BACKOFF_MAX
        delay = backoff_delay(self.rounds, cap)
        self.tried += 1
        if self.tried < self.servers:
            return delay  # a server of the list not tried yet in this round
        self.tried = 0
        hint = retry_hint(exc)
        if hint is not None:  # the server said when: the next round is no longer
            return hint
        self.rounds += 1
        return delay


def retryable(exc: BaseException) -> bool:
    """True for a failure a later attempt may not meet: no server, a lost connection,
    a server going away or restarting, Redis unavailable, busy."""
    if isinstance(exc, ServerUnreachable):
        return True
    if isinstance(exc, ServerClosed):
        return exc.code in RETRY_CODES
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, ClientError)


def unknown_resume(exc: BaseException) -> bool:
    """The server refused ``resume=`` (it predates it)."""
    return isinstance(exc, ServerClosed) and "'resume'" in exc.reason


class PullCursor:
    """Where a pull of the streams `sids` resumes: after the last id seen of each."""

    def __init__(self, sids: Sequence[str], start: str | None) -> None:
        self.sids = list(sids)
        parts = (start or "$").replace(" ", "+").split("+")
        self.starts = parts * len(self.sids) if len(parts) == 1 else parts
        self.last: dict[str, str] = {}

    def seen(self, entries: Sequence[tuple[str, str, Any]]) -> None:
        for sid, eid, _data in entries:
            self.last[sid] = eid

    def param(self) -> str:
        """``last_entry_id`` for the next socket."""
        return "+".join(
            self.last.get(s, start) for s, start in zip(self.sids, self.starts, strict=False)
        )

    def blind(self) -> list[str]:
        """Streams opened at ``$`` of which nothing was seen: a plain reconnect may miss
        what was added to them meanwhile."""
        return [
            s
            for s, st in zip(self.sids, self.starts, strict=False)
            if st == "$" and s not in self.last
        ]

    def frame(self, text: str) -> Gap | None:
        """A JSON object frame of ``resume=1``: a Gap when entries were lost, else None
        (the cursor takes the resolved start)."""
        obj = json.loads(text)
        if "gap" in obj:
            info = obj["gap"] if isinstance(obj["gap"], dict) else {}
            sid = str(info.get("sid") or info.get("stream") or self.sids[0])
            return Gap(
                sid,
                info.get("from") or self.last.get(sid),
                info.get("first_id"),
                str(info.get("reason") or "entries were trimmed before they were read"),
            )
        info = obj.get("resume")
        if not isinstance(info, dict):
            return None
        sid = str(info.get("sid") or info.get("stream") or self.sids[0])
        start = info.get("from")
        if start and len(self.sids) == 1 and sid not in self.last and "$" not in str(start):
            self.last[sid] = str(start)
        if info.get("recovered", True) is False:
            reason = "entries after the cursor are gone (trimmed, deleted or recreated)"
            return Gap(sid, start, info.get("first_id"), reason)
        return None


class Pending:
    """One producer message not yet acknowledged; `ids` once it is."""

    __slots__ = ("header", "ids", "payload")

    def __init__(self, header: str, payload: Any) -> None:
        self.header, self.payload = header, payload
        self.ids: list[str] | None = None


class ProducerLog:
    """A producer's messages not yet acknowledged, and what the server said it has."""

    def __init__(self, producer: str) -> None:
        if not isinstance(producer, str) or not producer:
            raise ValueError("a producer id must be a non-empty string")
        self.producer = producer
        self.committed = 0  # of this producer's messages, as far as we know
        self.unacked: list[Pending] = []  # messages committed+1, committed+2, ...
        self.synced = False  # a hello was read: `committed` is the server's count

    def hello(self, text: str | bytes) -> None:
        """Take a new socket's first frame: the unacked messages the server committed
        already are done (with their ids when it still has them); the rest are resent."""
        obj = json.loads(text)
        if not isinstance(obj, dict) or obj.get("producer") != self.producer:
            raise ClientError(f"expected the producer hello, got {str(text)[:200]!r}")
        server = int(obj["committed"])
        if not self.synced:  # the first socket: every message queued is new
            self.committed, self.synced = server, True
            return
        recent = {int(k): v for k, v in (obj.get("recent") or {}).items()}
        done = max(0, min(server - self.committed, len(self.unacked)))
        for k, message in enumerate(self.unacked[:done]):
            message.ids = recent.get(self.committed + 1 + k, [])
        del self.unacked[:done]
        self.committed = server

    def acked(self, ids: list[str]) -> None:
        """The ack of the oldest unacked message."""
        message = self.unacked.pop(0)
        message.ids = ids
        self.committed += 1
