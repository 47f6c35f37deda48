# StreamBatch, the core's one data structure: a stream reply (XREAD/XREADGROUP,
# XRANGE/XREVRANGE/XCLAIM, XAUTOCLAIM) kept as its bytes plus offset arrays into
# them. Filled by the reader (_resp.pyx), read by the frames (_frames.pyx); other
# Cython code may `from fastredis._batch cimport StreamBatch` and read the arrays.
#
# Invariants: every offset/length pair lies inside `buf`; the entries of stream s
# are contiguous; entry i's fields are [field_first[i], field_first[i+1]).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t


cdef enum:                            # StreamBatch.kind (READ, RANGE, AUTOCLAIM in Python)
    KIND_READ = 0                     # XREAD / XREADGROUP: streams with names
    KIND_RANGE = 1                    # XRANGE / XREVRANGE / XCLAIM: entries, no name
    KIND_AUTOCLAIM = 2                # XAUTOCLAIM: entries, a cursor, deleted ids


cdef class StreamBatch:
    # the reply
    cdef readonly object buf          # owned bytes holding the reply
    cdef const char* data             # == PyBytes_AS_STRING(buf)
    cdef readonly object encoding     # str codec for names/ids/fields, or None for bytes
    cdef readonly int kind            # KIND_READ, KIND_RANGE or KIND_AUTOCLAIM

    # counts and capacities
    cdef Py_ssize_t n_streams
    cdef Py_ssize_t n_entries
    cdef Py_ssize_t n_fields          # key/value pairs over all entries
    cdef Py_ssize_t cap_streams, cap_entries, cap_fields

    # per stream (one block)
    cdef int64_t* stream_off
    cdef int64_t* stream_len
    cdef object stream_names          # tuple of interned names, built lazily

    # per entry (one block)
    cdef int32_t* entry_stream        # stream index
    cdef int64_t* id_off
    cdef int64_t* id_len
    cdef uint64_t* id_ms              # the id as numbers: (ms, seq)
    cdef uint64_t* id_seq
    cdef int64_t* field_first         # n_entries + 1 items
    cdef uint8_t* entry_nil           # 1 where the entry's field list was nil

    # per field pair (one block)
    cdef int64_t* key_off
    cdef int64_t* key_len
    cdef int64_t* val_off
    cdef int64_t* val_len

    # XAUTOCLAIM extras
    cdef readonly object cursor       # next start id (str/bytes) or None
    cdef readonly object deleted      # list of deleted ids or None

    # building (the reader): room for at least `need` items and twice the current
    # capacity; 0, or -1 when out of memory (the batch is unchanged)
    cdef int grow_streams(self, Py_ssize_t need) noexcept
    cdef int grow_entries(self, Py_ssize_t need) noexcept
    cdef int grow_fields(self, Py_ssize_t need) noexcept
    cdef int reserve(self) noexcept   # allocate every array (numpy views never see NULL)

    # reading
    cdef object obj(self, int64_t off, int64_t n)   # buf[off:off+n] as bytes or str
    # the field pair of `entry` whose key is key[0:key_len] (the last when the key
    # repeats), or -1 (absent, nil entry, bad index)
    cdef Py_ssize_t find_value(self, Py_ssize_t entry, const char* key, Py_ssize_t key_len) noexcept


# Reply buffers of dropped big batches, kept for the next big replies (no fresh pages
# to fault in and zero): the smallest kept bytes object of `at_least` to `at_most`
# bytes, referenced by nothing else, or None. Its content is to be overwritten.
cdef object take_spare(Py_ssize_t at_least, Py_ssize_t at_most)
