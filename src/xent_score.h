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
#include <stdlib.h>
#include <string.h>

#include "xent_simd.h"

#define XF_EXACT_DIGITS 68          /* 68 * 32 = 2176 bits >= 1074 + 1024 + 53 + carries */
#define XF_EXACT_FLUSH (1 << 30)    /* adds between carry propagations: digits < 2^63 */
#define XF_ECE_BINS 15             /* the default of ece_bins= */

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
 * ignored, logits with a softmax); nonfinite counts the rows left out for want of a
 * softmax (a NaN, a +inf, or only -inf). Bin b of the reliability diagram holds the
 * confidences in (b/nbins, (b+1)/nbins]. cls holds per class the support (rows of that
 * target), the predictions and the correct predictions: 3 * n_classes counts. The bins
 * and classes are sized at run time (ece_bins=, C), so they live in one calloc'd block. */
typedef struct {
    int64_t rows, correct, top_k, nonfinite;
    xf_exact loss, entropy, brier;
    int nbins;
    ptrdiff_t n_classes;
    int64_t *bin_rows, *bin_correct, *cls;
    xf_exact *bin_conf;
} xf_score_totals;

#define XF_TOTALS_FIXED 4
#define XF_TOTALS_FIXED_EXACT 3
#define XF_EXACT_WORDS (XF_EXACT_DIGITS + 3)

/* The export layout: rows, correct, top_k, nonfinite, bin_rows[nbins],
 * bin_correct[nbins]; per exact sum (loss, entropy, brier, bin_conf[nbins]) its digits
 * and nan, +inf, -inf; then the 3 * n_classes class counts. */
static inline ptrdiff_t xf_totals_words(int nbins, ptrdiff_t n_classes)
{
    return XF_TOTALS_FIXED + 2 * (ptrdiff_t)nbins
           + (XF_TOTALS_FIXED_EXACT + (ptrdiff_t)nbins) * XF_EXACT_WORDS + 3 * n_classes;
}

/* 0 on success, -1 when out of memory (then nothing is left to free). */
static inline int xf_totals_init(xf_score_totals *t, int nbins, ptrdiff_t n_classes)
{
    memset(t, 0, sizeof(*t));
    t->nbins = nbins;
    t->n_classes = n_classes;
    t->bin_conf = (xf_exact *)calloc((size_t)nbins, sizeof(xf_exact));
    t->bin_rows = (int64_t *)calloc((size_t)(2 * nbins + 3 * n_classes) + 1, sizeof(int64_t));
    if (!t->bin_conf || !t->bin_rows) {
        free(t->bin_conf);
        free(t->bin_rows);
        t->bin_conf = NULL;
        t->bin_rows = NULL;
        return -1;
    }
    t->bin_correct = t->bin_rows + nbins;
    t->cls = t->bin_rows + 2 * nbins;
    return 0;
}

static inline void xf_totals_free(xf_score_totals *t)
{
    free(t->bin_conf);
    free(t->bin_rows);
    t->bin_conf = NULL;
    t->bin_rows = t->bin_correct = t->cls = NULL;
}

static inline void xf_exact_merge_any(xf_exact *into, xf_exact *from)
{
    xf_exact_normalize(from);
    xf_exact_normalize(into);
    xf_exact_merge(into, from);
}

