/* Vectorisable exp and the row primitives of a stable softmax.
 *
 * Why C: the loops below need `#pragma omp simd` to vectorise their reductions without
 * -ffast-math (which would also break inf/nan), and the exp must be inline arithmetic
 * rather than a libm call. Cython can express neither. The kernel modules include this
 * header and are compiled once per instruction set (baseline x86-64, x86-64-v3 = AVX2 +
 * FMA, x86-64-v4 = AVX-512); xent_fast picks the module at import from the CPU. A few
 * hot loops are also written with AVX2 or AVX-512 intrinsics, doing the portable loop's
 * operations in its order; defining XF_PORTABLE leaves them out, which is how
 * tests/hand_loops_check.c checks that they give the portable code's bits.
 *
 * Accuracy: xf_expf and xf_exp are within 2 ulp of exp for x <= 0, subnormal results
 * included, exactly 1 at 0 and exactly 0 at -inf. They take x <= 0 only (a logit minus
 * its row max, or -|x|) and no NaN: callers give NaN rows NaN results before any exp.
 */
#ifndef XENT_SIMD_H
#define XENT_SIMD_H

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

/* log1p(u) for 0 <= u <= 1 (what softplus needs: u = exp(-|x|)), given w = 1 + u and
 * inv_w = 1 / w (softplus's caller needs them for the sigmoid too). w is split as 2^k f
 * with f in [sqrt(1/2), sqrt(2)), log f = 2 atanh(s), s = (f - 1) / (f + 1), |s| < 0.172,
 * and the rounding of 1 + u is added back as (u - (w - 1)) / w, so a tiny u gives
 * log1p(u) = u to full relative accuracy. Within 3 ulp for float and double. */
static inline float xf_log1p_unit_inv_f32(float u, float w, float inv_w)
{
    /* float: log f by Cephes' logf polynomial in x = f - 1 (no division). */
    float c = (u - (w - 1.0f)) * inv_w;
    int big = w > 1.41421356f;
    float x = (big ? 0.5f * w : w) - 1.0f;
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
    float k = big ? 1.0f : 0.0f;
    return ((x + (y + k * -2.12194440e-4f)) + k * 0.693359375f) + c;
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

/* ---- prefetching ----------------------------------------------------------------------
 * The hardware prefetchers alone leave the memory idle while a core computes exps:
 * measured here, a loop that reads and writes at the copy's speed, and computes for
 * half as long again, takes the sum of the two times. Loops that compute more than a
 * load and a store per entry therefore ask for the lines XF_PF_AHEAD bytes (or a
 * distance the caller gives) ahead of where they read and write. A prefetch waits for
 * a free line-fill buffer, and the core with it: the exp-sum loops ask, step by step
 * among the arithmetic, for the lines of that step's entries (and stored exps) only.
 * A burst of a chunk's 16 to 64 lines had them waiting in about 45% of perf's samples;
 * asking step by step took the 2048x32000 float32 loss from 12.9 to 11.3 ms and the
 * loss+grad from 22.9 to 20.0 on an AVX-512 Xeon (a whole block's 128 lines at once
 * was slower still). The other loops still ask chunk by chunk.
 * Prefetches never fault, so asking past the end of an array is safe; the address is
 * formed as an integer, as C allows no pointer past the end.
 */
#define XF_PF_AHEAD 8192        /* bytes: for float rows, the next block of online_sumexp */
/* online_sumexp asks only XF_PF_NEAR bytes ahead on rows of at most XF_PF_SHORT_ROWS
 * bytes. On an AVX-512 Xeon, for 65536x1000 float32 on two threads, with the chunk
 * bursts of the time: loss 18.2 -> 13.9 ms, softmax 21.3 -> 18.6, loss and gradient
 * 21 -> 19.6 (every SIMD level gained; 500 classes too); rows of 8 KiB and more were
 * faster with 8 KiB. Asking step by step, it still made that softmax 16.4 ms rather
 * than 17.5. (Moving code alone moved the 2048x32000 loss and gradient by up to 8% in
 * such A/B runs: compare builds with the same layout.) */
#define XF_PF_SHORT_ROWS 4096
#define XF_PF_NEAR 4096
#if defined(__GNUC__) || defined(__clang__)
#define XF_PREFETCH_LINE(p) __builtin_prefetch((const void *)(p), 0, 3)
#elif defined(_M_X64)
#include <xmmintrin.h>
#define XF_PREFETCH_LINE(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
#else
#define XF_PREFETCH_LINE(p) ((void)(p))
#endif
/* The lines of the nbytes bytes `ahead` bytes past p (xf_prefetch_ahead: XF_PF_AHEAD
 * bytes). Also for an output: a line not in cache is read before a store can write it,
 * and prefetched it is there when the store comes (a read prefetch: PREFETCHW is not
 * in every x86-64). */
static inline void xf_prefetch_at(const void *p, ptrdiff_t nbytes, ptrdiff_t ahead)
{
    const uintptr_t c = (uintptr_t)p + (uintptr_t)ahead;
    for (ptrdiff_t q = 0; q < nbytes; q += 64)
        XF_PREFETCH_LINE(c + (uintptr_t)q);
}

static inline void xf_prefetch_ahead(const void *p, ptrdiff_t nbytes)
{
    xf_prefetch_at(p, nbytes, XF_PF_AHEAD);
}

/* ---- row primitives ---------------------------------------------------------------
 * max:     the largest entry, and whether any entry is NaN.
 * sumexp:  r = sum of exp(x_j - m) over the entries below the max m, plus one for each
 *          further entry equal to m; the full sum is 1 + r exactly, so callers can use
 *          log1p(r) and keep tiny losses. With e != NULL it also stores
 *          e_j = exp(x_j - m) (e may be x itself).
 * scale:   e_j *= a.
 */
/* Sum of exp(x_j - m) over k <= j < k + XF_LANES (entries past c1 read as -inf, so
 * they add nothing) into XF_LANES accumulators, leaving out the entries equal to m and
 * counting them in ties. Explicit lanes keep the horizontal sums out of the chunk loop,
 * and give the same summation order at every instruction set. */
#define XF_LANES 16
#define XF_SUMEXP_STEP(T, EXP, TAIL, STORE)                                               \
    XF_SIMD                                                                               \
    for (int l = 0; l < XF_LANES; l++) {                                                  \
        T xj = TAIL ? (k + l < c1 ? x[k + l] : (T)-INFINITY) : x[k + l];                  \
        T v = EXP(xj - m);                                                                \
        T below = (T)(xj != m);                                                           \
        if (STORE && (!TAIL || k + l < c1))                                               \
            e[k + l] = v;                                                                 \
        ties[l] += (T)1 - below;                                                          \
        acc[l] += v * below;                                                              \
    }

/* float rows are summed in float lanes over chunks of XF_CHUNK entries (vectorisable:
 * GCC does not vectorise a float-to-double reduction), and the chunks in double lanes,
 * so the rounding error stays that of a sum of XF_CHUNK / XF_LANES terms. */
#define XF_CHUNK 256
/* Rows shorter than this are done XF_TILE at a time with the lanes across rows
 * (small_ce, small_softmax), or else by plain scalar loops: a vector loop's set-up and
 * final horizontal reduction cost more than a few scalar iterations. */
#define XF_SHORT 16

/* The total of XF_LANES double lanes, added pairwise (lane l + lane l + 8, then + 4, + 2,
 * + 1): four dependent adds rather than sixteen, which for rows of a thousand entries
 * was a tenth of the exp-sum's time. Every loop adds its lanes in this order. */
static inline double xf_fold_lanes(double *v)
{
    for (int w = XF_LANES / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++)
            v[l] += v[l + w];
    return v[0];
}

#define XF_SUM_BELOW(T, SUF, EXP, ACC)                                                    \
static inline double xf_sum_below_##SUF(const T *x, ptrdiff_t j0, ptrdiff_t j1, T m, T *e, \
                                        double *ties_out, ptrdiff_t ahead)                \
{                                                                                         \
    /* sum of exp(x_j - m) over j0 <= j < j1 and x_j != m, by chunks; the count of        \
     * entries equal to m is added to *ties_out. Prefetches ahead bytes ahead. */         \
    double r_lane[XF_LANES], ties_lane[XF_LANES];                                         \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        r_lane[l] = ties_lane[l] = 0.0;                                                   \
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += XF_CHUNK) {                                    \
        const ptrdiff_t c1 = c0 + XF_CHUNK < j1 ? c0 + XF_CHUNK : j1;                     \
        ACC acc[XF_LANES];                                                                \
        T ties[XF_LANES];                                                                 \
        for (int l = 0; l < XF_LANES; l++)                                                \
            acc[l] = ties[l] = 0;                                                         \
        ptrdiff_t k = c0;                                                                 \
        if (e) {                                                                          \
            for (; k + XF_LANES <= c1; k += XF_LANES) {                                   \
                xf_prefetch_at(x + k, XF_LANES * (ptrdiff_t)sizeof(T), ahead);            \
                xf_prefetch_at(e + k, XF_LANES * (ptrdiff_t)sizeof(T), ahead);            \
                XF_SUMEXP_STEP(T, EXP, 0, 1)                                              \
            }                                                                             \
            if (k < c1) {                                                                 \
                XF_SUMEXP_STEP(T, EXP, 1, 1)                                              \
            }                                                                             \
        } else {                                                                          \
            for (; k + XF_LANES <= c1; k += XF_LANES) {                                   \
                xf_prefetch_at(x + k, XF_LANES * (ptrdiff_t)sizeof(T), ahead);            \
                XF_SUMEXP_STEP(T, EXP, 0, 0)                                              \
            }                                                                             \
            if (k < c1) {                                                                 \
                XF_SUMEXP_STEP(T, EXP, 1, 0)                                              \
            }                                                                             \
        }                                                                                 \
        XF_SIMD                                                                           \
        for (int l = 0; l < XF_LANES; l++) {                                              \
            r_lane[l] += (double)acc[l];                                                  \
            ties_lane[l] += (double)ties[l];                                              \
        }                                                                                 \
    }                                                                                     \
    *ties_out += xf_fold_lanes(ties_lane);                                                \
    return xf_fold_lanes(r_lane);                                                         \
}

