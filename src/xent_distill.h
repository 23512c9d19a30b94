/* The per-entry arithmetic of the distillation divergences (src/_distill_kernels.pyx):
 * loops over one block of a row whose exps are already stored, in double, written for
 * `omp simd` (if-converted selects, no calls but the inline exp and log1p).
 *
 * Notation: q = p_s (student), p = p_t (teacher) of one class; lq, lp their logs.
 * Each divergence is summed as Bregman terms x phi(l), l = log(x / y), x, y two
 * distributions over the classes and phi(l) = l - 1 + exp(-l) >= 0:
 *     KL(x || y) = sum x log(x / y) = sum [x log(x / y) - x + y]     (sum x = sum y = 1)
 * so every term is >= 0 and a row whose divergence is 1e-12 keeps its digits; the
 * textbook sum of x log x - x log y would cancel to ~1e-16 absolute. An error e in l
 * that is the same for every class (the rounding of the two log-sum-exps) changes the
 * sum only by O(e^2): sum x (1 - exp(-l)) = sum x - sum y = 0.
 */
#ifndef XENT_DISTILL_H
#define XENT_DISTILL_H

#include "xent_simd.h"

/* phi(l) / l^2 = sum_{k>=0} (-l)^k / (k + 2)! for |l| < 1, highest degree first: degree
 * 17 leaves a relative error below 1e-17 at |l| = 1. */
static const double XF_PHI_C[18] = {
    -8.2206352466243295e-18, 1.5619206968586225e-16, -2.8114572543455206e-15,
    4.7794773323873853e-14, -7.6471637318198164e-13, 1.1470745597729725e-11,
    -1.6059043836821613e-10, 2.08767569878681e-09, -2.505210838544172e-08,
    2.7557319223985888e-07, -2.7557319223985893e-06, 2.4801587301587302e-05,
    -0.00019841269841269841, 0.0013888888888888889, -0.0083333333333333332,
    0.041666666666666664, -0.16666666666666666, 0.5};

/* x phi(l) for l = log(x / y): the Bregman term of KL(x || y) for one class, >= 0.
 * Near 0 by phi's series (no cancellation); else from x and y themselves, in a form
 * whose two parts do not cancel: x (l - 1 + exp(-l)) for l >= 1, y (1 - exp(l) (1 - l))
 * for l <= -1 (1 - 2/e at worst). x = 0 (l = -inf) gives y, y = 0 (l = +inf) gives +inf
 * when x > 0, and x = y = 0 (l = nan: two masked classes) gives 0. */
static XF_ALWAYS_INLINE double xf_bregman(double x, double y, double l)
{
    double p = XF_PHI_C[0];
    XF_PRAGMA(GCC unroll 18)     /* unrolled before vectorisation */
    for (int k = 1; k < 18; k++)
        p = p * l + XF_PHI_C[k];
    double near = x * (l * l * p);
    double a = l >= 0 ? -l : (l < 0 ? l : 0.0);          /* -|l|, 0 for nan */
    double e = xf_exp(a);
    double pos = x * ((l - 1.0) + e);
    double neg = l == -INFINITY ? y : y * (1.0 - e * (1.0 - l));
    return (l < 1.0 && l > -1.0) ? near : (l >= 1.0 ? pos : (l <= -1.0 ? neg : 0.0));
}

/* log(exp(u) + exp(v)) for u, v < +inf; -inf when both are -inf. */
static XF_ALWAYS_INLINE double xf_logaddexp(double u, double v)
{
    double m = u > v ? u : v;
    double gap = u > v ? v - u : u - v;                   /* -|u - v|, -inf or nan */
    gap = gap <= 0 ? gap : -INFINITY;
    return m == -INFINITY ? m : m + xf_log1p_f64(xf_exp(gap));
}

#define XF_DISTILL_BLOCKS(T, SUF)                                                         \
/* Forward KL(p || q) over one block: returns the sum of its terms; grad[j] = g (q - p)   \
 * if grad is not NULL (it may alias a: a[j] is read before grad[j] is written).          \
 * es, et: stored exps, times fs, ft the probabilities; dl = lse_t - lse_s. */            \
