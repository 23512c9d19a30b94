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
#   row, and the focal loss with an integer gamma up to 4, run in the vectorised loops of
#   xent_simd.h (exp and log1p inline); the rest (probabilities, other gammas, odd
#   strides) element by element with libm.
#
# The work is split into blocks of BLOCK_ELEMS flat elements, fixed by the size alone;
# each block is summed serially and the blocks in order, so a total is bitwise the same
# for any thread count, and a 1-D input of a million elements is still split.

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp, log, log1p, pow, fabs, fmax
from libc.stdlib cimport malloc, free

from _common cimport (
    floating, BLOCK_ELEMS, effective_threads, array_data, optional_data, strided_data,
    float_type,
)

cnp.import_array()

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
    double xf_focal_logits_f32(const float* x, const float* y, Py_ssize_t n, double alpha,
                               int gamma, const float* g, double gscale, float* loss,
                               float* grad)
    double xf_focal_logits_f64(const double* x, const double* y, Py_ssize_t n, double alpha,
                               int gamma, const double* g, double gscale, double* loss,
                               double* grad)
    enum:
        XF_FOCAL_MAX_GAMMA


cdef inline double bce_logits_segment(
    const floating* x, const floating* y, Py_ssize_t n, const floating* w, Py_ssize_t ws,
    const floating* pw, Py_ssize_t pws, const floating* g, double gscale,
    floating* loss, floating* grad) noexcept nogil:
    if floating is float:
        return xf_bce_logits_f32(x, y, n, w, ws, pw, pws, g, <float>gscale, loss, grad)
    else:
        return xf_bce_logits_f64(x, y, n, w, ws, pw, pws, g, gscale, loss, grad)


cdef inline double focal_logits_run(
    const floating* x, const floating* y, Py_ssize_t n, double alpha, int gamma,
    const floating* g, double gscale, floating* loss, floating* grad) noexcept nogil:
    if floating is float:
        return xf_focal_logits_f32(x, y, n, alpha, gamma, g, gscale, loss, grad)
    else:
        return xf_focal_logits_f64(x, y, n, alpha, gamma, g, gscale, loss, grad)


# --- one block of flat elements --------------------------------------------------------

cdef void binary_block(
    const floating* x, const floating* y,                       # IN  input, target
    const floating* w, Py_ssize_t w0, Py_ssize_t w1,            # IN  weight view and its
    const floating* pw, Py_ssize_t pw0, Py_ssize_t pw1,         #     strides, pos_weight's, or NULL
    const floating* g_elems,                                    # IN  per-element upstream grad, or NULL
    floating* loss_out, floating* grad,                         # OUT or NULL
    Py_ssize_t n, const Options* o, Py_ssize_t start, Py_ssize_t stop, BlockSums* s,
) noexcept nogil:
    # x, y, g_elems, loss_out and grad are C-contiguous (n_rows, n); w and pw are strided
    # views broadcast to that shape (strides in elements).
    cdef Py_ssize_t k = start, i, j, j_end, e
    cdef bint has_w = w != NULL, has_pw = pw != NULL
    cdef double v, d, xi, yi
    # A row's weights with stride 0 (one value) or 1 take the vectorised path of
    # xent_simd.h.
    cdef bint vector_path = o.loss == BCE_LOGITS and w1 in (0, 1) and pw1 in (0, 1)
    s.loss = 0.0
    s.first_bad = -1
    if o.loss == FOCAL and 0 <= o.gamma <= XF_FOCAL_MAX_GAMMA and o.gamma == <int>o.gamma \
            and not has_w:
        # an integer gamma (2 is torchvision's default): powers by products, vectorised
        s.loss = focal_logits_run(
            x + start, y + start, stop - start, o.alpha, <int>o.gamma,
            g_elems + start if g_elems != NULL else NULL, o.grad_scale,
            loss_out + start if loss_out != NULL else NULL,
            grad + start if grad != NULL else NULL)
        return
    if vector_path and not has_w and not has_pw:
        # nothing varies by row: the block is one contiguous run
        s.loss = bce_logits_segment(
            x + start, y + start, stop - start, NULL, 0, NULL, 0,
            g_elems + start if g_elems != NULL else NULL, o.grad_scale,
            loss_out + start if loss_out != NULL else NULL,
            grad + start if grad != NULL else NULL)
        return
    while k < stop:
        # the part of row i that lies in this block
        i = k // n
        j = k - i * n
        j_end = min(n, j + (stop - k))
        if vector_path:
            s.loss += bce_logits_segment(
                x + k, y + k, j_end - j,
                w + i * w0 + j * w1 if has_w else NULL, w1,
                pw + i * pw0 + j * pw1 if has_pw else NULL, pw1,
                g_elems + k if g_elems != NULL else NULL, o.grad_scale,
                loss_out + k if loss_out != NULL else NULL, grad + k if grad != NULL else NULL)
            k += j_end - j
            continue
        while j < j_end:
            e = i * n + j
            xi = x[e]
            yi = y[e]
            if o.loss == BCE_PROBS:
                if not (0.0 <= xi <= 1.0):
                    if s.first_bad < 0:
                        s.first_bad = e
                    v = 0.0
                    d = 0.0
                else:
                    v = bce_probs_elem(xi, yi, &d)
            elif o.loss == BCE_LOGITS:
                v = bce_logits_elem(xi, yi, pw[i * pw0 + j * pw1] if has_pw else 1.0, &d)
            else:
                v = focal_elem(xi, yi, o.alpha, o.gamma, &d)
            if has_w:
                v = v * w[i * w0 + j * w1]
                d = d * w[i * w0 + j * w1]
            s.loss += v
            if loss_out != NULL:
                loss_out[e] = <floating>v
            if grad != NULL:
                grad[e] = <floating>(d * (o.grad_scale * g_elems[e] if g_elems != NULL
                                          else o.grad_scale))
            j += 1
        k = i * n + j_end


