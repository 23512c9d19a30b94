# Kernels of the softmax family: softmax, log_softmax and logsumexp of every row of a
# C-contiguous (n_rows, n_classes) array.
#
# Each row is swept while it sits in cache: once for the max, once for the exps (stored
# straight into the output, which may be the input itself), once to scale. Rows are
# independent, so they are split across threads with a static prange and the result is
# the same for every thread count. A row whose max is not finite, or that holds a NaN,
# gives NaN (logsumexp returns +-inf where that is the exact answer).

from cython.parallel cimport prange
from libc.math cimport log1p, INFINITY, NAN

from _common cimport (
    floating, RowMax, row_max, row_is_regular, sum_exp_below_max, scale, fill,
    effective_threads,
)


cdef inline void softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef RowMax mx = row_max(x, n)
    if not row_is_regular(mx):
        fill(out, n, NAN)
        return
    scale(out, n, 1.0 / (1.0 + sum_exp_below_max(x, n, mx.value, out)))


cdef inline void log_softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef RowMax mx = row_max(x, n)
    cdef double m = mx.value, log_s
    cdef Py_ssize_t j
    if not row_is_regular(mx):
        fill(out, n, NAN)
        return
    log_s = log1p(sum_exp_below_max(x, n, m, <floating*>NULL))
    for j in range(n):
        # (x - m) first: the max entry then gives exactly -log1p(r), tiny or not.
        out[j] = <floating>((x[j] - m) - log_s)


cdef inline double logsumexp_row(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef RowMax mx = row_max(x, n)
    if mx.has_nan:
        return NAN
    if not row_is_regular(mx):
        return mx.value     # +inf if any entry is +inf, -inf if all are masked
    return mx.value + log1p(sum_exp_below_max(x, n, mx.value, <floating*>NULL))


def softmax(const floating[:, ::1] logits,   # IN
            floating[:, ::1] out,            # OUT, may be logits itself
            int n_threads):
    cdef Py_ssize_t i, n_rows = logits.shape[0], n = logits.shape[1]
    cdef int nt = effective_threads(n_threads, n_rows, n_rows * n)
    if n_rows == 0:
        return
    with nogil:
        if nt == 1:
            for i in range(n_rows):
                softmax_row(&logits[i, 0], &out[i, 0], n)
        else:
            for i in prange(n_rows, schedule="static", num_threads=nt):
                softmax_row(&logits[i, 0], &out[i, 0], n)


def log_softmax(const floating[:, ::1] logits,   # IN
                floating[:, ::1] out,            # OUT, may be logits itself
                int n_threads):
    cdef Py_ssize_t i, n_rows = logits.shape[0], n = logits.shape[1]
    cdef int nt = effective_threads(n_threads, n_rows, n_rows * n)
    if n_rows == 0:
        return
    with nogil:
        if nt == 1:
            for i in range(n_rows):
                log_softmax_row(&logits[i, 0], &out[i, 0], n)
        else:
            for i in prange(n_rows, schedule="static", num_threads=nt):
                log_softmax_row(&logits[i, 0], &out[i, 0], n)


def logsumexp(const floating[:, ::1] logits,   # IN
              floating[::1] out,               # OUT, one value per row
              int n_threads):
    cdef Py_ssize_t i, n_rows = logits.shape[0], n = logits.shape[1]
    cdef int nt = effective_threads(n_threads, n_rows, n_rows * n)
    if n_rows == 0:
        return
    with nogil:
        if nt == 1:
            for i in range(n_rows):
                out[i] = <floating>logsumexp_row(&logits[i, 0], n)
        else:
            for i in prange(n_rows, schedule="static", num_threads=nt):
                out[i] = <floating>logsumexp_row(&logits[i, 0], n)
