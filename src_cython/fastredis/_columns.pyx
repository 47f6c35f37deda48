"""A StreamBatch as Arrow columns, handed over through the Arrow PyCapsule interface
(the C structs are declared in _arrow.pxd). StreamBatch's ``__arrow_c_*__`` methods
call the three capsule functions at the bottom.

The columns: ``stream`` (dictionary<int32, utf8>; all null for RANGE/AUTOCLAIM
batches, whose replies carry no name), ``id_ms`` and ``id_seq`` (uint64, pointing
at the batch's own id arrays), then one column per field name in order of first
appearance: ``binary_view``, or ``string_view`` when the batch decodes text.

No payload byte is copied: a value of at most 12 bytes sits inline in its 16-byte
view (that is the layout); a longer one is a prefix plus (buffer index, offset)
into the batch's reply buffer, which is every view column's variadic buffer. The
reply is exposed as windows starting every 1 GiB (the views' offsets are int32),
so a buffer of any size works. Every exported array holds a reference to the batch
and drops it in its release callback (taking the GIL).

Choices: when an entry repeats a field name the last value wins (as ``batch[i]``
and ``batch.field()``); an entry without the field (or a nil entry) gives a null;
under text decoding a value that is not UTF-8 raises UnicodeDecodeError naming the
field and the entry (Arrow strings are UTF-8; read with ``encoding=None`` to get
binary columns). A field named like one of the first three columns raises.
"""

import codecs

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset, strlen

from fastredis._arrow cimport (ARROW_FLAG_NULLABLE, ArrowArray, ArrowArrayStream,
                               ArrowSchema)
from fastredis._batch cimport KIND_READ, StreamBatch
from fastredis._cursor cimport Cursor, cur_check


cdef extern from "errno.h":
    enum:
        ENOMEM


cdef enum:
    N_FIXED = 3                        # stream, id_ms, id_seq
    GUESSES = 64                       # field positions remembered from the previous entry
    INT32_MAX = 2147483647

cdef int64_t WINDOW = 1 << 30          # stride of the reply's variadic windows
cdef uint64_t _ZEROS[8]                # buffers of empty arrays point here
cdef object RESERVED = frozenset(["stream", "id_ms", "id_seq"])


# -- schemas ----------------------------------------------------------------------

cdef void _schema_release(ArrowSchema* s) noexcept nogil:
    """Release the children and the dictionary still owned, then this node's block."""
    cdef int64_t k
    for k in range(s.n_children):
        if s.children[k].release != NULL:
            s.children[k].release(s.children[k])
    if s.dictionary != NULL and s.dictionary.release != NULL:
        s.dictionary.release(s.dictionary)
    free(s.private_data)
    s.release = NULL


cdef void _schema_leaf(ArrowSchema* s, const char* fmt, const char* name, int64_t flags) noexcept nogil:
    memset(s, 0, sizeof(ArrowSchema))
    s.format = fmt
    s.name = name
    s.flags = flags
    s.release = _schema_release


cdef int _schema_fill(ArrowSchema* out, Py_ssize_t ncols, char** names, bint text) noexcept nogil:
    """The batch's struct schema into *out: 0, or ENOMEM (then *out is released)."""
    cdef Py_ssize_t nch = N_FIXED + ncols
    cdef Py_ssize_t k, n
    cdef ArrowSchema** ptrs
    cdef ArrowSchema* kids
    cdef ArrowSchema* dic
    cdef char* name
    _schema_leaf(out, b"+s", b"", 0)
    ptrs = <ArrowSchema**>calloc(1, nch * (sizeof(ArrowSchema*) + sizeof(ArrowSchema)))
    if ptrs == NULL:
        return ENOMEM
    kids = <ArrowSchema*>(ptrs + nch)
    out.private_data = ptrs
    out.children = ptrs
    out.n_children = nch
    for k in range(nch):
        ptrs[k] = &kids[k]
    dic = <ArrowSchema*>malloc(sizeof(ArrowSchema))
    if dic == NULL:
        _schema_release(out)
        return ENOMEM
    _schema_leaf(dic, b"u", NULL, ARROW_FLAG_NULLABLE)
    _schema_leaf(&kids[0], b"i", b"stream", ARROW_FLAG_NULLABLE)
    kids[0].dictionary = dic
    kids[0].private_data = dic
    _schema_leaf(&kids[1], b"L", b"id_ms", 0)
    _schema_leaf(&kids[2], b"L", b"id_seq", 0)
    for k in range(ncols):
        n = strlen(names[k])
        name = <char*>malloc(n + 1)
        if name == NULL:
            _schema_release(out)
            return ENOMEM
        memcpy(name, names[k], n + 1)
        _schema_leaf(&kids[N_FIXED + k], b"vu" if text else b"vz", name, ARROW_FLAG_NULLABLE)
        kids[N_FIXED + k].private_data = name
    return 0


