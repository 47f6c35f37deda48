"""GraphQL face of the server (as the Redis Streamer protocol has it): stream info,
metadata, and a data subscription.

`make_graphql_app()` returns a Strawberry ASGI app (GraphiQL for browsers; subscriptions
over both ``graphql-transport-ws`` and ``graphql-ws``). Mount it at ``/graphql`` for
HTTP and websocket, e.g. ``Route("/graphql", gql)`` plus ``WebSocketRoute("/graphql",
gql)``. Redis comes from ``app.state.redis`` of the Starlette app it runs under
(a redis-py async client, `fastredis.redis_io.AnyAsyncRedis`, made by
`fastredis.redis_io.make_async_client`), or from the ``redis=`` argument.

Schema::

    query { sids  streams(sids: [String!] = null) { sid entriesAdded ... error meta } }
    mutation { streamMeta(sid: "glf", meta: {format: "mp4"}) }
    subscription { data(sids: ["glf"]) { sid time data utf8 } }
    subscription { data(sids: ["glf"], lastEntryId: "1-0", resume: true) {
        kind sid time data resume { from recovered firstId epoch }
        gap { sid from to next epoch recreated } } }
    query { streams { consumerGroups { name consumers pending lag lastDeliveredId } } }

Choices where the Redis Streamer protocol is silent:

* ``streams`` without ``sids`` lists every stream key (``SCAN ... TYPE stream``),
  sorted; with ``sids`` it answers for exactly those, in that order, and a key that
  is missing or not a stream gets ``error`` (Redis's own message) and null info.
* Fields an older Redis does not report (``entriesAdded``, ``maxDeletedEntryId``,
  ``recordedFirstEntryId`` need Redis >= 7.0) are null, never a guess.
* ``firstEntryData``/``lastEntryData`` are the base64 of the entry's ``d`` field (the
  payload the server writes); an entry written by another tool without ``d`` gives
  the value of its only field, or null when it has several.
* ``*Time`` fields are ISO 8601 datetimes in UTC from the id's milliseconds.
* Counters (``entriesAdded``, ``length``, radix tree sizes) are the ``Long`` scalar:
  GraphQL's Int stops at 2**31-1, which a busy stream's ``entriesAdded`` passes.
* ``meta`` is the JSON stored (as JSON text) at ``XMETA:{sid}``; null when unset; a
  value there that is not JSON is returned as a string. ``streamMeta`` replaces it
  and returns what was stored; ``meta: null`` deletes it.
* The subscription's ``time`` is the entry id (as in the pull header);
  ``datetime`` gives it as an ISO datetime. ``lastEntryId`` (default ``$``: only
  entries added after the websocket opened -- Redis's clock then, read before the
  handshake is accepted -- with no gap between reads) may be ``0`` or an id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any, NewType, overload

import strawberry
from graphql.error import GraphQLError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from strawberry.asgi import GraphQL
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import Info

from fastredis.ids import id_datetime
from fastredis.redis_io import AnyAsyncRedis
from fastredis.server.edge.auth import FULL_ACCESS, Grant, grant_of, require_read, require_write
from fastredis.server.edge.errors import explain, failure
from fastredis.server.edge.protocol import BadInput, ReadOptions, parse_query
from fastredis.server.endpoints.pages import playground_html
from fastredis.server.reads.hub import Hub
from fastredis.server.reads.stream_info import GroupInfo, consumer_groups, pairs
from fastredis.server.reads.stream_info import list_sids as stream_keys
from fastredis.server.writes.meta import (
    META_PREFIX,
    MetaError,
    delete_meta,
    is_meta_key,
    meta_key,
    set_meta,
)

__all__ = ["META_PREFIX", "make_graphql_app", "schema"]

SUBSCRIPTION_COUNT = 100  # entries per stream per delivery of a subscription

# Checked while validating, before any resolver runs: a request past one of them gets
# an error naming it and no Redis work. The schema is 3 levels deep; each alias of a
# root field is one more round of Redis work in the same request.
MAX_QUERY_DEPTH = 6
MAX_ALIASES = 8
MAX_TOKENS = 2000
MAX_SIDS = 1000  # streams named in one field


Long = NewType("Long", int)
_LONG = strawberry.scalar(
    name="Long",
    description="A whole number that may exceed 32 bits (JSON number).",
    serialize=int,
    parse_value=int,
)


# -- helpers ---------------------------------------------------------------------


def _redis(info: Info) -> AnyAsyncRedis:
    return info.context["redis"]


def _turn(info: Info) -> asyncio.Semaphore | contextlib.nullcontext[None]:
    """One request's Redis work, one resolver at a time: however many aliases a query
    has, it holds one Redis connection."""
    turn = info.context.get("redis_turn")
    return contextlib.nullcontext() if turn is None else turn


def _grant(info: Info) -> Grant:
    return info.context.get("grant", FULL_ACCESS)


def _stream_names(info: Info, sids: Sequence[str], write: bool = False) -> list[str]:
    """`sids` without repeats, each a stream (not a metadata key) in the token's scope."""
    sids = list(dict.fromkeys(sids))
    if len(sids) > MAX_SIDS:  # variables are not counted by the token limit
        raise ValueError(f"{len(sids)} sids in one field: the limit is {MAX_SIDS}")
    for sid in sids:
        try:
            meta_key(sid)
        except MetaError as exc:
            raise ValueError(str(exc)) from None
    (require_write if write else require_read)(_grant(info), sids)
    return sids


