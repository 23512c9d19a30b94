/* What the memory of this machine allows, measured by plain C loops: the floors that
 * bench/floors.py sets beside xent_fast's kernels.
 *
 *     floors ROWS COLS THREADS REPEATS
 *
 * On a float32 array of ROWS x COLS (and a second one for the copies), with THREADS
 * OpenMP threads each taking a contiguous share, it times
 *   read       the sum of every entry (the least a loss-only kernel must do),
 *   copy       dst = src with ordinary stores (each destination line is read first),
 *   copy_pf    the copy with software prefetches of both arrays 4 KiB ahead, a line a
 *              step, as xent_fast's kernels ask for the lines of rows of at most 4 KiB
 *              (8 KiB ahead on longer rows) (x86-64),
 *   copy_nt    dst = src with streaming stores (no read of the destination; x86-64),
 * and prints one line per loop: name, then the seconds of each repeat. On Linux the
 * arrays are asked for transparent huge pages, which large arrays of the Python
 * process get too: on 4 KiB pages a copy was a fifth slower on the AVX-512 Xeon.
 * floors.py builds it for the CPU it runs on (-march=native): a floor is the best this
 * machine does.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One cache line (16 floats) per step, four lines in flight, in the widest vectors the
 * compiler was told of: the fewer instructions per line, the more lines the core's
 * out-of-order window holds in flight, and a read loop in 16-byte loads was a third
 * slower than one in 64-byte loads on an AVX-512 machine. Elsewhere than x86-64, plain
 * loops (memcpy for the copies). */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 line_t;
#define LOAD(p) _mm512_load_ps(p)
#define ADD(a, b) _mm512_add_ps(a, b)
#define ZERO() _mm512_setzero_ps()
#define STORE(p, v) _mm512_store_ps(p, v)
#define STREAM(p, v) _mm512_stream_ps(p, v)
#define TOTAL(v) _mm512_reduce_add_ps(v)
#elif defined(__AVX__)
#include <immintrin.h>
typedef struct { __m256 h[2]; } line_t;
static inline line_t LOAD(const float *p)
{
    line_t v = {{_mm256_load_ps(p), _mm256_load_ps(p + 8)}};
    return v;
}
static inline line_t ADD(line_t a, line_t b)
{
    a.h[0] = _mm256_add_ps(a.h[0], b.h[0]);
    a.h[1] = _mm256_add_ps(a.h[1], b.h[1]);
    return a;
}
static inline line_t ZERO(void)
{
    line_t v = {{_mm256_setzero_ps(), _mm256_setzero_ps()}};
    return v;
}
static inline void STORE(float *p, line_t v)
{
    _mm256_store_ps(p, v.h[0]);
    _mm256_store_ps(p + 8, v.h[1]);
}
static inline void STREAM(float *p, line_t v)
{
    _mm256_stream_ps(p, v.h[0]);
    _mm256_stream_ps(p + 8, v.h[1]);
}
#elif defined(__SSE2__)
typedef struct { __m128 q[4]; } line_t;
static inline line_t LOAD(const float *p)
{
    line_t v = {{_mm_load_ps(p), _mm_load_ps(p + 4), _mm_load_ps(p + 8), _mm_load_ps(p + 12)}};
    return v;
}
static inline line_t ADD(line_t a, line_t b)
{
    for (int k = 0; k < 4; k++)
        a.q[k] = _mm_add_ps(a.q[k], b.q[k]);
    return a;
}
static inline line_t ZERO(void)
{
    line_t v = {{_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()}};
    return v;
}
static inline void STORE(float *p, line_t v)
{
    for (int k = 0; k < 4; k++)
        _mm_store_ps(p + 4 * k, v.q[k]);
}
static inline void STREAM(float *p, line_t v)
{
    for (int k = 0; k < 4; k++)
        _mm_stream_ps(p + 4 * k, v.q[k]);
}
#endif
#if !defined(__AVX512F__) && defined(__SSE2__)
static inline float TOTAL(line_t v)     /* the AVX and SSE2 lines' 16 floats, added */
{
    _Alignas(64) float f[16];
    STORE(f, v);
    float t = 0;
    for (int k = 0; k < 16; k++)
        t += f[k];
    return t;
}
#endif

#if defined(__SSE2__)
/* a and b - a are multiples of 64 floats and the arrays 64-byte aligned (see main) */
static float read_part(const float *x, size_t a, size_t b)
{
    line_t s0 = ZERO(), s1 = ZERO(), s2 = ZERO(), s3 = ZERO();
    for (size_t i = a; i < b; i += 64) {
        s0 = ADD(s0, LOAD(x + i));
        s1 = ADD(s1, LOAD(x + i + 16));
        s2 = ADD(s2, LOAD(x + i + 32));
        s3 = ADD(s3, LOAD(x + i + 48));
    }
    return TOTAL(ADD(ADD(s0, s1), ADD(s2, s3)));
}

