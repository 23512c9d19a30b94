/* Batch scoring: the per-row sweep of score(), and exact (order-independent) sums.
 *
 * Exact sums. A summary must come out the same whether the rows were scored in one call
 * or streamed in chunks (Scores.merge, the command line, Dask), and for every thread
 * count. Rounded floating-point sums depend on how the rows are grouped, so the summary's
 * sums are kept exactly, in a fixed-point accumulator wide enough for any finite double
 * (a "long accumulator", Kulisch): every double is an integer multiple of 2^-1074 below
 * 2^1024, so XF_EXACT_DIGITS digits of 32 bits, from 2^-1074 up, hold any sum of them.
 * Each digit is an int64, so the three 32-bit pieces of a double are added without a
 * carry; carries are propagated (normalize) before any digit could overflow. Adding is
 * then associative and commutative: accumulators merge by adding digits, in any order.
 * NaN and infinities are counted apart. The Python layer turns the digits into one
 * integer and divides once, so a mean is the correctly rounded mean of the row values.
 */
#ifndef XENT_SCORE_H
#define XENT_SCORE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "xent_simd.h"

#define XF_EXACT_DIGITS 68          /* 68 * 32 = 2176 bits >= 1074 + 1024 + 53 + carries */
#define XF_EXACT_FLUSH (1 << 30)    /* adds between carry propagations: digits < 2^63 */
#define XF_ECE_BINS 15

typedef struct {
    int64_t digit[XF_EXACT_DIGITS];  /* value = sum digit[i] 2^(32 i - 1074) */
    int64_t nan, pos_inf, neg_inf;   /* non-finite values, counted apart */
    int64_t pending;                 /* adds since the last normalize */
} xf_exact;

/* Carries up: digits 0 .. D-2 in [0, 2^32), the top digit signed. */
static inline void xf_exact_normalize(xf_exact *a)
{
    int64_t carry = 0;
    for (int i = 0; i < XF_EXACT_DIGITS - 1; i++) {
        int64_t v = a->digit[i] + carry;
        int64_t low = v & 0xFFFFFFFFLL;                  /* v mod 2^32, also for v < 0 */
        a->digit[i] = low;
        carry = (v - low) / 4294967296LL;                /* exact: floor(v / 2^32) */
    }
    a->digit[XF_EXACT_DIGITS - 1] += carry;
    a->pending = 0;
}

static inline void xf_exact_add(xf_exact *a, double v)
{
    if (!isfinite(v)) {
        if (v != v)
            a->nan++;
        else if (v > 0)
            a->pos_inf++;
        else
            a->neg_inf++;
        return;
    }
    if (v == 0)
        return;
    int64_t bits = xf_bits_f64(v);
    int64_t biased = (bits >> 52) & 0x7FF;
    uint64_t mant = (uint64_t)(bits & 0x000FFFFFFFFFFFFFLL);
    int p = 0;                                           /* v = mant 2^(p - 1074) */
    if (biased) {
        mant |= (uint64_t)1 << 52;
        p = (int)biased - 1;
    }
    int d = p >> 5, s = p & 31;
    uint64_t mid = mant >> (32 - s);                     /* bits 32.. of mant << s */
    int64_t piece0 = (int64_t)((mant << s) & 0xFFFFFFFFu);
    int64_t piece1 = (int64_t)(mid & 0xFFFFFFFFu);
    int64_t piece2 = (int64_t)(mid >> 32);
    if (v < 0) {
        piece0 = -piece0;
        piece1 = -piece1;
        piece2 = -piece2;
    }
    a->digit[d] += piece0;
    a->digit[d + 1] += piece1;
    a->digit[d + 2] += piece2;
    if (++a->pending >= XF_EXACT_FLUSH)
        xf_exact_normalize(a);
}

/* into += from; both must be normalized (then no digit can overflow). */
static inline void xf_exact_merge(xf_exact *into, const xf_exact *from)
{
    for (int i = 0; i < XF_EXACT_DIGITS; i++)
        into->digit[i] += from->digit[i];
    into->nan += from->nan;
    into->pos_inf += from->pos_inf;
    into->neg_inf += from->neg_inf;
    xf_exact_normalize(into);
}