static inline void xf_totals_merge(xf_score_totals *into, xf_score_totals *from)
{
    into->rows += from->rows;
    into->correct += from->correct;
    into->top_k += from->top_k;
    into->nonfinite += from->nonfinite;
    for (int b = 0; b < into->nbins; b++) {
        into->bin_rows[b] += from->bin_rows[b];
        into->bin_correct[b] += from->bin_correct[b];
        xf_exact_merge_any(&into->bin_conf[b], &from->bin_conf[b]);
    }
    for (ptrdiff_t c = 0; c < 3 * into->n_classes; c++)
        into->cls[c] += from->cls[c];
    xf_exact_merge_any(&into->loss, &from->loss);
    xf_exact_merge_any(&into->entropy, &from->entropy);
    xf_exact_merge_any(&into->brier, &from->brier);
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
    const int nb = t->nbins;
    out[0] = t->rows;
    out[1] = t->correct;
    out[2] = t->top_k;
    out[3] = t->nonfinite;
    for (int b = 0; b < nb; b++) {
        out[XF_TOTALS_FIXED + b] = t->bin_rows[b];
        out[XF_TOTALS_FIXED + nb + b] = t->bin_correct[b];
    }
    out += XF_TOTALS_FIXED + 2 * nb;
    xf_exact_export(&t->loss, out);
    xf_exact_export(&t->entropy, out + XF_EXACT_WORDS);
    xf_exact_export(&t->brier, out + 2 * XF_EXACT_WORDS);
    for (int b = 0; b < nb; b++)
        xf_exact_export(&t->bin_conf[b], out + (XF_TOTALS_FIXED_EXACT + b) * XF_EXACT_WORDS);
    out += (XF_TOTALS_FIXED_EXACT + nb) * XF_EXACT_WORDS;
    memcpy(out, t->cls, (size_t)(3 * t->n_classes) * sizeof(int64_t));
}

/* The bin of a confidence c among nb: (b/nb, (b+1)/nb] with the edges b / (double)nb
 * (what numpy.arange(nb + 1) / nb gives); c <= 0 and NaN go to bin 0. */
static inline int xf_ece_bin(double c, int nb)
{
    if (!(c > 0))
        return 0;
    if (c >= 1)
        return nb - 1;
    int b = (int)(c * nb);                               /* c * nb may round across an edge */
    b = b > nb - 1 ? nb - 1 : b;
    if (c <= (double)b / nb)
        b--;
    else if (c > (double)(b + 1) / nb)
        b++;
    return b < 0 ? 0 : (b > nb - 1 ? nb - 1 : b);
}

/* Brier score of one row, sum_c (p_c - [c = t])^2, from the sums of a sweep: S = 1 + r
 * the sum of exps, q = sum of the squared exps less one for the max, et the target's exp.
 * When the target is the max (at_max), 1 - p_t = r / S and the others' squares are
 * q / S^2: no cancellation, so a confident right row keeps the digits of its tiny score. */
static inline double xf_brier(double r, double q, double et, int at_max)
{
    double s = 1.0 + r;
    double miss = at_max ? r : s - et;
    double rest = at_max ? q : (1.0 + q) - et * et;
    return (miss * miss + rest) / (s * s);
}

/* ---- exp sums at a temperature ------------------------------------------------------
 * xf_sum_below with the differences scaled by s = 1 / T before the exp: exp(s (x_j - m)).
 * score(temperature=) and fit_temperature read the logits as they are, no copy divided
 * by T. Same lanes, chunks and order as xf_sum_below. */
