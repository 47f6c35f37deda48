"""Property tests for fastredis._resp.Reader with hiredis.Reader as the oracle:
random RESP2/RESP3 reply trees (whole, split at every boundary, random chunks),
mutated and random bytes (never a crash: a value, notEnoughData or an exception),
and random stream replies parsed into StreamBatch."""

from __future__ import annotations

import os

import hiredis
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.resp_compare import DIVERGES, norm

from fastredis._resp import AUTOCLAIM, RANGE, READ, Reader, StreamBatch

# a few thousand examples in all, about 30 s on 2 cores; FASTREDIS_FUZZ_SCALE=50 for a
# longer campaign
SCALE = int(os.environ.get("FASTREDIS_FUZZ_SCALE", "1"))


def _settings(n):
    return settings(max_examples=n * SCALE, deadline=None, suppress_health_check=list(HealthCheck))


FEW, FUZZ, MANY = _settings(150), _settings(300), _settings(600)

NOT_ENOUGH = object()

# --------------------------------------------------------------------------
# reply trees
# --------------------------------------------------------------------------


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def agg(t, items):
    return b"%s%d\r\n" % (t, len(items)) + b"".join(items)


def double(x):
    return b",%s\r\n" % repr(x).encode()


line = st.binary(max_size=16).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
text = st.text(max_size=8).map(str.encode)

leaf = st.one_of(
    line.map(lambda s: b"+" + s + b"\r\n"),
    line.map(lambda s: b"-" + s + b"\r\n"),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: b":%d\r\n" % i),
    st.binary(max_size=24).map(bulk),
    text.map(bulk),
    st.sampled_from(
        [
            b"$-1\r\n",
            b"*-1\r\n",
            b"_\r\n",
            b"#t\r\n",
            b"#f\r\n",
            b"%-1\r\n",
            b"~-1\r\n",
            b"$0\r\n\r\n",
        ]
    ),
    st.floats().map(double),
    st.sampled_from([b",inf\r\n", b",-inf\r\n", b",nan\r\n", b",-nan\r\n", b",1.\r\n", b",.5\r\n"]),
    st.integers(-(10**30), 10**30).map(lambda i: b"(%d\r\n" % i),
    st.tuples(st.sampled_from([b"txt", b"mkd"]), st.binary(max_size=12)).map(
        lambda tb: b"=%d\r\n%s:%s\r\n" % (len(tb[1]) + 4, tb[0], tb[1])
    ),
)

# unique, hashable, injective-to-decode map keys (hiredis 3.5 mishandles duplicates)
map_keys = st.text(alphabet="abcdefgh", max_size=4).map(str.encode)


def aggregates(children):
    lists = st.lists(children, max_size=5)
    return st.one_of(
        lists.map(lambda xs: agg(b"*", xs)),
        lists.map(lambda xs: agg(b"~", xs)),
        lists.map(lambda xs: agg(b">", xs)),
        st.dictionaries(map_keys, children, max_size=4).map(
            lambda d: b"%%%d\r\n" % len(d) + b"".join(bulk(k) + v for k, v in d.items())
        ),
        st.lists(st.tuples(children, children), max_size=2).map(
            lambda ps: b"|%d\r\n" % len(ps) + b"".join(a + b for a, b in ps)
        ),
    )


reply = st.recursive(leaf, aggregates, max_leaves=25)
stream = st.lists(reply, min_size=1, max_size=4).map(b"".join)

KWARGS = st.sampled_from(
    [
        {},
        {"encoding": "utf-8"},
        {"encoding": "utf-8", "errors": "replace"},
        {"encoding": "latin-1"},
    ]
)

# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------


def drain(reader, decode, out):
    """gets() until notEnoughData; True once an exception was raised."""
    for _ in range(10_000):
        try:
            x = reader.gets(decode)
        except Exception as e:
            out.append(("raised", type(e).__name__, str(e)))
            return True
        if x is NOT_ENOUGH:
            return False
        out.append(norm(x))
    raise AssertionError("gets() never ran out of data")


def run(cls, pieces, decode=True, **kw):
    r = cls(notEnoughData=NOT_ENOUGH, **kw)
    out = []
    for p in pieces:
        r.feed(p)
        out.append("|")
        if drain(r, decode, out):
            break
    return out


def same(pieces, decode=True, **kw):
    ours = run(Reader, pieces, decode, **kw)
    ref = run(hiredis.Reader, pieces, decode, **kw)
    assert ours == ref


