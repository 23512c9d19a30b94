# Kernels of the distillation divergences between the softmaxes of student and teacher
# logits (rows of a C-contiguous (n_rows, n_classes) array each), and the gradient with
# respect to the student logits.
#
# Design
# ------
# * One row at a time, three sweeps: (1) online_sumexp over the student row and over
#   the teacher row, each read from memory once, storing their exps in two per-thread
#   scratch rows; (2) in L2, the divergence's terms from the logits and the stored exps
#   (xent_distill.h), and for forward KL the gradient q - p; (3) for reverse KL and JSD
#   the gradient q (l - sum q l), which needs the sum of (2) first. Nothing of size
#   n_rows x n_classes is allocated, and the gradient may be the student logits
#   themselves: every sweep reads an entry of the logits before it writes that entry.
# * Float32 rows: sweeps (2) and (3) in float arithmetic (distill_row_f32); (2) writes
#   g q l into the gradient for reverse KL and JSD, and (3) only subtracts g q sum(q l),
#   on lines already in cache.
# * Accuracy: the terms are Bregman terms x phi(log x/y) >= 0 (see xent_distill.h), so
#   the divergence of two nearly equal rows keeps its relative accuracy.
# * With a temperature the rows are divided first, in their dtype (as PyTorch's s / T),
#   into two more scratch rows.
# * -inf logits are masked classes (probability 0): 0 log 0 = 0, and a class that the
#   teacher gives mass and the student masks makes forward KL +inf. Rows with a NaN, a
#   +inf, or no unmasked class give NaN.
# * Rows are grouped in blocks fixed by the shape; each block is summed serially and the
#   block sums are added in order, so the total is bitwise equal for any thread count.

from cython.parallel cimport prange, threadid
from libc.math cimport log, log1p, NAN
cimport numpy as cnp
from libc.stdlib cimport malloc, free

from _common cimport (
    floating, RowMax, row_max, row_is_regular, sum_exp_below_max, fill, online_sumexp,
    xf_exp, XF_BLOCK, XF_MAX_CHUNKS, rows_per_block, effective_threads, array_data,
    optional_data, float_type,
)

cnp.import_array()


cdef extern from "xent_distill.h" nogil:
    double xf_kl_forward_f64(const double* a, const double* b, const double* es,
                             const double* et, Py_ssize_t n, double fs, double ft, double dl,
                             double g, double* grad)
    double xf_kl_reverse_f64(const double* a, const double* b, const double* es, double* et,
                             Py_ssize_t n, double fs, double ft, double dl, double* s)
    double xf_jsd_f64(const double* a, const double* b, const double* es, double* et,
                      Py_ssize_t n, double fs, double ft, double dl, double ms, double l1s,
                      double mt, double l1t, double beta, double lb, double l1b, double* s)
    void xf_distill_grad_f64(const double* es, const double* et, Py_ssize_t n, double fs,
                             double s, double g, double* grad)
    void xf_kl_forward_fast_f32(const float* a, const float* b, const float* es, const float* et,
                                Py_ssize_t n, float fs, float ft, double dl, float g,
                                float* grad, double* sums)
    void xf_kl_reverse_fast_f32(const float* a, const float* b, const float* es, const float* et,
                                Py_ssize_t n, float fs, float ft, double dl, float g,
                                float* grad, double* sums)
    void xf_jsd_fast_f32(const float* a, const float* b, const float* es, const float* et,
                         Py_ssize_t n, float fs, float ft, double dl, double beta, float gg,
                         float* grad, double* sums)
    void xf_distill_grad_fast_f32(const float* es, Py_ssize_t n, float fs, float s, float g,
                                  float* grad)
    double xf_kl_from_sums(double B, double A)
    double xf_jsd_from_sums(double B, double Aq, double G, double beta)
    void xf_div_row_f32(const float* src, Py_ssize_t n, float t, float* dst)
    void xf_div_row_f64(const double* src, Py_ssize_t n, double t, double* dst)


cdef struct Options:
    Py_ssize_t n_classes
    double temperature
    double beta
    double log_beta         # log(beta), log(1 - beta): the mixture's weights
    double log_1m_beta


# --- one row ---------------------------------------------------------------------------