/* ---- AVX-512: the exp-sum loop by hand ------------------------------------------------
 * GCC's vectorisation of XF_SUM_BELOW spends two multiplies on 2^n, and five operations
 * on leaving out the ties. AVX-512 does them in one (vscalef, correctly rounded into the
 * subnormals) and two (masked adds); that makes the loop, which bounds the loss-only
 * kernels, about 15% faster. Same operations in the same order as XF_SUM_BELOW, so the
 * results are bitwise those of the portable code built for AVX-512 (for rows with a
 * finite max and no NaN; the others' sums are discarded by every caller). Entries more than
 * 104 (float) or 746 (double) below the max give 0 by a mask, never by an underflow:
 * an underflowing vscalef takes a microcode assist (20 times slower), and masked
 * logits are common. */
#if defined(__AVX512F__) && !defined(XF_PORTABLE)
#include <immintrin.h>

static inline __m512 xf_expf_x16(__m512 x)
{
    const __m512 shift = _mm512_set1_ps(12582912.0f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_GE_OQ);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shift);
    __m512 n = _mm512_sub_ps(t, shift);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.38146046e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.36871099e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.16683890e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.66665211e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.99999940e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(keep, p, n);
}

static inline __m512d xf_exp_x8(__m512d x)
{
    const __m512d shift = _mm512_set1_pd(6755399441055744.0);
    __mmask8 keep = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-746.0), _CMP_GE_OQ);
    __m512d t = _mm512_fmadd_pd(x, _mm512_set1_pd(1.4426950408889634), shift);
    __m512d n = _mm512_sub_pd(t, shift);
    __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93147180369123816490e-01), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.90821492927058770002e-10), r);
    __m512d p = _mm512_set1_pd(XF_EXP_Q[0]);
    for (int i = 1; i < 10; i++)
        p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(XF_EXP_Q[i]));
    p = _mm512_add_pd(_mm512_fmadd_pd(_mm512_mul_pd(p, r), r, r), _mm512_set1_pd(1.0));
    return _mm512_maskz_scalef_pd(keep, p, n);
}

/* xf_fold_lanes of 16 double lanes (lo: 0-7, hi: 8-15), in registers */
static inline double xf_fold_x16(__m512d lo, __m512d hi)
{
    __m512d s8 = _mm512_add_pd(lo, hi);
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s8), _mm512_extractf64x4_pd(s8, 1));
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

/* The sum and the ties of the 16 double lanes, added as XF_SUM_BELOW adds them; the
 * ties are added to *ties_out. */
static inline double xf_lanes_total(__m512d r_lo, __m512d r_hi, __m512d t_lo, __m512d t_hi,
                                    double *ties_out)
{
    *ties_out += xf_fold_x16(t_lo, t_hi);
    return xf_fold_x16(r_lo, r_hi);
}

/* One 16-entry step of the float loop below; entries outside the mask `in` are read as
 * -inf and not stored. Whole steps (full) take plain loads and stores: a merging
 * masked load costs a blend. */
static XF_ALWAYS_INLINE void xf_sum_step_x16(const float *x, float *e, __mmask16 in,
                                             int full, __m512 mv, __m512 *acc,
                                             __m512i *ties)
{
    __m512 xv = full ? _mm512_loadu_ps(x)
                     : _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), in, x);
    __m512 v = xf_expf_x16(_mm512_sub_ps(xv, mv));
    __mmask16 tie = _mm512_cmp_ps_mask(xv, mv, _CMP_EQ_OQ);
    if (e && full)
        _mm512_storeu_ps(e, v);
    else if (e)
        _mm512_mask_storeu_ps(e, in, v);
    *acc = _mm512_mask_add_ps(*acc, (__mmask16)~tie, *acc, v);
    *ties = _mm512_mask_add_epi32(*ties, tie, *ties, _mm512_set1_epi32(1));
}

