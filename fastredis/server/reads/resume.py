"""Where a read starts, and whether its reader lost anything (the delivery contract).

Every read face calls these before the client can see its connection as open:

* `Starts` (one per hub, ``hub.starts``): ``await starts.newest(sids)`` gives each stream's
  newest id (what ``$`` means) and ``await starts.states(sids)`` what Redis says of each
  stream (`StreamState`). Callers at the same moment share one round trip: the streams
  asked for in one turn of the event loop are read together (one script, or a pipeline
  of one small script per stream), each stream once. A shared answer is never older
  than the caller's request, so ``$`` fixed from it misses nothing added after the
  socket opened.
* `resolve_start` turns a start (``$``, ``0``, an id) into a cursor from a state.
* `check_resume` answers a reader that comes back with a cursor (and the epochs it saw):
  the `Resume` it gets first, ``recovered`` false when an entry after its cursor is gone
  (trimmed or deleted: XINFO ``max-deleted-entry-id``), the stream is gone, or it was
  made anew (its epoch changed, or its ids are now below the cursor).
* `find_gaps` tells, for one read after a cursor, which streams lost entries between
  the cursor and what the read returned (`Gap`); a face sends each gap before the
  entries that follow it (the pull: a ``{"gap": {...}}`` text frame; SSE: a ``gap``
  event).

The epoch of a stream is the token stored beside it (`fastredis.server.edge.epoch`);
a stream that has none yet (written by others) gets one here, the first time a state
is read (SET NX, in the same script, so every reader agrees on it).

Gaps are found from ``max-deleted-entry-id`` read just before a batch: trimming removes
the oldest entries, so a deletion after the cursor and before the batch's first entry
is a loss. (An entry deleted further ahead with XDEL is reported when a read passes
it. Redis before 7.0 has no ``max-deleted-entry-id``: there a stream whose first entry
is past the cursor is reported as a possible loss.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from fastredis.ids import parse_id
from fastredis.server.edge.epoch import epoch_key, new_epoch
from fastredis.server.reads.cursor import oldest_of_newest

__all__ = [
    "STATE_LUA",
    "Gap",
    "Resume",
    "Starts",
    "StreamState",
    "check_resume",
    "find_gaps",
    "resolve_start",
]

# KEYS[1]: a stream, KEYS[2]: its epoch key (the stream's own key: it has none);
# ARGV[1]: an epoch to store when it has none yet. Reply: {type} when not a stream,
# else {'stream', last-generated-id, first entry id, max-deleted-entry-id, epoch}.
STATE_LUA = r"""
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'stream' then return {t} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {'stream', false, false, false, false}
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then out[2] = info[i + 1]
  elseif k == 'first-entry' then if info[i + 1] then out[3] = info[i + 1][1] end
  elseif k == 'max-deleted-entry-id' then out[4] = info[i + 1]
  end
end
if KEYS[2] ~= KEYS[1] then
  local e = redis.call('GET', KEYS[2])
  if not e then
    redis.call('SET', KEYS[2], ARGV[1])
    e = ARGV[1]
  end
  out[5] = e
end
return out
"""


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class StreamState:
    """What Redis says of one stream: whether it exists, its last generated id, its
    first entry's id (None: empty), the newest id deleted or trimmed (None: Redis < 7),
    and its epoch (None: it cannot have one)."""

    exists: bool
    last_id: str = "0-0"
    first_id: str | None = None
    max_deleted: str | None = None
    epoch: str | None = None

    @classmethod
    def from_reply(cls, reply: Any) -> StreamState:
        if isinstance(reply, Exception):
            raise reply
        if _text(reply[0]) != "stream":
            return cls(False)
        return cls(
            True,
            _text(reply[1]) or "0-0",
            _text(reply[2]),
            _text(reply[3]),
            _text(reply[4]),
        )


class _Shared:
    """Values per stream fetched together: the streams asked for in one turn of the
    loop are fetched in one call, each once however many callers asked for it. (A
    fetch already under way is not joined: it may have been issued before the caller
    asked.)"""

    def __init__(self, fetch: Callable[[list[str]], Awaitable[dict[str, Any]]]) -> None:
        self._fetch = fetch
        self._asked: dict[str, asyncio.Future[Any]] = {}  # to fetch in the next call
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def get(self, sids: Sequence[str]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        futures = {}
        for sid in sids:
            fut = self._asked.get(sid)
            if fut is None:
                if not self._asked:
                    loop.call_soon(lambda: loop.create_task(self._run()))
                fut = self._asked[sid] = loop.create_future()
                fut.add_done_callback(_retrieve)
            futures[sid] = fut
        return {sid: await asyncio.shield(fut) for sid, fut in futures.items()}

    async def _run(self) -> None:
        asked, self._asked = self._asked, {}
        try:
            found = await self._fetch(list(asked))
        except BaseException as exc:
            for fut in asked.values():
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for sid, fut in asked.items():
            if not fut.done():
                fut.set_result(found[sid])


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a caller that left does not leave it unretrieved


class Starts:
    """Each stream's newest id and state, read once for every caller of the same moment
    (see the module docstring). ``hub.starts`` of the server."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._newest = _Shared(self._fetch_newest)
        self._states = _Shared(self._fetch_states)
        self.fetches = 0  # round trips made (for tests and metrics)

    async def newest(self, sids: Sequence[str]) -> dict[str, str]:
        """The id of each stream's newest entry ("0-0": empty or missing)."""
        return await self._newest.get(sids)

    async def states(self, sids: Sequence[str]) -> dict[str, StreamState]:
        """What Redis says of each stream (giving one an epoch when it has none)."""
        return await self._states.get(sids)

    async def _fetch_newest(self, sids: list[str]) -> dict[str, str]:
        self.fetches += 1
        found = await oldest_of_newest(self.client, sids, ["-"] * len(sids), 1)
        return {sid: _text(f) or "0-0" for sid, f in zip(sids, found, strict=True)}

    async def _fetch_states(self, sids: list[str]) -> dict[str, StreamState]:
        self.fetches += 1
        token = new_epoch()
        script = self.client.register_script(STATE_LUA)
        async with self.client.pipeline(transaction=False) as pipe:
            for sid in sids:
                await script(keys=[sid, epoch_key(sid) or sid], args=[token], client=pipe)
            replies = await pipe.execute(raise_on_error=False)
        return {sid: StreamState.from_reply(r) for sid, r in zip(sids, replies, strict=True)}


