"""Sync batch reads over a Redis Cluster (see `fastredis.redis_io.cluster`)."""

from __future__ import annotations

import select
import time
from typing import Any

from redis import exceptions as rexc
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis._parsers.socket import SERVER_CLOSED_CONNECTION_ERROR

from fastredis._resp import PushNotification, StreamBatch
from fastredis.redis_io.cluster import (
    FAILOVER_WAIT,
    PENDING,
    RETRY_PAUSE,
    Build,
    Call,
    RedisCluster,
    calls_for,
    check_parser,
    finish,
    lanes,
    next_round,
    pack_lane,
    reroute,
    settled,
)
from fastredis.redis_io.commands import StreamIds, blocking_read_timeout
from fastredis.redis_io.parser import FastParser

__all__ = ["cluster_call"]


class _Lane:
    """Calls pipelined on one connection of their node's pool."""

    def __init__(self, client: RedisCluster, calls: list[Call]) -> None:
        self.calls = calls
        self.pool = client.get_redis_connection(calls[0].node).connection_pool
        self.conn: Any = None
        self.taken = 0  # replies taken by take()
        self.expecting = False  # take() has asked the reader for a batch

    def send(self, want_id: bool) -> None:
        self.conn = conn = self.pool.get_connection()
        check_parser(conn, FastParser)
        conn.send_packed_command(pack_lane(conn, self.calls, want_id))
        for call in self.calls:  # ASKING's OK and CLIENT ID come before the reply
            if call.asking:
                conn.read_response()
            if want_id:
                call.client_id = conn.read_response()

    def ready(self, timeout: float | None = 0) -> bool:
        """Whether a reply (or part of it) has arrived, waiting up to `timeout`."""
        conn = self.conn
        if conn._parser._reader.len() or conn._sock is None:
            return True
        return bool(select.select([conn._sock], [], [], timeout)[0])

    def take(self, kind: int, encoding: str | None) -> bool:
        """Take the replies already received, without waiting; whether all are in.
        (redis-py's read_response after each reply, without its wait.)"""
        parser = self.conn._parser
        reader = parser._reader
        while self.taken < len(self.calls):
            if reader is None:
                raise rexc.ConnectionError(SERVER_CLOSED_CONNECTION_ERROR)
            if not self.expecting:
                parser.expect_batch(kind, encoding)
                self.expecting = True
            reply = reader.gets()
            if reply is NOT_ENOUGH_DATA:
                return False
            self.expecting = False
            if isinstance(reply, PushNotification):
                parser.handle_push_response(reply)
                continue
            if isinstance(reply, rexc.ConnectionError):
                raise reply
            self.calls[self.taken].outcome = reply  # a batch, or a ResponseError
            self.taken += 1
        return True

    def read(self, kind: int, encoding: str | None, block: int | None) -> None:
        timeout = blocking_read_timeout(self.conn.socket_timeout, block)
        for call in self.calls:
            self.conn._parser.expect_batch(kind, encoding)
            try:
                call.outcome = self.conn.read_response(timeout=timeout)
            except rexc.ResponseError as error:  # one reply: the next ones follow
                call.outcome = error

    def fail(self, error: Exception) -> None:
        """The replies not taken get `error`; the connection is dropped."""
        for call in self.calls:
            if call.outcome is PENDING:
                call.outcome = error
        self.release(broken=True)

    def release(self, broken: bool) -> None:
        if self.conn is not None:
            if broken:
                self.conn.disconnect()  # replies may still be owed
            self.pool.release(self.conn)
            self.conn = None


def _read_together(lanes: list[_Lane], kind: int, encoding: str | None) -> None:
    """Read every lane's replies as their bytes arrive, whichever node sends: the nodes
    send side by side instead of waiting, their socket buffers full, for their turn."""
    waiting = list(lanes)
    for lane in lanes:
        lane.taken, lane.expecting = 0, False
    while waiting:
        for lane in list(waiting):
            try:
                if lane.take(kind, encoding):
                    waiting.remove(lane)
                    lane.release(broken=False)
            except (rexc.RedisError, OSError) as error:
                lane.fail(error)
                waiting.remove(lane)
        if not waiting:
            return
        timeout = waiting[0].conn.socket_timeout
        ready = select.select([lane.conn._sock for lane in waiting], [], [], timeout)[0]
        for lane in waiting:
            if lane.conn._sock not in ready:
                continue
            try:
                lane.conn._parser.read_from_socket()
            except (rexc.RedisError, OSError) as error:
                lane.fail(error)
        if not ready:
            for lane in waiting:
                lane.fail(rexc.TimeoutError("Timeout reading from socket"))
        waiting = [lane for lane in waiting if lane.conn is not None]


def _unblock(client: RedisCluster, lane: _Lane) -> None:
    """Wake a lane's blocked read: its reply, entries or not, then comes at once."""
    node = client.get_redis_connection(lane.calls[0].node)
    for _ in range(100):  # 0: the read was not blocked yet (in a later packet): again
        if node.execute_command("CLIENT", "UNBLOCK", lane.calls[0].client_id) or lane.ready(0.01):
            return


def _round(
    client: RedisCluster, calls: list[Call], kind: int, encoding: str | None, block: int | None
) -> None:
    """Send on every lane, then read every lane: the nodes work concurrently."""
    side_by_side = block is not None and len(calls) > 1
    sent: list[_Lane] = []
    for lane in (_Lane(client, group) for group in lanes(calls, block)):
        try:
            lane.send(side_by_side)
            sent.append(lane)
        except (rexc.RedisError, OSError) as error:
            for call in lane.calls:
                call.outcome = error
            lane.release(broken=True)
    try:
        if side_by_side and sent and not any(lane.ready() for lane in sent):
            socks = [lane.conn._sock for lane in sent]
            select.select(socks, [], [], blocking_read_timeout(None, block))
        for lane in sent:
            if side_by_side and not lane.ready():
                _unblock(client, lane)
        if not side_by_side and len(sent) > 1:
            _read_together(sent, kind, encoding)
            return
        for lane in sent:
            try:
                lane.read(kind, encoding, block)
                lane.release(broken=False)
            except (rexc.RedisError, OSError) as error:
                for call in lane.calls:
                    if call.outcome is PENDING:
                        call.outcome = error
                lane.release(broken=True)
    finally:
        for lane in sent:
            lane.release(broken=True)  # only lanes left unread by an exception


def cluster_call(
    client: RedisCluster,
    build: Build,
    streams: StreamIds,
    kind: int,
    encoding: str | None,
    block: int | None = None,
) -> StreamBatch:
    """Run `build(streams_of_one_slot)` for every slot of `streams` and merge the
    replies; follows redirects and waits out failovers."""
    deadline = time.monotonic() + FAILOVER_WAIT
    calls = calls_for(client, build, streams)
    done: list[StreamBatch] = []
    while True:
        for call in calls:
            call.outcome = PENDING
        _round(client, calls, kind, encoding, block)
        calls, moved, refresh = next_round(client, calls, done, deadline)
        for error in moved:
            client.nodes_manager.move_slot(error)
        if refresh:
            time.sleep(RETRY_PAUSE)
            client.nodes_manager.initialize()
        reroute(client, calls)
        if settled(calls, done, block):
            return finish(done, kind, encoding)