static inline double xf_kl_forward_##SUF(const T *a, const T *b, const T *es,            \
                                         const T *et, ptrdiff_t n, double fs, double ft,  \
                                         double dl, double g, T *grad)                    \
{                                                                                         \
    double acc = 0.0;                                                                     \
    if (grad) {                                                                           \
        XF_SIMD_SUM(acc)                                                                  \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            double q = (double)es[j] * fs, p = (double)et[j] * ft;                        \
            double l = ((double)b[j] - (double)a[j]) - dl;      /* log p - log q */       \
            acc += xf_bregman(p, q, l);                                                   \
            grad[j] = (T)(g * (q - p));                                                   \
        }                                                                                 \
    } else {                                                                              \
        XF_SIMD_SUM(acc)                                                                  \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            double q = (double)es[j] * fs, p = (double)et[j] * ft;                        \
            acc += xf_bregman(p, q, ((double)b[j] - (double)a[j]) - dl);                  \
        }                                                                                 \
    }                                                                                     \
    return acc;                                                                           \
}                                                                                         \
                                                                                          \
/* Reverse KL(q || p) (jsd = 0) or the generalized JSD (jsd = 1) over one block, m = beta \
 * p + (1 - beta) q (m = p for reverse KL): returns the sum of its terms, which are       \
 * q phi(log q/p), or beta [p phi(log p/m)] + (1 - beta) [q phi(log q/m)]; stores         \
 * log(q/m) in et (for the gradient sweep) and adds sum q log(q/m) to *s. dl = lse_t -    \
 * lse_s; lse = m + l1 (max and log1p of the sums) kept apart, so that a logit less its   \
 * max is exact before l1 is taken off; lb = log(beta), l1b = log(1 - beta). */          \
static XF_ALWAYS_INLINE double xf_qlog_terms_##SUF(const T *a, const T *b, const T *es,   \
                                                   T *et, ptrdiff_t n, double fs,         \
                                                   double ft, double dl, double ms,       \
                                                   double l1s, double mt, double l1t,     \
                                                   double beta, double lb, double l1b,    \
                                                   double *s, const int jsd)              \
{                                                                                         \
    double acc = 0.0, qs = 0.0;                                                           \
    XF_SIMD_SUM(acc, qs)                                                                  \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        double q = (double)es[j] * fs, p = (double)et[j] * ft, l;                         \
        if (jsd) {                                                                        \
            double lq = ((double)a[j] - ms) - l1s, lp = ((double)b[j] - mt) - l1t;        \
            double lm = xf_logaddexp(lp + lb, lq + l1b);                                  \
            double m = beta * p + (1.0 - beta) * q;                                       \
            double lpm = lp - lm;                                                         \
            l = lq - lm;                                                                  \
            acc += beta * xf_bregman(p, m, lpm) + (1.0 - beta) * xf_bregman(q, m, l);     \
        } else {                                                                          \
            l = dl - ((double)b[j] - (double)a[j]);         /* log q - log p */           \
            acc += xf_bregman(q, p, l);                                                   \
        }                                                                                 \
        et[j] = (T)l;                                                                     \
        qs += q == 0 ? 0.0 : q * l;                                                       \
    }                                                                                     \
    *s += qs;                                                                             \
    return acc;                                                                           \
}                                                                                         \
                                                                                          \
static inline double xf_kl_reverse_##SUF(const T *a, const T *b, const T *es, T *et,     \
                                         ptrdiff_t n, double fs, double ft, double dl,    \
                                         double *s)                                       \
{                                                                                         \
    return xf_qlog_terms_##SUF(a, b, es, et, n, fs, ft, dl, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, \
                               0.0, s, 0);                                                \
}                                                                                         \
                                                                                          \
static inline double xf_jsd_##SUF(const T *a, const T *b, const T *es, T *et,            \
                                  ptrdiff_t n, double fs, double ft, double dl,           \
                                  double ms, double l1s, double mt, double l1t,           \
                                  double beta, double lb, double l1b, double *s)          \
{                                                                                         \
    return xf_qlog_terms_##SUF(a, b, es, et, n, fs, ft, dl, ms, l1s, mt, l1t, beta, lb,   \
                               l1b, s, 1);                                                \
}                                                                                         \
                                                                                          \
/* The gradient of reverse KL and JSD: grad[j] = g q (l_j - s), l_j = log(q_j / m_j)     \
 * as stored in et, s = sum_k q_k l_k; 0 where q = 0. */                                 \
