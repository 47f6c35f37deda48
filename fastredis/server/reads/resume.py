"""Where a read starts, and whether its reader lost anything (the delivery contract).

Every read face calls these before the client can see its connection as open:

* `Starts` (one per hub, ``hub.starts``): ``await starts.newest(sids)`` gives each stream's
  newest id (what ``$`` means) and ``await starts.states(sids)`` what Redis says of each
  stream (`StreamState`). Callers at the same moment share one round trip: the streams
  asked for while a read is under way are read together by the next one (one script,
  or a pipeline of one small script per stream), each stream once. A shared answer is never older
  than the caller's request, so ``$`` fixed from it misses nothing added after the
  socket opened.
* `resolve_start` turns a start (``$``, ``0``, an id) into a cursor from a state.
* `lost_reason` says why entries after a cursor may be gone (None: none are);
  `check_resume` answers a reader that comes back with a cursor (and the epochs it saw):
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

Losses are found from what Redis says just before a read (one small script per
stream, `STATE_LUA`, sent in the same pipeline as the read where Redis is not a
cluster, so that no trim comes between them): trims remove the oldest entries, so
entries after a cursor may have been trimmed only when the cursor's own entry is gone
and the stream's first entry is past it (`StreamState.trimmed_after`; when only the
cursor's entry itself was trimmed this cannot be told apart, and is reported as a
possible loss); XDEL after the cursor shows in ``max-deleted-entry-id`` (Redis >= 7.0),
reported when a read passes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastredis.ids import parse_id, previous_id
from fastredis.redis_io import AnyAsyncRedis, aread_each
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
    "lost_reason",
    "resolve_start",
    "state_commands",
    "states_of",
]

# KEYS[1]: a stream, KEYS[2]: its epoch key (the stream's own key: it has none);
# ARGV[1]: an epoch to store when it has none yet, ARGV[2]: a cursor ("": none).
# A missing stream's epoch is removed (see `fastredis.server.edge.epoch`).
# Reply: {type} when not a stream, else {'stream', last-generated-id, first entry id,
# max-deleted-entry-id, epoch, length, entries-added, whether the cursor's entry is
# there}.
STATE_LUA = r"""
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' and KEYS[2] ~= KEYS[1] then redis.call('DEL', KEYS[2]) end
if t ~= 'stream' then return {t} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local out = {'stream', false, false, false, false, 0, false, 0}
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then out[2] = info[i + 1]
  elseif k == 'first-entry' then if info[i + 1] then out[3] = info[i + 1][1] end
  elseif k == 'max-deleted-entry-id' then out[4] = info[i + 1]
  elseif k == 'length' then out[6] = info[i + 1]
  elseif k == 'entries-added' then out[7] = info[i + 1]
  end
end
if ARGV[2] ~= '' and ARGV[2] ~= '0-0' then
  if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) > 0 then out[8] = 1 end
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
    first entry's id (None: empty), the newest id deleted by XDEL (trims do not count;
    None: Redis < 7), its epoch (None: it cannot have one), its length, the entries
    ever added (None: Redis < 7), and whether the entry at the cursor asked about is
    still there."""

    exists: bool
    last_id: str = "0-0"
    first_id: str | None = None
    max_deleted: str | None = None
    epoch: str | None = None
    length: int = 0
    added: int | None = None
    cursor_there: bool = False

    @classmethod
    def from_reply(cls, reply: Any) -> StreamState:
        if isinstance(reply, Exception):
            raise reply
        if _text(reply[0]) != "stream":
            return cls(False)
        added = reply[6]
        return cls(
            True,
            _text(reply[1]) or "0-0",
            _text(reply[2]),
            _text(reply[3]),
            _text(reply[4]),
            int(reply[5]),
            None if added is None or added is False else int(added),
            bool(reply[7]),
        )

    def trimmed_after(self, cursor: str) -> bool:
        """Whether entries after `cursor` may have been trimmed: trims remove the oldest
        entries, so none was when the cursor's entry is still there, or nothing was
        ever removed, or the stream's first entry is at or before the cursor. (When
        only the cursor's own entry was trimmed this says yes: it cannot be told.)"""
        if not self.exists or self.cursor_there:
            return False
        if self.added is not None and self.added == self.length:
            return False
        first = self.first_id
        if first is None:  # all removed: lost if any came after the cursor
            return _before(cursor, self.last_id)
        return _before(cursor, first)


class _Shared:
    """Values per key fetched together: one fetch at a time; the keys asked for while
    one runs are fetched together by the next, each once however many callers asked.
    (A fetch under way is not joined: it may have been issued before the caller
    asked.)"""

    def __init__(self, fetch: Callable[[list[Any]], Awaitable[dict[Any, Any]]]) -> None:
        self._fetch = fetch
        self._asked: dict[Any, asyncio.Future[Any]] = {}  # to fetch in the next call
        self._runner: asyncio.Task[None] | None = None

    async def get(self, keys: Sequence[Any]) -> dict[Any, Any]:
        loop = asyncio.get_running_loop()
        futures = {}
        for key in keys:
            fut = self._asked.get(key)
            if fut is None:
                fut = self._asked[key] = loop.create_future()
                fut.add_done_callback(_retrieve)
            futures[key] = fut
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        return {key: await asyncio.shield(fut) for key, fut in futures.items()}

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the callers of this turn of the loop ask first
        while self._asked:
            asked, self._asked = self._asked, {}
            try:
                found = await self._fetch(list(asked))
            except Exception as exc:
                for fut in asked.values():
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except BaseException:
                for fut in asked.values():
                    fut.cancel()
                raise
            for key, fut in asked.items():
                if not fut.done():
                    fut.set_result(found[key])


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a caller that left does not leave it unretrieved