/* lanes 0-15 of XF_SUM_BELOW: float in one register, double in two (lo, hi) */
static inline double xf_sum_below_f32(const float *x, ptrdiff_t j0, ptrdiff_t j1, float m,
                                      float *e, double *ties_out, ptrdiff_t ahead)
{
    const __m512 mv = _mm512_set1_ps(m);
    __m512d r_lo = _mm512_setzero_pd(), r_hi = r_lo, t_lo = r_lo, t_hi = r_lo;
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += XF_CHUNK) {
        const ptrdiff_t c1 = c0 + XF_CHUNK < j1 ? c0 + XF_CHUNK : j1;
        __m512 acc = _mm512_setzero_ps();
        __m512i ties = _mm512_setzero_si512();
        ptrdiff_t k = c0;
        for (; k + 16 <= c1; k += 16) {
            xf_prefetch_at(x + k, 64, ahead);
            if (e)
                xf_prefetch_at(e + k, 64, ahead);
            xf_sum_step_x16(x + k, e ? e + k : NULL, 0xFFFF, 1, mv, &acc, &ties);
        }
        if (k < c1)                     /* the rest, read as -inf past c1 */
            xf_sum_step_x16(x + k, e ? e + k : NULL, (__mmask16)((1u << (c1 - k)) - 1u), 0,
                            mv, &acc, &ties);
        r_lo = _mm512_add_pd(r_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(acc)));
        r_hi = _mm512_add_pd(r_hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                                       _mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))));
        t_lo = _mm512_add_pd(t_lo, _mm512_cvtepi32_pd(_mm512_castsi512_si256(ties)));
        t_hi = _mm512_add_pd(t_hi, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(ties, 1)));
    }
    return xf_lanes_total(r_lo, r_hi, t_lo, t_hi, ties_out);
}

/* 8 entries from k into (acc, ties); entries from c1 on are masked off */
#define XF_SUM_STEP_F64(k, acc, ties)                                                     \
    {                                                                                     \
        ptrdiff_t left = c1 - (k);                                                        \
        __mmask8 in = left >= 8 ? (__mmask8)0xFF                                          \
                                : (__mmask8)(left > 0 ? (1u << left) - 1u : 0u);          \
        __m512d xv = _mm512_mask_loadu_pd(ninf, in, x + (left > 0 ? (k) : c0));          \
        __m512d v = xf_exp_x8(_mm512_sub_pd(xv, mv));                                     \
        __mmask8 tie = _mm512_cmp_pd_mask(xv, mv, _CMP_EQ_OQ);                            \
        if (e && left > 0)                                                                \
            _mm512_mask_storeu_pd(e + (k), in, v);                                        \
        acc = _mm512_mask_add_pd(acc, (__mmask8)~tie, acc, v);                            \
        ties = _mm512_mask_add_pd(ties, tie, ties, one);                                  \
    }

static inline double xf_sum_below_f64(const double *x, ptrdiff_t j0, ptrdiff_t j1, double m,
                                      double *e, double *ties_out, ptrdiff_t ahead)
{
    const __m512d mv = _mm512_set1_pd(m), one = _mm512_set1_pd(1.0);
    const __m512d ninf = _mm512_set1_pd(-INFINITY);
    __m512d r_lo = _mm512_setzero_pd(), r_hi = r_lo, t_lo = r_lo, t_hi = r_lo;
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += XF_CHUNK) {
        const ptrdiff_t c1 = c0 + XF_CHUNK < j1 ? c0 + XF_CHUNK : j1;
        __m512d acc_lo = _mm512_setzero_pd(), acc_hi = acc_lo, ties_lo = acc_lo, ties_hi = acc_lo;
        for (ptrdiff_t k = c0; k < c1; k += 16) {
            xf_prefetch_at(x + k, 128, ahead);
            if (e)
                xf_prefetch_at(e + k, 128, ahead);
            XF_SUM_STEP_F64(k, acc_lo, ties_lo)
            XF_SUM_STEP_F64(k + 8, acc_hi, ties_hi)
        }
        r_lo = _mm512_add_pd(r_lo, acc_lo);
        r_hi = _mm512_add_pd(r_hi, acc_hi);
        t_lo = _mm512_add_pd(t_lo, ties_lo);
        t_hi = _mm512_add_pd(t_hi, ties_hi);
    }
    return xf_lanes_total(r_lo, r_hi, t_lo, t_hi, ties_out);
}
#elif defined(__AVX2__) && defined(__FMA__) && !defined(XF_PORTABLE)
/* ---- AVX2: the exp-sum loop by hand -------------------------------------------------
 * GCC's vectorisation of XF_SUM_BELOW takes 16 vector operations per 8 entries besides
 * the exp's, and lays each exp out as one long dependent chain: the loop is bound by how
 * many chains fit in the out-of-order window, not by the arithmetic units (measured on
 * Zen 3: 0.55 ns per float in L1; this loop: 0.38). Here 32 entries go through at once,
 * and two operations are saved where every entry is at most 87 below the max (nearly
 * always): 2^n is then a normal number, so p 2^n takes one multiply and rounds exactly
 * as (p 2^(n+64)) 2^-64 does; and ties are counted from a compare mask, in an integer.
 * The rest are XF_SUM_BELOW's operations in its order, so the results are bitwise those
 * of the portable code (for rows with a finite max and no NaN, as with AVX-512). */
#include <immintrin.h>

/* exp(x) for 8 floats x <= 0 (or -inf), as xf_expf. all_normal: every x >= -87. */
static inline __m256 xf_expf_x8(__m256 x, int all_normal)
{
    const __m256 shift = _mm256_set1_ps(12582912.0f);
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), shift);
    __m256 n = _mm256_sub_ps(t, shift);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.38146046e-3f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.36871099e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.16683890e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.66665211e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.99999940e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ti = _mm256_castps_si256(t);
    if (all_normal)                     /* 2^n = bits (n + 127) << 23 */
        return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(
                   _mm256_add_epi32(ti, _mm256_set1_epi32(127 - 0x4B400000)), 23)));
    __m256 s = _mm256_castsi256_ps(_mm256_slli_epi32(
                   _mm256_add_epi32(ti, _mm256_set1_epi32(127 + 64 - 0x4B400000)), 23));
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(p, s), _mm256_set1_ps(5.421010862427522e-20f));
    /* below -104 the portable code's clamped exp is 0 too */
    return _mm256_and_ps(v, _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_GE_OQ));
}

/* exp(x) for 4 doubles x <= 0 (or -inf), as xf_exp. all_normal: every x >= -708. */
static inline __m256d xf_exp_x4(__m256d x, int all_normal)
{
    const __m256d shift = _mm256_set1_pd(6755399441055744.0);
    __m256d t = _mm256_fmadd_pd(x, _mm256_set1_pd(1.4426950408889634), shift);
    __m256d n = _mm256_sub_pd(t, shift);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
    __m256d p = _mm256_set1_pd(XF_EXP_Q[0]);
    for (int i = 1; i < 10; i++)
        p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(XF_EXP_Q[i]));
    p = _mm256_add_pd(_mm256_fmadd_pd(_mm256_mul_pd(p, r), r, r), _mm256_set1_pd(1.0));
    __m256i ti = _mm256_castpd_si256(t);
    if (all_normal)
        return _mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(
                   _mm256_add_epi64(ti, _mm256_set1_epi64x(1023 - 0x4338000000000000LL)), 52)));
    __m256d s = _mm256_castsi256_pd(_mm256_slli_epi64(
                    _mm256_add_epi64(ti, _mm256_set1_epi64x(1023 + 600 - 0x4338000000000000LL)), 52));
    __m256d v = _mm256_mul_pd(_mm256_mul_pd(p, s), _mm256_set1_pd(2.409919865102884e-181));
    return _mm256_and_pd(v, _mm256_cmp_pd(x, _mm256_set1_pd(-746.0), _CMP_GE_OQ));
}

