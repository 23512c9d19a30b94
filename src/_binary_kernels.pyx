# Kernels of the binary family, elementwise over a C-contiguous (n_rows, n_cols) array:
# binary cross-entropy on probabilities, on logits (with pos_weight), and the sigmoid
# focal loss. Each element gives a loss and, when asked, d(loss)/d(input) in the same
# pass; inputs are read once and the gradient written once.
#
# Numerics
# --------
# * On logits the loss is written as (1 - y) softplus(x) + pw y softplus(-x): every
#   term is >= 0, so a tiny loss keeps its digits (the common form (1 - y) x +
#   softplus(-x) cancels for x << 0, y = 0). softplus(+-x) and sigmoid(+-x) all come from
#   one e = exp(-|x|), so any logit, +-1e4 included, is finite.
# * On probabilities each log is clamped at -100 and the gradient's denominator p (1 - p)
#   at 1e-12, as PyTorch does; a value outside [0, 1] is reported, not computed.
# * weight and pos_weight arrive as strided (n_rows, n_cols) views that broadcast to the
#   input (strides may be 0), so nothing of the input's size is allocated for them.
# * The loss on logits with weights that are absent, one value or one per entry along a
#   row runs in the vectorised loop of xent_simd.h (exp and log1p inline); the rest
#   (probabilities, focal, odd strides) element by element with libm.
#
# The work is split into blocks of BLOCK_ELEMS flat elements, fixed by the size alone;
# each block is summed serially and the blocks in order, so a total is bitwise the same
# for any thread count, and a 1-D input of a million elements is still split.

from cython.parallel cimport prange
from libc.math cimport exp, log, log1p, pow, fabs, fmax
from libc.stdlib cimport malloc, free

from _common cimport floating, BLOCK_ELEMS, effective_threads

cdef enum Loss:
    BCE_PROBS = 0
    BCE_LOGITS = 1
    FOCAL = 2

cdef struct Options:
    int loss
    double alpha            # focal: class balance, < 0 disables it
    double gamma            # focal: focusing exponent
    double grad_scale       # scalar upstream gradient (already / numel for "mean")

cdef struct BlockSums:
    double loss
    Py_ssize_t first_bad    # flat position of the first probability outside [0, 1], or -1


# --- one element -----------------------------------------------------------------------

cdef inline double bce_probs_elem(double p, double y, double* d) noexcept nogil:
    # PyTorch's clamps: log terms at -100, the gradient's denominator at 1e-12 (held
    # as a float there, so the same here: p = 1, y = 0 then gives PyTorch's gradient).
    cdef double log_p = fmax(log(p), -100.0), log_q = fmax(log1p(-p), -100.0)
    d[0] = (p - y) / fmax((1.0 - p) * p, <double>(<float>1e-12))
    return -(y * log_p + (1.0 - y) * log_q)


cdef inline double bce_logits_elem(double x, double y, double pw, double* d) noexcept nogil:
    cdef double e = exp(-fabs(x))
    cdef double l = log1p(e)
    cdef double inv = 1.0 / (1.0 + e)
    # sigmoid(x) and 1 - sigmoid(x), each without cancellation.
    cdef double s = inv if x >= 0 else e * inv
    cdef double s_neg = e * inv if x >= 0 else inv
    d[0] = (1.0 - y) * s - pw * y * s_neg
    return (1.0 - y) * (fmax(x, 0.0) + l) + pw * y * (fmax(-x, 0.0) + l)