cdef char** _names_block(list names) except NULL:
    """The column names (UTF-8 bytes) as one malloc'd block: pointers, then strings."""
    cdef Py_ssize_t k, n = len(names), size = (n + 1) * sizeof(char*)
    cdef char** ptrs
    cdef char* p
    for name in names:
        size += PyBytes_GET_SIZE(name) + 1
    ptrs = <char**>malloc(size)
    if ptrs == NULL:
        raise MemoryError()
    p = <char*>(ptrs + n + 1)
    for k in range(n):
        ptrs[k] = p
        memcpy(p, PyBytes_AS_STRING(names[k]), PyBytes_GET_SIZE(names[k]))
        p += PyBytes_GET_SIZE(names[k])
        p[0] = 0
        p += 1
    ptrs[n] = NULL
    return ptrs


# -- arrays -----------------------------------------------------------------------

cdef void _array_release(ArrowArray* a) noexcept with gil:
    """Release the children and dictionary still owned, drop the batch, free the block."""
    cdef int64_t k
    for k in range(a.n_children):
        if a.children[k].release != NULL:
            a.children[k].release(a.children[k])
    if a.dictionary != NULL and a.dictionary.release != NULL:
        a.dictionary.release(a.dictionary)
    Py_XDECREF((<PyObject**>a.private_data)[0])
    free(a.private_data)
    a.release = NULL


cdef char* _node(ArrowArray* a, int64_t length, Py_ssize_t n_buffers, Py_ssize_t n_children,
                 size_t data_bytes, object owner, bint dictionary=False) except NULL:
    """Make *a a node released by _array_release, with its buffer and child pointer
    arrays, room for a dictionary node (when asked) and `data_bytes` zeroed bytes
    (64-byte aligned, returned) in one block; it holds a reference to `owner`
    (None: nothing)."""
    cdef size_t head = (16 + n_buffers * sizeof(void*) + dictionary * sizeof(ArrowArray)
                        + n_children * (sizeof(void*) + sizeof(ArrowArray)))
    cdef char* block = <char*>calloc(1, head + data_bytes + 64)
    cdef Py_ssize_t k
    cdef ArrowArray* kids
    if block == NULL:
        raise MemoryError()
    memset(a, 0, sizeof(ArrowArray))
    a.length = length
    a.n_buffers = n_buffers
    a.buffers = <const void**>(block + 16)
    a.n_children = n_children
    if dictionary:
        a.dictionary = <ArrowArray*>(block + 16 + n_buffers * sizeof(void*))
    if n_children:
        a.children = <ArrowArray**>(block + 16 + n_buffers * sizeof(void*)
                                    + dictionary * sizeof(ArrowArray))
        kids = <ArrowArray*>(a.children + n_children)
        for k in range(n_children):
            a.children[k] = &kids[k]
    if owner is not None:
        Py_INCREF(owner)
        (<PyObject**>block)[0] = <PyObject*>owner
    a.private_data = block
    a.release = _array_release
    return <char*>((<size_t>(block + head) + 63) & ~(<size_t>63))


