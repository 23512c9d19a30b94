/* Vectorisable exp and the row primitives of a stable softmax.
 *
 * Why C: the loops below need `#pragma omp simd` to vectorise their reductions without
 * -ffast-math (which would also break inf/nan), and the exp must be inline arithmetic
 * rather than a libm call. Cython can express neither. The kernel modules include this
 * header and are compiled once per instruction set (baseline x86-64, x86-64-v3 = AVX2 +
 * FMA, x86-64-v4 = AVX-512); xent_fast picks the module at import from the CPU.
 *
 * Accuracy: xf_expf is within 2 ulp of exp over the float range, xf_exp within 2 ulp
 * over the double range, both including subnormal results (the scale 2^n is applied in
 * two normal halves), exactly 1 at 0 and exactly 0 at -inf. They assume no NaN input:
 * callers give NaN rows NaN results before any exp.
 */
#ifndef XENT_SIMD_H
#define XENT_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_OPENMP) || defined(__clang__) || defined(__GNUC__)
#define XF_PRAGMA(x) _Pragma(#x)
#else
#define XF_PRAGMA(x)
#endif
/* omp simd is honoured with -fopenmp or -fopenmp-simd and ignored otherwise. */
#define XF_SIMD XF_PRAGMA(omp simd)
#define XF_SIMD_SUM(...) XF_PRAGMA(omp simd reduction(+:__VA_ARGS__))

/* Bit casts through unions (defined in C99): GCC vectorises these, not the memcpy idiom. */
typedef union { float f; int32_t i; } xf_f32_bits;
typedef union { double f; int64_t i; } xf_f64_bits;
static inline float xf_f32_from_bits(int32_t i) { xf_f32_bits u; u.i = i; return u.f; }
static inline int32_t xf_bits_f32(float f) { xf_f32_bits u; u.f = f; return u.i; }
static inline double xf_f64_from_bits(int64_t i) { xf_f64_bits u; u.i = i; return u.f; }
static inline int64_t xf_bits_f64(double f) { xf_f64_bits u; u.f = f; return u.i; }

/* exp(x) for float x <= 88 (no NaN). exp(x) = 2^n exp(r), n = round(x / ln 2), with a
 * degree-7 polynomial for exp(r) on |r| <= ln(2)/2 (Cephes' expf coefficients). */
static inline float xf_expf(float x)
{
    const float shift = 12582912.0f;                      /* 1.5 * 2^23: rounds to int */
    x = x < -104.0f ? -104.0f : x;                        /* exp underflows to 0 below */
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    int32_t ni = xf_bits_f32(t) - xf_bits_f32(shift);
    float r = x - n * 0.693359375f;                       /* ln 2 = hi + lo, hi exact in n * hi */
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    /* 2^n as two normal halves so that subnormal results round once, correctly. */
    int32_t n1 = ni >> 1, n2 = ni - n1;
    return p * xf_f32_from_bits((n1 + 127) << 23) * xf_f32_from_bits((n2 + 127) << 23);
}

/* exp(x) for double x <= 709 (no NaN): the same reduction, Taylor to degree 13 on
 * |r| <= ln(2)/2 (truncation error below 2^-60). */
static inline double xf_exp(double x)
{
    const double shift = 6755399441055744.0;              /* 1.5 * 2^52 */
    x = x < -746.0 ? -746.0 : x;
    x = x > 709.0 ? 709.0 : x;
    double t = x * 1.4426950408889634 + shift;
    double n = t - shift;
    double r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;                        /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    /* n1 = about n / 2 and n2 = n - n1, each an exponent a normal double can carry. */
    double n1 = (n * 0.5 + shift) - shift;
    double n2 = n - n1;
    int64_t b1 = xf_bits_f64(n1 + shift) - xf_bits_f64(shift);
    int64_t b2 = xf_bits_f64(n2 + shift) - xf_bits_f64(shift);
    return p * xf_f64_from_bits((b1 + 1023) << 52) * xf_f64_from_bits((b2 + 1023) << 52);
}

/* ---- row primitives ---------------------------------------------------------------
 * max:     the largest entry, and whether any entry is NaN.
 * sumexp:  r = sum of exp(x_j - m) over the entries below the max m, plus one for each
 *          further entry equal to m; the full sum is 1 + r exactly, so callers can use
 *          log1p(r) and keep tiny losses. With e != NULL it also stores
 *          e_j = exp(x_j - m) (e may be x itself).
 * scale:   e_j *= a.
 */
/* Sum of exp(x_j - m) over j0 <= j < j1 in the lanes of type ACC, leaving out the
 * entries equal to m and counting them in ties. */
