/* Prints, for a fixed set of rows, the bits of xf_sum_below's sum, tie count and stored
 * exps, and of xf_small_ce's losses and gradients and xf_small_softmax's outputs on
 * tiles of short rows (some rows NaN, +inf or all -inf); with the argument "gather",
 * full float tiles are loaded by gathers where the build has them. test_simd.py
 * builds it twice with the same flags, once as the kernels are built and once with
 * XF_PORTABLE (the plain loops), and expects the same output: the hand-written AVX2 and
 * AVX-512 loops must be the portable code, bit for bit. The code around them is the
 * same in both builds, but the compiler may fuse a multiply and an add into an FMA in
 * one build and not the other (GCC decides by context): a difference in a part with no
 * hand-written loop (the float64 tiles, say) points there, not at a hand-written loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xent_simd.h"

static uint64_t state = 0x9E3779B97F4A7C15ULL;

static double uniform(void)                     /* in [0, 1) */
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return (double)(state >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ULL;
    return h;
}

/* The hash of n values with every NaN as one canonical NaN: which NaN payload a row
 * that must give NaN gets is not part of the contract. */
#define HASH_VALUES(T, h, p, n)                                                           \
    do {                                                                                  \
        for (ptrdiff_t q_ = 0; q_ < (ptrdiff_t)(n); q_++) {                               \
            T v_ = (p)[q_] != (p)[q_] ? (T)NAN : (p)[q_];                                 \
            h = fnv(h, &v_, sizeof v_);                                                   \
        }                                                                                 \
    } while (0)

/* A row of n entries at offset j0 of its buffer: spread by `scale`, with some entries
 * equal to the max, some -inf, some far enough below the max that 2^n is subnormal, and
 * some around 87 below it, where the AVX2 loops switch to their slow path. */
#define FILL(T, x, n)                                                                     \
    do {                                                                                  \
        double scale = (double[]){0.5, 4.0, 40.0, 120.0}[(int)(uniform() * 4)];           \
        for (ptrdiff_t j = 0; j < (n); j++) {                                             \
            double u = uniform();                                                         \
            (x)[j] = (T)(scale * (2.0 * uniform() - 1.0));                                \
            if (u < 0.02)                                                                 \
                (x)[j] = (T)-INFINITY;                                                    \
            else if (u < 0.04)                                                            \
                (x)[j] = (T)(-95.0 - 10.0 * uniform());                                   \
            else if (u < 0.05)                                                            \
                (x)[j] = (T)(-700.0 - 50.0 * uniform());                                  \
        }                                                                                 \
        T m_ = (T)-INFINITY;                                                              \
        for (ptrdiff_t j = 0; j < (n); j++)                                               \
            m_ = (x)[j] > m_ ? (x)[j] : m_;                                               \
        if (m_ == (T)-INFINITY)                                                           \
            (x)[0] = m_ = 0;                                                              \
        for (ptrdiff_t j = 0; j < (n); j++) {                                             \
            double u = uniform();                                                         \
            if (u < 0.03)                                                                 \
                (x)[j] = m_;                                                              \
            else if (u < 0.05)                                                            \
                (x)[j] = (T)(m_ - 86.0 - 3.0 * uniform());                                \
        }                                                                                 \
    } while (0)

