# Kernels of batch scoring: for every row of a C-contiguous (n_rows, n_classes) array of
# logits, against class indices (score_index) or probabilities (score_probs), the loss,
# the predicted class, the target's probability, whether the target is in the top k,
# the entropy of the prediction and its confidence; and the exact totals of a summary.
#
# Design
# ------
# * Two sweeps over a row: the max (xf_max), then one sweep (xf_score_sweep in
#   xent_score.h) that takes chunk by chunk, while the chunk is in L1, the exps and their
#   sum, then the entropy's sum, the count of logits above the target's and the first
#   argmax; with probability targets also the target terms of the loss. Nothing of size
#   n_rows x n_classes is allocated; the per-row outputs may be NULL (only the totals
#   are wanted).
# * The loss is (m - x_t) + log1p(r) (r: the sum of exps less the one of the max), the
#   entropy log1p(r) + sum_j e_j (m - x_j) / (1 + r): sums of non-negative terms, so a
#   tiny loss or entropy of a confident row keeps its digits.
# * The summary's sums are exact (xent_score.h): every thread adds its rows into its own
#   totals, and the totals are merged at the end. Exact sums do not depend on the order,
#   so the result is the same for any thread count, any schedule and any split of the
#   rows into calls. The sums take each row's value as stored in the per-row outputs
#   (rounded to the logits' dtype), so a summary is a function of the per-row arrays.
#   The calibration bins (ece_bins) and the per-class counts (support, predictions,
#   correct ones, for macro F1) are sized at run time; each thread has its own.
# * A row that holds NaN, +inf, or only -inf has no softmax: its loss, target
#   probability, entropy and confidence are NaN. Its prediction is numpy.argmax's (the
#   first NaN, else the first maximum), and its top-k test ranks NaN above every number.
#   It is counted in nonfinite and left out of every other total.
# * A temperature T enters as s = 1 / T: exp(s (x_j - m)) is taken while sweeping the
#   logits as they are (no copy of logits / T). s = 1 takes the tuned exp-sum loop.
# * fit_temperature's pass (temperature_sums) is leaner than scoring: one sweep gives
#   per row the loss at s and its first and second derivatives in s (xf_temp_sweep), and
#   the sums are taken per block of rows, then over the blocks in order, so they do not
#   depend on the thread count.
# * Invalid class indices are found in the same pass; their rows count for nothing, and
#   the first one is reported to the caller, which raises.

from cython.parallel cimport parallel, prange, threadid
from libc.math cimport log1p, NAN, isnan
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, malloc, free

from _common cimport (
    floating, index_t, RowMax, row_max, row_is_regular, xf_exp, rows_per_block,
    effective_threads, XF_SHORT, XF_TILE,
)

cdef extern from "xent_score.h" nogil:
    ctypedef struct xf_exact:
        pass
    ctypedef struct xf_score_totals:
        int64_t rows, correct, top_k, nonfinite
        xf_exact loss, entropy, brier
        int nbins
        Py_ssize_t n_classes
        int64_t* bin_rows
        int64_t* bin_correct
        int64_t* cls
        xf_exact* bin_conf
    ctypedef struct xf_row_sums:
        double r, ent, gap, ysum, q
        int64_t greater, first
    ctypedef struct xf_tile_scores:
        double loss[16]
        double target_prob[16]
        double entropy[16]
        double confidence[16]
        double brier[16]
        int64_t pred[16]
        int64_t greater[16]
        int regular[16]
    ctypedef struct xf_temp_sums:
        double r, a, b
    void xf_exact_add(xf_exact* a, double v)
    Py_ssize_t xf_totals_words(int nbins, Py_ssize_t n_classes)
    int xf_totals_init(xf_score_totals* t, int nbins, Py_ssize_t n_classes)
    void xf_totals_free(xf_score_totals* t)
    void xf_totals_merge(xf_score_totals* into, xf_score_totals* src)
    void xf_totals_export(xf_score_totals* t, int64_t* out)
    int xf_ece_bin(double c, int nb)
    double xf_brier(double r, double q, double et, int at_max)
    void xf_score_sweep_f32(const float* x, const float* y, Py_ssize_t n, float m, float xt,
                            float s, xf_row_sums* out)
    void xf_score_sweep_f64(const double* x, const double* y, Py_ssize_t n, double m,
                            double xt, double s, xf_row_sums* out)
    void xf_score_tile_f32(const float* x, const float* y, Py_ssize_t rows, Py_ssize_t n,
                           int64_t* t, float s, xf_tile_scores* out)
    void xf_score_tile_f64(const double* x, const double* y, Py_ssize_t rows, Py_ssize_t n,
                           int64_t* t, double s, xf_tile_scores* out)
    void xf_temp_sweep_f32(const float* x, Py_ssize_t n, float m, float s, xf_temp_sums* out)
    void xf_temp_sweep_f64(const double* x, Py_ssize_t n, double m, double s,
                           xf_temp_sums* out)
    enum:
        XF_EXACT_DIGITS
        XF_ECE_BINS