static inline int xf_popcount32(unsigned v)
{
    return _mm_popcnt_u32(v);          /* POPCNT: every AVX2 CPU has it */
}

/* Whether every lane of a, b, c, d is >= lim. A NaN in a, b or c may pass (min_ps
 * returns its second operand when either is NaN): the lanes here are all of one row,
 * and a row with a NaN is given NaN results by every caller, whatever its sums. */
static inline int xf_all_ge_ps(__m256 a, __m256 b, __m256 c, __m256 d, __m256 lim)
{
    __m256 low = _mm256_cmp_ps(_mm256_min_ps(_mm256_min_ps(a, b), _mm256_min_ps(c, d)), lim,
                               _CMP_NGE_UQ);
    return _mm256_testz_ps(low, low);
}

static inline int xf_all_ge_pd(__m256d a, __m256d b, __m256d c, __m256d d, __m256d lim)
{
    __m256d low = _mm256_cmp_pd(_mm256_min_pd(_mm256_min_pd(a, b), _mm256_min_pd(c, d)), lim,
                                _CMP_NGE_UQ);
    return _mm256_testz_pd(low, low);
}

/* One step of XF_SUM_BELOW's 16 lanes over 32 floats at x (e: their exps, or NULL):
 * two registers of lanes (0-7, 8-15) take two 16-entry steps in turn. */
static inline void xf_sum_step_f32(const float *x, float *e, __m256 mv, __m256 acc[2],
                                   int64_t *ties)
{
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
    const __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
    const __m256 d0 = _mm256_sub_ps(x0, mv), d1 = _mm256_sub_ps(x1, mv);
    const __m256 d2 = _mm256_sub_ps(x2, mv), d3 = _mm256_sub_ps(x3, mv);
    __m256 v0, v1, v2, v3;
    if (xf_all_ge_ps(d0, d1, d2, d3, _mm256_set1_ps(-87.0f))) {
        v0 = xf_expf_x8(d0, 1), v1 = xf_expf_x8(d1, 1);
        v2 = xf_expf_x8(d2, 1), v3 = xf_expf_x8(d3, 1);
    } else {
        v0 = xf_expf_x8(d0, 0), v1 = xf_expf_x8(d1, 0);
        v2 = xf_expf_x8(d2, 0), v3 = xf_expf_x8(d3, 0);
    }
    const __m256 t0 = _mm256_cmp_ps(x0, mv, _CMP_EQ_OQ), t1 = _mm256_cmp_ps(x1, mv, _CMP_EQ_OQ);
    const __m256 t2 = _mm256_cmp_ps(x2, mv, _CMP_EQ_OQ), t3 = _mm256_cmp_ps(x3, mv, _CMP_EQ_OQ);
    if (e) {
        _mm256_storeu_ps(e, v0);
        _mm256_storeu_ps(e + 8, v1);
        _mm256_storeu_ps(e + 16, v2);
        _mm256_storeu_ps(e + 24, v3);
    }
    acc[0] = _mm256_add_ps(_mm256_add_ps(acc[0], _mm256_andnot_ps(t0, v0)), _mm256_andnot_ps(t2, v2));
    acc[1] = _mm256_add_ps(_mm256_add_ps(acc[1], _mm256_andnot_ps(t1, v1)), _mm256_andnot_ps(t3, v3));
    *ties += xf_popcount32((unsigned)_mm256_movemask_ps(t0)
                           | (unsigned)_mm256_movemask_ps(t1) << 8
                           | (unsigned)_mm256_movemask_ps(t2) << 16
                           | (unsigned)_mm256_movemask_ps(t3) << 24);
}

/* The same for 16 doubles: four registers of lanes. */
static inline void xf_sum_step_f64(const double *x, double *e, __m256d mv, __m256d acc[4],
                                   int64_t *ties)
{
    const __m256d x0 = _mm256_loadu_pd(x), x1 = _mm256_loadu_pd(x + 4);
    const __m256d x2 = _mm256_loadu_pd(x + 8), x3 = _mm256_loadu_pd(x + 12);
    const __m256d d0 = _mm256_sub_pd(x0, mv), d1 = _mm256_sub_pd(x1, mv);
    const __m256d d2 = _mm256_sub_pd(x2, mv), d3 = _mm256_sub_pd(x3, mv);
    __m256d v0, v1, v2, v3;
    if (xf_all_ge_pd(d0, d1, d2, d3, _mm256_set1_pd(-708.0))) {
        v0 = xf_exp_x4(d0, 1), v1 = xf_exp_x4(d1, 1);
        v2 = xf_exp_x4(d2, 1), v3 = xf_exp_x4(d3, 1);
    } else {
        v0 = xf_exp_x4(d0, 0), v1 = xf_exp_x4(d1, 0);
        v2 = xf_exp_x4(d2, 0), v3 = xf_exp_x4(d3, 0);
    }
    const __m256d t0 = _mm256_cmp_pd(x0, mv, _CMP_EQ_OQ), t1 = _mm256_cmp_pd(x1, mv, _CMP_EQ_OQ);
    const __m256d t2 = _mm256_cmp_pd(x2, mv, _CMP_EQ_OQ), t3 = _mm256_cmp_pd(x3, mv, _CMP_EQ_OQ);
    if (e) {
        _mm256_storeu_pd(e, v0);
        _mm256_storeu_pd(e + 4, v1);
        _mm256_storeu_pd(e + 8, v2);
        _mm256_storeu_pd(e + 12, v3);
    }
    acc[0] = _mm256_add_pd(acc[0], _mm256_andnot_pd(t0, v0));
    acc[1] = _mm256_add_pd(acc[1], _mm256_andnot_pd(t1, v1));
    acc[2] = _mm256_add_pd(acc[2], _mm256_andnot_pd(t2, v2));
    acc[3] = _mm256_add_pd(acc[3], _mm256_andnot_pd(t3, v3));
    *ties += xf_popcount32((unsigned)_mm256_movemask_pd(t0)
                           | (unsigned)_mm256_movemask_pd(t1) << 4
                           | (unsigned)_mm256_movemask_pd(t2) << 8
                           | (unsigned)_mm256_movemask_pd(t3) << 12);
}

/* XF_SUM_BELOW by steps of XF_STEP entries; the last, partial step runs on a copy of
 * the entries padded with -inf, as XF_SUM_BELOW reads them. */