cdef inline size_t _bitmap_bytes(int64_t n) noexcept nogil:
    return <size_t>(((n + 63) // 64) * 8)


cdef Py_ssize_t _utf8_error(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Index of the first byte of s[0:n] that breaks strict UTF-8, or -1."""
    cdef Py_ssize_t i = 0
    cdef uint64_t w
    cdef unsigned char c, c1
    while i < n:
        if n - i >= 8:
            memcpy(&w, s + i, 8)
            if (w & 0x8080808080808080ULL) == 0:
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:
            return i
        elif c < 0xE0:
            if n - i < 2 or (s[i + 1] & 0xC0) != 0x80:
                return i
            i += 2
        elif c < 0xF0:
            if n - i < 3:
                return i
            c1 = s[i + 1]
            if ((c1 & 0xC0) != 0x80 or (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0)
                    or (s[i + 2] & 0xC0) != 0x80):
                return i
            i += 3
        elif c < 0xF5:
            if n - i < 4:
                return i
            c1 = s[i + 1]
            if ((c1 & 0xC0) != 0x80 or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90)
                    or (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80):
                return i
            i += 4
        else:
            return i
    return -1


cdef object _corrupt(str what):
    raise ValueError(f"StreamBatch offsets out of bounds ({what}): not exported")


cdef class _Plan:
    """Which column every field pair goes to (-1: none) and the columns' names."""
    cdef int32_t* col               # per field pair
    cdef list keys                  # column keys as in the reply (bytes)
    cdef list names                 # column names, UTF-8 bytes

    def __dealloc__(self):
        free(self.col)


cdef bytes _key_bytes(StreamBatch b, object key):
    if isinstance(key, str):
        return (<str>key).encode(b.encoding or "utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"field names must be bytes or str, not {type(key).__name__}")


cdef bytes _column_name(StreamBatch b, bytes key):
    """A field key as an Arrow column name (UTF-8, no NUL, not a fixed column's)."""
    try:
        name = key.decode(b.encoding or "utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"field name {key!r} is not valid text ({e.reason}); Arrow "
                         "column names are UTF-8: choose the fields with fields=[...]") from None
    if "\0" in name:
        raise ValueError(f"field name {name!r} holds a NUL byte; it cannot name an Arrow column")
    if name in RESERVED:
        raise ValueError(f"field name {name!r} clashes with the column {name!r} of every "
                         "exported batch; choose the fields with fields=[...]")
    return name.encode("utf-8")


cdef _check_text_codec(StreamBatch b):
    """Arrow strings are UTF-8: a batch that decodes with another codec has no string
    column that would read as its Python values do."""
    if b.encoding is not None and codecs.lookup(b.encoding).name != "utf-8":
        raise ValueError(f"the batch decodes text with {b.encoding!r} and Arrow strings are "
                         "UTF-8: read it with encoding='utf-8', or encoding=None for "
                         "binary_view columns")


cdef _Plan _plan(StreamBatch b, const Cursor* cur, object fields):
    """Map every field pair to its column, checking each key against the buffer.
    Entries usually repeat the previous entry's keys in the same order, so each
    position's key is first compared with the one before it; a Python dict decides
    the rest."""
    cdef _Plan plan = _Plan()
    cdef Py_ssize_t ne = b.n_entries, nf = b.n_fields, i, j, p, lo, hi
    cdef int64_t g_off[GUESSES]
    cdef int64_t g_len[GUESSES]
    cdef int32_t g_col[GUESSES]
    cdef int64_t ko, kl
    cdef int32_t c
    cdef dict lookup = {}
    _check_text_codec(b)
    plan.keys = []
    if fields is not None:
        for key in fields:
            kb = _key_bytes(b, key)
            if kb in lookup:
                raise ValueError(f"field {key!r} is asked for twice")
            lookup[kb] = len(plan.keys)
            plan.keys.append(kb)
    for p in range(GUESSES):
        g_len[p] = -1
    if ne > 0 and (b.field_first == NULL or b.key_off == NULL and nf > 0):
        _corrupt("no arrays")
    plan.col = <int32_t*>malloc((nf if nf > 0 else 1) * sizeof(int32_t))
    if plan.col == NULL:
        raise MemoryError()
    for i in range(ne):
        lo = b.field_first[i]
        hi = b.field_first[i + 1]
        if lo < 0 or hi < lo or hi > nf:
            _corrupt("field_first")
        for j in range(lo, hi):
            ko = b.key_off[j]
            kl = b.key_len[j]
            if not cur_check(cur, ko, kl):
                _corrupt("a field name")
            p = j - lo
            if p < GUESSES and g_len[p] == kl and memcmp(b.data + g_off[p], b.data + ko, kl) == 0:
                plan.col[j] = g_col[p]
                continue
            kb = PyBytes_FromStringAndSize(b.data + ko, kl)
            c = lookup.get(kb, -1)
            if c < 0 and fields is None:
                c = len(plan.keys)
                lookup[kb] = c
                plan.keys.append(kb)
            plan.col[j] = c
            if p < GUESSES:
                g_off[p] = ko
                g_len[p] = kl
                g_col[p] = c
    plan.names = [_column_name(b, kb) for kb in plan.keys]
    if len(plan.keys) * ne > max(1 << 22, 16 * nf):
        raise ValueError(f"{len(plan.keys)} field names over {ne} entries would make a table "
                         "of mostly nulls; choose the fields with fields=[...]")
    return plan


cdef void _stream_column(StreamBatch b, ArrowArray* a) except *:
    """`stream`: int32 indices into the distinct names (UTF-8; copied, names are not
    payload). The batch's own index array when its names are already distinct."""
    cdef Py_ssize_t ne = b.n_entries, k, nu, size = 0, pos = 0
    cdef int32_t* idx
    cdef int32_t* offs
    cdef char* chars
    cdef char* bits
    cdef bint identity = True
    cdef list uniq = []
    cdef list order = []
    cdef dict seen = {}
    names = b.streams if b.kind == KIND_READ else ()
    for name in names:
        try:
            text = name if isinstance(name, str) else (<bytes>name).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"stream name {name!r} is not UTF-8 ({e.reason}); the "
                             "stream column is a utf8 dictionary") from None
        if text not in seen:
            seen[text] = len(uniq)
            uniq.append(text.encode("utf-8"))
        identity = identity and seen[text] == len(order)
        order.append(seen[text])
    nu = len(uniq)
    for u in uniq:
        size += PyBytes_GET_SIZE(u)
    if size > INT32_MAX:
        raise ValueError("stream names too long for one utf8 dictionary")
    for k in range(ne if names else 0):
        if b.entry_stream[k] < 0 or b.entry_stream[k] >= len(names):
            _corrupt("a stream index")
    if not names:                       # RANGE/AUTOCLAIM: every entry null
        bits = _node(a, ne, 2, 0, _bitmap_bytes(ne) + ne * 4, None, True)
        a.null_count = ne
        a.buffers[0] = bits
        a.buffers[1] = bits + _bitmap_bytes(ne)
    elif identity:
        _node(a, ne, 2, 0, 0, b, True)
        a.buffers[1] = b.entry_stream if ne else <int32_t*>_ZEROS
    else:
        idx = <int32_t*>_node(a, ne, 2, 0, ne * 4, None, True)
        a.buffers[1] = idx
        for k in range(ne):
            idx[k] = order[b.entry_stream[k]]
    offs = <int32_t*>_node(a.dictionary, nu, 3, 0, (nu + 1) * 4 + size, None)
    chars = <char*>(offs + nu + 1)
    for k in range(nu):
        offs[k] = pos
        memcpy(chars + pos, PyBytes_AS_STRING(uniq[k]), PyBytes_GET_SIZE(uniq[k]))
        pos += PyBytes_GET_SIZE(uniq[k])
    offs[nu] = pos
    a.dictionary.buffers[1] = offs
    a.dictionary.buffers[2] = chars


cdef void _id_column(StreamBatch b, ArrowArray* a, uint64_t* values) except *:
    """`id_ms` / `id_seq`: the batch's own uint64 arrays."""
    _node(a, b.n_entries, 2, 0, 0, b)
    a.buffers[1] = values if b.n_entries else _ZEROS


cdef object _bad_text(StreamBatch b, _Plan plan, Py_ssize_t c, Py_ssize_t i, int64_t off, int64_t n):
    """Raise the UnicodeDecodeError of value (off, n) of column c, entry i."""
    value = PyBytes_FromStringAndSize(b.data + off, n)
    where = (f"in field {plan.names[c].decode()!r} of entry {b.id_ms[i]}-{b.id_seq[i]}: the "
             f"batch decodes text (encoding={b.encoding!r}) and Arrow strings are UTF-8; "
             "read it with encoding=None for binary_view columns")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnicodeDecodeError("utf-8", e.object, e.start, e.end, f"{e.reason} {where}") from None
    raise UnicodeDecodeError("utf-8", value, 0, n, f"invalid UTF-8 {where}")


cdef void _view_columns(StreamBatch b, const Cursor* cur, _Plan plan, ArrowArray* kids) except *:
    """One binary_view/string_view column per plan column into kids[0:ncols]. Every
    column's variadic buffers are windows of the reply buffer (one per GiB)."""
    cdef Py_ssize_t ncols = len(plan.keys), ne = b.n_entries, c, i, j, w, nwin
    cdef int64_t total = cur.end, off, n
    cdef size_t vb = <size_t>ne * 16, bb = _bitmap_bytes(ne)
    cdef bint text = b.encoding is not None
    cdef char** views
    cdef char* v
    cdef uint8_t** bits
    cdef int64_t* valid
    cdef int64_t* sizes
    cdef int32_t col
    nwin = (total + WINDOW - 1) // WINDOW if total > 0 else 1
    views = <char**>malloc((ncols if ncols else 1) * (2 * sizeof(void*) + sizeof(int64_t)))
    if views == NULL:
        raise MemoryError()
    bits = <uint8_t**>(views + ncols)
    valid = <int64_t*>(bits + ncols)
    try:
        for c in range(ncols):
            views[c] = _node(&kids[c], ne, 3 + nwin, 0, vb + bb + nwin * 8, b)
            bits[c] = <uint8_t*>(views[c] + vb)
            sizes = <int64_t*>(views[c] + vb + bb)
            valid[c] = 0
            kids[c].buffers[0] = bits[c]
            kids[c].buffers[1] = views[c]
            for w in range(nwin):
                kids[c].buffers[2 + w] = b.data + w * WINDOW
                sizes[w] = min(total - w * WINDOW, <int64_t>INT32_MAX)
            kids[c].buffers[2 + nwin] = sizes
        for i in range(ne):
            if b.entry_nil[i]:
                continue
            for j in range(b.field_first[i], b.field_first[i + 1]):   # checked by _plan
                col = plan.col[j]
                if col < 0:
                    continue
                off = b.val_off[j]
                n = b.val_len[j]
                if not cur_check(cur, off, n) or n > INT32_MAX:
                    _corrupt("a value")
                if text and _utf8_error(<const unsigned char*>b.data + off, n) >= 0:
                    _bad_text(b, plan, col, i, off, n)
                v = views[col] + i * 16
                (<int32_t*>v)[0] = <int32_t>n
                if n <= 12:
                    memset(v + 4, 0, 12)             # a repeated name may overwrite
                    memcpy(v + 4, b.data + off, n)
                else:
                    memcpy(v + 4, b.data + off, 4)
                    w = off // WINDOW
                    (<int32_t*>(v + 8))[0] = <int32_t>w
                    (<int32_t*>(v + 12))[0] = <int32_t>(off - w * WINDOW)
                if not (bits[col][i >> 3] & (1 << (i & 7))):
                    bits[col][i >> 3] |= <uint8_t>(1 << (i & 7))
                    valid[col] += 1
        for c in range(ncols):
            kids[c].null_count = ne - valid[c]
    finally:
        free(views)


cdef void _cursor_of(StreamBatch b, Cursor* cur) except *:
    if type(b.buf) is not bytes or b.data != PyBytes_AS_STRING(b.buf):
        _corrupt("the buffer")
    cur.base = b.data
    cur.end = PyBytes_GET_SIZE(b.buf)


cdef void _build(StreamBatch b, _Plan plan, const Cursor* cur, ArrowArray* root) except *:
    """The whole batch as one struct array into *root (released again on error)."""
    _node(root, b.n_entries, 1, N_FIXED + len(plan.keys), 0, None)
    try:
        _stream_column(b, root.children[0])
        _id_column(b, root.children[1], b.id_ms)
        _id_column(b, root.children[2], b.id_seq)
        _view_columns(b, cur, plan, root.children[N_FIXED])
    except BaseException:
        root.release(root)
        raise


cdef ArrowSchema* _new_schema(StreamBatch b, _Plan plan) except NULL:
    cdef char** names = _names_block(plan.names)
    cdef ArrowSchema* s = <ArrowSchema*>malloc(sizeof(ArrowSchema))
    cdef int r = ENOMEM
    if s != NULL:
        r = _schema_fill(s, len(plan.names), names, b.encoding is not None)
    free(names)
    if r != 0:
        free(s)
        raise MemoryError()
    return s


# -- capsules ---------------------------------------------------------------------

cdef void _schema_capsule_free(object cap) noexcept:
    cdef ArrowSchema* s = <ArrowSchema*>PyCapsule_GetPointer(cap, b"arrow_schema")
    if s.release != NULL:
        s.release(s)
    free(s)


cdef void _array_capsule_free(object cap) noexcept:
    cdef ArrowArray* a = <ArrowArray*>PyCapsule_GetPointer(cap, b"arrow_array")
    if a.release != NULL:
        a.release(a)
    free(a)


cdef void _stream_capsule_free(object cap) noexcept:
    cdef ArrowArrayStream* st = <ArrowArrayStream*>PyCapsule_GetPointer(cap, b"arrow_array_stream")
    if st.release != NULL:
        st.release(st)
    free(st)


def schema_capsule(StreamBatch batch, fields=None):
    """The batch's schema as an "arrow_schema" capsule (`fields`: those columns only,
    in that order; absent ones are all null)."""
    cdef Cursor cur
    _cursor_of(batch, &cur)
    plan = _plan(batch, &cur, fields)
    return PyCapsule_New(_new_schema(batch, plan), b"arrow_schema", _schema_capsule_free)


def array_capsules(StreamBatch batch, fields=None):
    """``(schema capsule, array capsule)``: the batch as one struct array."""
    cdef Cursor cur
    cdef ArrowArray* a
    _cursor_of(batch, &cur)
    plan = _plan(batch, &cur, fields)
    schema = PyCapsule_New(_new_schema(batch, plan), b"arrow_schema", _schema_capsule_free)
    a = <ArrowArray*>calloc(1, sizeof(ArrowArray))
    if a == NULL:
        raise MemoryError()
    try:
        _build(batch, plan, &cur, a)
    except BaseException:
        free(a)
        raise
    return schema, PyCapsule_New(a, b"arrow_array", _array_capsule_free)


cdef struct _StreamPriv:
    ArrowArray pending                 # the one batch, until get_next moves it out
    char** names
    Py_ssize_t ncols
    bint text


cdef int _stream_schema(ArrowArrayStream* st, ArrowSchema* out) noexcept nogil:
    cdef _StreamPriv* p = <_StreamPriv*>st.private_data
    return _schema_fill(out, p.ncols, p.names, p.text)


cdef int _stream_next(ArrowArrayStream* st, ArrowArray* out) noexcept nogil:
    cdef _StreamPriv* p = <_StreamPriv*>st.private_data
    memcpy(out, &p.pending, sizeof(ArrowArray))     # released (end) after the first
    p.pending.release = NULL
    return 0


cdef const char* _stream_error(ArrowArrayStream* st) noexcept nogil:
    return NULL


cdef void _stream_release(ArrowArrayStream* st) noexcept nogil:
    cdef _StreamPriv* p = <_StreamPriv*>st.private_data
    if p.pending.release != NULL:
        p.pending.release(&p.pending)
    free(p.names)
    free(p)
    st.release = NULL


def stream_capsule(StreamBatch batch, fields=None):
    """An "arrow_array_stream" capsule giving the batch as one struct array."""
    cdef Cursor cur
    cdef _StreamPriv* p
    cdef ArrowArrayStream* st
    _cursor_of(batch, &cur)
    plan = _plan(batch, &cur, fields)
    p = <_StreamPriv*>calloc(1, sizeof(_StreamPriv))
    st = <ArrowArrayStream*>calloc(1, sizeof(ArrowArrayStream))
    if p == NULL or st == NULL:
        free(p)
        free(st)
        raise MemoryError()
    try:
        p.names = _names_block(plan.names)
        p.ncols = len(plan.names)
        p.text = batch.encoding is not None
        _build(batch, plan, &cur, &p.pending)
    except BaseException:
        free(p.names)
        free(p)
        free(st)
        raise
    st.get_schema = _stream_schema
    st.get_next = _stream_next
    st.get_last_error = _stream_error
    st.release = _stream_release
    st.private_data = p
    return PyCapsule_New(st, b"arrow_array_stream", _stream_capsule_free)