/* Everything a summary is made of. Counts are of the rows that count (target not
 * ignored); bin b of the reliability diagram holds the confidences in (b/15, (b+1)/15]. */
typedef struct {
    int64_t rows, correct, top_k;
    int64_t bin_rows[XF_ECE_BINS], bin_correct[XF_ECE_BINS];
    xf_exact loss, entropy, bin_conf[XF_ECE_BINS];
} xf_score_totals;

#define XF_TOTALS_COUNTS (3 + 2 * XF_ECE_BINS)
#define XF_TOTALS_EXACT (2 + XF_ECE_BINS)
#define XF_EXACT_WORDS (XF_EXACT_DIGITS + 3)
/* The export layout: the counts, then per exact sum its digits and nan, +inf, -inf. */
#define XF_TOTALS_WORDS (XF_TOTALS_COUNTS + XF_TOTALS_EXACT * XF_EXACT_WORDS)

static inline void xf_totals_clear(xf_score_totals *t)
{
    memset(t, 0, sizeof(*t));
}

static inline void xf_totals_merge(xf_score_totals *into, xf_score_totals *from)
{
    into->rows += from->rows;
    into->correct += from->correct;
    into->top_k += from->top_k;
    for (int b = 0; b < XF_ECE_BINS; b++) {
        into->bin_rows[b] += from->bin_rows[b];
        into->bin_correct[b] += from->bin_correct[b];
    }
    xf_exact_normalize(&from->loss);
    xf_exact_normalize(&from->entropy);
    xf_exact_normalize(&into->loss);
    xf_exact_normalize(&into->entropy);
    xf_exact_merge(&into->loss, &from->loss);
    xf_exact_merge(&into->entropy, &from->entropy);
    for (int b = 0; b < XF_ECE_BINS; b++) {
        xf_exact_normalize(&from->bin_conf[b]);
        xf_exact_normalize(&into->bin_conf[b]);
        xf_exact_merge(&into->bin_conf[b], &from->bin_conf[b]);
    }
}

static inline void xf_exact_export(xf_exact *a, int64_t *out)
{
    xf_exact_normalize(a);
    memcpy(out, a->digit, sizeof(a->digit));
    out[XF_EXACT_DIGITS] = a->nan;
    out[XF_EXACT_DIGITS + 1] = a->pos_inf;
    out[XF_EXACT_DIGITS + 2] = a->neg_inf;
}

static inline void xf_totals_export(xf_score_totals *t, int64_t *out)
{
    out[0] = t->rows;
    out[1] = t->correct;
    out[2] = t->top_k;
    for (int b = 0; b < XF_ECE_BINS; b++) {
        out[3 + b] = t->bin_rows[b];
        out[3 + XF_ECE_BINS + b] = t->bin_correct[b];
    }
    out += XF_TOTALS_COUNTS;
    xf_exact_export(&t->loss, out);
    xf_exact_export(&t->entropy, out + XF_EXACT_WORDS);
    for (int b = 0; b < XF_ECE_BINS; b++)
        xf_exact_export(&t->bin_conf[b], out + (2 + b) * XF_EXACT_WORDS);
}

/* The bin of a confidence c: (b/15, (b+1)/15] with the edges b / 15.0 (what
 * numpy.arange(16) / 15 gives); c <= 0 and NaN go to bin 0. */
static const double xf_ece_edges[XF_ECE_BINS + 1] = {
    0.0 / 15, 1.0 / 15, 2.0 / 15, 3.0 / 15, 4.0 / 15, 5.0 / 15, 6.0 / 15, 7.0 / 15,
    8.0 / 15, 9.0 / 15, 10.0 / 15, 11.0 / 15, 12.0 / 15, 13.0 / 15, 14.0 / 15, 15.0 / 15};

