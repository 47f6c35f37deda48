"""from_redis_streams: read Redis streams with XREAD and emit their entries."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis
from streamz import Stream

from fastredis.redis_io import axread_batch, axrevrange_batch
from fastredis.streamz.base import RedisSource
from fastredis.streamz.batch_modes import WHOLE, read_item
from fastredis.streamz.checks import (
    block_ms,
    check_batch,
    check_count,
    check_start_id,
    normalize_streams,
)
from fastredis.streamz.connection import TRANSIENT_ERRORS, Backoff
from fastredis.streamz.emission import emit_each, emit_one
from fastredis.streamz.entries import batch_messages
from fastredis.streamz.loops import cancel_and_wait

__all__ = ["StreamSource", "from_redis_streams"]


class StreamSource(RedisSource):
    """What the stream and group sources share: the read loop, with the next reads sent
    while this one is emitted (``_reads_ahead()`` of them)."""

    def _init_streams(
        self, streams: dict[str, str], count: int | None, timeout: float | None, batch: Any
    ) -> None:
        self.streams = streams
        self.count = check_count(count)
        self.timeout = timeout
        self._block = block_ms(timeout)
        self.batch = check_batch(batch)
        # A batch names streams as str or (convert=False) bytes: map both to ours.
        self._name_of: dict[Any, str] = {}
        for name in streams:
            self._name_of[name] = name
            self._name_of[name.encode()] = name

    def _names_for_log(self) -> str:
        return ", ".join(map(repr, self.streams))

    def _where_ids(self, batch: Any) -> dict[str, Any]:
        name_of = self._name_of
        return {name_of.get(k, k): v for k, v in batch.last_ids().items()}

    async def _main(self) -> None:
        backoff = Backoff(self._what)
        ahead = self._ahead
        try:
            while not self.stopped:
                await self._before_read()
                try:
                    batch = await self._wait(ahead.popleft() if ahead else self._read())
                except TRANSIENT_ERRORS as exc:
                    await self._cancel_ahead()  # the connection they went on failed
                    self._lost_connection()
                    await self._pause(backoff.next_delay(exc))
                    continue
                except redis.exceptions.ResponseError as exc:
                    await self._cancel_ahead()
                    await self._response_error(exc)
                    continue
                backoff.succeeded()
                if not len(batch):
                    continue
                self._advance(batch)
                if not self.stopped:
                    # Send the next reads now: Redis prepares them while we emit this one.
                    while len(ahead) < self._reads_ahead():
                        ahead.append(asyncio.ensure_future(self._read()))
                    await asyncio.sleep(0)
                await self._deliver(batch)
        finally:
            await self._drop_ahead()

    async def _drop_ahead(self) -> None:
        """The loop ends: what the reads sent ahead bring is not emitted."""
        await self._cancel_ahead()

    async def _cancel_ahead(self) -> None:
        futures = [*self._ahead]
        self._ahead.clear()
        await cancel_and_wait(futures)

    def _reads_ahead(self) -> int:
        return 1  # XREAD names the ids to read after: the next read needs this one's

    async def _before_read(self) -> None:
        pass

    def _lost_connection(self) -> None:
        pass

    def _advance(self, batch: Any) -> None:
        pass

    async def _response_error(self, exc: redis.exceptions.ResponseError) -> None:
        if "WRONGTYPE" in str(exc):
            await self._check_types(list(self.streams), "stream")
        raise exc

    async def _read(self) -> Any:
        raise NotImplementedError

    async def _deliver(self, batch: Any) -> None:
        raise NotImplementedError


class from_redis_streams(StreamSource):
    """Read Redis streams with XREAD and emit ``Message(stream, id, data)`` per entry.

    Parameters
    ----------
    streams: str, list of str, or dict of name -> start id
        The stream(s) to read. A dict gives each stream's start id; otherwise
        ``default_start_id`` applies.
    client_params: dict, optional
        Passed to redis-py unchanged.
    url: str, optional
        A redis:// URL instead of / on top of client_params.
    timeout: float
        Seconds one XREAD blocks (BLOCK, in ms) before trying again; 0 or < 0.001: forever.
    count: int, optional
        Most entries per read (XREAD COUNT); None reads all there are.
    default_start_id: str
        ``"$"`` (default): only entries added after start() returns; ``"0"``: from the start;
        or any entry id: after that id.
    convert, encoding:
        Decode names, ids, keys and values to str (default UTF-8); ``convert=False``: bytes.
    batch: False, True, "messages" or "arrow"
        False (default): emit one Message per entry. True: emit each read's StreamBatch
        itself, a sequence of ``(stream, id, data)`` tuples made only when accessed (also
        ``len()``, ``field(key)`` for one column, ``to_messages()``): the fast path.
        "messages": emit each read as a list of Messages. "arrow": emit each read as a
        ``pyarrow.RecordBatch`` (columns stream, id_ms, id_seq, then one view column per
        field, viewing the reply: no payload copied; see fastredis.columnar).

    Entry ids are tracked per stream as numbers (the reader's ``last_ids()``), so '5-10'
    follows '5-9'; after a lost connection reading resumes after the last id emitted.
    """

    _kind = "stream"

    def __init__(
        self,
        streams: str | list[str] | Mapping[str, str],
        client_params: Mapping[str, Any] | None = None,
        timeout: float | None = 0,
        count: int | None = None,
        default_start_id: str = "$",
        convert: bool = True,
        encoding: str | None = "utf-8",
        batch: bool | str = False,
        url: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_start_id(default_start_id, "(default_start_id)")
        self.default_start_id = default_start_id
        self._init_streams(normalize_streams(streams, default_start_id), count, timeout, batch)
        self._ids: dict[str, Any] = {}
        super().__init__(
            client_params=client_params, url=url, convert=convert, encoding=encoding, **kwargs
        )

    @property
    def last_ids(self) -> dict[str, Any]:
        """Per stream, the id reading resumes after (the last entry read)."""
        return dict(self._ids)

    async def _setup(self) -> None:
        assert self.client is not None
        await self.client.ping()
        names = list(self.streams)
        await self._check_types(names, "stream")
        ids: dict[str, Any] = {}
        for name, given in self.streams.items():
            start: str | bytes = given  # an id read back is str (utf-8 asked)
            if given == "$":
                # Resolve "$" now: entries added from here on are read, and a reconnect
                # resumes from a real id instead of skipping what came meanwhile.
                last = await axrevrange_batch(self.client, name, count=1, encoding="utf-8")
                start = last.ids()[0] if len(last) else "0-0"
            ids[name] = self._ids.get(name, start) if self._ids else start
        self._ids = ids

    async def _read(self) -> Any:
        assert self.client is not None
        return await axread_batch(self.client, self._ids, self.count, self._block, self.encoding)

    def _advance(self, batch: Any) -> None:
        self._ids_before = dict(self._ids)
        self._ids.update(self._where_ids(batch))

    async def _deliver(self, batch: Any) -> None:
        if self.batch in WHOLE:
            await emit_one(self, read_item(self.batch, batch))
        elif self.batch:
            await emit_one(self, batch_messages(batch))
        else:
            msgs = batch_messages(batch)
            emitted = await emit_each(self, msgs)
            if emitted < len(msgs):  # stopped: the next start reads the rest again
                ids = self._ids_before
                for m in msgs[:emitted]:
                    ids[self._name_of.get(m[0], m[0])] = m[1]
                self._ids = ids


if not hasattr(Stream, "from_redis_streams"):  # without the entry points (a source checkout)
    Stream.register_api(staticmethod)(from_redis_streams)