cdef inline double block_factor(const floating* cmax, bint chunked, Py_ssize_t blk, double m,
                                double inv_s) noexcept nogil:
    # stored exps are relative to their block's max (online_sumexp), or to m
    if not chunked:
        return inv_s
    return xf_exp(<double>cmax[blk] - m) * inv_s


cdef inline double row_sums(const floating* x, Py_ssize_t n, floating* e, floating* cmax,
                            RowMax* mx, bint* chunked) noexcept nogil:
    """r with sum_j exp(x_j - max) = 1 + r; e[j] = exp(x_j - cmax[j // XF_BLOCK]) (or
    minus the max, and chunked[0] False, on rows longer than online_sumexp takes)."""
    if n <= XF_BLOCK * XF_MAX_CHUNKS:
        chunked[0] = True
        return online_sumexp(x, n, e, cmax, mx)
    chunked[0] = False
    mx[0] = row_max(x, n)
    if not row_is_regular(mx[0]):
        return 0.0
    return sum_exp_below_max(x, n, mx.value, e)


cdef double distill_row_f32(
    const float* a, const float* b, const Options* o, double g, float* grad,
    const float* es, float* et, const float* cmax_s, const float* cmax_t, bint ch_s,
    bint ch_t, double m_s, double m_t, double inv_s, double inv_t, double dl,
) noexcept nogil:
    # float rows, sweeps (2) and (3) in float arithmetic (xent_distill.h); sums: the
    # Bregman sum and the sums that remove the log-sum-exps' rounding from it
    cdef Py_ssize_t n = o.n_classes, j0 = 0, blk, w
    cdef double sums[4]
    # reverse KL: d/da = q (log q/p - KL); JSD: (1 - beta) q (log q/m - sum q log q/m)
    cdef double gq = g if o.beta == 1.0 else g * (1.0 - o.beta)
    cdef double loss
    cdef float fs, ft
    sums[0] = sums[1] = sums[2] = sums[3] = 0.0
    while j0 < n:
        blk = j0 // XF_BLOCK
        w = min(<Py_ssize_t>XF_BLOCK, n - j0)
        fs = <float>block_factor(cmax_s, ch_s, blk, m_s, inv_s)
        ft = <float>block_factor(cmax_t, ch_t, blk, m_t, inv_t)
        if o.beta == 0.0:
            xf_kl_forward_fast_f32(a + j0, b + j0, es + j0, et + j0, w, fs, ft, dl, <float>g,
                                   grad + j0 if grad != NULL else NULL, sums)
        elif o.beta == 1.0:
            xf_kl_reverse_fast_f32(a + j0, b + j0, es + j0, et + j0, w, fs, ft, dl, <float>gq,
                                   grad + j0 if grad != NULL else NULL, sums)
        else:
            xf_jsd_fast_f32(a + j0, b + j0, es + j0, et + j0, w, fs, ft, dl, o.beta,
                            <float>gq, grad + j0 if grad != NULL else NULL, sums)
        j0 += w
    if o.beta == 0.0 or o.beta == 1.0:
        loss = xf_kl_from_sums(sums[0], sums[1])
    else:
        loss = xf_jsd_from_sums(sums[0], sums[2], sums[3], o.beta)
    if grad == NULL or o.beta == 0.0:
        return loss
    j0 = 0
    while j0 < n:
        blk = j0 // XF_BLOCK
        w = min(<Py_ssize_t>XF_BLOCK, n - j0)
        fs = <float>block_factor(cmax_s, ch_s, blk, m_s, inv_s)
        xf_distill_grad_fast_f32(es + j0, w, fs, <float>sums[1], <float>gq, grad + j0)
        j0 += w
    return loss