def _before(a: str, b: str) -> bool:
    return parse_id(a) < parse_id(b)


def resolve_start(start: str, state: StreamState) -> str:
    """The cursor a read of a stream in `state` starts after: ``$`` is the stream's last
    id, ``0`` is "0-0", an id is itself."""
    if start == "$":
        return state.last_id if state.exists else "0-0"
    if start == "0":
        return "0-0"
    return start


def _lost(cursor: str, state: StreamState, epoch: str | None) -> bool:
    """Whether entries after `cursor` may be gone from a stream now in `state`."""
    if not state.exists:
        return cursor != "0-0"
    if epoch is not None and state.epoch is not None and epoch != state.epoch:
        return True  # made anew
    if _before(state.last_id, cursor):
        return True  # its ids are below the cursor: made anew (or another stream's cursor)
    if state.max_deleted is not None:
        return _before(cursor, state.max_deleted)
    first = state.first_id  # Redis < 7.0: a first entry past the cursor may mean a trim
    return cursor != "0-0" and first is not None and _before(cursor, first)


@dataclass(frozen=True)
class Resume:
    """The answer to a reader that resumes: where it reads from (its cursor, one id per
    stream), whether everything after it is still there, each stream's first id and
    epoch (what a client keeps to resume again)."""

    sids: tuple[str, ...]
    cursor: Mapping[str, str]
    recovered: bool
    first_ids: Mapping[str, str | None]
    epochs: Mapping[str, str | None]

    def as_dict(self) -> dict[str, Any]:
        """``{"from", "recovered", "first_id", "epoch"}``: ids and epochs '+'-joined in
        stream order as in ``last_entry_id`` (one stream: null when there is none)."""

        def joined(values: Mapping[str, str | None]) -> str | None:
            if len(self.sids) == 1:
                return values[self.sids[0]]
            return "+".join(values[s] or "" for s in self.sids)

        return {
            "from": "+".join(self.cursor[s] for s in self.sids),
            "recovered": self.recovered,
            "first_id": joined(self.first_ids),
            "epoch": joined(self.epochs),
        }

    def frame(self) -> str:
        """The pull's first text frame: ``{"resume": {...}}``."""
        return json.dumps({"resume": self.as_dict()}, separators=(",", ":"))


def check_resume(
    sids: Sequence[str],
    cursor: Mapping[str, str],
    states: Mapping[str, StreamState],
    epochs: Sequence[str | None] | None = None,
) -> Resume:
    """The `Resume` of a reader at `cursor` (resolved, one id per stream) that saw
    `epochs` (one per stream, None: unknown) on streams now in `states`."""
    seen = list(epochs) if epochs is not None else [None] * len(sids)
    recovered = not any(
        _lost(cursor[sid], states[sid], epoch) for sid, epoch in zip(sids, seen, strict=True)
    )
    return Resume(
        tuple(sids),
        dict(cursor),
        recovered,
        {sid: states[sid].first_id for sid in sids},
        {sid: states[sid].epoch for sid in sids},
    )


@dataclass(frozen=True)
class Gap:
    """Entries of `sid` after `after` (the reader's cursor) are gone: trimmed or deleted
    up to `deleted` (None: unknown), or the stream was made anew (`epoch` is its new
    one). `next` is the first entry the reader gets after the gap (None: none yet)."""

    sid: str
    after: str
    next: str | None
    deleted: str | None
    epoch: str | None
    recreated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "from": self.after,
            "to": self.deleted,
            "next": self.next,
            "epoch": self.epoch,
            "recreated": self.recreated,
        }

    def frame(self) -> str:
        """The pull's text frame sent before the entries after the gap."""
        return json.dumps({"gap": self.as_dict()}, separators=(",", ":"))


def find_gaps(
    cursor: Mapping[str, str],
    states: Mapping[str, StreamState],
    firsts: Mapping[str, str],
    epochs: Mapping[str, str | None],
) -> list[Gap]:
    """The gaps of one read after `cursor`, from the `states` read just before it;
    `firsts`: the first id the read returned per stream (absent: none); `epochs`: the
    epoch the reader knows per stream (updated by the caller from the gaps)."""
    gaps = []
    for sid, after in cursor.items():
        state = states[sid]
        nxt = firsts.get(sid)
        known = epochs.get(sid)
        if known is not None and state.epoch is not None and known != state.epoch:
            gaps.append(Gap(sid, after, nxt, state.max_deleted, state.epoch, recreated=True))
            continue
        deleted = state.max_deleted
        if deleted is None or not state.exists:
            continue
        if _before(after, deleted) and (nxt is None or _before(deleted, nxt)):
            gaps.append(Gap(sid, after, nxt, deleted, state.epoch))
    return gaps