#define XF_SUMEXP_LOOP(T, ACC, EXP, STORE)                                                \
    XF_SIMD_SUM(acc, ties)                                                                \
    for (ptrdiff_t j = j0; j < j1; j++) {                                                 \
        T xj = x[j];                                                                      \
        T v = EXP(xj - m);                                                                \
        T below = (T)(xj != m);                                                           \
        STORE;                                                                            \
        ties += (T)1 - below;                                                             \
        acc += (ACC)(v * below);                                                          \
    }

/* float rows are summed in float lanes over chunks of XF_CHUNK entries (vectorisable:
 * GCC does not vectorise a float-to-double reduction), and the chunks in double, so
 * the rounding error stays that of a sum of XF_CHUNK / lanes terms. */
#define XF_CHUNK 256
/* Rows shorter than this are done by plain scalar loops: a vector loop's set-up and
 * final horizontal reduction cost more than a few scalar iterations. */
#define XF_SHORT 16

#define XF_ROW_PRIMITIVES(T, SUF, EXP, ACC)                                               \
static inline T xf_max_##SUF(const T *x, ptrdiff_t n, int *has_nan)                      \
{                                                                                         \
    T m = -INFINITY;                                                                      \
    int nan = 0;                                                                          \
    if (n < XF_SHORT) {                                                                   \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            m = x[j] > m ? x[j] : m;                                                      \
            nan |= x[j] != x[j];                                                          \
        }                                                                                 \
        *has_nan = nan;                                                                   \
        return m;                                                                         \
    }                                                                                     \
    XF_PRAGMA(omp simd reduction(max:m) reduction(|:nan))                                 \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        T v = x[j];                                                                       \
        m = v > m ? v : m;                                                                \
        nan |= v != v;                                                                    \
    }                                                                                     \
    *has_nan = nan;                                                                       \
    return m;                                                                             \
}                                                                                         \
                                                                                          \
static inline double xf_sumexp_##SUF(const T *x, ptrdiff_t n, T m, T *e)                  \
{                                                                                         \
    double r = 0.0, all_ties = 0.0;                                                       \
    if (n < XF_SHORT) {                                                                   \
        const ptrdiff_t j0 = 0, j1 = n;                                                   \
        ACC acc = 0;                                                                      \
        T ties = 0;                                                                       \
        if (e) {                                                                          \
            XF_SUMEXP_LOOP(T, ACC, EXP, e[j] = v)                                         \
        } else {                                                                          \
            XF_SUMEXP_LOOP(T, ACC, EXP, (void)0)                                          \
        }                                                                                 \
        return (double)acc + ((double)ties - 1.0);                                        \
    }                                                                                     \
    for (ptrdiff_t j0 = 0; j0 < n; j0 += XF_CHUNK) {                                      \
        ptrdiff_t j1 = j0 + XF_CHUNK < n ? j0 + XF_CHUNK : n;                             \
        ACC acc = 0;                                                                      \
        T ties = 0;                                                                       \
        if (e) {                                                                          \
            XF_SUMEXP_LOOP(T, ACC, EXP, e[j] = v)                                         \
        } else {                                                                          \
            XF_SUMEXP_LOOP(T, ACC, EXP, (void)0)                                          \
        }                                                                                 \
        r += (double)acc;                                                                 \
        all_ties += (double)ties;                                                         \
    }                                                                                     \
    return r + (all_ties - 1.0);                                                          \
}                                                                                         \
                                                                                          \
static inline void xf_scale_##SUF(T *e, ptrdiff_t n, T a)                                 \
{                                                                                         \
    if (n < XF_SHORT) {                                                                   \
        for (ptrdiff_t j = 0; j < n; j++)                                                 \
            e[j] = e[j] * a;                                                              \
        return;                                                                           \
    }                                                                                     \
    XF_SIMD                                                                               \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        e[j] = e[j] * a;                                                                  \
}

/* ---- one-sweep (online) softmax sums -----------------------------------------------
 * online_sumexp reads the row once: block by block (XF_BLOCK entries, in L1) it takes
 * the block's max mc, stores e_j = exp(x_j - mc) (when e != NULL) and mc in cmax[c],
 * and folds the block into the running sum, rescaled when the max grows. It returns r with
 * sum_j exp(x_j - m) = 1 + r, computed without the cancellation of subtracting 1: the
 * blocks whose max is the row max m add their sums below mc exactly and their ties as
 * whole numbers. scale_chunks then turns the stored e into a * exp(x_j - m).
 * Rows of more than XF_MAX_CHUNKS blocks use the three-sweep primitives above.
 */
#define XF_BLOCK 2048
#define XF_MAX_CHUNKS 1024