static inline int xf_ece_bin(double c)
{
    if (!(c > 0))
        return 0;
    if (c >= 1)
        return XF_ECE_BINS - 1;
    int b = (int)(c * XF_ECE_BINS);                      /* c * 15 may round across an edge */
    b = b > XF_ECE_BINS - 1 ? XF_ECE_BINS - 1 : b;
    if (c <= xf_ece_edges[b])
        b--;
    else if (c > xf_ece_edges[b + 1])
        b++;
    return b < 0 ? 0 : (b > XF_ECE_BINS - 1 ? XF_ECE_BINS - 1 : b);
}

/* ---- the sweep over one row --------------------------------------------------------
 * Given the row max m (finite) and the target's logit xt, one sweep gives
 *   r        sum of exp(x_j - m) over the entries below m, plus one for each further
 *            entry equal to m: sum_j exp(x_j - m) = 1 + r exactly (see xf_sumexp)
 *   ent      sum_j exp(x_j - m) (m - x_j) >= 0: the entropy is log1p(r) + ent / (1 + r),
 *            a sum of non-negative terms (no cancellation when it is tiny)
 *   greater  the number of entries strictly above xt (the target is in the top k iff
 *            greater < k: a tie with the k-th largest counts in its favour)
 *   first    the first index of m (numpy.argmax)
 * and with probability targets y (else NULL)
 *   gap      sum over y_j != 0 of y_j (m - x_j), and ysum = sum_j y_j: the loss is
 *            gap + ysum log1p(r), again without cancellation.
 * Masked entries (-inf) have exp 0 and add nothing. Float rows are summed in float lanes
 * over chunks of XF_CHUNK entries and the chunks in double, as in xf_sum_below.
 */
typedef struct {
    double r, ent, gap, ysum;
    int64_t greater, first;
} xf_row_sums;

/* One step of XF_LANES entries from k, their exps in e (from c0); entries past c1 read
 * as -inf (y: 0), which add nothing to any sum. */
#define XF_SCORE_STEP(T, TAIL, WITH_Y)                                                    \
    XF_SIMD                                                                               \
    for (int l = 0; l < XF_LANES; l++) {                                                  \
        const int in = !TAIL || k + l < c1;                                               \
        T xj = in ? x[k + l] : (T)-INFINITY;                                              \
        T yj = WITH_Y && in ? y[k + l] : (T)0;                                            \
        T d = m - xj;                                                                     \
        T v = in ? e[k - c0 + l] : (T)0;                                                  \
        h[l] += v > 0 ? v * d : (T)0;                                                     \
        gt[l] += xj > xt ? (T)1 : (T)0;                                                   \
        if (WITH_Y) {                                                                     \
            g[l] += yj != 0 ? yj * d : (T)0;                                              \
            ys[l] += yj;                                                                  \
        }                                                                                 \
    }

#define XF_SCORE_CHUNK(T, WITH_Y)                                                         \
    {                                                                                     \
        ptrdiff_t k = c0;                                                                 \
        for (; k + XF_LANES <= c1; k += XF_LANES) {                                       \
            XF_SCORE_STEP(T, 0, WITH_Y)                                                   \
        }                                                                                 \
        if (k < c1) {                                                                     \
            XF_SCORE_STEP(T, 1, WITH_Y)                                                   \
        }                                                                                 \
    }

/* Chunk by chunk: the exps and their sums by xf_sum_below (by hand where the CPU has a
 * loop for it), then the other sums from the stored exps. Two loops rather than one
 * fused loop: one long chain of dependent operations per entry keeps too few entries in
 * flight in the out-of-order window (0.74 -> 0.61 ns per float in L1 on Zen 3). */
