"""The frames of the server protocol: StreamBatch -> pull frame, push frame -> entries.

Pull side (server -> client):

* ``pull_header`` writes the JSON header ``[[sid, id, start], ...]`` straight into
  a growing bytes buffer (no json module, no per-entry Python objects).
* ``pull_payload`` allocates the whole payload once and copies each value with one
  ``memcpy`` (without the GIL when the payload is large).
* ``pull_views`` gives the same payload as memoryviews into the batch buffer.

Push side (client -> server -> Redis):

* ``push_entries`` validates a decoded JSON push header against its binary
  payload and splits the payload into zero-copy memoryviews.

The RESP writer (``pack_commands``, ``REFERENCE_MIN``) lives in ``_writer.pyx``;
both are re-exported here for code that imports them from ``fastredis._frames``.

Choices (see also the docstrings below):

* Stream names and ids in the pull header are JSON-escaped (``"``, ``\\``, control
  characters). Valid UTF-8 is written as is; every byte sequence that is not
  valid UTF-8 becomes one ``\\ufffd`` exactly as ``bytes.decode("utf-8",
  "replace")`` would replace it, so the header is always valid JSON.
* An entry without the field, or a nil (deleted) entry, contributes 0 bytes: its
  start equals the next entry's start.
* An empty push header with an empty payload is a valid frame of no entries.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastredis._batch cimport StreamBatch
from fastredis._outbuf cimport (
    OutBuf,
    w_finish,
    w_free,
    w_init,
    w_raw,
    w_reserve,
    w_uint,
)

from fastredis._writer import REFERENCE_MIN, pack_commands  # re-exported


class FrameError(ValueError):
    """A push frame header or payload that does not fit the protocol."""


# Above this many payload bytes, pull_payload copies without holding the GIL.
cdef Py_ssize_t _NOGIL_MIN = 1 << 20


# --------------------------------------------------------------------------
# JSON string escaping with UTF-8 validation
# --------------------------------------------------------------------------

cdef const char* _HEX = b"0123456789abcdef"


cdef inline bint _cont(unsigned char c) noexcept:
    return 0x80 <= c <= 0xBF


cdef inline void _w_fffd(OutBuf* w) noexcept:
    memcpy(w.p + w.pos, b"\\ufffd", 6)
    w.pos += 6


cdef void w_json_chars(OutBuf* w, const unsigned char* s, Py_ssize_t n) noexcept:
    """The JSON-escaped body of a string (no quotes); the caller reserved 6 * n.

    Invalid UTF-8 is replaced like CPython's "replace" error handler does it
    (one U+FFFD per maximal invalid subpart)."""
    cdef Py_ssize_t i = 0, k
    cdef unsigned char c, lo, hi
    cdef char* p = w.p
    cdef Py_ssize_t pos = w.pos
    while i < n:
        c = s[i]
        if c < 0x80:
            if c >= 0x20 and c != 34 and c != 92:  # printable, not '"' or '\'
                p[pos] = <char>c
                pos += 1
            else:
                p[pos] = b'\\'
                if c == 34 or c == 92:
                    p[pos + 1] = <char>c
                    pos += 2
                elif c == 10:
                    p[pos + 1] = b'n'
                    pos += 2
                elif c == 13:
                    p[pos + 1] = b'r'
                    pos += 2
                elif c == 9:
                    p[pos + 1] = b't'
                    pos += 2
                elif c == 8:
                    p[pos + 1] = b'b'
                    pos += 2
                elif c == 12:
                    p[pos + 1] = b'f'
                    pos += 2
                else:
                    memcpy(p + pos + 1, b"u00", 3)
                    p[pos + 4] = _HEX[c >> 4]
                    p[pos + 5] = _HEX[c & 15]
                    pos += 6
            i += 1
            continue
        # multi-byte sequence: k = how many bytes form a valid sequence (0: none)
        k = 0
        if c < 0xC2:                      # stray continuation byte or overlong lead
            k = -1
        elif c < 0xE0:
            if i + 1 < n and _cont(s[i + 1]):
                k = 2
            else:
                k = -1
        elif c < 0xF0:
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
            if i + 1 < n and lo <= s[i + 1] <= hi:
                if i + 2 < n and _cont(s[i + 2]):
                    k = 3
                else:
                    k = -2
            else:
                k = -1
        elif c < 0xF5:
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
            if i + 1 < n and lo <= s[i + 1] <= hi:
                if i + 2 < n and _cont(s[i + 2]):
                    if i + 3 < n and _cont(s[i + 3]):
                        k = 4
                    else:
                        k = -3
                else:
                    k = -2
            else:
                k = -1
        else:
            k = -1
        if k > 0:
            memcpy(p + pos, s + i, k)
            pos += k
            i += k
        else:                             # one U+FFFD for the maximal invalid subpart
            memcpy(p + pos, b"\\ufffd", 6)
            pos += 6
            i -= k
    w.pos = pos


cdef inline bint _id_word(uint64_t x) noexcept:
    """All 8 bytes of x in '-'..'9' (0x2d..0x39)? (SWAR: hasless / hasmore)"""
    return not (((x - 0x0101010101010101ULL * 0x2d) & ~x & 0x8080808080808080ULL)
                | (((x + 0x0101010101010101ULL * (127 - 0x39)) | x) & 0x8080808080808080ULL))


cdef inline void w_json_id(OutBuf* w, const unsigned char* s, Py_ssize_t n) noexcept:
    """Like w_json_chars, with a fast path for ids (only '-', '.', '/' and digits:
    nothing to escape), 8 bytes at a time."""
    cdef Py_ssize_t j = 0
    cdef char* out = w.p + w.pos
    cdef uint64_t x
    while j + 8 <= n:
        memcpy(&x, s + j, 8)
        if not _id_word(x):
            w_json_chars(w, s, n)
            return
        memcpy(out + j, &x, 8)
        j += 8
    while j < n:
        if <unsigned char>(s[j] - 45) > 12:
            w_json_chars(w, s, n)
            return
        out[j] = <char>s[j]
        j += 1
    w.pos += n


cdef int w_json_string(OutBuf* w, const char* s, Py_ssize_t n) except -1:
    w_reserve(w, 6 * n + 2)
    w.p[w.pos] = b'"'
    w.pos += 1
    w_json_chars(w, <const unsigned char*>s, n)
    w.p[w.pos] = b'"'
    w.pos += 1
    return 0


cdef bytes _name_bytes(s, str what):
    """str (UTF-8) or a bytes-like object as bytes; anything else is a TypeError."""
    if isinstance(s, str):
        return (<str>s).encode("utf-8")
    if PyBytes_Check(s):
        return <bytes>s
    if isinstance(s, (bytearray, memoryview)):
        return bytes(s)
    raise TypeError(f"{what} must be str or bytes, not {type(s).__name__}")


def json_string(s) -> bytes:
    """`s` (bytes or str) as a JSON string literal, escaped as pull_header does it
    (exposed for tests and for other writers of the protocol)."""
    cdef OutBuf w
    cdef bytes b = _name_bytes(s, "s")
    w_init(&w, len(b) + 2)
    try:
        w_json_string(&w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        return w_finish(&w)
    finally:
        w_free(&w)


# --------------------------------------------------------------------------
# Pull side
# --------------------------------------------------------------------------

cdef inline bytes _field_bytes(field):
    if PyBytes_Check(field):
        return <bytes>field
    return _name_bytes(field, "field")


cdef inline Py_ssize_t _buf_size(StreamBatch batch) except -1:
    if batch.n_entries == 0:
        return 0
    if not PyBytes_Check(batch.buf):
        raise ValueError("StreamBatch has entries but no buffer")
    return PyBytes_GET_SIZE(batch.buf)


cdef int _span_error(int64_t off, int64_t length, Py_ssize_t size, str what,
                     Py_ssize_t i) except -1:
    raise ValueError(
        f"corrupt StreamBatch: {what} of entry {i} ({off}+{length}) "
        f"outside the buffer ({size} bytes)")


cdef inline int _check_span(int64_t off, int64_t length, Py_ssize_t size, str what,
                            Py_ssize_t i) except -1:
    if off < 0 or length < 0 or off + length > size:
        return _span_error(off, length, size, what, i)
    return 0


cdef inline int64_t _value_len(StreamBatch batch, Py_ssize_t i, const char* key,
                               Py_ssize_t key_len, Py_ssize_t size,
                               int64_t* off_out) except -1:
    """Length of entry i's value of key (0 if absent or nil); its offset in *off_out."""
    cdef Py_ssize_t f
    off_out[0] = 0
    if batch.entry_nil != NULL and batch.entry_nil[i]:
        return 0
    f = batch.find_value(i, key, key_len)
    if f < 0:
        return 0
    if batch.val_len[f] <= 0:         # empty (or a nil bulk value: treated as empty)
        return 0
    _check_span(batch.val_off[f], batch.val_len[f], size, "value", i)
    off_out[0] = batch.val_off[f]
    return batch.val_len[f]


