#ifndef XENT_AVX2_H
#define XENT_AVX2_H

/* Included by xent_rows.h only, in a build for AVX2 + FMA (and not AVX-512) without
 * XF_PORTABLE: it defines xf_sum_below_f32 and xf_sum_below_f64 in the portable
 * XF_SUM_BELOW's place. xent_tiles.h's AVX2 tile exps use its xf_expf_x8.
 */
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

/* xf_sum_below of XF_ROWS rows of n entries, their steps in turn (xent_rows.h) */
#define XF_SUM_BELOW_ROWS_AVX2(T, SUF, STEP, VEC, SET1, STOREU)                          \
static inline void xf_sum_below_rows_##SUF(const T *const *x, ptrdiff_t n, const T *m,    \
                                           T *const *e, double *r, double *ties_out,      \
                                           ptrdiff_t ahead)                               \
{                                                                                         \
    enum { NV = XF_LANES * sizeof(T) / 32 };    /* registers of lanes per row */          \
    VEC mv[XF_ROWS];                                                                      \
    double r_lane[XF_ROWS][XF_LANES];                                                     \
    int64_t ties[XF_ROWS];                                                                \
    for (int q = 0; q < XF_ROWS; q++) {                                                   \
        mv[q] = SET1(m[q]);                                                               \
        ties[q] = 0;                                                                      \
        for (int l = 0; l < XF_LANES; l++)                                                \
            r_lane[q][l] = 0.0;                                                           \
    }                                                                                     \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {                                      \
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;                       \
        VEC acc[XF_ROWS][NV];                                                             \
        for (int q = 0; q < XF_ROWS; q++)                                                 \
            for (int v = 0; v < NV; v++)                                                  \
                acc[q][v] = SET1(0);                                                      \
        ptrdiff_t k = c0;                                                                 \
        for (; k + STEP <= c1; k += STEP)                                                 \
            for (int q = 0; q < XF_ROWS; q++) {                                           \
                xf_prefetch_at(x[q] + k, STEP * (ptrdiff_t)sizeof(T), ahead);             \
                if (e)                                                                    \
                    xf_prefetch_at(e[q] + k, STEP * (ptrdiff_t)sizeof(T), ahead);         \
                xf_sum_step_##SUF(x[q] + k, e ? e[q] + k : NULL, mv[q], acc[q], &ties[q]); \
            }                                                                             \
        if (k < c1)                                                                       \
            for (int q = 0; q < XF_ROWS; q++) {                                           \
                T xs[STEP], es[STEP];                                                     \
                for (ptrdiff_t j = 0; j < STEP; j++)                                      \
                    xs[j] = k + j < c1 ? x[q][k + j] : (T)-INFINITY;                      \
                xf_sum_step_##SUF(xs, es, mv[q], acc[q], &ties[q]);                       \
                if (e)                                                                    \
                    for (ptrdiff_t j = 0; j < STEP && k + j < c1; j++)                    \
                        e[q][k + j] = es[j];                                              \
            }                                                                             \
        for (int q = 0; q < XF_ROWS; q++) {                                               \
            T a[XF_LANES];                                                                \
            for (int v = 0; v < NV; v++)                                                  \
                STOREU(a + v * (32 / sizeof(T)), acc[q][v]);                              \
            for (int l = 0; l < XF_LANES; l++)                                            \
                r_lane[q][l] += (double)a[l];                                             \
        }                                                                                 \
    }                                                                                     \
    for (int q = 0; q < XF_ROWS; q++) {                                                   \
        ties_out[q] += (double)ties[q];                                                   \
        r[q] = xf_fold_lanes(r_lane[q]);                                                  \
    }                                                                                     \
}

XF_SUM_BELOW_AVX2(float, f32, 32, __m256, _mm256_set1_ps, _mm256_storeu_ps)
XF_SUM_BELOW_AVX2(double, f64, 16, __m256d, _mm256_set1_pd, _mm256_storeu_pd)
XF_SUM_BELOW_ROWS_AVX2(float, f32, 32, __m256, _mm256_set1_ps, _mm256_storeu_ps)
XF_SUM_BELOW_ROWS_AVX2(double, f64, 16, __m256d, _mm256_set1_pd, _mm256_storeu_pd)
#endif  /* XENT_AVX2_H */
