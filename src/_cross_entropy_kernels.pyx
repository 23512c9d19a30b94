# Kernels of the categorical cross-entropy: loss, and optionally its gradient, of every
# row of a C-contiguous (n_rows, n_classes) array of logits, against class indices
# (cross_entropy_index) or probabilities (cross_entropy_probs).
#
# Design
# ------
# * One row at a time: a sweep that takes, chunk by chunk while the chunk is in L1, the
#   max and the exps, stored in the gradient row; a sweep (in L2) that turns them into
#   the gradient. Rows of fewer than XF_SHORT classes go XF_TILE at a time with the
#   vector lanes across rows (short_rows_block); rows of up to XF_BLOCK classes take
#   their log1p and tails a tile at a time, and (up to XF_ROWS_MAX_BYTES) their sweeps
#   XF_ROWS rows side by side (medium_rows_block), so that the fixed cost of a row
#   overlaps with its neighbours'. The logits are read from memory once and the
#   gradient written once; nothing of size n_rows x n_classes is allocated. (Label smoothing needs the max
#   before the exps, and takes a separate sweep for it.) The gradient may be the logits array itself: every
#   sweep reads an entry before it writes that same entry.
# * Both target kinds reduce to one form. With per-class coefficients a_j (for an index
#   t: a_j = (1-eps) w_t [j == t] + eps/C w_j; for probabilities y: a_j = w_j ((1-eps)
#   y_j + eps/C)) and W = sum_j a_j, the row loss is
#       sum_j a_j (lse - x_j) = sum_j a_j (m - x_j) + W log1p(r)
#   where m is the row max and 1 + r the sum of exp(x_j - m) (r leaves out one max). Every
#   term is >= 0, so there is no cancellation: a loss of 1e-20 keeps its digits (the
#   textbook lse - x_t would round it to 0). The gradient is (W + 2 z lse) p_j - a_j.
# * z_loss adds z lse^2 to a counted row; softcap replaces x by c tanh(x / c) in a
#   per-thread scratch row and multiplies the gradient by 1 - tanh^2 (a second row).
# * Rows are grouped in blocks fixed by the shape; each block is summed serially and the
#   block sums are added in order, so totals are bitwise equal for any thread count.
# * Invalid class indices are found in the same pass; their rows get loss 0 and a zero
#   gradient, and the first one is reported to the caller, which raises.
# * A "mean" gradient needs the denominator (sum of w[target] over counted rows) before
#   the first row is written; that is a pre-pass over the targets only (n_rows integers,
#   not the logits), which also validates them so nothing is written on bad input.

from cython.parallel cimport prange, threadid
from libc.math cimport log1p, tanh, NAN, INFINITY
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free

from _common cimport (
    floating, index_t, RowMax, row_max, row_is_regular, sum_exp_below_max, scale, fill,
    online_sumexp, online_sumexp_rows, scale_chunks, small_ce, soft_sums, xf_set_tile_gather,
    xf_exp,
    XF_BLOCK, XF_MAX_CHUNKS, XF_ROWS, XF_ROWS_MAX_BYTES, XF_SHORT, XF_TILE,
    rows_per_block, effective_threads, GRAD_WORK, SERIAL_BELOW, array_data, optional_data,
    float_type, index_type,
)

cnp.import_array()

from xent_fast import _simd

xf_set_tile_gather(_simd.TILE_GATHER)     # short-row tiles by gathers where they are fast


cdef struct CEOptions:
    Py_ssize_t n_classes
    int64_t ignore_index
    double smoothing        # label_smoothing, eps
    double z_loss
    double softcap          # 0: off
    double weight_sum       # sum of the class weights (n_classes without weights)


cdef struct BlockSums:
    double loss
    double weight           # sum of w[target] over counted rows: the "mean" denominator
    Py_ssize_t count        # counted rows (neither ignored nor invalid)
    Py_ssize_t first_bad    # first row with an invalid class index, -1 if none


# --- one row ---------------------------------------------------------------------------

