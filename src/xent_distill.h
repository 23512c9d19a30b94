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
/* Reverse KL(q || p) over one block: returns the sum of its terms, stores                \
 * lq_j - lp_j in et (for the gradient sweep) and adds sum q (lq - lp) to *s. */         \
static inline double xf_kl_reverse_##SUF(const T *a, const T *b, const T *es, T *et,     \
                                         ptrdiff_t n, double fs, double ft, double dl,    \
                                         double *s)                                       \
{                                                                                         \
    double acc = 0.0, qs = 0.0;                                                           \
    XF_SIMD_SUM(acc, qs)                                                                  \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        double q = (double)es[j] * fs, p = (double)et[j] * ft;                            \
        double l = dl - ((double)b[j] - (double)a[j]);      /* log q - log p */           \
        acc += xf_bregman(q, p, l);                                                       \
        et[j] = (T)l;                                                                     \
        qs += q == 0 ? 0.0 : q * l;                                                       \
    }                                                                                     \
    *s += qs;                                                                             \
    return acc;                                                                           \
}                                                                                         \
                                                                                          \
/* Generalized JSD over one block, m = beta p + (1 - beta) q: returns the sum of          \
 * beta [p phi(log p/m)] + (1 - beta) [q phi(log q/m)], stores log(q/m) in et and adds    \
 * sum q log(q/m) to *s. lb = log(beta), l1b = log(1 - beta). */                         \
static inline double xf_jsd_##SUF(const T *a, const T *b, const T *es, T *et,            \
                                  ptrdiff_t n, double fs, double ft, double lse_s,        \
                                  double lse_t, double beta, double lb, double l1b,       \
                                  double *s)                                              \
{                                                                                         \
    double acc = 0.0, qs = 0.0;                                                           \
    XF_SIMD_SUM(acc, qs)                                                                  \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        double q = (double)es[j] * fs, p = (double)et[j] * ft;                            \
        double lq = (double)a[j] - lse_s, lp = (double)b[j] - lse_t;                      \
        double lm = xf_logaddexp(lp + lb, lq + l1b);                                      \
        double m = beta * p + (1.0 - beta) * q;                                           \
        double lpm = lp - lm, lqm = lq - lm;                                              \
        acc += beta * xf_bregman(p, m, lpm) + (1.0 - beta) * xf_bregman(q, m, lqm);       \
        et[j] = (T)lqm;                                                                   \
        qs += q == 0 ? 0.0 : q * lqm;                                                     \
    }                                                                                     \
    *s += qs;                                                                             \
    return acc;                                                                           \
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

XF_DISTILL_BLOCKS(float, f32)
XF_DISTILL_BLOCKS(double, f64)

#endif
