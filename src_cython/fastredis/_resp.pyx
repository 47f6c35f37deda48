"""The reader: incremental RESP2/RESP3, a drop-in for hiredis.Reader, with a
zero-copy StreamBatch fast path. Tokens and the bounds rule come from _cursor.pxd,
the batch layout from _batch.pxd.

Design
------
The reader keeps the unconsumed socket bytes in one internal buffer (a private
``bytes`` object used as a growable byte array); a ``bytes`` object fed while
nothing is pending is kept as it is instead (no copy). ``gets()`` runs a *resumable
scanner* over the current reply: a C loop that validates every token exactly as
hiredis does and tracks the open aggregates on an explicit stack, so a reply fed
in N chunks is scanned once (only the last, incomplete token is looked at again;
a bulk string's declared length is checked against the buffered bytes before
anything else, so a 64 MB bulk fed in 64 KB chunks costs O(chunks)).

* Generic replies: once the scanner has found the end of a complete reply, a
  second pass builds the Python objects (hiredis's types and semantics; hiredis
  is the test oracle).
* Stream replies (after ``expect_batch``): the scanner itself records offsets
  (stream names, entry ids parsed into (ms, seq), field keys and values) into the
  C arrays of a ``StreamBatch`` while it validates (whole canonical entries take
  a fast path with no per-token bookkeeping). No Python object is made per
  entry. When the reply is exactly the buffered bytes, the buffer object itself
  (the fed ``bytes``, or the internal one) becomes ``batch.buf``: no copy at all;
  otherwise the reply region is copied once.

Every read of the buffer is inside a range cur_check() (_cursor.pxd) granted. Nesting is limited to 1024 aggregates (hiredis's limit);
bulk strings are limited to 512 MB and aggregates to 2**32-1 elements. The only
allocation made from a declared length: once a bulk string has started to arrive
and its length passed that check, the next feed() grows the buffer once to hold
all of it (exactly to the end of the reply when it is the reply's last token, so
the buffer becomes the StreamBatch's as it is) instead of doubling as the bytes
come; a length is never used to size anything before it is checked.
``recv_from(sock)`` receives into the buffer's free tail directly (no bounce
buffer); buffers of 4 MB and more are advised for transparent huge pages.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
    _PyBytes_Resize,
)
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_Decode, PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove

from fastredis._batch cimport KIND_AUTOCLAIM, KIND_RANGE, KIND_READ, StreamBatch, take_spare
from fastredis._cursor cimport (
    FR_PREFETCH,
    LITTLE_ENDIAN,
    T_AGG,
    T_ERR,
    T_NIL,
    T_STR,
    TOK_BAD,
    TOK_BULK,
    TOK_LINE,
    Cursor,
    Token,
    cur_check,
    cur_find_crlf,
    fast_bulk,
    fast_id,
    fast_uint,
    is_agg_type,
    parse_double,
    parse_id,
    read_int_line,
    read_token,
    string2ll,
)

import codecs
import os
from socket import socket as _PlainSocket

cdef extern from "Python.h":
    # CPython's memoryview internals (not the limited API): recv_from checks that no
    # export of its temporary view (a slice, a buffer) survives the call
    ctypedef struct _PyManagedBufferObject:
        Py_ssize_t exports
    ctypedef struct PyMemoryViewObject:
        _PyManagedBufferObject* mbuf
        Py_ssize_t exports

cdef extern from *:
    """
    #if defined(__linux__)
    #include <stdint.h>
    #include <sys/mman.h>
    #endif
    /* Ask for transparent huge pages for a large buffer: far fewer page faults
       while ~100 MB of fresh memory is filled (the kernel uses them on the 2 MB-
       aligned part). The whole page-aligned range is advised, not only its 2 MB-
       aligned interior: splitting malloc's mapping into several VMAs would make
       glibc's realloc (mremap) fail and fall back to copying. Advisory only:
       errors (no THP, not Linux) are ignored. */
    static void fr_hugepage(char* p, Py_ssize_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        uintptr_t a = (uintptr_t)p & ~(uintptr_t)0xFFF;
        uintptr_t b = ((uintptr_t)p + (uintptr_t)n + 0xFFF) & ~(uintptr_t)0xFFF;
        (void)madvise((void*)a, (size_t)(b - a), MADV_HUGEPAGE);
    #else
        (void)p; (void)n;
    #endif
    }
    """
    void fr_hugepage(char* p, Py_ssize_t n) noexcept nogil

cdef extern from *:
    """
    #include <errno.h>
    #if !defined(_WIN32)
    #include <sys/socket.h>
    #endif
    /* One receive of what has already arrived, without waiting: n >= 0 bytes, -1
       when nothing is there yet (or a signal came first), else -1 - errno. A socket
       with a timeout is non-blocking underneath and Python polls before each of
       its receives: a reply's bytes that are already there need no poll. */
    static Py_ssize_t fr_recv_now(int fd, char* p, Py_ssize_t n) {
    #if defined(MSG_DONTWAIT)
        Py_ssize_t got = (Py_ssize_t)recv(fd, p, (size_t)n, MSG_DONTWAIT);
        if (got >= 0)
            return got;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return -1;
        return -1 - (Py_ssize_t)errno;
    #else
        (void)fd; (void)p; (void)n;
        return -1;      /* no such flag here: recv_into (poll, then receive) */
    #endif
    }
    """
    Py_ssize_t fr_recv_now(int fd, char* p, Py_ssize_t n) noexcept nogil


# --------------------------------------------------------------------------
# Public constants and exception / reply types
# --------------------------------------------------------------------------

from fastredis._batch import AUTOCLAIM, RANGE, READ  # re-exported

globals()["StreamBatch"] = StreamBatch  # re-exported (a cimport binds no module name)

try:  # share hiredis's classes as bases so isinstance checks written for hiredis
    import hiredis as _hiredis  # (e.g. redis-py's push handling) keep working

    _PushBase = _hiredis.PushNotification
    _ErrorBase = _hiredis.HiredisError
    _ReplyErrorBase = _hiredis.ReplyError
    _ProtocolErrorBase = _hiredis.ProtocolError
except (ImportError, AttributeError):  # pragma: no cover - hiredis is a dependency
    _PushBase = list
    _ErrorBase = Exception
    _ReplyErrorBase = Exception
    _ProtocolErrorBase = Exception


class PushNotification(_PushBase):
    """A RESP3 push message (``>``), as hiredis.PushNotification (a list subclass;
    a subclass of hiredis.PushNotification when hiredis is installed)."""


class ReplyError(_ReplyErrorBase):
    """Default class for error replies (``-ERR ...``) when no replyError is given."""


class ProtocolError(_ProtocolErrorBase):
    """Default class raised for malformed input when no protocolError is given."""


_escaped_buffers = []   # buffers a recv_into / get_buffer caller kept a view of (never freed)


cdef enum:
    B_BUILD = 1                         # Reader.busy: building a reply's objects
    B_RECV = 2                          # ... or a socket is writing into the buffer

cdef enum:
    MAXDEPTH = 1024                     # hiredis's REDIS_READER_MAX_REPLY_DEPTH
    DEFAULT_MAXBUF = 16 * 1024          # hiredis's REDIS_READER_MAX_BUF
    MIN_BUF = 4096
    RECV_MIN = 64 * 1024                # recv_from: free room asked for at least
    RECV_MAX = 16 * 1024 * 1024         # ... and at most, per call
    HUGEPAGE_MIN = 4 * 1024 * 1024      # buffers this large get MADV_HUGEPAGE
    SPARE_FROM = 1024 * 1024            # batch buffers growing this large reuse a spare

cdef enum:  # scan results
    S_INCOMPLETE = 0
    S_COMPLETE = 1
    S_ERROR = 2
    S_NOMEM = 3

cdef enum:  # reply modes
    M_GENERIC = 0
    M_BATCH = 1
    M_SHAPE = 2      # batch expected, reply has the wrong shape: scan to its end
    M_EMPTY = 3      # batch expected, nil reply

cdef enum:  # roles of open aggregates in batch mode (what their children are)
    R_NONE = 0
    R_READ_ARR = 1   # RESP2 XREAD: [[name, entries], ...]
    R_READ_MAP = 2   # RESP3 XREAD: {name: entries}
    R_PAIR = 3       # [name, entries]
    R_ENTRIES = 4    # [entry, ...]
    R_ENTRY = 5      # [id, fields]
    R_FIELDS = 6     # [k, v, k, v, ...]
    R_AC_ROOT = 7    # XAUTOCLAIM: [cursor, entries(, deleted)]
    R_DELETED = 8    # [id, ...]


cdef str type_byte_message(char c):
    cdef unsigned char u = <unsigned char>c
    if c == b'\\' or c == b'"':
        s = '"\\%s"' % chr(u)
    elif c == b'\n':
        s = '"\\n"'
    elif c == b'\r':
        s = '"\\r"'
    elif c == b'\t':
        s = '"\\t"'
    elif c == b'\a':
        s = '"\\a"'
    elif c == b'\b':
        s = '"\\b"'
    elif 0x20 <= u <= 0x7e:
        s = '"%s"' % chr(u)
    else:
        s = '"\\x%02x"' % u
    return "Protocol error, got %s as reply type byte" % s


cdef inline Py_ssize_t fast_count(const Cursor* c, Py_ssize_t q, long long* cnt) noexcept nogil:
    """A canonical array header "*<n>\r\n" at q: sets *cnt, returns the index after
    it, or -1."""
    cdef uint32_t w4
    cdef unsigned int d
    if LITTLE_ENDIAN and cur_check(c, q, 4):
        memcpy(&w4, c.base + q, 4)
        d = (w4 >> 8 & 0xFF) - 48
        if (w4 & 0xFFFF00FFU) == 0x0A0D002AU and d <= 9:                 # "*d\r\n"
            cnt[0] = d
            return q + 4
    if not cur_check(c, q, 1) or c.base[q] != b'*':
        return -1
    return fast_uint(c, q + 1, cnt)


cdef inline bint fast_pair_header(const Cursor* c, Py_ssize_t p) noexcept nogil:
    """Whether "*2\r\n" (an entry's [id, fields]) is at p."""
    cdef uint32_t w4
    if not cur_check(c, p, 4):
        return 0
    if LITTLE_ENDIAN:
        memcpy(&w4, c.base + p, 4)
        return w4 == 0x0A0D322AU
    return memcmp(c.base + p, b"*2\r\n", 4) == 0


cdef int _fields_room(StreamBatch b, Py_ssize_t nf, Py_ssize_t pairs, Py_ssize_t left,
                      int64_t entries_left) noexcept:
    """Grow the field arrays before an entry of `pairs` pairs: room for every
    remaining entry having as many (bounded by the `left` bytes expected: a pair
    takes at least 12 bytes). -1 when out of memory."""
    cdef Py_ssize_t bound = nf + pairs + left // 12
    cdef Py_ssize_t target
    if pairs == 0 or entries_left > (bound - nf) // pairs:
        target = bound
    else:
        target = nf + pairs * entries_left
    b.n_fields = nf
    return b.grow_fields(target)


cdef Py_ssize_t fast_entries(StreamBatch b, const Cursor* c, Py_ssize_t p, int32_t stream,
                             int64_t max_entries, Py_ssize_t expect_end,
                             int64_t* done) noexcept:
    """Parse up to `max_entries` whole canonical entries ``*2 $id *2K ($k $v)*K``
    from p straight into the batch arrays; stops at the first entry that is not
    canonical or not complete (left to the generic path; nothing of it is
    committed). `expect_end`: where the reply is expected to end (the last batch
    reply's size; only sizes the arrays). Sets *done and returns the index after the
    last entry parsed, or -2 when out of memory."""
    cdef Py_ssize_t q, nf, ne
    cdef long long cnt = 0, j
    cdef int64_t id_off = 0, id_len = 0
    cdef uint64_t ms = 0, seq = 0
    cdef int64_t k = 0
    cdef int64_t* ko = b.key_off        # the arrays in locals: stores through them
    cdef int64_t* kl = b.key_len        # cannot be assumed not to change b's fields
    cdef int64_t* vo = b.val_off
    cdef int64_t* vl = b.val_len
    done[0] = 0
    ne = b.n_entries
    nf = b.n_fields
    while k < max_entries:
        FR_PREFETCH(c.base + p + 512)
        if not fast_pair_header(c, p):
            break
        q = fast_bulk(c, p + 4, &id_off, &id_len)
        if q < 0 or not fast_id(c, id_off, id_len, &ms, &seq):
            break
        q = fast_count(c, q, &cnt)
        if q < 0 or (cnt & 1) or cnt > 4294967295LL:
            break
        if nf + (cnt >> 1) > b.cap_fields:
            if _fields_room(b, nf, cnt >> 1, expect_end - q, max_entries - k) < 0:
                return -2
            ko = b.key_off
            kl = b.key_len
            vo = b.val_off
            vl = b.val_len
        j = 0
        while j < cnt:
            q = fast_bulk(c, q, &ko[nf], &kl[nf])
            if q < 0:
                break
            q = fast_bulk(c, q, &vo[nf], &vl[nf])
            if q < 0:
                break
            nf += 1
            j += 2
        if j < cnt:
            nf = b.n_fields             # roll back this entry's pairs
            break
        if ne >= b.cap_entries:
            b.n_entries = ne
            if b.grow_entries(ne + 1) < 0:
                return -2
        b.entry_stream[ne] = stream
        b.id_off[ne] = id_off
        b.id_len[ne] = id_len
        b.id_ms[ne] = ms
        b.id_seq[ne] = seq
        b.field_first[ne] = b.n_fields
        b.entry_nil[ne] = 0
        b.n_fields = nf
        ne += 1
        b.n_entries = ne
        p = q
        k += 1
    done[0] = k
    return p

# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

def batch_from_reply(buf, int kind, encoding=None):
    """The StreamBatch of `kind` that the stream reply `buf` (the bytes of one whole
    reply, or empty for an empty batch) gives; what a pickled batch loads through."""
    cdef Reader reader = Reader()
    reader.expect_batch(kind, encoding)
    if len(memoryview(buf)) == 0:
        return reader._new_batch()
    reader.feed(buf)
    batch = reader.gets()
    if type(batch) is not StreamBatch or reader.has_data():
        raise ValueError("not the bytes of one stream reply")
    return batch


def join_read_batches(bytes header, list batches, list starts):
    """One READ batch from READ batches of disjoint streams, without parsing again:
    its reply is `header` (``*N``/``%N`` for all their streams) followed by each
    batch's reply from `starts[i]` (its own header skipped), and its offsets are
    theirs moved with their bytes. One copy of the bytes (huge pages when large,
    without the GIL); ValueError for a start outside a batch or an offset before it."""
    cdef Py_ssize_t k = len(batches), i, hlen = len(header)
    cdef Py_ssize_t total = hlen, pos, body, start, ns = 0, ne = 0, nf = 0
    cdef const char* src
    cdef list checked = []
    cdef StreamBatch b, out
    cdef char* dst
    starts = [int(s) for s in starts]          # ours: checked once, cannot change
    if k == 0 or len(starts) != k:
        raise ValueError("join_read_batches needs one start per batch")
    for i in range(k):
        b = <StreamBatch?>batches[i]
        if (b.kind != KIND_READ or type(b.buf) is not bytes
                or b.encoding != (<StreamBatch>batches[0]).encoding):
            raise ValueError("join_read_batches joins READ batches of one encoding")
        if not 0 <= <Py_ssize_t>starts[i] <= PyBytes_GET_SIZE(b.buf):
            raise ValueError(f"start {starts[i]} outside a {len(b.buf)}-byte reply")
        total += PyBytes_GET_SIZE(b.buf) - <Py_ssize_t>starts[i]
        ns += b.n_streams
        ne += b.n_entries
        nf += b.n_fields
        checked.append(b)
    out = StreamBatch.__new__(StreamBatch)
    out.kind = KIND_READ
    out.encoding = (<StreamBatch>batches[0]).encoding
    if (out.grow_streams(ns + 1) < 0 or out.grow_entries(ne + 1) < 0
            or out.grow_fields(nf + 1) < 0 or out.reserve() < 0):
        raise MemoryError()
    buf = _sized_spare(total)
    if buf is None:
        buf = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(buf)
    if total >= HUGEPAGE_MIN:
        fr_hugepage(dst, total)
    memcpy(dst, PyBytes_AS_STRING(header), hlen)
    pos = hlen
    for i in range(k):
        b = <StreamBatch>checked[i]
        start = starts[i]
        body = PyBytes_GET_SIZE(b.buf) - start
        src = b.data + start
        with nogil:
            memcpy(dst + pos, src, body)
        if _append_moved(out, b, start, pos - start) < 0:
            raise ValueError("a batch offset lies before its start")
        pos += body
    out.field_first[out.n_entries] = out.n_fields
    out.buf = buf
    out.data = dst
    return out


cdef object _sized_spare(Py_ssize_t size):
    """A kept buffer of 1 to 1.25 x `size` bytes cut to `size`, or None."""
    cdef PyObject* p
    obj = take_spare(size, size + size // 4)
    if obj is None or PyBytes_GET_SIZE(obj) == size:
        return obj
    p = <PyObject*>obj
    Py_INCREF(obj)          # p's own reference: the only one once obj is dropped
    obj = None
    _PyBytes_Resize(&p, size)
    out = <object>p
    Py_XDECREF(p)
    return out


cdef int _append_moved(StreamBatch out, StreamBatch b, int64_t start, int64_t delta) noexcept:
    """Append b's streams, entries and fields to out (room reserved), offsets + delta;
    -1 when one lies before `start` (out is then discarded)."""
    cdef Py_ssize_t s, e, f
    cdef Py_ssize_t ns = out.n_streams, ne = out.n_entries, nf = out.n_fields
    cdef Py_ssize_t bs = b.n_streams, be = b.n_entries, bf = b.n_fields
    # the arrays in locals: stores through them cannot be assumed not to change
    # out's or b's fields, so field reads in the loops would be reloaded every time
    cdef const int64_t* src_off = b.stream_off
    cdef int64_t* dst_off = out.stream_off + ns
    for s in range(bs):
        if src_off[s] < start:
            return -1
        dst_off[s] = src_off[s] + delta
    memcpy(out.stream_len + ns, b.stream_len, bs * sizeof(int64_t))
    cdef const int32_t* src_st = b.entry_stream
    cdef int32_t* dst_st = out.entry_stream + ne
    cdef const int64_t* src_ff = b.field_first
    cdef int64_t* dst_ff = out.field_first + ne
    src_off = b.id_off
    dst_off = out.id_off + ne
    # checked after each loop, not per item, so that the loops vectorize: an offset is
    # bad when it or its distance from start is negative, and OR-ing both into `bad`
    # sets its sign bit then (an offset >= 0 and start are below 2**63: no wrap-around)
    cdef uint64_t bad = 0
    for e in range(be):
        bad |= <uint64_t>src_off[e] | (<uint64_t>src_off[e] - <uint64_t>start)
        dst_off[e] = src_off[e] + delta
        dst_st[e] = src_st[e] + <int32_t>ns
        dst_ff[e] = src_ff[e] + nf
    if bad >> 63 or start < 0:
        return -1                       # (offsets stored so far are discarded with out)
    memcpy(out.id_len + ne, b.id_len, be * sizeof(int64_t))
    memcpy(out.id_ms + ne, b.id_ms, be * sizeof(uint64_t))
    memcpy(out.id_seq + ne, b.id_seq, be * sizeof(uint64_t))
    memcpy(out.entry_nil + ne, b.entry_nil, be * sizeof(uint8_t))
    cdef const int64_t* src_k = b.key_off
    cdef const int64_t* src_v = b.val_off
    cdef int64_t* dst_k = out.key_off + nf
    cdef int64_t* dst_v = out.val_off + nf
    for f in range(bf):
        bad |= <uint64_t>src_k[f] | (<uint64_t>src_k[f] - <uint64_t>start)
        bad |= <uint64_t>src_v[f] | (<uint64_t>src_v[f] - <uint64_t>start)
        dst_k[f] = src_k[f] + delta
        dst_v[f] = src_v[f] + delta
    if bad >> 63:
        return -1
    memcpy(out.key_len + nf, b.key_len, bf * sizeof(int64_t))
    memcpy(out.val_len + nf, b.val_len, bf * sizeof(int64_t))
    out.n_streams = ns + bs
    out.n_entries = ne + be
    out.n_fields = nf + bf
    return 0


cdef object _check_callable(obj):
    if not callable(obj):
        raise TypeError("Expected a callable")
    return obj


cdef class Reader:
    """Incremental RESP2/RESP3 reader; a drop-in for ``hiredis.Reader``.

    Generic replies are the same objects hiredis.Reader returns for the same
    bytes and arguments (str/bytes, ints, floats, bools, None, lists, dicts,
    PushNotification, error objects made by ``replyError``). Known, deliberate
    differences: a blob error ``!<len>`` (RESP3) is an error reply like ``-``
    (hiredis 3.5 rejects the type byte); an unhashable map key raises TypeError
    once the whole reply is read and the reader stays usable (hiredis raises at
    once and then fails forever); bulk strings over 512 MB are rejected.

    ``expect_batch(kind, encoding)`` makes the next complete reply a
    ``StreamBatch`` (see its docs). In that mode, RESP3 push (``>``) and attribute
    (``|``) replies arriving first are returned as usual and the expectation
    stays; an error reply is returned as usual and clears it; a nil reply gives
    an empty batch; any other shape raises ``protocolError`` once the reply has
    been read in full (the reader stays usable). The expectation is cleared
    after any of these.
    """

    cdef PyObject* _bo                  # owned buffer: a private bytes object (or NULL)
    cdef Py_ssize_t ocap                # its capacity
    cdef object _ext                    # or a fed bytes object adopted without a copy
    cdef char* rbuf                     # the bytes held: in _ext or in _bo
    cdef Py_ssize_t rlen, rpos          # bytes held, start of the current reply
    cdef Py_ssize_t maxbuf
    cdef int busy                       # B_BUILD / B_RECV: rbuf must not move
    cdef object _rview                  # get_buffer's view of the free tail (or None)
    cdef Py_ssize_t _rsize              # ... and its size

    # scan state of the current reply (positions relative to rpos)
    cdef Py_ssize_t spos
    cdef int depth
    cdef int mode
    cdef bint clear_after
    cdef int64_t rem[MAXDEPTH + 1]
    cdef int64_t cnt[MAXDEPTH + 1]
    cdef uint8_t role[MAXDEPTH + 1]
    cdef const char* err_msg
    cdef char err_byte
    cdef const char* shape_msg
    cdef Py_ssize_t hint_p, hint_end    # token left incomplete at hint_p: searched up to hint_end
    cdef Py_ssize_t want_end            # a bulk string left incomplete ends there (0: none)
    cdef Py_ssize_t batch_hint          # bytes of the last stream batch reply (0: none yet)
    cdef bint want_last                 # ... and it is the last token of the reply
    cdef object perr                    # sticky protocol error message

    # configuration
    cdef object protocolError, replyError, notEnoughData
    cdef object encoding, errors
    cdef bytes enc_b, err_b
    cdef object build_err

    # stream batch state
    cdef int want_kind
    cdef object want_encoding
    cdef StreamBatch cur
    cdef int32_t cur_stream
    cdef int64_t cursor_off, cursor_len
    cdef bint has_cursor, has_deleted
    cdef int64_t* del_off
    cdef int64_t* del_len
    cdef Py_ssize_t n_del, cap_del

    def __cinit__(self):
        self._bo = NULL
        self.ocap = 0
        self._ext = None
        self.rbuf = NULL
        self.rlen = self.rpos = 0
        self.maxbuf = DEFAULT_MAXBUF
        self.busy = 0
        self._rview = None
        self._rsize = 0
        self.spos = 0
        self.hint_p = -1
        self.hint_end = 0
        self.want_end = 0
        self.want_last = 0
        self.batch_hint = 0
        self.depth = 0
        self.mode = M_GENERIC
        self.clear_after = 0
        self.err_msg = NULL
        self.err_byte = 0
        self.shape_msg = NULL
        self.want_kind = -1
        self.del_off = self.del_len = NULL
        self.n_del = self.cap_del = 0

    def __init__(self, protocolError=None, replyError=None, encoding=None, errors=None,
                 notEnoughData=False):
        self.protocolError = ProtocolError if protocolError is None else _check_callable(protocolError)
        self.replyError = ReplyError if replyError is None else _check_callable(replyError)
        self.notEnoughData = notEnoughData
        self.set_encoding(encoding, errors)

    def __dealloc__(self):
        if self._rview is not None:
            self._drop_view()
        Py_XDECREF(self._bo)
        self._bo = NULL
        free(self.del_off)
        free(self.del_len)

    # -- configuration -----------------------------------------------------------

    def set_encoding(self, encoding=None, errors=None):
        """Decode bulk/simple/verbatim/bignum strings with `encoding` (None: bytes)."""
        if self.busy:
            self._raise_busy("set_encoding")
        if encoding is not None:
            if not isinstance(encoding, str):
                raise TypeError(f"encoding must be str or None, not {type(encoding).__name__}")
            codecs.lookup(encoding)
        if errors is not None:
            if not isinstance(errors, str):
                raise TypeError(f"errors must be str or None, not {type(errors).__name__}")
            codecs.lookup_error(errors)
        self.encoding = encoding
        self.errors = errors
        self.enc_b = encoding.encode("ascii") if encoding is not None else None
        self.err_b = errors.encode("ascii") if errors is not None else None

    def getmaxbuf(self):
        return self.maxbuf

    def setmaxbuf(self, maxbuf):
        """An empty internal buffer larger than this is released (0: never; None:
        the default, as hiredis)."""
        cdef Py_ssize_t n = DEFAULT_MAXBUF if maxbuf is None else maxbuf
        if n < 0:
            raise ValueError("maxbuf value out of range")
        if self._rview is not None:
            self._drop_view()
        self.maxbuf = n

    def expect_batch(self, int kind, encoding=None):
        """Parse the next reply as a StreamBatch of `kind` (READ, RANGE, AUTOCLAIM):
        names, ids, keys and values as bytes (encoding None) or str. A nil reply
        gives an empty batch."""
        if kind != KIND_READ and kind != KIND_RANGE and kind != KIND_AUTOCLAIM:
            raise ValueError(f"unknown StreamBatch kind {kind!r}")
        if encoding is not None:
            if not isinstance(encoding, str):
                raise TypeError(f"encoding must be str or None, not {type(encoding).__name__}")
            codecs.lookup(encoding)
        self.want_kind = kind
        self.want_encoding = encoding

    # -- input -------------------------------------------------------------------

    def feed(self, buf, Py_ssize_t off=0, Py_ssize_t len=-1):
        """Append buf[off:off+len] (any contiguous buffer, or str as UTF-8)."""
        cdef Py_buffer view
        if isinstance(buf, str):
            buf = (<str>buf).encode("utf-8")
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            # hiredis's checks and messages, without its overflowing sum (hiredis
            # lets off + len wrap and fails later with "Out of memory")
            if off < 0:
                raise ValueError("negative input")
            if len == -1:
                len = view.len - off
            if len < 0:
                raise ValueError("negative input")
            if off > view.len or len > view.len - off:
                raise ValueError("input is larger than buffer size")
            if self.perr is not None:
                return                      # like hiredis: ignored once in error
            if self.busy:
                self._raise_busy("feed")
            if self._rview is not None:
                self._drop_view()
            if len > 0:
                if self.rpos >= self.rlen and type(buf) is bytes:
                    # nothing pending: keep the (immutable) object instead of a copy
                    self._ext = buf
                    self.rbuf = PyBytes_AS_STRING(buf) + off
                    self.rlen = len
                    self.rpos = 0
                else:
                    self._append(<const char*>view.buf + off, len)
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t _target(self, Py_ssize_t need, bint live) noexcept:
        """The capacity to grow to when `need` bytes (pending + fed) do not fit.

        When the scanner stopped inside a bulk string it knows where that string
        ends (its declared length was checked against the 512 MB limit first): grow
        once to hold all of it, exactly when it ends the reply (the buffer then
        becomes the StreamBatch's as it is), with some room for what follows
        otherwise. Without such a hint, or past it, double (only a buffer that holds
        pending bytes: a new reply starts from what it needs). A stream batch reply
        starts as large as the last one was: reading loops get replies alike, which
        then arrive in one buffer, never copied to a bigger one."""
        cdef Py_ssize_t cap = need
        cdef Py_ssize_t hint = self.want_end
        if hint >= need:
            if self.want_last:
                return hint
            cap = hint + (hint >> 3)
        if self.want_kind >= 0 and self.batch_hint > cap:
            cap = self.batch_hint
        if live and cap < self.ocap * 2:
            cap = self.ocap * 2
        if cap < MIN_BUF:
            cap = MIN_BUF
        return cap

    cdef int _append(self, const char* src, Py_ssize_t n) except -1:
        self._reserve(n)
        memcpy(self.rbuf + self.rlen, src, n)
        self.rlen += n
        return 0

    cdef int _reserve(self, Py_ssize_t n) except -1:
        """Make room for n more bytes at rbuf + rlen (in the owned buffer)."""
        cdef Py_ssize_t pend = self.rlen - self.rpos
        cdef Py_ssize_t need = pend + n     # what must be held afterwards
        cdef Py_ssize_t cap
        cdef object ext = self._ext          # keeps adopted bytes alive while copying
        cdef const char* old = self.rbuf + self.rpos
        cdef char* ob
        cdef PyObject* prev
        if need > self.ocap:
            cap = self._target(need, ext is None and pend > 0)
            # a batch reply growing big: a dropped big batch's buffer if one is kept,
            # at most twice as big (the buffer is cut to the reply: a much bigger
            # one would lose its pages, and the join of a cluster read its buffer)
            spare = take_spare(cap, 2 * cap) if (
                self.want_kind >= 0 and cap >= SPARE_FROM) else None
            if spare is not None:
                ob = PyBytes_AS_STRING(spare)
                if pend > 0:
                    memcpy(ob, old, pend)
                prev = self._bo
                Py_INCREF(spare)
                self._bo = <PyObject*>spare
                Py_XDECREF(prev)
                self._ext = None
                self.rlen = pend
                self.rpos = 0
                cap = PyBytes_GET_SIZE(spare)
            elif ext is None and self._bo != NULL and pend > 0 and pend * 2 >= self.ocap:
                # mostly pending bytes: realloc (large blocks are remapped, not copied)
                if self.rpos > 0:
                    memmove(self.rbuf, old, pend)
                    self.rlen = pend
                    self.rpos = 0
                try:
                    _PyBytes_Resize(&self._bo, cap)
                except MemoryError:
                    self._bo = NULL
                    self._reset_buffer()
                    self._reset_reply()
                    raise
            else:
                # adopted bytes, an idle buffer or mostly consumed bytes: a new
                # buffer, only the pending bytes copied
                if ext is not None or pend == 0:
                    Py_XDECREF(self._bo)     # idle (or none): no content to keep
                    self._bo = NULL
                    self.ocap = 0
                    if ext is None:
                        self.rbuf = NULL
                        self.rlen = self.rpos = 0
                try:
                    obj = PyBytes_FromStringAndSize(NULL, cap)
                except MemoryError:
                    if cap <= need:
                        raise
                    cap = need                # a declared length too big for memory:
                    obj = PyBytes_FromStringAndSize(NULL, cap)   # grow as data comes
                ob = PyBytes_AS_STRING(obj)
                if pend > 0:
                    memcpy(ob, old, pend)
                prev = self._bo
                Py_INCREF(obj)
                self._bo = <PyObject*>obj
                Py_XDECREF(prev)
                self._ext = None
                self.rlen = pend
                self.rpos = 0
            self.ocap = cap
            self.rbuf = PyBytes_AS_STRING(<object>self._bo)
            if cap >= HUGEPAGE_MIN:
                fr_hugepage(self.rbuf, cap)
        elif ext is not None:
            ob = PyBytes_AS_STRING(<object>self._bo)   # the idle buffer is large enough
            memcpy(ob, old, pend)
            self._ext = None
            self.rbuf = ob
            self.rlen = pend
            self.rpos = 0
        elif self.rlen + n > self.ocap:
            memmove(self.rbuf, old, pend)     # drop consumed bytes first
            self.rlen = pend
            self.rpos = 0
        return 0

    def recv_from(self, sock):
        """Receive once from `sock` straight into the internal buffer (no bounce
        buffer, no copy): `sock.recv_into(view)` on a temporary writable
        memoryview of the buffer's free tail, which is then accounted as fed.

        The room offered is at least 64 KB; while a bulk string is incomplete, enough
        for the rest of it (at most 16 MB per call). Returns the number of bytes
        received; 0 means end of file. Exceptions from recv_into (timeouts, OSError,
        BlockingIOError) propagate unchanged and nothing is accounted. The view is
        released before returning: a recv_into that keeps an export of it (a
        buffer, a slice) gets BufferError (the buffer it wrote to is then never
        freed, so that export stays valid; the reader keeps the received bytes).
        Once in protocol error, the bytes are received and dropped (as feed).
        A plain `socket.socket` is first read without waiting (bytes already
        there need no poll); only when nothing has arrived does recv_into wait as
        the socket's timeout says."""
        cdef Py_ssize_t size, n
        cdef bint escaped
        cdef int fd
        if self.busy:
            self._raise_busy("recv_from")
        if self._rview is not None:
            self._drop_view()
        if self.perr is not None:
            return sock.recv_into(bytearray(RECV_MIN))    # like feed: ignored in error
        size = self._recv_room()
        if type(sock) is _PlainSocket:
            fd = sock.fileno()
            if fd >= 0:
                self.busy = B_RECV
                with nogil:
                    n = fr_recv_now(fd, self.rbuf + self.rlen, size)
                self.busy = 0
                if n >= 0:
                    return self._received(n, size, 0)
                if n < -1:                  # as recv_into raises it (errno subclass)
                    raise OSError(-1 - n, os.strerror(-1 - n))
        view = PyMemoryView_FromMemory(self.rbuf + self.rlen, size, PyBUF_WRITE)
        self.busy = B_RECV                  # the GIL is released in recv_into
        try:
            n = sock.recv_into(view)
        finally:
            self.busy = 0
            escaped = self._release_view(view)
        return self._received(n, size, escaped)

    def get_buffer(self, Py_ssize_t sizehint=-1):
        """`asyncio.BufferedProtocol.get_buffer`: a writable memoryview of the
        internal buffer's free tail (the room recv_from offers; `sizehint` is not
        needed), to be filled and then accounted with `buffer_updated(n)`.

        Until then the view is pending: any other call (feed, gets, recv_from, a
        new get_buffer) first releases it with nothing accounted (a transport that
        got no bytes does not call buffer_updated), so a stale view never points
        into memory that has moved. Once in protocol error, the view is of a
        scratch buffer and what is written to it is dropped (as feed)."""
        cdef Py_ssize_t size
        if self.busy:
            self._raise_busy("get_buffer")
        if self._rview is not None:
            self._drop_view()
        if self.perr is not None:
            return memoryview(bytearray(RECV_MIN))
        size = self._recv_room()
        view = PyMemoryView_FromMemory(self.rbuf + self.rlen, size, PyBUF_WRITE)
        self._rview = view
        self._rsize = size
        return view

    def buffer_updated(self, Py_ssize_t nbytes):
        """`asyncio.BufferedProtocol.buffer_updated`: account `nbytes` written to
        the view `get_buffer` gave, and release that view (as recv_from: an export
        of it kept elsewhere gives BufferError, the bytes are still kept).
        RuntimeError without a pending view (ignored once in protocol error)."""
        cdef Py_ssize_t size = self._rsize
        cdef bint escaped
        view = self._rview
        if view is None:
            if self.perr is not None:
                return                      # written to the scratch buffer: dropped
            raise RuntimeError("Reader.buffer_updated() without a get_buffer() view")
        self._rview = None
        escaped = self._release_view(view)
        self._received(nbytes, size, escaped)

    cdef Py_ssize_t _recv_room(self) except -1:
        """Make room to receive into; the size of the free tail to offer."""
        cdef Py_ssize_t pend = self.rlen - self.rpos
        cdef Py_ssize_t room = RECV_MIN
        cdef Py_ssize_t rest, size, upto = RECV_MAX
        cdef Py_ssize_t rest_hint = 0
        if self.want_kind >= 0 and self.batch_hint >= SPARE_FROM:
            rest_hint = self.batch_hint - pend
        if self.want_end > pend:           # a checked bulk length: its end is known
            rest = self.want_end - pend
            if rest > RECV_MAX:
                rest = RECV_MAX
            # the reply's last token: exactly its rest (the buffer is sized to the
            # reply and becomes the StreamBatch's as it is); else at least RECV_MIN
            if self.want_last or rest > room:
                room = rest
            if self.want_last:
                upto = rest
        if upto > rest_hint > 0:
            # a big stream batch no further than the last one's size: the next
            # pipelined reply's bytes received with it would make this one's copy out
            # of the buffer (a spare's free tail is big) instead of the buffer handed
            # over (small replies: one receive for several is cheaper than a copy)
            upto = rest_hint
        self._reserve(room)
        size = self.ocap - self.rlen
        if size > upto:
            size = upto
        return size

    cdef bint _release_view(self, view) except -1:
        """Release a view of the free tail; True when it escaped (an export of it
        is kept elsewhere): its memory is then never freed and the reader goes on
        in a copy."""
        cdef PyMemoryViewObject* mv = <PyMemoryViewObject*>view
        cdef bint escaped
        if mv.mbuf == NULL:
            # cleared by the garbage collector (a cycle freed before this reader):
            # already released, unless an export of it is still held
            escaped = mv.exports != 0
        else:
            escaped = mv.exports != 0 or mv.mbuf.exports != 1
        try:
            view.release()
        except BufferError:
            escaped = 1
        if escaped:
            # the raw pointer outlives this call: never free that memory
            _escaped_buffers.append(<object>self._bo)
            self._move_to_new_buffer()
        return escaped

    cdef Py_ssize_t _received(self, Py_ssize_t n, Py_ssize_t size, bint escaped) except -1:
        if n < 0 or n > size:
            raise ValueError(f"{n} bytes received into a {size}-byte buffer")
        self.rlen += n
        if escaped:
            raise BufferError("a view of the reader's buffer was kept")
        return n

    cdef int _drop_view(self) except -1:
        """Release get_buffer's pending view, nothing accounted."""
        view = self._rview
        self._rview = None
        self._release_view(view)
        return 0

    cdef int _move_to_new_buffer(self) except -1:
        """Continue in a new owned buffer; the old one's reference is dropped (the
        caller keeps it). Offsets stay relative to rpos."""
        cdef const char* old = self.rbuf + self.rpos
        cdef Py_ssize_t held = self.ocap - self.rpos    # pending + possibly received
        obj = PyBytes_FromStringAndSize(old, held)
        Py_XDECREF(self._bo)
        Py_INCREF(obj)
        self._bo = <PyObject*>obj
        self.ocap = held
        self.rbuf = PyBytes_AS_STRING(obj)
        self.rlen -= self.rpos
        self.rpos = 0
        return 0

    cdef int _raise_busy(self, str name) except -1:
        if self.busy == B_RECV:
            raise RuntimeError(f"Reader.{name}() called while recv_from() is receiving")
        raise RuntimeError(f"Reader.{name}() called while a reply is being built")

    cdef void _reset_buffer(self) noexcept:
        Py_XDECREF(self._bo)
        self._bo = NULL
        self.ocap = 0
        self._ext = None
        self.rbuf = NULL
        self.rlen = self.rpos = 0

    cdef void _reset_reply(self) noexcept:
        self.hint_p = -1
        self.hint_end = 0
        self.want_end = 0
        self.want_last = 0
        self.spos = 0
        self.depth = 0
        self.mode = M_GENERIC
        self.clear_after = 0
        self.shape_msg = NULL
        self.cur = None
        self.n_del = 0
        self.has_cursor = self.has_deleted = 0

    cdef void _consumed(self) noexcept:
        """Compact or release the buffer after a reply was taken."""
        if self.rpos >= self.rlen:
            self.rpos = self.rlen = 0
            self._ext = None
            if self._bo != NULL and self.maxbuf and self.ocap > self.maxbuf:
                Py_XDECREF(self._bo)
                self._bo = NULL
                self.ocap = 0
            self.rbuf = PyBytes_AS_STRING(<object>self._bo) if self._bo != NULL else NULL
        elif self._ext is None and self.rpos >= 1024 and self.rpos >= self.rlen - self.rpos:
            memmove(self.rbuf, self.rbuf + self.rpos, self.rlen - self.rpos)
            self.rlen -= self.rpos
            self.rpos = 0

    def has_data(self):
        """Whether bytes beyond the parsed tokens are buffered (as hiredis)."""
        return self.rpos + self.spos < self.rlen

    def len(self):
        """Bytes held by the internal buffer (consumed bytes may linger until the
        buffer is compacted, as in hiredis)."""
        return self.rlen

    def missing(self):
        """Bytes known to be missing before `gets()` can get further: the rest of a
        bulk string the last `gets()` stopped in (0: none known). A receiver waking
        its reader per chunk can wait for them instead (a 1 MB reply comes in chunks
        of the sender's socket buffer, ~200 KB on a unix socket)."""
        cdef Py_ssize_t rest = self.want_end - (self.rlen - self.rpos)
        return rest if rest > 0 and self.perr is None else 0

    # -- output ------------------------------------------------------------------

    def gets(self, decode=True):
        """The next reply, or notEnoughData when it is not complete yet.
        ``gets(False)`` does not decode strings (hiredis semantics)."""
        cdef int st
        cdef Py_ssize_t start, end
        cdef int mode
        if self.perr is not None:
            self._raise_protocol(self.perr)
        if self.busy:
            self._raise_busy("gets")
        if self._rview is not None:
            self._drop_view()
        if self.rpos >= self.rlen:
            return self.notEnoughData
        st = self._scan()
        if st == S_INCOMPLETE:
            return self.notEnoughData
        if st == S_ERROR:
            msg = type_byte_message(self.err_byte) if self.err_msg == NULL else (
                <bytes>self.err_msg).decode("ascii")
            self.perr = msg
            self._reset_buffer()
            self._reset_reply()
            self.want_kind = -1
            self._raise_protocol(msg)
        if st == S_NOMEM:
            self.perr = "Out of memory"
            self._reset_buffer()
            self._reset_reply()
            self.want_kind = -1
            raise MemoryError()
        # a complete reply: [start, end)
        start = self.rpos
        end = start + self.spos
        mode = self.mode
        if self.clear_after:
            self.want_kind = -1
        self.rpos = end
        self.busy = B_BUILD     # user code (replyError, codecs) must not re-enter
        try:
            if mode == M_GENERIC:
                return self._build_reply(start, end, decode)
            if mode == M_BATCH:
                return self._finish_batch(start, end)
            if mode == M_EMPTY:
                return self._empty_batch()
            msg = (<bytes>self.shape_msg).decode("ascii") if self.shape_msg != NULL else "bad reply shape"
            self._raise_protocol(msg)
        finally:
            self.busy = 0
            self._reset_reply()
            self._consumed()

    cdef int _raise_protocol(self, msg) except -1:
        e = self.protocolError(msg)
        if isinstance(e, BaseException):
            raise e
        raise ProtocolError(msg)

    # -- the scanner -------------------------------------------------------------

    cdef inline int _fail(self, const char* msg) noexcept:
        self.err_msg = msg
        return S_ERROR

    cdef inline void _shape(self, const char* msg) noexcept:
        self.mode = M_SHAPE
        self.shape_msg = msg

    cdef inline int _pop(self, int d) noexcept:
        """A child of the aggregate at depth d-1 is complete: close every aggregate
        that completes; the new depth."""
        while d > 0:
            self.rem[d - 1] -= 1
            if self.rem[d - 1] > 0:
                break
            d -= 1
        return d

    cdef inline int _complete(self, Py_ssize_t p) noexcept:
        self.spos = p
        self.depth = 0
        return S_COMPLETE

    cdef void _want(self, Py_ssize_t end, int d) noexcept:
        """A bulk string at depth d is incomplete and ends at `end` (its length is
        checked): tell feed()/recv_from() how much is coming, and whether it is the
        reply's last token."""
        cdef int i
        self.want_end = end
        self.want_last = 1
        for i in range(d):
            if self.rem[i] != 1:
                self.want_last = 0
                break

    cdef int _scan(self) noexcept:
        """Validate tokens from rpos+spos on: S_INCOMPLETE, S_COMPLETE, S_ERROR or
        S_NOMEM. A line is searched for its CRLF once: when the token at p was left
        incomplete, the search resumes where it stopped (minus a '\\r')."""
        cdef Cursor c
        cdef Token t
        cdef Py_ssize_t p = self.spos, from_
        cdef int64_t done = 0
        cdef int d = self.depth
        cdef int r, newrole
        cdef bint nocrlf = 0
        cdef const char* err = NULL
        cdef Py_ssize_t expect_end          # arrays are sized for this much (bytes)
        c.base = self.rbuf + self.rpos
        c.end = self.rlen - self.rpos
        self.want_end = 0
        # a batch reply is sized like the last one (bounded by bytes really received
        # then): its arrays grow once, not as each piece arrives
        expect_end = self.batch_hint if self.batch_hint > c.end else c.end
        while cur_check(&c, p, 1):
            if d > 0 and self.mode == M_BATCH and self.role[d - 1] == R_ENTRIES:
                # fast path: whole canonical entries, no per-token bookkeeping
                p = fast_entries(self.cur, &c, p, self.cur_stream, self.rem[d - 1], expect_end,
                                 &done)
                if p == -2:
                    return S_NOMEM
                self.rem[d - 1] -= done
                if self.rem[d - 1] == 0:        # the entries array is complete
                    d = self._pop(d - 1)
                    if d == 0:
                        return self._complete(p)
                    continue
                if not cur_check(&c, p, 1):
                    break
            from_ = p + 1
            if self.hint_p == p and self.hint_end - 1 > from_:
                from_ = self.hint_end - 1
            if d >= MAXDEPTH and is_agg_type(c.base[p]):
                return self._fail("Max nesting depth exceeded")
            r = read_token(&c, p, from_, &t, &err)
            if r == TOK_LINE:
                nocrlf = 1
                break
            if r == TOK_BULK:
                self._want(t.end, d)
                break
            if r == TOK_BAD:
                if err == NULL:
                    self.err_byte = t.type
                return self._fail(err)
            newrole = R_NONE
            if d == 0:
                newrole = self._root(t.type, t.kind, t.count)
            elif self.mode == M_BATCH:
                newrole = self._batch_token(&c, &t, d)
            if newrole < 0:
                return S_NOMEM
            p = t.end
            if newrole == R_ENTRIES and t.count > 0 and self.mode == M_BATCH:
                # reserve the entries (bounded by the bytes expected: >= 15 each)
                if self._reserve_entries((expect_end - p) // 15 + 1, t.count) < 0:
                    return S_NOMEM
            if t.kind == T_AGG and t.count > 0:
                self.rem[d] = t.count
                self.cnt[d] = t.count
                self.role[d] = <uint8_t>newrole
                d += 1
                continue
            d = self._pop(d)
            if d == 0:
                return self._complete(p)
        self.spos = p
        self.depth = d
        if nocrlf:                          # no CRLF in [from_, end)
            self.hint_p = p
            self.hint_end = c.end
        else:
            self.hint_p = -1
        return S_INCOMPLETE

    cdef int _reserve_entries(self, Py_ssize_t bound, int64_t count) noexcept:
        """Room for `count` more entries, at most `bound`; -1 when out of memory."""
        cdef StreamBatch b = self.cur
        cdef Py_ssize_t k = bound if bound < count else count
        if b.n_entries + k > b.cap_entries and b.grow_entries(b.n_entries + k) < 0:
            return -1
        return 0

    cdef int _batch_token(self, const Cursor* c, const Token* t, int d) noexcept:
        """Record what token t, a child of the aggregate at depth d-1, means for the
        batch; the role of t when it opens an aggregate (R_NONE otherwise), or -1
        when out of memory. A token of the wrong shape switches to M_SHAPE."""
        cdef StreamBatch b = self.cur
        cdef int role = self.role[d - 1]
        cdef int64_t idx = self.cnt[d - 1] - self.rem[d - 1]
        cdef bint is_str = t.kind == T_STR
        cdef bint is_arr = t.kind == T_AGG and t.type == b'*'
        cdef Py_ssize_t ne, nf
        cdef uint64_t ms, seq
        if role == R_FIELDS:
            nf = b.n_fields
            if not is_str:
                self._shape("stream entry field is not a string")
            elif (idx & 1) == 0:
                if nf >= b.cap_fields and b.grow_fields(nf + 1) < 0:
                    return -1
                b.key_off[nf] = t.soff
                b.key_len[nf] = t.slen
            else:
                b.val_off[nf] = t.soff
                b.val_len[nf] = t.slen
                b.n_fields = nf + 1
        elif role == R_ENTRY:
            if idx == 0:
                if not is_str:
                    self._shape("stream entry id is not a string")
                elif not parse_id(c.base + t.soff, t.slen, &ms, &seq):
                    self._shape("Bad stream entry id")
                else:
                    ne = b.n_entries
                    if ne >= b.cap_entries and b.grow_entries(ne + 1) < 0:
                        return -1
                    b.entry_stream[ne] = self.cur_stream
                    b.id_off[ne] = t.soff
                    b.id_len[ne] = t.slen
                    b.id_ms[ne] = ms
                    b.id_seq[ne] = seq
                    b.field_first[ne] = b.n_fields
                    b.entry_nil[ne] = 0
                    b.n_entries = ne + 1
            elif t.kind == T_AGG and (t.type == b'*' or t.type == b'~') and (t.count & 1) == 0:
                return R_FIELDS
            elif t.kind == T_NIL:
                b.entry_nil[b.n_entries - 1] = 1
            else:
                self._shape("stream entry fields are not a key/value array")
        elif role == R_ENTRIES:
            if is_arr and t.count == 2:
                return R_ENTRY
            if t.kind != T_NIL:                 # nil entries (old XCLAIM): skipped
                self._shape("stream entry is not an [id, fields] pair")
        elif role == R_PAIR or role == R_READ_MAP:
            if (idx & 1) == 0:
                if not is_str:
                    self._shape("stream name is not a string")
                elif self._add_stream(t.soff, t.slen) < 0:
                    return -1
            elif is_arr:
                return R_ENTRIES
            elif t.kind != T_NIL:
                self._shape("stream entries are not an array")
        elif role == R_READ_ARR:
            if is_arr and t.count == 2:
                return R_PAIR
            self._shape("XREAD stream is not a [name, entries] pair")
        elif role == R_AC_ROOT:
            return self._autoclaim_token(t, idx)
        elif role == R_DELETED:
            if not is_str:
                self._shape("XAUTOCLAIM deleted id is not a string")
            elif self._add_deleted(t.soff, t.slen) < 0:
                return -1
        return R_NONE

    cdef int _add_stream(self, Py_ssize_t off, Py_ssize_t n) noexcept:
        """A stream name: the entries that follow are of this stream. -1: no memory."""
        cdef StreamBatch b = self.cur
        cdef Py_ssize_t ns = b.n_streams
        if ns >= 2147483647:
            return -1
        if ns >= b.cap_streams and b.grow_streams(0) < 0:
            return -1
        b.stream_off[ns] = off
        b.stream_len[ns] = n
        b.n_streams = ns + 1
        self.cur_stream = <int32_t>ns
        return 0

    cdef int _autoclaim_token(self, const Token* t, int64_t idx) noexcept:
        """A child of XAUTOCLAIM's [cursor, entries(, deleted)] (see _batch_token)."""
        cdef bint is_arr = t.kind == T_AGG and t.type == b'*'
        if idx == 0:
            if t.kind != T_STR:
                self._shape("XAUTOCLAIM cursor is not a string")
            else:
                self.cursor_off = t.soff
                self.cursor_len = t.slen
                self.has_cursor = 1
        elif idx == 1:
            if is_arr:
                return R_ENTRIES
            if t.kind != T_NIL:
                self._shape("XAUTOCLAIM entries are not an array")
        elif is_arr:
            self.has_deleted = 1
            return R_DELETED
        elif t.kind == T_NIL:
            self.has_deleted = 1
        else:
            self._shape("XAUTOCLAIM deleted ids are not an array")
        return R_NONE

    cdef int _root(self, char c, int kind, int64_t count) noexcept:
        """Decide what the reply is from its first token; the role of the root
        aggregate (R_NONE for generic replies), or -1 when out of memory."""
        cdef int newrole = R_NONE
        cdef StreamBatch b
        self.mode = M_GENERIC
        if self.want_kind < 0:
            return R_NONE
        if kind == T_ERR:
            self.clear_after = 1            # an error answers the expected command
            return R_NONE
        if c == b'>' or c == b'|':
            return R_NONE                   # out-of-band: the batch is still to come
        self.clear_after = 1
        if kind == T_NIL:
            try:
                self.cur = self._new_batch()
            except MemoryError:
                return -1
            self.mode = M_EMPTY
            return R_NONE
        if kind == T_AGG:
            if self.want_kind == KIND_READ:
                if c == b'*':
                    newrole = R_READ_ARR
                elif c == b'%':
                    newrole = R_READ_MAP
            elif self.want_kind == KIND_RANGE:
                if c == b'*':
                    newrole = R_ENTRIES
            elif c == b'*' and (count == 2 or count == 3):
                newrole = R_AC_ROOT
        if newrole == R_NONE:
            self._shape("reply does not have the shape of a stream reply")
            return R_NONE
        try:
            b = self._new_batch()
        except MemoryError:
            return -1
        self.cur = b
        self.mode = M_BATCH
        self.cur_stream = 0
        self.n_del = 0
        self.has_cursor = self.has_deleted = 0
        return newrole

    cdef StreamBatch _new_batch(self):
        cdef StreamBatch b = StreamBatch.__new__(StreamBatch)
        b.kind = self.want_kind
        b.encoding = self.want_encoding
        if b.reserve() < 0:
            raise MemoryError()
        return b

    cdef int _add_deleted(self, int64_t off, int64_t n) noexcept:
        cdef Py_ssize_t cap
        cdef void* a
        if self.n_del >= self.cap_del:
            cap = self.cap_del * 2 if self.cap_del else 16
            a = realloc(self.del_off, cap * sizeof(int64_t))
            if a == NULL:
                return -1
            self.del_off = <int64_t*>a
            a = realloc(self.del_len, cap * sizeof(int64_t))
            if a == NULL:
                return -1
            self.del_len = <int64_t*>a
            self.cap_del = cap
        self.del_off[self.n_del] = off
        self.del_len[self.n_del] = n
        self.n_del += 1
        return 0

    # -- stream batches ----------------------------------------------------------

    cdef object _finish_batch(self, Py_ssize_t start, Py_ssize_t end):
        cdef StreamBatch b = self.cur
        cdef Py_ssize_t i
        cdef object buf
        b.field_first[b.n_entries] = b.n_fields
        self.batch_hint = end - start
        if (start == 0 and end == self.rlen and self._ext is not None
                and self.rbuf == PyBytes_AS_STRING(self._ext)
                and end == PyBytes_GET_SIZE(self._ext)):
            buf = self._ext                   # the reply is exactly the fed object
        elif start == 0 and end == self.rlen and end >= 2 and self._ext is None and self._bo != NULL:
            # the reply is everything buffered: hand the buffer object over
            _PyBytes_Resize(&self._bo, end)
            buf = <object>self._bo
            Py_XDECREF(self._bo)
            self._bo = NULL
            self.ocap = 0
            self.rbuf = NULL
            self.rlen = self.rpos = 0
        else:
            buf = PyBytes_FromStringAndSize(self.rbuf + start, end - start)
        b.buf = buf
        b.data = PyBytes_AS_STRING(buf)
        if b.kind == KIND_AUTOCLAIM:
            if self.has_cursor:
                b.cursor = b.obj(self.cursor_off, self.cursor_len)
            if self.has_deleted:
                b.deleted = [b.obj(self.del_off[i], self.del_len[i]) for i in range(self.n_del)]
        return b

    cdef object _empty_batch(self):
        return self.cur

    # -- generic replies ---------------------------------------------------------

    cdef object _build_reply(self, Py_ssize_t start, Py_ssize_t end, bint decode):
        cdef Py_ssize_t p = 0
        cdef Cursor c
        c.base = self.rbuf + start
        c.end = end - start
        self.build_err = None
        obj = self._build(&c, &p, decode)
        if self.build_err is not None:
            e = self.build_err
            self.build_err = None
            raise e
        return obj

    cdef object _string(self, const char* s, Py_ssize_t n, bint decode):
        if decode and self.enc_b is not None:
            try:
                return PyUnicode_Decode(s, n, <const char*>self.enc_b,
                                        NULL if self.err_b is None else <const char*>self.err_b)
            except Exception as e:          # the first one is raised for the reply
                if self.build_err is None:
                    self.build_err = e
                return None
        return PyBytes_FromStringAndSize(s, n)

    cdef object _error(self, const char* s, Py_ssize_t n):
        msg = PyUnicode_DecodeUTF8(s, n, "replace")
        try:
            return self.replyError(msg)
        except Exception as e:
            if self.build_err is None:
                self.build_err = e
            return None

    cdef object _build(self, const Cursor* cu, Py_ssize_t* pp, bint decode):
        """Build the (already validated) element at pp[0]."""
        cdef const char* base = cu.base
        cdef Py_ssize_t p = pp[0], q = 0, k, i
        cdef long long n = 0, m = 0
        cdef double dv = 0
        cdef char c = base[p]
        cdef bint raw
        cdef list lst
        cdef dict dct
        if c == b'$' or c == b'=' or c == b'!':
            read_int_line(cu, p + 1, &n, &q)
            if n < 0:
                pp[0] = q
                return None
            pp[0] = q + n + 2
            if c == b'$':
                return self._string(base + q, n, decode)
            if c == b'=':
                return self._string(base + q + 4, n - 4, decode)
            return self._error(base + q, n)
        if c == b'*' or c == b'~' or c == b'>' or c == b'|' or c == b'%':
            read_int_line(cu, p + 1, &n, &q)
            pp[0] = q
            if n < 0:
                return None
            if c == b'%':
                dct = {}
                for i in range(n):
                    key = self._build(cu, pp, decode)
                    val = self._build(cu, pp, decode)
                    try:
                        dct[key] = val
                    except TypeError as e:    # unhashable key
                        if self.build_err is None:
                            self.build_err = e
                return dct
            if c == b'|':
                n *= 2
            lst = PyList_New(n)             # n is bounded by the bytes of the reply
            raw = not decode or self.enc_b is None
            for i in range(n):
                p = pp[0]
                if raw and base[p] == b'$' and read_int_line(cu, p + 1, &m, &q) == 1 and m >= 0:
                    pp[0] = q + m + 2       # the common case inline: a bulk string as bytes
                    item = PyBytes_FromStringAndSize(base + q, m)
                else:
                    item = self._build(cu, pp, decode)
                Py_INCREF(item)
                PyList_SET_ITEM(lst, i, item)
            if c == b'>':
                return PushNotification(lst)
            return lst
        k = cur_find_crlf(cu, p + 1) - p - 1
        pp[0] = p + k + 3
        if c == b'+' or c == b'(':
            return self._string(base + p + 1, k, decode)
        if c == b'-':
            return self._error(base + p + 1, k)
        if c == b':':
            string2ll(base + p + 1, k, &n)
            return n
        if c == b',':
            parse_double(base + p + 1, k, &dv)
            return dv
        if c == b'#':
            return base[p + 1] == b't' or base[p + 1] == b'T'
        return None                             # '_'