/* Intrinsics, which the compiler does not turn into a memcpy call (glibc's memcpy
 * switches to streaming stores for large copies). kind: 0 ordinary stores, 1 the same
 * with prefetches, 2 streaming stores. */
static void copy_part(float *y, const float *x, size_t a, size_t b, int kind)
{
    if (kind == 2) {
        for (size_t i = a; i < b; i += 16)
            STREAM(y + i, LOAD(x + i));
        _mm_sfence();
    } else if (kind == 1) {
        for (size_t i = a; i < b; i += 16) {
            /* addresses as integers: C allows no pointer past the end */
            _mm_prefetch((const char *)((uintptr_t)(x + i) + 4096), _MM_HINT_T0);
            _mm_prefetch((const char *)((uintptr_t)(y + i) + 4096), _MM_HINT_T0);
            STORE(y + i, LOAD(x + i));
        }
    } else {
        for (size_t i = a; i < b; i += 16)
            STORE(y + i, LOAD(x + i));
    }
}
#else
static float read_part(const float *x, size_t a, size_t b)
{
    float s[16] = {0};      /* 16 chains of adds, not one */
    for (size_t i = a; i < b; i += 16)
        for (int l = 0; l < 16; l++)
            s[l] += x[i + l];
    float t = 0;
    for (int l = 0; l < 16; l++)
        t += s[l];
    return t;
}

static void copy_part(float *y, const float *x, size_t a, size_t b, int kind)
{
    (void)kind;     /* no prefetches or streaming stores outside x86-64 here */
    memcpy(y + a, x + a, (b - a) * sizeof(float));
}
#endif

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: floors ROWS COLS THREADS REPEATS\n");
        return 2;
    }
    unsigned long long arg[4];
    for (int k = 0; k < 4; k++) {
        char *end;
        arg[k] = strtoull(argv[k + 1], &end, 10);
        if (*end != '\0' || argv[k + 1][0] == '-' || arg[k] == 0 || arg[k] > (1ULL << 40)) {
            fprintf(stderr, "floors: ROWS, COLS, THREADS and REPEATS must be positive "
                            "integers (at most 2^40)\n");
            return 2;
        }
    }
    if (arg[0] > (SIZE_MAX / 8) / arg[1] || arg[2] > 4096 || arg[3] > 100000) {
        fprintf(stderr, "floors: ROWS x COLS, THREADS or REPEATS too large\n");
        return 2;
    }
    const size_t n = (size_t)(arg[0] * arg[1]);
    const int nt = (int)arg[2], repeats = (int)arg[3];
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const size_t align = (size_t)2 << 20;             /* a huge page */
#else
    const size_t align = 64;
#endif
    const size_t size = (bytes + align - 1) / align * align;
    float *x = aligned_alloc(align, size), *y = aligned_alloc(align, size);
    if (x == NULL || y == NULL) {
        fprintf(stderr, "floors: out of memory\n");
        return 1;
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(x, size, MADV_HUGEPAGE);    /* advice only: no huge pages is no error */
    madvise(y, size, MADV_HUGEPAGE);
#endif
    /* every page touched before timing, by the thread that will read it (a huge page
     * may straddle two threads' shares: on one socket, no matter) */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i % 1000) * 1e-3f;
        y[i] = 0.0f;
    }
    volatile float sink = 0;
    const char *names[4] = {"read", "copy", "copy_pf", "copy_nt"};
    for (int loop = 0; loop < 4; loop++) {
        printf("%s", names[loop]);
        for (int r = 0; r < repeats; r++) {
            double t = now();
            float total = 0;
#pragma omp parallel num_threads(nt) reduction(+ : total)
            {
                const int c = omp_get_thread_num(), k = omp_get_num_threads();
                /* shares in whole steps of four 64-byte lines, aligned */
                const size_t steps = n / 64;
                const size_t a = steps * (size_t)c / (size_t)k * 64;
                const size_t b = steps * (size_t)(c + 1) / (size_t)k * 64;
                if (loop == 0)
                    total += read_part(x, a, b);
                else
                    copy_part(y, x, a, b, loop - 1);
                if (c == k - 1)         /* the last few entries */
                    for (size_t i = steps * 64; i < n; i++) {
                        if (loop == 0)
                            total += x[i];
                        else
                            y[i] = x[i];
                    }
            }
            t = now() - t;
            sink += total;
            printf(" %.6e", t);
        }
        printf("\n");
    }
    (void)sink;
    free(x);
    free(y);
    return 0;
}
