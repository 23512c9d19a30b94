/* Rows of fewer than XF_SHORT (16) classes, XF_TILE (16) rows at a time with the vector
 * lanes across rows: the cross-entropy (small_ce) and the softmax family (small_softmax).
 * Their AVX-512 loads and stores (gathers, a 16x16 transpose) and AVX2 exps are here
 * beside the portable loops they replace, as they are short.
 *
 * Part of xent_simd.h; needs xent_rows.h (and, for AVX2, xent_avx2.h's xf_expf_x8).
 */
#include "xent_rows.h"

#ifndef XENT_TILES_H
#define XENT_TILES_H

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
#endif  /* XENT_TILES_H */
