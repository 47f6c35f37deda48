# The StreamBatch layout, shared by the reader (_resp.pyx) and the frame packer
# (_frames.pyx). All offsets index into `data`, the start of the owned buffer.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t


cdef class StreamBatch:
    cdef readonly object buf          # owned bytes holding the reply
    cdef const char* data             # == PyBytes_AS_STRING(buf)
    cdef readonly object encoding     # str codec for names/ids/fields, or None for bytes
    cdef readonly int kind            # READ, RANGE or AUTOCLAIM

    cdef Py_ssize_t n_streams
    cdef Py_ssize_t n_entries
    cdef Py_ssize_t n_fields          # key/value pairs over all entries
    cdef Py_ssize_t cap_streams, cap_entries, cap_fields

    # per stream (grouped: the entries of stream s are contiguous)
    cdef int64_t* stream_off
    cdef int64_t* stream_len
    cdef object stream_names          # tuple of interned names, built lazily

    # per entry
    cdef int32_t* entry_stream        # stream index
    cdef int64_t* id_off
    cdef int64_t* id_len
    cdef uint64_t* id_ms
    cdef uint64_t* id_seq
    cdef int64_t* field_first         # n_entries + 1 items: fields of entry i are
                                      # [field_first[i], field_first[i+1])
    cdef uint8_t* entry_nil           # 1 where the entry's field list was nil

    # per field pair
    cdef int64_t* key_off
    cdef int64_t* key_len
    cdef int64_t* val_off
    cdef int64_t* val_len

    # XAUTOCLAIM extras
    cdef readonly object cursor       # next start id (str/bytes) or None
    cdef readonly object deleted      # list of deleted ids or None

    cdef Py_ssize_t find_value(self, Py_ssize_t entry, const char* key, Py_ssize_t key_len) noexcept