#define CHECK(T, SUF)                                                                     \
    for (int row = 0; row < 3000; row++) {                                                \
        ptrdiff_t n = row < 2000 ? 1 + (ptrdiff_t)(uniform() * 300)                       \
                                 : 1 + (ptrdiff_t)(uniform() * 5000);                     \
        ptrdiff_t j0 = (ptrdiff_t)(uniform() * 40);                                       \
        T *x = malloc((size_t)(j0 + n) * sizeof(T)), *e = malloc((size_t)(j0 + n) * sizeof(T)); \
        FILL(T, x + j0, n);                                                               \
        T m = (T)-INFINITY;                                                               \
        for (ptrdiff_t j = j0; j < j0 + n; j++)                                           \
            m = x[j] > m ? x[j] : m;                                                      \
        double ties = 0.0, ties_e = 0.0;                                                  \
        double r = xf_sum_below_##SUF(x, j0, j0 + n, m, NULL, &ties, XF_PF_AHEAD);        \
        double r_e = xf_sum_below_##SUF(x, j0, j0 + n, m, e, &ties_e, XF_PF_AHEAD);       \
        uint64_t h = fnv(0xCBF29CE484222325ULL, &r, sizeof r);                            \
        h = fnv(h, &ties, sizeof ties);                                                   \
        h = fnv(h, &r_e, sizeof r_e);                                                     \
        h = fnv(h, &ties_e, sizeof ties_e);                                               \
        h = fnv(h, e + j0, (size_t)n * sizeof(T));                                        \
        printf(#SUF " %d %016llx\n", row, (unsigned long long)h);                         \
        free(x);                                                                          \
        free(e);                                                                          \
    }

/* Tiles of 1 to 16 rows of n < 16 entries, with some rows ignored (-1) and weights. */
#define CHECK_TILES(T, SUF)                                                               \
    for (int tile = 0; tile < 2000; tile++) {                                             \
        ptrdiff_t n = 1 + (ptrdiff_t)(uniform() * 15), rows = tile % 3 ? XF_TILE          \
                                                            : 1 + (ptrdiff_t)(uniform() * 16); \
        T x[XF_TILE * XF_SHORT], grad[XF_TILE * XF_SHORT];                                \
        int64_t t[XF_TILE];                                                               \
        double wt[XF_TILE], g[XF_TILE], loss[XF_TILE];                                    \
        for (ptrdiff_t i = 0; i < rows; i++) {                                            \
            FILL(T, x + i * n, n);                                                        \
            double u = uniform();       /* rows that must give NaN, anywhere in a tile */ \
            if (u < 0.04)                                                                 \
                for (ptrdiff_t j = 0; j < n; j++)                                         \
                    x[i * n + j] = (T)-INFINITY;                                          \
            else if (u < 0.08)                                                            \
                x[i * n + (ptrdiff_t)(uniform() * n)] = (T)NAN;                           \
            else if (u < 0.12)                                                            \
                x[i * n + (ptrdiff_t)(uniform() * n)] = (T)INFINITY;                      \
        }                                                                                 \
        for (ptrdiff_t i = 0; i < XF_TILE; i++) {                                         \
            t[i] = i < rows && uniform() > 0.1 ? (int64_t)(uniform() * n) : -1;          \
            wt[i] = t[i] >= 0 ? 0.5 + uniform() : 0.0;                                    \
            g[i] = t[i] >= 0 ? uniform() : 0.0;                                           \
        }                                                                                 \
        double z = tile % 4 == 0 ? 1e-3 : 0.0;                                            \
        double total = xf_small_ce_##SUF(x, rows, n, t, wt, g, z, loss, grad);            \
        double total_loss = xf_small_ce_##SUF(x, rows, n, t, wt, g, z, loss, NULL);       \
        uint64_t h = 0xCBF29CE484222325ULL;                                               \
        HASH_VALUES(double, h, &total, 1);                                                \
        HASH_VALUES(double, h, &total_loss, 1);                                           \
        HASH_VALUES(double, h, loss, XF_TILE);                                            \
        HASH_VALUES(T, h, grad, rows * n);                                                \
        for (int kind = 0; kind < 3; kind++) {                                            \
            T out[XF_TILE * XF_SHORT];                                                    \
            xf_small_softmax_##SUF(x, rows, n, kind, out);                                \
            HASH_VALUES(T, h, out, kind == 2 ? rows : rows * n);                          \
        }                                                                                 \
        printf(#SUF " tile %d %016llx\n", tile, (unsigned long long)h);                    \
    }

/* Groups of XF_ROWS rows of XF_SHORT to XF_BLOCK entries through xf_online_sumexp_rows
 * (the hand-written loops take the rows' steps in turn; the portable build sums them one
 * by one), with some rows all -inf, NaN or +inf; with and without stored exps. */
#define CHECK_ROWS(T, SUF)                                                                \
    for (int group = 0; group < 1500; group++) {                                          \
        ptrdiff_t n = group < 1000 ? XF_SHORT + (ptrdiff_t)(uniform() * 300)              \
                                   : XF_SHORT + (ptrdiff_t)(uniform() * (XF_BLOCK - XF_SHORT + 1)); \
        T *buf = malloc((size_t)(XF_ROWS * n) * sizeof(T));                               \
        T *ebuf = malloc((size_t)(XF_ROWS * n) * sizeof(T));                              \
        const T *x[XF_ROWS];                                                              \
        T *e[XF_ROWS];                                                                    \
        for (int q = 0; q < XF_ROWS; q++) {                                               \
            T *row = buf + q * n;                                                         \
            FILL(T, row, n);                                                              \
            double u = uniform();                                                         \
            if (u < 0.02)                                                                 \
                for (ptrdiff_t j = 0; j < n; j++)                                         \
                    row[j] = (T)-INFINITY;                                                \
            else if (u < 0.05)                                                            \
                row[(ptrdiff_t)(uniform() * n)] = (T)NAN;                                 \
            else if (u < 0.08)                                                            \
                row[(ptrdiff_t)(uniform() * n)] = (T)INFINITY;                            \
            x[q] = row;                                                                   \
            e[q] = ebuf + q * n;                                                          \
        }                                                                                 \
        T cmax[XF_ROWS], m[XF_ROWS];                                                      \
        int nan[XF_ROWS];                                                                 \
        double r[XF_ROWS], r_e[XF_ROWS];                                                  \
        uint64_t h = 0xCBF29CE484222325ULL;                                               \
        xf_online_sumexp_rows_##SUF(x, n, NULL, cmax, m, nan, r);                         \
        xf_online_sumexp_rows_##SUF(x, n, e, cmax, m, nan, r_e);                          \
        for (int q = 0; q < XF_ROWS; q++) {                                               \
            int regular = isfinite(m[q]) && !nan[q];   /* the others' sums are discarded */ \
            h = fnv(h, &m[q], sizeof m[q]);                                               \
            h = fnv(h, &cmax[q], sizeof cmax[q]);                                         \
            h = fnv(h, &nan[q], sizeof nan[q]);                                           \
            if (regular) {                                                                \
                h = fnv(h, &r[q], sizeof r[q]);                                           \
                h = fnv(h, &r_e[q], sizeof r_e[q]);                                       \
                h = fnv(h, e[q], (size_t)n * sizeof(T));                                  \
            }                                                                             \
        }                                                                                 \
        printf(#SUF " rows %d %016llx\n", group, (unsigned long long)h);                  \
        free(buf);                                                                        \
        free(ebuf);                                                                       \
    }

int main(int argc, char **argv)
{
    /* "gather": full float tiles come in by AVX-512 gathers (a no-op elsewhere) */
    xf_set_tile_gather(argc > 1 && strcmp(argv[1], "gather") == 0);
    CHECK(float, f32)
    CHECK(double, f64)
    CHECK_TILES(float, f32)
    CHECK_TILES(double, f64)
    CHECK_ROWS(float, f32)
    CHECK_ROWS(double, f64)
    return 0;
}