cdef double distill_row(
    const floating* s_row,      # IN  student logits row
    const floating* t_row,      # IN  teacher logits row
    const Options* o,
    double g,                   # IN  upstream gradient of this row's loss, over T
    floating* grad,             # OUT g * dloss/ds, or NULL; may alias s_row
    floating* scratch,          # per-thread 4 rows
) noexcept nogil:
    cdef Py_ssize_t n = o.n_classes, j0, blk, w
    cdef floating* es = scratch
    cdef floating* et = scratch + n
    cdef const floating* a = s_row
    cdef const floating* b = t_row
    cdef floating cmax_s[XF_MAX_CHUNKS]
    cdef floating cmax_t[XF_MAX_CHUNKS]
    cdef RowMax mx_s, mx_t
    cdef bint ch_s, ch_t
    cdef double r_s, r_t, l1_s, l1_t, dl, inv_s, inv_t, fs, ft, loss = 0.0, qs = 0.0
    if o.temperature != 1.0:
        if floating is float:
            xf_div_row_f32(s_row, n, <float>o.temperature, scratch + 2 * n)
            xf_div_row_f32(t_row, n, <float>o.temperature, scratch + 3 * n)
        else:
            xf_div_row_f64(s_row, n, o.temperature, scratch + 2 * n)
            xf_div_row_f64(t_row, n, o.temperature, scratch + 3 * n)
        a = scratch + 2 * n
        b = scratch + 3 * n
    r_s = row_sums(a, n, es, cmax_s, &mx_s, &ch_s)
    r_t = row_sums(b, n, et, cmax_t, &mx_t, &ch_t)
    if not (row_is_regular(mx_s) and row_is_regular(mx_t)):
        if grad != NULL:
            fill(grad, n, NAN)
        return NAN
    # lse_t - lse_s with the maxima subtracted first: with both rows shifted far from 0
    # (logits near 2**45), max + log1p(sum) would round off the log1p terms.
    l1_s = log1p(r_s)
    l1_t = log1p(r_t)
    dl = (mx_t.value - mx_s.value) + (l1_t - l1_s)
    inv_s = 1.0 / (1.0 + r_s)
    inv_t = 1.0 / (1.0 + r_t)
    if floating is float:
        return distill_row_f32(a, b, o, g, grad, es, et, cmax_s, cmax_t, ch_s, ch_t,
                               mx_s.value, mx_t.value, inv_s, inv_t, dl)
    else:                       # double rows: the double loops of xent_distill.h
        j0 = 0
        while j0 < n:
            blk = j0 // XF_BLOCK
            w = min(<Py_ssize_t>XF_BLOCK, n - j0)
            fs = block_factor(cmax_s, ch_s, blk, mx_s.value, inv_s)
            ft = block_factor(cmax_t, ch_t, blk, mx_t.value, inv_t)
            if o.beta == 0.0:
                loss += xf_kl_forward_f64(a + j0, b + j0, es + j0, et + j0, w, fs, ft,
                                          dl, g, grad + j0 if grad != NULL else NULL)
            elif o.beta == 1.0:
                loss += xf_kl_reverse_f64(a + j0, b + j0, es + j0, et + j0, w, fs, ft,
                                          dl, &qs)
            else:
                loss += xf_jsd_f64(a + j0, b + j0, es + j0, et + j0, w, fs, ft, dl,
                                   mx_s.value, l1_s, mx_t.value, l1_t, o.beta, o.log_beta,
                                   o.log_1m_beta, &qs)
            j0 += w
        if grad == NULL or o.beta == 0.0:
            return loss
        # reverse KL: d/da = q (log q/p - KL); JSD: (1 - beta) q (log q/m - sum q log q/m)
        if o.beta != 1.0:
            g = g * (1.0 - o.beta)
        j0 = 0
        while j0 < n:
            blk = j0 // XF_BLOCK
            w = min(<Py_ssize_t>XF_BLOCK, n - j0)
            fs = block_factor(cmax_s, ch_s, blk, mx_s.value, inv_s)
            xf_distill_grad_f64(es + j0, et + j0, w, fs, qs, g, grad + j0)
            j0 += w
        return loss


# --- one block of rows -----------------------------------------------------------------

