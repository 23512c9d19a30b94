/* Portability macros, bit casts, and the scalar exp and log1p of the kernels.
 *
 * Part of xent_simd.h (which says why this is C and what the accuracy promises are);
 * the kernel modules include that header, not this one.
 */
#ifndef XENT_MATH_H
#define XENT_MATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__clang__) || defined(__GNUC__)
#define XF_PRAGMA(x) _Pragma(#x)
#else
/* MSVC's /openmp is OpenMP 2.0: no omp simd, no max reduction; its own vectoriser does
 * what it can with the plain loops. */
#define XF_PRAGMA(x)
#endif
/* omp simd is honoured with -fopenmp or -fopenmp-simd and ignored otherwise. */
#define XF_SIMD XF_PRAGMA(omp simd)
#define XF_SIMD_SUM(...) XF_PRAGMA(omp simd reduction(+:__VA_ARGS__))
/* Inlining decided here rather than by the compiler's heuristics: where it would decide,
 * through FMA contraction, the last bit of a result (the same in every build), or which
 * copy of a loop runs where (see online_sumexp). */
#if defined(__GNUC__) || defined(__clang__)
#define XF_NOINLINE __attribute__((noinline, unused))  /* no warning where it is unused */
#define XF_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define XF_NOINLINE __declspec(noinline)
#define XF_ALWAYS_INLINE __forceinline
#else
#define XF_NOINLINE
#define XF_ALWAYS_INLINE inline
#endif

/* Bit casts through unions (defined in C99): GCC vectorises these, not the memcpy idiom. */
typedef union { float f; int32_t i; } xf_f32_bits;
typedef union { double f; int64_t i; } xf_f64_bits;
static inline float xf_f32_from_bits(int32_t i) { xf_f32_bits u; u.i = i; return u.f; }
static inline int32_t xf_bits_f32(float f) { xf_f32_bits u; u.f = f; return u.i; }
static inline double xf_f64_from_bits(int64_t i) { xf_f64_bits u; u.i = i; return u.f; }
static inline int64_t xf_bits_f64(double f) { xf_f64_bits u; u.f = f; return u.i; }

/* exp(x) for float x <= 0 (every caller's argument is a logit minus a max; no NaN).
 * exp(x) = 2^n exp(r), n = round(x / ln 2), with exp(r) = 1 + r + r^2 q(r) on
 * |r| <= ln(2)/2, q of degree 4 fitted for the least maximum relative error of exp(r)
 * (3.1e-9, a twentieth of an ulp). With FMA it is evaluated by Horner's rule to the
 * end: 1 + r (1 + r (1/2 + ...)) takes one vector operation less than 1 + (r + r^2 q),
 * and the exp-sum loops are bound by their count of vector operations. Over every float
 * in [-103, 0] the result is then within 0.88 ulp (0.48% of results not correctly
 * rounded; the other form: 1.01 ulp, 0.81%). Without FMA the two forms take as many
 * operations, and the other is the more accurate: 0.99 ulp (Horner's: 1.18). */
static inline float xf_expf(float x)
{
    const float shift = 12582912.0f;                      /* 1.5 * 2^23: rounds to int */
    x = x < -104.0f ? -104.0f : x;                        /* exp underflows to 0 below */
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    int32_t ni = xf_bits_f32(t) - xf_bits_f32(shift);
    float r = x - n * 0.693359375f;                       /* ln 2 = hi + lo, hi exact in n * hi */
    r = r - n * -2.12194440e-4f;
    float p = 1.38146046e-3f;
    p = p * r + 8.36871099e-3f;
    p = p * r + 4.16683890e-2f;
    p = p * r + 1.66665211e-1f;
    p = p * r + 4.99999940e-1f;
#if defined(__FMA__) || defined(__AVX2__)
    p = p * r + 1.0f;
    p = p * r + 1.0f;
#else
    p = p * (r * r) + r + 1.0f;
#endif
    /* 2^n = 2^(n + 64) 2^-64, both normal for -150 <= n <= 0: a subnormal result is
     * rounded once, correctly. */
    /* (unsigned: a NaN x, which no caller should pass, gives NaN without undefined
     * behaviour) */
    return (p * xf_f32_from_bits((int32_t)((uint32_t)(ni + 127 + 64) << 23)))
           * 5.421010862427522e-20f;                                     /* 2^-64 */
}

/* exp(x) for double x <= 0 (no NaN): the same reduction and form, q of degree 9 fitted
 * for the least maximum relative error of exp(r) (3.6e-18, 0.03 ulp). Against glibc's
 * exp on 2e8 random x in [-708, 0] it differs by at most 1 ulp (mean 0.096 ulp), as
 * Taylor to degree 13 did, with two FMAs less. */