EXACT_DIGITS = XF_EXACT_DIGITS
ECE_BINS = XF_ECE_BINS


def totals_words(int nbins, Py_ssize_t n_classes):
    """The length of the totals array of nbins calibration bins and n_classes classes."""
    return xf_totals_words(nbins, n_classes)


cdef struct Outputs:
    # Per-row outputs (NULL: not wanted), indexed by row.
    void* loss
    int64_t* pred
    void* target_prob
    uint8_t* in_top_k
    void* entropy
    void* confidence
    uint8_t* counted


cdef struct RowScore:
    double loss, target_prob, entropy, confidence, brier
    int64_t pred
    bint in_top_k, regular


# --- one row ---------------------------------------------------------------------------

cdef inline Py_ssize_t first_index(const floating* x, Py_ssize_t n, double m,
                                   bint nan) noexcept nogil:
    # numpy.argmax: the first NaN if there is one, else the first entry equal to m.
    cdef Py_ssize_t j
    for j in range(n):
        if (isnan(x[j]) if nan else x[j] == m):
            return j
    return 0


cdef inline Py_ssize_t ranked_above(const floating* x, Py_ssize_t n, Py_ssize_t t) noexcept nogil:
    # Entries ranked above x[t], NaN above every number (as in a sort).
    cdef Py_ssize_t j, count = 0
    cdef floating xt = x[t]
    if isnan(xt):
        return 0
    for j in range(n):
        if x[j] > xt or isnan(x[j]):
            count += 1
    return count


cdef inline RowScore score_row(
    const floating* x,          # IN  logits row
    const floating* y,          # IN  target probabilities row, or NULL
    Py_ssize_t n,
    Py_ssize_t t,               # IN  target class (argmax of y with probabilities), -1: none
    Py_ssize_t k,
    double inv_t,               # IN  1 / temperature
) noexcept nogil:
    cdef RowScore s
    cdef RowMax mx = row_max(x, n)
    cdef xf_row_sums sums
    cdef double m, inv, log_s, et
    s.regular = row_is_regular(mx)
    s.brier = NAN
    if not s.regular:
        s.pred = first_index(x, n, mx.value, mx.has_nan)
        s.in_top_k = t >= 0 and ranked_above(x, n, t) < k
        s.loss = s.target_prob = s.entropy = s.confidence = NAN
        return s
    m = mx.value
    if floating is float:
        xf_score_sweep_f32(x, y, n, <float>m, x[t] if t >= 0 else <float>m, <float>inv_t,
                           &sums)
    else:
        xf_score_sweep_f64(x, y, n, m, x[t] if t >= 0 else m, inv_t, &sums)
    inv = 1.0 / (1.0 + sums.r)
    log_s = log1p(sums.r)
    s.pred = sums.first
    s.confidence = inv
    s.entropy = log_s + inv_t * (sums.ent * inv)
    if t < 0:
        s.loss = s.target_prob = NAN
        s.in_top_k = False
        return s
    s.in_top_k = sums.greater < k
    et = xf_exp((<double>x[t] - m) * inv_t)
    s.target_prob = et * inv
    s.brier = xf_brier(sums.r, sums.q, et, <double>x[t] == m)
    if y == NULL:
        s.loss = inv_t * (m - <double>x[t]) + log_s
    else:
        s.loss = inv_t * sums.gap + sums.ysum * log_s
    return s


