# Kernels of the softmax family: softmax, log_softmax and logsumexp of every row of a
# C-contiguous (n_rows, n_classes) array.
#
# Each row is read from memory once: one sweep takes, chunk by chunk while the chunk is
# in L1, the max and the exps (stored straight into the output, which may be the input
# itself); a second sweep, in L2, scales them. Rows of fewer than XF_SHORT entries go
# XF_TILE at a time through a transposed tile instead (xf_small_softmax), as the
# cross-entropy's do: one row alone would leave most vector lanes idle. Rows (or tiles)
# are independent, so they are split across threads with a static prange and the result
# is the same for every thread count. Rows of up to XF_ROWS_MAX_BYTES take their first
# sweeps XF_ROWS rows side by side (row_group), as the cross-entropy's do: a short row's
# chain of dependent steps leaves the core idle, and four rows' chains overlap. A row whose max is not finite, or that holds a NaN,
# gives NaN (logsumexp returns +-inf where that is the exact answer).

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport log1p, NAN

from _common cimport (
    floating, RowMax, row_max, row_is_regular, sum_exp_below_max, scale, fill,
    online_sumexp, online_sumexp_rows, scale_chunks, small_softmax, xf_set_tile_gather,
    effective_threads, XF_BLOCK, XF_MAX_CHUNKS, XF_ROWS, XF_ROWS_MAX_BYTES,
    XF_SHORT, XF_TILE, array_data, float_type,
)

cnp.import_array()

from xent_fast import _simd

xf_set_tile_gather(_simd.TILE_GATHER)     # short-row tiles by gathers where they are fast


cdef inline void softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef floating cmax[XF_MAX_CHUNKS]
    cdef RowMax mx
    cdef double r
    if n <= XF_BLOCK * XF_MAX_CHUNKS:
        r = online_sumexp(x, n, out, cmax, &mx)
        if row_is_regular(mx):
            scale_chunks(out, n, cmax, mx.value, 1.0 / (1.0 + r))
            return
    else:
        mx = row_max(x, n)
        if row_is_regular(mx):
            scale(out, n, 1.0 / (1.0 + sum_exp_below_max(x, n, mx.value, out)))
            return
    fill(out, n, NAN)


cdef inline double log_sum(const floating* x, Py_ssize_t n, RowMax* mx) noexcept nogil:
    # log1p(r), with the row max and NaN flag in mx
    cdef floating cmax[XF_MAX_CHUNKS]
    if n <= XF_BLOCK * XF_MAX_CHUNKS:
        return log1p(online_sumexp(x, n, <floating*>NULL, cmax, mx))
    mx[0] = row_max(x, n)
    if not row_is_regular(mx[0]):
        return NAN
    return log1p(sum_exp_below_max(x, n, mx.value, <floating*>NULL))