#define XF_SUM_BELOW_SCALED(T, SUF, EXP)                                                  \
static inline double xf_sum_below_scaled_##SUF(const T *x, ptrdiff_t n, T m, T s, T *e,   \
                                               double *ties_out)                         \
{                                                                                         \
    double r_lane[XF_LANES], ties_lane[XF_LANES];                                         \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        r_lane[l] = ties_lane[l] = 0.0;                                                   \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {                                      \
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;                       \
        T acc[XF_LANES], ties[XF_LANES];                                                  \
        for (int l = 0; l < XF_LANES; l++)                                                \
            acc[l] = ties[l] = 0;                                                         \
        for (ptrdiff_t k = c0; k < c1; k += XF_LANES) {                                   \
            xf_prefetch_at(x + k, XF_LANES * (ptrdiff_t)sizeof(T), XF_PF_AHEAD);          \
            XF_SIMD                                                                       \
            for (int l = 0; l < XF_LANES; l++) {                                          \
                const int in = k + l < c1;                                                \
                T xj = in ? x[k + l] : (T)-INFINITY;                                      \
                T z = (xj - m) * s;                                                       \
                T v = EXP(z <= 0 ? z : (T)0);                                             \
                T below = (T)(xj != m);                                                   \
                if (in)                                                                   \
                    e[k - c0 + l] = v;                                                    \
                ties[l] += (T)1 - below;                                                  \
                acc[l] += v * below;                                                      \
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
XF_SUM_BELOW_SCALED(float, f32, xf_expf)
XF_SUM_BELOW_SCALED(double, f64, xf_exp)

/* ---- the fused pass of fit_temperature ----------------------------------------------
 * For one row with max m, u_j = m - x_j >= 0 and s = 1 / T, the loss at T is
 *   L(s) = s u_t + log sum_j exp(-s u_j),
 * convex in s, with dL/ds = u_t - E_p[u] and d2L/ds2 = Var_p[u] (p = softmax(s x)); and
 * dL/dT = (E_p[u] - u_t) / T^2 = (x_t - sum_c p_c x_c) / T^2. One sweep gives r (sum of
 * exps less one for the max), A = sum_j e_j u_j and B = sum_j e_j u_j^2: the exps are
 * not stored, each entry is read once. Sums of non-negative terms, as in the sweep below. */
typedef struct {
    double r, a, b;
} xf_temp_sums;

#define XF_TEMP_SWEEP(T, SUF, EXP)                                                        \
static inline void xf_temp_sweep_##SUF(const T *x, ptrdiff_t n, T m, T s,                 \
                                       xf_temp_sums *out)                                \
{                                                                                         \
    double r_lane[XF_LANES], a_lane[XF_LANES], b_lane[XF_LANES], ties_lane[XF_LANES];     \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        r_lane[l] = a_lane[l] = b_lane[l] = ties_lane[l] = 0.0;                           \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {                                      \
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;                       \
        T acc[XF_LANES], ties[XF_LANES], ha[XF_LANES], hb[XF_LANES];                      \
        for (int l = 0; l < XF_LANES; l++)                                                \
            acc[l] = ties[l] = ha[l] = hb[l] = 0;                                         \
        ptrdiff_t k = c0;                                                                 \
        for (; k + XF_LANES <= c1; k += XF_LANES) {                                       \
            xf_prefetch_at(x + k, XF_LANES * (ptrdiff_t)sizeof(T), XF_PF_AHEAD);          \
            XF_SIMD                                                                       \
            for (int l = 0; l < XF_LANES; l++) {                                          \
                T u = m - x[k + l];                                                       \
                T v = EXP(-(u * s));                                                      \
                T below = (T)(u != 0);                                                    \
                T vu = v > 0 ? v * u : (T)0;       /* -inf logits: 0, not 0 * inf */      \
                ties[l] += (T)1 - below;                                                  \
                acc[l] += v * below;                                                      \
                ha[l] += vu;                                                              \
                hb[l] += vu * u;                                                          \
            }                                                                             \
        }                                                                                 \
        for (; k < c1; k++) {                                                             \
            T u = m - x[k];                                                               \
            T v = EXP(-(u * s));                                                          \
            T vu = v > 0 ? v * u : (T)0;                                                  \
            if (u != 0)                                                                   \
                acc[0] += v;                                                              \
            else                                                                          \
                ties[0] += (T)1;                                                          \
            ha[0] += vu;                                                                  \
            hb[0] += vu * u;                                                              \
        }                                                                                 \
        XF_SIMD                                                                           \
        for (int l = 0; l < XF_LANES; l++) {                                              \
            r_lane[l] += (double)acc[l];                                                  \
            ties_lane[l] += (double)ties[l];                                              \
            a_lane[l] += (double)ha[l];                                                   \
            b_lane[l] += (double)hb[l];                                                   \
        }                                                                                 \
    }                                                                                     \
    out->r = xf_fold_lanes(r_lane) + (xf_fold_lanes(ties_lane) - 1.0);                    \
    out->a = xf_fold_lanes(a_lane);                                                       \
    out->b = xf_fold_lanes(b_lane);                                                       \
}
XF_TEMP_SWEEP(float, f32, xf_expf)
XF_TEMP_SWEEP(double, f64, xf_exp)

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
    double r, ent, gap, ysum, q;
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
        q[l] += xj != m ? v * v : (T)0;                                                   \
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
                                        T s, xf_row_sums *out)                            \
{                                                                                         \
    /* the other sums in lanes, as xf_sum_below keeps its own: their horizontal sums     \
     * come after the loop over chunks (r's lanes meet in each chunk's xf_sum_below) */   \
    double ent_l[XF_LANES], gap_l[XF_LANES], ysum_l[XF_LANES], gt_l[XF_LANES];            \
    double q_l[XF_LANES];                                                                 \
    for (int l = 0; l < XF_LANES; l++)                                                    \
        ent_l[l] = gap_l[l] = ysum_l[l] = gt_l[l] = q_l[l] = 0.0;                         \
    double r = 0.0, all_ties = 0.0;                                                       \
    int64_t first = -1;                                                                   \
    T e[XF_CHUNK];                                                                        \
    for (ptrdiff_t c0 = 0; c0 < n; c0 += XF_CHUNK) {                                      \
        const ptrdiff_t c1 = c0 + XF_CHUNK < n ? c0 + XF_CHUNK : n;                       \
        T h[XF_LANES], gt[XF_LANES], g[XF_LANES], ys[XF_LANES], q[XF_LANES];              \
        for (int l = 0; l < XF_LANES; l++)                                                \
            h[l] = gt[l] = g[l] = ys[l] = q[l] = 0;                                       \
        double ties = 0.0;                                                                \
        if (s == (T)1)                  /* no temperature: the tuned exp-sum */           \
            r += xf_sum_below_##SUF(x + c0, 0, c1 - c0, m, e, &ties, XF_PF_AHEAD);        \
        else                                                                              \
            r += xf_sum_below_scaled_##SUF(x + c0, c1 - c0, m, s, e, &ties);              \
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
            q_l[l] += (double)q[l];                                                       \
        }                                                                                 \
    }                                                                                     \
    double ent = 0.0, greater = 0.0, gap = 0.0, ysum = 0.0, qs = 0.0;                     \
    for (int l = 0; l < XF_LANES; l++) {                                                  \
        qs += q_l[l];                                                                     \
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
    out->q = qs + (all_ties - 1.0);                                                       \
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
    double brier[XF_TILE];
    int64_t pred[XF_TILE], greater[XF_TILE];
    int regular[XF_TILE];
} xf_tile_scores;

#define XF_SCORE_TILE(T, SUF, EXP)                                                        \
static inline void xf_score_tile_##SUF(const T *x, const T *y, ptrdiff_t rows,            \
                                       ptrdiff_t n, int64_t *t, T s, xf_tile_scores *out) \
{                                                                                         \
    T v[XF_SHORT][XF_TILE], w[XF_SHORT][XF_TILE];                                         \
    T m[XF_TILE], arg[XF_TILE], nan[XF_TILE], xt[XF_TILE];                                \
    T acc[XF_TILE], ties[XF_TILE], h[XF_TILE], gt[XF_TILE], g[XF_TILE], ys[XF_TILE];      \
    T q[XF_TILE];                                                                         \
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
        acc[i] = ties[i] = h[i] = gt[i] = g[i] = ys[i] = q[i] = 0;                        \
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
            T z = (a - m[i]) * s;                                                         \
            T e = EXP(z <= 0 ? z : (T)0);   /* no NaN into EXP on a row not regular */    \
            T below = a != m[i] ? (T)1 : (T)0;                                            \
            acc[i] += e * below;                                                          \
            q[i] += e * e * below;                                                        \
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
        double sd = (double)s, et = xf_exp((xti - mi) * sd);                              \
        out->entropy[i] = log_s + sd * ((double)h[i] * inv);                              \
        out->target_prob[i] = et * inv;                                                   \
        out->loss[i] = y ? sd * (double)g[i] + (double)ys[i] * log_s                      \
                         : sd * (mi - xti) + log_s;                                       \
        out->brier[i] = xf_brier(r, ok ? (double)q[i] + ((double)ties[i] - 1.0) : 0.0,    \
                                 et, xti == mi);                                          \
    }                                                                                     \
}

XF_SCORE_SWEEP(float, f32)
XF_SCORE_SWEEP(double, f64)
XF_SCORE_TILE(float, f32, xf_expf)
XF_SCORE_TILE(double, f64, xf_exp)

#endif
