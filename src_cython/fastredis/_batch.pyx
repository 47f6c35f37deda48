"""StreamBatch: one stream reply held as its bytes plus typed offset arrays (the
layout is in _batch.pxd); Python objects are made only when asked. Its arrays
come from a small pool of freed blocks (see "Array blocks" below)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_Decode
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy

from pickle import PickleBuffer

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8(object s) except NULL
    ctypedef struct PyBytesObject:
        Py_hash_t ob_shash
    Py_ssize_t refcount_of "Py_REFCNT"(PyObject* o)


# -- spare reply buffers ----------------------------------------------------------
# A big batch's buffer, when the batch is dropped and nothing else references the
# buffer, is kept for the reader's next big reply instead of going back to the
# system: large blocks are unmapped on free, and every page of a new one is faulted
# in and zeroed again (for 100 MB, as long as receiving it). Bounded in count and bytes.

cdef enum:
    SPARE_MIN = 1024 * 1024
    SPARE_MAX_BYTES = 256 * 1024 * 1024
    SPARE_MAX_N = 8

cdef list _spares = []
cdef Py_ssize_t _spare_bytes = 0


cdef object take_spare(Py_ssize_t at_least, Py_ssize_t at_most):
    global _spare_bytes
    cdef Py_ssize_t i, best = -1, size
    for i in range(len(_spares)):
        size = PyBytes_GET_SIZE(_spares[i])
        if at_least <= size <= at_most and (best < 0 or size < PyBytes_GET_SIZE(_spares[best])):
            best = i
    if best < 0:
        return None
    obj = _spares.pop(best)
    _spare_bytes -= PyBytes_GET_SIZE(obj)
    (<PyBytesObject*>obj).ob_shash = -1     # its content changes: no cached hash
    return obj


cdef Py_ssize_t _smallest_spare() noexcept:
    """The index of the smallest kept buffer (the pool is not empty)."""
    cdef Py_ssize_t i, best = 0
    for i in range(1, len(_spares)):
        if PyBytes_GET_SIZE(_spares[i]) < PyBytes_GET_SIZE(_spares[best]):
            best = i
    return best


cdef void _keep_spare(object buf) noexcept:
    """Keep `buf` (the dropping batch's, referenced by it alone) for reuse."""
    global _spare_bytes
    cdef Py_ssize_t size, i
    if _spares is None or type(buf) is not bytes:
        return
    size = PyBytes_GET_SIZE(buf)
    if size < SPARE_MIN or size > SPARE_MAX_BYTES:
        return
    # full: smaller kept buffers make room, smallest first (a bigger one costs more
    # pages to fault in again; refusing it let a cluster read's 48 MB join buffer be
    # made afresh every time while its eight 8 MB parts were kept)
    while len(_spares) >= SPARE_MAX_N or _spare_bytes + size > SPARE_MAX_BYTES:
        i = _smallest_spare()
        if PyBytes_GET_SIZE(_spares[i]) >= size:
            return
        _spare_bytes -= PyBytes_GET_SIZE(_spares.pop(i))
    _spares.append(buf)
    _spare_bytes += size


def spare_buffers():
    """(count, bytes) of the reply buffers kept for reuse."""
    return len(_spares), _spare_bytes


def release_spare_buffers():
    """Give the kept reply buffers back to the system; the bytes they held."""
    global _spare_bytes
    freed = _spare_bytes
    del _spares[:]
    _spare_bytes = 0
    return freed


READ = KIND_READ            # XREAD / XREADGROUP: per stream [name, entries] (or a map)
RANGE = KIND_RANGE          # XRANGE / XREVRANGE / XCLAIM: a flat list of entries
AUTOCLAIM = KIND_AUTOCLAIM  # XAUTOCLAIM: [cursor, entries(, deleted ids)]


cdef class StreamBatch:
    """One stream reply (XREAD/XREADGROUP, XRANGE/XREVRANGE/XCLAIM, XAUTOCLAIM):
    the reply bytes (``buf``) plus C arrays of offsets into them. Python objects
    are made only on access, straight from the buffer.

    * ``batch[i]`` (negative indexes and slices allowed) and iteration give
      ``(stream, id, fields)`` tuples. ``stream`` is the stream name for READ
      batches and ``None`` for RANGE and AUTOCLAIM batches (those replies carry
      no stream name). ``fields`` is a dict; when an entry repeats a key the last
      value wins (as in a dict built from the pairs). An entry whose field list
      was nil (XCLAIM/XREADGROUP of a deleted entry) has ``fields`` ``None``.
    * Names, ids, keys and values are ``bytes`` when ``encoding`` is None, else
      ``str`` decoded with that codec (errors="strict").
    * Stream names are made once per batch (``streams``, an interned tuple) and
      the same objects are reused for every entry.
    * Nil elements in an entry list (XCLAIM on old servers) have no id and are
      skipped: they do not count in ``len(batch)``.
    """

    def __cinit__(self):
        self.buf = b""
        self.data = PyBytes_AS_STRING(self.buf)
        self.encoding = None
        self.kind = KIND_READ
        self.n_streams = self.n_entries = self.n_fields = 0
        self.cap_streams = self.cap_entries = self.cap_fields = 0
        self.stream_off = self.stream_len = NULL
        self.entry_stream = NULL
        self.id_off = self.id_len = NULL
        self.id_ms = self.id_seq = NULL
        self.field_first = NULL
        self.entry_nil = NULL
        self.key_off = self.key_len = self.val_off = self.val_len = NULL
        self.stream_names = None
        self.cursor = None
        self.deleted = None

    def __dealloc__(self):
        if refcount_of(<PyObject*>self.buf) == 1:     # nothing else holds the bytes
            _keep_spare(self.buf)
        # one block per group of arrays (see blk_alloc)
        blk_free(self.stream_off)
        blk_free(self.id_off)
        blk_free(self.key_off)

    # -- C API (declared in _batch.pxd) ------------------------------------------

    cdef int grow_streams(self, Py_ssize_t need) noexcept:
        return _sb_grow_streams(self, need)

    cdef int grow_entries(self, Py_ssize_t need) noexcept:
        return _sb_grow_entries(self, need)

    cdef int grow_fields(self, Py_ssize_t need) noexcept:
        return _sb_grow_fields(self, need)

    cdef int reserve(self) noexcept:
        return _sb_reserve(self)

    cdef object obj(self, int64_t off, int64_t n):
        return _sb_obj(self, off, n)

    cdef Py_ssize_t find_value(self, Py_ssize_t entry, const char* key, Py_ssize_t key_len) noexcept:
        """Index of the field pair of `entry` whose key equals key[0:key_len] (the
        last one when the key repeats), or -1 (absent, nil entry, bad index)."""
        cdef Py_ssize_t j, lo
        if entry < 0 or entry >= self.n_entries or self.field_first == NULL:
            return -1
        lo = self.field_first[entry]
        j = self.field_first[entry + 1] - 1
        while j >= lo:
            if self.key_len[j] == key_len and (
                    key_len == 0 or memcmp(self.data + self.key_off[j], key, key_len) == 0):
                return j
            j -= 1
        return -1

    # -- Python API --------------------------------------------------------------

    def __len__(self):
        return self.n_entries

    def __getitem__(self, i):
        """``(stream_or_None, id, fields_or_None)``; stream is None for RANGE and
        AUTOCLAIM batches. Negative indexes count from the end; a slice gives a list."""
        cdef Py_ssize_t k
        if isinstance(i, slice):
            return [_sb_item(self, k, _sb_names(self)) for k in range(*i.indices(self.n_entries))]
        k = i
        if k < 0:
            k += self.n_entries
        if k < 0 or k >= self.n_entries:
            raise IndexError("StreamBatch index out of range")
        return _sb_item(self, k, _sb_names(self))

    def __iter__(self):
        cdef Py_ssize_t k
        cdef tuple names = _sb_names(self)
        for k in range(self.n_entries):
            yield _sb_item(self, k, names)

    def __repr__(self):
        kinds = {READ: "READ", RANGE: "RANGE", AUTOCLAIM: "AUTOCLAIM"}
        return (f"<StreamBatch {kinds.get(self.kind, self.kind)} entries={self.n_entries} "
                f"streams={self.n_streams} nbytes={self.nbytes}>")

    @property
    def streams(self):
        """Stream names in reply order, each made once (RANGE kinds: ``()``)."""
        return _sb_names(self)

    @property
    def nbytes(self):
        """Size of the owned reply buffer."""
        return PyBytes_GET_SIZE(self.buf)

    def to_messages(self):
        """Every entry as a ``(stream_or_None, id, fields_or_None)`` tuple."""
        cdef Py_ssize_t k
        cdef tuple names = _sb_names(self)
        return [_sb_item(self, k, names) for k in range(self.n_entries)]

    def ids(self):
        """The entry ids (bytes or str per ``encoding``)."""
        cdef Py_ssize_t k
        return [_sb_obj(self, self.id_off[k], self.id_len[k]) for k in range(self.n_entries)]

    def id_at(self, Py_ssize_t i):
        """Entry id i as numbers ``(milliseconds, sequence)``."""
        if i < 0:
            i += self.n_entries
        if i < 0 or i >= self.n_entries:
            raise IndexError("StreamBatch index out of range")
        return (self.id_ms[i], self.id_seq[i])

    def last_ids(self):
        """The greatest id per stream, comparing ``(ms, seq)`` as unsigned 64-bit
        numbers (never as strings), for XREAD cursors. READ batches are keyed by
        stream name; RANGE/AUTOCLAIM batches (no names) by ``None``. Streams with
        no entries are absent."""
        cdef Py_ssize_t k, s, prev, n_keys
        cdef Py_ssize_t* best
        cdef tuple names = _sb_names(self)
        cdef dict bestk = {}
        if self.n_entries == 0:
            return {}
        n_keys = self.n_streams if self.kind == KIND_READ else 1
        best = <Py_ssize_t*>realloc(NULL, (n_keys if n_keys > 0 else 1) * sizeof(Py_ssize_t))
        if best == NULL:
            raise MemoryError()
        try:
            for s in range(n_keys):
                best[s] = -1
            for k in range(self.n_entries):
                s = self.entry_stream[k] if self.kind == KIND_READ else 0
                if s < 0 or s >= n_keys:
                    continue
                if best[s] < 0 or _sb_id_gt(self, k, best[s]):
                    best[s] = k
            for s in range(n_keys):
                if best[s] < 0:
                    continue
                key = names[s] if self.kind == KIND_READ else None
                prev = bestk.get(key, -1)
                if prev < 0 or _sb_id_gt(self, best[s], prev):  # a name twice: keep the max
                    bestk[key] = best[s]
        finally:
            free(best)
        return {key: _sb_obj(self, self.id_off[k], self.id_len[k]) for key, k in bestk.items()}

    def field(self, key):
        """The value of field `key` (bytes or str) of every entry, as memoryviews
        into ``buf`` (``None`` where the entry lacks the field or is nil). When an
        entry repeats the key, the last value is given."""
        cdef bytes kb
        cdef Py_ssize_t k, j
        cdef list out
        if isinstance(key, str):
            kb = (<str>key).encode(self.encoding or "utf-8")
        elif isinstance(key, (bytes, bytearray, memoryview)):
            kb = bytes(key)
        else:
            raise TypeError(f"field key must be bytes or str, not {type(key).__name__}")
        mv = memoryview(self.buf)
        out = []
        for k in range(self.n_entries):
            j = self.find_value(k, PyBytes_AS_STRING(kb), PyBytes_GET_SIZE(kb))
            if j < 0:
                out.append(None)
            else:
                out.append(mv[self.val_off[j]:self.val_off[j] + self.val_len[j]])
        return out

    def __reduce_ex__(self, protocol):
        """Pickled as its reply bytes (out of band with protocol 5, e.g. by Dask),
        parsed again on load: the offsets are not sent, they are re-derived."""
        buf = self.buf
        if protocol >= 5:
            buf = PickleBuffer(buf)
        from fastredis._resp import batch_from_reply

        return (batch_from_reply, (buf, self.kind, self.encoding))

    def __arrow_c_schema__(self):
        """The Arrow schema of this batch's columns, as a PyCapsule (see
        ``__arrow_c_stream__``)."""
        return _columns().schema_capsule(self)

    def __arrow_c_array__(self, requested_schema=None):
        """``(schema, array)`` PyCapsules: this batch as one Arrow struct array
        (``requested_schema`` is not honoured: the layout is fixed)."""
        return _columns().array_capsules(self)

    def __arrow_c_stream__(self, requested_schema=None):
        """This batch as an Arrow stream of one record batch, a PyCapsule, for
        ``pa.table(batch)``, ``pl.DataFrame(batch)`` and DuckDB. Columns: ``stream``
        (dictionary<int32, utf8>, null for RANGE/AUTOCLAIM batches), ``id_ms``,
        ``id_seq`` (uint64), then one ``binary_view`` column per field name
        (``string_view`` when ``encoding`` is set; values must then be UTF-8, else
        UnicodeDecodeError). The views point into ``buf``: no payload byte is
        copied, and the exported arrays keep this batch alive. A missing field is
        null; a repeated one gives its last value."""
        return _columns().stream_capsule(self)

    def offsets(self):
        """The offset arrays as read-only numpy views of the C arrays (no copy):
        entry_stream, id_off, id_len, id_ms, id_seq, field_first (len+1),
        entry_nil, key_off, key_len, val_off, val_len, stream_off, stream_len.
        Each array keeps this batch alive."""
        ne = self.n_entries
        nf = self.n_fields
        return {
            "entry_stream": _sb_view(self, self.entry_stream, ne, cnp.NPY_INT32),
            "id_off": _sb_view(self, self.id_off, ne, cnp.NPY_INT64),
            "id_len": _sb_view(self, self.id_len, ne, cnp.NPY_INT64),
            "id_ms": _sb_view(self, self.id_ms, ne, cnp.NPY_UINT64),
            "id_seq": _sb_view(self, self.id_seq, ne, cnp.NPY_UINT64),
            "field_first": _sb_view(self, self.field_first, ne + 1, cnp.NPY_INT64),
            "entry_nil": _sb_view(self, self.entry_nil, ne, cnp.NPY_UINT8),
            "key_off": _sb_view(self, self.key_off, nf, cnp.NPY_INT64),
            "key_len": _sb_view(self, self.key_len, nf, cnp.NPY_INT64),
            "val_off": _sb_view(self, self.val_off, nf, cnp.NPY_INT64),
            "val_len": _sb_view(self, self.val_len, nf, cnp.NPY_INT64),
            "stream_off": _sb_view(self, self.stream_off, self.n_streams, cnp.NPY_INT64),
            "stream_len": _sb_view(self, self.stream_len, self.n_streams, cnp.NPY_INT64),
        }


cdef object _columns_mod = None


cdef object _columns():
    """fastredis._columns, imported on first use (it cimports this module)."""
    global _columns_mod
    if _columns_mod is None:
        from fastredis import _columns as mod
        _columns_mod = mod
    return _columns_mod


# Array blocks. Each group of parallel arrays lives in one block (the first array
# of the group is the block start): per stream (stream_off, stream_len), per entry
# (id_off, id_len, id_ms, id_seq, field_first, entry_stream, entry_nil), per field
# pair (key_off, key_len, val_off, val_len). Freed blocks go to a small cache
# (at most 8 blocks, 64 MB), so that a consumer parsing batch after batch reuses
# warm memory instead of faulting in fresh pages every time.

cdef enum:
    POOL_SLOTS = 8
    BLK_HDR = 16

cdef void* _pool_blk[8]
cdef size_t _pool_size[8]
cdef int _pool_n = 0
cdef size_t _pool_bytes = 0
cdef size_t _POOL_MAX = 64 * 1024 * 1024


cdef void* blk_alloc(size_t size) noexcept:
    """At least `size` usable bytes (NULL when out of memory)."""
    global _pool_n, _pool_bytes
    cdef int i, best = -1
    cdef char* h
    for i in range(_pool_n):
        if _pool_size[i] >= size and _pool_size[i] <= 4 * size + 65536:
            if best < 0 or _pool_size[i] < _pool_size[best]:
                best = i
    if best >= 0:
        h = <char*>_pool_blk[best]
        _pool_bytes -= _pool_size[best]
        _pool_n -= 1
        _pool_blk[best] = _pool_blk[_pool_n]
        _pool_size[best] = _pool_size[_pool_n]
        return h + BLK_HDR
    h = <char*>malloc(size + BLK_HDR)
    if h == NULL:
        return NULL
    (<size_t*>h)[0] = size
    return h + BLK_HDR


cdef void blk_free(void* p) noexcept:
    global _pool_n, _pool_bytes
    cdef char* h
    cdef size_t size
    cdef int i, small = 0
    if p == NULL:
        return
    h = <char*>p - BLK_HDR
    size = (<size_t*>h)[0]
    if size <= _POOL_MAX // 4:
        if _pool_n == POOL_SLOTS:       # full: drop the smallest cached block
            for i in range(1, _pool_n):
                if _pool_size[i] < _pool_size[small]:
                    small = i
            if _pool_size[small] < size:
                free(_pool_blk[small])
                _pool_bytes -= _pool_size[small]
                _pool_n -= 1
                _pool_blk[small] = _pool_blk[_pool_n]
                _pool_size[small] = _pool_size[_pool_n]
        while _pool_n > 0 and _pool_bytes + size > _POOL_MAX:
            _pool_n -= 1
            free(_pool_blk[_pool_n])
            _pool_bytes -= _pool_size[_pool_n]
        if _pool_n < POOL_SLOTS:
            _pool_blk[_pool_n] = h
            _pool_size[_pool_n] = size
            _pool_n += 1
            _pool_bytes += size
            return
    free(h)


cdef int _sb_grow_streams(StreamBatch self, Py_ssize_t need=0) noexcept:
    cdef Py_ssize_t cap = self.cap_streams * 2 if self.cap_streams else 4
    cdef char* blk
    if cap < need:
        cap = need
    blk = <char*>blk_alloc(<size_t>cap * 16)
    if blk == NULL:
        return -1
    if self.n_streams:
        memcpy(blk, self.stream_off, self.n_streams * 8)
        memcpy(blk + cap * 8, self.stream_len, self.n_streams * 8)
    blk_free(self.stream_off)
    self.stream_off = <int64_t*>blk
    self.stream_len = <int64_t*>(blk + cap * 8)
    self.cap_streams = cap
    return 0


cdef int _sb_grow_entries(StreamBatch self, Py_ssize_t need=0) noexcept:
    """Grow the per-entry arrays to hold at least `need` (and twice as many) entries."""
    cdef Py_ssize_t cap = self.cap_entries * 2 if self.cap_entries else 64
    cdef Py_ssize_t n = self.n_entries
    cdef char* blk
    if cap < need:
        cap = need
    blk = <char*>blk_alloc(<size_t>cap * 45 + 8)
    if blk == NULL:
        return -1
    if self.id_off != NULL:
        memcpy(blk, self.id_off, n * 8)
        memcpy(blk + cap * 8, self.id_len, n * 8)
        memcpy(blk + cap * 16, self.id_ms, n * 8)
        memcpy(blk + cap * 24, self.id_seq, n * 8)
        memcpy(blk + cap * 32, self.field_first, (n + 1) * 8)
        memcpy(blk + cap * 40 + 8, self.entry_stream, n * 4)
        memcpy(blk + cap * 44 + 8, self.entry_nil, n)
    else:
        (<int64_t*>(blk + cap * 32))[0] = 0
    blk_free(self.id_off)
    self.id_off = <int64_t*>blk
    self.id_len = <int64_t*>(blk + cap * 8)
    self.id_ms = <uint64_t*>(blk + cap * 16)
    self.id_seq = <uint64_t*>(blk + cap * 24)
    self.field_first = <int64_t*>(blk + cap * 32)
    self.entry_stream = <int32_t*>(blk + cap * 40 + 8)
    self.entry_nil = <uint8_t*>(blk + cap * 44 + 8)
    self.cap_entries = cap
    return 0


cdef int _sb_grow_fields(StreamBatch self, Py_ssize_t need=0) noexcept:
    """Grow the per-field arrays to hold at least `need` (and twice as many) pairs."""
    cdef Py_ssize_t cap = self.cap_fields * 2 if self.cap_fields else 256
    cdef Py_ssize_t n = self.n_fields
    cdef char* blk
    if cap < need:
        cap = need
    blk = <char*>blk_alloc(<size_t>cap * 32)
    if blk == NULL:
        return -1
    if self.key_off != NULL:
        memcpy(blk, self.key_off, n * 8)
        memcpy(blk + cap * 8, self.key_len, n * 8)
        memcpy(blk + cap * 16, self.val_off, n * 8)
        memcpy(blk + cap * 24, self.val_len, n * 8)
    blk_free(self.key_off)
    self.key_off = <int64_t*>blk
    self.key_len = <int64_t*>(blk + cap * 8)
    self.val_off = <int64_t*>(blk + cap * 16)
    self.val_len = <int64_t*>(blk + cap * 24)
    self.cap_fields = cap
    return 0


cdef int _sb_reserve(StreamBatch self) noexcept:
    """Allocate every array (so numpy views never see NULL)."""
    if self.cap_streams == 0 and _sb_grow_streams(self, 4) < 0:
        return -1
    if self.cap_entries == 0 and _sb_grow_entries(self, 16) < 0:
        return -1
    if self.cap_fields == 0 and _sb_grow_fields(self, 16) < 0:
        return -1
    self.field_first[0] = 0
    return 0


cdef inline object _sb_obj(StreamBatch self, int64_t off, int64_t n):
    if self.encoding is None:
        return PyBytes_FromStringAndSize(self.data + off, n)
    return PyUnicode_Decode(self.data + off, n, PyUnicode_AsUTF8(self.encoding), NULL)


cdef tuple _sb_names(StreamBatch self):
    cdef Py_ssize_t s
    cdef list names
    if self.stream_names is None:
        names = []
        for s in range(self.n_streams):
            name = _sb_obj(self, self.stream_off[s], self.stream_len[s])
            if type(name) is str:
                name = intern(name)
            names.append(name)
        self.stream_names = tuple(names)
    return <tuple>self.stream_names


cdef object _sb_fields(StreamBatch self, Py_ssize_t i):
    cdef dict d
    cdef int64_t j
    if self.entry_nil[i]:
        return None
    d = {}
    for j in range(self.field_first[i], self.field_first[i + 1]):
        d[_sb_obj(self, self.key_off[j], self.key_len[j])] = _sb_obj(self, self.val_off[j], self.val_len[j])
    return d


cdef tuple _sb_item(StreamBatch self, Py_ssize_t i, tuple names):
    stream = names[self.entry_stream[i]] if self.kind == KIND_READ else None
    return (stream, _sb_obj(self, self.id_off[i], self.id_len[i]), _sb_fields(self, i))


cdef inline bint _sb_id_gt(StreamBatch self, Py_ssize_t a, Py_ssize_t b) noexcept:
    return self.id_ms[a] > self.id_ms[b] or (
        self.id_ms[a] == self.id_ms[b] and self.id_seq[a] > self.id_seq[b])


cdef object _sb_view(StreamBatch self, void* ptr, Py_ssize_t n, int typenum):
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray arr
    if ptr == NULL:                 # a StreamBatch() made directly: no arrays
        arr = np.zeros(n, dtype=cnp.PyArray_DescrFromType(typenum))
    else:
        arr = cnp.PyArray_SimpleNewFromData(1, &dim, typenum, ptr)
        cnp.set_array_base(arr, self)
    cnp.PyArray_CLEARFLAGS(arr, cnp.NPY_ARRAY_WRITEABLE)
    return arr