static const double XF_EXP_Q[10] = {   /* q's coefficients, highest degree first */
    2.5000096350976608e-08, 2.7630236861144123e-07, 2.7557586206860956e-06,
    2.480149312738961e-05, 0.00019841269506820695, 0.0013888888943606793,
    0.008333333333494331, 0.04166666666653023, 0.16666666666666413, 0.5000000000000011};

static inline double xf_exp(double x)
{
    const double shift = 6755399441055744.0;              /* 1.5 * 2^52 */
    x = x < -746.0 ? -746.0 : x;
    double t = x * 1.4426950408889634 + shift;
    double n = t - shift;
    double r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = XF_EXP_Q[0];
    for (int i = 1; i < 10; i++)
        p = p * r + XF_EXP_Q[i];
    p = p * r * r + r + 1.0;
    /* 2^n = 2^(n + 600) 2^-600, both normal for -1077 <= n <= 0 (see xf_expf). */
    int64_t ni = xf_bits_f64(t) - xf_bits_f64(shift);
    return (p * xf_f64_from_bits((int64_t)((uint64_t)(ni + 1023 + 600) << 52)))
           * 2.409919865102884e-181;                                     /* 2^-600 */
}

/* log(1 + x) + k log 2 for x in [sqrt(1/2) - 1, sqrt(2) - 1]: Cephes' logf polynomial
 * (no division), log 2 split so that k log 2's high part is exact. */
static XF_ALWAYS_INLINE float xf_log1p_reduced_f32(float x, float k)
{
    float z = x * x;
    float p = 7.0376836292e-2f;
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    float y = p * x * z - 0.5f * z;
    return (x + (y + k * -2.12194440e-4f)) + k * 0.693359375f;
}

/* log1p(u) for 0 <= u <= 1 (what softplus needs: u = exp(-|x|)), given w = 1 + u and
 * inv_w = 1 / w (softplus's caller needs them for the sigmoid too). w is split as 2^k f
 * with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh(s), s = (f - 1) / (f + 1), |s| < 0.172,
 * and the rounding of 1 + u is added back as (u - (w - 1)) / w, so a tiny u gives
 * log1p(u) = u to full relative accuracy. Within 3 ulp for float and double. */
static inline float xf_log1p_unit_inv_f32(float u, float w, float inv_w)
{
    /* float: log f by xf_log1p_reduced_f32, in x = f - 1 */
    float c = (u - (w - 1.0f)) * inv_w;
    int big = w > 1.41421356f;
    float x = (big ? 0.5f * w : w) - 1.0f;
    return xf_log1p_reduced_f32(x, big ? 1.0f : 0.0f) + c;
}

static XF_ALWAYS_INLINE double xf_log1p_unit_inv_f64(double u, double w, double inv_w)
{
    double c = (u - (w - 1.0)) * inv_w;
    int big = w > 1.4142135623730951;
    double f = big ? 0.5 * w : w;
    double s = (f - 1.0) / (f + 1.0);
    double z = s * s;
    double p = 1.0 / 21.0;
    p = p * z + 1.0 / 19.0;
    p = p * z + 1.0 / 17.0;
    p = p * z + 1.0 / 15.0;
    p = p * z + 1.0 / 13.0;
    p = p * z + 1.0 / 11.0;
    p = p * z + 1.0 / 9.0;
    p = p * z + 1.0 / 7.0;
    p = p * z + 1.0 / 5.0;
    p = p * z + 1.0 / 3.0;
    p = p * z * s + s;
    return (big ? 0.6931471805599453 : 0.0) + 2.0 * p + c;
}

/* The same without a caller's 1 + u and 1 / (1 + u) at hand. */
static XF_ALWAYS_INLINE double xf_log1p_unit_f64(double u)
{
    double w = 1.0 + u;
    return xf_log1p_unit_inv_f64(u, w, 1.0 / w);
}

/* log1p(r) for any finite r >= 0, in double: r <= 1 directly, else 1 + r = 2^k (1 + u)
 * with 0 <= u < 1 exact. */
static XF_ALWAYS_INLINE double xf_log1p_f64(double r)
{
    double w = 1.0 + r;
    int64_t bits = xf_bits_f64(w);
    /* the exponent as a double without an int64 -> double conversion, which AVX2 lacks
     * (the loops that call this would not vectorise): 2^52 + e, minus 2^52 + 1023 */
    double k = xf_f64_from_bits((bits >> 52) | 0x4330000000000000LL) - 4503599627371519.0;
    double f = xf_f64_from_bits((bits & 0x000FFFFFFFFFFFFFLL) | 0x3FF0000000000000LL);
    int big = r > 1.0;
    return (big ? k * 0.6931471805599453 : 0.0) + xf_log1p_unit_f64(big ? f - 1.0 : r);
}
#endif  /* XENT_MATH_H */
