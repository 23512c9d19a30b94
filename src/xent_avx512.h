#ifndef XENT_AVX512_H
#define XENT_AVX512_H

/* Included by xent_rows.h only, in a build for AVX-512 without XF_PORTABLE: it defines
 * xf_sum_below_f32 and xf_sum_below_f64 in the portable XF_SUM_BELOW's place.
 */
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

/* xf_sum_below_f32 of XF_ROWS rows of n entries, their steps in turn (xent_rows.h) */
static inline void xf_sum_below_rows_f32(const float *const *x, ptrdiff_t n, const float *m,
                                         float *const *e, double *r, double *ties_out,
                                         ptrdiff_t ahead)
{
    __m512 mv[XF_ROWS];
    __m512d r_lo[XF_ROWS], r_hi[XF_ROWS], t_lo[XF_ROWS], t_hi[XF_ROWS];
    for (int q = 0; q < XF_ROWS; q++) {
        mv[q] = _mm512_set1_ps(m[q]);
        r_lo[q] = r_hi[q] = t_lo[q] = t_hi[q] = _mm512_setzero_pd();
    }
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;
        __m512 acc[XF_ROWS];
        __m512i ties[XF_ROWS];
        for (int q = 0; q < XF_ROWS; q++) {
            acc[q] = _mm512_setzero_ps();
            ties[q] = _mm512_setzero_si512();
        }
        ptrdiff_t k = c0;
        for (; k + 16 <= c1; k += 16)
            for (int q = 0; q < XF_ROWS; q++) {
                xf_prefetch_at(x[q] + k, 64, ahead);
                if (e)
                    xf_prefetch_at(e[q] + k, 64, ahead);
                xf_sum_step_x16(x[q] + k, e ? e[q] + k : NULL, 0xFFFF, 1, mv[q], &acc[q],
                                &ties[q]);
            }
        if (k < c1)
            for (int q = 0; q < XF_ROWS; q++)
                xf_sum_step_x16(x[q] + k, e ? e[q] + k : NULL,
                                (__mmask16)((1u << (c1 - k)) - 1u), 0, mv[q], &acc[q], &ties[q]);
        for (int q = 0; q < XF_ROWS; q++) {
            r_lo[q] = _mm512_add_pd(r_lo[q], _mm512_cvtps_pd(_mm512_castps512_ps256(acc[q])));
            r_hi[q] = _mm512_add_pd(r_hi[q], _mm512_cvtps_pd(_mm256_castpd_ps(
                                        _mm512_extractf64x4_pd(_mm512_castps_pd(acc[q]), 1))));
            t_lo[q] = _mm512_add_pd(t_lo[q], _mm512_cvtepi32_pd(_mm512_castsi512_si256(ties[q])));
            t_hi[q] = _mm512_add_pd(t_hi[q],
                                    _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(ties[q], 1)));
        }
    }
    for (int q = 0; q < XF_ROWS; q++)
        r[q] = xf_lanes_total(r_lo[q], r_hi[q], t_lo[q], t_hi[q], &ties_out[q]);
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
/* xf_sum_below_f64 of XF_ROWS rows of n entries, their steps in turn (xent_rows.h) */
static inline void xf_sum_below_rows_f64(const double *const *xs, ptrdiff_t n,
                                         const double *m, double *const *es, double *r,
                                         double *ties_out, ptrdiff_t ahead)
{
    const __m512d one = _mm512_set1_pd(1.0), ninf = _mm512_set1_pd(-INFINITY);
    __m512d mvs[XF_ROWS];
    __m512d r_lo[XF_ROWS], r_hi[XF_ROWS], t_lo[XF_ROWS], t_hi[XF_ROWS];
    for (int q = 0; q < XF_ROWS; q++) {
        mvs[q] = _mm512_set1_pd(m[q]);
        r_lo[q] = r_hi[q] = t_lo[q] = t_hi[q] = _mm512_setzero_pd();
    }
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;
        __m512d acc_lo[XF_ROWS], acc_hi[XF_ROWS], ties_lo[XF_ROWS], ties_hi[XF_ROWS];
        for (int q = 0; q < XF_ROWS; q++)
            acc_lo[q] = acc_hi[q] = ties_lo[q] = ties_hi[q] = _mm512_setzero_pd();
        for (ptrdiff_t k = c0; k < c1; k += 16)
            for (int q = 0; q < XF_ROWS; q++) {
                const double *x = xs[q];
                double *e = es ? es[q] : NULL;
                const __m512d mv = mvs[q];
                xf_prefetch_at(x + k, 128, ahead);
                if (e)
                    xf_prefetch_at(e + k, 128, ahead);
                XF_SUM_STEP_F64(k, acc_lo[q], ties_lo[q])
                XF_SUM_STEP_F64(k + 8, acc_hi[q], ties_hi[q])
            }
        for (int q = 0; q < XF_ROWS; q++) {
            r_lo[q] = _mm512_add_pd(r_lo[q], acc_lo[q]);
            r_hi[q] = _mm512_add_pd(r_hi[q], acc_hi[q]);
            t_lo[q] = _mm512_add_pd(t_lo[q], ties_lo[q]);
            t_hi[q] = _mm512_add_pd(t_hi[q], ties_hi[q]);
        }
    }
    for (int q = 0; q < XF_ROWS; q++)
        r[q] = xf_lanes_total(r_lo[q], r_hi[q], t_lo[q], t_hi[q], &ties_out[q]);
}
#endif  /* XENT_AVX512_H */