static inline void xf_distill_grad_##SUF(const T *es, const T *et, ptrdiff_t n,          \
                                         double fs, double s, double g, T *grad)          \
{                                                                                         \
    XF_SIMD                                                                               \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        double q = (double)es[j] * fs;                                                    \
        grad[j] = (T)(q == 0 ? 0.0 : g * q * ((double)et[j] - s));                        \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* dst[j] = src[j] / t, rounded to T as PyTorch's s / T is. */                            \
static inline void xf_div_row_##SUF(const T *src, ptrdiff_t n, T t, T *dst)              \
{                                                                                         \
    XF_SIMD                                                                               \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        dst[j] = src[j] / t;                                                              \
}

XF_DISTILL_BLOCKS(double, f64)
/* float rows: the float loops below; only the row division is shared */
static inline void xf_div_row_f32(const float *src, ptrdiff_t n, float t, float *dst)
{
    XF_SIMD
    for (ptrdiff_t j = 0; j < n; j++)
        dst[j] = src[j] / t;
}

/* ---- float32 rows in float arithmetic ------------------------------------------------
 * The double loops above take 8 lanes and a degree-17 series plus an exp per entry; float
 * rows need neither. l = log(p/q) still comes from the logits, within about an ulp
 * (xf_diff3_f32: b - a and its rounding error, in float), and everything after it is
 * float, 16 lanes on AVX-512: each term x phi(l) >= 0 keeps a relative error of a few
 * float ulps, hence so does their sum (in float lanes over 256-entry chunks, whose sums
 * are added in double).
 * What float cannot give is the log-sum-exps to better than ~1e-8 (float-lane exp sums):
 * an offset e common to every l. Its effect is removed exactly afterwards, from sums
 * taken alongside (xf_kl_from_sums, xf_jsd_from_sums), instead of paying for
 * double-precision exp sums. */

/* phi(l) / l^2 = sum_k (-l)^k / (k + 2)!, |l| < 1, highest degree first: degree 8 leaves
 * 7e-8 relative at |l| = 1 (under an ulp). */
static XF_ALWAYS_INLINE float xf_phi_over_l2_f32(float l)
{
    float p = 2.7557319e-07f;
    p = p * l - 2.7557319e-06f;
    p = p * l + 2.4801587e-05f;
    p = p * l - 1.9841270e-04f;
    p = p * l + 1.3888889e-03f;
    p = p * l - 8.3333333e-03f;
    p = p * l + 4.1666667e-02f;
    p = p * l - 1.6666667e-01f;
    return p * l + 0.5f;
}

/* x phi(l), l = log(x / y), as xf_bregman: series for |l| < 1, else x (l - 1) + y (whose
 * parts do not cancel there); x = 0 gives y (also for l = nan: two masked classes). */
static XF_ALWAYS_INLINE float xf_bregman_f32(float x, float y, float l)
{
    float near = x * (l * l * xf_phi_over_l2_f32(l));
    float far = x * (l - 1.0f) + y;
    float t = fabsf(l) < 1.0f ? near : far;   /* one compare: GCC would not vectorise && */
    return x == 0.0f ? y : t;
}

/* KL from B = sum x phi(l) and A = sum x l over a row whose l all carry one unknown
 * offset e. With y_j = x_j exp(-l_j) the implied other distribution, sum y = 1 + z with
 * z = B - A, and sum x phi(l + e) is least at the e that normalises y, where it is the
 * divergence: B + log1p(z) - z (sum x = 1 to float accuracy). */
static inline double xf_kl_from_sums(double B, double A)
{
    if (!(B < INFINITY))
        return B;
    double z = B - A;
    if (!(z > -0.5))
        return B;
    double c = fabs(z) < 1e-3 ? z * z * (-0.5 + z * (1.0 / 3.0 - z * 0.25)) : log1p(z) - z;
    double r = B + c;
    return r > 0.0 ? r : 0.0;
}

/* Generalized JSD from B = its sum of Bregman terms, Ay = sum Y log(Y/m) and G = sum of
 * (implied Y) - X = S - 1 (the offset's trace, as in xf_kl_from_sums; X, Y as in
 * xf_jsd_fast_f32, gy the weight of Y in m). Rescaling Y by c = 1 / (1 + G) changes the
 * divergence by gy Ay (c - 1) + beta (1 - beta) sum(p q / m) (c - 1)^2 / 2 +
 * O((c - 1)^3), sum(p q / m) = 1 to first order. */
static inline double xf_jsd_from_sums(double B, double Ay, double G, double beta)
{
    if (!(B < INFINITY) || !(G > -0.5))
        return B;
    double gy = beta < 0.5 ? beta : 1.0 - beta;
    double d = -G / (1.0 + G);
    double r = B + gy * Ay * d + 0.5 * beta * (1.0 - beta) * d * d;
    return r > 0.0 ? r : 0.0;
}

#define XF_F32_CHUNK 256        /* entries: the chunks of the split loops, in L1 */

/* l = x - y - (dh + dt) for float logits x, y (-inf allowed) and dh + dt a double split
 * in two floats (|dt| <= ulp(dh) / 2), within about an ulp of l: x - y's rounding error
 * is kept exactly (Knuth's two-sum), and where subtracting dh is inexact, l is large
 * enough for that rounding not to matter. Half the operations of the same in double
 * (each conversion takes two), and l's loops in the sweeps ran 5-7% faster. */
static XF_ALWAYS_INLINE float xf_diff3_f32(float x, float y, float dh, float dt)
{
    float s = x - y;
    float xs = s + y, ys = s - xs;                            /* the parts of s */
    float err = (x - xs) - (y + ys);                          /* x - y - s, exactly */
    err = err == err ? err : 0.0f;                /* nan for s = +-inf, then l = s */
    return (s - dh) + (err - dt);
}

/* KL over one block of a float row: forward (reverse = 0), KL(p || q) with l = log p/q,
 * or reverse (1), KL(q || p) with l = log q/p. Adds sum w phi(l) to sums[0] and sum w l
 * to sums[1], w being p forward and q reverse. grad (if not NULL; may alias a) gets
 * g (q - p) forward, and reverse the first part of the gradient, g q l (see
 * xf_distill_grad_fast_f32). l first (xf_diff3_f32), in a loop of its own over chunks in
 * L1 (as xf_jsd_fast_f32: shorter chains). */
static XF_ALWAYS_INLINE void xf_kl_fast_f32(int reverse, const float *a, const float *b,
                                            const float *es, const float *et, ptrdiff_t n,
                                            float fs, float ft, double dl, float g,
                                            float *grad, double *sums)
{
    const float dh = (float)dl, dt = (float)(dl - (double)dh);
    float l_c[XF_F32_CHUNK];
    double bs = 0.0;
    float as = 0.0f;
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_F32_CHUNK) {
        const ptrdiff_t len = n - c0 < XF_F32_CHUNK ? n - c0 : XF_F32_CHUNK;
        const float *ac = a + c0, *bc = b + c0, *esc = es + c0, *etc = et + c0;
        XF_SIMD
        for (ptrdiff_t j = 0; j < len; j++)
            l_c[j] = reverse ? xf_diff3_f32(ac[j], bc[j], -dh, -dt)
                             : xf_diff3_f32(bc[j], ac[j], dh, dt);
        float *gc = grad ? grad + c0 : l_c;        /* no gradient: l_c is a free sink */
        float bc_sum = 0.0f;     /* float lanes over one chunk (16 terms each on AVX-512) */
        XF_SIMD_SUM(bc_sum, as)
        for (ptrdiff_t j = 0; j < len; j++) {
            float q = esc[j] * fs, p = etc[j] * ft, l = l_c[j];
            float w = reverse ? q : p, v = reverse ? p : q;
            float wl = w == 0.0f ? 0.0f : w * l;
            bc_sum += xf_bregman_f32(w, v, l);
            as += wl;
            gc[j] = reverse ? g * wl : g * (q - p);
        }
        bs += (double)bc_sum;
    }
    sums[0] += bs;
    sums[1] += (double)as;
}

