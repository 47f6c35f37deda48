# The read side's bounds rule and RESP token grammar, inlined into every module that
# cimports it. A Cursor is the bytes a parser may read: base[0:end]. Every "are
# there n more bytes at p" decision is cur_check(); everything else in this file
# reads only inside ranges cur_check() (or a search bounded by `end`) has granted.
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.object cimport PyObject
from libc.math cimport INFINITY, NAN, isinf
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcpy


cdef extern from "Python.h":
    double PyOS_string_to_double(const char* s, char** endptr, PyObject* overflow_exception)


cdef struct Cursor:
    const char* base                  # first readable byte
    Py_ssize_t end                    # bytes readable from base (>= 0)


cdef enum:
    MAX_BULK = 512 * 1024 * 1024      # Redis's proto-max-bulk-len default


cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define FR_LITTLE_ENDIAN 1
    #elif defined(_WIN32) || defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_ARM64)
    #define FR_LITTLE_ENDIAN 1
    #else
    #define FR_LITTLE_ENDIAN 0
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define FR_CTZ64(x) __builtin_ctzll(x)
    #define FR_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define FR_PREFETCH(p) ((void)0)
    static int FR_CTZ64(unsigned long long x) { int n = 0; while (!(x & 1)) { x >>= 1; n++; } return n; }
    #endif
    """
    const bint LITTLE_ENDIAN "FR_LITTLE_ENDIAN"
    int FR_CTZ64(unsigned long long x) nogil
    void FR_PREFETCH(const char* p) nogil


# -- the bounds rule -------------------------------------------------------------

cdef inline bint cur_check(const Cursor* c, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """Whether the n bytes at p are readable: 0 <= p, 0 <= n, p + n <= end (written
    so that no sum can overflow)."""
    return p >= 0 and n >= 0 and p <= c.end and n <= c.end - p


cdef inline const char* cur_read(const Cursor* c, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """The n bytes at p, or NULL when they are not all readable."""
    if not cur_check(c, p, n):
        return NULL
    return c.base + p


cdef inline bint cur_slice(const Cursor* c, Py_ssize_t p, Py_ssize_t n, Cursor* out) noexcept nogil:
    """*out = the n bytes at p as a cursor of their own; 0 when not all readable."""
    if not cur_check(c, p, n):
        return 0
    out.base = c.base + p
    out.end = n
    return 1


cdef inline Py_ssize_t cur_find_crlf(const Cursor* c, Py_ssize_t p) noexcept nogil:
    """Index (from base) of the first "\\r\\n" at or after p, or -1."""
    cdef const char* cur
    cdef const char* q
    cdef Py_ssize_t left
    if not cur_check(c, p, 2):
        return -1
    cur = c.base + p
    left = c.end - p - 1               # positions where the '\r' may be
    while left > 0:
        q = <const char*>memchr(cur, 13, left)
        if q == NULL:
            return -1
        if q[1] == b'\n':
            return q - c.base
        left -= (q + 1 - cur)
        cur = q + 1
    return -1


# -- integers ---------------------------------------------------------------------

cdef inline bint string2ll(const char* s, Py_ssize_t n, long long* value) noexcept nogil:
    """hiredis's strict string2ll over s[0:n]: optional '-', no leading zeros, no
    overflow."""
    cdef Py_ssize_t i = 0
    cdef bint negative = 0
    cdef unsigned long long v
    cdef unsigned int d
    if n <= 0:
        return 0
    if n == 1 and s[0] == b'0':
        value[0] = 0
        return 1
    if s[0] == b'-':
        negative = 1
        i = 1
        if i == n:
            return 0
    if s[i] >= b'1' and s[i] <= b'9':
        v = <unsigned long long>(s[i] - 48)
        i += 1
    else:
        return 0
    while i < n:
        d = <unsigned char>s[i] - 48
        if d > 9:
            return 0
        if v > 1844674407370955161ULL:           # ULLONG_MAX / 10
            return 0
        v *= 10
        if v > 18446744073709551615ULL - d:
            return 0
        v += d
        i += 1
    if negative:
        if v > 9223372036854775808ULL:
            return 0
        value[0] = <long long>(0ULL - v)
    else:
        if v > 9223372036854775807ULL:
            return 0
        value[0] = <long long>v
    return 1


cdef inline int read_int_line(const Cursor* c, Py_ssize_t p, long long* out, Py_ssize_t* q,
                              Py_ssize_t from_=-1) noexcept nogil:
    """Parse the integer line starting at p (just after the type byte).
    1: ok (*q = index after the CRLF), 0: no CRLF yet, -1: not a valid integer.
    The CRLF is searched from `from_` when the bytes before it were searched already."""
    cdef const char* base = c.base
    cdef Py_ssize_t i = p
    cdef long long v = 0
    cdef unsigned int d
    cdef Py_ssize_t k
    # fast path: 1..18 digits without a leading zero (or "0"), then CRLF
    if cur_check(c, i, 1):
        d = <unsigned char>base[i] - 48
        if d < 10:
            v = d
            i += 1
            while i - p < 18 and cur_check(c, i, 1):
                d = <unsigned char>base[i] - 48
                if d > 9:
                    break
                v = v * 10 + d
                i += 1
            if (cur_check(c, i, 2) and base[i] == b'\r' and base[i + 1] == b'\n'
                    and (base[p] != b'0' or i == p + 1)):
                out[0] = v
                q[0] = i + 2
                return 1
    # slow path: the whole line, strictly
    k = cur_find_crlf(c, from_ if from_ > p else p)
    if k < 0:
        return 0
    q[0] = k + 2
    if string2ll(base + p, k - p, out):
        return 1
    return -1


cdef inline Py_ssize_t fast_uint(const Cursor* c, Py_ssize_t p, long long* out) noexcept nogil:
    """A canonical non-negative length line "<digits>\\r\\n" at p (1..18 digits, no
    leading zero): the index after the CRLF, or -1 for anything else (the generic
    path then decides)."""
    cdef const char* base = c.base
    cdef Py_ssize_t i = p
    cdef long long v
    cdef unsigned int dg
    if not cur_check(c, i, 1):
        return -1
    dg = <unsigned char>base[i] - 48
    if dg > 9:
        return -1
    v = dg
    i += 1
    if dg != 0:
        while cur_check(c, i, 1):
            dg = <unsigned char>base[i] - 48
            if dg > 9:
                break
            v = v * 10 + dg
            i += 1
        if i - p > 18:
            return -1
    if not cur_check(c, i, 2) or base[i] != b'\r' or base[i + 1] != b'\n':
        return -1
    out[0] = v
    return i + 2


cdef inline Py_ssize_t fast_bulk(const Cursor* c, Py_ssize_t q, int64_t* off,
                                 int64_t* n) noexcept nogil:
    """A complete canonical bulk string "$<len>\\r\\n<data>\\r\\n" at q: sets *off/*n and
    returns the index after it, or -1 (not canonical / incomplete)."""
    cdef const char* base = c.base
    cdef uint64_t w
    cdef unsigned int d1, d2
    cdef long long v = 0
    cdef Py_ssize_t r
    if LITTLE_ENDIAN and cur_check(c, q, 8):
        memcpy(&w, base + q, 8)
        # the next position from a separate byte load: a shorter dependency chain
        # from one token to the next than going through w
        d1 = <unsigned int>(<const unsigned char*>base)[q + 1] - 48
        if (w & 0xFFFF00FFULL) == 0x0A0D0024ULL and d1 <= 9:            # "$d\r\n"
            if not cur_check(c, q + 4, d1 + 2):
                return -1
            off[0] = q + 4
            n[0] = d1
            return q + 6 + d1
        d2 = <unsigned int>((w >> 16) & 0xFF) - 48
        if (w & 0xFFFF0000FFULL) == 0x0A0D000024ULL and d1 - 1 <= 8 and d2 <= 9:
            v = d1 * 10 + d2                                             # "$dd\r\n"
            if not cur_check(c, q + 5, v + 2):
                return -1
            off[0] = q + 5
            n[0] = v
            return q + 7 + v
    if not cur_check(c, q, 1) or base[q] != b'$':
        return -1
    r = fast_uint(c, q + 1, &v)
    if r < 0 or v > MAX_BULK or not cur_check(c, r, v + 2):
        return -1
    off[0] = r
    n[0] = v
    return r + v + 2


# -- floats -----------------------------------------------------------------------

cdef inline int parse_double(const char* s, Py_ssize_t n, double* out) noexcept:
    """hiredis's double rules over s[0:n]. 0: ok, 1: too large, 2: bad value."""
    cdef char tmp[330]
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t ndig = 0
    cdef bint nonzero = 0
    cdef double d
    cdef char* endp
    if n >= 326:
        return 1
    if n == 3 or (n == 4 and s[0] == b'-'):       # "inf", "-inf", "nan", "-nan"
        i = n - 3
        if ((s[i] | 32) == b'i' and (s[i + 1] | 32) == b'n' and (s[i + 2] | 32) == b'f'):
            out[0] = -INFINITY if i else INFINITY
            return 0
        if ((s[i] | 32) == b'n' and (s[i + 1] | 32) == b'a' and (s[i + 2] | 32) == b'n'):
            out[0] = NAN
            return 0
        i = 0
    # grammar: -?(digits[.digits*] | .digits)([eE][+-]?digits)?
    if i < n and s[i] == b'-':
        i += 1
    while i < n and s[i] >= b'0' and s[i] <= b'9':
        if s[i] != b'0':
            nonzero = 1
        ndig += 1
        i += 1
    if i < n and s[i] == b'.':
        i += 1
        while i < n and s[i] >= b'0' and s[i] <= b'9':
            if s[i] != b'0':
                nonzero = 1
            ndig += 1
            i += 1
    if ndig == 0:
        return 2
    if i < n and (s[i] == b'e' or s[i] == b'E'):
        i += 1
        if i < n and (s[i] == b'+' or s[i] == b'-'):
            i += 1
        if i >= n or s[i] < b'0' or s[i] > b'9':
            return 2
        while i < n and s[i] >= b'0' and s[i] <= b'9':
            i += 1
    if i != n:
        return 2
    memcpy(tmp, s, n)
    tmp[n] = 0
    d = PyOS_string_to_double(tmp, &endp, NULL)
    if PyErr_Occurred() != NULL:
        PyErr_Clear()
        return 2
    if endp != tmp + n or isinf(d) or (d == 0.0 and nonzero):
        return 2                                   # out of range (over/underflow)
    out[0] = d
    return 0


# -- entry ids --------------------------------------------------------------------

cdef inline Py_ssize_t parse_u64(const char* s, Py_ssize_t i, Py_ssize_t n,
                                 uint64_t* out) noexcept nogil:
    """Decimal digits s[i:n] as a uint64 (stops at the first non-digit): the index
    after them, or -1 on overflow or no digit."""
    cdef uint64_t v = 0
    cdef unsigned int d
    cdef Py_ssize_t start = i
    while i < n:
        d = <unsigned char>s[i] - 48
        if d > 9:
            break
        if v >= 1844674407370955161ULL and (v > 1844674407370955161ULL or d > 5):
            return -1
        v = v * 10 + d
        i += 1
    if i == start:
        return -1
    out[0] = v
    return i


cdef inline bint parse_id(const char* s, Py_ssize_t n, uint64_t* ms, uint64_t* seq) noexcept nogil:
    """A stream entry id 'ms-seq' in s[0:n] (both uint64 decimal)."""
    cdef Py_ssize_t i = parse_u64(s, 0, n, ms)
    if i < 0 or i >= n or s[i] != b'-':
        return 0
    return parse_u64(s, i + 1, n, seq) == n


cdef inline uint64_t swar8(const char* s) noexcept nogil:
    """Eight ASCII digits (already validated) as a number (little-endian SWAR)."""
    cdef uint64_t v
    memcpy(&v, s, 8)
    v -= 0x3030303030303030ULL
    v = (v * 10) + (v >> 8)
    v = (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32)))
         + (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32
    return v


cdef inline Py_ssize_t digit_run(const Cursor* c, Py_ssize_t p, Py_ssize_t n) noexcept nogil:
    """Length of the run of ASCII digits at p, at most n (the n bytes at p are
    readable; whole 8-byte words are read while the cursor has them)."""
    cdef const char* s = c.base + p
    cdef Py_ssize_t i = 0
    cdef uint64_t w, x
    if LITTLE_ENDIAN:
        while cur_check(c, p + i, 8):
            memcpy(&w, s + i, 8)
            # a zero byte in x <=> a digit (the first non-digit is exact; carries
            # from it can only disturb the bytes after it)
            x = (((w & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL)
                 | (((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL))
            if x != 0:
                i += FR_CTZ64(x) >> 3
                return i if i < n else n
            i += 8
            if i >= n:
                return n
    while i < n and <unsigned int>(<unsigned char>s[i] - 48) <= 9:
        i += 1
    return i


cdef inline bint fast_id(const Cursor* c, Py_ssize_t p, Py_ssize_t n, uint64_t* ms,
                         uint64_t* seq) noexcept nogil:
    """parse_id of the n readable bytes at p, fast for the usual case (ms part
    1..19 digits); falls back to parse_id."""
    cdef const char* s = c.base + p
    cdef Py_ssize_t i, j, L
    cdef uint64_t v = 0
    L = digit_run(c, p, n)
    if L == 0 or L > 19 or L >= n or s[L] != b'-':
        return parse_id(s, n, ms, seq)
    j = 0
    while j < (L & 7):
        v = v * 10 + <unsigned int>(<unsigned char>s[j] - 48)
        j += 1
    if LITTLE_ENDIAN:
        while j < L:
            v = v * 100000000ULL + swar8(s + j)
            j += 8
    else:
        while j < L:
            v = v * 10 + <unsigned int>(<unsigned char>s[j] - 48)
            j += 1
    ms[0] = v
    i = L + 1
    j = i
    v = 0
    while j < n:
        if <unsigned int>(<unsigned char>s[j] - 48) > 9:
            return 0
        v = v * 10 + <unsigned int>(<unsigned char>s[j] - 48)
        j += 1
        if j - i > 19:
            return parse_id(s, n, ms, seq)
    if j == i:
        return 0
    seq[0] = v
    return 1


# -- tokens -----------------------------------------------------------------------

cdef enum:  # token kinds
    T_STR = 1        # bulk / simple / verbatim string: (soff, slen)
    T_ERR = 2        # error reply (simple or blob): (soff, slen)
    T_NIL = 3        # nil of any type
    T_AGG = 4        # aggregate with `count` children
    T_OTHER = 5      # int, double, bool, bignum

cdef enum:  # read_token results
    TOK_LINE = 0     # incomplete: the token's line has no CRLF yet
    TOK_OK = 1
    TOK_BULK = 2     # incomplete: a checked bulk length whose bytes are not all here
    TOK_BAD = -1     # malformed: *err says why (NULL: a bad type byte)


cdef struct Token:
    char type                         # the type byte
    int kind                          # T_STR ... T_OTHER
    Py_ssize_t end                    # index after the token (after its header for
                                      # an aggregate; where it will end for TOK_BULK)
    Py_ssize_t soff, slen             # T_STR / T_ERR: the string
    int64_t count                     # T_AGG: children (keys and values for maps)


cdef inline bint is_agg_type(char c) noexcept nogil:
    return c == b'*' or c == b'%' or c == b'~' or c == b'>' or c == b'|'


cdef inline int _bad(const char** err, const char* msg) noexcept nogil:
    err[0] = msg
    return TOK_BAD


cdef inline int read_bulk(const Cursor* c, Py_ssize_t p, Py_ssize_t from_, Token* t,
                          const char** err) noexcept nogil:
    """The `$` / `=` / `!` token at p (see read_token)."""
    cdef long long n = 0
    cdef Py_ssize_t q = 0
    cdef int r = read_int_line(c, p + 1, &n, &q, from_)
    if r == 0:
        return TOK_LINE
    if r < 0:
        return _bad(err, "Bad bulk string length")
    if n < -1 or n > MAX_BULK:
        return _bad(err, "Bulk string length out of range")
    if n == -1:
        t.kind = T_NIL
        t.end = q
        return TOK_OK
    t.end = q + n + 2                 # n is checked: no overflow
    if not cur_check(c, q, n + 2):
        return TOK_BULK
    t.soff = q
    t.slen = n
    t.kind = T_STR
    if t.type == b'!':
        t.kind = T_ERR
    elif t.type == b'=':
        if n < 4 or c.base[q + 3] != b':':
            return _bad(err, "Verbatim string 4 bytes of content type are missing or "
                             "incorrectly encoded.")
        t.soff = q + 4
        t.slen = n - 4
    return TOK_OK


cdef inline int read_line_token(const Cursor* c, Py_ssize_t p, Py_ssize_t from_, Token* t,
                                const char** err) noexcept:
    """A `+ - , _ # (` token at p: its whole line is searched, then checked."""
    cdef Py_ssize_t k = cur_find_crlf(c, from_)
    cdef Py_ssize_t n, i
    cdef const char* s = c.base + p + 1      # the line's content: s[0:n]
    cdef char ty = t.type
    cdef double dv
    cdef int r
    if k < 0:
        return TOK_LINE
    n = k - p - 1
    t.end = k + 2
    t.kind = T_OTHER
    if ty == b'+' or ty == b'-':
        if memchr(s, 13, n) != NULL or memchr(s, 10, n) != NULL:
            return _bad(err, "Bad simple string value")
        t.soff = p + 1
        t.slen = n
        t.kind = T_STR if ty == b'+' else T_ERR
    elif ty == b',':
        r = parse_double(s, n, &dv)
        if r == 1:
            return _bad(err, "Double value is too large")
        if r != 0:
            return _bad(err, "Bad double value")
    elif ty == b'_':
        if n != 0:
            return _bad(err, "Bad nil value")
        t.kind = T_NIL
    elif ty == b'#':
        if n != 1 or not (s[0] == b't' or s[0] == b'T' or s[0] == b'f' or s[0] == b'F'):
            return _bad(err, "Bad bool value")
    else:                                    # '(' bignum
        for i in range(n):
            if (s[i] < b'0' or s[i] > b'9') and not (i == 0 and s[0] == b'-'):
                return _bad(err, "Bad bignum value")
    return TOK_OK


cdef inline int read_token(const Cursor* c, Py_ssize_t p, Py_ssize_t from_, Token* t,
                           const char** err) noexcept:
    """Read and check the token at p (cur_check(c, p, 1) holds); its line's CRLF is
    searched from `from_` (> p) on. TOK_OK fills *t; see the TOK_* results."""
    cdef long long n = 0
    cdef Py_ssize_t q = 0
    cdef int r
    cdef char ty = c.base[p]
    t.type = ty
    if ty == b'$' or ty == b'=' or ty == b'!':
        return read_bulk(c, p, from_, t, err)
    if is_agg_type(ty):
        r = read_int_line(c, p + 1, &n, &q, from_)
        if r == 0:
            return TOK_LINE
        if r < 0:
            return _bad(err, "Bad multi-bulk length")
        if n < -1 or n > 4294967295LL:
            return _bad(err, "Multi-bulk length out of range")
        t.end = q
        t.kind = T_NIL if n == -1 else T_AGG
        t.count = n * 2 if (ty == b'%' or ty == b'|') else n
        return TOK_OK
    if ty == b':':
        r = read_int_line(c, p + 1, &n, &q, from_)
        if r == 0:
            return TOK_LINE
        if r < 0:
            return _bad(err, "Bad integer value")
        t.end = q
        t.kind = T_OTHER
        return TOK_OK
    if ty == b'+' or ty == b'-' or ty == b',' or ty == b'_' or ty == b'#' or ty == b'(':
        return read_line_token(c, p, from_, t, err)
    err[0] = NULL
    return TOK_BAD
