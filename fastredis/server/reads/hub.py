"""The shared-read hub: one Redis read per stream set at the tail, shared by every
subscriber (websocket pulls, GraphQL subscriptions, blocking REST GETs, MJPEG).

* A **tail group** exists per streams (and, with ``latest``, per ``count``) with
  subscribers; readers that resume share it with those that do not (while one that
  resumes is in it, each read is preceded by the streams' states and its deliveries
  carry the gaps found, which only readers that resume tell). Its task reads the next
  batch after the group's cursor, over one of a few held connections taken in turns,
  and hands the same `Delivery` to every subscriber of the group; each sends it as
  frames of its own ``count`` (`fastredis.server.reads.delivery`). Every read's reply
  is bounded in bytes (`fastredis.server.reads.sizes`). A subscriber waiting for it
  may have it sent by the group's task (`Subscription.direct`: a pull whose socket
  takes the frame at once), with no hand-off to its own task.
* A subscriber **behind the tail** (``0``, an old id) reads by its own cursor over a small
  shared set of catch-up connections, taking turns (far behind, its next read is under
  way while the last batch is sent); subscribers at the same cursor share that read
  (`fastredis.server.reads.catch_up`). After a read it joins the group at the delivery
  that follows what it read, when the group still has it; when a read comes back empty
  it is at the end of the stream: it joins the group if its cursor equals the group's,
  or waits for the group to reach its cursor if the group is behind. If the group is
  ahead, it reads again, with the streams' states: the group may have read entries
  added since (this read finds them), or what it passed is gone (deleted: the
  subscriber moves past it; the stream made anew below the group's cursor: the group
  moves back, having sent nothing of the new stream). No entry is skipped or repeated.
* The group keeps its recent deliveries (its history), and each subscriber a place in
  it: memory is per group, however many subscribers. With ``latest`` a subscriber takes
  only the newest; otherwise, when it is `QUEUE_LIMIT` deliveries or `QUEUE_BYTES`
  behind, it leaves the group and catches up by its cursor (no loss), so a slow socket
  never slows the others. The history keeps what the slowest member still needs (and
  the newest delivery): a subscriber catching up whose cursor reaches a delivery still
  there joins at it, with no further read.
* An idle group (a read with nothing new for `ACTIVE_BLOCK_MS`) parks: one blocking XREAD
  over every parked group's streams (`fastredis.server.reads.parking`; on a Redis Cluster,
  a non-blocking read of them all, repeated) wakes it, so idle streams, however many,
  cost one connection (on a cluster, one per node while it reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastredis._resp import StreamBatch
from fastredis.ids import EntryId, format_id, parse_id, previous_id
from fastredis.redis_io import AnyAsyncRedis, HeldConnection, is_cluster
from fastredis.server.reads.catch_up import SharedReads
from fastredis.server.reads.cursor import StreamCursor
from fastredis.server.reads.delivery import Delivery, Frame, Ids
from fastredis.server.reads.parking import Parking
from fastredis.server.reads.resume import (
    Gap,
    Resume,
    Starts,
    StreamState,
    check_resume,
    find_gaps,
    resolve_start,
    state_commands,
    states_of,
)
from fastredis.server.reads.sizes import DEFAULT_MAX_READ_BYTES, ByteTurns, EntrySizes
from fastredis.server.run import metrics

__all__ = ["Delivery", "Hub", "Subscription"]

T = TypeVar("T")

# How far (deliveries, and their batches' bytes) a subscriber may be behind its group's
# newest delivery; past either (and at least 1 behind) it catches up by itself. This is
# memory per group, not per subscriber (the group's history is shared): with a smaller
# bound (8 MiB), viewers of 300 KB frames at N=100 fell out in cascades and read Redis
# 45 times per frame (benchmarks/bench_fanout.py).
QUEUE_LIMIT = 64
QUEUE_BYTES = 32 << 20
ACTIVE_BLOCK_MS = 250  # a group's BLOCK before it parks
# A group's tail read asks for up to TAIL_ENTRIES entries per stream, about TAIL_BYTES
# at most (and never more than --max-read-bytes): a round trip per small entry would be
# most of the work, and `count` shapes each subscriber's frames, not the read.
TAIL_ENTRIES = 10_000
TAIL_BYTES = 2 << 20
# A catch-up read (a subscriber behind the tail, one read prefetched while the last is
# sent) asks for about this much, or for its `count` entries when they are more: 2
# entries of 1 MB, not 1 per round trip. A slow subscriber holds two of them at most.
CATCH_UP_BYTES = 2 << 20
CATCH_UP_ENTRIES = 64  # ... and this many entries at least, when a read may read ahead


def _kept_bytes(result: tuple[Delivery, bool]) -> int:
    """What a kept catch-up read holds: its batch, and a copy of the payloads once the
    one frame of several entries is packed."""
    batch = result[0].batch
    return batch.nbytes * (2 if len(batch) > 1 else 1)


def _first_ids(batch: StreamBatch) -> dict[str, str]:
    """The first id of each stream in `batch`."""
    if not len(batch):
        return {}
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in batch.streams]
    if len(names) == 1:
        return {names[0]: format_id(*batch.id_at(0))}
    firsts: dict[str, str] = {}
    for i, index in enumerate(batch.offsets()["entry_stream"].tolist()):
        if names[index] not in firsts:
            firsts[names[index]] = format_id(*batch.id_at(i))
            if len(firsts) == len(names):
                break
    return firsts


async def _states_first(
    hub: Hub, sids: Sequence[str], before: Ids, resume: bool, pipelined: bool = True
) -> tuple[dict[str, StreamState] | None, list[list[Any]] | None]:
    """For a reader that resumes: the commands reading the streams' states, to send
    with its read (states, None on a cluster or not `pipelined`: read first, by
    themselves)."""
    if not resume:
        return None, None
    if hub.cluster or not pipelined:
        return await hub.starts.states(sids, before), None
    return None, state_commands(sids, before)


def _gaps(
    cursor: StreamCursor,
    before: Ids,
    states: dict[str, StreamState] | None,
    batch: StreamBatch,
    epochs: dict[str, str | None],
) -> list[Gap]:
    """What a read from `before` lost (`states`: read just before it; None: not a
    reader that resumes). A stream with nothing left after its lost entries moves its
    cursor past them, so the loss is told once."""
    if states is None:
        return []
    gaps = find_gaps(before, states, _first_ids(batch), epochs)
    for sid, state in states.items():  # an epoch first seen: known from now on
        if epochs.get(sid) is None:
            epochs[sid] = state.epoch
    moved = dict(cursor.ids)
    for gap in gaps:
        if gap.next is None and gap.to is not None and _key(moved, gap.sid) < parse_id(gap.to):
            moved[gap.sid] = gap.to
    if moved != cursor.ids:
        cursor.move_to(moved)
    return gaps


def _key(ids: Ids, sid: str) -> EntryId:
    return parse_id(ids[sid])


def _compare(mine: Ids, group: Ids) -> int:
    """-1: the group is ahead in some stream; 0: equal; 1: the group is behind (only)."""
    result = 0
    for sid, eid in mine.items():
        other = group[sid]
        if eid == other:
            continue
        if _key(mine, sid) < _key(group, sid):
            return -1
        result = 1
    return result


class _Turns:
    """A few held connections, taken in turns (a waiting caller queues; never an error)."""

    def __init__(self, client: AnyAsyncRedis, size: int) -> None:
        self.client = client
        self.size = size
        self._sem = asyncio.Semaphore(size)
        self._free: list[HeldConnection] = []

    async def read(self, command: Callable[[HeldConnection], Awaitable[T]]) -> T:
        """`command` (a read: sending it twice is harmless) on a connection taken in
        turns (`HeldConnection.read_idempotent`: once more on a new connection when one
        that sat idle was closed by a Redis restart)."""
        async with self._sem:
            conn = self._free.pop() if self._free else HeldConnection(self.client)
            clean = False
            try:
                result = await conn.read_idempotent(command)
                clean = True
                return result
            finally:
                if clean:
                    self._free.append(conn)
                else:  # cut off mid-command: its reply may still come
                    await conn.release(broken=True)

    async def close(self) -> None:
        free, self._free = self._free, []
        for conn in free:
            await conn.release()


class Subscription:
    """One subscriber's view of the hub: `async with sub:`, then `await sub.next()`."""

    def __init__(
        self,
        hub: Hub,
        sids: Sequence[str],
        start_ids: Sequence[str],
        count: int,
        latest: bool,
        max_fps: float | None,
        read_ahead: bool,
        via: str = "pull",
        resume: bool = False,
        epochs: Sequence[str | None] | None = None,
        opened_ms: int | None = None,
    ) -> None:
        self.hub = hub
        self.sids = list(sids)
        self.latest = latest
        self.via = via  # who reads (pull, graphql, mjpeg, rest): for the metrics
        self._drop_reason = "max_fps" if max_fps else "latest"
        self._starts = list(start_ids)
        self.count = count
        self.cursor = StreamCursor(hub.client, self.sids, start_ids, count, latest, hub.sizes)
        # its catch-up reads may read more than `count` (a pull; not a REST GET)
        self.read_ahead = read_ahead and not latest
        # resume: its gaps are found (`fastredis.server.reads.resume`); its catch-up
        # reads are shared only with readers that resume
        self.resume = resume
        self._seen_epochs = list(epochs) if epochs is not None else None
        self.epochs: dict[str, str | None] = {}  # per stream, the epoch it reads
        self.resumed: Resume | None = None  # with resume: the answer to its cursor
        self._opened_ms = opened_ms
        # subscribers that differ only in count share a group: count shapes frames
        self.key = (tuple(self.sids), count if latest else 0, latest)
        self._interval = 1.0 / max_fps if max_fps else 0.0
        self._next_at = 0.0
        self._group: _Group | None = None
        self._joined = False  # in the group's subscribers (else pending or catching up)
        self.pos = 0  # joined: the seq of the next delivery to take from the group
        self._left: _Group | None = None  # the group it fell behind, while catching up
        # catching up: the next read, already under way while a batch is being sent
        self._prefetch: asyncio.Task[tuple[Delivery, bool]] | None = None
        self._entered = False
        # when it began (its cursor resolved): it may take another subscriber's
        # catch-up read issued since then (`fastredis.server.reads.catch_up`)
        self._since = 0.0
        self._ids: Ids = {}  # the cursor after the last delivery handed out
        self._wake = asyncio.Event()
        # Set by the reader while it may be sent to at once: a delivery offered while it
        # waits at the tail is sent by the group's task (True: sent; False: not now, the
        # reader is woken to send it), no hand-off to the reader's task per frame.
        self.direct: Callable[[Delivery], bool] | None = None
        self._waiting = False  # in `next`, joined, for the group's next delivery
        self._direct_at = 0.0  # when `direct` last sent (loop time): `next`'s timeout
        self._error: BaseException | None = None
        # resumed at the end of every stream (its states said so): it joins the tail
        # group with no catch-up read, and a group it starts parks before reading
        self._at_end = False
        # an empty read found the group ahead: the next read also reads the streams'
        # states (`_settle`), and notes the group's cursor when it was issued
        self._confirm = False
        self._confirmed: dict[str, StreamState] | None = None
        self._seen: tuple[_Group | None, Ids] = (None, {})

    async def __aenter__(self) -> Subscription:
        """Fix the cursor (`$` is the streams' newest ids now): call it before the client
        can see its connection as open."""
        starts = self.hub.starts
        wanted = [s for s, start in zip(self.sids, self._starts, strict=True) if start == "$"]
        if self.resume:
            given = {
                s: "0-0" if start == "0" else start
                for s, start in zip(self.sids, self._starts, strict=True)
                if start not in ("$", "*")
            }
            states = await starts.states(self.sids, given)
            newest = {s: resolve_start("$", states[s]) for s in wanted}
            await self.cursor.resolve(self._opened(newest))
            self.resumed = check_resume(self.sids, self.cursor.ids, states, self._seen_epochs)
            self._at_end = not self.latest and all(
                resolve_start("$", states[s]) == self.cursor.ids[s] for s in self.sids
            )
            self.epochs = {s: states[s].epoch for s in self.sids}
        else:
            newest = await starts.newest(wanted) if wanted else {}
            await self.cursor.resolve(self._opened(newest))
        self._ids = dict(self.cursor.ids)
        self._since = time.monotonic()
        members = self.hub.members
        members[self.key] = members.get(self.key, 0) + 1
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._leave()
        if self._entered:
            self._entered = False
            members = self.hub.members
            members[self.key] -= 1
            if not members[self.key]:
                del members[self.key]
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.cancel()
            with contextlib.suppress(BaseException):
                await prefetch

    def _opened(self, newest: dict[str, str]) -> dict[str, str]:
        """`newest`, but no later than just before the client's socket opened (when it
        opened before the streams were known: a GraphQL subscription)."""
        if self._opened_ms is None:
            return newest
        limit = previous_id(self._opened_ms, 0)
        return {s: min(i, limit, key=parse_id) for s, i in newest.items()}

    @property
    def joined(self) -> bool:
        """Whether it takes the deliveries of a shared tail read (else it reads by its
        own cursor, or waits for the group to reach it)."""
        return self._joined

    @property
    def group(self) -> _Group | None:
        """The shared tail read it is in or waits for (None: catching up by itself)."""
        return self._group

    async def pace(self) -> None:
        """With `max_fps`: wait until the next frame may go (a subscriber with `latest`
        waits in `next`; others call it before each frame, a delivery may hold several)."""
        if self._interval:
            now = self.hub.loop.time()
            if now < self._next_at:
                await asyncio.sleep(self._next_at - now)
            self._next_at = max(now, self._next_at) + self._interval

    def frames(self, delivery: Delivery, header: bool = True, views: bool = False) -> list[Frame]:
        """The frames this subscriber sends of `delivery` (at most `count` entries per
        stream each; `views`: see `Delivery.frames`)."""
        return delivery.frames(self.count, header, views)

    def moved_to(self, ids: Ids) -> None:
        """Where it is after entries sent past the hub (`fastredis.server.reads.
        splice_pump`), before its first `next`: the reads go on from there."""
        if self._group is not None or self._prefetch is not None:
            raise RuntimeError("moved_to after the subscription began reading")
        self.cursor.move_to(ids)
        self._ids = dict(ids)

    def last_entry_id(self) -> str:
        """Where the subscriber is: a `last_entry_id` query value ('+'-joined)."""
        return "+".join(self._ids[s] for s in self.sids)

    async def next(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery; None when `timeout` seconds pass with nothing (0: do not
        wait beyond one read of what is there)."""
        loop = self.hub.loop
        if self.latest:  # the newest when it is time for the next frame
            await self.pace()
        entered = loop.time()
        while True:
            if self._error is not None:
                raise self._error
            if self._group is None:
                delivery = await self._catch_up(join=timeout != 0)
                if delivery is not None:
                    return self._hand_out(delivery)
                if timeout == 0:
                    return None
                continue
            if self._joined:
                delivery = self._group.take(self.pos)
                if delivery is not None:
                    self.pos += 1
                    return self._hand_out(delivery)
            self._wake.clear()
            if timeout is None:
                await self._wait()
                continue
            # deliveries sent by `direct` meanwhile count as something
            remaining = max(entered, self._direct_at) + timeout - loop.time()
            if remaining <= 0:
                return None
            # a timer that wakes it, not wait_for: that would make a task per frame and
            # take three turns of the loop to hand the frame on
            timer = loop.call_later(remaining, self._wake.set)
            try:
                await self._wait()
            finally:
                timer.cancel()

    async def _wait(self) -> None:
        """Wait for `_wake`; joined, deliveries may meanwhile go by `direct`."""
        self._waiting = self._joined
        try:
            await self._wake.wait()
        finally:
            self._waiting = False

    def _hand_out(self, delivery: Delivery) -> Delivery:
        self._ids = delivery.cursor
        for gap in delivery.gaps:
            self.epochs[gap.sid] = gap.epoch
        return delivery

    async def _catch_up(self, join: bool) -> Delivery | None:
        cursor = self.cursor
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is None:
            # Back to the group it fell behind (its history is what this subscriber
            # was reading): a fresh subscriber reads first, since a stream deleted and
            # made anew can repeat the cursors of an old history.
            if self._left is not None and self._join_kept(self._left, cursor.ids):
                return None
            if self._at_end and join and self._join_at_end():
                return None
            delivery, full = await self._read_own()
        else:
            delivery, full = await prefetch
        states, self._confirmed = self._confirmed, None
        if delivery.gaps and not len(delivery.batch):
            return delivery  # what was lost, said before what comes next
        if len(delivery.batch):
            group = self.hub.groups.get(self.key)
            # entries just read: what the group has after them is the same stream
            joined = join and group is not None and self._join_kept(group, delivery.cursor)
            small = delivery.batch.nbytes <= CATCH_UP_BYTES
            several = len(delivery.batch) > self.count  # more than one frame to send
            if full and join and not joined and not self.latest and small and several:
                # far behind (a full batch): read the next while this one is sent (a
                # catch-up of large entries would otherwise wait for Redis and the
                # socket in turn); near the tail the shared read is about to take over.
                # Not after a batch larger than that: a slow socket would make the
                # subscriber hold a third one (the one sent, its copy in the socket's
                # buffer, and the next), and one round trip per such batch is little.
                # Not for a batch of one frame: its write returns at once (the socket's
                # buffer takes what the client has not read yet), so the next read,
                # made then in the same turn, overlaps the sending as well, without a
                # task and its three turns of the loop per read.
                self._prefetch = self.hub.loop.create_task(self._read_own())
            # a reader that resumes and read to the end joins next without a read
            self._at_end = self.resume and not full and not joined and not self.latest
            return delivery
        if join and states is not None:
            self._settle(states)
        elif join:
            self._try_join(park_first=self.resume)
        return None

    async def _read_own(self) -> tuple[Delivery, bool]:
        """The next batch after the cursor (on a catch-up turn, or shared with another
        subscriber at the same cursor: `fastredis.server.reads.catch_up`) as a delivery, and
        whether it is full (as many entries as asked: more are likely there)."""
        hub, cursor = self.hub, self.cursor
        asked, budget = self.count, None
        if self.read_ahead:  # whole frames of `count`, but for the stream's end
            asked = self.count * max(1, CATCH_UP_ENTRIES // self.count)
            per = sum(hub.sizes.get(s) for s in self.sids)
            budget = max(CATCH_UP_BYTES, self.count * per)

        made = False
        confirm, self._confirm = self._confirm, False

        async def read() -> tuple[Delivery, bool]:
            nonlocal made
            made = True
            # a reader that resumes learns what Redis lost just before reading
            before = dict(cursor.ids)
            resume = self.resume and not self.latest  # latest skips: no gaps to tell
            if confirm:
                group = hub.groups.get(self.key)
                self._seen = (group, dict(group.cursor.ids) if group else {})
            # (a `latest` read sends no prelude: its states are read first)
            states, prelude = await _states_first(
                hub, self.sids, before, resume or confirm, pipelined=not self.latest
            )
            batch = await hub.catch_up.read(
                lambda conn: cursor.read(conn, None, asked, budget, self.count, prelude)
            )
            if prelude:
                states = states_of(self.sids, cursor.prelude_replies)
            if confirm:
                self._confirmed = states
            cut = cursor.cut
            gaps = _gaps(cursor, before, states if resume else None, batch, self.epochs)
            delivery = Delivery(batch, dict(cursor.ids), before)
            delivery.gaps, delivery.cut = gaps, cut
            return delivery, cut or len(batch) >= asked

        where: tuple[Any, ...] = (self.key, self.resume, tuple(cursor.ids[s] for s in self.sids))
        since = None if self.latest else self._since
        if self.resume and not self.latest:
            # Readers that resume share by cursor and the epochs they know: a read
            # states what Redis lost since that cursor in the same step (its gaps), so
            # one issued before this reader began (a storm reconnecting at the same
            # cursors) tells it no less than its own would.
            where += (tuple(self.epochs.get(s) for s in self.sids),)
            since = 0.0
        # kept for the others of its key (readers that resume: for those yet to come)
        keep = not self.latest and (self.resume or hub.members.get(self.key, 0) > 1)
        # nobody else can take it: a `latest` read (its key's readers take none), or
        # the only subscriber of its key (one that comes later began after the read)
        alone = not keep and not confirm
        if confirm:  # its own read, issued now: its states are what it reads them for
            since, keep = None, False
        delivery, full = await hub.catch_ups.read(
            where, read, _kept_bytes, since=since, keep=keep, alone=alone
        )
        metrics.stream_read("catch_up" if made else "shared")
        cursor.move_to(delivery.cursor)
        return delivery, full

    def _join_at_end(self) -> bool:
        """A reader that resumed at the end of its streams joins the tail group without
        a read of its own (a storm of reconnecting idle viewers costs no XREAD each):
        when there is none it starts one that parks first (the parking read, from this
        cursor, wakes it for anything added since the states were read); one at its
        cursor or behind it takes it as after an empty read. One ahead (entries added
        since, or gone) is left to the read by cursor."""
        self._at_end = False
        group = self.hub.groups.get(self.key)
        ahead = group is not None and _compare(self.cursor.ids, group.cursor.ids) < 0
        if ahead and group is not None and not group.task.done():
            return False
        self._try_join(park_first=True)
        return True

    def _join_kept(self, group: _Group, ids: Ids) -> bool:
        """Join `group` at the delivery after cursor `ids` if it still has it."""
        if self.latest or self.hub.groups.get(self.key) is not group or group.task.done():
            return False
        seq = group.find(ids)
        if seq is None:
            return False
        self._join(group, seq)
        return True

    def _try_join(self, park_first: bool = False) -> None:
        """At the end of the stream (a read came back empty): join the tail group (one
        it starts parks first, with `park_first`: see `_join_at_end`)."""
        group = self.hub.group_for(self, park_first)
        mine = self.cursor.ids
        relation = _compare(mine, group.cursor.ids)
        if relation < 0:
            # The group is ahead, yet our read found nothing past our cursor: either the
            # group read entries added since our read (ours to read: moving the group
            # back would send them again to its subscribers), or what it passed is gone
            # (deleted, or the stream made anew below its cursor). Read again, with the
            # streams' states, to tell (`_settle`).
            self._confirm = True
            return
        if relation == 0:
            self._join(group, group.next_seq)
        else:
            self._group = group
            group.pending.add(self)

    def _settle(self, states: dict[str, StreamState]) -> None:
        """A read that also read the streams' `states` (just before it) found nothing
        past our cursor. Nothing is between our cursor and a stream's last generated id
        (entries to come are past it): we move to it. Where the group is past it too, the
        stream was made anew below the group's cursor: unless the group read on since
        our read was issued (entries since made anew: the group has them, and nothing
        can come below them), it moves back to that id, and since it has sent nothing
        past it of the stream as it is now, none of its subscribers gets anything
        twice. Then we join as after any empty read."""
        ids = {sid: states[sid].last_id for sid in self.sids}
        group = self.hub.groups.get(self.key)
        seen, seen_ids = self._seen
        self._seen = (None, {})
        if group is not None and group is seen and not group.task.done():
            now = group.cursor.ids
            below = {
                sid: eid
                for sid, eid in ids.items()
                if _key(ids, sid) < _key(now, sid) and now[sid] == seen_ids.get(sid)
            }
            if below:
                group.rewind(below)
        self.cursor.move_to(ids)
        self._try_join(park_first=self.resume)

    def _join(self, group: _Group, seq: int) -> None:
        self._group = group
        self._left = None
        group.pending.discard(self)
        group.subs.add(self)
        self._joined = True
        self._confirm = False
        self.pos = seq

    def pending_seen(self, group_ids: Ids) -> None:
        """The group delivered a batch while we wait for it to reach our cursor."""
        assert self._group is not None
        relation = _compare(self.cursor.ids, group_ids)
        if relation == 0:
            self._join(self._group, self._group.next_seq)
        elif relation < 0:  # it went past us inside one batch: read the rest ourselves
            self._fall_back()

    def offer(self, delivery: Delivery) -> None:
        """The group published `delivery` (its newest)."""
        group = self._group
        assert group is not None
        if self.latest:
            skipped = group.entries_between(self.pos, delivery.seq)
            if skipped:  # newer frames replace the ones this viewer had no time for
                metrics.dropped(self.via, self._drop_reason, skipped)
            self.pos = delivery.seq
        else:
            count, nbytes = group.behind(self.pos)
            if count > 1 and (count > QUEUE_LIMIT or nbytes > QUEUE_BYTES):
                self._fall_back()  # too slow for the tail: catch up by cursor, no loss
                return
        direct = self.direct
        if self._waiting and direct is not None and self.pos == delivery.seq and direct(delivery):
            self.pos += 1
            self._hand_out(delivery)
            self._direct_at = self.hub.loop.time()
            return
        self._wake.set()

    def _fall_back(self) -> None:
        self._left = self._group
        self._leave()
        self.cursor.move_to(self._ids)
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._wake.set()

    def _leave(self) -> None:
        group, self._group = self._group, None
        self._joined = False
        if group is not None:
            group.subs.discard(self)
            group.pending.discard(self)
            group.maybe_close()


class _Group:
    """The shared tail read of one (streams, count, latest) for its subscribers."""

    def __init__(self, hub: Hub, first: Subscription, park_first: bool = False) -> None:
        self.hub = hub
        self._park_first = park_first  # its first read is the parking read (see _run)
        self.key = first.key
        self.cursor = StreamCursor(hub.client, first.sids, [], first.count, first.latest, hub.sizes)
        self.cursor.move_to(first.cursor.ids)
        self.latest = first.latest
        self.epochs = dict(first.epochs)
        self.subs: set[Subscription] = set()
        self.pending: set[Subscription] = set()
        self.history: deque[Delivery] = deque()
        self.next_seq = 0
        self.published_bytes = 0
        self.reads = 0
        self._reading = False
        self._rewound: Ids | None = None  # set by `rewind` while a read is under way
        self.task = hub.loop.create_task(self._run())

    def resuming(self) -> bool:
        """Whether a reader that resumes is in the group (its reads then find gaps)."""
        return any(sub.resume for sub in self.subs) or any(s.resume for s in self.pending)

    def maybe_close(self) -> None:
        if not self.subs and not self.pending:
            self.hub.parking.wake(self)  # a parked group ends at once

    async def _run(self) -> None:
        hub = self.hub
        # A group starts when a subscriber found nothing new: its first read does not
        # wait (holding a turn for ACTIVE_BLOCK_MS would let a flood of new idle groups
        # queue for the tail connections); an empty read parks it.
        block: int | None = None
        try:
            if self._park_first and (self.subs or self.pending):
                await hub.parking.wait(self)
            while self.subs or self.pending:
                before = dict(self.cursor.ids)
                self._reading = True
                try:
                    sids = self.cursor.sids
                    resume = not self.latest and self.resuming()
                    states, prelude = await _states_first(hub, sids, before, resume)
                    read = functools.partial(self._read, block=block, prelude=prelude)
                    batch = await hub.tail.read(read)
                    if prelude:
                        states = states_of(sids, self.cursor.prelude_replies)
                finally:
                    self._reading = False
                self.reads += 1
                metrics.stream_read("tail")
                if self._rewound is not None:  # read from before the rewind: read again
                    self.cursor.move_to(self._rewound)
                    self._rewound = None
                    continue
                gaps = _gaps(self.cursor, before, states, batch, self.epochs)
                for gap in gaps:
                    self.epochs[gap.sid] = gap.epoch
                if len(batch) or gaps:
                    self._publish(batch, before, gaps)
                    block = ACTIVE_BLOCK_MS
                    if len(batch) < TAIL_ENTRIES and not self.cursor.cut:
                        # at the tail: the subscribers it woke send before the next
                        # read is issued (its command is off the frame's path)
                        await asyncio.sleep(0)
                elif self.subs or self.pending:
                    await hub.parking.wait(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for sub in list(self.subs | self.pending):
                sub.fail(exc)
        finally:
            self.history.clear()  # a subscriber that fell behind may still hold the group
            if hub.groups.get(self.key) is self:
                del hub.groups[self.key]

    async def _read(
        self, conn: HeldConnection, block: int | None, prelude: list[list[Any]] | None
    ) -> StreamBatch:
        if self.latest:  # the newest `count`: the cursor's own
            return await self.cursor.read(conn, block, prelude=prelude)
        return await self.cursor.read(conn, block, TAIL_ENTRIES, TAIL_BYTES, prelude=prelude)

    def rewind(self, ids: Ids) -> None:
        """Move the cursor back to `ids` (some of its streams) where it is past them (the
        stream was made anew below it: `Subscription._settle`) and read from there: a
        parked group is woken, a read under way is read again."""
        cursor = dict(self.cursor.ids)
        for sid, eid in ids.items():
            if _key(ids, sid) < _key(cursor, sid):
                cursor[sid] = eid
        self.cursor.move_to(cursor)
        if self._reading:
            self._rewound = dict(cursor)
        self.hub.parking.wake(self)

    def _publish(self, batch: StreamBatch, before: Ids, gaps: list[Gap]) -> None:
        ids = dict(self.cursor.ids)
        delivery = Delivery(batch, ids, before, self.next_seq, self.published_bytes)
        delivery.gaps, delivery.cut = gaps, self.cursor.cut
        self.history.append(delivery)
        self.next_seq += 1
        self.published_bytes += batch.nbytes
        joined = list(self.subs)  # before the pending ones that this batch brings in
        for sub in list(self.pending):
            sub.pending_seen(ids)
        for sub in joined:
            sub.offer(delivery)
        self._trim()
        self.maybe_close()

    def _trim(self) -> None:
        """Forget the deliveries every member has taken (keeping the newest)."""
        keep = min((sub.pos for sub in self.subs), default=self.next_seq)
        keep = min(keep, self.next_seq - 1)
        history = self.history
        while history and history[0].seq < keep:
            history.popleft()

    def take(self, seq: int) -> Delivery | None:
        """The delivery `seq`, once published (None: not yet). A member's deliveries are
        kept until it took them (`_trim`), so `seq` is never one forgotten."""
        if seq >= self.next_seq:
            return None
        index = seq - self.history[0].seq
        if index < 0:
            raise AssertionError(f"delivery {seq} was forgotten (history from {index + seq})")
        return self.history[index]

    def behind(self, seq: int) -> tuple[int, int]:
        """(deliveries, bytes) published from `seq` on."""
        if seq >= self.next_seq:
            return 0, 0
        return self.next_seq - seq, self.published_bytes - self.take(seq).start  # type: ignore[union-attr]

    def entries_between(self, first: int, end: int) -> int:
        """Entries in the deliveries first..end-1 (still in the history)."""
        return sum(len(d.batch) for d in self.history if first <= d.seq < end)

    def find(self, ids: Ids) -> int | None:
        """The seq of the delivery that follows cursor `ids`: one still kept whose
        `before` it is (within half the queue bounds), or the next one to come."""
        if ids == self.cursor.ids:
            return self.next_seq
        for delivery in self.history:
            if delivery.before == ids:
                count, nbytes = self.behind(delivery.seq)
                if 2 * count <= QUEUE_LIMIT and 2 * nbytes <= QUEUE_BYTES:
                    return delivery.seq
                return None
        return None


class Hub:
    """Shared reads for every subscriber of the server (``app.state.hub``)."""

    def __init__(
        self,
        client: AnyAsyncRedis,
        tail_connections: int = 16,
        catch_up_connections: int = 4,
        max_read_bytes: int = DEFAULT_MAX_READ_BYTES,
    ) -> None:
        self.client = client
        self.sizes = EntrySizes(client, max_read_bytes)  # every read's reply fits this
        # answers not shared (REST GETs): one of the largest at a time, smaller beside it
        self.answers = ByteTurns(max_read_bytes * 3 // 2)
        self.cluster = is_cluster(client)
        self.tail = _Turns(client, tail_connections)
        self.catch_up = _Turns(client, catch_up_connections)
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.members: dict[tuple[Any, ...], int] = {}  # subscribers per key
        self.catch_ups: SharedReads[tuple[Delivery, bool]] = SharedReads()
        self.starts = Starts(client)  # `$` and stream states, shared by opens at once
        self.parking = Parking(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the hub runs on, looked up once (`asyncio.get_running_loop()` is a
        getpid() system call per call on Python 3.11; a hub lives on one loop)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def subscribe(
        self,
        sids: Sequence[str],
        start_ids: Sequence[str],
        *,
        count: int = 1,
        latest: bool = False,
        max_fps: float | None = None,
        read_ahead: bool = True,
        via: str = "pull",
        resume: bool = False,
        epochs: Sequence[str | None] | None = None,
        opened_ms: int | None = None,
    ) -> Subscription:
        """A subscription to `sids` from `start_ids` (``$``, ``0``, ``*`` or an id, one
        per stream); enter it with ``async with``. `count`: entries per stream per frame
        (`Subscription.frames`; a delivery may hold several frames); `latest`: only the
        newest `count`, nothing queued; `max_fps`: deliveries a second at most;
        `read_ahead`: its own reads (behind the tail) may read more than `count` (a REST
        GET says False); `via` names the reader in the metrics (frames dropped).
        `resume`: check the start (``sub.resumed``, given the `epochs` the reader
        saw) and find gaps (``delivery.gaps``); `opened_ms`: the Redis time (ms) the
        client's connection opened, when that was before the streams were known: `$`
        is then no later than it."""
        return Subscription(
            self, sids, start_ids, count, latest, max_fps, read_ahead, via,
            resume, epochs, opened_ms,
        )  # fmt: skip

    def group_for(self, sub: Subscription, park_first: bool = False) -> _Group:
        group = self.groups.get(sub.key)
        if group is None or group.task.done():
            group = self.groups[sub.key] = _Group(self, sub, park_first)
        return group

    def tail_reads(self) -> int:
        """Tail reads run so far by the groups alive now (for tests and metrics)."""
        return sum(g.reads for g in self.groups.values())

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed CLIENT UNBLOCK only costs latency

    async def close(self) -> None:
        for group in list(self.groups.values()):
            group.task.cancel()
        for group in list(self.groups.values()):
            with contextlib.suppress(BaseException):
                await group.task
        for task in list(self._tasks):
            task.cancel()
        await self.parking.close()
        await self.tail.close()
        await self.catch_up.close()
        self.catch_ups.clear()