static inline void xf_kl_forward_fast_f32(const float *a, const float *b, const float *es,
                                          const float *et, ptrdiff_t n, float fs, float ft,
                                          double dl, float g, float *grad, double *sums)
{
    xf_kl_fast_f32(0, a, b, es, et, n, fs, ft, dl, g, grad, sums);
}

static inline void xf_kl_reverse_fast_f32(const float *a, const float *b, const float *es,
                                          const float *et, ptrdiff_t n, float fs, float ft,
                                          double dl, float g, float *grad, double *sums)
{
    xf_kl_fast_f32(1, a, b, es, et, n, fs, ft, dl, g, grad, sums);
}

/* expm1(z) (s = 1) or exp(z) (s = 0) for float z <= 80: 2^n (1 + e) - s, e = expm1(r) by
 * xf_expf's polynomial in the form r + r^2 q(r), which keeps a small z's relative
 * accuracy; 2^n e + (2^n - 1) does not cancel for n != 0 (|e| < 0.42). Below -87 the
 * result is clamped at exp(-87) - s, where 2^n is still normal: expm1 is -1 there to
 * float precision, and exp only feeds g + (1 - g) exp(z) in xf_jsd_f32_at, where it is
 * below g's rounding (or g < 1e-30, whose terms vanish in float anyway). */
