# Kernels of the information measures on probability rows: surprisal (elementwise),
# entropy, cross-entropy and KL divergence (per row).
#
# Each value is checked to be a probability (0 <= v <= 1, so NaN fails) in the same
# pass that uses it; the flat position of the first bad value is returned and the
# caller raises. Terms with p = 0 add exactly 0 (0 log 0 = 0, and 0 log 0/q = 0 even
# for q = 0); q = 0 under p > 0 gives +inf, never nan. Sums are taken in double.

from cython.parallel cimport prange
from libc.math cimport log, isinf

import numpy as np

from _common cimport floating, rows_per_block, effective_threads

cdef enum Measure:
    ENTROPY = 0
    CROSS_ENTROPY = 1
    KL_DIVERGENCE = 2


cdef inline bint is_prob(double v) noexcept nogil:
    return 0.0 <= v <= 1.0


cdef inline double entropy_row(const floating* p, Py_ssize_t n, Py_ssize_t* bad) noexcept nogil:
    cdef double acc = 0.0, a
    cdef Py_ssize_t j
    for j in range(n):
        a = p[j]
        if not is_prob(a):
            bad[0] = j
            return 0.0
        if a > 0:
            acc -= a * log(a)
    return acc


cdef inline double cross_entropy_row(const floating* p, const floating* q, Py_ssize_t n,
                                     Py_ssize_t* bad) noexcept nogil:
    cdef double acc = 0.0, a, b
    cdef Py_ssize_t j
    for j in range(n):
        a = p[j]
        b = q[j]
        if not (is_prob(a) and is_prob(b)):
            bad[0] = j
            return 0.0
        if a > 0:
            acc -= a * log(b)
    return acc


cdef inline double kl_row(const floating* p, const floating* q, Py_ssize_t n,
                          Py_ssize_t* bad) noexcept nogil:
    cdef double acc = 0.0, a, b, ratio
    cdef Py_ssize_t j
    for j in range(n):
        a = p[j]
        b = q[j]
        if not (is_prob(a) and is_prob(b)):
            bad[0] = j
            return 0.0
        if a > 0:
            ratio = a / b
            # log(a / b) is one rounding; the difference of logs only where a / b
            # overflows though b > 0 (b subnormal).
            acc += a * (log(ratio) if not (isinf(ratio) and b > 0) else log(a) - log(b))
    return acc


cdef Py_ssize_t measure_block(const floating* p, const floating* q, floating* out,
                              Py_ssize_t n, int measure, double scale,
                              Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    # Rows start..stop-1; returns the flat position of the first bad value, or -1.
    cdef Py_ssize_t i, bad = -1
    cdef double v
    for i in range(start, stop):
        if measure == ENTROPY:
            v = entropy_row(p + i * n, n, &bad)
        elif measure == CROSS_ENTROPY:
            v = cross_entropy_row(p + i * n, q + i * n, n, &bad)
        else:
            v = kl_row(p + i * n, q + i * n, n, &bad)
        if bad >= 0:
            return i * n + bad
        out[i] = <floating>(v * scale)
    return -1


cdef Py_ssize_t first_of(const Py_ssize_t* bad_at, Py_ssize_t n_blocks) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(n_blocks):
        if bad_at[b] >= 0:
            return bad_at[b]
    return -1


def measure_rows(const floating[:, ::1] p,     # IN  (n_rows, n)
                 const floating[:, ::1] q,     # IN  (n_rows, n), or (0, 0) for the entropy
                 floating[::1] out,            # OUT (n_rows,)
                 int measure, double scale,    # which Measure; 1 / log(base)
                 int n_threads):
    """Return the flat position of the first value that is not a probability, or -1."""
    cdef Py_ssize_t n_rows = p.shape[0], n = p.shape[1], b
    if out.shape[0] != n_rows or (measure != ENTROPY and (q.shape[0] != n_rows or q.shape[1] != n)):
        raise ValueError("internal error: inconsistent array shapes passed to a kernel")
    if n_rows == 0:
        return -1
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb
    cdef int nt = effective_threads(n_threads, n_blocks, n_rows * n)
    cdef const floating* qp = &q[0, 0] if measure != ENTROPY else NULL
    cdef Py_ssize_t[::1] bad_at = array_of_blocks(n_blocks)
    with nogil:
        if nt == 1:             # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                bad_at[b] = measure_block(&p[0, 0], qp, &out[0], n, measure, scale,
                                          b * rpb, min(b * rpb + rpb, n_rows))
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                bad_at[b] = measure_block(&p[0, 0], qp, &out[0], n, measure, scale,
                                          b * rpb, min(b * rpb + rpb, n_rows))
    return first_of(&bad_at[0], n_blocks)


cdef Py_ssize_t surprisal_block(const floating* p, floating* out, double scale,
                                Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(start, stop):
        if not is_prob(p[i]):
            return i
        out[i] = <floating>(-log(<double>p[i]) * scale)
    return -1


def surprisal(const floating[::1] p,     # IN  flat probabilities
              floating[::1] out,         # OUT same length
              double scale, int n_threads):
    """out = -log(p) * scale; return the first position that is not a probability, or -1."""
    cdef Py_ssize_t n = p.shape[0], b
    if out.shape[0] != n:
        raise ValueError("internal error: inconsistent array shapes passed to a kernel")
    if n == 0:
        return -1
    cdef Py_ssize_t rpb = rows_per_block(1), n_blocks = (n + rpb - 1) // rpb
    cdef int nt = effective_threads(n_threads, n_blocks, n)
    cdef Py_ssize_t[::1] bad_at = array_of_blocks(n_blocks)
    with nogil:
        if nt == 1:             # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                bad_at[b] = surprisal_block(&p[0], &out[0], scale, b * rpb, min(b * rpb + rpb, n))
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                bad_at[b] = surprisal_block(&p[0], &out[0], scale, b * rpb, min(b * rpb + rpb, n))
    return first_of(&bad_at[0], n_blocks)



cdef Py_ssize_t[::1] array_of_blocks(Py_ssize_t n_blocks):
    return np.empty(n_blocks, dtype=np.intp)