#define XF_ONLINE_PRIMITIVES(T, SUF, EXP, ACC)                                            \
static inline double xf_online_sumexp_##SUF(const T *x, ptrdiff_t n, T *e, T *cmax,       \
                                            T *m_out, int *has_nan)                       \
{                                                                                         \
    T m = -INFINITY;                                                                      \
    int nan = 0;                                                                          \
    double r_top = 0.0, ties_top = 0.0, r_low = 0.0;                                      \
    if (n < XF_SHORT) {                                                                   \
        m = xf_max_##SUF(x, n, &nan);                                                     \
        cmax[0] = m;                                                                      \
        *m_out = m;                                                                       \
        *has_nan = nan;                                                                   \
        return isfinite(m) ? xf_sumexp_##SUF(x, n, m, e) : 0.0;                           \
    }                                                                                     \
    for (ptrdiff_t b0 = 0, c = 0; b0 < n; b0 += XF_BLOCK, c++) {                          \
        ptrdiff_t b1 = b0 + XF_BLOCK < n ? b0 + XF_BLOCK : n;                             \
        T mc = -INFINITY;                                                                 \
        int nan_c = 0;                                                                    \
        XF_PRAGMA(omp simd reduction(max:mc) reduction(|:nan_c))                          \
        for (ptrdiff_t j = b0; j < b1; j++) {                                             \
            T v = x[j];                                                                   \
            mc = v > mc ? v : mc;                                                         \
            nan_c |= v != v;                                                              \
        }                                                                                 \
        nan |= nan_c;                                                                     \
        cmax[c] = mc;                                                                     \
        if (mc == -INFINITY) {          /* a fully masked block adds nothing */           \
            if (e)                                                                        \
                for (ptrdiff_t j = b0; j < b1; j++)                                       \
                    e[j] = 0;                                                             \
            continue;                                                                     \
        }                                                                                 \
        double sum_c = 0.0, ties_c = 0.0;                                                 \
        for (ptrdiff_t j0 = b0; j0 < b1; j0 += XF_CHUNK) {                                \
            const ptrdiff_t j1 = j0 + XF_CHUNK < b1 ? j0 + XF_CHUNK : b1;                 \
            const T m = mc;                                                               \
            ACC acc = 0;                                                                  \
            T ties = 0;                                                                   \
            if (e) {                                                                      \
                XF_SUMEXP_LOOP(T, ACC, EXP, e[j] = v)                                     \
            } else {                                                                      \
                XF_SUMEXP_LOOP(T, ACC, EXP, (void)0)                                      \
            }                                                                             \
            sum_c += (double)acc;                                                         \
            ties_c += (double)ties;                                                       \
        }                                                                                 \
        if (mc > m) {                   /* a new max: all before it is below it */        \
            if (m != -INFINITY)                                                           \
                r_low = (r_low + r_top + ties_top) * xf_exp((double)m - (double)mc);      \
            r_top = sum_c;                                                                \
            ties_top = ties_c;                                                            \
            m = mc;                                                                       \
        } else if (mc == m) {                                                             \
            r_top += sum_c;                                                               \
            ties_top += ties_c;                                                           \
        } else {                                                                          \
            r_low += (sum_c + ties_c) * xf_exp((double)mc - (double)m);                   \
        }                                                                                 \
    }                                                                                     \
    *m_out = m;                                                                           \
    *has_nan = nan;                                                                       \
    return r_top + (ties_top - 1.0) + r_low;                                              \
}                                                                                         \
                                                                                          \
static inline void xf_scale_chunks_##SUF(T *e, ptrdiff_t n, const T *cmax, T m, double a) \
{                                                                                         \
    if (n < XF_SHORT) {                                                                   \
        xf_scale_##SUF(e, n, (T)a);                                                       \
        return;                                                                           \
    }                                                                                     \
    for (ptrdiff_t b0 = 0, c = 0; b0 < n; b0 += XF_BLOCK, c++) {                          \
        ptrdiff_t b1 = b0 + XF_BLOCK < n ? b0 + XF_BLOCK : n;                             \
        T f = (T)(cmax[c] == m ? a : a * xf_exp((double)cmax[c] - (double)m));            \
        XF_SIMD                                                                           \
        for (ptrdiff_t j = b0; j < b1; j++)                                               \
            e[j] = e[j] * f;                                                              \
    }                                                                                     \
}

XF_ROW_PRIMITIVES(float, f32, xf_expf, float)
XF_ROW_PRIMITIVES(double, f64, xf_exp, double)
XF_ONLINE_PRIMITIVES(float, f32, xf_expf, float)
XF_ONLINE_PRIMITIVES(double, f64, xf_exp, double)

#endif