static XF_ALWAYS_INLINE float xf_expm1_or_exp_f32(float z, float s)
{
    const float shift = 12582912.0f;                      /* 1.5 * 2^23: rounds to int */
    z = z < -87.0f ? -87.0f : z;
    float t = z * 1.44269504088896341f + shift;
    float n = t - shift;
    float r = z - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float q = 1.38146046e-3f;
    q = q * r + 8.36871099e-3f;
    q = q * r + 4.16683890e-2f;
    q = q * r + 1.66665211e-1f;
    q = q * r + 4.99999940e-1f;
    float e = (q * r) * r + r;
    float p2 = xf_f32_from_bits((xf_bits_f32(t) - xf_bits_f32(shift) + 127) * (1 << 23));
    return p2 * e + (p2 - s);
}

/* log(w) for float w > 0, given u = w - 1 where w is near 1: w = 2^k f, f in
 * [sqrt(1/2), sqrt(2)), and log f from f - 1, or from u itself when k = 0 (w - 1 would
 * carry w's rounding: a small u keeps its relative accuracy this way). */
static XF_ALWAYS_INLINE float xf_log_near1_f32(float w, float u)
{
    int32_t k = (xf_bits_f32(w) - 0x3F3504F3) >> 23;          /* 0x3F3504F3: sqrt(1/2) */
    float f = xf_f32_from_bits(xf_bits_f32(w) - k * (1 << 23));
    return xf_log1p_reduced_f32(k == 0 ? u : f - 1.0f, (float)k);
}

/* Generalized JSD over one block of a float row, m = beta p + (1 - beta) q. X is the
 * distribution of weight 1 - g >= 1/2 in m (q if beta < 1/2, else p), Y the other, lam =
 * log(Y / X), from the logits (xf_diff3_f32). One exp and one log per entry give both
 * logs of the mixture without cancellation: for lam <= lim, log(X / m) = -log1p(g
 * expm1(lam)) and log(Y / m) = that + lam; above lim = 1 - log g, where log(Y / m) nears
 * log(1 / g) and that sum would lose lam / log(1 / g) of its digits, log(Y / m) = -log(g
 * + (1 - g) exp(-lam)) and log(X / m) = that - lam (|log(X / m)| >= 1 there). A class
 * masked in X or Y (lam = +-inf) gets its limit. The terms: for |lam| < 1, the Bregman
 * terms (1 - g) X phi(log(X/m)) + g Y phi(log(Y/m)) by phi's series; else their sum
 * without the parts that cancel in it, (1 - g) X log(X/m) + g Y log(Y/m) (no more than
 * 4x cancellation for |lam| >= 1). Adds to sums: the terms, sum q log(q/m), sum Y
 * log(Y/m), sum (implied Y - X) (the offset's trace, see xf_jsd_from_sums); grad (if not
 * NULL; may alias a) gets gg q log(q/m), the first part of the gradient.
 * Three loops over chunks in L1 rather than one: in one, the chain of ~100 dependent
 * operations per entry kept too few entries in flight (1.6x slower). */