cdef inline double focal_elem(double x, double y, double alpha, double gamma,
                              double* d) noexcept nogil:
    # torchvision: alpha_t (1 - p_t)^gamma bce(x, y), p_t = p y + (1 - p)(1 - y).
    cdef double e = exp(-fabs(x))
    cdef double l = log1p(e)
    cdef double inv = 1.0 / (1.0 + e)
    cdef double p = inv if x >= 0 else e * inv
    cdef double p_neg = e * inv if x >= 0 else inv          # 1 - p
    cdef double ce = (1.0 - y) * (fmax(x, 0.0) + l) + y * (fmax(-x, 0.0) + l)
    cdef double q = p * (1.0 - y) + p_neg * y               # 1 - p_t, no cancellation
    cdef double mod = pow(q, gamma) if gamma != 0 else 1.0
    cdef double a_t = 1.0, dq
    if alpha >= 0:
        a_t = alpha * y + (1.0 - alpha) * (1.0 - y)
    # d/dx [q^gamma ce] = gamma q^(gamma-1) dq/dx ce + q^gamma (p - y),
    # dq/dx = (1 - 2y) p (1 - p); the first term tends to 0 as q -> 0. p - y is taken
    # as p (1 - y) - (1 - p) y, which does not cancel for a confident correct label.
    dq = 0.0
    if gamma != 0 and q > 0:
        dq = gamma * (mod / q) * (1.0 - 2.0 * y) * p * p_neg * ce
    d[0] = a_t * (dq + mod * (p * (1.0 - y) - p_neg * y))
    return a_t * mod * ce


cdef extern from "xent_simd.h" nogil:
    double xf_bce_logits_f32(const float* x, const float* y, Py_ssize_t n,
                             const float* w, Py_ssize_t ws, const float* pw, Py_ssize_t pws,
                             const float* g, float gscale, float* loss, float* grad)
    double xf_bce_logits_f64(const double* x, const double* y, Py_ssize_t n,
                             const double* w, Py_ssize_t ws, const double* pw, Py_ssize_t pws,
                             const double* g, double gscale, double* loss, double* grad)


cdef inline double bce_logits_segment(
    const floating* x, const floating* y, Py_ssize_t n, const floating* w, Py_ssize_t ws,
    const floating* pw, Py_ssize_t pws, const floating* g, double gscale,
    floating* loss, floating* grad) noexcept nogil:
    if floating is float:
        return xf_bce_logits_f32(x, y, n, w, ws, pw, pws, g, <float>gscale, loss, grad)
    else:
        return xf_bce_logits_f64(x, y, n, w, ws, pw, pws, g, gscale, loss, grad)


# --- one block of flat elements --------------------------------------------------------