cdef inline void record(const floating* x, RowScore* s, Py_ssize_t i, Py_ssize_t t,
                        bint counted, const Outputs* out, xf_score_totals* tot) noexcept nogil:
    """Store row i's scores (rounded to the logits' dtype) and add them to the totals.
    ``x`` (the row) only selects the specialisation. A row without a softmax is counted
    in nonfinite only."""
    cdef floating loss = <floating>s.loss, entropy = <floating>s.entropy
    cdef floating conf = <floating>s.confidence
    cdef bint correct = s.pred == t
    cdef int b
    cdef Py_ssize_t c = tot.n_classes
    if counted and not s.regular:
        tot.nonfinite += 1
        counted = False
    if out.loss != NULL:
        (<floating*>out.loss)[i] = loss
        (<floating*>out.target_prob)[i] = <floating>s.target_prob
        (<floating*>out.entropy)[i] = entropy
        (<floating*>out.confidence)[i] = conf
        out.pred[i] = s.pred
        out.in_top_k[i] = s.in_top_k
        out.counted[i] = counted
    if not counted:
        return
    tot.rows += 1
    tot.correct += correct
    tot.top_k += s.in_top_k
    tot.cls[t] += 1
    tot.cls[c + s.pred] += 1
    tot.cls[2 * c + t] += correct
    xf_exact_add(&tot.loss, loss)
    xf_exact_add(&tot.entropy, entropy)
    xf_exact_add(&tot.brier, <floating>s.brier)
    b = xf_ece_bin(conf, tot.nbins)
    tot.bin_rows[b] += 1
    tot.bin_correct[b] += correct
    xf_exact_add(&tot.bin_conf[b], conf)


cdef inline Py_ssize_t probs_argmax(const floating* y, Py_ssize_t n) noexcept nogil:
    cdef RowMax my = row_max(y, n)
    return first_index(y, n, my.value, my.has_nan)


# --- blocks of rows --------------------------------------------------------------------

cdef inline void score_tile(const floating* x, const floating* y, Py_ssize_t rows,
                            Py_ssize_t n, int64_t* t, double inv_t,
                            xf_tile_scores* ts) noexcept nogil:
    if floating is float:
        xf_score_tile_f32(x, y, rows, n, t, <float>inv_t, ts)
    else:
        xf_score_tile_f64(x, y, rows, n, t, inv_t, ts)


cdef inline RowScore from_tile(const xf_tile_scores* ts, Py_ssize_t i, Py_ssize_t t,
                               Py_ssize_t k) noexcept nogil:
    cdef RowScore s
    s.pred = ts.pred[i]
    s.entropy = ts.entropy[i]
    s.confidence = ts.confidence[i]
    s.regular = True
    s.brier = ts.brier[i]
    if t < 0:
        s.loss = s.target_prob = s.brier = NAN
        s.in_top_k = False
    else:
        s.loss = ts.loss[i]
        s.target_prob = ts.target_prob[i]
        s.in_top_k = ts.greater[i] < k
    return s


cdef inline Py_ssize_t valid_target(int64_t ti, Py_ssize_t n, int64_t ignore_index,
                                    Py_ssize_t i, Py_ssize_t* bad) noexcept nogil:
    # The target class of row i, or -1 if it is ignored or invalid (the first invalid
    # row is kept in bad).
    if ti == ignore_index or ti < 0 or ti >= n:
        if ti != ignore_index and bad[0] < 0:
            bad[0] = i
        return -1
    return <Py_ssize_t>ti


cdef Py_ssize_t index_block(
    const floating* logits, const index_t* target, Py_ssize_t n, int64_t ignore_index,
    Py_ssize_t k, double inv_t, const Outputs* out, xf_score_totals* tot,
    Py_ssize_t start, Py_ssize_t stop,
) noexcept nogil:
    """Rows start..stop-1 against class indices; the first invalid row, or -1."""
    cdef Py_ssize_t i, j, t, rows, bad = -1
    cdef RowScore s
    cdef int64_t tile_t[XF_TILE]
    cdef xf_tile_scores ts
    if n < XF_SHORT:        # XF_TILE rows at a time, the lanes across the rows
        i = start
        while i < stop:
            rows = min(<Py_ssize_t>XF_TILE, stop - i)
            for j in range(rows):
                tile_t[j] = valid_target(target[i + j], n, ignore_index, i + j, &bad)
            score_tile(logits + i * n, <const floating*>NULL, rows, n, tile_t, inv_t, &ts)
            for j in range(rows):
                t = tile_t[j]
                if ts.regular[j]:
                    s = from_tile(&ts, j, t, k)
                else:
                    s = score_row(logits + (i + j) * n, <const floating*>NULL, n, t, k, inv_t)
                record(logits, &s, i + j, t, t >= 0, out, tot)
            i += rows
        return bad
    for i in range(start, stop):
        t = valid_target(target[i], n, ignore_index, i, &bad)
        s = score_row(logits + i * n, <const floating*>NULL, n, t, k, inv_t)
        record(logits, &s, i, t, t >= 0, out, tot)
    return bad