#define XF_SCORE_SWEEP(T, SUF)                                                            \
static inline void xf_score_sweep_##SUF(const T *x, const T *y, ptrdiff_t n, T m, T xt,   \
                                        xf_row_sums *out)                                 \
{                                                                                         \
    /* the other sums in lanes, as xf_sum_below keeps its own: their horizontal sums     \
     * come after the loop over chunks (r's lanes meet in each chunk's xf_sum_below) */   \
    double ent_l[XF_LANES], gap_l[XF_LANES], ysum_l[XF_LANES], gt_l[XF_LANES];            \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        ent_l[l] = gap_l[l] = ysum_l[l] = gt_l[l] = 0.0;                                  \
    double r = 0.0, all_ties = 0.0;                                                       \
    int64_t first = -1;                                                                   \
    T e[XF_CHUNK];                                                                        \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {                                      \
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;                       \
        T h[XF_LANES], gt[XF_LANES], g[XF_LANES], ys[XF_LANES];                           \
        for (int l = 0; l < XF_LANES; l++)                                                \
            h[l] = gt[l] = g[l] = ys[l] = 0;                                              \
        double ties = 0.0;                                                                \
        r += xf_sum_below_##SUF(x + c0, 0, c1 - c0, m, e, &ties, XF_PF_AHEAD);            \
        all_ties += ties;                                                                 \
        if (y) {                                                                          \
            xf_prefetch_ahead(y + c0, (c1 - c0) * (ptrdiff_t)sizeof(T));                  \
            XF_SCORE_CHUNK(T, 1)                                                          \
        } else {                                                                          \
            XF_SCORE_CHUNK(T, 0)                                                          \
        }                                                                                 \
        if (first < 0 && ties > 0)      /* the max is in this chunk */                    \
            for (ptrdiff_t j = c0; j < c1; j++)                                           \
                if (x[j] == m) {                                                          \
                    first = j;                                                            \
                    break;                                                                \
                }                                                                         \
        XF_SIMD                                                                           \
        for (int l = 0; l < XF_LANES; l++) {                                              \
            ent_l[l] += (double)h[l];                                                     \
            gt_l[l] += (double)gt[l];                                                     \
            gap_l[l] += (double)g[l];                                                     \
            ysum_l[l] += (double)ys[l];                                                   \
        }                                                                                 \
    }                                                                                     \
    double ent = 0.0, greater = 0.0, gap = 0.0, ysum = 0.0;                               \
    for (int l = 0; l < XF_LANES; l++) {                                                  \
        ent += ent_l[l];                                                                  \
        greater += gt_l[l];                                                               \
        gap += gap_l[l];                                                                  \
        ysum += ysum_l[l];                                                                \
    }                                                                                     \
    out->r = r + (all_ties - 1.0);                                                        \
    out->ent = ent;                                                                       \
    out->greater = (int64_t)greater;                                                      \
    out->first = first;                                                                   \
    out->gap = gap;                                                                       \
    out->ysum = ysum;                                                                     \
}

/* ---- many short rows at once -------------------------------------------------------
 * score_tile: up to XF_TILE rows of n < XF_SHORT logits with the vector lanes across the
 * rows (as small_ce in xent_simd.h): the same quantities as the sweep, and from them the
 * row's scores. t[i] is the target class of row i, or -1 for none; with probabilities y
 * (else NULL) t is an output: the argmax of the row of y. A row whose logits hold NaN,
 * +inf or only -inf, or whose y holds NaN, is flagged not regular (regular[i] = 0) and
 * its other outputs are meaningless: the caller scores it on the slow path.
 */
typedef struct {
    double loss[XF_TILE], target_prob[XF_TILE], entropy[XF_TILE], confidence[XF_TILE];
    int64_t pred[XF_TILE], greater[XF_TILE];
    int regular[XF_TILE];
} xf_tile_scores;