def binary_loss(
    int loss,               # which Loss
    object x,               # IN  (n_rows, n_cols) probabilities or logits, float32 or float64
    object y,               # IN  targets in [0, 1]
    object w,               # IN  weight broadcast to x (any strides), or None
    object pw,              # IN  pos_weight broadcast to x (any strides), or None
    object loss_out,        # OUT elementwise loss, or None
    object grad,            # OUT gradient, may be x itself, or None
    object g_elems,         # IN  per-element upstream gradient, or None
    double grad_scale, double alpha, double gamma, int n_threads,
):
    """Return (sum of the elementwise losses, flat position of the first bad probability or
    -1). Every array has x's shape and dtype; all but w and pw are C-contiguous."""
    # The arrays are checked in C (cheaper than typed memoryviews for small calls).
    cdef int ft = float_type(x, 2)
    cdef Py_ssize_t n_rows = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    cdef Py_ssize_t w0, w1, pw0, pw1
    cdef char* xp = array_data(x, ft, n_rows, n, False)
    cdef char* yp = array_data(y, ft, n_rows, n, False)
    cdef char* wp = strided_data(w, ft, n_rows, n, &w0, &w1)
    cdef char* pwp = strided_data(pw, ft, n_rows, n, &pw0, &pw1)
    cdef char* lp = optional_data(loss_out, ft, n_rows, n, True)
    cdef char* gp = optional_data(grad, ft, n_rows, n, True)
    cdef char* gep = optional_data(g_elems, ft, n_rows, n, False)
    if loss not in (BCE_PROBS, BCE_LOGITS, FOCAL):
        raise ValueError(f"internal error: loss kind {loss} passed to a kernel")
    if ft == cnp.NPY_FLOAT32:
        return run(loss, <const float*>xp, <const float*>yp, <const float*>wp, w0, w1,
                   <const float*>pwp, pw0, pw1, <const float*>gep, <float*>lp, <float*>gp,
                   n_rows, n, grad_scale, alpha, gamma, n_threads)
    return run(loss, <const double*>xp, <const double*>yp, <const double*>wp, w0, w1,
               <const double*>pwp, pw0, pw1, <const double*>gep, <double*>lp, <double*>gp,
               n_rows, n, grad_scale, alpha, gamma, n_threads)


cdef object run(
    int loss, const floating* x, const floating* y, const floating* w, Py_ssize_t w0,
    Py_ssize_t w1, const floating* pw, Py_ssize_t pw0, Py_ssize_t pw1,
    const floating* g_elems, floating* loss_out, floating* grad, Py_ssize_t n_rows,
    Py_ssize_t n, double grad_scale, double alpha, double gamma, int n_threads,
):
    cdef Py_ssize_t size = n_rows * n, b
    if size == 0:
        return 0.0, -1
    cdef Py_ssize_t n_blocks = (size + BLOCK_ELEMS - 1) // BLOCK_ELEMS
    cdef int nt = effective_threads(n_threads, n_blocks, size)
    cdef Options o
    cdef BlockSums few_sums[16]         # small calls need no heap allocation
    cdef BlockSums* sums = &few_sums[0]
    cdef double total = 0.0
    cdef Py_ssize_t first_bad = -1
    if n_blocks > 16:
        sums = <BlockSums*>malloc(n_blocks * sizeof(BlockSums))
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
            binary_block(x, y, w, w0, w1, pw, pw0, pw1, g_elems, loss_out, grad, n, &o,
                         b * BLOCK_ELEMS, min(b * BLOCK_ELEMS + BLOCK_ELEMS, size), &sums[b])
        for b in range(n_blocks):
            total += sums[b].loss
            if first_bad < 0:
                first_bad = sums[b].first_bad
    if sums != &few_sums[0]:
        free(sums)
    return total, first_bad