def chunked(data, sizes):
    pieces, i = [], 0
    for n in sizes:
        if i >= len(data):
            break
        pieces.append(data[i : i + n])
        i += n
    if i < len(data):
        pieces.append(data[i:])
    return pieces


# --------------------------------------------------------------------------
# valid replies vs hiredis
# --------------------------------------------------------------------------


@FUZZ
@given(stream, KWARGS, st.booleans())
def test_whole(data, kw, decode):
    same([data], decode, **kw)


@FUZZ
@given(stream, KWARGS, st.lists(st.integers(1, 40), max_size=30))
def test_random_chunks(data, kw, sizes):
    same(chunked(data, sizes), True, **kw)


@FEW
@given(stream.filter(lambda d: len(d) <= 150), KWARGS)
def test_split_at_every_boundary(data, kw):
    for i in range(len(data) + 1):
        same([data[:i], data[i:]], True, **kw)


@FEW
@given(stream.filter(lambda d: len(d) <= 120))
def test_byte_by_byte(data):
    same([data[i : i + 1] for i in range(len(data))], True, encoding="utf-8")


# --------------------------------------------------------------------------
# mutated and random bytes: never a crash
# --------------------------------------------------------------------------

RESP_BYTES = b"+-:$*%~>|_#,(=!\r\n0123456789-.tfinaxyz"
fragments = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"\r\n",
                b"*2\r\n",
                b"*-1\r\n",
                b"$-1\r\n",
                b"$3\r\n",
                b"%1\r\n",
                b"~2\r\n",
                b">1\r\n",
                b"|1\r\n",
                b"_\r\n",
                b":1\r\n",
                b"$0\r\n\r\n",
                b"*99999999\r\n",
                b"$2147483648\r\n",
                b"*1\r\n" * 40,
                b"=4\r\ntxt:",
                b"!3\r\nERR\r\n",
                b"#t\r\n",
                b",1e5\r\n",
                b"(-1\r\n",
                b"-E\r\n",
            ]
        ),
        st.binary(max_size=6),
        st.binary(max_size=6, min_size=1).map(
            lambda b: bytes(RESP_BYTES[c % len(RESP_BYTES)] for c in b)
        ),
    ),
    max_size=20,
).map(b"".join)


def mutate(data, draw):
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "digit"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "insert" or not data:
            data[i:i] = bytes([draw(st.sampled_from(RESP_BYTES))])
        elif op == "delete":
            del data[i]
        elif op == "digit":
            data[i] = draw(st.sampled_from(b"0123456789-"))
        else:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def no_crash(pieces, kind=None, **kw):
    """Feed and drain: every outcome is a value, notEnoughData or an exception."""
    r = Reader(notEnoughData=NOT_ENOUGH, **kw)
    if kind is not None:
        r.expect_batch(kind)
    for p in pieces:
        r.feed(p)
        for _ in range(10_000):
            try:
                x = r.gets()
            except Exception:
                break
            if x is NOT_ENOUGH:
                break
            if isinstance(x, StreamBatch):
                check_batch(x)
            if kind is not None:
                r.expect_batch(kind)
    return r


@FUZZ
@given(st.data())
def test_mutated_replies(data):
    raw = mutate(data.draw(stream), data.draw)
    no_crash([raw])
    no_crash(chunked(raw, data.draw(st.lists(st.integers(1, 9), max_size=20))), encoding="utf-8")
    if not DIVERGES.search(raw):
        same([raw])


@MANY
@given(fragments, st.lists(st.integers(1, 12), max_size=20))
def test_garbage_never_crashes(raw, sizes):
    no_crash([raw])
    no_crash(chunked(raw, sizes), encoding="utf-8")
    for kind in (READ, RANGE, AUTOCLAIM):
        no_crash(chunked(raw, sizes), kind)


@MANY
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(raw):
    no_crash([raw])
    no_crash([raw], READ)
    if not DIVERGES.search(raw):
        same([raw])


# --------------------------------------------------------------------------
# stream replies
# --------------------------------------------------------------------------

ids = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
small_ids = st.tuples(st.integers(0, 20), st.integers(0, 20))
values = st.one_of(st.binary(max_size=12), st.sampled_from([b"", b"\r\n", b"$1\r\n*2\r\n"]))
fields = st.one_of(
    st.none(),
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"", b"d"]), values), max_size=4),
)
entries = st.lists(st.tuples(st.one_of(ids, small_ids), fields), max_size=6)
streams = st.lists(
    st.tuples(st.binary(min_size=1, max_size=6), entries), max_size=4, unique_by=lambda s: s[0]
)