cdef inline void log_softmax_row(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef RowMax mx
    cdef double log_s = log_sum(x, n, &mx), m = mx.value
    cdef Py_ssize_t j
    if not row_is_regular(mx):
        fill(out, n, NAN)
        return
    for j in range(n):
        # (x - m) first: the max entry then gives exactly -log1p(r), tiny or not.
        out[j] = <floating>((x[j] - m) - log_s)


cdef inline double logsumexp_row(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef RowMax mx
    cdef double log_s = log_sum(x, n, &mx)
    if mx.has_nan:
        return NAN
    if not row_is_regular(mx):
        return mx.value     # +inf if any entry is +inf, -inf if all are masked
    return mx.value + log_s


cdef enum Kind:             # as xf_small_softmax numbers them
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2


cdef inline void one_row(Kind kind, const floating* x, floating* out, Py_ssize_t i,
                         Py_ssize_t n) noexcept nogil:
    if kind == SOFTMAX:
        softmax_row(x + i * n, out + i * n, n)
    elif kind == LOG_SOFTMAX:
        log_softmax_row(x + i * n, out + i * n, n)
    else:
        out[i] = <floating>logsumexp_row(x + i * n, n)


cdef inline void row_group(Kind kind, const floating* x, floating* out, Py_ssize_t i,
                           Py_ssize_t n) noexcept nogil:
    # rows i .. i + XF_ROWS of XF_SHORT to XF_ROWS_MAX_BYTES / sizeof entries: their sweeps
    # side by side, then each row finished as one_row would (bitwise its results)
    cdef const floating* xq[XF_ROWS]
    cdef floating* eq[XF_ROWS]
    cdef floating cq[XF_ROWS]
    cdef floating mq[XF_ROWS]
    cdef int nanq[XF_ROWS]
    cdef double rq[XF_ROWS]
    cdef RowMax mx
    cdef Py_ssize_t q, j
    cdef double log_s
    cdef const floating* xr
    cdef floating* outr
    cdef floating** e_rows = &eq[0] if kind == SOFTMAX else NULL     # exps stored, or not
    for q in range(XF_ROWS):
        xq[q] = x + (i + q) * n
        eq[q] = out + (i + q) * n       # not read unless kind is SOFTMAX
    online_sumexp_rows(xq, n, e_rows, cq, mq, nanq, rq)
    for q in range(XF_ROWS):
        mx.value = mq[q]
        mx.has_nan = nanq[q]
        xr = xq[q]
        if kind == SOFTMAX:
            outr = eq[q]
            if row_is_regular(mx):
                scale_chunks(outr, n, &cq[q], mx.value, 1.0 / (1.0 + rq[q]))
            else:
                fill(outr, n, NAN)
        elif kind == LOG_SOFTMAX:
            outr = eq[q]
            log_s = log1p(rq[q])
            if not row_is_regular(mx):
                fill(outr, n, NAN)
            else:
                for j in range(n):
                    outr[j] = <floating>((xr[j] - mx.value) - log_s)
        else:
            log_s = log1p(rq[q])
            if mx.has_nan:
                out[i + q] = NAN
            elif not row_is_regular(mx):
                out[i + q] = <floating>mx.value
            else:
                out[i + q] = <floating>(mx.value + log_s)


cdef inline void one_tile(Kind kind, const floating* x, floating* out, Py_ssize_t b,
                          Py_ssize_t n_rows, Py_ssize_t n) noexcept nogil:
    # rows XF_TILE b .. of n < XF_SHORT entries, at once
    cdef Py_ssize_t i = b * XF_TILE
    small_softmax(x + i * n, min(<Py_ssize_t>XF_TILE, n_rows - i), n, <int>kind,
                  out + (i if kind == LOGSUMEXP else i * n))


cdef void rows(Kind kind, const floating* x, floating* out, Py_ssize_t n_rows, Py_ssize_t n,
               int n_threads) noexcept nogil:
    cdef Py_ssize_t i, n_tiles = (n_rows + XF_TILE - 1) // XF_TILE
    cdef int nt = effective_threads(n_threads, n_tiles if n < XF_SHORT else n_rows, n_rows * n)
    if n < XF_SHORT:            # short rows: by tiles of rows
        if nt == 1:
            for i in range(n_tiles):
                one_tile(kind, x, out, i, n_rows, n)
        else:
            for i in prange(n_tiles, schedule="static", num_threads=nt):
                one_tile(kind, x, out, i, n_rows, n)
        return
    cdef Py_ssize_t n_groups = 0
    if n * <Py_ssize_t>sizeof(floating) <= XF_ROWS_MAX_BYTES:   # XF_ROWS rows at a time
        n_groups = n_rows // XF_ROWS
    if nt == 1:                 # no parallel region (small calls, forked children)
        for i in range(n_groups):
            row_group(kind, x, out, i * XF_ROWS, n)
    else:
        for i in prange(n_groups, schedule="static", num_threads=nt):
            row_group(kind, x, out, i * XF_ROWS, n)
    if nt == 1 or n_rows - n_groups * XF_ROWS < XF_ROWS:     # the rest
        for i in range(n_groups * XF_ROWS, n_rows):
            one_row(kind, x, out, i, n)
    else:
        for i in prange(n_groups * XF_ROWS, n_rows, schedule="static", num_threads=nt):
            one_row(kind, x, out, i, n)


cdef object run(Kind kind, object logits, object out, int n_threads):
    # The arrays are checked in C (cheaper than typed memoryviews for small calls).
    cdef int ft = float_type(logits, 2)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIMS(<cnp.ndarray>logits)[0]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>logits)[1]
    cdef char* x = array_data(logits, ft, n_rows, n, False)
    cdef char* o = array_data(out, ft, n_rows, -1 if kind == LOGSUMEXP else n, True)
    if n_rows == 0:
        return
    with nogil:
        if ft == cnp.NPY_FLOAT32:
            rows(kind, <const float*>x, <float*>o, n_rows, n, n_threads)
        else:
            rows(kind, <const double*>x, <double*>o, n_rows, n, n_threads)


def softmax(object logits,      # IN  (n_rows, n_classes) float32 or float64
            object out,         # OUT (n_rows, n_classes) of the same dtype, may be logits
            int n_threads):
    run(SOFTMAX, logits, out, n_threads)


def log_softmax(object logits,  # IN  (n_rows, n_classes) float32 or float64
                object out,     # OUT (n_rows, n_classes) of the same dtype, may be logits
                int n_threads):
    run(LOG_SOFTMAX, logits, out, n_threads)


def logsumexp(object logits,    # IN  (n_rows, n_classes) float32 or float64
              object out,       # OUT (n_rows,) of the same dtype
              int n_threads):
    run(LOGSUMEXP, logits, out, n_threads)
