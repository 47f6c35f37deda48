"""StreamBatch pickling (what Dask does to batches scattered to workers): a batch
loads back with the same entries, ids, offsets, cursor and frames, for every pickle
protocol, with the reply bytes out of band under protocol 5."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastredis._frames import pull_header, pull_payload
from fastredis._resp import AUTOCLAIM, RANGE, READ, Reader, StreamBatch, batch_from_reply


def bulk(x: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(x), x)


def arr(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(items)


def entry(eid: bytes, fields: list[bytes] | None) -> bytes:
    return arr([bulk(eid), b"*-1\r\n" if fields is None else arr([bulk(f) for f in fields])])


E1 = entry(b"1700000000000-0", [b"d", b"\x00\xffpayload", b"t", b"21.5"])
E2 = entry(b"1700000000000-1", [b"d", b"x" * 70_000])
REPLIES = {
    "read": (READ, arr([arr([bulk(b"cam:1"), arr([E1, E2])]), arr([bulk(b"s2"), arr([E1])])])),
    "read-resp3": (READ, b"%1\r\n" + bulk(b"cam:1") + arr([E2, E1])),
    "range": (RANGE, arr([E1, entry(b"2-0", None), E2])),
    "autoclaim": (AUTOCLAIM, arr([bulk(b"0-0"), arr([E1]), arr([bulk(b"1-1"), bulk(b"1-2")])])),
    "empty": (READ, b"*-1\r\n"),
}


def parsed(kind: int, data: bytes, encoding: str | None) -> StreamBatch:
    r = Reader()
    r.expect_batch(kind, encoding)
    r.feed(data)
    batch = r.gets()
    assert isinstance(batch, StreamBatch)
    return batch


def same(a: StreamBatch, b: StreamBatch) -> None:
    assert (a.kind, a.encoding, a.cursor, a.deleted) == (b.kind, b.encoding, b.cursor, b.deleted)
    assert a.to_messages() == b.to_messages()
    assert a.streams == b.streams and a.last_ids() == b.last_ids() and a.buf == b.buf
    oa, ob = a.offsets(), b.offsets()
    assert oa.keys() == ob.keys()
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k])
    sid = None if a.kind == READ else "s"
    assert pull_header(a, sid=sid) == pull_header(b, sid=sid)
    assert pull_payload(a) == pull_payload(b)


@pytest.mark.parametrize("name", sorted(REPLIES))
@pytest.mark.parametrize("encoding", [None, "latin-1"])
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(name, encoding, protocol):
    kind, data = REPLIES[name]
    batch = parsed(kind, data, encoding)
    same(pickle.loads(pickle.dumps(batch, protocol=protocol)), batch)


def test_protocol_5_sends_the_reply_bytes_out_of_band():
    kind, data = REPLIES["read"]
    batch = parsed(kind, data, None)
    buffers: list[pickle.PickleBuffer] = []
    blob = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    assert len(blob) < 200 and [bytes(b.raw()) for b in buffers] == [data]
    same(pickle.loads(blob, buffers=[bytearray(b.raw()) for b in buffers]), batch)


def test_a_directly_made_batch_pickles_as_empty():
    loaded = pickle.loads(pickle.dumps(StreamBatch()))
    assert len(loaded) == 0 and loaded.kind == READ and loaded.to_messages() == []


def test_batch_from_reply_refuses_other_bytes():
    with pytest.raises(ValueError, match="not the bytes of one stream reply"):
        batch_from_reply(REPLIES["range"][1] + b"+OK\r\n", RANGE)
    with pytest.raises(ValueError, match="not the bytes of one stream reply"):
        batch_from_reply(REPLIES["range"][1][:-3], RANGE)