cdef double distill_block(
    const floating* student, const floating* teacher,                          # IN
    const unsigned char* keep, const floating* grad_rows, double grad_scale,   # IN
    floating* loss_rows, floating* grad,                                       # OUT or NULL
    floating* scratch, const Options* o, Py_ssize_t start, Py_ssize_t stop,
) noexcept nogil:
    cdef Py_ssize_t i, n = o.n_classes
    cdef double loss, total = 0.0, g
    cdef floating* grad_i = NULL
    for i in range(start, stop):
        if grad != NULL:
            grad_i = grad + i * n
        if keep != NULL and not keep[i]:
            if grad_i != NULL:
                fill(grad_i, n, 0.0)
            if loss_rows != NULL:
                loss_rows[i] = 0
            continue
        g = grad_scale * grad_rows[i] if grad_rows != NULL else grad_scale
        loss = distill_row(student + i * n, teacher + i * n, o, g / o.temperature, grad_i,
                           scratch)
        if loss_rows != NULL:
            loss_rows[i] = <floating>loss
        total += loss
    return total


# --- entry point -----------------------------------------------------------------------

def distillation(
    object student,                     # IN  (n_rows, n_classes) float32 or float64
    object teacher,                     # IN  (n_rows, n_classes), the student's dtype
    object keep,                        # IN  (n_rows,) uint8: 0 skips a row; or None
    object loss_rows,                   # OUT (n_rows,) per-row loss, or None
    object grad,                        # OUT (n_rows, n_classes) gradient, or None
    object grad_rows,                   # IN  (n_rows,) per-row upstream gradient, or None
    double grad_scale,                  # IN  scalar upstream gradient (already / count for "mean")
    double temperature,                 # > 0
    double beta,                        # in [0, 1]
    int n_threads,
):
    """Return the sum of the row losses over kept rows. The float arrays all have the
    student's dtype."""
    cdef int ft = float_type(student, 2)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIMS(<cnp.ndarray>student)[0]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>student)[1]
    cdef char* s = array_data(student, ft, n_rows, n, False)
    cdef char* t = array_data(teacher, ft, n_rows, n, False)
    cdef char* k = optional_data(keep, cnp.NPY_UINT8, n_rows, -1, False)
    cdef char* lr = optional_data(loss_rows, ft, n_rows, -1, True)
    cdef char* gp = optional_data(grad, ft, n_rows, n, True)
    cdef char* gr = optional_data(grad_rows, ft, n_rows, -1, False)
    if not (temperature > 0) or not (0 <= beta <= 1):
        raise ValueError("internal error: temperature or beta out of range passed to a kernel")
    if ft == cnp.NPY_FLOAT32:
        return distill_rows(<const float*>s, <const float*>t, <const unsigned char*>k,
                            <float*>lr, <float*>gp, <const float*>gr, n_rows, n, grad_scale,
                            temperature, beta, n_threads)
    return distill_rows(<const double*>s, <const double*>t, <const unsigned char*>k,
                        <double*>lr, <double*>gp, <const double*>gr, n_rows, n, grad_scale,
                        temperature, beta, n_threads)


cdef object distill_rows(
    const floating* student, const floating* teacher, const unsigned char* keep,
    floating* lr, floating* gp, const floating* gr, Py_ssize_t n_rows, Py_ssize_t n,
    double grad_scale, double temperature, double beta, int n_threads,
):
    if n_rows == 0 or n == 0:
        return 0.0
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b
    cdef int nt = effective_threads(n_threads, n_blocks, n_rows * n)
    cdef Options o
    o.n_classes = n
    o.temperature = temperature
    o.beta = beta
    o.log_beta = log(beta) if beta > 0 else 0.0
    o.log_1m_beta = log1p(-beta) if beta < 1 else 0.0
    cdef double total = 0.0
    cdef double* sums = <double*>malloc(n_blocks * sizeof(double))
    cdef floating* scratch = <floating*>malloc(nt * 4 * n * sizeof(floating))
    if sums == NULL or scratch == NULL:
        free(sums)
        free(scratch)
        raise MemoryError()
    with nogil:
        if nt == 1:             # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                sums[b] = distill_block(student, teacher, keep, gr, grad_scale, lr, gp,
                                        scratch, &o, b * rpb, min(b * rpb + rpb, n_rows))
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                sums[b] = distill_block(student, teacher, keep, gr, grad_scale, lr, gp,
                                        scratch + threadid() * 4 * n, &o, b * rpb,
                                        min(b * rpb + rpb, n_rows))
        for b in range(n_blocks):   # in block order: the same total for any thread count
            total += sums[b]
    free(sums)
    free(scratch)
    return total