static XF_ALWAYS_INLINE void xf_jsd_f32_at(const float *a, const float *b, const float *es,
                                           const float *et, ptrdiff_t n, float fs, float ft,
                                           double dl, float g, float lim, float gg,
                                           float *grad, double *sums, const int x_is_q)
{
    const float omg = 1.0f - g;
    const float *lo = x_is_q ? a : b, *hi = x_is_q ? b : a;     /* lam = hi - lo - sdl */
    const double sdl = x_is_q ? dl : -dl;
    const float dh = (float)sdl, dt = (float)(sdl - (double)dh);
    float lam_c[XF_F32_CHUNK], e_c[XF_F32_CHUNK], r_c[XF_F32_CHUNK];
    double bs = 0.0;
    float aq = 0.0f, ay = 0.0f, gx = 0.0f;
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_F32_CHUNK) {
        const ptrdiff_t len = n - c0 < XF_F32_CHUNK ? n - c0 : XF_F32_CHUNK;
        const float *esc = es + c0, *etc = et + c0;
        const float *loc = lo + c0, *hic = hi + c0;
        XF_SIMD
        for (ptrdiff_t j = 0; j < len; j++) {
            float lam = xf_diff3_f32(hic[j], loc[j], dh, dt);
            int big = !(lam <= lim);                              /* nan too */
            lam_c[j] = lam;
            e_c[j] = xf_expm1_or_exp_f32(big ? -lam : lam, big ? 0.0f : 1.0f);
        }
        XF_SIMD
        for (ptrdiff_t j = 0; j < len; j++) {
            int big = !(lam_c[j] <= lim);
            float u = (big ? omg : g) * e_c[j];
            r_c[j] = -xf_log_near1_f32((big ? g : 1.0f) + u, u);
        }
        float *gc = grad ? grad + c0 : lam_c;      /* no gradient: a sink (read first) */
        float bc_sum = 0.0f;
        XF_SIMD_SUM(bc_sum, aq, ay, gx)
        for (ptrdiff_t j = 0; j < len; j++) {
            float lam = lam_c[j], r = r_c[j];
            float q = esc[j] * fs, p = etc[j] * ft;
            float xv = x_is_q ? q : p, yv = x_is_q ? p : q;
            int big = !(lam <= lim);
            float rx = big ? r - lam : r, ry = big ? r : r + lam;
            float px = xv == 0.0f ? 0.0f : xv * rx, py = yv == 0.0f ? 0.0f : yv * ry;
            float near = omg * (px * rx * xf_phi_over_l2_f32(rx))
                         + g * (py * ry * xf_phi_over_l2_f32(ry));
            float far = omg * px + g * py;
            float ql = x_is_q ? px : py;
            bc_sum += fabsf(lam) < 1.0f ? near : far;
            aq += ql;
            ay += py;
            gx += big ? yv - xv : xv * e_c[j];
            gc[j] = gg * ql;
        }
        bs += (double)bc_sum;
    }
    sums[0] += bs;
    sums[1] += (double)aq;
    sums[2] += (double)ay;
    sums[3] += (double)gx;
}

/* One copy of the loops for each choice of X. g in double first: 1 - beta from a float
 * beta would be 1% off at beta = 1 - 1e-6. */
static inline void xf_jsd_fast_f32(const float *a, const float *b, const float *es,
                                   const float *et, ptrdiff_t n, float fs, float ft, double dl,
                                   double beta, float gg, float *grad, double *sums)
{
    double g = beta < 0.5 ? beta : 1.0 - beta;
    float lim = (float)(g > 1e-30 ? 1.0 - log(g) : 70.0);
    lim = lim < 70.0f ? lim : 70.0f;
    if (beta < 0.5)
        xf_jsd_f32_at(a, b, es, et, n, fs, ft, dl, (float)g, lim, gg, grad, sums, 1);
    else
        xf_jsd_f32_at(a, b, es, et, n, fs, ft, dl, (float)g, lim, gg, grad, sums, 0);
}

/* The gradient of reverse KL and JSD in float, after the sweep that wrote grad[j] =
 * g q_j l_j (l = log(q/m)): grad[j] = g q (l_j - s), s = sum q l; 0 where q = 0. The
 * first part is written during the compute-bound sweep, so that this one works on lines
 * already in cache (it was bound by allocating them). */
static inline void xf_distill_grad_fast_f32(const float *es, ptrdiff_t n, float fs, float s,
                                            float g, float *grad)
{
    const float gs = g * s;
    XF_SIMD
    for (ptrdiff_t j = 0; j < n; j++) {
        float q = es[j] * fs;
        grad[j] = q == 0.0f ? 0.0f : grad[j] - gs * q;
    }
}

#endif