class Starts:
    """Each stream's newest id and state, read once for every caller of the same moment
    (see the module docstring). ``hub.starts`` of the server."""

    def __init__(self, client: AnyAsyncRedis) -> None:
        self.client = client
        self._newest = _Shared(self._fetch_newest)
        self._states = _Shared(self._fetch_states)
        self.fetches = 0  # round trips made (for tests and metrics)

    async def newest(self, sids: Sequence[str]) -> dict[str, str]:
        """The id of each stream's newest entry ("0-0": empty or missing)."""
        return await self._newest.get(sids)

    async def states(
        self, sids: Sequence[str], cursor: Mapping[str, str] | None = None
    ) -> dict[str, StreamState]:
        """What Redis says of each stream (giving one an epoch when it has none), and
        whether the entry at its `cursor` is there."""
        keys = [(sid, cursor.get(sid, "") if cursor else "") for sid in sids]
        found = await self._states.get(keys)
        return {sid: found[key] for sid, key in zip(sids, keys, strict=True)}

    async def _fetch_newest(self, sids: list[str]) -> dict[str, str]:
        self.fetches += 1
        found = await oldest_of_newest(self.client, sids, ["-"] * len(sids), 1)
        return {sid: _text(f) or "0-0" for sid, f in zip(sids, found, strict=True)}

    async def _fetch_states(self, keys: list[tuple[str, str]]) -> dict[Any, StreamState]:
        self.fetches += 1
        token = new_epoch()
        # EVAL, not EVALSHA: nothing loads the script on each node of a cluster
        commands = [
            (sid, ["EVAL", STATE_LUA, 2, sid, epoch_key(sid) or sid, token, cursor])
            for sid, cursor in keys
        ]
        replies = await aread_each(self.client, commands)
        return {key: StreamState.from_reply(r) for key, r in zip(keys, replies, strict=True)}


def state_commands(sids: Sequence[str], cursor: Mapping[str, str]) -> list[list[Any]]:
    """The commands that read what Redis says of `sids` (with the entry at each one's
    `cursor`): to send in one pipeline just before a read, so nothing (a trim) comes
    between them (`fastredis.server.reads.cursor.StreamCursor.read`'s `prelude`)."""
    token = new_epoch()
    return [
        ["EVAL", STATE_LUA, 2, sid, epoch_key(sid) or sid, token, cursor.get(sid, "")]
        for sid in sids
    ]


def states_of(sids: Sequence[str], replies: Sequence[Any]) -> dict[str, StreamState]:
    """The replies of `state_commands` as a state per stream."""
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


def lost_reason(cursor: str, state: StreamState, epoch: str | None = None) -> str | None:
    """Why entries after `cursor` may be gone from a stream now in `state` (`epoch`:
    the one the reader saw, None: unknown), in a user's words; None: nothing is."""
    if not state.exists:
        return None if cursor == "0-0" else "the stream no longer exists"
    if epoch is not None and state.epoch is not None and epoch != state.epoch:
        return "the stream was made anew (its epoch changed)"
    if _before(state.last_id, cursor):
        return "the stream was made anew (its newest id is below the resumed one)"
    if state.max_deleted is not None and _before(cursor, state.max_deleted):
        return f"entries after {cursor} were deleted"
    if state.trimmed_after(cursor):
        where = f"now starts at {state.first_id}" if state.first_id else "is empty"
        return f"entries after {cursor} were trimmed (the stream {where})"
    return None


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
        lost_reason(cursor[sid], states[sid], epoch) is not None
        for sid, epoch in zip(sids, seen, strict=True)
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
    """Entries of `sid` after `after` (the reader's cursor) are gone: the lost ones are
    within (`after`, `to`] (trimmed or deleted), or the stream was made anew
    (`recreated`; `epoch` is its epoch now). `next` is the first entry the reader gets
    after the gap (None: none yet)."""

    sid: str
    after: str
    next: str | None
    to: str | None
    epoch: str | None
    recreated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "from": self.after,
            "to": self.to,
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
    """The gaps of one read after `cursor`, from the `states` read just before it (with
    that cursor); `firsts`: the first id the read returned per stream (absent: none);
    `epochs`: the epoch the reader knows per stream (the caller updates it from the
    gaps)."""
    gaps = []
    for sid, after in cursor.items():
        state = states[sid]
        nxt = firsts.get(sid)
        known = epochs.get(sid)
        if known is not None and state.epoch is not None and known != state.epoch:
            gaps.append(Gap(sid, after, nxt, None, state.epoch, recreated=True))
            continue
        deleted = state.max_deleted
        passed = deleted is not None and (nxt is None or _before(deleted, nxt))
        if passed and _before(after, deleted):  # type: ignore[arg-type]
            gaps.append(Gap(sid, after, nxt, deleted, state.epoch))
            continue
        if state.trimmed_after(after):
            to = previous_id(*parse_id(nxt)) if nxt is not None else state.last_id
            gaps.append(Gap(sid, after, nxt, to, state.epoch))
    return gaps