cdef void probs_block(
    const floating* logits, const floating* target, Py_ssize_t n, Py_ssize_t k,
    double inv_t, const Outputs* out, xf_score_totals* tot, Py_ssize_t start,
    Py_ssize_t stop,
) noexcept nogil:
    cdef Py_ssize_t i, j, t, rows
    cdef RowScore s
    cdef int64_t tile_t[XF_TILE]
    cdef xf_tile_scores ts
    if n < XF_SHORT:
        i = start
        while i < stop:
            rows = min(<Py_ssize_t>XF_TILE, stop - i)
            score_tile(logits + i * n, target + i * n, rows, n, tile_t, inv_t, &ts)
            for j in range(rows):
                if ts.regular[j]:
                    t = tile_t[j]
                    s = from_tile(&ts, j, t, k)
                else:
                    t = probs_argmax(target + (i + j) * n, n)
                    s = score_row(logits + (i + j) * n, target + (i + j) * n, n, t, k, inv_t)
                record(logits, &s, i + j, t, True, out, tot)
            i += rows
        return
    for i in range(start, stop):
        t = probs_argmax(target + i * n, n)
        s = score_row(logits + i * n, target + i * n, n, t, k, inv_t)
        record(logits, &s, i, t, True, out, tot)


# --- entry points ----------------------------------------------------------------------

cdef object check_outputs(Py_ssize_t n_rows, Py_ssize_t target_rows, tuple per_row,
                          object totals_out, int nbins, Py_ssize_t n_classes):
    # The Python layer guarantees these; checked again because a mistake here would be an
    # out-of-bounds write, not a wrong number.
    if nbins < 1 or nbins > 1000000:
        raise ValueError("internal error: ece_bins out of range")
    if target_rows != n_rows or totals_out.shape[0] != xf_totals_words(nbins, n_classes):
        raise ValueError("internal error: inconsistent array shapes passed to a kernel")
    for a in per_row:
        if a is not None and a.shape[0] != n_rows:
            raise ValueError("internal error: inconsistent array shapes passed to a kernel")


cdef Outputs make_outputs(floating[::1] loss, int64_t[::1] pred, floating[::1] target_prob,
                          uint8_t[::1] in_top_k, floating[::1] entropy,
                          floating[::1] confidence, uint8_t[::1] counted) except *:
    cdef Outputs out
    out.loss = out.target_prob = out.entropy = out.confidence = NULL
    out.pred = NULL
    out.in_top_k = out.counted = NULL
    if loss is None:
        return out
    if (pred is None or target_prob is None or in_top_k is None or entropy is None
            or confidence is None or counted is None):
        raise ValueError("internal error: per-row outputs come all or none")
    if loss.shape[0] == 0:
        return out
    out.loss = &loss[0]
    out.pred = &pred[0]
    out.target_prob = &target_prob[0]
    out.in_top_k = &in_top_k[0]
    out.entropy = &entropy[0]
    out.confidence = &confidence[0]
    out.counted = &counted[0]
    return out


cdef xf_score_totals* alloc_totals(int nt, int nbins, Py_ssize_t n_classes) except NULL:
    # One set of totals per thread (bins and class counts included).
    cdef xf_score_totals* tot = <xf_score_totals*>calloc(nt, sizeof(xf_score_totals))
    cdef int i, j
    if tot == NULL:
        raise MemoryError()
    for i in range(nt):
        if xf_totals_init(&tot[i], nbins, n_classes) != 0:
            for j in range(i):
                xf_totals_free(&tot[j])
            free(tot)
            raise MemoryError()
    return tot


cdef void free_totals(xf_score_totals* tot, int nt) noexcept nogil:
    cdef int i
    for i in range(nt):
        xf_totals_free(&tot[i])
    free(tot)


cdef void finish_totals(xf_score_totals* tot, int nt, int64_t* out) noexcept nogil:
    # Integer and exact sums: the order of the merge does not matter.
    cdef int i
    for i in range(1, nt):
        xf_totals_merge(&tot[0], &tot[i])
    xf_totals_export(&tot[0], out)