#define XF_SUM_BELOW_AVX2(T, SUF, STEP, VEC, SET1, STOREU)                               \
static inline double xf_sum_below_##SUF(const T *x, ptrdiff_t j0, ptrdiff_t j1, T m, T *e,  \
                                        double *ties_out, ptrdiff_t ahead)                \
{                                                                                         \
    const VEC mv = SET1(m);                                                               \
    double r_lane[XF_LANES] = {0.0};                                                       \
    int64_t ties = 0;                                                                     \
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += XF_CHUNK) {                                    \
        const ptrdiff_t c1 = c0 + XF_CHUNK < j1 ? c0 + XF_CHUNK : j1;                     \
        VEC acc[XF_LANES * sizeof(T) / 32];                                               \
        for (size_t q = 0; q < XF_LANES * sizeof(T) / 32; q++)                            \
            acc[q] = SET1(0);                                                             \
        ptrdiff_t k = c0;                                                                 \
        for (; k + STEP <= c1; k += STEP) {                                               \
            xf_prefetch_at(x + k, STEP * (ptrdiff_t)sizeof(T), ahead);                    \
            if (e)                                                                        \
                xf_prefetch_at(e + k, STEP * (ptrdiff_t)sizeof(T), ahead);                \
            xf_sum_step_##SUF(x + k, e ? e + k : NULL, mv, acc, &ties);                   \
        }                                                                                 \
        if (k < c1) {                                                                     \
            T xs[STEP], es[STEP];                                                         \
            for (ptrdiff_t j = 0; j < STEP; j++)                                          \
                xs[j] = k + j < c1 ? x[k + j] : (T)-INFINITY;                             \
            xf_sum_step_##SUF(xs, es, mv, acc, &ties);                              \
            if (e)                                                                        \
                for (ptrdiff_t j = 0; j < STEP && k + j < c1; j++)                        \
                    e[k + j] = es[j];                                                     \
        }                                                                                 \
        T a[XF_LANES];                                                                    \
        for (size_t q = 0; q < XF_LANES * sizeof(T) / 32; q++)                            \
            STOREU(a + q * (32 / sizeof(T)), acc[q]);                                     \
        for (int l = 0; l < XF_LANES; l++)                                                \
            r_lane[l] += (double)a[l];                                                    \
    }                                                                                     \
    *ties_out += (double)ties;                                                            \
    return xf_fold_lanes(r_lane);                                                         \
}

XF_SUM_BELOW_AVX2(float, f32, 32, __m256, _mm256_set1_ps, _mm256_storeu_ps)
XF_SUM_BELOW_AVX2(double, f64, 16, __m256d, _mm256_set1_pd, _mm256_storeu_pd)
#else
XF_SUM_BELOW(float, f32, xf_expf, float)
XF_SUM_BELOW(double, f64, xf_exp, double)
#endif

/* The max of x[j0:j1] and whether any entry is NaN, in XF_MAX_BYTES of lanes: an omp
 * simd max reduction keeps one register, and each vmaxps waits for the one before (4
 * cycles on Intel): that was a fifth of the float32 loss's time on an AVX-512 Xeon. The
 * lanes hold four registers of maxima; one unordered compare covers two entries. NaN
 * entries are left out of the max (only the flag tells of them); the order of the
 * comparisons changes at most the sign of a zero max, which no result depends on. */
#if defined(__GNUC__) || defined(__clang__)
#define XF_UNORDERED(a, b) __builtin_isunordered(a, b)   /* one compare for both */
#else
#define XF_UNORDERED(a, b) (((a) != (a)) | ((b) != (b)))  /* MSVC's is a library call */
#endif
#if defined(__AVX512F__)
#define XF_MAX_BYTES 256
#elif defined(__AVX__)
#define XF_MAX_BYTES 128
#else
#define XF_MAX_BYTES 64
#endif
#define XF_MAX_STEP(T, j)                                                                 \
    {                                                                                     \
        const ptrdiff_t js = (j);                                                         \
        XF_SIMD                                                                           \
        for (int l = 0; l < H; l++) {                                                     \
            T a = x[js + l], b = x[js + H + l];                                           \
            lo[l] = a > lo[l] ? a : lo[l];                                                \
            hi[l] = b > hi[l] ? b : hi[l];                                                \
            nl[l] |= XF_UNORDERED(a, b);                                                  \
        }                                                                                 \
    }
#define XF_MAX_LANES(T, SUF)                                                              \
static inline T xf_max_range_##SUF(const T *x, ptrdiff_t j0, ptrdiff_t j1, int *has_nan)  \
{                                                                                         \
    enum { H = XF_MAX_BYTES / (2 * sizeof(T)) };  /* half the lanes */                    \
    T lo[H], hi[H];                                                                       \
    int nl[H];                                                                            \
    for (int l = 0; l < H; l++) {                                                         \
        lo[l] = hi[l] = -INFINITY;                                                        \
        nl[l] = 0;                                                                        \
    }                                                                                     \
    ptrdiff_t j = j0;                                                                     \
    for (; j + 2 * H <= j1; j += 2 * H)                                                   \
        XF_MAX_STEP(T, j)                                                                 \
    T m = -INFINITY;                                                                      \
    int nan = 0;                                                                          \
    if (j > j0) {                                                                         \
        /* the rest by one step that ends at j1 and overlaps the one before: an entry     \
         * seen twice changes neither a max nor the NaN test (and no scalar tail) */      \
        if (j < j1)                                                                       \
            XF_MAX_STEP(T, j1 - 2 * H)                                                    \
        XF_PRAGMA(omp simd reduction(max:m) reduction(|:nan))                             \
        for (int l = 0; l < H; l++) {                                                     \
            T v = hi[l] > lo[l] ? hi[l] : lo[l];                                          \
            m = v > m ? v : m;                                                            \
            nan |= nl[l];                                                                 \
        }                                                                                 \
    } else {                            /* too short for the lanes */                     \
        XF_PRAGMA(omp simd reduction(max:m) reduction(|:nan))                             \
        for (ptrdiff_t q = j0; q < j1; q++) {                                             \
            T v = x[q];                                                                   \
            m = v > m ? v : m;                                                            \
            nan |= v != v;                                                                \
        }                                                                                 \
    }                                                                                     \
    *has_nan = nan;                                                                       \
    return m;                                                                             \
}
XF_MAX_LANES(float, f32)
XF_MAX_LANES(double, f64)

#define XF_ROW_PRIMITIVES(T, SUF, EXP, ACC)                                               \
static inline T xf_max_##SUF(const T *x, ptrdiff_t n, int *has_nan)                       \
{                                                                                         \
    return xf_max_range_##SUF(x, 0, n, has_nan);                                          \
}                                                                                         \
                                                                                          \