@overload
def _text(value: str | bytes | bytearray | memoryview) -> str: ...
@overload
def _text(value: Any) -> str | None: ...
def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _id_time(entry_id: str | None) -> datetime | None:
    """The UTC datetime of an entry id's milliseconds."""
    if not entry_id:
        return None
    try:
        return id_datetime(entry_id)
    except (ValueError, OverflowError):
        return None


def _payload(fields: Any) -> bytes | None:
    """The payload of an entry's fields: `d`, else the only field's value."""
    if fields is None:
        return None
    if isinstance(fields, dict):
        items = list(fields.items())
    else:  # flat [k1, v1, k2, v2, ...]
        it = iter(fields)
        items = list(zip(it, it, strict=False))
    for key, value in items:
        if key in (b"d", "d"):
            return bytes(value) if not isinstance(value, str) else value.encode()
    if len(items) == 1:
        value = items[0][1]
        return bytes(value) if not isinstance(value, str) else value.encode()
    return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _long(value: Any) -> Long | None:
    return None if value is None else Long(int(value))


def _decode_meta(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return _text(raw)


# -- types -----------------------------------------------------------------------


@strawberry.type(description="A consumer group of a stream (XINFO GROUPS).")
class ConsumerGroup:
    name: str
    consumers: int = strawberry.field(description="Consumers the group has.")
    pending: Long = strawberry.field(description="Entries delivered, not acknowledged.")
    lag: Long | None = strawberry.field(
        description="Entries not read by the group yet; null when Redis cannot tell."
    )
    last_delivered_id: str = strawberry.field(description="The last id delivered.")
    entries_read: Long | None = strawberry.field(
        description="Entries the group has read (Redis >= 7.0)."
    )

    @classmethod
    def from_info(cls, g: GroupInfo) -> ConsumerGroup:
        return cls(
            name=g.name,
            consumers=g.consumers,
            pending=Long(g.pending),
            lag=None if g.lag is None else Long(g.lag),
            last_delivered_id=g.last_delivered_id,
            entries_read=None if g.entries_read is None else Long(g.entries_read),
        )


@strawberry.type(description="XINFO STREAM of one stream key, plus its metadata.")
class Stream:
    sid: str = strawberry.field(description="The stream key.")
    entries_added: Long | None = None
    first_entry_id: str | None = None
    last_entry_id: str | None = None
    last_generated_id: str | None = None
    max_deleted_entry_id: str | None = None
    groups: int | None = None
    length: Long | None = None
    radix_tree_keys: Long | None = None
    radix_tree_nodes: Long | None = None
    recorded_first_entry_id: str | None = None
    error: str | None = strawberry.field(
        default=None, description="Why there is no info: missing key or not a stream."
    )
    meta: JSON | None = strawberry.field(
        default=None, description="User metadata (JSON) stored at XMETA:{sid}."
    )
    first_payload: strawberry.Private[bytes | None] = None
    last_payload: strawberry.Private[bytes | None] = None

    @strawberry.field(
        description="The stream key (same as sid), as Redis Streamer protocol clients ask it."
    )
    def id(self) -> str:
        return self.sid

    @strawberry.field(description="The first entry's payload, base64.")
    def first_entry_data(self) -> str | None:
        return None if self.first_payload is None else base64.b64encode(self.first_payload).decode()

    @strawberry.field(description="The last entry's payload, base64.")
    def last_entry_data(self) -> str | None:
        return None if self.last_payload is None else base64.b64encode(self.last_payload).decode()

    @strawberry.field(description="The first entry id's time (UTC).")
    def first_entry_time(self) -> datetime | None:
        return _id_time(self.first_entry_id)

    @strawberry.field(description="The last entry id's time (UTC).")
    def last_entry_time(self) -> datetime | None:
        return _id_time(self.last_entry_id)

    @strawberry.field(description="The stream's consumer groups; null if it is no stream.")
    async def consumer_groups(self, info: Info) -> list[ConsumerGroup] | None:
        if self.error is not None:
            return None
        async with _turn(info):  # one Redis connection per request, however many streams
            groups = (await consumer_groups(_redis(info), [self.sid]))[self.sid]
        if isinstance(groups, Exception):
            return None
        return [ConsumerGroup.from_info(g) for g in groups]

    @classmethod
    def from_info(cls, sid: str, info: Any, meta: Any) -> Stream:
        if isinstance(info, str):  # why there is no info
            return cls(sid=sid, error=info, meta=_decode_meta(meta))
        d = pairs(info)
        first = d.get("first-entry") or (None, None)
        last = d.get("last-entry") or (None, None)
        return cls(
            sid=sid,
            entries_added=_long(d.get("entries-added")),
            first_entry_id=_text(first[0]),
            first_payload=_payload(first[1]),
            last_entry_id=_text(last[0]),
            last_payload=_payload(last[1]),
            last_generated_id=_text(d.get("last-generated-id")),
            max_deleted_entry_id=_text(d.get("max-deleted-entry-id")),
            groups=_int(d.get("groups")),
            length=_long(d.get("length")),
            radix_tree_keys=_long(d.get("radix-tree-keys")),
            radix_tree_nodes=_long(d.get("radix-tree-nodes")),
            recorded_first_entry_id=_text(d.get("recorded-first-entry-id")),
            meta=_decode_meta(meta),
        )


@strawberry.type(description="Where a subscription with resume: true starts.")
class ResumeInfo:
    from_: str = strawberry.field(
        name="from", description="The cursor read after (ids '+'-joined per stream)."
    )
    recovered: bool = strawberry.field(
        description="False when an entry after the cursor is gone (trimmed, deleted, or "
        "the stream was made anew)."
    )
    first_id: str | None = strawberry.field(description="The first id the stream(s) hold.")
    epoch: str | None = strawberry.field(description="The stream(s)' epoch, to resume with.")


@strawberry.type(description="Entries of one stream lost before the next one delivered.")
class GapInfo:
    sid: str
    from_: str = strawberry.field(name="from", description="The last id delivered before.")
    to: str | None = strawberry.field(description="Lost entries are up to this id.")
    next: str | None = strawberry.field(description="The first id delivered after.")
    epoch: str | None = strawberry.field(description="The stream's epoch now.")
    recreated: bool = strawberry.field(description="The stream was made anew.")


@strawberry.type(description="One stream entry (kind entry), or with resume: true a note.")
class Data:
    sid: str
    time: str = strawberry.field(description="The entry id, e.g. 1638125133432-0.")
    payload: strawberry.Private[bytes]
    kind: str = strawberry.field(
        default="entry",
        description="entry; with resume: true, first one 'resume' (see resume), and "
        "'gap' before the entries that follow a loss (see gap). Notes have no payload.",
    )
    resume: ResumeInfo | None = None
    gap: GapInfo | None = None

    @strawberry.field(description="The payload, base64.")
    def data(self) -> str:
        return base64.b64encode(self.payload).decode()

    @strawberry.field(description="The payload as UTF-8 text; null if it is not UTF-8.")
    def utf8(self) -> str | None:
        try:
            return self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return None

    @strawberry.field(name="datetime", description="The entry id's time (UTC).")
    def entry_datetime(self) -> datetime | None:
        return _id_time(self.time)


# -- resolvers -------------------------------------------------------------------


async def list_sids(client: AnyAsyncRedis, grant: Grant = FULL_ACCESS) -> list[str]:
    """Every stream key (SCAN TYPE stream) that `grant` may read, sorted; keys named
    like metadata (XMETA:...) are not streams."""
    return [k for k in await stream_keys(client) if not is_meta_key(k) and grant.may_read(k)]


async def stream_infos(client: AnyAsyncRedis, sids: Sequence[str]) -> list[Stream]:
    """XINFO STREAM and the metadata of each sid, in one round trip."""
    if not sids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for sid in sids:
            # "XINFO", "STREAM" as two words: the raw reply, not redis-py's reshaped one
            pipe.execute_command("XINFO", "STREAM", sid)
            pipe.get(META_PREFIX + sid)
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for sid, info, meta in zip(sids, replies[::2], replies[1::2], strict=False):
        if isinstance(info, Exception):  # worded by the one table (a round trip more)
            info = (await explain(info, client, [sid])).message
        out.append(Stream.from_info(sid, info, None if isinstance(meta, Exception) else meta))
    return out


@strawberry.type
class Query:
    @strawberry.field(description="The names of every stream key.")
    async def sids(self, info: Info) -> list[str]:
        async with _turn(info):
            return await list_sids(_redis(info), _grant(info))

    @strawberry.field(description="XINFO STREAM of the given streams (default: all).")
    async def streams(self, info: Info, sids: list[str] | None = None) -> list[Stream]:
        client = _redis(info)
        if sids is not None:
            sids = _stream_names(info, sids)
        async with _turn(info):
            if sids is None:
                sids = await list_sids(client, _grant(info))
            return await stream_infos(client, sids)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Store JSON metadata for a stream (at XMETA:{sid}); null deletes it. "
        "Returns what is stored."
    )
    async def stream_meta(self, info: Info, sid: str, meta: JSON | None) -> JSON | None:
        client = _redis(info)
        (sid,) = _stream_names(info, [sid], write=True)
        async with _turn(info):
            if meta is None:
                await delete_meta(client, sid)
            else:
                await set_meta(client, sid, meta)
        return meta


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Entries of the given streams as they arrive (the server's shared read). "
        "On a websocket opened as /graphql?announce=1, the first event carries no entry: "
        "it says the subscription reads from `time` on (of the first stream), so every "
        "entry added after it arrives is delivered."
    )
    async def data(
        self,
        info: Info,
        sids: list[str],
        last_entry_id: str = "$",
        resume: bool = False,
        epoch: str | None = None,
    ) -> AsyncGenerator[Data, None]:
        client = _redis(info)
        sids = _stream_names(info, sids)
        if not sids:
            return
        hub = info.context["hub"]
        sub = hub.subscribe(
            sids, [last_entry_id] * len(sids), count=SUBSCRIPTION_COUNT, via="graphql",
            opened_ms=info.context.get("opened_ms"), resume=resume,
            epochs=_epochs(epoch, len(sids)),
        )  # fmt: skip
        try:
            async with sub:
                if info.context.get("announce"):  # reading from here on: say so
                    start = sub.last_entry_id().split("+")[0]
                    yield Data(sid=sids[0], time=start, payload=b"")
                if sub.resumed is not None:
                    d = sub.resumed.as_dict()
                    yield Data(
                        sid=sids[0], time=d["from"], payload=b"", kind="resume",
                        resume=ResumeInfo(
                            from_=d["from"], recovered=d["recovered"],
                            first_id=d["first_id"], epoch=d["epoch"],
                        ),
                    )  # fmt: skip
                while True:
                    delivery = await sub.next()
                    assert delivery is not None
                    for gap in delivery.gaps if resume else ():  # told to resumers only
                        yield Data(
                            sid=gap.sid, time=gap.after, payload=b"", kind="gap",
                            gap=GapInfo(
                                sid=gap.sid, from_=gap.after, to=gap.to,
                                next=gap.next, epoch=gap.epoch, recreated=gap.recreated,
                            ),
                        )  # fmt: skip
                    delivery.sent("graphql")
                    for sid, entry_id, fields in delivery.batch:
                        assert sid is not None  # the hub reads with XREAD: named entries
                        payload = _payload(fields)
                        yield Data(
                            sid=_text(sid),
                            time=_text(entry_id),
                            payload=b"" if payload is None else payload,
                        )
        except RedisError as exc:
            raise (await explain(exc, client, sids)).bad_input() from None