def score_index(
    const floating[:, ::1] logits,      # IN  (n_rows, n_classes)
    const index_t[::1] target,          # IN  (n_rows,) class indices
    Py_ssize_t k,                       # IN  top-k, >= 1
    int64_t ignore_index,
    double inv_t,                       # IN  1 / temperature, > 0
    int nbins,                          # IN  calibration bins, >= 1
    floating[::1] loss,                 # OUT (n_rows,) per-row outputs, all or none
    int64_t[::1] pred,
    floating[::1] target_prob,
    uint8_t[::1] in_top_k,
    floating[::1] entropy,
    floating[::1] confidence,
    uint8_t[::1] counted,
    int64_t[::1] totals_out,            # OUT (totals_words(nbins, C),) exact totals
    int n_threads,
):
    """Score every row against class indices; return the first invalid row, or -1."""
    cdef Py_ssize_t n_rows = logits.shape[0], n = logits.shape[1]
    check_outputs(n_rows, target.shape[0],
                  (loss, pred, target_prob, in_top_k, entropy, confidence, counted), totals_out,
                  nbins, n)
    cdef Outputs out = make_outputs(loss, pred, target_prob, in_top_k, entropy, confidence,
                                    counted)
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b, bad
    cdef Py_ssize_t first_bad = -1
    cdef int nt = effective_threads(n_threads, n_blocks, n_rows * n) if n_rows else 1
    cdef xf_score_totals* tot = alloc_totals(nt, nbins, n)
    cdef Py_ssize_t* thread_bad = <Py_ssize_t*>calloc(nt, sizeof(Py_ssize_t))
    if thread_bad == NULL:
        free_totals(tot, nt)
        raise MemoryError()
    with nogil:
        if nt == 1:             # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                bad = index_block(&logits[0, 0], &target[0], n, ignore_index, k, inv_t, &out,
                                  tot, b * rpb, min(b * rpb + rpb, n_rows))
                if first_bad < 0:
                    first_bad = bad
        else:
            for b in range(nt):
                thread_bad[b] = -1
            with parallel(num_threads=nt):
                for b in prange(n_blocks, schedule="static"):
                    bad = index_block(&logits[0, 0], &target[0], n, ignore_index, k, inv_t,
                                      &out, &tot[threadid()], b * rpb,
                                      min(b * rpb + rpb, n_rows))
                    # static schedule: a thread's blocks come in order, so its first bad
                    # row is the first one it finds
                    if bad >= 0 and thread_bad[threadid()] < 0:
                        thread_bad[threadid()] = bad
            for b in range(nt):
                if thread_bad[b] >= 0 and (first_bad < 0 or thread_bad[b] < first_bad):
                    first_bad = thread_bad[b]
        finish_totals(tot, nt, &totals_out[0])
        free_totals(tot, nt)
    free(thread_bad)
    return first_bad


def score_probs(
    const floating[:, ::1] logits,      # IN  (n_rows, n_classes)
    const floating[:, ::1] target,      # IN  (n_rows, n_classes) probabilities
    Py_ssize_t k,
    double inv_t,                       # IN  1 / temperature, > 0
    int nbins,                          # IN  calibration bins, >= 1
    floating[::1] loss,                 # OUT (n_rows,) per-row outputs, all or none
    int64_t[::1] pred,
    floating[::1] target_prob,
    uint8_t[::1] in_top_k,
    floating[::1] entropy,
    floating[::1] confidence,
    uint8_t[::1] counted,
    int64_t[::1] totals_out,            # OUT (totals_words(nbins, C),) exact totals
    int n_threads,
):
    """Score every row against probabilities (the target class is their argmax)."""
    cdef Py_ssize_t n_rows = logits.shape[0], n = logits.shape[1]
    check_outputs(n_rows, target.shape[0],
                  (loss, pred, target_prob, in_top_k, entropy, confidence, counted), totals_out,
                  nbins, n)
    if target.shape[1] != n:
        raise ValueError("internal error: inconsistent array shapes passed to a kernel")
    cdef Outputs out = make_outputs(loss, pred, target_prob, in_top_k, entropy, confidence,
                                    counted)
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b
    cdef int nt = effective_threads(n_threads, n_blocks, n_rows * n) if n_rows else 1
    cdef xf_score_totals* tot = alloc_totals(nt, nbins, n)
    with nogil:
        if nt == 1:
            for b in range(n_blocks):
                probs_block(&logits[0, 0], &target[0, 0], n, k, inv_t, &out, tot,
                            b * rpb, min(b * rpb + rpb, n_rows))
        else:
            with parallel(num_threads=nt):
                for b in prange(n_blocks, schedule="static"):
                    probs_block(&logits[0, 0], &target[0, 0], n, k, inv_t, &out,
                                &tot[threadid()], b * rpb, min(b * rpb + rpb, n_rows))
        finish_totals(tot, nt, &totals_out[0])
        free_totals(tot, nt)
    return None