#define XF_SCORE_TILE(T, SUF, EXP)                                                        \
static inline void xf_score_tile_##SUF(const T *x, const T *y, ptrdiff_t rows,            \
                                       ptrdiff_t n, int64_t *t, xf_tile_scores *out)      \
{                                                                                         \
    T v[XF_SHORT][XF_TILE], w[XF_SHORT][XF_TILE];                                         \
    T m[XF_TILE], arg[XF_TILE], nan[XF_TILE], xt[XF_TILE];                                \
    T acc[XF_TILE], ties[XF_TILE], h[XF_TILE], gt[XF_TILE], g[XF_TILE], ys[XF_TILE];      \
    for (ptrdiff_t j = 0; j < n; j++)                                                     \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            v[j][i] = i < rows ? x[i * n + j] : (T)0;                                     \
            w[j][i] = (y && i < rows) ? y[i * n + j] : (T)0;                              \
        }                                                                                 \
    XF_SIMD                                                                               \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        m[i] = -INFINITY;                                                                 \
        arg[i] = 0;                                                                       \
        nan[i] = 0;                                                                       \
        acc[i] = ties[i] = h[i] = gt[i] = g[i] = ys[i] = 0;                               \
    }                                                                                     \
    for (ptrdiff_t j = 0; j < n; j++) {            /* max, first argmax, NaN */           \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            T a = v[j][i];                                                                \
            arg[i] = a > m[i] ? (T)j : arg[i];                                            \
            m[i] = a > m[i] ? a : m[i];                                                   \
            nan[i] = a != a ? (T)1 : nan[i];                                              \
        }                                                                                 \
    }                                                                                     \
    if (y) {                                       /* the target class: argmax of y */    \
        T ym[XF_TILE], yarg[XF_TILE];                                                     \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            ym[i] = -INFINITY;                                                            \
            yarg[i] = 0;                                                                  \
        }                                                                                 \
        for (ptrdiff_t j = 0; j < n; j++) {                                               \
            XF_SIMD                                                                       \
            for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                     \
                T a = w[j][i];                                                            \
                yarg[i] = a > ym[i] ? (T)j : yarg[i];                                     \
                ym[i] = a > ym[i] ? a : ym[i];                                            \
                nan[i] = a != a ? (T)1 : nan[i];                                          \
            }                                                                             \
        }                                                                                 \
        for (ptrdiff_t i = 0; i < rows; i++)                                              \
            t[i] = (int64_t)yarg[i];                                                      \
    }                                                                                     \
    for (ptrdiff_t i = 0; i < XF_TILE; i++)        /* the targets' logits */              \
        xt[i] = (i < rows && t[i] >= 0) ? v[t[i]][i] : m[i];                              \
    for (ptrdiff_t j = 0; j < n; j++) {                                                   \
        XF_SIMD                                                                           \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            T a = v[j][i], d = m[i] - a;                                                  \
            T z = a - m[i];                                                               \
            T e = EXP(z <= 0 ? z : (T)0);   /* no NaN into EXP on a row not regular */    \
            T below = a != m[i] ? (T)1 : (T)0;                                            \
            acc[i] += e * below;                                                          \
            ties[i] += (T)1 - below;                                                      \
            h[i] += e > 0 ? e * d : (T)0;                                                 \
            gt[i] += a > xt[i] ? (T)1 : (T)0;                                             \
            g[i] += w[j][i] != 0 ? w[j][i] * d : (T)0;                                    \
            ys[i] += w[j][i];                                                             \
        }                                                                                 \
    }                                                                                     \
    XF_SIMD                                                                               \
    for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                             \
        int ok = nan[i] == 0 && m[i] > -INFINITY && m[i] < INFINITY;                      \
        double mi = ok ? (double)m[i] : 0.0, xti = ok ? (double)xt[i] : 0.0;              \
        double r = ok ? (double)acc[i] + ((double)ties[i] - 1.0) : 0.0;                   \
        double log_s = xf_log1p_f64(r), inv = 1.0 / (1.0 + r);                            \
        out->regular[i] = ok;                                                             \
        out->pred[i] = (int64_t)arg[i];                                                   \
        out->greater[i] = (int64_t)gt[i];                                                 \
        out->confidence[i] = inv;                                                         \
        out->entropy[i] = log_s + (double)h[i] * inv;                                     \
        out->target_prob[i] = xf_exp(xti - mi) * inv;                                     \
        out->loss[i] = y ? (double)g[i] + (double)ys[i] * log_s : (mi - xti) + log_s;     \
    }                                                                                     \
}

XF_SCORE_SWEEP(float, f32)
XF_SCORE_SWEEP(double, f64)
XF_SCORE_TILE(float, f32, xf_expf)
XF_SCORE_TILE(double, f64, xf_exp)

#endif