def encode_entry(eid, flds, resp3):
    head = bulk(b"%d-%d" % eid)
    if flds is None:
        return agg(b"*", [head, b"_\r\n" if resp3 else b"*-1\r\n"])
    return agg(b"*", [head, agg(b"*", [bulk(x) for kv in flds for x in kv])])


def expected(name, eid, flds):
    return (name, b"%d-%d" % eid, None if flds is None else dict(flds))


def check_batch(b):
    """Every offset inside the buffer; the accessors work."""
    off = b.offsets()
    n = len(b)
    size = b.nbytes
    for o, ln in (("id_off", "id_len"), ("key_off", "key_len"), ("val_off", "val_len")):
        assert np.all(off[o] >= 0) and np.all(off[o] + off[ln] <= size)
    assert len(off["field_first"]) == n + 1
    assert np.all(np.diff(off["field_first"]) >= 0)
    assert off["field_first"][-1] == len(off["key_off"])
    if b.kind == READ:
        assert np.all(off["entry_stream"] < max(len(b.streams), 1))
    b.to_messages()
    b.last_ids()
    b.field(b"a")


@FUZZ
@given(streams, st.booleans(), st.lists(st.integers(1, 30), max_size=40), st.booleans())
def test_xread_batches(strs, resp3, sizes, utf8):
    if resp3:
        data = b"%%%d\r\n" % len(strs) + b"".join(
            bulk(nm) + agg(b"*", [encode_entry(i, f, True) for i, f in es]) for nm, es in strs
        )
    else:
        data = agg(
            b"*",
            [
                agg(b"*", [bulk(nm), agg(b"*", [encode_entry(i, f, False) for i, f in es])])
                for nm, es in strs
            ],
        )
    want = [expected(nm, i, f) for nm, es in strs for i, f in es]
    r = Reader(notEnoughData=NOT_ENOUGH)
    r.expect_batch(READ)
    got = NOT_ENOUGH
    for p in chunked(data, sizes):
        assert got is NOT_ENOUGH
        r.feed(p)
        got = r.gets()
    assert isinstance(got, StreamBatch)
    check_batch(got)
    assert got.to_messages() == want
    assert got.streams == tuple(nm for nm, _ in strs)
    assert [got.id_at(k) for k in range(len(got))] == [i for _, es in strs for i, _ in es]
    last = {}
    for nm, es in strs:
        for i, _ in es:
            if nm not in last or i > last[nm]:
                last[nm] = i
    assert got.last_ids() == {nm: b"%d-%d" % i for nm, i in last.items()}
    assert got.field(b"d") == [
        None if f is None or b"d" not in dict(f) else dict(f)[b"d"] for _, es in strs for _, f in es
    ]
    assert got.buf == data
    # the same bytes as generic objects (hiredis): names, ids and field lists agree
    ref = hiredis.Reader()
    ref.feed(data)
    generic = ref.gets()
    pairs = generic.items() if isinstance(generic, dict) else generic
    flat = [(nm, e[0]) for nm, es in pairs for e in es]
    assert flat == [(m[0], m[1]) for m in got.to_messages()]


@FUZZ
@given(entries, st.lists(st.integers(1, 30), max_size=40), st.booleans(), st.booleans())
def test_range_and_autoclaim_batches(es, sizes, autoclaim, nils):
    items = [encode_entry(i, f, False) for i, f in es]
    if nils:
        items = [x for item in items for x in (item, b"*-1\r\n")]
    data = agg(b"*", items)
    kind = RANGE
    if autoclaim:
        kind = AUTOCLAIM
        data = agg(b"*", [bulk(b"0-1"), data, agg(b"*", [bulk(b"1-0")])])
    r = Reader(notEnoughData=NOT_ENOUGH)
    r.expect_batch(kind, "latin-1")
    got = NOT_ENOUGH
    for p in chunked(data, sizes):
        r.feed(p)
        got = r.gets()
    check_batch(got)

    def dec(x):
        return x.decode("latin-1")

    assert got.to_messages() == [
        (None, dec(b"%d-%d" % i), None if f is None else {dec(k): dec(v) for k, v in f})
        for i, f in es
    ]
    if autoclaim:
        assert (got.cursor, got.deleted) == ("0-1", ["1-0"])
