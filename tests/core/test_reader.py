"""fastredis._resp.Reader as a drop-in for hiredis.Reader: every RESP2/RESP3 type,
the constructor and feed() arguments, errors, incremental input. hiredis.Reader is
the oracle: the same bytes and arguments must give the same replies."""

from __future__ import annotations

import time

import hiredis
import pytest
from support.resp_compare import norm

from fastredis import _resp
from fastredis._resp import PushNotification, Reader

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def outcomes(reader, decode=True, limit=8):
    """gets() until notEnoughData (False) or an exception."""
    out = []
    for _ in range(limit):
        try:
            x = reader.gets(decode)
        except Exception as e:
            out.append(("raised", type(e).__name__, str(e)))
            break
        if x is False:
            break
        out.append(norm(x))
    return out


def both(data, decode=True, **kw):
    ours, ref = Reader(**kw), hiredis.Reader(**kw)
    ours.feed(data)
    ref.feed(data)
    return outcomes(ours, decode), outcomes(ref, decode)


# Every type, valid and invalid, as hiredis 3.5 handles them.
CASES = [
    # simple strings and errors
    b"+OK\r\n",
    b"+\r\n",
    b"+caf\xc3\xa9\r\n",
    b"+\xff\xfe\r\n",
    b"+a\rb\r\n",
    b"+a\nb\r\n",
    b"+a\r\r\n",
    b"-ERR unknown command\r\n",
    b"-ERR \xff invalid utf-8\r\n",
    b"-ERR caf\xc3\xa9\r\n",
    b"-WRONGTYPE Operation\r\n",
    b"-\r\n",
    b"-a\nb\r\n",
    # integers
    b":0\r\n",
    b":12\r\n",
    b":-12\r\n",
    b":9223372036854775807\r\n",
    b":-9223372036854775808\r\n",
    b":9223372036854775808\r\n",
    b":-9223372036854775809\r\n",
    b":99999999999999999999999\r\n",
    b":\r\n",
    b":-\r\n",
    b":-0\r\n",
    b":007\r\n",
    b":+5\r\n",
    b": 5\r\n",
    b":5 \r\n",
    b":1a\r\n",
    # bulk strings
    b"$3\r\nabc\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"$-2\r\n",
    b"$-0\r\n",
    b"$03\r\nabc\r\n",
    b"$+3\r\nabc\r\n",
    b"$\r\nabc\r\n",
    b"$x\r\n",
    b"$4\r\na\r\nb\r\n",
    b"$3\r\nabcde\r\n",
    b"$3\r\nabcXY:1\r\n",
    b"$2\r\n\xff\xfe\r\n",
    b"$5\r\ncaf\xc3\xa9\r\n",
    # arrays
    b"*0\r\n",
    b"*-1\r\n",
    b"*-2\r\n",
    b"*2\r\n:1\r\n:2\r\n",
    b"*3\r\n$1\r\na\r\n*-1\r\n$-1\r\n",
    b"*2\r\n*1\r\n*0\r\n+x\r\n",
    b"*1\r\n-ERR inside\r\n",
    b"*2\r\n$1\r\n\xff\r\n:7\r\n",
    b"*4294967296\r\n",
    b"*x\r\n",
    b"*01\r\n:1\r\n",
    # RESP3
    b"_\r\n",
    b"_x\r\n",
    b"#t\r\n",
    b"#T\r\n",
    b"#f\r\n:1\r\n",
    b"#F\r\n",
    b"#x\r\n",
    b"#tt\r\n",
    b"#\r\n",
    b",1.5\r\n",
    b",-1.5\r\n",
    b",0\r\n",
    b",-0\r\n",
    b",1e5\r\n",
    b",1.5E-3\r\n",
    b",1.\r\n",
    b",.5\r\n",
    b",inf\r\n",
    b",-inf\r\n",
    b",INF\r\n",
    b",nan\r\n",
    b",-nan\r\n",
    b",NaN\r\n",
    b",+1\r\n",
    b", 1\r\n",
    b",1 \r\n",
    b",0x1p3\r\n",
    b",infinity\r\n",
    b",+inf\r\n",
    b",inf+\r\n",
    b",nan-\r\n",
    b",1e400\r\n",
    b",1e-400\r\n",
    b",1e-310\r\n",
    b",4.9e-324\r\n",
    b",2e-324\r\n",
    b",0e-999\r\n",
    b",1e\r\n",
    b",e5\r\n",
    b",.\r\n",
    b",-\r\n",
    b",\r\n",
    b"," + b"1" * 325 + b"\r\n",
    b"," + b"1" * 326 + b"\r\n",
    b"(12345678901234567890123\r\n",
    b"(-12\r\n",
    b"(\r\n",
    b"(-\r\n",
    b"(007\r\n",
    b"(1-2\r\n",
    b"(abc\r\n",
    b"=7\r\ntxt:abc\r\n",
    b"=4\r\ntxt:\r\n",
    b"=8\r\nmkd:\xc3\xa9x\r\n",
    b"=4\r\ntxtx\r\n",
    b"=3\r\nab:\r\n",
    b"=0\r\n\r\n",
    b"=-1\r\n",
    b"%0\r\n",
    b"%-1\r\n",
    b"%1\r\n+a\r\n:1\r\n",
    b"%2\r\n+a\r\n:1\r\n+a\r\n:2\r\n",
    b"%2\r\n:1\r\n$1\r\nx\r\n_\r\n#t\r\n",
    b"%1\r\n,1.5\r\n-ERR v\r\n",
    b"%1\r\n-ERR k\r\n:1\r\n",
    b"%1\r\n%1\r\n:1\r\n:2\r\n:3\r\n",
    b"~0\r\n",
    b"~-1\r\n",
    b"~3\r\n:1\r\n:1\r\n+a\r\n",
    b"~1\r\n~1\r\n:1\r\n",
    b">0\r\n",
    b">-1\r\n",
    b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
    b">1\r\n>1\r\n:1\r\n",
    b"*1\r\n>1\r\n:1\r\n",
    b"|1\r\n+key\r\n:1\r\n:5\r\n",
    b"*2\r\n|1\r\n+a\r\n:1\r\n:5\r\n:6\r\n",
    b"|0\r\n",
    b"|-1\r\n",
    # bad type bytes (hiredis's message escapes them)
    b"x\r\n",
    b"?\r\n",
    b"\r\n",
    b"\n",
    b"\t",
    b"\\",
    b'"',
    b"\x00",
    b"\x07",
    b"\x08",
    b"\xff",
    b" ",
    b"$-1\r\nxx",
    # several replies in one buffer
    b"+a\r\n:1\r\n$1\r\nb\r\n*1\r\n_\r\n",
]