def pull_header(StreamBatch batch not None, field=b"d", sid=None) -> bytes:
    """JSON ``[[sid, id, start], ...]`` (UTF-8): for each entry its stream name,
    its id and the offset where its value of `field` starts in the pull payload.

    `sid` (str or bytes) names the stream of every entry; it is needed for RANGE
    and AUTOCLAIM batches, whose replies carry no stream names, and overrides the
    names of a READ batch. Names that are not valid UTF-8 are written with
    U+FFFD replacing each invalid sequence. An empty batch gives ``b"[]"``."""
    cdef bytes key = _field_bytes(field)
    cdef const char* kp = PyBytes_AS_STRING(key)
    cdef Py_ssize_t kn = PyBytes_GET_SIZE(key)
    cdef Py_ssize_t n = batch.n_entries
    cdef Py_ssize_t size = _buf_size(batch)
    cdef Py_ssize_t i, s, n_names
    cdef int32_t si
    cdef int64_t start = 0, voff, vlen
    cdef int64_t* name_off = NULL          # escaped names (quotes included) in `names`
    cdef OutBuf names, w
    cdef bytes sid_b
    cdef const char* data = batch.data
    cdef const char* names_p

    if n == 0:
        return b"[]"
    names.obj = NULL
    w.obj = NULL
    try:
        # 1. every stream name escaped once
        if sid is not None:
            sid_b = _name_bytes(sid, "sid")
            n_names = 1
            name_off = <int64_t*>malloc(2 * sizeof(int64_t))
            if name_off == NULL:
                raise MemoryError()
            w_init(&names, PyBytes_GET_SIZE(sid_b) + 2)
            name_off[0] = 0
            w_json_string(&names, PyBytes_AS_STRING(sid_b), PyBytes_GET_SIZE(sid_b))
            name_off[1] = names.pos
        else:
            n_names = batch.n_streams
            name_off = <int64_t*>malloc((n_names + 1) * sizeof(int64_t))
            if name_off == NULL:
                raise MemoryError()
            w_init(&names, 64)
            name_off[0] = 0
            for s in range(n_names):
                if (batch.stream_off[s] < 0 or batch.stream_len[s] < 0
                        or batch.stream_off[s] + batch.stream_len[s] > size):
                    raise ValueError(f"corrupt StreamBatch: stream name {s} outside the buffer")
                w_json_string(&names, data + batch.stream_off[s], batch.stream_len[s])
                name_off[s + 1] = names.pos
        names_p = names.p

        # 2. the entries
        w_init(&w, 2 + n * (40 + (name_off[n_names] // n_names if n_names else 0)))
        w.p[0] = b'['
        w.pos = 1
        for i in range(n):
            if sid is not None:
                si = 0
            else:
                si = batch.entry_stream[i]
                if si < 0 or si >= n_names:
                    raise ValueError(
                        f"entry {i} has no stream name (a RANGE batch?): pass sid=")
            _check_span(batch.id_off[i], batch.id_len[i], size, "id", i)
            vlen = _value_len(batch, i, kp, kn, size, &voff)
            w_reserve(&w, (name_off[si + 1] - name_off[si]) + 6 * batch.id_len[i] + 32)
            if i:
                w.p[w.pos] = b','
                w.pos += 1
            w.p[w.pos] = b'['
            w.pos += 1
            w_raw(&w, names_p + name_off[si], name_off[si + 1] - name_off[si])
            w.p[w.pos] = b','
            w.p[w.pos + 1] = b'"'
            w.pos += 2
            w_json_id(&w, <const unsigned char*>(data + batch.id_off[i]), batch.id_len[i])
            w.p[w.pos] = b'"'
            w.p[w.pos + 1] = b','
            w.pos += 2
            w_uint(&w, <uint64_t>start)
            w.p[w.pos] = b']'
            w.pos += 1
            start += vlen
        w_reserve(&w, 1)
        w.p[w.pos] = b']'
        w.pos += 1
        return w_finish(&w)
    finally:
        free(name_off)
        w_free(&names)
        w_free(&w)


def pull_payload(StreamBatch batch not None, field=b"d") -> bytes:
    """The `field` values of every entry back to back: one bytes object allocated
    at its final size, one memcpy per entry (the copy runs without the GIL for
    payloads of 1 MiB or more). An entry without the field, or a nil entry,
    contributes 0 bytes."""
    cdef bytes key = _field_bytes(field)
    cdef const char* kp = PyBytes_AS_STRING(key)
    cdef Py_ssize_t kn = PyBytes_GET_SIZE(key)
    cdef Py_ssize_t n = batch.n_entries
    cdef Py_ssize_t size = _buf_size(batch)
    cdef Py_ssize_t i, total = 0, m = 0
    cdef int64_t voff, vlen
    cdef int64_t* spans = NULL               # (offset, length) of each non-empty value
    cdef const char* data = batch.data
    cdef char* out_p
    cdef Py_ssize_t pos = 0
    cdef OutBuf w

    if n == 0:
        return b""
    w.obj = NULL
    spans = <int64_t*>malloc(2 * n * sizeof(int64_t))
    if spans == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            vlen = _value_len(batch, i, kp, kn, size, &voff)
            if vlen:
                spans[2 * m] = voff
                spans[2 * m + 1] = vlen
                m += 1
                total += vlen
        w_init(&w, total)
        out_p = w.p
        if total >= _NOGIL_MIN:
            with nogil:
                for i in range(m):
                    memcpy(out_p + pos, data + spans[2 * i], spans[2 * i + 1])
                    pos += spans[2 * i + 1]
        else:
            for i in range(m):
                memcpy(out_p + pos, data + spans[2 * i], spans[2 * i + 1])
                pos += spans[2 * i + 1]
        w.pos = total
        return w_finish(&w)
    finally:
        free(spans)
        w_free(&w)


def pull_views(StreamBatch batch not None, field=b"d") -> list:
    """The pull payload as one memoryview per entry into the batch buffer (for
    ``writelines``/``sendmsg``); entries without the field give an empty view, so
    the list is aligned with the batch."""
    cdef bytes key = _field_bytes(field)
    cdef const char* kp = PyBytes_AS_STRING(key)
    cdef Py_ssize_t kn = PyBytes_GET_SIZE(key)
    cdef Py_ssize_t n = batch.n_entries
    cdef Py_ssize_t size = _buf_size(batch)
    cdef Py_ssize_t i
    cdef int64_t voff, vlen
    cdef list out = []
    if n == 0:
        return out
    base = memoryview(batch.buf)
    for i in range(n):
        vlen = _value_len(batch, i, kp, kn, size, &voff)
        out.append(base[voff:voff + vlen])
    return out


def values_nbytes(StreamBatch batch not None) -> int:
    """The bytes of every field value of `batch` (what offsets()["val_len"].sum()
    gives, without making numpy views per call: counted once per pulled batch)."""
    cdef Py_ssize_t j
    cdef int64_t total = 0
    for j in range(batch.n_fields):
        total += batch.val_len[j]
    return total


# --------------------------------------------------------------------------
# Push side: header validation
# --------------------------------------------------------------------------

cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF


cdef inline bint _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


cdef str _show(x):
    r = repr(x)
    if len(r) > 40:
        r = r[:37] + "..."
    return r


cdef str _kind(x):
    if isinstance(x, (list, tuple)):
        return f"an array of {len(x)}"
    if _is_int(x):
        return f"an offset ({x})"
    return f"{type(x).__name__} {_show(x)}"


cdef object _parse_id(str s):
    """(ms, seq) of a full stream id `ms` or `ms-seq`, or None: the grammar of
    fastredis.ids.parse_id (each part 1 to 20 ASCII digits, at most 2**64-1)."""
    cdef Py_ssize_t n = len(s), dash = -1, i
    cdef Py_UCS4 c
    if n == 0 or n > 41:                  # 20 digits, '-', 20 digits
        return None
    for i in range(n):
        c = s[i]
        if c == u'-':
            if dash >= 0:
                return None
            dash = i
        elif c < u'0' or c > u'9':
            return None
    if dash == 0 or dash == n - 1:
        return None
    if (n if dash < 0 else dash) > 20 or (dash >= 0 and n - dash - 1 > 20):
        return None                       # leading zeros count: '0' * 20 + '1' is refused
    if dash < 0:
        ms, seq = int(s), 0
    else:
        ms, seq = int(s[:dash]), int(s[dash + 1:])
    if ms > _U64_MAX or seq > _U64_MAX:
        return None
    return (ms, seq)


cdef memoryview _byte_view(payload):
    cdef memoryview mv = memoryview(payload)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")                 # raises TypeError unless C-contiguous
    elif not mv.c_contiguous:
        raise TypeError("payload must be a contiguous buffer")
    return mv


cdef list _check_sids(sids):
    if isinstance(sids, (str, bytes)) or not isinstance(sids, (list, tuple)):
        raise TypeError(f"sids must be a list of str, not {type(sids).__name__}")
    if not sids:
        raise FrameError("no stream to push to (sids is empty)")
    for k, s in enumerate(sids):
        if not isinstance(s, str) or not s:
            raise FrameError(f"sid {k} ({_show(s)}) must be a non-empty string")
    return list(sids)


def push_entries(header, payload, sids) -> list:
    """Validate a push header against its binary payload and split the payload
    into ``(sid, id, view)`` entries (views are slices of `payload`, no copy).

    `header` is the decoded JSON, one of
      * ``[end1, end2, ...]``: every entry goes to each of `sids`, entry-major
        (``e1->a, e1->b, e2->a, ...``), id ``"*"``;
      * ``[[sid, end], ...]``: id ``"*"``;
      * ``[[sid, id, end], ...]``: id ``"*"`` or ``ms`` / ``ms-seq`` (as
        fastredis.ids.parse_id: 1 to 20 digits each, at most 2**64-1), not 0-0, and
        increasing per stream within the header, so that no XADD of the frame can
        fail on its id after others succeeded).
    Header sids are taken literally (no ``a+b`` splitting; `sids` is then unused).
    Offsets are ints (not bool), within ``[0, len(payload)]``, non-decreasing, and
    the last equals ``len(payload)``; equal neighbours make 0-byte entries. The
    forms cannot be mixed. An empty header with an empty payload is a frame of no
    entries (``[]``); with a non-empty payload it is an error.
    Raises FrameError (a ValueError) naming the problem and its position."""
    cdef memoryview mv = _byte_view(payload)
    cdef Py_ssize_t size = mv.nbytes
    cdef Py_ssize_t m, k, form, prev = 0, end_i
    cdef list out = []
    cdef list targets
    cdef dict last_ids
    cdef str id_s

    if not isinstance(header, (list, tuple)):
        raise FrameError(f"header must be a JSON array, got {type(header).__name__}")
    m = len(header)
    if m == 0:
        if size:
            raise FrameError(f"empty header but the payload has {size} bytes")
        return out

    first = header[0]
    if _is_int(first):
        form = 1
        targets = _check_sids(sids)
    elif isinstance(first, (list, tuple)) and len(first) in (2, 3):
        form = len(first)
        last_ids = {}
    else:
        raise FrameError(
            f"entry 0: expected an end offset, [sid, end] or [sid, id, end], "
            f"got {_kind(first)}")

    for k in range(m):
        item = header[k]
        sid = None
        id_s = "*"
        if form == 1:
            if not _is_int(item):
                raise FrameError(
                    f"entry {k}: expected an end offset like entry 0, got {_kind(item)}")
            end = item
        else:
            if not isinstance(item, (list, tuple)) or len(item) != form:
                raise FrameError(
                    f"entry {k}: expected {'[sid, end]' if form == 2 else '[sid, id, end]'}"
                    f" like entry 0, got {_kind(item)}")
            sid = item[0]
            if not isinstance(sid, str) or not sid:
                raise FrameError(f"entry {k}: sid {_show(sid)} must be a non-empty string")
            if form == 3:
                raw_id = item[1]
                if not isinstance(raw_id, str):
                    raise FrameError(
                        f"entry {k}: id {_show(raw_id)} must be a string "
                        f"('*', 'ms' or 'ms-seq')")
                id_s = <str>raw_id
                if id_s != "*":
                    parsed = _parse_id(id_s)
                    if parsed is None:
                        raise FrameError(
                            f"entry {k}: id {_show(id_s)} is not '*' or a stream id "
                            f"('ms' or 'ms-seq', decimal)")
                    if parsed == (0, 0):
                        raise FrameError(f"entry {k}: id {_show(id_s)} must be greater than 0-0")
                    before = last_ids.get(sid)
                    if before is not None and parsed <= before:
                        raise FrameError(
                            f"entry {k}: id {_show(id_s)} is not greater than the id "
                            f"{before[0]}-{before[1]} given earlier for stream {_show(sid)}")
                    last_ids[sid] = parsed
            end = item[form - 1]
            if not _is_int(end):
                raise FrameError(f"offset {k} ({_show(end)}) is not an integer")
        if end < 0:
            raise FrameError(f"offset {k} ({end}) is negative")
        if end > size:
            raise FrameError(f"offset {k} ({end}) exceeds payload length {size}")
        end_i = end
        if end_i < prev:
            raise FrameError(f"offset {k} ({end_i}) is less than offset {k - 1} ({prev})")
        view = mv[prev:end_i]
        if form == 1:
            for sid in targets:
                out.append((sid, "*", view))
        else:
            out.append((sid, id_s, view))
        prev = end_i
    if prev != size:
        raise FrameError(
            f"offset {m - 1} ({prev}) does not reach the end of the payload "
            f"(length {size})")
    return out