cdef inline const floating* capped(const floating* x, floating* scratch, Py_ssize_t n,
                                   double cap) noexcept nogil:
    """Without softcap, x itself. With it, scratch[:n] = cap tanh(x / cap) and
    scratch[n:2n] = its derivative 1 - tanh^2, taken in double from x: from the rounded
    capped value it would lose digits where tanh saturates."""
    cdef Py_ssize_t j
    cdef double t
    if cap == 0:
        return x
    for j in range(n):
        if x[j] == -INFINITY:
            # tanh(-inf) = -1 would unmask a masked class; it stays -inf, derivative 0.
            scratch[j] = x[j]
            scratch[n + j] = 0
        else:
            t = tanh(x[j] / cap)
            scratch[j] = <floating>(cap * t)
            scratch[n + j] = <floating>((1.0 - t) * (1.0 + t))
    return scratch


cdef inline double ce_index_row(
    const floating* x,          # IN  logits row
    Py_ssize_t t,               # IN  valid class index
    double wt,                  # IN  weight of class t (1 without weights)
    const floating* weight,     # IN  class weights or NULL
    const CEOptions* o,
    double g,                   # IN  upstream gradient of this row's loss
    floating* grad,             # OUT g * dloss/dx, or NULL; may alias x
    floating* scratch,          # per-thread 2 rows, used with softcap
) noexcept nogil:
    cdef Py_ssize_t n = o.n_classes
    cdef const floating* xs = capped(x, scratch, n, o.softcap)
    cdef floating cmax[XF_MAX_CHUNKS]
    cdef RowMax mx
    cdef double xt = xs[t]      # read before the gradient row overwrites it
    cdef double r = 0.0, gap = 0.0, big_w
    if o.smoothing == 0 and n <= XF_BLOCK * XF_MAX_CHUNKS:
        # max and exps in one sweep; stored exps are relative to their block's max
        r = online_sumexp(xs, n, grad, cmax, &mx)
    else:
        mx = row_max(xs, n)
        if row_is_regular(mx):
            if o.smoothing > 0:
                # sum_j w_j (m - x_j), a zero weight adding 0 even against a -inf
                gap = soft_sums(xs, <const floating*>NULL, weight, n, mx.value, 0.0, 1.0,
                                &big_w)
            r = sum_exp_below_max(xs, n, mx.value, grad)
    if not row_is_regular(mx):
        if grad != NULL:
            fill(grad, n, NAN)
        return NAN
    return ce_index_tail(o, t, wt, xt, mx.value, r, log1p(r), gap, weight, g, grad, xs,
                         cmax if o.smoothing == 0 and n <= XF_BLOCK * XF_MAX_CHUNKS else NULL)