static inline double xf_sumexp_##SUF(const T *x, ptrdiff_t n, T m, T *e)                  \
{                                                                                         \
    double ties = 0.0;                                                                    \
    double r = xf_sum_below_##SUF(x, 0, n, m, e, &ties, XF_PF_AHEAD);                     \
    return r + (ties - 1.0);                                                              \
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
static XF_ALWAYS_INLINE double xf_online_sumexp_at_##SUF(const T *x, ptrdiff_t n, T *e,  \
                                               T *cmax,                                   \
                                               T *m_out, int *has_nan, ptrdiff_t ahead)   \
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
        int nan_c;                                                                        \
        T mc = xf_max_range_##SUF(x, b0, b1, &nan_c);                                     \
        nan |= nan_c;                                                                     \
        cmax[c] = mc;                                                                     \
        if (mc == -INFINITY) {          /* a fully masked block adds nothing */           \
            if (e)                                                                        \
                for (ptrdiff_t j = b0; j < b1; j++)                                       \
                    e[j] = 0;                                                             \
            continue;                                                                     \
        }                                                                                 \
        double ties_c = 0.0;                                                              \
        double sum_c = xf_sum_below_##SUF(x, b0, b1, mc, e, &ties_c, ahead);              \
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
/* short rows: a copy of its own, so that each copy prefetches a constant distance     \
 * (not inlined: the callers keep one copy of the sweep inline, the long rows') */       \
static XF_NOINLINE double xf_online_sumexp_near_##SUF(const T *x, ptrdiff_t n, T *e,      \
                                                      T *cmax, T *m_out, int *has_nan)    \
{                                                                                         \
    return xf_online_sumexp_at_##SUF(x, n, e, cmax, m_out, has_nan, XF_PF_NEAR);         \
}                                                                                         \
                                                                                          \
static inline double xf_online_sumexp_##SUF(const T *x, ptrdiff_t n, T *e, T *cmax,       \
                                            T *m_out, int *has_nan)                       \
{                                                                                         \
    if (n >= XF_SHORT && n * (ptrdiff_t)sizeof(T) <= XF_PF_SHORT_ROWS)                    \
        return xf_online_sumexp_near_##SUF(x, n, e, cmax, m_out, has_nan);                \
    return xf_online_sumexp_at_##SUF(x, n, e, cmax, m_out, has_nan, XF_PF_AHEAD);         \
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

/* ---- cross-entropy of many short rows at once -----------------------------------------
 * small_ce: for a tile of up to XF_TILE rows of n < XF_SHORT logits, the loss against
 * class indices and its gradient, with the vector lanes across rows (a short row alone
 * would leave most lanes idle and pay a vector loop's set-up): the rows are transposed
 * into the tile, and the gradient transposed back. Per row i: t[i] a valid class, or -1
 * for a row that counts for nothing (loss 0, gradient 0); wt[i] its class weight; g[i]
 * its upstream gradient (t, wt, g and loss have XF_TILE entries, the lanes past `rows`
 * set to -1, 0, 0); z the z-loss. The same formulas as ce_index_tail in
 * _cross_entropy_kernels.pyx: loss = wt (m - x_t + log1p(r)) + z lse^2, gradient
 * alpha e_j with alpha = g (wt + 2 z lse) / (1 + r), and the target entry without the
 * cancellation of p_t - 1. A row whose max is not finite, or with a NaN, gives NaN.
 */
#define XF_TILE 16

/* Sum of a tile's XF_TILE (16) values as a fixed tree: vectorised, and with no chain
 * of dependent adds through the rows. */
static inline double xf_sum_tile(const double *a)
{
    double b[8], c[4];
    for (int l = 0; l < 8; l++)
        b[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++)
        c[l] = b[l] + b[l + 4];
    return (c[0] + c[2]) + (c[1] + c[3]);
}

/* Moving a tile between its rows in memory (row i at x + i n, n < XF_SHORT) and its
 * columns v[j][i], lanes past `rows` zero. */
#define XF_TILE_IN(T, SUF)                                                                \
static inline void xf_tile_in_##SUF(const T *x, ptrdiff_t rows, ptrdiff_t n,              \
                                    T v[XF_SHORT][XF_TILE])                               \
{                                                                                         \
    if (rows == XF_TILE) {              /* lanes across rows: strided (gather) loads */   \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            XF_SIMD                                                                       \
            for (ptrdiff_t i = 0; i < XF_TILE; i++)                                       \
                v[j][i] = x[i * n + j];                                                   \
        }                                                                                 \
    } else {                                                                              \
        for (ptrdiff_t j = 0; j < n; j++)                                                 \
            for (ptrdiff_t i = 0; i < XF_TILE; i++)                                       \
                v[j][i] = i < rows ? x[i * n + j] : (T)0;                                 \
    }                                                                                     \
}

#define XF_TILE_OUT(T, SUF)                                                               \
static inline void xf_tile_out_##SUF(T v[XF_SHORT][XF_TILE], ptrdiff_t rows, ptrdiff_t n, \
                                     T *x)                                                \
{                                                                                         \
    if (rows == XF_TILE) {                                                                \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            XF_SIMD                                                                       \
            for (ptrdiff_t i = 0; i < XF_TILE; i++)                                       \
                x[i * n + j] = v[j][i];                                                   \
        }                                                                                 \
    } else {                                                                              \
        for (ptrdiff_t i = 0; i < rows; i++)                                              \
            for (ptrdiff_t j = 0; j < n; j++)                                             \
                x[i * n + j] = v[j][i];                                                   \
    }                                                                                     \
}

#if defined(__AVX512F__) && !defined(XF_PORTABLE)
/* A full tile of float rows can also come in by 16-lane gathers, one per column, where
 * GCC builds the lanes from scalar loads and inserts: on an AVX-512 Xeon the short-row
 * loss+grad took 44.6 ms instead of 49.1 for 6553600x10, the softmax 32 instead of 38.
 * But on CPUs whose microcode mitigates Gather Data Sampling (Intel, Skylake to Ice
 * Lake) a gather is several times slower; so gathers are used only where the Python
 * layer has found the CPU not affected (xf_set_tile_gather, at import). The same values
 * either way. */
static int xf_tile_gather = 0;
XF_TILE_IN(float, f32_inserts)
static inline void xf_tile_in_f32(const float *x, ptrdiff_t rows, ptrdiff_t n,
                                  float v[XF_SHORT][XF_TILE])
{
    if (rows == XF_TILE && xf_tile_gather) {
        const __m512i idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((int)n));
        for (ptrdiff_t j = 0; j < n; j++)
            _mm512_storeu_ps(v[j], _mm512_i32gather_ps(idx, x + j, 4));
        return;
    }
    xf_tile_in_f32_inserts(x, rows, n, v);
}

static inline void xf_set_tile_gather(int on) { xf_tile_gather = on != 0; }
#else
XF_TILE_IN(float, f32)
static inline void xf_set_tile_gather(int on) { (void)on; }
#endif
XF_TILE_IN(double, f64)
XF_TILE_OUT(double, f64)
#if defined(__AVX512F__) && !defined(XF_PORTABLE)
/* With AVX-512 a float tile's gradient goes out through registers: a 16x16 transpose,
 * then one masked store per row, where the loop above takes 16 n extracts and scalar
 * stores (1.2x faster loss+grad on 1048576x10). The same way in was slower than the
 * compiler's loads and inserts, so tiles come in as above. */
