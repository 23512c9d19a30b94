/* Prefetching, and the row primitives of a stable softmax: the exp-sum of a row below
 * its max (XF_SUM_BELOW, with hand-written AVX2 and AVX-512 variants in xent_avx2.h and
 * xent_avx512.h), the row max, the scaling, the one-sweep (online) sums, and the sums of
 * soft targets.
 *
 * Part of xent_simd.h; included by it after xent_math.h.
 */
#include "xent_math.h"

#ifndef XENT_ROWS_H
#define XENT_ROWS_H

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

/* XF_ROWS rows at once. A row's exp-sum is a chain of dependent steps (the max, then
 * the exps, then the horizontal sums), and a row of a hundred classes has too few
 * entries for the core to overlap one row's chain with the next's: xf_sum_below_rows
 * takes the steps of XF_ROWS rows of n entries (their own maxima m[q]) in turn, each
 * row in its own lanes, so the chains run side by side. Each row's sum, ties and
 * stored exps are bitwise xf_sum_below's (same steps, lanes and order); on an AVX-512
 * Xeon a 100-class row's sweep went from 54 to 35 ns. The portable build, with no
 * hand-written loop, sums the rows one after the other. */
#define XF_ROWS 4
/* ...for rows of at most this many bytes: on longer rows the chains overlap by
 * themselves, and taking four rows' loads and stores at once made loss + gradient of
 * 16384x512 and 1024x1000 float32 slower */
#define XF_ROWS_MAX_BYTES 1024
#define XF_SUM_BELOW_ROWS_SERIAL(T, SUF)                                                  static inline void xf_sum_below_rows_##SUF(const T *const *x, ptrdiff_t n, const T *m,                                               T *const *e, double *r, double *ties,                                                     ptrdiff_t ahead)                               {                                                                                             for (int q = 0; q < XF_ROWS; q++)                                                             r[q] = xf_sum_below_##SUF(x[q], 0, n, m[q], e ? e[q] : NULL, &ties[q], ahead);   }

#if defined(__AVX512F__) && !defined(XF_PORTABLE)
#include "xent_avx512.h"
#elif defined(__AVX2__) && defined(__FMA__) && !defined(XF_PORTABLE)
#include "xent_avx2.h"
#else
XF_SUM_BELOW(float, f32, xf_expf, float)
XF_SUM_BELOW(double, f64, xf_exp, double)
XF_SUM_BELOW_ROWS_SERIAL(float, f32)
XF_SUM_BELOW_ROWS_SERIAL(double, f64)
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
/* xf_online_sumexp of XF_ROWS rows of XF_SHORT to XF_BLOCK entries (x[q], with e[q]      \
 * when e != NULL), by xf_sum_below_rows: the same r_out[q], cmax[q], m_out[q] and     \
 * has_nan[q], bit for bit. A row whose max is -inf (all masked) sends them all        \
 * through xf_online_sumexp. */                                                         \
static inline void xf_online_sumexp_rows_##SUF(const T *const *x, ptrdiff_t n,           \
                                               T *const *e, T *cmax, T *m_out,            \
                                               int *has_nan, double *r_out)               \
{                                                                                         \
    double ties[XF_ROWS];                                                                 \
    int masked = 0;                                                                       \
    for (int q = 0; q < XF_ROWS; q++) {                                                   \
        m_out[q] = cmax[q] = xf_max_range_##SUF(x[q], 0, n, &has_nan[q]);                 \
        masked |= m_out[q] == -INFINITY;                                                  \
        ties[q] = 0.0;                                                                    \
    }                                                                                     \
    if (masked) {                                                                         \
        for (int q = 0; q < XF_ROWS; q++)                                                 \
            r_out[q] = xf_online_sumexp_##SUF(x[q], n, e ? e[q] : NULL, &cmax[q],         \
                                              &m_out[q], &has_nan[q]);                    \
        return;                                                                           \
    }                                                                                     \
    xf_sum_below_rows_##SUF(x, n, m_out, e, r_out, ties,                                  \
                            n * (ptrdiff_t)sizeof(T) <= XF_PF_SHORT_ROWS ? XF_PF_NEAR     \
                                                                         : XF_PF_AHEAD);  \
    for (int q = 0; q < XF_ROWS; q++)                                                     \
        r_out[q] = r_out[q] + (ties[q] - 1.0) + 0.0;    /* as xf_online_sumexp adds */    \
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
/* ---- the sums of soft targets --------------------------------------------------------
 * With per-class coefficients a_j = (keep y_j + c) w_j (y the target probabilities, w the
 * class weights; NULL: y_j = 0, w_j = 1), xf_soft_sums returns gap = sum_j a_j (m - x_j)
 * over the classes with a_j != 0 (0 log 0 = 0: a class without mass adds nothing, even
 * at a -inf logit) and sets *big_w = sum_j a_j. In XF_LANES double lanes, added in the
 * same order at every instruction set: as one scalar chain of dependent adds, these sums
 * took three times the exp-sum's time (label smoothing and probability targets made a
 * loss 3-4x slower than with class indices). */
#define XF_SOFT_TERM(T)                                                                   \
    {                                                                                     \
        double a_ = has_y ? keep * (double)y[j + l] + c : c;                             \
        if (has_w)                                                                        \
            a_ = a_ * (double)w[j + l];                                                   \
        w_l[l] += a_;                                                                     \
        gap_l[l] += a_ != 0.0 ? a_ * (m - (double)x[j + l]) : 0.0;                       \
    }
#define XF_SOFT_SUMS(T, SUF)                                                              \
static XF_ALWAYS_INLINE double xf_soft_sums_at_##SUF(const T *x, const T *y, const T *w,   \
                                                    ptrdiff_t n, double m, double keep,   \
                                                    double c, int has_y, int has_w,       \
                                                    double *big_w)                        \
{                                                                                         \
    double gap_l[XF_LANES], w_l[XF_LANES];                                                \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        gap_l[l] = w_l[l] = 0.0;                                                          \
    ptrdiff_t j = 0;                                                                      \
    for (; j + XF_LANES <= n; j += XF_LANES) {                                            \
        XF_SIMD                                                                           \
        for (int l = 0; l < XF_LANES; l++)                                                \
            XF_SOFT_TERM(T)                                                               \
    }                                                                                     \
    for (int l = 0; l < n - j; l++)    /* the rest, into the first lanes */               \
        XF_SOFT_TERM(T)                                                                   \
    *big_w = xf_fold_lanes(w_l);                                                          \
    return xf_fold_lanes(gap_l);                                                          \
}                                                                                         \
                                                                                          \
static inline double xf_soft_sums_##SUF(const T *x, const T *y, const T *w, ptrdiff_t n,  \
                                        double m, double keep, double c, double *big_w)   \
{                                                                                         \
    if (y && w)                                                                           \
        return xf_soft_sums_at_##SUF(x, y, w, n, m, keep, c, 1, 1, big_w);                \
    if (y)                                                                                \
        return xf_soft_sums_at_##SUF(x, y, w, n, m, keep, c, 1, 0, big_w);                \
    if (w)                                                                                \
        return xf_soft_sums_at_##SUF(x, y, w, n, m, keep, c, 0, 1, big_w);                \
    return xf_soft_sums_at_##SUF(x, y, w, n, m, keep, c, 0, 0, big_w);                    \
}
#endif  /* XENT_ROWS_H */