cdef inline double ce_index_tail(
    const CEOptions* o, Py_ssize_t t, double wt,
    double xt, double m, double r, double log_s,    # the row: target logit, max, sums
    double gap,                                     # sum_j w_j (m - x_j), with smoothing
    const floating* weight, double g,
    floating* grad,             # holds e_j = exp(x_j - m), or relative to cmax; or NULL
    const floating* xs,         # the (capped) row; with softcap xs[n:2n] is 1 - tanh^2
    const floating* cmax,       # block maxima of online_sumexp, or NULL
) noexcept nogil:
    """The loss of a regular row and its gradient, from the row's sums."""
    cdef Py_ssize_t n = o.n_classes, j
    cdef double lse = m + log_s, loss, eps_c = o.smoothing / n, coef, alpha, rest, e_t
    loss = 0.0
    if (1.0 - o.smoothing) * wt != 0:     # a zero coefficient adds 0, even against -inf
        loss = (1.0 - o.smoothing) * wt * ((m - xt) + log_s)
    if o.smoothing > 0:
        loss += eps_c * (gap + o.weight_sum * log_s)
    if o.z_loss > 0:
        loss += o.z_loss * lse * lse
    if grad == NULL:
        return loss

    # 1 - p_t = (1 + r - e_t) / (1 + r); when t is not a max, r holds e_t and the rest
    # is >= 1, so forming it costs no accuracy; when it is, the rest is r itself.
    e_t = grad[t]
    if cmax != NULL and cmax[t // XF_BLOCK] != m:
        e_t = e_t * xf_exp(<double>cmax[t // XF_BLOCK] - m)
    rest = r if xt == m else 1.0 + (r - e_t)
    coef = (1.0 - o.smoothing) * wt + eps_c * o.weight_sum + 2.0 * o.z_loss * lse
    alpha = g * coef / (1.0 + r)
    if cmax != NULL:
        scale_chunks(grad, n, cmax, m, alpha)
    elif eps_c == 0:
        scale(grad, n, alpha)
    elif weight == NULL:
        for j in range(n):
            grad[j] = <floating>(alpha * grad[j] - g * eps_c)
    else:
        for j in range(n):
            grad[j] = <floating>(alpha * grad[j] - g * eps_c * weight[j])
    # The target entry coef p_t - a_t. For p_t near 1 without the cancellation of
    # p_t - 1, as coef (p_t - 1) + (coef - a_t); for small p_t directly (the other form
    # would subtract two large terms when z_loss makes coef large).
    if e_t < 0.5 * (1.0 + r):
        grad[t] = <floating>(g * (coef * (e_t / (1.0 + r)) - (1.0 - o.smoothing + eps_c) * wt))
    else:
        grad[t] = <floating>(g * (-coef * rest / (1.0 + r)
                                  + eps_c * (o.weight_sum - wt) + 2.0 * o.z_loss * lse))
    if o.softcap > 0:
        for j in range(n):
            grad[j] = grad[j] * xs[n + j]      # through the cap: times 1 - tanh^2
    return loss


cdef inline double ce_probs_row(
    const floating* x,          # IN  logits row
    const floating* y,          # IN  target probabilities row
    const floating* weight,     # IN  class weights or NULL
    const CEOptions* o,
    double g,                   # IN  upstream gradient of this row's loss
    floating* grad,             # OUT g * dloss/dx, or NULL; may alias x
    floating* scratch,          # per-thread 2 rows, used with softcap
) noexcept nogil:
    cdef Py_ssize_t n = o.n_classes, j
    cdef const floating* xs = capped(x, scratch, n, o.softcap)
    cdef RowMax mx = row_max(xs, n)
    cdef double m, r, log_s, lse, a, big_w, gap, keep, eps_c, alpha
    if not row_is_regular(mx):
        if grad != NULL:
            fill(grad, n, NAN)
        return NAN
    m = mx.value
    keep = 1.0 - o.smoothing
    eps_c = o.smoothing / n
    # 0 log 0 = 0: a class with no target mass adds nothing to the gap
    gap = soft_sums(xs, y, weight, n, m, keep, eps_c, &big_w)
    r = sum_exp_below_max(xs, n, m, grad)
    log_s = log1p(r)
    lse = m + log_s
    if grad != NULL:
        alpha = g * (big_w + 2.0 * o.z_loss * lse) / (1.0 + r)
        for j in range(n):
            a = keep * y[j] + eps_c
            if weight != NULL:
                a = a * weight[j]
            grad[j] = <floating>(alpha * grad[j] - g * a)
        if o.softcap > 0:
            for j in range(n):
                grad[j] = grad[j] * xs[n + j]  # through the cap: times 1 - tanh^2
    return gap + big_w * log_s + o.z_loss * lse * lse


# --- one block of rows -----------------------------------------------------------------

cdef inline void clear_sums(BlockSums* s) noexcept nogil:
    s.loss = 0.0
    s.weight = 0.0
    s.count = 0
    s.first_bad = -1


cdef void count_index_block(
    const index_t* target, const floating* weight, const CEOptions* o,
    Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    # The "mean" denominator and the validity of the targets, without touching logits.
    cdef Py_ssize_t i, counted = 0, bad = 0
    cdef int64_t t, ignore = o.ignore_index, n = o.n_classes
    clear_sums(s)
    if weight == NULL:
        # Branch-free (it vectorises): count, and only look for the first invalid index
        # if there is one. An integer count, with no chain of dependent float adds.
        for i in range(start, stop):
            t = target[i]
            counted += (t != ignore) & (t >= 0) & (t < n)
            bad += (t != ignore) & ((t < 0) | (t >= n))
        s.count = counted
        s.weight = <double>counted
        if bad == 0:
            return
    counted = 0
    for i in range(start, stop):
        t = target[i]
        if t == o.ignore_index:
            continue
        if t < 0 or t >= o.n_classes:
            if s.first_bad < 0:
                s.first_bad = i
            continue
        if weight != NULL:
            s.weight += weight[t]
        counted += 1
    s.count = counted
    if weight == NULL:
        s.weight = <double>counted


cdef void short_rows_block(
    const floating* logits, const index_t* target, const floating* weight,     # IN
    const floating* grad_rows, double grad_scale,                              # IN
    floating* loss_rows, floating* grad,                                       # OUT or NULL
    const CEOptions* o, Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    # Rows of < XF_SHORT classes without smoothing or softcap, XF_TILE at a time: here
    # the bookkeeping (ignored and invalid rows, weights, upstream gradients, sums),
    # in small_ce the arithmetic, vectorised across the rows of a tile.
    cdef Py_ssize_t i, k, rows, n = o.n_classes, ok, bad, tile_count
    cdef int64_t t, ignore = o.ignore_index
    cdef int64_t tile_t[XF_TILE]
    cdef double tile_w[XF_TILE]
    cdef double tile_g[XF_TILE]
    cdef double tile_loss[XF_TILE]
    cdef Py_ssize_t counted = 0
    cdef bint ready
    i = start
    while i < stop:
        rows = min(<Py_ssize_t>XF_TILE, stop - i)
        ready = False
        if rows == XF_TILE and weight == NULL:
            # The common case, branch-free (it vectorises); a tile with an invalid
            # index is done again below, row by row.
            bad = 0
            tile_count = 0
            for k in range(XF_TILE):
                t = target[i + k]
                ok = (t != ignore) & (t >= 0) & (t < n)
                bad += (t != ignore) & ((t < 0) | (t >= n))
                tile_count += ok
                tile_t[k] = t if ok else -1
                tile_w[k] = 1.0 if ok else 0.0
                tile_g[k] = ((grad_scale * grad_rows[i + k] if grad_rows != NULL else grad_scale)
                             if ok else 0.0)
            if bad == 0:
                counted += tile_count
                ready = True
        for k in range(0 if ready else rows):
            t = target[i + k]
            tile_t[k] = -1
            tile_w[k] = 0.0
            tile_g[k] = 0.0
            if t == o.ignore_index:
                continue
            if t < 0 or t >= n:
                if s.first_bad < 0:
                    s.first_bad = i + k
                continue
            tile_t[k] = t
            tile_w[k] = weight[t] if weight != NULL else 1.0
            tile_g[k] = grad_scale * grad_rows[i + k] if grad_rows != NULL else grad_scale
            counted += 1
            if weight != NULL:      # row by row, in count_index_block's order: the
                s.weight += tile_w[k]   # loss and the gradient share the "mean" denominator
        for k in range(rows, XF_TILE):      # a last, partial tile: lanes that count nothing
            tile_t[k] = -1
            tile_w[k] = 0.0
            tile_g[k] = 0.0
        # The loss sum by tiles: a running sum through the rows would be a chain of
        # dependent adds as long as the arithmetic of the tile.
        s.loss += small_ce(logits + i * n, rows, n, tile_t, tile_w, tile_g, o.z_loss,
                           tile_loss, grad + i * n if grad != NULL else NULL)
        if loss_rows != NULL:
            for k in range(rows):
                loss_rows[i + k] = <floating>tile_loss[k]
        i += rows
    s.count += counted
    if weight == NULL:
        s.weight += <double>counted


cdef void medium_rows_block(
    const floating* logits, const index_t* target, const floating* weight,     # IN
    const floating* grad_rows, double grad_scale,                              # IN
    floating* loss_rows, floating* grad,                                       # OUT or NULL
    const CEOptions* o, Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    # Rows of XF_SHORT to XF_BLOCK classes without smoothing or softcap, XF_TILE at a
    # time: first every row's sweep (max, exps, sums; rows of at most XF_ROWS_MAX_BYTES
    # XF_ROWS at once), then the tile's log1p calls, then the tails. A row's log1p and
    # tail are a chain of dependent operations that took about a third of a 100-class
    # row's time when each followed its own sweep; issued together, the chains of a tile
    # overlap. Same operations on the same values as ce_index_row, so the results are
    # bitwise those of the row-by-row path.
    cdef Py_ssize_t i, k, rows, n = o.n_classes
    cdef int64_t t
    cdef RowMax mx
    cdef floating cmax[XF_TILE]         # one block per row (n <= XF_BLOCK)
    cdef double r[XF_TILE]
    cdef double m[XF_TILE]
    cdef double xt[XF_TILE]
    cdef double log_s[XF_TILE]
    cdef double loss, wt, g
    cdef Py_ssize_t tt[XF_TILE]         # the class, or -1: ignored or invalid
    cdef bint regular[XF_TILE]
    cdef Py_ssize_t counted[XF_TILE]    # the rows of the tile that count, in order
    cdef Py_ssize_t n_counted, v, q
    cdef const floating* xq[XF_ROWS]
    cdef floating* eq[XF_ROWS]
    cdef floating** e_rows = &eq[0] if grad != NULL else NULL     # the exps stored, or not
    cdef bint side_by_side = n * <Py_ssize_t>sizeof(floating) <= XF_ROWS_MAX_BYTES
    cdef floating cq[XF_ROWS]
    cdef floating mq[XF_ROWS]
    cdef int nanq[XF_ROWS]
    cdef double rq[XF_ROWS]
    cdef floating* grad_i
    i = start
    while i < stop:
        rows = min(<Py_ssize_t>XF_TILE, stop - i)
        n_counted = 0
        for k in range(rows):
            t = target[i + k]
            tt[k] = -1
            grad_i = grad + (i + k) * n if grad != NULL else NULL
            if t == o.ignore_index or t < 0 or t >= n:
                if t != o.ignore_index and s.first_bad < 0:
                    s.first_bad = i + k
                if grad_i != NULL:
                    fill(grad_i, n, 0.0)
                if loss_rows != NULL:
                    loss_rows[i + k] = 0
                continue
            tt[k] = <Py_ssize_t>t
            xt[k] = logits[(i + k) * n + t]     # before the gradient row overwrites it
            counted[n_counted] = k
            n_counted += 1
        # The sweeps, XF_ROWS rows side by side (their chains of dependent steps overlap),
        # the rest one by one.
        v = 0
        while side_by_side and v + XF_ROWS <= n_counted:
            for q in range(XF_ROWS):
                k = counted[v + q]
                xq[q] = logits + (i + k) * n
                eq[q] = grad + (i + k) * n if grad != NULL else NULL
            online_sumexp_rows(xq, n, e_rows, cq, mq, nanq, rq)
            for q in range(XF_ROWS):
                k = counted[v + q]
                cmax[k] = cq[q]
                m[k] = mq[q]
                r[k] = rq[q]
                mx.value = mq[q]
                mx.has_nan = nanq[q]
                regular[k] = row_is_regular(mx)
            v += XF_ROWS
        while v < n_counted:
            k = counted[v]
            grad_i = grad + (i + k) * n if grad != NULL else NULL
            r[k] = online_sumexp(logits + (i + k) * n, n, grad_i, &cmax[k], &mx)
            m[k] = mx.value
            regular[k] = row_is_regular(mx)
            v += 1
        for k in range(rows):
            log_s[k] = log1p(r[k]) if tt[k] >= 0 and regular[k] else 0.0
        for k in range(rows):
            if tt[k] < 0:
                continue
            t = tt[k]
            wt = weight[t] if weight != NULL else 1.0
            g = grad_scale * grad_rows[i + k] if grad_rows != NULL else grad_scale
            grad_i = grad + (i + k) * n if grad != NULL else NULL
            if regular[k]:
                loss = ce_index_tail(o, tt[k], wt, xt[k], m[k], r[k], log_s[k], 0.0, weight, g,
                                     grad_i, logits + (i + k) * n, &cmax[k])
            else:
                if grad_i != NULL:
                    fill(grad_i, n, NAN)
                loss = NAN
            if loss_rows != NULL:
                loss_rows[i + k] = <floating>loss
            s.loss += loss
            s.weight += wt
            s.count += 1
        i += rows


cdef void ce_index_block(
    const floating* logits, const index_t* target, const floating* weight,     # IN
    const floating* grad_rows, double grad_scale,                              # IN
    floating* loss_rows, floating* grad,                                       # OUT or NULL
    floating* scratch, const CEOptions* o,
    Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    cdef Py_ssize_t i, n = o.n_classes
    cdef int64_t t
    cdef double wt, loss, g
    cdef floating* grad_i = NULL
    clear_sums(s)
    if n < XF_SHORT and o.smoothing == 0 and o.softcap == 0:
        short_rows_block(logits, target, weight, grad_rows, grad_scale, loss_rows, grad, o,
                         start, stop, s)
        return
    if n <= XF_BLOCK and o.smoothing == 0 and o.softcap == 0:
        medium_rows_block(logits, target, weight, grad_rows, grad_scale, loss_rows, grad, o,
                          start, stop, s)
        return
    for i in range(start, stop):
        t = target[i]
        if grad != NULL:
            grad_i = grad + i * n
        if t == o.ignore_index or t < 0 or t >= n:
            if t != o.ignore_index and s.first_bad < 0:
                s.first_bad = i
            if grad_i != NULL:
                fill(grad_i, n, 0.0)
            if loss_rows != NULL:
                loss_rows[i] = 0
            continue
        wt = weight[t] if weight != NULL else 1.0
        g = grad_scale * grad_rows[i] if grad_rows != NULL else grad_scale
        loss = ce_index_row(logits + i * n, <Py_ssize_t>t, wt, weight, o, g, grad_i, scratch)
        if loss_rows != NULL:
            loss_rows[i] = <floating>loss
        s.loss += loss
        s.weight += wt
        s.count += 1


cdef void ce_probs_block(
    const floating* logits, const floating* target, const floating* weight,    # IN
    const floating* grad_rows, double grad_scale,                              # IN
    floating* loss_rows, floating* grad,                                       # OUT or NULL
    floating* scratch, const CEOptions* o,
    Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    cdef Py_ssize_t i, n = o.n_classes
    cdef double loss, g
    clear_sums(s)
    for i in range(start, stop):
        g = grad_scale * grad_rows[i] if grad_rows != NULL else grad_scale
        loss = ce_probs_row(logits + i * n, target + i * n, weight, o, g,
                            grad + i * n if grad != NULL else NULL, scratch)
        if loss_rows != NULL:
            loss_rows[i] = <floating>loss
        s.loss += loss
    s.count = stop - start
    s.weight = <double>s.count


# --- entry points ----------------------------------------------------------------------

cdef inline void add_sums(BlockSums* total, const BlockSums* sums, Py_ssize_t n_blocks) noexcept nogil:
    # In block order, so that the total does not depend on the thread count.
    cdef Py_ssize_t b
    clear_sums(total)
    for b in range(n_blocks):
        total.loss += sums[b].loss
        total.weight += sums[b].weight
        total.count += sums[b].count
        if total.first_bad < 0 and sums[b].first_bad >= 0:
            total.first_bad = sums[b].first_bad


cdef CEOptions make_options(Py_ssize_t n, const floating* weight, int64_t ignore_index,
                            double label_smoothing, double z_loss, double softcap) noexcept nogil:
    cdef CEOptions o
    cdef Py_ssize_t j
    o.n_classes = n
    o.ignore_index = ignore_index
    o.smoothing = label_smoothing
    o.z_loss = z_loss
    o.softcap = softcap
    o.weight_sum = n
    if weight != NULL:
        o.weight_sum = 0.0
        for j in range(n):
            o.weight_sum += weight[j]
    return o


cdef void* alloc_or_raise(size_t size) except NULL:
    cdef void* p = malloc(size if size > 0 else 1)
    if p == NULL:
        raise MemoryError()
    return p


def cross_entropy_index(
    object logits,                      # IN  (n_rows, n_classes) float32 or float64
    object target,                      # IN  (n_rows,) int32 or int64 class indices
    object weight,                      # IN  (n_classes,) or None: no weights
    object loss_rows,                   # OUT (n_rows,) per-row loss, or None
    object grad,                        # OUT (n_rows, n_classes) gradient, or None
    object grad_rows,                   # IN  (n_rows,) per-row upstream gradient, or None
    double grad_output,                 # IN  scalar upstream gradient
    bint mean,                          # the gradient is of the "mean" of the losses
    int64_t ignore_index, double label_smoothing, double z_loss, double softcap,
    int n_threads,
):
    """Return (loss sum, sum of w[target], counted rows, first invalid row or -1).
    The float arrays all have the logits' dtype."""
    cdef int ft = float_type(logits, 2), it = index_type(target)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIMS(<cnp.ndarray>logits)[0]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>logits)[1]
    cdef char* x = array_data(logits, ft, n_rows, n, False)
    cdef char* t = array_data(target, it, n_rows, -1, False)
    cdef char* w = optional_data(weight, ft, n, -1, False)
    cdef char* lr = optional_data(loss_rows, ft, n_rows, -1, True)
    cdef char* gp = optional_data(grad, ft, n_rows, n, True)
    cdef char* gr = optional_data(grad_rows, ft, n_rows, -1, False)
    cdef bint t32 = cnp.PyArray_ITEMSIZE(<cnp.ndarray>target) == 4
    if ft == cnp.NPY_FLOAT32 and t32:
        return index_rows(<const float*>x, <const int32_t*>t, <const float*>w, <float*>lr,
                          <float*>gp, <const float*>gr, n_rows, n, grad_output, mean,
                          ignore_index, label_smoothing, z_loss, softcap, n_threads)
    if ft == cnp.NPY_FLOAT32:
        return index_rows(<const float*>x, <const int64_t*>t, <const float*>w, <float*>lr,
                          <float*>gp, <const float*>gr, n_rows, n, grad_output, mean,
                          ignore_index, label_smoothing, z_loss, softcap, n_threads)
    if t32:
        return index_rows(<const double*>x, <const int32_t*>t, <const double*>w, <double*>lr,
                          <double*>gp, <const double*>gr, n_rows, n, grad_output, mean,
                          ignore_index, label_smoothing, z_loss, softcap, n_threads)
    return index_rows(<const double*>x, <const int64_t*>t, <const double*>w, <double*>lr,
                      <double*>gp, <const double*>gr, n_rows, n, grad_output, mean,
                      ignore_index, label_smoothing, z_loss, softcap, n_threads)


cdef object index_rows(
    const floating* logits, const index_t* target, const floating* w, floating* lr,
    floating* gp, const floating* gr, Py_ssize_t n_rows, Py_ssize_t n, double grad_output,
    bint mean, int64_t ignore_index, double label_smoothing, double z_loss, double softcap,
    int n_threads,
):
    if n_rows == 0:
        return 0.0, 0.0, 0, -1
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b
    cdef int nt = effective_threads(n_threads, n_blocks,
                                    n_rows * n * (GRAD_WORK if gp != NULL else 1))
    cdef CEOptions o = make_options(n, w, ignore_index, label_smoothing, z_loss, softcap)
    cdef BlockSums total
    cdef BlockSums few_sums[16]         # small calls need no heap allocation
    cdef BlockSums* sums = &few_sums[0]
    if n_blocks > 16:
        sums = <BlockSums*>alloc_or_raise(n_blocks * sizeof(BlockSums))
    cdef floating* scratch = NULL
    cdef double grad_scale = grad_output
    if softcap > 0:
        scratch = <floating*>malloc(nt * 2 * n * sizeof(floating))
        if scratch == NULL:
            if sums != &few_sums[0]:
                free(sums)
            raise MemoryError()

    with nogil:
        total.first_bad = -1
        if mean and gp != NULL:
            if nt == 1 or n_rows < SERIAL_BELOW:   # a read of the targets alone
                for b in range(n_blocks):
                    count_index_block(target, w, &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
            else:
                for b in prange(n_blocks, schedule="static", num_threads=nt):
                    count_index_block(target, w, &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
            add_sums(&total, sums, n_blocks)
            grad_scale = grad_output / total.weight if total.count > 0 else 0.0
        if total.first_bad >= 0:
            pass
        elif nt == 1:           # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                ce_index_block(logits, target, w, gr, grad_scale, lr, gp, scratch,
                               &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
            add_sums(&total, sums, n_blocks)
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                ce_index_block(logits, target, w, gr, grad_scale, lr, gp,
                               scratch + threadid() * 2 * n if scratch != NULL else NULL,
                               &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
            add_sums(&total, sums, n_blocks)
    if sums != &few_sums[0]:
        free(sums)
    free(scratch)
    return total.loss, total.weight, total.count, total.first_bad


def cross_entropy_probs(
    object logits,                      # IN  (n_rows, n_classes) float32 or float64
    object target,                      # IN  (n_rows, n_classes) probabilities
    object weight,                      # IN  (n_classes,) or None: no weights
    object loss_rows,                   # OUT (n_rows,) per-row loss, or None
    object grad,                        # OUT (n_rows, n_classes) gradient, or None
    object grad_rows,                   # IN  (n_rows,) per-row upstream gradient, or None
    double grad_scale,                  # IN  scalar upstream gradient (already / n_rows for "mean")
    double label_smoothing, double z_loss, double softcap,
    int n_threads,
):
    """Return the sum of the row losses. The arrays all have the logits' dtype."""
    cdef int ft = float_type(logits, 2)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIMS(<cnp.ndarray>logits)[0]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>logits)[1]
    cdef char* x = array_data(logits, ft, n_rows, n, False)
    cdef char* y = array_data(target, ft, n_rows, n, False)
    cdef char* w = optional_data(weight, ft, n, -1, False)
    cdef char* lr = optional_data(loss_rows, ft, n_rows, -1, True)
    cdef char* gp = optional_data(grad, ft, n_rows, n, True)
    cdef char* gr = optional_data(grad_rows, ft, n_rows, -1, False)
    if ft == cnp.NPY_FLOAT32:
        return probs_rows(<const float*>x, <const float*>y, <const float*>w, <float*>lr,
                          <float*>gp, <const float*>gr, n_rows, n, grad_scale,
                          label_smoothing, z_loss, softcap, n_threads)
    return probs_rows(<const double*>x, <const double*>y, <const double*>w, <double*>lr,
                      <double*>gp, <const double*>gr, n_rows, n, grad_scale,
                      label_smoothing, z_loss, softcap, n_threads)


cdef object probs_rows(
    const floating* logits, const floating* target, const floating* w, floating* lr,
    floating* gp, const floating* gr, Py_ssize_t n_rows, Py_ssize_t n, double grad_scale,
    double label_smoothing, double z_loss, double softcap, int n_threads,
):
    if n_rows == 0:
        return 0.0
    cdef Py_ssize_t rpb = rows_per_block(n), n_blocks = (n_rows + rpb - 1) // rpb, b
    cdef int nt = effective_threads(n_threads, n_blocks,
                                    n_rows * n * (GRAD_WORK if gp != NULL else 1))
    cdef CEOptions o = make_options(n, w, -1, label_smoothing, z_loss, softcap)
    cdef BlockSums total
    cdef BlockSums few_sums[16]         # small calls need no heap allocation
    cdef BlockSums* sums = &few_sums[0]
    if n_blocks > 16:
        sums = <BlockSums*>alloc_or_raise(n_blocks * sizeof(BlockSums))
    cdef floating* scratch = NULL
    if softcap > 0:
        scratch = <floating*>malloc(nt * 2 * n * sizeof(floating))
        if scratch == NULL:
            if sums != &few_sums[0]:
                free(sums)
            raise MemoryError()
    with nogil:
        if nt == 1:             # no parallel region (small calls, forked children)
            for b in range(n_blocks):
                ce_probs_block(logits, target, w, gr, grad_scale, lr, gp, scratch,
                               &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
        else:
            for b in prange(n_blocks, schedule="static", num_threads=nt):
                ce_probs_block(logits, target, w, gr, grad_scale, lr, gp,
                               scratch + threadid() * 2 * n if scratch != NULL else NULL,
                               &o, b * rpb, min(b * rpb + rpb, n_rows), &sums[b])
        add_sums(&total, sums, n_blocks)
    if sums != &few_sums[0]:
        free(sums)
    free(scratch)
    return total.loss