KWARGS = [
    {},
    {"encoding": "utf-8"},
    {"encoding": "utf-8", "errors": "replace"},
    {"encoding": "latin-1"},
    {"errors": "strict"},
]


@pytest.mark.parametrize("kw", KWARGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("decode", [True, False])
@pytest.mark.parametrize("data", CASES, ids=repr)
def test_same_as_hiredis(data, decode, kw):
    ours, ref = both(data, decode, **kw)
    assert ours == ref


# hiredis raises TypeError for an unhashable map key as soon as it has the key; we
# raise it once the whole reply is read (see test_unhashable_map_key_...)
UNHASHABLE = {b"%1\r\n%1\r\n:1\r\n:2\r\n:3\r\n"}


@pytest.mark.parametrize("data", [c for c in CASES if c not in UNHASHABLE], ids=repr)
def test_same_as_hiredis_byte_by_byte(data):
    ours, ref = Reader(encoding="utf-8"), hiredis.Reader(encoding="utf-8")
    got, want = [], []
    for i in range(len(data)):
        ours.feed(data[i : i + 1])
        ref.feed(data[i : i + 1])
        got.append(outcomes(ours))
        want.append(outcomes(ref))
        if want[-1] and want[-1][-1][0] == "raised":
            break
    assert got == want


def test_types_of_values():
    r = Reader()
    r.feed(b"*9\r\n+s\r\n:1\r\n$1\r\nb\r\n_\r\n#t\r\n,2.5\r\n(7\r\n=5\r\ntxt:v\r\n-E\r\n")
    s, i, b, nil, t, d, big, verb, err = r.gets()
    assert (s, i, b, nil, t, d, big, verb) == (b"s", 1, b"b", None, True, 2.5, b"7", b"v")
    assert type(t) is bool and type(d) is float
    assert isinstance(err, _resp.ReplyError) and isinstance(err, hiredis.ReplyError)
    assert err.args == ("E",)


def test_push_notification_is_a_hiredis_push_notification():
    r = Reader()
    r.feed(b">2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n")
    push = r.gets()
    assert type(push) is PushNotification
    assert isinstance(push, hiredis.PushNotification) and isinstance(push, list)
    assert push == [b"invalidate", [b"k"]]


def test_blob_error_is_an_error_reply():
    """hiredis 3.5 rejects the RESP3 blob error type byte; we return it like '-'."""
    r = Reader(replyError=KeyError)
    r.feed(b"!22\r\nSYNTAX invalid\r\nsyntax\r\n*1\r\n!3\r\nE x\r\n")
    err = r.gets()
    assert type(err) is KeyError and err.args == ("SYNTAX invalid\r\nsyntax",)
    nested = r.gets()
    assert type(nested[0]) is KeyError and nested[0].args == ("E x",)


def test_errors_are_utf8_replace_whatever_the_encoding():
    for kw in ({}, {"encoding": "latin-1"}, {"encoding": "utf-8", "errors": "strict"}):
        r = Reader(**kw)
        r.feed(b"-ERR caf\xc3\xa9 \xff\r\n")
        assert r.gets().args == ("ERR café \ufffd",)


def test_decode_error_raised_after_the_whole_reply():
    r = Reader(encoding="utf-8")
    r.feed(b"*3\r\n$1\r\n\xff\r\n$1\r\n\xfe\r\n:1")
    assert r.gets() is False
    r.feed(b"\r\n+next\r\n")
    with pytest.raises(UnicodeDecodeError) as info:
        r.gets()
    assert info.value.object == b"\xff"  # the first error
    assert r.gets() == "next"
    assert r.gets() is False


def test_gets_false_disables_decoding():
    r = Reader(encoding="utf-8")
    r.feed(b"$2\r\nhi\r\n$2\r\nhi\r\n+ok\r\n(1\r\n=5\r\ntxt:x\r\n")
    assert r.gets(False) == b"hi"
    assert r.gets() == "hi"
    assert r.gets(decode=False) == b"ok"
    assert r.gets(False) == b"1"
    assert r.gets(False) == b"x"


def test_unhashable_map_key_raises_type_error_and_reader_stays_usable():
    """hiredis raises TypeError and then fails forever; we raise it once the reply is
    read and go on with the next reply."""
    r = Reader()
    r.feed(b"%2\r\n*1\r\n:1\r\n:1\r\n+k\r\n:2\r\n+after\r\n")
    with pytest.raises(TypeError):
        r.gets()
    assert r.gets() == b"after"
    ref = hiredis.Reader()
    ref.feed(b"%1\r\n*1\r\n:1\r\n:1\r\n")
    with pytest.raises(TypeError):
        ref.gets()


def test_duplicate_map_keys_last_wins():
    """As in a dict built from the pairs. (hiredis 3.5 gets this wrong: it gives
    {b"a": None, b"b": 3} here.) Redis never repeats a key in a map."""
    r = Reader()
    r.feed(b"%3\r\n+a\r\n:1\r\n+b\r\n:2\r\n+a\r\n:3\r\n")
    assert r.gets() == {b"a": 3, b"b": 2}
    ours, ref = both(b"%2\r\n+a\r\n:1\r\n+a\r\n:2\r\n")
    assert ours == ref == [("dict", [(("bytes", b"a"), ("int", 2))])]


def _depth(x):
    d = 0
    while isinstance(x, list):
        assert len(x) == 1
        x, d = x[0], d + 1
    return d, x


def test_nesting_depth_limit_matches_hiredis():
    for depth in (7, 64, 1024, 1025, 2000):
        data = b"*1\r\n" * depth + b":1\r\n"
        got = []
        for cls in (Reader, hiredis.Reader):
            r = cls()
            r.feed(data)
            try:
                got.append(_depth(r.gets()))
            except Exception as e:
                got.append(("raised", type(e).__name__, str(e)))
        assert got[0] == got[1], depth
        assert got[0] == (
            (depth, 1)
            if depth <= 1024
            else ("raised", "ProtocolError", "Max nesting depth exceeded")
        )
    r = Reader()
    r.feed(b"*1\r\n" * 1024 + b"*")  # the type byte is enough to know
    with pytest.raises(_resp.ProtocolError, match="Max nesting depth exceeded"):
        r.gets()


# --------------------------------------------------------------------------
# constructor, feed(), state
# --------------------------------------------------------------------------


def test_constructor_arguments_like_hiredis():
    for kw, exc in [
        ({"protocolError": 5}, TypeError),
        ({"replyError": "x"}, TypeError),
        ({"encoding": "bogus"}, LookupError),
        ({"encoding": "utf-8", "errors": "bogus"}, LookupError),
        ({"errors": "bogus"}, LookupError),
        ({"encoding": b"utf-8"}, TypeError),
    ]:
        with pytest.raises(exc):
            hiredis.Reader(**kw)
        with pytest.raises(exc):
            Reader(**kw)


def test_custom_error_classes_and_sentinel():
    class Proto(Exception):
        pass

    sentinel = object()
    r = Reader(protocolError=Proto, replyError=lambda msg: ("E", msg), notEnoughData=sentinel)
    assert r.gets() is sentinel
    r.feed(b"-ERR x\r\n+O")
    assert r.gets() == ("E", "ERR x")
    assert r.gets() is sentinel
    r.feed(b"K\r\n?")
    assert r.gets() == b"OK"
    with pytest.raises(Proto, match='got "\\?" as reply type byte'):
        r.gets()


def test_protocol_error_is_sticky_and_clears_the_buffer():
    for cls in (Reader, hiredis.Reader):
        r = cls()
        r.feed(b":1\r\nx\r\n")
        assert r.gets() == 1
        for _ in range(3):
            with pytest.raises(Exception, match='got "x" as reply type byte'):
                r.gets()
        r.feed(b"+OK\r\n")  # ignored
        with pytest.raises(Exception, match='got "x"'):
            r.gets()
        assert r.len() == 0
        assert not r.has_data()


def test_default_protocol_error_class():
    r = Reader()
    r.feed(b"$-5\r\n")
    with pytest.raises(_resp.ProtocolError) as info:
        r.gets()
    assert isinstance(info.value, hiredis.ProtocolError)
    assert str(info.value) == "Bulk string length out of range"


def test_redis_py_style_arguments():
    redis = pytest.importorskip("redis")
    from redis.exceptions import InvalidResponse, ResponseError

    r = Reader(
        protocolError=InvalidResponse,
        replyError=ResponseError,
        errors="strict",
        notEnoughData=object(),
    )
    r.feed(b"-ERR nope\r\n*1\r\n$1\r\nx\r\n")
    assert isinstance(r.gets(), ResponseError)
    assert r.gets() == [b"x"]
    r.feed(b"^")
    with pytest.raises(InvalidResponse):
        r.gets()
    assert redis  # imported for the skip


def test_feed_arguments_like_hiredis():
    for args in [(b"ab", -1), (b"ab", 3), (b"ab", 0, 3), (b"ab", 1, -2), (b"ab", 1, 2)]:
        with pytest.raises(ValueError) as ref:
            hiredis.Reader().feed(*args)
        with pytest.raises(ValueError) as ours:
            Reader().feed(*args)
        assert str(ours.value) == str(ref.value)
    for data in (b"xx:5\r\n", bytearray(b"xx:5\r\n"), memoryview(b"xx:5\r\n")):
        r = Reader()
        r.feed(data, 2)
        assert r.gets() == 5
    r = Reader()
    r.feed(b"xx:55yy", 2, 3)
    r.feed(b"\r\n")
    assert r.gets() == 55
    r.feed("+é\r\n")  # str: UTF-8, as hiredis
    assert r.gets() == "é".encode()
    r.feed(b"")
    r.feed(b"abc", 3, 0)
    assert r.gets() is False


def test_feed_copies_mutable_buffers():
    buf = bytearray(b"$3\r\nabc\r\n")
    r = Reader()
    r.expect_batch(_resp.RANGE)
    r.feed(buf[:5])
    r.feed(buf, 5)
    buf[:] = b"X" * len(buf)
    mv = memoryview(bytearray(b"+ok\r\n"))
    r2 = Reader()
    r2.feed(mv)
    mv[1] = ord("X")
    assert r2.gets() == b"ok"


def test_has_data_and_len():
    r = Reader()
    assert not r.has_data() and r.len() == 0
    r.feed(b"+OK\r\n+O")
    assert r.has_data() and r.len() == 7
    assert r.gets() == b"OK"
    assert r.has_data()
    assert r.gets() is False
    r.feed(b"K\r\n")
    assert r.gets() == b"OK"
    assert not r.has_data()
    # tokens of a partial reply that were parsed already do not count (as hiredis)
    r.feed(b"*2\r\n:1\r\n")
    assert r.gets() is False
    assert not r.has_data()
    r.feed(b":2")
    assert r.has_data()
    r.feed(b"\r\n")
    assert r.gets() == [1, 2]


def test_set_encoding():
    r = Reader(encoding="utf-8")
    r.feed(b"+\xc3\xa9\r\n+a\r\n+\xc3\xa9\r\n$1\r\n\xff\r\n")
    assert r.gets() == "é"
    r.set_encoding(None)
    assert r.gets() == b"a"
    r.set_encoding(encoding="latin-1", errors="strict")
    assert r.gets() == "Ã©"
    r.set_encoding("utf-8", "replace")
    assert r.gets() == "\ufffd"
    with pytest.raises(LookupError):
        r.set_encoding("bogus")
    with pytest.raises(LookupError):
        r.set_encoding("utf-8", "bogus")


def test_maxbuf():
    r = Reader()
    assert r.getmaxbuf() == hiredis.Reader().getmaxbuf()
    r.setmaxbuf(0)
    assert r.getmaxbuf() == 0
    with pytest.raises(ValueError):
        r.setmaxbuf(-1)


def test_setmaxbuf_none_resets_the_default_like_hiredis():
    default = hiredis.Reader().getmaxbuf()
    r, h = Reader(), hiredis.Reader()
    for reader in (r, h):
        reader.setmaxbuf(0)
        reader.setmaxbuf(None)
    assert r.getmaxbuf() == h.getmaxbuf() == default
    with pytest.raises(TypeError):
        r.setmaxbuf("1024")


def test_gets_while_building_is_refused():
    holder = {}

    def reply_error(msg):
        return holder["r"].gets()

    r = holder["r"] = Reader(replyError=reply_error)
    r.feed(b"-E\r\n+next\r\n")
    with pytest.raises(RuntimeError):
        r.gets()
    assert r.gets() == b"next"


def test_feed_while_building_is_refused():
    holder = {}

    def reply_error(msg):
        holder["r"].feed(b"+x\r\n")
        return msg

    r = holder["r"] = Reader(replyError=reply_error)
    r.feed(b"-E\r\n")
    with pytest.raises(RuntimeError):
        r.gets()


# --------------------------------------------------------------------------
# limits and incremental input
# --------------------------------------------------------------------------


def test_huge_declared_lengths_are_rejected_without_allocating():
    r = Reader()
    r.feed(b"$536870913\r\n")  # 512 MB + 1
    with pytest.raises(_resp.ProtocolError, match="Bulk string length out of range"):
        r.gets()
    r = Reader()
    r.feed(b"*9223372036854775807\r\n")
    with pytest.raises(_resp.ProtocolError, match="Multi-bulk length out of range"):
        r.gets()
    r = Reader()
    r.feed(b"*99999999999999999999\r\n")
    with pytest.raises(_resp.ProtocolError, match="Bad multi-bulk length"):
        r.gets()
    # the largest count allowed: just waits for the elements (hiredis allocates them)
    r = Reader()
    r.feed(b"*4294967295\r\n:1\r\n")
    assert r.gets() is False
    r = Reader()
    r.feed(b"%4294967295\r\n")
    assert r.gets() is False


def test_big_bulk_fed_in_chunks_is_not_quadratic():
    size, chunk = 32 << 20, 64 << 10
    payload = bytes(range(256)) * (size // 256)
    data = b"$%d\r\n" % size + payload + b"\r\n"
    r = Reader()
    t = time.perf_counter()
    results = []
    for i in range(0, len(data), chunk):
        r.feed(data[i : i + chunk])
        results.append(r.gets())
    elapsed = time.perf_counter() - t
    assert results[:-1] == [False] * (len(results) - 1)
    assert results[-1] == payload
    assert elapsed < 2.0, elapsed


def test_big_bulk_fed_in_chunks_grows_the_buffer_once():
    import tracemalloc

    size, chunk = (8 << 20) + 100, 64 << 10  # doubling would reach 16 MB
    payload = b"y" * size
    data = b"$%d\r\n" % size + payload + b"\r\n"
    parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for as_bytearray in (False, True):
        r = Reader()
        tracemalloc.start()
        try:
            for part in parts:
                r.feed(bytearray(part) if as_bytearray else part)
                out = r.gets()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out == payload
        assert peak < 2 * len(data) + (1 << 20), peak  # the buffer and the reply


def test_declared_length_over_the_limit_allocates_nothing():
    import tracemalloc

    for head in (b"$536870913\r\n", b"*1\r\n$536870913\r\n", b"=536870913\r\n"):
        r = Reader()
        tracemalloc.start()
        try:
            r.feed(bytearray(head[:-3]))
            assert r.gets() is False
            r.feed(head[-3:] + b"x" * 1000)
            with pytest.raises(_resp.ProtocolError, match="out of range"):
                r.gets()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, peak


def test_long_line_fed_in_chunks_is_not_quadratic():
    line = b"x" * (16 << 20)
    for data in (b"+" + line + b"\r\n", b"$" + b"1" * 100 + line + b"\r\n"):
        r = Reader()
        t = time.perf_counter()
        for i in range(0, len(data), 64 << 10):
            r.feed(data[i : i + (64 << 10)])
            try:
                out = r.gets()
            except _resp.ProtocolError:
                out = "error"
        assert time.perf_counter() - t < 2.0
        assert out in (line, "error")
    # the search resumes after a '\r' that was the last byte
    r = Reader()
    r.feed(b"+ab\r")
    assert r.gets() is False
    r.feed(b"\n")
    assert r.gets() == b"ab"
    r.feed(b":12\r")
    assert r.gets() is False
    r.feed(b"\n")
    assert r.gets() == 12


def test_many_small_replies_in_one_feed():
    n = 20000
    data = b"".join(b"*2\r\n$3\r\nkey\r\n:%d\r\n" % i for i in range(n))
    r = Reader()
    r.feed(data)
    for i in range(n):
        assert r.gets() == [b"key", i]
    assert r.gets() is False
    assert not r.has_data()


def test_split_at_every_boundary():
    data = (
        b"*3\r\n$5\r\nhello\r\n%1\r\n+k\r\n,1.25\r\n>2\r\n$4\r\na\r\nb\r\n#f\r\n"
        b"-ERR x\r\n(123\r\n=6\r\ntxt:ab\r\n"
    )
    expected = outcomes(_fed(hiredis.Reader(encoding="utf-8"), data))
    for i in range(len(data) + 1):
        for cls in (Reader, hiredis.Reader):
            r = cls(encoding="utf-8")
            got = []
            r.feed(data[:i])
            got += outcomes(r)
            r.feed(data[i:])
            got += outcomes(r)
            assert got == expected, (cls, i)


def _fed(reader, data):
    reader.feed(data)
    return reader


def test_missing_is_the_rest_of_the_bulk_string_gets_stopped_in() -> None:
    """What a receiver may wait for before waking its parser (0: nothing known)."""
    reader = Reader()
    assert reader.missing() == 0
    reader.feed(b"*2\r\n$10\r\n0123")
    assert reader.gets() is False
    assert reader.missing() == 8  # 6 bytes and the CRLF
    reader.feed(b"456789\r")
    assert reader.missing() == 1  # counted as bytes arrive, before the next gets()
    reader.feed(b"\n:5")
    assert reader.missing() == 0
    assert reader.gets() is False
    assert reader.missing() == 0  # stopped in a line: its length is not known
    reader.feed(b"\r\n")
    assert reader.gets() == [b"0123456789", 5]
    assert reader.missing() == 0
