"""The RESP writer: commands -> the bytes redis-py would send, in chunks.

``pack_commands`` writes the ``*N``/``$len`` lines and the small arguments into
header chunks (C, into a growing bytes object) and references every argument of
at least ``REFERENCE_MIN`` bytes as a memoryview between those chunks (never
copied), for ``socket.sendmsg``/``writelines``/``send_packed_command``.
"""

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_Release,
    PyObject_CheckBuffer,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.float cimport PyFloat_Check
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from fastredis._outbuf cimport (
    OutBuf,
    w_crlf,
    w_finish,
    w_free,
    w_init,
    w_raw,
    w_reserve,
    w_uint,
)


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* n) except NULL


# Arguments of at least this many bytes are referenced by pack_commands, not copied.
REFERENCE_MIN = 16 * 1024
cdef Py_ssize_t _REFERENCE_MIN = REFERENCE_MIN


cdef int _inline_arg(OutBuf* w, const char* s, Py_ssize_t n) except -1:
    w_reserve(w, n + 25)
    w.p[w.pos] = b'$'
    w.pos += 1
    w_uint(w, <uint64_t>n)
    w_crlf(w)
    w_raw(w, s, n)
    w_crlf(w)
    return 0


cdef int _pack_arg(OutBuf* w, arg, list out) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    cdef Py_buffer view
    cdef long long v
    cdef int overflow
    cdef memoryview mv
    if PyBytes_Check(arg):
        n = PyBytes_GET_SIZE(arg)
        if n >= _REFERENCE_MIN:
            return _ref(w, memoryview(arg), out)
        return _inline_arg(w, PyBytes_AS_STRING(arg), n)
    if PyUnicode_Check(arg):
        s = PyUnicode_AsUTF8AndSize(arg, &n)
        if n >= _REFERENCE_MIN:
            return _ref(w, memoryview((<str>arg).encode("utf-8")), out)
        return _inline_arg(w, s, n)
    if isinstance(arg, bool):
        raise TypeError(
            "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first.")
    if PyLong_CheckExact(arg):
        v = PyLong_AsLongLongAndOverflow(arg, &overflow)
        if not overflow:
            w_reserve(w, 50)
            w.p[w.pos] = b'$'
            w.pos += 1
            # the digits go after the length, which we know only once written
            _w_int_arg(w, v)
            return 0
        b = repr(arg).encode()
        return _inline_arg(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
    if isinstance(arg, int) or PyFloat_Check(arg):
        b = repr(arg).encode()            # as redis-py does, int subclasses included
        return _inline_arg(w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
    if PyObject_CheckBuffer(arg):
        PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)   # contiguous bytes or error
        try:
            n = view.len
            if n < _REFERENCE_MIN:
                return _inline_arg(w, <const char*>view.buf, n)
        finally:
            PyBuffer_Release(&view)
        if isinstance(arg, memoryview):
            mv = <memoryview>arg
        else:
            mv = memoryview(arg)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        return _ref(w, mv, out)
    raise TypeError(
        f"Invalid input of type: '{type(arg).__name__}'. "
        f"Convert to a bytes, string, int or float first.")


cdef int _w_int_arg(OutBuf* w, long long v) noexcept:
    """`$<ndigits>\\r\\n<digits>\\r\\n` after the '$' already written (50 reserved)."""
    cdef char tmp[24]
    cdef int i = 24, nd
    cdef uint64_t u
    cdef bint neg = v < 0
    u = (<uint64_t>0 - <uint64_t>v) if neg else <uint64_t>v
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if neg:
        i -= 1
        tmp[i] = b'-'
    nd = 24 - i
    w_uint(w, <uint64_t>nd)
    w_crlf(w)
    memcpy(w.p + w.pos, tmp + i, nd)
    w.pos += nd
    w_crlf(w)
    return 0


cdef int _ref(OutBuf* w, memoryview mv, list out) except -1:
    """`$len\\r\\n` closes the current chunk; the view follows it; a new chunk
    starts with the CRLF that ends the argument."""
    w_reserve(w, 23)
    w.p[w.pos] = b'$'
    w.pos += 1
    w_uint(w, <uint64_t>mv.nbytes)
    w_crlf(w)
    out.append(w_finish(w))
    out.append(mv)
    w_init(w, 256)
    w.p[0] = b'\r'
    w.p[1] = b'\n'
    w.pos = 2
    return 0


def pack_commands(commands) -> list:
    """RESP-encode commands (each a sequence of bytes, str, int, float or buffer
    arguments) into a list of chunks whose concatenation is exactly what redis-py's
    ``Connection.pack_command`` / ``pack_commands`` would send: header chunks
    written in C holding ``*N``/``$len`` lines and the small arguments, and for
    each argument of at least ``REFERENCE_MIN`` bytes a memoryview of it (no copy;
    ``view.obj`` is the argument). str is encoded as UTF-8. As in redis-py, a str
    first argument (or a bytes one containing a space) is split on whitespace
    (``"CONFIG GET"``). Pass the result to ``socket.sendmsg``, ``writelines`` or
    redis-py's ``send_packed_command``."""
    cdef OutBuf w
    cdef list out = []
    cdef Py_ssize_t j, n_args
    w.obj = NULL
    w_init(&w, 256)
    try:
        for cmd in commands:
            if not isinstance(cmd, (list, tuple)):
                if isinstance(cmd, (str, bytes, bytearray, memoryview)):
                    raise TypeError(
                        f"each command must be a list of arguments, not {type(cmd).__name__}")
                cmd = list(cmd)
            n_args = len(cmd)
            if n_args == 0:
                raise ValueError("empty command")
            first = cmd[0]
            if isinstance(first, str):
                head = (<str>first).encode().split()
            elif isinstance(first, (bytes, bytearray)) and b" " in first:
                head = first.split()
            else:
                head = None
            w_reserve(&w, 23)
            w.p[w.pos] = b'*'
            w.pos += 1
            if head is None:
                w_uint(&w, <uint64_t>n_args)
            else:
                w_uint(&w, <uint64_t>(n_args - 1 + len(head)))
            w_crlf(&w)
            if head is None:
                _pack_arg(&w, first, out)
            else:
                for arg in head:
                    _pack_arg(&w, arg, out)
            for j in range(1, n_args):
                _pack_arg(&w, cmd[j], out)
        if w.pos:
            out.append(w_finish(&w))
        return out
    finally:
        w_free(&w)