def _epochs(raw: str | None, n_streams: int) -> list[str | None] | None:
    """The `epoch` argument as one per stream (as the pull's query parameter)."""
    if raw is None:
        return None
    opts = parse_query("pull", [("resume", "1"), ("epoch", raw)], n_streams)
    assert isinstance(opts, ReadOptions)
    return opts.epochs


class UserErrors(MaskErrors):
    """Errors from Redis (and refused input) worded by `fastredis.server.edge.errors`, the
    table every face uses; other errors (syntax, validation) pass as they are."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_from_us)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            message=failure(error.original_error or error).message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
        )


def _from_us(error: GraphQLError) -> bool:
    return isinstance(error.original_error, (RedisError, BadInput))


class _Schema(strawberry.Schema):
    """Requests the server refuses (`BadInput`: out of scope, bad sids) are answered
    to the client and not logged: any client could otherwise fill the server's log."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        errors = [e for e in errors if not isinstance(e.original_error, BadInput)]
        if errors:
            super().process_errors(errors, execution_context)


schema = _Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    config=StrawberryConfig(scalar_map={Long: _LONG}),
    extensions=[
        UserErrors,
        lambda: QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
    ],
)


async def _redis_ms(client: AnyAsyncRedis) -> int | None:
    """Redis's clock now, in ms (None: Redis could not say; `$` is then fixed when the
    subscription starts)."""
    try:
        reply: Any = await client.time()
    except RedisError:
        return None
    if isinstance(reply, dict):  # a cluster: one node's clock
        reply = next(iter(reply.values()))
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


class FastredisGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI app with the Redis client in the context."""

    def __init__(self, *args: Any, redis: AnyAsyncRedis | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._redis = redis
        self._hub: Hub | None = None

    @property
    def graphql_ide_html(self) -> str:
        """fastredis's own playground (every asset inline): it works with no internet,
        where GraphiQL's page loads React and GraphiQL from a CDN."""
        return playground_html()

    async def render_graphql_ide(self, request: Request) -> Response:
        return HTMLResponse(playground_html(request.scope.get("root_path", "")))

    def decode_json(self, data: str | bytes) -> object:
        """JSON nested deeper than Python decodes is bad JSON (400 / close 4400), not
        a RecursionError escaping (HTTP 500, a websocket dropped without a close)."""
        try:
            return json.loads(data)
        except RecursionError:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            raise json.JSONDecodeError("nested too deeply", text, 0) from None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            # The streams of a subscription are known only once it is asked for, after
            # the socket opened: `$` is fixed no later than the moment it opened.
            client = self._redis or getattr(getattr(scope.get("app"), "state", None), "redis", None)
            if client is not None:
                scope = {**scope, "fastredis.opened_ms": await _redis_ms(client)}
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        client = self._redis
        if client is None:
            app = request.scope.get("app")
            client = getattr(getattr(app, "state", None), "redis", None)
            if client is None:
                raise RuntimeError(
                    "the GraphQL app needs a Redis client: run it under the fastredis "
                    "Starlette app (app.state.redis) or pass make_graphql_app(redis=...)"
                )
        hub = getattr(getattr(request.scope.get("app"), "state", None), "hub", None)
        if hub is None:  # run outside the fastredis app: a hub of its own
            hub = self._hub = self._hub or Hub(client)
        return {
            "request": request,
            "response": response,
            "redis": client,
            "hub": hub,
            "grant": grant_of(request),
            "opened_ms": request.scope.get("fastredis.opened_ms"),
            "announce": request.query_params.get("announce") == "1",
            "redis_turn": asyncio.Semaphore(1),
        }

    def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
        if super().is_websocket_origin_allowed(request, origin):
            return True
        # the server's CORS setting also governs cross-origin GraphQL websockets
        settings = getattr(getattr(request.scope.get("app"), "state", None), "settings", None)
        allowed: Sequence[str] = getattr(settings, "cors_origins", None) or ()
        return "*" in allowed or origin in allowed


def make_graphql_app(
    redis: AnyAsyncRedis | None = None,
    *,
    allowed_origins: Sequence[str] = (),
    graphql_ide: str | None = "graphiql",
) -> FastredisGraphQL:
    """The GraphQL ASGI app: GraphiQL for browsers, subscriptions over
    graphql-transport-ws and graphql-ws."""
    return FastredisGraphQL(
        schema,
        redis=redis,
        graphql_ide=graphql_ide,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        allowed_origins=allowed_origins,
    )
