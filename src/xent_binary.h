/* The elementwise binary losses on logits: binary cross-entropy (one row segment) and
 * the sigmoid focal loss (one contiguous run).
 *
 * Part of xent_simd.h; needs xent_math.h's exp and log1p and xent_rows.h's prefetching.
 */
#include "xent_rows.h"

#ifndef XENT_BINARY_H
#define XENT_BINARY_H

/* ---- binary cross-entropy on logits, one row segment ---------------------------------
 * loss_j = w_j ((1 - y_j) softplus(x_j) + pw_j y_j softplus(-x_j)), written so that no
 * term cancels; grad_j = w_j ((1 - y_j) sigmoid(x_j) - pw_j y_j sigmoid(-x_j)) times the
 * upstream gradient (gscale, times g_j if g != NULL). w and pw are NULL (absent) or
 * strided by ws, pws in {0, 1} (a broadcast value or one per entry); loss and grad may be
 * NULL; grad may be x itself. Returns the sum of the losses (in double, by chunks).
 * Each chunk goes through three loops (the exps; 1 / (1 + e) and the log1p; the rest)
 * rather than one: one long chain of dependent operations per entry kept too few entries
 * in flight in the out-of-order window (1.6x faster on Zen 3). Same operations, but with
 * FMA the one loop let the compiler fuse the exp's last product into 1 + e; now e is
 * rounded first, which changes the last bit of 0.15% of float losses where e is near
 * 2^-24 (the gradients, and the baseline build, are bit for bit as before).
 */
#define XF_BCE_LOGITS(T, SUF, EXP, LOG1P)                                                 \
static inline double xf_bce_logits_##SUF(const T *x, const T *y, ptrdiff_t n,             \
        const T *w, ptrdiff_t ws, const T *pw, ptrdiff_t pws,                             \
        const T *g, T gscale, T *loss, T *grad)                                           \
{                                                                                         \
    /* The loop below has no branch: absent or broadcast arrays are read from local       \
     * chunks of constants, unwanted outputs go to a local sink. */                       \
    T w_fill[XF_CHUNK], pw_fill[XF_CHUNK], g_fill[XF_CHUNK];                              \
    T sink_loss[XF_CHUNK], sink_grad[XF_CHUNK];    /* apart: one sink for both stalls */  \
    T e_buf[XF_CHUNK], inv_buf[XF_CHUNK], l_buf[XF_CHUNK];                                \
    const T w0 = w ? w[0] : (T)1, pw0 = pw ? pw[0] : (T)1;                                \
    const int fill_w = !(w && ws == 1), fill_pw = !(pw && pws == 1);                      \
    for (ptrdiff_t j = 0; j < XF_CHUNK; j++) {                                            \
        if (fill_w)                                                                       \
            w_fill[j] = w0;                                                               \
        if (fill_pw)                                                                      \
            pw_fill[j] = pw0;                                                             \
        if (!g)                                                                           \
            g_fill[j] = (T)1;                                                             \
    }                                                                                     \
    double total = 0.0;                                                                   \
    for (ptrdiff_t j0 = 0; j0 < n; j0 += XF_CHUNK) {                                      \
        const ptrdiff_t len = j0 + XF_CHUNK < n ? XF_CHUNK : n - j0;                      \
        const T *xc = x + j0, *yc = y + j0;                                               \
        const T *wc = (w && ws == 1) ? w + j0 : w_fill;                                   \
        const T *pc = (pw && pws == 1) ? pw + j0 : pw_fill;                               \
        const T *gc = g ? g + j0 : g_fill;                                                \
        T *lc = loss ? loss + j0 : sink_loss;                                             \
        T *dc = grad ? grad + j0 : sink_grad;                                             \
        xf_prefetch_ahead(xc, len * (ptrdiff_t)sizeof(T));                                \
        xf_prefetch_ahead(yc, len * (ptrdiff_t)sizeof(T));                                \
        T acc = 0;                                                                        \
        XF_SIMD                                                                           \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            T xj = xc[j];                                                                 \
            e_buf[j] = EXP(xj < 0 ? xj : -xj);                                            \
        }                                                                                 \
        XF_SIMD                                                                           \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            T e = e_buf[j];                                                               \
            T w1 = (T)1 + e;                                                              \
            T inv = (T)1 / w1;                                                            \
            inv_buf[j] = inv;                                                             \
            l_buf[j] = LOG1P(e, w1, inv);                                                 \
        }                                                                                 \
        XF_SIMD_SUM(acc)                                                                  \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            T xj = xc[j], yj = yc[j], wj = wc[j], pj = pc[j];                             \
            T e = e_buf[j], inv = inv_buf[j], l = l_buf[j];                               \
            T pos = xj > 0 ? xj : (T)0, neg = xj < 0 ? -xj : (T)0;                        \
            T v = wj * (((T)1 - yj) * (pos + l) + pj * yj * (neg + l));                   \
            T s = xj >= 0 ? inv : e * inv;              /* sigmoid(x)  */                 \
            T s_neg = xj >= 0 ? e * inv : inv;          /* sigmoid(-x) */                 \
            acc += v;                                                                     \
            lc[j] = v;                                                                    \
            dc[j] = wj * (((T)1 - yj) * s - pj * yj * s_neg) * (gscale * gc[j]);          \
        }                                                                                 \
        total += (double)acc;                                                             \
    }                                                                                     \
    return total;                                                                         \
}