static inline void xf_transpose16_ps(__m512 r[16])
{
    __m512 t[16];
    for (int k = 0; k < 8; k++) {       /* pairs of rows interleaved */
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {       /* r[4k + c], 128-bit lane L: column 4L + c of rows 4k.. */
        __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
        __m512d c = _mm512_castps_pd(t[4 * k + 2]), d = _mm512_castps_pd(t[4 * k + 3]);
        r[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; c++) {       /* gather lane L of r[c], r[4 + c], r[8 + c], r[12 + c] */
        __m512 s0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        __m512 s1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        __m512 s2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        __m512 s3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(s0, s2, 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(s1, s3, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(s0, s2, 0xdd);
        t[12 + c] = _mm512_shuffle_f32x4(s1, s3, 0xdd);
    }
    for (int k = 0; k < 16; k++)
        r[k] = t[k];
}

static inline void xf_tile_out_f32(float v[XF_SHORT][XF_TILE], ptrdiff_t rows, ptrdiff_t n,
                                   float *x)
{
    const __mmask16 cols = (__mmask16)((1u << n) - 1u);
    __m512 r[16];
    for (ptrdiff_t j = 0; j < 16; j++)
        r[j] = j < n ? _mm512_loadu_ps(v[j]) : _mm512_setzero_ps();
    xf_transpose16_ps(r);
    for (ptrdiff_t i = 0; i < rows; i++)
        _mm512_mask_storeu_ps(x + i * n, cols, r[i]);
}
#else
XF_TILE_OUT(float, f32)
#endif

/* A tile's exps: ev[j][i] = exp(v[j][i] - m[i]), their sums below the max into acc[i]
 * and the ties into ties[i]. A row that is not regular (NaN, +inf, all -inf) can make
 * v - m NaN: it is taken as 0, so no NaN reaches the exp, and the caller discards the
 * row's sums and exps. */
#define XF_TILE_EXPS(T, SUF, EXP)                                                         \
static inline void xf_tile_exps_##SUF(T v[XF_SHORT][XF_TILE], ptrdiff_t n, const T *m,    \
                                      T ev[XF_SHORT][XF_TILE], T *acc, T *ties)           \
{                                                                                         \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            T a = v[j][i], d = a - m[i];                                                  \
            T below = a != m[i] ? (T)1 : (T)0;                                            \
            T ex = EXP(d <= 0 ? d : (T)0);                                                \
            ev[j][i] = ex;                                                                \
            acc[i] += ex * below;                                                         \
            ties[i] += (T)1 - below;                                                      \
        }                                                                                 \
    }                                                                                     \
}

XF_TILE_EXPS(double, f64, xf_exp)
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__) && !defined(XF_PORTABLE)
/* By hand with AVX2, as the exp-sum loop is (XF_SUM_BELOW_AVX2): the same bits. The
 * lanes are 16 rows here, so the fast path's test must not let one row's NaN hide
 * another's entry far below its max: NaN-safe (NGE_UQ), and v - m is NaN-free anyway. */
static inline void xf_tile_exps_f32(float v[XF_SHORT][XF_TILE], ptrdiff_t n, const float *m,
                                    float ev[XF_SHORT][XF_TILE], float *acc, float *ties)
{
    const __m256 m0 = _mm256_loadu_ps(m), m1 = _mm256_loadu_ps(m + 8);
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(-87.0f);
    const __m256 zero = _mm256_setzero_ps();
    __m256 a0 = _mm256_loadu_ps(acc), a1 = _mm256_loadu_ps(acc + 8);
    __m256 t0 = _mm256_loadu_ps(ties), t1 = _mm256_loadu_ps(ties + 8);
    for (ptrdiff_t j = 0; j < n; j++) {
        const __m256 x0 = _mm256_loadu_ps(v[j]), x1 = _mm256_loadu_ps(v[j] + 8);
        __m256 d0 = _mm256_sub_ps(x0, m0), d1 = _mm256_sub_ps(x1, m1);
        d0 = _mm256_and_ps(d0, _mm256_cmp_ps(d0, zero, _CMP_LE_OQ));    /* d <= 0 ? d : 0 */
        d1 = _mm256_and_ps(d1, _mm256_cmp_ps(d1, zero, _CMP_LE_OQ));
        const __m256 low = _mm256_cmp_ps(_mm256_min_ps(d0, d1), lim, _CMP_NGE_UQ);
        const int normal = _mm256_testz_ps(low, low);
        const __m256 e0 = xf_expf_x8(d0, normal), e1 = xf_expf_x8(d1, normal);
        const __m256 q0 = _mm256_cmp_ps(x0, m0, _CMP_EQ_OQ), q1 = _mm256_cmp_ps(x1, m1, _CMP_EQ_OQ);
        _mm256_storeu_ps(ev[j], e0);
        _mm256_storeu_ps(ev[j] + 8, e1);
        a0 = _mm256_add_ps(a0, _mm256_andnot_ps(q0, e0));
        a1 = _mm256_add_ps(a1, _mm256_andnot_ps(q1, e1));
        t0 = _mm256_add_ps(t0, _mm256_and_ps(q0, one));
        t1 = _mm256_add_ps(t1, _mm256_and_ps(q1, one));
    }
    _mm256_storeu_ps(acc, a0);
    _mm256_storeu_ps(acc + 8, a1);
    _mm256_storeu_ps(ties, t0);
    _mm256_storeu_ps(ties + 8, t1);
}
#else
XF_TILE_EXPS(float, f32, xf_expf)
#endif