# --- fit_temperature: the loss and its derivatives in s = 1 / T ------------------------

cdef void temp_block(
    const floating* logits, const index_t* target, Py_ssize_t n, int64_t ignore_index,
    double inv_t, Py_ssize_t start, Py_ssize_t stop,
    double* sums,               # OUT loss, dL/ds, d2L/ds2 summed over the block's rows
    int64_t* counts,            # OUT rows counted, rows without a softmax, first bad row
) noexcept nogil:
    cdef Py_ssize_t i, t, bad = -1
    cdef RowMax mx
    cdef xf_temp_sums ts
    cdef double m, s_sum, log_s, ut, eu, eu2, loss = 0.0, g = 0.0, h = 0.0
    cdef int64_t rows = 0, nonfinite = 0
    for i in range(start, stop):
        t = valid_target(target[i], n, ignore_index, i, &bad)
        if t < 0:
            continue
        mx = row_max(logits + i * n, n)
        if not row_is_regular(mx):
            nonfinite += 1
            continue
        m = mx.value
        if floating is float:
            xf_temp_sweep_f32(logits + i * n, n, <float>m, <float>inv_t, &ts)
        else:
            xf_temp_sweep_f64(logits + i * n, n, m, inv_t, &ts)
        s_sum = 1.0 + ts.r
        log_s = log1p(ts.r)
        ut = m - <double>logits[i * n + t]
        eu = ts.a / s_sum
        eu2 = ts.b / s_sum
        loss += inv_t * ut + log_s
        g += ut - eu
        h += max(eu2 - eu * eu, 0.0)
        rows += 1
    sums[0] = loss
    sums[1] = g
    sums[2] = h
    counts[0] = rows
    counts[1] = nonfinite
    counts[2] = bad


def temperature_sums(
    const floating[:, ::1] logits,      # IN  (n_rows, n_classes)
    const index_t[::1] target,          # IN  (n_rows,) class indices
    int64_t ignore_index,
    double inv_t,                       # IN  s = 1 / T, > 0
    int n_threads,
):
    """Over the counted rows at s = 1 / T: (rows, nonfinite rows, sum of the losses, of
    dL/ds and of d2L/ds2, first invalid row or -1), in one pass over the logits."""
    cdef Py_ssize_t n_rows = logits.shape[0], n = logits.shape[1]
    if target.shape[0] != n_rows or not inv_t > 0:
        raise ValueError("internal error: bad arguments passed to a kernel")
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b
    cdef int nt = effective_threads(n_threads, n_blocks, n_rows * n) if n_rows else 1
    cdef double* sums = <double*>malloc((n_blocks * 3 + 1) * sizeof(double))
    cdef int64_t* counts = <int64_t*>malloc((n_blocks * 3 + 1) * sizeof(int64_t))
    cdef double loss = 0.0, g = 0.0, h = 0.0
    cdef int64_t rows = 0, nonfinite = 0, bad = -1
    if sums == NULL or counts == NULL:
        free(sums)
        free(counts)
        raise MemoryError()
    with nogil:
        if nt == 1:
            for b in range(n_blocks):
                temp_block(&logits[0, 0], &target[0], n, ignore_index, inv_t, b * rpb,
                           min(b * rpb + rpb, n_rows), sums + 3 * b, counts + 3 * b)
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                temp_block(&logits[0, 0], &target[0], n, ignore_index, inv_t, b * rpb,
                           min(b * rpb + rpb, n_rows), sums + 3 * b, counts + 3 * b)
        for b in range(n_blocks):       # in order: the same sums for any thread count
            loss += sums[3 * b]
            g += sums[3 * b + 1]
            h += sums[3 * b + 2]
            rows += counts[3 * b]
            nonfinite += counts[3 * b + 1]
            if bad < 0 and counts[3 * b + 2] >= 0:
                bad = counts[3 * b + 2]
    free(sums)
    free(counts)
    return rows, nonfinite, loss, g, h, bad