cdef void binary_block(
    const floating[:, ::1] x, const floating[:, ::1] y,         # IN  input, target
    const floating[:, :] w, const floating[:, :] pw,            # IN  broadcast views, or (0, 0)
    const floating[:, ::1] g_elems,                             # IN  per-element upstream grad, or (0, 0)
    floating[:, ::1] loss_out, floating[:, ::1] grad,           # OUT or (0, 0)
    const Options* o, Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    cdef Py_ssize_t n = x.shape[1], k = start, i, j, j_end
    cdef bint has_w = w.shape[0] > 0, has_pw = pw.shape[0] > 0
    cdef bint want_loss = loss_out.shape[0] > 0, want_grad = grad.shape[0] > 0
    cdef bint has_g = g_elems.shape[0] > 0
    cdef double v, d, xi, yi
    # strides of the broadcast views, in elements: 0 (one value) or 1 take the
    # vectorised path of xent_simd.h
    cdef Py_ssize_t ws = w.strides[1] // sizeof(floating) if has_w else 0
    cdef Py_ssize_t pws = pw.strides[1] // sizeof(floating) if has_pw else 0
    cdef bint vector_path = o.loss == BCE_LOGITS and ws in (0, 1) and pws in (0, 1)
    s.loss = 0.0
    s.first_bad = -1
    if vector_path and not has_w and not has_pw:
        # nothing varies by row: the block is one contiguous run
        s.loss = bce_logits_segment(
            &x[0, 0] + start, &y[0, 0] + start, stop - start, NULL, 0, NULL, 0,
            &g_elems[0, 0] + start if has_g else NULL, o.grad_scale,
            &loss_out[0, 0] + start if want_loss else NULL,
            &grad[0, 0] + start if want_grad else NULL)
        return
    while k < stop:
        # the part of row i that lies in this block
        i = k // n
        j = k - i * n
        j_end = min(n, j + (stop - k))
        k += j_end - j
        if vector_path:
            s.loss += bce_logits_segment(
                &x[i, j], &y[i, j], j_end - j,
                &w[i, j] if has_w else NULL, ws, &pw[i, j] if has_pw else NULL, pws,
                &g_elems[i, j] if has_g else NULL, o.grad_scale,
                &loss_out[i, j] if want_loss else NULL, &grad[i, j] if want_grad else NULL)
            continue
        while j < j_end:
            xi = x[i, j]
            yi = y[i, j]
            if o.loss == BCE_PROBS:
                if not (0.0 <= xi <= 1.0):
                    if s.first_bad < 0:
                        s.first_bad = i * n + j
                    v = 0.0
                    d = 0.0
                else:
                    v = bce_probs_elem(xi, yi, &d)
            elif o.loss == BCE_LOGITS:
                v = bce_logits_elem(xi, yi, pw[i, j] if has_pw else 1.0, &d)
            else:
                v = focal_elem(xi, yi, o.alpha, o.gamma, &d)
            if has_w:
                v = v * w[i, j]
                d = d * w[i, j]
            s.loss += v
            if want_loss:
                loss_out[i, j] = <floating>v
            if want_grad:
                grad[i, j] = <floating>(d * (o.grad_scale * g_elems[i, j] if has_g else o.grad_scale))
            j += 1


cdef inline bint same_shape(Py_ssize_t* shape, Py_ssize_t n_rows, Py_ssize_t n,
                            bint may_be_absent) noexcept:
    if may_be_absent and shape[0] == 0 and shape[1] == 0:
        return True
    return shape[0] == n_rows and shape[1] == n


def binary_loss(
    int loss,                                   # which Loss
    const floating[:, ::1] x,                   # IN  probabilities or logits
    const floating[:, ::1] y,                   # IN  targets in [0, 1]
    const floating[:, :] w,                     # IN  weight broadcast to x, or (0, 0)
    const floating[:, :] pw,                    # IN  pos_weight broadcast to x, or (0, 0)
    floating[:, ::1] loss_out,                  # OUT elementwise loss, or (0, 0)
    floating[:, ::1] grad,                      # OUT gradient, may be x itself, or (0, 0)
    const floating[:, ::1] g_elems,             # IN  per-element upstream gradient, or (0, 0)
    double grad_scale, double alpha, double gamma, int n_threads,
):
    """Return (sum of the elementwise losses, flat position of the first bad probability or -1)."""
    cdef Py_ssize_t n_rows = x.shape[0], n = x.shape[1], size = n_rows * n, b
    if not (same_shape(y.shape, n_rows, n, False) and same_shape(w.shape, n_rows, n, True)
            and same_shape(pw.shape, n_rows, n, True) and same_shape(loss_out.shape, n_rows, n, True)
            and same_shape(grad.shape, n_rows, n, True) and same_shape(g_elems.shape, n_rows, n, True)):
        raise ValueError("internal error: inconsistent array shapes passed to a kernel")
    if size == 0:
        return 0.0, -1
    cdef Py_ssize_t n_blocks = (size + BLOCK_ELEMS - 1) // BLOCK_ELEMS
    cdef int nt = effective_threads(n_threads, n_blocks, size)
    cdef Options o
    cdef BlockSums* sums = <BlockSums*>malloc(n_blocks * sizeof(BlockSums))
    cdef double total = 0.0
    cdef Py_ssize_t first_bad = -1
    if sums == NULL:
        raise MemoryError()
    o.loss = loss
    o.alpha = alpha
    o.gamma = gamma
    o.grad_scale = grad_scale
    with nogil:
        # One call site: a second, serial one made GCC compile the block loop ~25% slower.
        # (A one-thread region is safe in a forked child too: libgomp then starts no pool.)
        for b in prange(n_blocks, schedule="static", num_threads=nt):
            binary_block(x, y, w, pw, g_elems, loss_out, grad, &o,
                         b * BLOCK_ELEMS, min(b * BLOCK_ELEMS + BLOCK_ELEMS, size), &sums[b])
        for b in range(n_blocks):
            total += sums[b].loss
            if first_bad < 0:
                first_bad = sums[b].first_bad
    free(sums)
    return total, first_bad