#define XF_SMALL_CE(T, SUF, EXP)                                                          \
static inline double xf_small_ce_##SUF(const T *x, ptrdiff_t rows, ptrdiff_t n,           \
        const int64_t *t, const double *wt, const double *g, double z,                    \
        double *loss, T *grad)                                                            \
{                                                                                         \
    T v[XF_SHORT][XF_TILE], ev[XF_SHORT][XF_TILE];                                        \
    T m[XF_TILE], acc[XF_TILE], ties[XF_TILE], nan[XF_TILE], used[XF_TILE];               \
    T tf[XF_TILE], fixt[XF_TILE], scf[XF_TILE];                                           \
    double xt[XF_TILE], et[XF_TILE], sc[XF_TILE], fix[XF_TILE], rr[XF_TILE], ll[XF_TILE]; \
    xf_prefetch_ahead(x, rows * n * (ptrdiff_t)sizeof(T));                                \
    if (grad)                                                                             \
        xf_prefetch_ahead(grad, rows * n * (ptrdiff_t)sizeof(T));                         \
    xf_tile_in_##SUF(x, rows, n, v);                                                      \
    XF_SIMD                                                                               \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        m[i] = -INFINITY;                                                                 \
        nan[i] = 0;                                                                       \
        acc[i] = 0;                                                                       \
        ties[i] = 0;                                                                      \
    }                                                                                     \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            T a = v[j][i];                                                                \
            m[i] = a > m[i] ? a : m[i];                                                   \
            nan[i] = a != a ? (T)1 : nan[i];                                              \
        }                                                                                 \
    }                                                                                     \
    xf_tile_exps_##SUF(v, n, m, ev, acc, ties);                                           \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {     /* the targets' logits and exps */      \
        int64_t ti = i < rows ? t[i] : -1;                                                \
        used[i] = ti >= 0 ? (T)1 : (T)0;                                                  \
        xt[i] = ti >= 0 ? (double)v[ti][i] : 0.0;                                         \
        et[i] = ti >= 0 ? (double)ev[ti][i] : 0.0;                                        \
    }                                                                                     \
    XF_SIMD                                     /* the loss; loss[] has XF_TILE entries */\
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        int bad = nan[i] != 0 || !(m[i] > -INFINITY && m[i] < INFINITY);                  \
        double r = bad ? 0.0 : (double)acc[i] + ((double)ties[i] - 1.0);                  \
        double mi = bad ? 0.0 : (double)m[i];                                             \
        double log_s = xf_log1p_f64(r), lse = mi + log_s;                                 \
        double wi = wt[i];                                                                \
        double li = (wi != 0.0 ? wi * ((mi - xt[i]) + log_s) : 0.0) + z * lse * lse;      \
        loss[i] = used[i] == 0 ? 0.0 : (bad ? (double)NAN : li);                          \
        rr[i] = r;                                                                        \
        ll[i] = bad ? (double)NAN : lse;                                                  \
        xt[i] = xt[i] == mi ? 1.0 : 0.0;          /* now: is the target the max? */       \
    }                                                                                     \
    const double total = xf_sum_tile(loss);                                               \
    if (!grad)                                                                            \
        return total;                                                                     \
    XF_SIMD                                     /* the gradient's row coefficients */     \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        double r = rr[i], lse = ll[i], wi = wt[i], gi = g[i];                             \
        double rest = xt[i] != 0.0 ? r : 1.0 + (r - et[i]);                               \
        double coef = wi + 2.0 * z * lse, inv = 1.0 / (1.0 + r);                          \
        fix[i] = et[i] * inv < 0.5 ? gi * (coef * (et[i] * inv) - wi)   /* small p_t */   \
                                   : gi * (-coef * rest * inv + 2.0 * z * lse);           \
        sc[i] = used[i] == 0 ? 0.0 : gi * coef * inv;   /* NaN for a bad row, via lse */  \
    }                                                                                     \
    XF_SIMD                                     /* the target entries, as T lanes */      \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        tf[i] = (T)t[i];                        /* -1 past rows: no class */              \
        fixt[i] = sc[i] == sc[i] ? (T)fix[i] : (T)NAN;                                    \
        scf[i] = (T)sc[i];                                                                \
    }                                                                                     \
    /* Scaled in T, as the long rows are (a product in double would convert every lane    \
     * there and back), with the target entry put in by a blend: scalar stores into ev    \
     * followed by the vector loads of the transpose would stall store forwarding. */     \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++)                                           \
            ev[j][i] = used[i] == 0 ? (T)0                                                \
                                    : (tf[i] == (T)j ? fixt[i] : ev[j][i] * scf[i]);      \
    }                                                                                     \
    xf_tile_out_##SUF(ev, rows, n, grad);                                                 \
    return total;                                                                         \
}

/* small_softmax: softmax (kind 0), log_softmax (1) or logsumexp (2) of a tile of up to
 * XF_TILE rows of n < XF_SHORT entries, lanes across rows as in small_ce (a short row
 * alone leaves most vector lanes idle). out: the rows' outputs (rows x n entries, or
 * rows for logsumexp). The formulas of _softmax_kernels.pyx's row functions, but with
 * the sums of exps in T lanes, as small_ce takes them, and xf_log1p_f64 for log1p: float
 * results differ from the row functions' by a few ulp at most (more, counted in ulp,
 * where logsumexp cancels to near 0). A row whose max is not finite, or with a NaN,
 * gives NaN (logsumexp: the max where it is +-inf and there is no NaN). */
#define XF_SMALL_SOFTMAX(T, SUF)                                                          \
static inline void xf_small_softmax_##SUF(const T *x, ptrdiff_t rows, ptrdiff_t n,        \
                                          int kind, T *out)                               \
{                                                                                         \
    T v[XF_SHORT][XF_TILE], ev[XF_SHORT][XF_TILE];                                        \
    T m[XF_TILE], acc[XF_TILE], ties[XF_TILE], nan[XF_TILE], scf[XF_TILE];                \
    double ls[XF_TILE], md[XF_TILE], lse[XF_TILE];                                        \
    xf_prefetch_ahead(x, rows * n * (ptrdiff_t)sizeof(T));                                \
    if (kind != 2)                                                                        \
        xf_prefetch_ahead(out, rows * n * (ptrdiff_t)sizeof(T));                          \
    xf_tile_in_##SUF(x, rows, n, v);                                                      \
    XF_SIMD                                                                               \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        m[i] = -INFINITY;                                                                 \
        nan[i] = 0;                                                                       \
        acc[i] = 0;                                                                       \
        ties[i] = 0;                                                                      \
    }                                                                                     \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            T a = v[j][i];                                                                \
            m[i] = a > m[i] ? a : m[i];                                                   \
            nan[i] = a != a ? (T)1 : nan[i];                                              \
        }                                                                                 \
    }                                                                                     \
    xf_tile_exps_##SUF(v, n, m, ev, acc, ties);                                           \
    XF_SIMD                                                                               \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        int bad = nan[i] != 0 || !(m[i] > -INFINITY && m[i] < INFINITY);                  \
        double r = bad ? 0.0 : (double)acc[i] + ((double)ties[i] - 1.0);                  \
        ls[i] = bad ? (double)NAN : xf_log1p_f64(r);                                      \
        md[i] = bad ? 0.0 : (double)m[i];                                                 \
        scf[i] = bad ? (T)NAN : (T)(1.0 / (1.0 + r));                                     \
        lse[i] = nan[i] != 0 ? (double)NAN : (bad ? (double)m[i] : md[i] + ls[i]);        \
    }                                                                                     \
    if (kind == 2) {                                                                      \
        for (ptrdiff_t i = 0; i < rows; i++)                                              \
            out[i] = (T)lse[i];                                                           \
        return;                                                                           \
    }                                                                                     \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        if (kind == 0) {                                                                  \
            XF_SIMD                                                                       \
            for (ptrdiff_t i = 0; i < XF_TILE; i++)                                       \
                ev[j][i] = ev[j][i] * scf[i];                                             \
        } else {                                                                          \
            XF_SIMD                                                                       \
            for (ptrdiff_t i = 0; i < XF_TILE; i++)                                       \
                ev[j][i] = (T)(((double)v[j][i] - md[i]) - ls[i]);                        \
        }                                                                                 \
    }                                                                                     \
    xf_tile_out_##SUF(ev, rows, n, out);                                                  \
}

XF_ROW_PRIMITIVES(float, f32, xf_expf, float)
XF_ROW_PRIMITIVES(double, f64, xf_exp, double)
XF_ONLINE_PRIMITIVES(float, f32, xf_expf, float)
XF_ONLINE_PRIMITIVES(double, f64, xf_exp, double)
XF_SMALL_CE(float, f32, xf_expf)
XF_SMALL_CE(double, f64, xf_exp)
XF_SMALL_SOFTMAX(float, f32)
XF_SMALL_SOFTMAX(double, f64)
XF_BCE_LOGITS(float, f32, xf_expf, xf_log1p_unit_inv_f32)
XF_BCE_LOGITS(double, f64, xf_exp, xf_log1p_unit_inv_f64)
XF_FOCAL_LOGITS(float, f32)
XF_FOCAL_LOGITS(double, f64)

#endif
