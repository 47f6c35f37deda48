# The write side's buffer: a bytes object that grows as it is written, so the
# result needs no final copy. w_reserve() is the one "room for n more bytes"
# decision; every w_* writer below assumes its caller reserved the room.
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.stdint cimport uint64_t
from libc.string cimport memcpy


cdef extern from "Python.h":
    PyObject* _bytes_new "PyBytes_FromStringAndSize"(const char* s, Py_ssize_t n)
    int _PyBytes_Resize(PyObject** obj, Py_ssize_t n) except -1

cdef extern from *:
    """
    static const unsigned long long fr_pow10[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
        100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL,
        1000000000000ULL, 10000000000000ULL, 100000000000000ULL,
        1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
        1000000000000000000ULL, 10000000000000000000ULL};
    """
    const unsigned long long* fr_pow10


cdef struct OutBuf:
    PyObject* obj                     # the bytes object written into (owned), or NULL
    char* p                           # == PyBytes_AS_STRING(obj)
    Py_ssize_t pos                    # bytes written
    Py_ssize_t cap                    # bytes allocated


cdef inline int w_init(OutBuf* w, Py_ssize_t cap) except -1:
    if cap < 16:
        cap = 16
    w.obj = _bytes_new(NULL, cap)
    if w.obj == NULL:
        raise MemoryError()
    w.p = PyBytes_AS_STRING(<object>w.obj)
    w.pos = 0
    w.cap = cap
    return 0


cdef inline int w_grow(OutBuf* w, Py_ssize_t need) except -1:
    """Make room for `need` more bytes (amortized doubling)."""
    cdef Py_ssize_t cap = w.cap * 2
    if need > (<Py_ssize_t>0x7FFFFFFFFFFFFFFF) - w.pos:
        raise MemoryError()
    if cap < w.pos + need:
        cap = w.pos + need
    _PyBytes_Resize(&w.obj, cap)       # frees and NULLs w.obj on failure
    w.p = PyBytes_AS_STRING(<object>w.obj)
    w.cap = cap
    return 0


cdef inline int w_reserve(OutBuf* w, Py_ssize_t need) except -1:
    """Room for `need` more bytes at w.p + w.pos."""
    if need > w.cap - w.pos:
        w_grow(w, need)
    return 0


cdef inline object w_finish(OutBuf* w):
    """The bytes written so far (ownership passes to the caller)."""
    _PyBytes_Resize(&w.obj, w.pos)
    result = <object>w.obj             # new reference
    Py_XDECREF(w.obj)
    w.obj = NULL
    w.p = NULL
    w.pos = w.cap = 0
    return result


cdef inline void w_free(OutBuf* w) noexcept:
    Py_XDECREF(w.obj)
    w.obj = NULL
    w.p = NULL
    w.pos = w.cap = 0


cdef inline void w_raw(OutBuf* w, const char* s, Py_ssize_t n) noexcept:
    """Copy n bytes."""
    memcpy(w.p + w.pos, s, n)
    w.pos += n


cdef inline void w_crlf(OutBuf* w) noexcept:
    w.p[w.pos] = b'\r'
    w.p[w.pos + 1] = b'\n'
    w.pos += 2


cdef inline void w_uint(OutBuf* w, uint64_t v) noexcept:
    """Decimal digits of v (at most 20 bytes). Digits go straight to their place:
    building them in a temporary and copying stalls on store forwarding."""
    cdef int nd = 1
    cdef char* p
    while nd < 20 and v >= fr_pow10[nd]:
        nd += 1
    p = w.p + w.pos + nd
    w.pos += nd
    while True:
        p -= 1
        p[0] = <char>(48 + v % 10)
        v //= 10
        if v == 0:
            break