/* ---- sigmoid focal loss on logits, one contiguous run -----------------------------------
 * torchvision's loss a_t q^G ce with ce the binary cross-entropy on logits (as in
 * xf_bce_logits), q = 1 - p_t = p (1 - y) + (1 - p) y, a_t = alpha y + (1 - alpha)(1 - y)
 * (1 when alpha < 0), for an integer focusing exponent G = gamma in 0..XF_FOCAL_MAX_GAMMA,
 * whose powers are products: libm's pow made the element-by-element loop 40 times slower
 * than the cross-entropy's. The gradient is a_t (G q^(G-1) dq/dx ce + q^G (p - y)) with
 * dq/dx = (1 - 2y) p (1 - p), and p - y taken as p (1 - y) - (1 - p) y (no cancellation
 * for a confident correct label). Three loops per chunk, as xf_bce_logits. The arithmetic
 * is in double for float input too: near a zero of a soft label's gradient its two terms
 * cancel, and float arithmetic left 1e-3 relative errors there (double: the rounding of
 * the result alone, as the element-by-element code gave), at twice the time of float.
 * g: per-entry upstream gradients or NULL; loss and grad may be NULL; grad may be x
 * itself. Returns the sum of the losses. */
#define XF_FOCAL_MAX_GAMMA 4
#define XF_FOCAL_LOOP(T, G)                                                               \
        XF_SIMD_SUM(acc)                                                                  \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            double xj = (double)xc[j], yj = (double)yc[j];                                \
            double e = e_buf[j], inv = inv_buf[j], l = l_buf[j];                          \
            double pos = xj > 0 ? xj : 0.0, neg = xj < 0 ? -xj : 0.0;                     \
            double ce = (1.0 - yj) * (pos + l) + yj * (neg + l);                          \
            double p = xj >= 0 ? inv : e * inv, pn = xj >= 0 ? e * inv : inv;             \
            double q = p * (1.0 - yj) + pn * yj;                                          \
            double qg1 = (G) <= 1 ? 1.0 : (G) == 2 ? q : (G) == 3 ? q * q : q * q * q;    \
            double mod = (G) == 0 ? 1.0 : qg1 * q;                                        \
            double dq = (G) == 0 ? 0.0 : (G) * qg1 * (1.0 - 2.0 * yj) * p * pn * ce;      \
            double at = balance ? a * yj + (1.0 - a) * (1.0 - yj) : 1.0;                  \
            double v = at * mod * ce;                                                     \
            acc += v;                                                                     \
            lc[j] = (T)v;                                                                 \
            dc[j] = (T)(at * (dq + mod * (p * (1.0 - yj) - pn * yj)) * (gscale * (double)gc[j])); \
        }

/* Without contraction into FMAs: GCC contracts the vectorised body and the scalar
 * remainder differently, so an element's gradient changed in its last bit with its
 * position in the array (and a row's results with the rows before it). */
#if defined(__GNUC__) && !defined(__clang__)
#define XF_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define XF_NO_CONTRACT
#endif
#define XF_FOCAL_LOGITS(T, SUF)                                                           \
static XF_NO_CONTRACT double xf_focal_logits_##SUF(const T *x, const T *y, ptrdiff_t n, double a, \
                                           int gamma, const T *g, double gscale, T *loss, \
                                           T *grad)                                       \
{                                                                                         \
    T g_fill[XF_CHUNK], sink_loss[XF_CHUNK], sink_grad[XF_CHUNK];                         \
    double e_buf[XF_CHUNK], inv_buf[XF_CHUNK], l_buf[XF_CHUNK];                           \
    const int balance = a >= 0;                                                           \
    for (ptrdiff_t j = 0; j < XF_CHUNK; j++)                                              \
        g_fill[j] = (T)1;                                                                 \
    double total = 0.0;                                                                   \
    for (ptrdiff_t j0 = 0; j0 < n; j0 += XF_CHUNK) {                                      \
        const ptrdiff_t len = j0 + XF_CHUNK < n ? XF_CHUNK : n - j0;                      \
        const T *xc = x + j0, *yc = y + j0, *gc = g ? g + j0 : g_fill;                    \
        T *lc = loss ? loss + j0 : sink_loss;                                             \
        T *dc = grad ? grad + j0 : sink_grad;                                             \
        xf_prefetch_ahead(xc, len * (ptrdiff_t)sizeof(T));                                \
        xf_prefetch_ahead(yc, len * (ptrdiff_t)sizeof(T));                                \
        double acc = 0.0;                                                                 \
        XF_SIMD                                                                           \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            double xj = (double)xc[j];                                                    \
            e_buf[j] = xf_exp(xj < 0 ? xj : -xj);                                         \
        }                                                                                 \
        XF_SIMD                                                                           \
        for (ptrdiff_t j = 0; j < len; j++) {                                             \
            double e = e_buf[j], w1 = 1.0 + e, inv = 1.0 / w1;                            \
            inv_buf[j] = inv;                                                             \
            l_buf[j] = xf_log1p_unit_inv_f64(e, w1, inv);                                 \
        }                                                                                 \
        switch (gamma) {        /* one loop per exponent: its powers unrolled */          \
        case 0: XF_FOCAL_LOOP(T, 0) break;                                                \
        case 1: XF_FOCAL_LOOP(T, 1) break;                                                \
        case 2: XF_FOCAL_LOOP(T, 2) break;                                                \
        case 3: XF_FOCAL_LOOP(T, 3) break;                                                \
        default: XF_FOCAL_LOOP(T, 4) break;                                               \
        }                                                                                 \
        total += acc;                                                                     \
    }                                                                                     \
    return total;                                                                         \
}
#endif  /* XENT_BINARY_H */
